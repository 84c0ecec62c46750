//! `file-log`: one JSON line per request, appended to a file by a background thread. The
//! request path only appends the line to its worker thread's buffer (no allocation, no
//! channel, an uncontended lock); the writer thread swaps the buffers out every 20 ms and
//! writes them. A slow disk never slows requests: when a buffer holds `queue_size` lines,
//! further lines are dropped and counted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

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
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
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

/// Buffers per sink; worker threads are spread over them.
const SHARDS: usize = 16;

/// Lines waiting in one buffer.
#[derive(Default)]
struct Shard {
    text: String,
    lines: usize,
}

/// The buffers and file of one file-log instance; kept across reloads with the same config.
pub struct Sink {
    shards: Vec<Mutex<Shard>>,
    queue_size: usize,
    file: Mutex<Option<File>>,
    path: PathBuf,
    /// Lines dropped because a buffer was full.
    pub dropped: AtomicU64,
    writer: std::sync::Once,
}

impl Sink {
    /// Writes out what the buffers hold; false when the write failed.
    fn flush(&self, spare: &mut String) -> bool {
        let mut ok = true;
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        for shard in &self.shards {
            {
                let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
                if s.lines == 0 {
                    continue;
                }
                std::mem::swap(&mut s.text, spare);
                s.lines = 0;
            }
            if file.is_none() {
                match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
                {
                    Ok(f) => *file = Some(f),
                    Err(e) => {
                        eprintln!("file-log: cannot open {}: {e}", self.path.display());
                        spare.clear();
                        return false;
                    }
                }
            }
            if let Some(f) = file.as_mut() {
                ok &= f.write_all(spare.as_bytes()).is_ok();
            }
            spare.clear();
        }
        ok
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // The last lines of a sink replaced by a reload (or at exit) still reach the file.
        let _ = self.flush(&mut String::new());
    }
}

/// How often the writer wakes to write the buffers. Polling means a request never has to
/// wake the writer thread: no futex, no context switch per log line.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

fn writer(sink: Weak<Sink>) {
    let mut spare = String::with_capacity(256 * 1024);
    loop {
        std::thread::sleep(DRAIN_EVERY);
        let Some(sink) = sink.upgrade() else { return };
        if !sink.flush(&mut spare) {
            eprintln!("file-log: write to {} failed", sink.path.display());
        }
    }
}

/// This thread's buffer index (threads are numbered as they first log).
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
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
        let sink = ctx.state.get_or_insert(ctx.id, v, || Sink {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            queue_size: c.queue_size,
            file: Mutex::new(None),
            path: path.clone(),
            dropped: AtomicU64::new(0),
            writer: std::sync::Once::new(),
        });
        // One writer per sink; it ends once the sink is dropped (which flushes the rest).
        sink.writer.call_once(|| {
            let weak = Arc::downgrade(&sink);
            let _ = std::thread::Builder::new()
                .name("gatehouse-file-log".into())
                .spawn(move || writer(weak));
        });
        Ok(Arc::new(Compiled { sink }))
    }
    fn schema(&self) -> Value {
        config::schema::<FileLogConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<FileLogConfig>(config)
    }
}

impl Plugin for Compiled {
    fn wants_log(&self) -> bool {
        true
    }
    fn log(&self, rec: &CallRecord) {
        let mut shard = self.sink.shards[shard_index()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if shard.lines >= self.sink.queue_size {
            drop(shard);
            self.sink.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        record::write_line(rec, &mut shard.text);
        shard.text.push('\n');
        shard.lines += 1;
    }
}
