//! `http-log`: sends request records to an HTTP endpoint in batches, from a background
//! thread fed by a bounded queue. Failed batches are retried with exponential backoff up to
//! `max_retry_time`, then dropped and counted; a full queue drops (and counts) new records.
//! A slow or dead log sink never slows requests: the request path only enqueues.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_model::validate::parse_service_url;
use gatehouse_proxy::plugin::{BuildCtx, CallRecord, Factory, Plugin};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::record;
use crate::config;

fn post() -> String {
    "POST".into()
}
fn ten_seconds() -> u64 {
    10_000
}
fn batch() -> usize {
    100
}
fn coalesce() -> f64 {
    1.0
}
fn entries() -> usize {
    10_000
}
fn retry_time() -> f64 {
    60.0
}
fn first_retry() -> f64 {
    0.01
}
fn max_retry() -> f64 {
    60.0
}

/// Batching and retry settings.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Records per request to the endpoint (1 sends a single JSON object, more an array).
    #[serde(default = "batch")]
    pub max_batch_size: usize,
    /// Seconds to wait for a batch to fill.
    #[serde(default = "coalesce")]
    pub max_coalescing_delay: f64,
    /// Records waiting at most; more are dropped and counted.
    #[serde(default = "entries")]
    pub max_entries: usize,
    /// Seconds to keep retrying one batch.
    #[serde(default = "retry_time")]
    pub max_retry_time: f64,
    /// Seconds before the first retry (doubles each time).
    #[serde(default = "first_retry")]
    pub initial_retry_delay: f64,
    /// Longest pause between retries, in seconds.
    #[serde(default = "max_retry")]
    pub max_retry_delay: f64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_batch_size: batch(),
            max_coalescing_delay: coalesce(),
            max_entries: entries(),
            max_retry_time: retry_time(),
            initial_retry_delay: first_retry(),
            max_retry_delay: max_retry(),
        }
    }
}

/// Settings of `http-log`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpLogConfig {
    /// Where to send records (`http://host:port/path`).
    pub http_endpoint: String,
    /// `POST`, `PUT` or `PATCH`.
    #[serde(default = "post")]
    pub method: String,
    /// Milliseconds one send may take.
    #[serde(default = "ten_seconds")]
    pub timeout: u64,
    /// Extra headers sent to the endpoint (e.g. an authorization token).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Batching and retries.
    #[serde(default)]
    pub queue: QueueConfig,
}

/// The `http-log` factory.
pub struct HttpLog;

/// The sender of one http-log instance; kept across reloads with the same config.
pub struct Queue {
    tx: SyncSender<String>,
    /// Records dropped (queue full, or retries exhausted).
    pub dropped: Arc<AtomicU64>,
}

struct Target {
    host: String,
    port: u16,
    path: String,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

async fn send(t: &Target, body: Bytes) -> Result<(), String> {
    let mut b = Request::builder()
        .method(t.method.clone())
        .uri(&t.path)
        .header("content-type", "application/json");
    for (n, v) in &t.headers {
        b = b.header(n, v);
    }
    let req = b.body(Full::new(body)).map_err(|e| e.to_string())?;
    crate::client::send(&t.host, t.port, req).await.map(|_| ())
}

fn worker(t: Target, q: QueueConfig, rx: Receiver<String>, dropped: Arc<AtomicU64>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let poll = secs(q.max_coalescing_delay)
        .min(Duration::from_millis(20))
        .max(Duration::from_millis(1));
    let mut pending: Vec<String> = Vec::new();
    let mut oldest: Option<Instant> = None;
    loop {
        // Poll (never block on the channel): a request never has to wake this thread.
        let closed = loop {
            match rx.try_recv() {
                Ok(line) => {
                    oldest.get_or_insert_with(Instant::now);
                    pending.push(line);
                    if pending.len() >= q.max_batch_size {
                        break false;
                    }
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        let due = pending.len() >= q.max_batch_size
            || oldest.is_some_and(|o| o.elapsed() >= secs(q.max_coalescing_delay))
            || (closed && !pending.is_empty());
        if due {
            let n = pending.len().min(q.max_batch_size);
            let batch: Vec<String> = pending.drain(..n).collect();
            oldest = if pending.is_empty() {
                None
            } else {
                Some(Instant::now())
            };
            let body = if q.max_batch_size == 1 {
                batch.concat()
            } else {
                format!("[{}]", batch.join(","))
            };
            let body = Bytes::from(body);
            let start = Instant::now();
            let mut delay = secs(q.initial_retry_delay);
            loop {
                match rt.block_on(async {
                    tokio::time::timeout(t.timeout, send(&t, body.clone())).await
                }) {
                    Ok(Ok(())) => break,
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e,
                            _ => "timed out".into(),
                        };
                        if start.elapsed() + delay > secs(q.max_retry_time) {
                            dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            eprintln!(
                                "http-log: dropping {} records after retries: {why}",
                                batch.len()
                            );
                            break;
                        }
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(secs(q.max_retry_delay));
                    }
                }
            }
            continue;
        }
        if closed && pending.is_empty() {
            return;
        }
        std::thread::sleep(poll);
    }
}

fn target(c: &HttpLogConfig) -> Result<Target, (String, String)> {
    let u = parse_service_url(&c.http_endpoint).map_err(|e| ("http_endpoint".to_string(), e))?;
    let method = match c.method.as_str() {
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        m => return Err(("method".into(), format!("`{m}`: use POST, PUT or PATCH"))),
    };
    let mut headers = Vec::new();
    for (k, v) in &c.headers {
        let n = config::header_name(k).map_err(|e| (format!("headers.{k}"), e))?;
        let v = config::header_value(v).map_err(|e| (format!("headers.{k}"), e))?;
        headers.push((n, v));
    }
    Ok(Target {
        host: u.host,
        port: u.port,
        path: if u.path.is_empty() {
            "/".into()
        } else {
            u.path
        },
        method,
        headers,
        timeout: Duration::from_millis(c.timeout),
    })
}

struct Compiled {
    queue: Arc<Queue>,
}

impl Factory for HttpLog {
    fn name(&self) -> &'static str {
        "http-log"
    }
    fn priority(&self) -> i32 {
        12
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<HttpLogConfig>(v, |c| {
            let mut e = Vec::new();
            if let Err(err) = target(c) {
                e.push(err);
            }
            let q = &c.queue;
            if q.max_batch_size == 0 || q.max_batch_size > 100_000 {
                e.push(("queue.max_batch_size".into(), "must be 1-100000".into()));
            }
            if q.max_entries == 0 || q.max_entries > 10_000_000 {
                e.push(("queue.max_entries".into(), "must be 1-10000000".into()));
            }
            for (f, x) in [
                ("max_coalescing_delay", q.max_coalescing_delay),
                ("max_retry_time", q.max_retry_time),
                ("initial_retry_delay", q.initial_retry_delay),
                ("max_retry_delay", q.max_retry_delay),
            ] {
                if !(0.0..=86_400.0).contains(&x) {
                    e.push((format!("queue.{f}"), "must be 0-86400 seconds".into()));
                }
            }
            if c.timeout == 0 {
                e.push(("timeout".into(), "must be at least 1 ms".into()));
            }
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: HttpLogConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let t = target(&c).map_err(|(p, m)| format!("{p}: {m}"))?;
        let queue = ctx.state.get_or_insert(ctx.id, v, move || {
            let (tx, rx) = sync_channel(c.queue.max_entries);
            let dropped = Arc::new(AtomicU64::new(0));
            let d = dropped.clone();
            let q = c.queue;
            // The thread ends once the queue's sender is dropped and what is left was sent.
            let _ = std::thread::Builder::new()
                .name("gatehouse-http-log".into())
                .spawn(move || worker(t, q, rx, d));
            Queue { tx, dropped }
        });
        Ok(Arc::new(Compiled { queue }))
    }
    fn schema(&self) -> Value {
        config::schema::<HttpLogConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<HttpLogConfig>(config)
    }
}

impl Plugin for Compiled {
    fn wants_log(&self) -> bool {
        true
    }
    fn log(&self, rec: &CallRecord) {
        if self.queue.tx.try_send(record::to_line(rec)).is_err() {
            self.queue.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
