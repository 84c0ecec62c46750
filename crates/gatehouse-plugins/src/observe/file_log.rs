//! `file-log`: one JSON line per request, appended to a file by a background thread. The
//! request path only puts the line in a bounded queue: a slow disk never slows requests;
//! when the queue is full the line is dropped and counted.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use gatehouse_proxy::plugin::{BuildCtx, CallRecord, Factory, Plugin};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::record;
use crate::config;

fn default_queue() -> usize {
    65_536
}

/// Settings of `file-log`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileLogConfig {
    /// File to append to (created if missing).
    pub path: String,
    /// Lines waiting to be written at most; more are dropped (and counted).
    #[serde(default = "default_queue")]
    pub queue_size: usize,
}

/// The `file-log` factory.
pub struct FileLog;

/// The writer of one file-log instance; kept across reloads with the same config.
pub struct Sink {
    tx: SyncSender<String>,
    /// Lines dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// How often the writer wakes to drain the queue. Polling (instead of blocking on the
/// channel) means a request never has to wake the writer thread: no futex, no context switch
/// per log line.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

fn writer(path: PathBuf, rx: Receiver<String>) {
    use std::sync::mpsc::TryRecvError;
    let file = match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("file-log: cannot open {}: {e}", path.display());
            return;
        }
    };
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    loop {
        let mut wrote = false;
        let mut ok = true;
        let closed = loop {
            match rx.try_recv() {
                Ok(line) => {
                    ok &= out.write_all(line.as_bytes()).is_ok() && out.write_all(b"\n").is_ok();
                    wrote = true;
                }
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if wrote {
            ok &= out.flush().is_ok();
        }
        if !ok {
            eprintln!("file-log: write to {} failed", path.display());
        }
        if closed {
            let _ = out.flush();
            return;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

struct Compiled {
    sink: Arc<Sink>,
}

impl Factory for FileLog {
    fn name(&self) -> &'static str {
        "file-log"
    }
    fn priority(&self) -> i32 {
        9
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<FileLogConfig>(v, |c| {
            let mut e = Vec::new();
            if c.path.trim().is_empty() {
                e.push(("path".into(), "must name a file".into()));
            }
            if c.queue_size == 0 || c.queue_size > 1_000_000 {
                e.push(("queue_size".into(), "must be 1-1000000".into()));
            }
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: FileLogConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let path = PathBuf::from(&c.path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                return Err(format!("path: directory {} does not exist", dir.display()));
            }
        }
        let sink = ctx.state.get_or_insert(ctx.id, v, || {
            let (tx, rx) = sync_channel(c.queue_size);
            let p = path.clone();
            // The thread ends (after flushing) when the last sender — this sink — is dropped.
            let _ = std::thread::Builder::new()
                .name("gatehouse-file-log".into())
                .spawn(move || writer(p, rx));
            Sink {
                tx,
                dropped: AtomicU64::new(0),
            }
        });
        Ok(Arc::new(Compiled { sink }))
    }
    fn schema(&self) -> Value {
        config::schema::<FileLogConfig>()
    }
}

impl Plugin for Compiled {
    fn wants_log(&self) -> bool {
        true
    }
    fn log(&self, rec: &CallRecord) {
        let line = record::to_line(rec);
        match self.sink.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.sink.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
