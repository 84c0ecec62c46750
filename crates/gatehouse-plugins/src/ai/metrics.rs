//! AI metrics in the node's Prometheus registry: tokens, cost, calls, time to first token.
//! Handles are cached per worker thread by provider and model (a family lookup hashes and
//! clones its labels under a lock; a call records up to eight values).

use std::cell::RefCell;
use std::collections::HashMap;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::observe::prometheus::{metrics, AiLabels, AiTokenLabels};

use super::AiCallInfo;

const KINDS: [&str; 5] = [
    "input",
    "output",
    "cached_input",
    "cache_write",
    "reasoning",
];

struct Handles {
    calls: Counter,
    cost: Counter,
    ttft: Histogram,
    tokens: [Counter; 5],
}

fn handles(provider: &str, model: &str) -> Handles {
    let m = metrics();
    let labels = AiLabels {
        provider: provider.to_string(),
        model: model.to_string(),
    };
    let token = |kind: &'static str| {
        m.ai_tokens
            .get_or_create(&AiTokenLabels {
                provider: provider.to_string(),
                model: model.to_string(),
                kind,
            })
            .clone()
    };
    Handles {
        calls: m.ai_calls.get_or_create(&labels).clone(),
        cost: m.ai_cost.get_or_create(&labels).clone(),
        ttft: m.ai_ttft.get_or_create(&labels).clone(),
        tokens: KINDS.map(token),
    }
}

thread_local! {
    /// Bounded by the config's providers × models; cleared if it ever grows past that.
    static CACHE: RefCell<HashMap<String, HashMap<String, Handles>>> = RefCell::new(HashMap::new());
}

/// Counts a finished call.
pub fn record(info: &AiCallInfo) {
    let u = &info.usage;
    let values = [
        u.input,
        u.output,
        u.cached_input,
        u.cache_write,
        u.reasoning,
    ];
    let apply = |h: &Handles| {
        h.calls.inc();
        h.cost.inc_by(info.cost_micros);
        if let Some(t) = info.ttft_ms {
            h.ttft.observe(t as f64);
        }
        for (c, n) in h.tokens.iter().zip(values) {
            if n > 0 {
                c.inc_by(n);
            }
        }
    };
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(h) = cache
            .get(info.provider.as_str())
            .and_then(|m| m.get(info.model.as_str()))
        {
            apply(h);
            return;
        }
        if cache.values().map(HashMap::len).sum::<usize>() > 4096 {
            cache.clear();
        }
        let h = handles(&info.provider, &info.model);
        apply(&h);
        cache
            .entry(info.provider.clone())
            .or_default()
            .insert(info.model.clone(), h);
    });
}
