//! Starts the real `gatehouse` binary on free ports and talks to its admin API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{request, Reply};

/// A running gateway process; killed when dropped.
pub struct Gateway {
    child: Child,
    /// Proxy `host:port`.
    pub proxy: String,
    /// TLS proxy `host:port`.
    pub tls: String,
    /// Admin API `host:port`.
    pub admin: String,
    /// Status `host:port`.
    pub status: String,
    /// Admin token.
    pub token: String,
    /// Everything the process wrote to stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Data directory (a temp dir unless given).
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// A strong admin token used by tests.
pub const TEST_TOKEN: &str = "test-admin-token-0123456789";

impl Gateway {
    /// Starts `bin serve` with ports 0, a temp data dir, the test token and `extra` flags.
    pub fn start(bin: &Path, extra: &[&str]) -> Gateway {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut g = Gateway::start_in(bin, &dir, extra);
        g._tmp = Some(tmp);
        g
    }

    /// Like [`Gateway::start`] with a given data dir (kept after the process ends).
    pub fn start_in(bin: &Path, data_dir: &Path, extra: &[&str]) -> Gateway {
        let token = if extra.contains(&"--admin-token") {
            None
        } else {
            Some(TEST_TOKEN)
        };
        Gateway::start_with_token(bin, data_dir, extra, token)
    }

    /// Starts with `--admin-token token` if given, else with whatever token the data dir has
    /// (`known_token` is then what the test believes it is).
    pub fn start_with_token(
        bin: &Path,
        data_dir: &Path,
        extra: &[&str],
        token: Option<&str>,
    ) -> Gateway {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--admin-listen".into(),
            "127.0.0.1:0".into(),
            "--status-listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        if !extra.contains(&"--workers") {
            args.push("--workers".into());
            args.push("2".into());
        }
        if let Some(t) = token {
            args.push("--admin-token".into());
            args.push(t.into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new(bin)
            .args(&args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                l2.lock().expect("log").push(line);
            }
        });
        let start = Instant::now();
        let find = |what: &str| -> Option<String> {
            let log = log.lock().expect("log");
            log.iter().find_map(|l| {
                l.split(&format!("{what} listening on "))
                    .nth(1)
                    .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            })
        };
        loop {
            if let (Some(p), Some(t), Some(a), Some(s)) =
                (find("proxy"), find("tls"), find("admin"), find("status"))
            {
                let token = match (token, extra.iter().position(|a| *a == "--admin-token")) {
                    (Some(t), _) => t.to_string(),
                    (None, Some(i)) => extra[i + 1].to_string(),
                    (None, None) => String::new(),
                };
                return Gateway {
                    child,
                    proxy: p,
                    tls: t,
                    admin: a,
                    status: s,
                    token,
                    log,
                    data_dir: data_dir.to_path_buf(),
                    _tmp: None,
                };
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "gatehouse exited with {st} before listening:\n{}",
                    log.lock().expect("log").join("\n")
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "gatehouse did not start:\n{}",
                log.lock().expect("log").join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `HUP`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The log so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Calls the admin API with the token.
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Reply {
        let auth = format!("Bearer {}", self.token);
        request(
            &self.admin,
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"))
    }

    /// Calls the admin API and expects a 2xx JSON answer.
    pub async fn admin_ok(&self, method: &str, path: &str, body: Value) -> Value {
        let r = self.admin(method, path, &body.to_string()).await;
        assert!(
            r.status.is_success(),
            "admin {method} {path} -> {}: {}",
            r.status,
            r.text()
        );
        if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
