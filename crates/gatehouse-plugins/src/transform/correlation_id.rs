//! `correlation-id`: make sure every request carries a correlation header (kept when the
//! client sent one), forward it upstream and, if asked, echo it to the client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config;

fn default_header() -> String {
    "X-Correlation-ID".into()
}

/// How new ids are made.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Generator {
    /// A random UUID v4.
    #[default]
    Uuid,
    /// A random UUID fixed per node, then `#` and a counter (cheap, still unique).
    #[serde(rename = "uuid#counter")]
    UuidCounter,
    /// The gateway's request id.
    RequestId,
}

/// Settings of `correlation-id`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrelationIdConfig {
    /// Header carrying the id.
    #[serde(default = "default_header")]
    pub header_name: String,
    /// How new ids are made.
    #[serde(default)]
    pub generator: Generator,
    /// Also send the id back to the client.
    #[serde(default)]
    pub echo_downstream: bool,
}

/// The `correlation-id` factory.
pub struct CorrelationId;

struct Compiled {
    header: HeaderName,
    generator: Generator,
    echo: bool,
    node: uuid::Uuid,
    counter: AtomicU64,
}

impl Factory for CorrelationId {
    fn name(&self) -> &'static str {
        "correlation-id"
    }
    fn priority(&self) -> i32 {
        100_001
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<CorrelationIdConfig>(v, |c| match config::header_name(&c.header_name) {
            Ok(_) => Vec::new(),
            Err(m) => vec![("header_name".into(), m)],
        })
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: CorrelationIdConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        Ok(Arc::new(Compiled {
            header: config::header_name(&c.header_name)?,
            generator: c.generator,
            echo: c.echo_downstream,
            node: uuid::Uuid::new_v4(),
            counter: AtomicU64::new(0),
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<CorrelationIdConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<CorrelationIdConfig>(config)
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        let id = match req.headers.get(&self.header) {
            Some(v) if !v.is_empty() => v.clone(),
            _ => {
                let v = match self.generator {
                    Generator::Uuid => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()),
                    Generator::UuidCounter => HeaderValue::from_str(&format!(
                        "{}#{}",
                        self.node,
                        self.counter.fetch_add(1, Ordering::Relaxed) + 1
                    )),
                    Generator::RequestId => Ok(ctx.request_id.clone()),
                };
                let Ok(v) = v else { return Flow::Continue };
                req.headers.insert(self.header.clone(), v.clone());
                v
            }
        };
        if self.echo {
            ctx.response_headers
                .push((std::borrow::Cow::Owned(self.header.clone()), id.into()));
        }
        Flow::Continue
    }
}
