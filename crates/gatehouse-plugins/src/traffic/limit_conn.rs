//! `limit-conn`: at most N requests of a key in flight at once (a request counts until its
//! response body has been sent or abandoned).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use gatehouse_proxy::plugin::{BuildCtx, CallRecord, Factory, Flow, Plugin, RequestCtx};
use http::{HeaderName, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::counters::CounterKey;
use super::rate_limiting::{check_limit_by, counter_key, LimitBy};
use crate::config;

fn too_many() -> u16 {
    429
}
fn default_message() -> String {
    "too many requests in flight".into()
}

/// Settings of `limit-conn`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitConnConfig {
    /// Requests of one key allowed in flight at once.
    pub conn: u32,
    /// What is counted together (as in `rate-limiting`).
    #[serde(default)]
    pub limit_by: LimitBy,
    /// Header for `limit_by: header`.
    #[serde(default)]
    pub header_name: Option<String>,
    /// Status when over the limit.
    #[serde(default = "too_many")]
    pub error_code: u16,
    /// Message when over the limit.
    #[serde(default = "default_message")]
    pub error_message: String,
}

/// The `limit-conn` factory.
pub struct LimitConn;

/// In-flight counts, kept across reloads with the same config.
#[derive(Default)]
pub struct InFlight {
    counts: Mutex<HashMap<CounterKey, u32>>,
}

impl InFlight {
    fn acquire(&self, key: &CounterKey, max: u32) -> bool {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, key: &CounterKey) {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(key);
            }
        }
    }

    /// Keys with requests in flight (for tests).
    pub fn keys(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Marks a request that holds a slot, so only those release one.
#[derive(Clone)]
struct Held(CounterKey);

struct Compiled {
    max: u32,
    by: LimitBy,
    header: Option<HeaderName>,
    status: StatusCode,
    message: String,
    flight: Arc<InFlight>,
}

impl Factory for LimitConn {
    fn name(&self) -> &'static str {
        "limit-conn"
    }
    fn priority(&self) -> i32 {
        905
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<LimitConnConfig>(v, |c| {
            let mut e = Vec::new();
            if c.conn == 0 {
                e.push(("conn".into(), "must be at least 1".into()));
            }
            check_limit_by(c.limit_by, c.header_name.as_deref(), c.error_code, &mut e);
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: LimitConnConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        Ok(Arc::new(Compiled {
            max: c.conn,
            by: c.limit_by,
            header: c
                .header_name
                .as_deref()
                .map(config::header_name)
                .transpose()?,
            status: StatusCode::from_u16(c.error_code).map_err(|e| e.to_string())?,
            message: c.error_message,
            flight: ctx.state.get_or_insert(ctx.id, v, InFlight::default),
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<LimitConnConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<LimitConnConfig>(config)
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        let key = counter_key(self.by, self.header.as_ref(), ctx, req);
        if !self.flight.acquire(&key, self.max) {
            return ctx.reject(self.status, "too_many_in_flight", &self.message);
        }
        ctx.extensions.insert(Held(key));
        Flow::Continue
    }

    fn wants_log(&self) -> bool {
        true
    }

    fn log(&self, rec: &CallRecord) {
        if let Some(Held(key)) = rec.ctx.extensions.get::<Held>() {
            self.flight.release(key);
        }
    }
}
