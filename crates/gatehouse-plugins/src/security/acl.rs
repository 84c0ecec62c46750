//! `acl`: allow or deny authenticated consumers by group. Runs after authentication and
//! tells the upstream the consumer's groups.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config;

/// Header listing the consumer's groups, sent upstream.
pub static CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");

/// Settings of `acl`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Consumers in any of these groups may pass (exclusive with `deny`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Consumers in any of these groups are refused (exclusive with `allow`).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Do not send `X-Consumer-Groups` upstream.
    #[serde(default)]
    pub hide_groups_header: bool,
}

/// The `acl` factory.
pub struct Acl;

/// Each consumer's groups and the `X-Consumer-Groups` value listing them (shared by every
/// instance of a snapshot).
type Groups = HashMap<Uuid, (Vec<String>, Option<HeaderValue>)>;

struct Compiled {
    allow: Vec<String>,
    deny: Vec<String>,
    hide: bool,
    groups: Arc<Groups>,
}

impl Factory for Acl {
    fn name(&self) -> &'static str {
        "acl"
    }
    fn priority(&self) -> i32 {
        950
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<AclConfig>(v, |c| match (c.allow.is_empty(), c.deny.is_empty()) {
            (true, true) => vec![("allow".into(), "set `allow` or `deny`".into())],
            (false, false) => vec![("deny".into(), "set `allow` or `deny`, not both".into())],
            _ => Vec::new(),
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: AclConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let groups = ctx.shared.get_or_build("acl", || {
            let mut groups = HashMap::new();
            for consumer in &ctx.config.consumers {
                let list: Vec<String> = consumer.acls.iter().map(|g| g.group.clone()).collect();
                let header = if list.is_empty() {
                    None
                } else {
                    config::header_value(&list.join(", ")).ok()
                };
                groups.insert(consumer.id, (list, header));
            }
            Ok(groups)
        })?;
        Ok(Arc::new(Compiled {
            allow: c.allow,
            deny: c.deny,
            hide: c.hide_groups_header,
            groups,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<AclConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<AclConfig>(config)
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        req.headers.remove(&CONSUMER_GROUPS);
        let Some(consumer) = &ctx.consumer else {
            return ctx.reject(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authentication is required",
            );
        };
        let (groups, header) = self
            .groups
            .get(&consumer.id)
            .map_or((&[][..], None), |(g, h)| (g.as_slice(), h.as_ref()));
        let member = |list: &[String]| groups.iter().any(|g| list.contains(g));
        let allowed = if self.allow.is_empty() {
            !member(&self.deny)
        } else {
            member(&self.allow)
        };
        if !allowed {
            return ctx.reject(
                StatusCode::FORBIDDEN,
                "forbidden",
                "you cannot consume this service",
            );
        }
        if let (false, Some(h)) = (self.hide, header) {
            req.headers.insert(CONSUMER_GROUPS.clone(), h.clone());
        }
        Flow::Continue
    }
}
