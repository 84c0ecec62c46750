//! `request-size-limiting`: refuse bodies over a size with 413, whether announced by
//! Content-Length (refused before reading) or streamed chunked (refused as it grows).

use std::sync::Arc;

use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config;

fn default_size() -> u64 {
    128
}

/// Unit of `allowed_payload_size`.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SizeUnit {
    /// Bytes.
    Bytes,
    /// 1024 bytes.
    Kilobytes,
    /// 1024² bytes.
    #[default]
    Megabytes,
}

/// Settings of `request-size-limiting`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSizeLimitingConfig {
    /// Largest body accepted, in `size_unit`.
    #[serde(default = "default_size")]
    pub allowed_payload_size: u64,
    /// Unit of `allowed_payload_size`.
    #[serde(default)]
    pub size_unit: SizeUnit,
    /// Refuse bodies without Content-Length (411).
    #[serde(default)]
    pub require_content_length: bool,
}

/// The `request-size-limiting` factory.
pub struct RequestSizeLimiting;

struct Compiled {
    limit: u64,
    require_length: bool,
}

impl Factory for RequestSizeLimiting {
    fn name(&self) -> &'static str {
        "request-size-limiting"
    }
    fn priority(&self) -> i32 {
        951
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<RequestSizeLimitingConfig>(v, |c| {
            if c.allowed_payload_size == 0 {
                vec![("allowed_payload_size".into(), "must be at least 1".into())]
            } else {
                Vec::new()
            }
        })
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: RequestSizeLimitingConfig =
            config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let mult = match c.size_unit {
            SizeUnit::Bytes => 1,
            SizeUnit::Kilobytes => 1024,
            SizeUnit::Megabytes => 1024 * 1024,
        };
        Ok(Arc::new(Compiled {
            limit: c.allowed_payload_size.saturating_mul(mult),
            require_length: c.require_content_length,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<RequestSizeLimitingConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<RequestSizeLimitingConfig>(config)
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        let announced = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match announced {
            Some(n) if n > self.limit => {
                return ctx.reject(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    &format!(
                        "request body is larger than the limit of {} bytes",
                        self.limit
                    ),
                );
            }
            None if self.require_length
                && req.headers.contains_key(http::header::TRANSFER_ENCODING) =>
            {
                return ctx.reject(
                    StatusCode::LENGTH_REQUIRED,
                    "length_required",
                    "a Content-Length header is required",
                );
            }
            _ => {}
        }
        // Streamed bodies are counted by the proxy against the smallest limit in force.
        ctx.body_limit = Some(ctx.body_limit.map_or(self.limit, |l| l.min(self.limit)));
        Flow::Continue
    }
}
