//! The command line: validate, schema, status endpoints, graceful shutdown, bad flags.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn validate_reports_every_error_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "_format_version: \"1\"\nservices:\n  - name: a\n    url: http://127.0.0.1:9001\n    routes: [{ paths: [\"/\"] }]\n").unwrap();
    let out = Command::new(bin())
        .arg("validate")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 services, 1 routes"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "_format_version: \"1\"\nservices:\n  - name: a\n    url: http://127.0.0.1:9001\n    routes:\n      - paths: [\"/ok\", \"~(\"]\n        methods: [get]\n  - name: a\n    upstream: missing\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let f = bad.display().to_string();
    assert!(
        err.contains(&format!("{f}:6:"))
            && err.contains("services[0].routes[0].paths[1]")
            && err.contains("invalid regex"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:7:")) && err.contains("methods[0]"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:8:")) && err.contains("service 'a': services[1].name"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:9:")) && err.contains("no upstream named `missing`"),
        "{err}"
    );
    assert!(err.contains("4 errors"), "{err}");

    let syntax = dir.path().join("syntax.yaml");
    std::fs::write(&syntax, "_format_version: \"1\"\nservices:\n  - name: [\n").unwrap();
    let out = Command::new(bin())
        .arg("validate")
        .arg(&syntax)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("syntax error"));
}

#[test]
fn schema_is_json_schema_of_the_format() {
    let out = Command::new(bin()).arg("schema").output().unwrap();
    assert!(out.status.success());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert!(s["$defs"]["Service"]["properties"]["url"].is_object());
    assert!(s["$defs"]["Route"]["properties"]["strip_path"].is_object());
}

/// Issue 10, bug 7: `gatehouse schema | head` closed the pipe under a `println!`, which
/// panicked. The reader here is gone before the first byte, so every write meets EPIPE.
#[test]
fn output_to_a_closed_pipe_is_not_a_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(bin())
        .arg("schema")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// Issue 10, bug 7: a declarative node given `--admin-token` writes nothing into its data
/// dir (the working directory by default).
#[tokio::test]
async fn declarative_mode_with_a_given_token_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(dir.path(), "_format_version: \"1\"\n", &[]);
    assert_eq!(gw.admin("GET", "/status", "").await.status, 200);
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec!["gatehouse.yaml".to_string()]);
}

#[tokio::test]
async fn status_listener_reports_health_and_readiness() {
    let gw = Gateway::start(&bin(), &[]);
    let r = get(&gw.status, "/health").await;
    assert_eq!(r.status, 200);
    let r = get(&gw.status, "/ready").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ready");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = Upstream::start("slow");
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start_with_config(dir.path(), &format!("_format_version: \"1\"\nservices:\n  - url: {}\n    routes: [{{ paths: [\"/\"], strip_path: false }}]\n", up.url()), &[]);
    let proxy = gw.proxy.clone();
    let inflight =
        tokio::spawn(async move { request(&proxy, "GET", "/sleep/1500", &[], "").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    let r = inflight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(r.status, 200);
    let code = tokio::task::spawn_blocking(move || {
        let c = gw.wait_exit(Duration::from_secs(20));
        (c, gw)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1.log_text());
    assert!(code.1.log_text().contains("draining"));
}

#[tokio::test]
async fn bad_flags_and_taken_ports_are_clear_errors() {
    let out = Command::new(bin())
        .args(["serve", "--listen", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args([
            "serve",
            "--admin-token",
            "0123456789abcdef0123",
            "--listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
            "--admin-listen",
            &addr,
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("binding admin listener"), "{err}");
    // Issue 10, bug 5: the proxy sockets use SO_REUSEPORT, which the kernel would share
    // with a second gateway process on the same port; that process must refuse to start.
    let first = Gateway::start(&bin(), &[]);
    for (flag, addr) in [("--listen", &first.proxy), ("--tls-listen", &first.tls)] {
        let other = tempfile::tempdir().unwrap();
        let mut args = vec![
            "serve",
            "--admin-token",
            "0123456789abcdef0123",
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
        ];
        let i = args.iter().position(|a| a == &flag).unwrap();
        args[i + 1] = addr;
        let out = Command::new(bin())
            .args(&args)
            .arg("--data-dir")
            .arg(other.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {addr} taken, yet it started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{addr} is already in use")) && err.contains("listener"),
            "{err}"
        );
    }
    assert_eq!(
        get(&first.proxy, "/").await.status,
        404,
        "the first one still serves"
    );
    let out = Command::new(bin())
        .args(["serve", "--admin-token", "short", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
}
