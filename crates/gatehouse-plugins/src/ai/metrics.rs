//! AI metrics in the node's Prometheus registry: tokens, cost, calls, time to first token.

use crate::observe::prometheus::{metrics, AiLabels, AiTokenLabels};

use super::AiCallInfo;

/// Counts a finished call.
pub fn record(info: &AiCallInfo) {
    let m = metrics();
    let labels = AiLabels {
        provider: info.provider.clone(),
        model: info.model.clone(),
    };
    m.ai_calls.get_or_create(&labels).inc();
    m.ai_cost.get_or_create(&labels).inc_by(info.cost_micros);
    if let Some(t) = info.ttft_ms {
        m.ai_ttft.get_or_create(&labels).observe(t as f64);
    }
    let u = &info.usage;
    for (kind, n) in [
        ("input", u.input),
        ("output", u.output),
        ("cached_input", u.cached_input),
        ("cache_write", u.cache_write),
        ("reasoning", u.reasoning),
    ] {
        if n > 0 {
            m.ai_tokens
                .get_or_create(&AiTokenLabels {
                    provider: info.provider.clone(),
                    model: info.model.clone(),
                    kind,
                })
                .inc_by(n);
        }
    }
}
