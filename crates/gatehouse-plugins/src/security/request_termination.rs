//! `request-termination`: answer every request of the scope with a fixed response (e.g.
//! maintenance), without calling the upstream.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_proxy::body::ProxyBody;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::{header, HeaderValue, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config;

fn unavailable() -> u16 {
    503
}

/// Settings of `request-termination`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestTerminationConfig {
    /// Status of the answer.
    #[serde(default = "unavailable")]
    pub status_code: u16,
    /// Message, sent in the common JSON error shape (exclusive with `body`).
    #[serde(default)]
    pub message: Option<String>,
    /// Raw body to send instead (exclusive with `message`).
    #[serde(default)]
    pub body: Option<String>,
    /// Content type of `body`.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// The `request-termination` factory.
pub struct RequestTermination;

struct Compiled {
    status: StatusCode,
    message: String,
    body: Option<(Bytes, HeaderValue)>,
}

impl Factory for RequestTermination {
    fn name(&self) -> &'static str {
        "request-termination"
    }
    fn priority(&self) -> i32 {
        2
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<RequestTerminationConfig>(v, |c| {
            let mut e = Vec::new();
            if !(100..600).contains(&c.status_code) || c.status_code == 101 {
                e.push(("status_code".into(), "must be 100-599 (not 101)".into()));
            }
            if c.message.is_some() && c.body.is_some() {
                e.push(("body".into(), "set `message` or `body`, not both".into()));
            }
            if let Some(ct) = &c.content_type {
                if let Err(m) = config::header_value(ct) {
                    e.push(("content_type".into(), m));
                }
            }
            e
        })
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: RequestTerminationConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let status = StatusCode::from_u16(c.status_code).map_err(|e| e.to_string())?;
        let body = match c.body {
            Some(b) => Some((
                Bytes::from(b),
                config::header_value(
                    c.content_type
                        .as_deref()
                        .unwrap_or("text/plain; charset=utf-8"),
                )?,
            )),
            None => None,
        };
        let message = c.message.unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("terminated")
                .to_lowercase()
        });
        Ok(Arc::new(Compiled {
            status,
            message,
            body,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<RequestTerminationConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<RequestTerminationConfig>(config)
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, _req: &mut http::request::Parts) -> Flow {
        match &self.body {
            Some((b, ct)) => {
                let mut r = Response::new(ProxyBody::full(b.clone()));
                *r.status_mut() = self.status;
                r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
                Flow::Respond(Box::new(r))
            }
            None => ctx.reject(self.status, "terminated", &self.message),
        }
    }
}
