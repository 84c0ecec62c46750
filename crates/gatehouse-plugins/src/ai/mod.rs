//! The AI gateway's plugins: `ai-proxy` (one OpenAI- and Anthropic-compatible API over every
//! configured provider), `ai-rate-limiting` and `ai-budget` (token and money limits that
//! reserve the worst case before a call and settle to the real usage after it),
//! `ai-prompt-template` and `ai-prompt-guard`.
//!
//! The limit plugins run in the access phase, before the request body is read: they only
//! register what they limit (an [`AiLimit`] in the request's extensions). `ai-proxy`, which
//! knows the model, the prompt and `max_tokens`, reserves on each of them, calls the
//! provider, and settles every reservation once the usage is known — also when the client
//! went away mid-stream (see `body`).

mod attempts;
pub mod body;
pub mod catalog;
mod credentials;
pub mod limits;
pub mod metrics;
pub mod prompt;
pub mod proxy;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gatehouse_ai::Usage;

/// A future that may move to another task (settlements run from a drain task).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a call may cost at most, for reservations.
#[derive(Debug, Clone)]
pub struct Estimate {
    /// The public model.
    pub model: Arc<str>,
    /// Prompt tokens (estimated from the request).
    pub input_tokens: u64,
    /// The most output tokens the call may produce (`max_tokens`).
    pub max_output: u64,
    /// The most it may cost, in micro-dollars.
    pub worst_cost_micros: u64,
}

/// Why a limit refused a call.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Error code (`budget_exceeded`, `token_limit_exceeded`).
    pub code: &'static str,
    /// For the client.
    pub message: String,
    /// Seconds until the limit's window resets.
    pub retry_after_s: u64,
    /// HTTP status.
    pub status: u16,
}

/// A reservation made by a limit; settled exactly once with what the call really used.
pub trait Reservation: Send {
    /// Replaces the reserved worst case by the real usage and cost.
    fn settle(self: Box<Self>, usage: &Usage, cost_micros: u64) -> BoxFuture<()>;
}

/// A limit on AI calls, bound to one request (its consumer, route…) by its plugin.
pub trait AiLimit: Send + Sync {
    /// Reserves the worst case of the call, or refuses it.
    fn reserve(&self, est: &Estimate) -> BoxFuture<Result<Box<dyn Reservation>, Refusal>>;
}

/// The limits registered for a request (in `RequestCtx::extensions`).
#[derive(Clone, Default)]
pub struct AiLimits(pub Vec<Arc<dyn AiLimit>>);

/// Adds a limit to a request.
pub fn add_limit(ext: &mut http::Extensions, limit: Arc<dyn AiLimit>) {
    match ext.get_mut::<AiLimits>() {
        Some(l) => l.0.push(limit),
        None => {
            ext.insert(AiLimits(vec![limit]));
        }
    }
}

/// What the log phase and response headers learn of an AI call.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AiCallInfo {
    /// Provider entity name.
    pub provider: String,
    /// The public model.
    pub model: String,
    /// The upstream model.
    pub upstream_model: String,
    /// Usage (estimated flag inside).
    pub usage: Usage,
    /// Cost in micro-dollars.
    pub cost_micros: u64,
    /// Milliseconds to the first token.
    pub ttft_ms: Option<u64>,
    /// Targets and keys tried before the one that answered.
    pub fallbacks: u32,
}

/// Shared between the streaming body (which learns the usage) and the log phase.
pub type AiCallCell = Arc<std::sync::Mutex<Option<AiCallInfo>>>;
