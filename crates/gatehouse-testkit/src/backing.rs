//! PostgreSQL and Redis for tests: a database or key prefix of the test's own on the shared
//! servers (`GATEHOUSE_TEST_POSTGRES`, `GATEHOUSE_TEST_REDIS`; `scripts/test.sh` starts
//! them), removed when dropped — and private servers on free ports for tests that stop
//! and start them (an outage test must not take the shared server from other tests).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Base URL of the shared PostgreSQL (no database).
pub fn postgres_base() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// URL of the shared Redis.
pub fn redis_url() -> String {
    std::env::var("GATEHOUSE_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}_{}_{:x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

fn psql(base: &str, sql: &str) {
    let out = Command::new("psql")
        .arg(format!("{base}/postgres"))
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database of the test's own, dropped at the end.
pub struct TestDb {
    base: String,
    /// Its name.
    pub name: String,
}

impl TestDb {
    /// Creates a fresh database on the server at `base` (`postgres://user@host:port`).
    pub fn create_on(base: &str) -> TestDb {
        let name = unique("gh_test");
        psql(base, &format!("CREATE DATABASE {name}"));
        TestDb {
            base: base.to_string(),
            name,
        }
    }

    /// Creates a fresh database on the shared server.
    pub fn create() -> TestDb {
        TestDb::create_on(&postgres_base())
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("{}/{}", self.base, self.name)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(format!("{}/postgres", self.base))
            .args([
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stderr(Stdio::null())
            .status();
    }
}

/// A key prefix of the test's own on the shared Redis; its keys are deleted at the end.
pub struct TestPrefix {
    url: String,
    /// The prefix.
    pub prefix: String,
}

impl TestPrefix {
    /// A fresh prefix on the Redis at `url`.
    pub fn new_on(url: &str) -> TestPrefix {
        TestPrefix {
            url: url.to_string(),
            prefix: unique("ghtest"),
        }
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        // Keys are `{prefix:…}:…`.
        let script = format!(
            "redis-cli -u '{u}' --scan --pattern '{{{p}:*' | xargs -r redis-cli -u '{u}' del >/dev/null",
            u = self.url,
            p = self.prefix
        );
        let _ = Command::new("sh").args(["-c", &script]).status();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pg_bin(name: &str) -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(root)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .last()
        .map(|v| v.join("bin").join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (the server refuses root).
fn as_postgres(tool: &str, args: &[&str]) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(pg_bin(tool))
            .args(args);
        c
    } else {
        let mut c = Command::new(pg_bin(tool));
        c.args(args);
        c
    }
}

/// A PostgreSQL server of the test's own (trust auth, user `postgres`), which the test may
/// stop and start.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
}

impl PrivatePostgres {
    /// initdb and start on a free port.
    pub fn start() -> PrivatePostgres {
        let dir = tempfile::Builder::new()
            .prefix("gh-pg")
            .tempdir()
            .expect("tempdir");
        let _ = Command::new("chown")
            .args(["postgres:postgres", &dir.path().display().to_string()])
            .status();
        let data = dir.path().join("data");
        let st = as_postgres(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("initdb");
        assert!(st.success(), "initdb failed");
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
        };
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Base URL (no database).
    pub fn base(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the server (again).
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let st = as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &opts,
                "-l",
                &self.dir.path().join("log").display().to_string(),
                "-w",
                "start",
            ],
        )
        .stdout(Stdio::null())
        .status()
        .expect("pg_ctl start");
        assert!(st.success(), "pg_ctl start failed");
        let port = self.port;
        wait_until("postgres", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops the server (fast: open connections are cut, as in a crash or failover).
    pub fn down(&self) {
        let _ = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.down();
    }
}

/// A Redis server of the test's own, which the test may stop and start.
pub struct PrivateRedis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl PrivateRedis {
    /// Starts on a free port.
    pub fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            child: None,
            port: free_port(),
        };
        r.up();
        r
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port).
    pub fn up(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        wait_until("redis", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Kills the server (its data is gone, as after a crash without persistence).
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}
