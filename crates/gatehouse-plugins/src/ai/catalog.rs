//! The AI entities of one config snapshot, ready for requests: each provider with its
//! destination (origin and TLS settings for the workers' own client and pools), endpoint
//! and key pool; each public model with its targets in fallback order and its price. Built
//! once per snapshot and shared by every `ai-proxy` instance; a provider whose entity did
//! not change keeps its keys' cooldowns across snapshots.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_ai::keys::KeyPool;
use gatehouse_ai::price::Price;
use gatehouse_ai::provider::Endpoint;
use gatehouse_model::{AiProvider, Config};
use http::{HeaderName, HeaderValue};
use rand::Rng;
use uuid::Uuid;

use gatehouse_proxy::plugin::BuildCtx;

/// A provider, ready to call.
pub struct ProviderRt {
    /// Entity id.
    pub id: Uuid,
    /// Entity name (metrics, logs).
    pub name: Arc<str>,
    /// URL, auth form and wire format.
    pub endpoint: Endpoint,
    /// Keys and their cooldowns.
    pub keys: KeyPool,
    /// Extra headers from the entity.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Time to the answer's head (and, for streams, to the first event).
    pub first_token_timeout: Duration,
    /// Time for the whole answer.
    pub timeout: Duration,
    /// The provider's origin, for the worker's own HTTP/1 client and pool.
    pub dest: gatehouse_proxy::outcall::Destination,
    /// Vertex AI access tokens by key position: (token, valid until, Unix ms).
    pub google_tokens: std::sync::Mutex<HashMap<usize, (Arc<str>, u64)>>,
    /// Where Vertex AI key files are exchanged for tokens (made at first use).
    pub token_dest: std::sync::Mutex<Option<(String, Arc<gatehouse_proxy::outcall::Destination>)>>,
    /// The entity's private CAs (trusted for a token endpoint on the provider's origin).
    pub ca_certificates: Vec<String>,
    /// Connect timeout, for the token endpoint too.
    pub connect_timeout: Duration,
}

/// A target of a public model.
#[derive(Clone)]
pub struct TargetRt {
    /// Its provider.
    pub provider: Arc<ProviderRt>,
    /// The model as the provider names it.
    pub model: Arc<str>,
    /// Weight within its priority.
    pub weight: u32,
    /// Fallback order (lowest first).
    pub priority: u32,
    /// Its price (the entity's, else the built-in table's for this upstream model).
    pub price: Option<Price>,
}

/// A public model.
pub struct ModelRt {
    /// The public name.
    pub name: Arc<str>,
    /// Targets by priority.
    pub targets: Vec<TargetRt>,
    /// When it was created (for `/v1/models`).
    pub created: u64,
}

impl ModelRt {
    /// Targets in the order to try them: by priority, and within a priority by a weighted
    /// random draw (so weights share the traffic and the rest stay fallbacks).
    pub fn attempt_order(&self) -> Vec<TargetRt> {
        let mut out = Vec::with_capacity(self.targets.len());
        let mut rng = rand::thread_rng();
        let mut i = 0;
        while i < self.targets.len() {
            let p = self.targets[i].priority;
            let mut group: Vec<TargetRt> = self.targets[i..]
                .iter()
                .take_while(|t| t.priority == p)
                .cloned()
                .collect();
            i += group.len();
            while !group.is_empty() {
                let total: u64 = group.iter().map(|t| u64::from(t.weight.max(1))).sum();
                let mut r = rng.gen_range(0..total);
                let mut pick = 0;
                for (k, t) in group.iter().enumerate() {
                    let w = u64::from(t.weight.max(1));
                    if r < w {
                        pick = k;
                        break;
                    }
                    r -= w;
                }
                out.push(group.swap_remove(pick));
            }
        }
        out
    }
}

/// Every AI model of a snapshot.
#[derive(Default)]
pub struct Catalog {
    /// By public name.
    pub models: HashMap<String, Arc<ModelRt>>,
}

/// The snapshot's catalog (built once, shared by every instance).
pub fn of_snapshot(ctx: &BuildCtx) -> Result<Arc<Catalog>, String> {
    ctx.shared.get_or_build("ai-catalog", || build(ctx))
}

fn build(ctx: &BuildCtx) -> Result<Catalog, String> {
    let cfg: &Config = ctx.config;
    let mut providers: HashMap<String, Arc<ProviderRt>> = HashMap::new();
    for p in &cfg.ai_providers {
        let key = serde_json::to_value(p).map_err(|e| e.to_string())?;
        let rt = ctx
            .state
            .get_or_insert(p.id, &key, || provider_rt(p))
            .clone();
        let rt = match &*rt {
            Ok(rt) => rt.clone(),
            Err(e) => return Err(format!("ai_provider '{}': {e}", p.name)),
        };
        providers.insert(p.id.to_string(), rt);
    }
    let mut models = HashMap::new();
    for m in &cfg.ai_models {
        let mut targets = Vec::new();
        for t in &m.targets {
            let Some(provider) = providers.get(&t.provider) else {
                return Err(format!(
                    "ai_model '{}': unknown provider {}",
                    m.name, t.provider
                ));
            };
            targets.push(TargetRt {
                provider: provider.clone(),
                model: t.model.as_str().into(),
                weight: t.weight,
                priority: t.priority,
                price: m
                    .price
                    .as_ref()
                    .map(Price::from)
                    .or_else(|| gatehouse_ai::price::builtin(&t.model)),
            });
        }
        targets.sort_by_key(|t| t.priority);
        models.insert(
            m.name.clone(),
            Arc::new(ModelRt {
                name: m.name.as_str().into(),
                targets,
                created: m.created_at.unwrap_or(0),
            }),
        );
    }
    Ok(Catalog { models })
}

/// Builds a provider's runtime. Keys that cannot be resolved on this node (an unset
/// variable, an unreadable file) are logged and left out: the others still serve.
fn provider_rt(p: &AiProvider) -> Result<Arc<ProviderRt>, String> {
    let (keys, errors) = KeyPool::resolve(&p.keys);
    for e in errors {
        tracing::warn!(provider = %p.name, error = %e, "ai provider key left out");
    }
    let mut headers = Vec::new();
    for (k, v) in &p.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("headers.{k}: {e}"))?;
        let value = HeaderValue::from_str(v).map_err(|e| format!("headers.{k}: {e}"))?;
        headers.push((name, value));
    }
    let endpoint = Endpoint::of(p);
    let dest = gatehouse_proxy::outcall::Destination::of_url(
        &endpoint.base,
        &p.ca_certificates,
        Duration::from_millis(p.connect_timeout),
        Duration::from_millis(p.timeout),
    )?;
    Ok(Arc::new(ProviderRt {
        id: p.id,
        name: p.name.as_str().into(),
        endpoint,
        dest,
        keys,
        headers,
        google_tokens: std::sync::Mutex::default(),
        token_dest: std::sync::Mutex::default(),
        ca_certificates: p.ca_certificates.clone(),
        connect_timeout: Duration::from_millis(p.connect_timeout),
        first_token_timeout: Duration::from_millis(p.first_token_timeout),
        timeout: Duration::from_millis(p.timeout),
    }))
}
