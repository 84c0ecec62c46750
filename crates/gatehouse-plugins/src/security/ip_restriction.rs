//! `ip-restriction`: allow or deny clients by address (IPv4 and IPv6 CIDRs). The address is
//! the real client's, after the trusted-proxy rules: a forged `X-Forwarded-For` from an
//! untrusted peer changes nothing.

use std::sync::Arc;

use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::StatusCode;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config;

fn forbidden() -> u16 {
    403
}

/// Settings of `ip-restriction`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    /// Only these addresses/CIDRs may pass (empty: everyone not denied).
    #[serde(default)]
    pub allow: Vec<String>,
    /// These addresses/CIDRs are refused (checked first).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Status of the refusal.
    #[serde(default = "forbidden")]
    pub status: u16,
    /// Message of the refusal.
    #[serde(default)]
    pub message: Option<String>,
}

/// The `ip-restriction` factory.
pub struct IpRestriction;

fn net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{s}` is not an IP address or CIDR"))
}

struct Compiled {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    status: StatusCode,
    message: String,
}

impl Factory for IpRestriction {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }
    fn priority(&self) -> i32 {
        990
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<IpRestrictionConfig>(v, |c| {
            let mut e = Vec::new();
            for (field, list) in [("allow", &c.allow), ("deny", &c.deny)] {
                for (i, s) in list.iter().enumerate() {
                    if let Err(m) = net(s) {
                        e.push((format!("{field}[{i}]"), m));
                    }
                }
            }
            if c.allow.is_empty() && c.deny.is_empty() {
                e.push(("allow".into(), "set `allow` or `deny`".into()));
            }
            if !(400..600).contains(&c.status) {
                e.push(("status".into(), "must be 400-599".into()));
            }
            e
        })
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: IpRestrictionConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        Ok(Arc::new(Compiled {
            allow: c.allow.iter().map(|s| net(s)).collect::<Result<_, _>>()?,
            deny: c.deny.iter().map(|s| net(s)).collect::<Result<_, _>>()?,
            status: StatusCode::from_u16(c.status).map_err(|e| e.to_string())?,
            message: c
                .message
                .unwrap_or_else(|| "your IP address is not allowed".into()),
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<IpRestrictionConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<IpRestrictionConfig>(config)
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, _req: &mut http::request::Parts) -> Flow {
        let ip = ctx.client_ip;
        let denied = self.deny.iter().any(|n| n.contains(&ip))
            || (!self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)));
        if denied {
            ctx.reject(self.status, "ip_forbidden", &self.message)
        } else {
            Flow::Continue
        }
    }
}
