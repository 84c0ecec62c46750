//! The node's call log wired in: the proxy's records become call-log records (with the AI
//! plugins' usage), queued for the writer.

use std::sync::Arc;

use anyhow::{Context, Result};
use gatehouse_proxy::plugin::{CallRecord, CallSink};
use gatehouse_telemetry::{AiPart, Call, CallLog, CallStore};

/// Opens the call store — tables of their own in the config's PostgreSQL database when the
/// node runs on one (`store`), else `<data dir>/calls.db` (mode 0600) — and starts the
/// writer; rollup rows are keyed by node id and start time.
pub async fn open(
    data_dir: &std::path::Path,
    store: Option<&str>,
    node: uuid::Uuid,
    queue: usize,
) -> Result<Arc<CallLog>> {
    let started = gatehouse_telemetry::pipeline::now_ms();
    let writer = format!("{node}/{started}");
    let pg = store.filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"));
    let store = match pg {
        Some(url) => CallStore::open_postgres(url, writer)
            .await
            .context("opening the call log in PostgreSQL")?,
        None => {
            let path = data_dir.join("calls.db");
            gatehouse_store::private::ensure_file(&path)
                .with_context(|| format!("creating the call log {}", path.display()))?;
            CallStore::open_sqlite(&path, writer)
                .await
                .with_context(|| format!("opening the call log {}", path.display()))?
        }
    };
    tracing::info!(engine = store.engine(), "call log on");
    Ok(CallLog::start(store, queue))
}

/// The proxy's side of the call log.
pub struct Sink(pub Arc<CallLog>);

impl CallSink for Sink {
    fn record(&self, rec: &CallRecord) {
        self.0.offer(call_of(rec));
    }
}

fn call_of(rec: &CallRecord) -> Call {
    let ctx = rec.ctx;
    let r = &ctx.request;
    let named =
        |id: uuid::Uuid, name: &Option<Arc<str>>| (!id.is_nil()).then(|| (id, name.clone()));
    let ai = ctx
        .extensions
        .get::<gatehouse_plugins::ai::AiCallCell>()
        .and_then(|cell| {
            cell.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map(|i| AiPart {
                    provider: i.provider.clone(),
                    model: i.model.clone(),
                    input_tokens: i.usage.input,
                    output_tokens: i.usage.output,
                    cost_micros: i.cost_micros,
                    estimated: i.usage.estimated,
                })
        });
    Call {
        ts_ms: r.started_unix_ms as i64,
        request_id: ctx.request_id.to_str().unwrap_or("").to_string(),
        trace_id: None,
        route: named(ctx.route_id, &r.route_name),
        service: named(ctx.service_id, &r.service_name),
        consumer: ctx.consumer.as_ref().map(|c| (c.id, c.username.clone())),
        client_ip: ctx.client_ip,
        method: r.method.as_str().to_string(),
        host: r
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .map(str::to_string),
        path: r.path.clone(),
        status: rec.status.as_u16(),
        total_us: rec.total.as_micros() as u64,
        upstream_us: ctx.upstream_latency.map(|d| d.as_micros() as u64),
        bytes_in: r.body_bytes,
        bytes_out: rec.response_bytes,
        upstream: ctx.upstream_target.clone(),
        retries: ctx.upstream_retries,
        error: ctx.error_code.clone(),
        complete: rec.complete,
        ai,
    }
}
