//! Hot reload: zero failed requests while the config changes 100 times under load, and a bad
//! config never replaces a good one.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

/// Steady load: `conns` keep-alive connections sending GET / back to back.
fn start_load(addr: &str, conns: usize) -> Load {
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (ok, failed, stop, addr) = (ok.clone(), failed.clone(), stop.clone(), addr.to_string());
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let (mut tx, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get("/")
                    .header("host", "load")
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap();
                match tx.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        use http_body_util::BodyExt;
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                        if status == 200 && body.is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("status {status}"));
                        }
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(e.to_string());
                        break;
                    }
                }
            }
            errors
        }));
    }
    Load {
        ok,
        failed,
        stop,
        tasks,
    }
}

impl Load {
    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.tasks {
            errors.extend(t.await.unwrap());
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

async fn wait_version(gw: &Gateway, at_least: u64) -> u64 {
    let start = Instant::now();
    loop {
        let st = gw.admin_ok("GET", "/status", Value::Null).await;
        let v = st["config_version"].as_u64().unwrap();
        if v >= at_least {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "config version stuck at {v}, wanted {at_least}: {st}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn doc(a: &Upstream, b: &Upstream, i: usize) -> String {
    format!(
        r#"_format_version: "1"
services:
  - name: main
    url: {a}
    routes:
      - name: root
        paths: ["/"]
        tags: ["gen-{i}"]
      - name: extra
        paths: ["/v{i}"]
  - name: other
    url: {b}
    routes:
      - paths: ["/other/{i}"]
"#,
        a = a.url(),
        b = b.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_file_reloads_under_load_lose_no_request() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(dir.path(), &doc(&a, &b, 0), &[]);
    let file = dir.path().join("gatehouse.yaml");
    let load = start_load(&gw.proxy, 8);
    let mut version = wait_version(&gw, 1).await;
    for i in 1..=100 {
        std::fs::write(&file, doc(&a, &b, i)).unwrap();
        gw.signal("HUP");
        version = wait_version(&gw, version + 1).await;
        if i % 10 == 0 {
            assert_eq!(
                get(&gw.proxy, &format!("/v{i}")).await.status,
                200,
                "reload {i} is live"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ok, failed, errors) = load.finish().await;
    assert!(ok > 100, "load ran ({ok} requests)");
    assert_eq!(failed, 0, "failed requests during reloads: {errors:?}");
    assert!(version > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_admin_writes_under_load_lose_no_request() {
    let a = Upstream::start("a");
    let gw = Gateway::start(&bin(), &[]);
    gw.admin_ok(
        "POST",
        "/services",
        json!({"name": "main", "url": a.url(), "routes": [{"name": "root", "paths": ["/"]}]}),
    )
    .await;
    let load = start_load(&gw.proxy, 8);
    for i in 0..100 {
        if i % 2 == 0 {
            gw.admin_ok(
                "PUT",
                &format!("/routes/r{}", i / 2),
                json!({"service": "main", "paths": [format!("/r{i}")]}),
            )
            .await;
        } else {
            gw.admin_ok("PATCH", "/routes/root", json!({"tags": [format!("t{i}")]}))
                .await;
        }
    }
    let (ok, failed, errors) = load.finish().await;
    assert!(ok > 100, "load ran ({ok} requests)");
    assert_eq!(failed, 0, "failed requests during admin writes: {errors:?}");
    assert_eq!(get(&gw.proxy, "/r98").await.status, 200);
}

#[tokio::test]
async fn invalid_file_keeps_the_running_config_and_the_watcher_picks_up_fixes() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(dir.path(), &doc(&a, &b, 0), &[]);
    let file = dir.path().join("gatehouse.yaml");
    std::fs::write(&file, "_format_version: \"1\"\nservices:\n  - name: main\n    url: http://127.0.0.1:1\n    routes:\n      - paths: [\"no-slash\"]\n").unwrap();
    gw.signal("HUP");
    let start = Instant::now();
    loop {
        let st = gw.admin_ok("GET", "/status", Value::Null).await;
        if let Some(e) = st["last_reload_error"].as_str() {
            assert!(e.contains("services[0].routes[0].paths[0]"), "{e}");
            assert!(e.contains("line 6"), "{e}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "reload error not reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(&gw.proxy, "/").await.status,
        200,
        "old config still serves"
    );
    assert!(
        gw.log_text().contains("config reload rejected"),
        "{}",
        gw.log_text()
    );
    // Fixed file, no signal: the watcher notices.
    std::fs::write(&file, doc(&a, &b, 7)).unwrap();
    let start = Instant::now();
    while get(&gw.proxy, "/v7").await.status != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "file change not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn invalid_file_at_start_is_refused_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "_format_version: \"1\"\nservices:\n  - name: x\n    url: http://h\n    retries: -1\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("services[0].retries"), "{err}");
    assert!(err.contains("line 5"), "{err}");
}
