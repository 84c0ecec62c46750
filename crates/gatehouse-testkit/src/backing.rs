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
    tls: Option<(PathBuf, PathBuf)>,
}

impl PrivateRedis {
    /// Starts on a free port.
    pub fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            child: None,
            port: free_port(),
            tls: None,
        };
        r.up();
        r
    }

    /// Starts on a free port, TLS only, with this certificate and key.
    pub fn start_tls(cert: &Path, key: &Path) -> PrivateRedis {
        let mut r = PrivateRedis {
            child: None,
            port: free_port(),
            tls: Some((cert.to_path_buf(), key.to_path_buf())),
        };
        r.up();
        r
    }

    /// Its URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port).
    pub fn up(&mut self) {
        let port = self.port.to_string();
        let mut args = vec!["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let (cert, key);
        match &self.tls {
            Some((c, k)) => {
                (cert, key) = (c.display().to_string(), k.display().to_string());
                args.extend(["--port", "0", "--tls-port", &port, "--tls-cert-file", &cert]);
                args.extend(["--tls-key-file", &key, "--tls-auth-clients", "no"]);
            }
            None => args.extend(["--port", &port]),
        }
        self.child = Some(redis_server(&args));
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

/// Starts `redis-server` with `args`, its output discarded.
fn redis_server(args: &[&str]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server")
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Redis Cluster of three masters (no replicas) on free ports.
pub struct PrivateRedisCluster {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
    /// The masters' ports.
    pub ports: Vec<u16>,
}

impl PrivateRedisCluster {
    /// Starts three cluster-enabled servers and joins them.
    pub fn start() -> PrivateRedisCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let d = dir.path().display().to_string();
        let children = ports
            .iter()
            .map(|p| {
                let conf = format!("nodes-{p}.conf");
                redis_server(&[
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &p.to_string(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--dir",
                    &d,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
            })
            .collect();
        for &p in &ports {
            wait_until("redis cluster node", Duration::from_secs(10), || {
                redis_cli(p, &["ping"]).contains("PONG")
            });
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let st = Command::new("redis-cli")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli --cluster create");
        assert!(st.success(), "redis-cli --cluster create failed");
        for &p in &ports {
            wait_until("redis cluster state ok", Duration::from_secs(20), || {
                redis_cli(p, &["cluster", "info"]).contains("cluster_state:ok")
            });
        }
        PrivateRedisCluster {
            children,
            _dir: dir,
            ports,
        }
    }

    /// `redis+cluster://` URL naming every master.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Redis master watched by one Sentinel, on free ports.
pub struct PrivateSentinel {
    master: Child,
    sentinel: Child,
    _dir: tempfile::TempDir,
    /// The sentinel's port.
    pub port: u16,
}

impl PrivateSentinel {
    /// Starts a master and a sentinel monitoring it as `mymaster`.
    pub fn start() -> PrivateSentinel {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mport, sport) = (free_port(), free_port());
        let master = redis_server(&[
            "--bind",
            "127.0.0.1",
            "--port",
            &mport.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        wait_until("redis master", Duration::from_secs(10), || {
            redis_cli(mport, &["ping"]).contains("PONG")
        });
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sport}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {mport} 1\nsentinel down-after-milliseconds mymaster 2000\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let sentinel = redis_server(&[&conf.display().to_string(), "--sentinel"]);
        wait_until("sentinel knows the master", Duration::from_secs(10), || {
            redis_cli(sport, &["sentinel", "get-master-addr-by-name", "mymaster"])
                .contains(&mport.to_string())
        });
        PrivateSentinel {
            master,
            sentinel,
            _dir: dir,
            port: sport,
        }
    }

    /// `redis+sentinel://` URL of the master.
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/mymaster", self.port)
    }
}

impl Drop for PrivateSentinel {
    fn drop(&mut self) {
        for c in [&mut self.sentinel, &mut self.master] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
