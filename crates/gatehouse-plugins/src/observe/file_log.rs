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
    10_000
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

fn writer(path: PathBuf, rx: Receiver<String>) {
    let file = match OpenOptions::new().create(true).append(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("file-log: cannot open {}: {e}", path.display());
            return;
        }
    };
    let mut out = BufWriter::new(file);
    while let Ok(line) = rx.recv() {
        let mut ok = writeln!(out, "{line}").is_ok();
        // Write what is already queued, then flush once.
        while let Ok(more) = rx.try_recv() {
            ok &= writeln!(out, "{more}").is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            eprintln!("file-log: write to {} failed", path.display());
        }
    }
    let _ = out.flush();
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
        let line = record::to_json(rec).to_string();
        match self.sink.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.sink.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
