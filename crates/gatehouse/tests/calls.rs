//! The call log through the real binary: every request's record (routed or not, with
//! plugins or without) reaches `<data dir>/calls.db`, is found by every filter of `GET
//! /calls` with cursor paging, exported as CSV and JSON lines, and charted by
//! `/analytics` from rollups whose percentiles match the raw calls'. Retention deletes; a
//! full queue drops and counts without failing requests.

mod common;

use std::time::Duration;

use common::*;
use gatehouse_testkit::Gateway;
use serde_json::{json, Value};

fn config(up: &Upstream) -> String {
    format!(
        r#"_format_version: "1"
services:
  - name: billing
    url: {url}
    routes:
      - name: open
        paths: [/open]
      - name: keyed
        paths: [/keyed]
        plugins:
          - name: key-auth
consumers:
  - username: alice
    keyauth_credentials: [{{key: alice-secret-key}}]
"#,
        url = up.url()
    )
}

/// Waits until the call log holds `n` calls (the writer works in the background).
async fn wait_for(gw: &Gateway, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let r = gw.admin("GET", "/calls?size=1000", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let data = r.json()["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= n {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the call log never held {n} calls");
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_recorded_searchable_and_charted() {
    let up = Upstream::start("billing");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(dir.path(), &config(&up), &["--call-log", "on"]);
    // 40 calls with latencies spread 0-39 ms; 5 by alice; 3 refused; 2 with no route.
    for i in 0..40 {
        let r = request(&gw.proxy, "GET", &format!("/open/sleep/{i}"), &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    for _ in 0..5 {
        let r = request(
            &gw.proxy,
            "GET",
            "/keyed/x",
            &[("apikey", "alice-secret-key")],
            "",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
    }
    for _ in 0..3 {
        let r = request(&gw.proxy, "GET", "/keyed/x", &[], "")
            .await
            .unwrap();
        assert_eq!(r.status, 401);
    }
    let mut last_rid = String::new();
    for _ in 0..2 {
        let r = request(
            &gw.proxy,
            "POST",
            "/nowhere?token=secret-in-query",
            &[],
            "hello",
        )
        .await
        .unwrap();
        assert_eq!(r.status, 404);
        last_rid = r.headers["x-request-id"].to_str().unwrap().to_string();
    }
    let all = wait_for(&gw, 50).await;
    assert_eq!(all.len(), 50);
    // Newest first (by start time; calls of the same millisecond in any order); the
    // no-route call has no route, its error code and its method.
    let starts: Vec<u64> = all
        .iter()
        .map(|c| c["started_at"].as_u64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "{starts:?}");
    let newest = all
        .iter()
        .find(|c| c["request_id"] == last_rid.as_str())
        .unwrap();
    assert_eq!(newest["started_at"].as_u64(), starts.first().copied());
    assert_eq!(newest["route"], Value::Null);
    assert_eq!(newest["error"], "no_route");
    assert_eq!(newest["request"]["method"], "POST");
    assert_eq!(
        newest["request"]["path"], "/nowhere",
        "no query string is stored"
    );
    let keyed = all
        .iter()
        .find(|c| c["consumer"]["username"] == "alice")
        .unwrap();
    assert_eq!(keyed["route"]["name"], "keyed");
    assert_eq!(keyed["service"]["name"], "billing");
    assert_eq!(keyed["upstream"], format!("127.0.0.1:{}", up.addr.port()));
    assert!(keyed["latencies"]["upstream_ms"].as_f64().unwrap() > 0.0);
    assert!(keyed["response"]["size"].as_u64().unwrap() > 0);
    let refused = all.iter().find(|c| c["response"]["status"] == 401).unwrap();
    assert_eq!(refused["error"], "unauthorized", "{refused}");
    // Nothing secret in the database file.
    let db = std::fs::read(dir.path().join("calls.db")).unwrap();
    let wal = std::fs::read(dir.path().join("calls.db-wal")).unwrap_or_default();
    for secret in [&b"alice-secret-key"[..], b"secret-in-query"] {
        assert!(
            !db.windows(secret.len()).any(|w| w == secret),
            "a secret in calls.db"
        );
        assert!(
            !wal.windows(secret.len()).any(|w| w == secret),
            "a secret in calls.db-wal"
        );
    }

    // Filters.
    let count = |q: &'static str| {
        let gw = &gw;
        async move {
            let r = gw.admin("GET", &format!("/calls?size=1000&{q}"), "").await;
            assert_eq!(r.status, 200, "{q}: {}", r.text());
            r.json()["data"].as_array().unwrap().len()
        }
    };
    assert_eq!(count("status=4xx").await, 5);
    assert_eq!(count("status=401").await, 3);
    assert_eq!(count("consumer=alice").await, 5);
    assert_eq!(count("service=billing").await, 48);
    assert_eq!(count("route=open").await, 40);
    assert_eq!(count("q=sleep/3").await, 11, "3 and 30-39");
    let slow = all
        .iter()
        .filter(|c| c["latencies"]["total_ms"].as_f64().unwrap() >= 30.0)
        .count();
    assert!(slow >= 10);
    assert_eq!(
        count("min_latency_ms=30").await,
        slow,
        "the same calls as the raw latencies say"
    );
    assert_eq!(count("method=post").await, 2);
    assert_eq!(
        count(&*Box::leak(
            format!("request_id={last_rid}").into_boxed_str()
        ))
        .await,
        1
    );
    assert_eq!(count("from=0&to=1").await, 0);
    // Paging: 7 at a time, every call once.
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/calls?size=7&cursor={c}"),
            None => "/calls?size=7".to_string(),
        };
        let v = gw.admin("GET", &path, "").await.json();
        for c in v["data"].as_array().unwrap() {
            assert!(seen.insert(c["request_id"].as_str().unwrap().to_string()));
        }
        pages += 1;
        match v["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (50, 8));
    // One call; an unknown one.
    let one = gw.admin("GET", &format!("/calls/{last_rid}"), "").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["error"], "no_route");
    assert_eq!(gw.admin("GET", "/calls/nope", "").await.status, 404);
    // Bad values are refused naming the parameter: 400 for a value that does not have the
    // documented form, 422 for one that has it but breaks a rule.
    for (q, param, status) in [
        ("status=9xx", "status", 400),
        ("size=5000", "size", 400),
        ("from=yesterday", "from", 400),
        ("cursor=zz", "cursor", 422),
        ("colour=red", "colour", 400),
        ("min_latency_ms=-3", "min_latency_ms", 400),
        ("from=2026-13-01T00:00:00Z", "from", 422),
        ("from=5&to=5", "from", 422),
    ] {
        let r = gw.admin("GET", &format!("/calls?{q}"), "").await;
        assert_eq!(r.status, status, "{q}: {}", r.text());
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(param),
            "{q}: {}",
            r.text()
        );
        assert!(r.json()["error"]["request_id"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }

    // Export.
    let csv = gw
        .admin("GET", "/calls/export?format=csv&route=open", "")
        .await;
    assert_eq!(csv.status, 200);
    assert!(csv.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("started_at,request_id"));
    assert_eq!(lines.len(), 41);
    let jsonl = gw.admin("GET", "/calls/export?status=4xx", "").await;
    assert_eq!(jsonl.text().lines().count(), 5);
    assert!(jsonl
        .text()
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));

    // Analytics: the rollups are written every second.
    let mut series = Value::Null;
    for _ in 0..50 {
        series = gw
            .admin("GET", "/analytics/series?resolution=hour", "")
            .await
            .json();
        let total: u64 = series["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum();
        if total == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let points = series["points"].as_array().unwrap();
    let total: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 50, "{series}");
    let e4: u64 = points
        .iter()
        .map(|p| p["errors_4xx"].as_u64().unwrap())
        .sum();
    assert_eq!(e4, 5);
    // Percentiles of the open route from its rollups match the raw calls' within 2 %.
    let route = gw
        .admin("GET", "/analytics/series?resolution=day&route=open", "")
        .await
        .json();
    let point = &route["points"][0];
    let mut raw: Vec<f64> = all
        .iter()
        .filter(|c| c["route"]["name"] == "open")
        .map(|c| c["latencies"]["total_ms"].as_f64().unwrap())
        .collect();
    raw.sort_by(f64::total_cmp);
    for (q, key) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
        let got = point["latency_ms"][key].as_f64().unwrap();
        let exact = percentile(&raw, q);
        let (lo, hi) = (
            percentile(&raw, (q - 0.03).max(0.0)),
            percentile(&raw, (q + 0.03).min(1.0)),
        );
        assert!(
            got >= lo * 0.98 && got <= hi * 1.02,
            "{key}: sketch {got} vs raw {exact} ({lo}-{hi})"
        );
    }
    let top = gw
        .admin("GET", "/analytics/top/routes?n=2", "")
        .await
        .json();
    assert_eq!(top["data"][0]["name"], "open");
    assert_eq!(top["data"][0]["requests"], 40);
    assert_eq!(top["data"][1]["name"], "keyed");
    let errors = gw
        .admin("GET", "/analytics/top/error-routes", "")
        .await
        .json();
    assert_eq!(errors["data"][0]["name"], "keyed");
    assert_eq!(errors["data"][0]["errors_4xx"], 3);
    let usage = gw
        .admin("GET", "/analytics/usage?consumer=alice", "")
        .await
        .json();
    assert_eq!(usage["data"][0]["consumer"], "alice");
    assert_eq!(usage["data"][0]["service"], "billing");
    assert_eq!(usage["data"][0]["requests"], 5);
    for (q, param, status) in [
        ("/analytics/series?resolution=fortnight", "resolution", 400),
        (
            "/analytics/series?from=0&resolution=minute",
            "resolution",
            422,
        ),
        ("/analytics/top/planets", "by", 400),
        ("/analytics/top/routes?n=0", "n", 400),
        ("/analytics/usage?consumer=nobody", "consumer", 422),
    ] {
        let r = gw.admin("GET", q, "").await;
        assert_eq!(r.status, status, "{q}: {}", r.text());
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(param),
            "{q}: {}",
            r.text()
        );
    }
    let (_, metrics, _) = curl(&[&format!("http://{}/metrics", gw.status)]);
    assert!(
        metrics.contains("gatehouse_call_log_records_total{outcome=\"written\"} 50"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_calls_in_batches() {
    let up = Upstream::start("billing");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(dir.path(), &config(&up), &["--call-log", "on"]);
    for _ in 0..3 {
        request(&gw.proxy, "GET", "/open/x", &[], "").await.unwrap();
    }
    wait_for(&gw, 3).await;
    // 12,000 calls from ten days ago, written beside the gateway's own (WAL: no lock-out).
    let db = dir.path().join("calls.db");
    let script = r#"
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=10)
old = int((time.time() - 10 * 86400) * 1000)
db.executemany("INSERT INTO calls (ts, request_id, client_ip, method, path, status, total_us, bytes_out, retries, complete) VALUES (?, ?, '10.0.0.1', 'GET', '/old', 200, 1000, 10, 0, 1)",
    [(old + i, f"old-{i}") for i in range(12000)])
db.commit()
"#;
    let out = std::process::Command::new(test_python())
        .args(["-c", script])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        gw.admin("GET", "/calls?from=0&size=1000&q=/old", "")
            .await
            .json()["data"]
            .as_array()
            .unwrap()
            .len(),
        1000
    );
    // Settings: checked, stored, applied.
    let bad = gw
        .admin(
            "PUT",
            "/call-log/settings",
            &json!({"retention": {"raw_days": 0, "minute_days": 1, "hour_days": 1, "day_days": 1}})
                .to_string(),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("raw_days"), "{}", bad.text());
    let backwards =
        json!({"retention": {"raw_days": 1, "minute_days": 9, "hour_days": 2, "day_days": 30}});
    let r = gw
        .admin("PUT", "/call-log/settings", &backwards.to_string())
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("hour_days"), "{}", r.text());
    let set =
        json!({"retention": {"raw_days": 3, "minute_days": 3, "hour_days": 30, "day_days": 365}});
    let r = gw
        .admin("PUT", "/call-log/settings", &set.to_string())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.admin("GET", "/call-log/settings", "").await.json(), set);
    let r = gw.admin("POST", "/call-log/prune", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], 12_000, "in batches of 5,000");
    let left = gw.admin("GET", "/calls?from=0&size=1000", "").await.json();
    assert_eq!(
        left["data"].as_array().unwrap().len(),
        3,
        "today's calls stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_without_failing_requests() {
    let up = Upstream::start("billing");
    let dir = tempfile::tempdir().unwrap();
    let gw = start_with_config(
        dir.path(),
        &config(&up),
        &["--call-log", "on", "--call-log-queue", "1"],
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let proxy = gw.proxy.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let r = request(&proxy, "GET", "/open/x", &[], "").await.unwrap();
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = gw.admin("GET", "/status", "").await.json();
    let c = &status["call_log"];
    let (accepted, dropped) = (
        c["accepted"].as_u64().unwrap(),
        c["dropped"].as_u64().unwrap(),
    );
    assert_eq!(accepted + dropped, 400, "{c}");
    assert!(
        dropped > 0,
        "a queue of one under eight clients must drop: {c}"
    );
    assert_eq!(c["written"].as_u64().unwrap(), accepted, "{c}");
    let off = tempfile::tempdir().unwrap();
    let gw2 = start_with_config(off.path(), &config(&up), &["--call-log", "off"]);
    let r = gw2.admin("GET", "/calls", "").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "call_log_off");
    assert!(!off.path().join("calls.db").exists());
}

/// Two nodes on one PostgreSQL database: each writes its calls to the shared, day-partitioned
/// tables, and either node's `/calls` and `/analytics` show both nodes' calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_its_call_log_in_postgres() {
    let db = gatehouse_testkit::backing::TestDb::create();
    let url = db.url();
    let up = Upstream::start("billing");
    let (da, db_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Gateway::start_in(&bin(), da.path(), &["--store", url.as_str()]);
    std::fs::copy(da.path().join("keyring"), db_dir.path().join("keyring")).unwrap();
    let b = Gateway::start_in(&bin(), db_dir.path(), &["--store", url.as_str()]);
    a.admin_ok(
        "POST",
        "/services",
        json!({"name": "billing", "url": up.url()}),
    )
    .await;
    a.admin_ok(
        "POST",
        "/services/billing/routes",
        json!({"name": "open", "paths": ["/open"]}),
    )
    .await;
    for g in [&a, &b] {
        for _ in 0..100 {
            if get(&g.proxy, "/open/x").await.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for _ in 0..5 {
        assert_eq!(get(&a.proxy, "/open/a").await.status, 200);
        assert_eq!(get(&b.proxy, "/open/b").await.status, 200);
    }
    let mut both = (0, 0);
    for _ in 0..100 {
        let v = b
            .admin("GET", "/calls?route=open&size=1000", "")
            .await
            .json();
        let data = v["data"].as_array().cloned().unwrap_or_default();
        both = (
            data.iter()
                .filter(|c| c["request"]["path"] == "/open/a")
                .count(),
            data.iter()
                .filter(|c| c["request"]["path"] == "/open/b")
                .count(),
        );
        if both == (5, 5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(both, (5, 5), "node B's search shows node A's calls too");
    assert!(
        !da.path().join("calls.db").exists(),
        "no local file on PostgreSQL"
    );
    let mut total = 0;
    for _ in 0..50 {
        let s = a
            .admin("GET", "/analytics/series?resolution=hour&route=open", "")
            .await
            .json();
        total = s["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["requests"].as_u64().unwrap())
            .sum::<u64>();
        if total >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(total >= 10, "both nodes' rollups merged: {total}");
}
