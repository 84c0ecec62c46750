//! `mtls-auth`: authenticates a request by the client certificate its TLS connection
//! presented. The certificate was already verified during the handshake against the
//! `client_ca` of the certificate entity that served the SNI; this plugin maps it to a
//! consumer — by a consumer's `mtls_credentials` (subject name equal to the certificate's CN
//! or one of its SANs), or by the CN equal to a consumer's username or custom id — so ACLs,
//! limits and logs work per client certificate. The certificate's subject and SHA-256
//! fingerprint can be passed upstream.

use std::sync::Arc;

use foldhash::HashMap;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{anonymous_identity, conclude, Identity};
use crate::config;

/// Consumer fields a certificate's common name may equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsumerBy {
    /// The consumer's username.
    Username,
    /// The consumer's custom id.
    CustomId,
}

fn default_consumer_by() -> Vec<ConsumerBy> {
    vec![ConsumerBy::Username, ConsumerBy::CustomId]
}
fn yes() -> bool {
    true
}

/// Settings of `mtls-auth`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsAuthConfig {
    /// After `mtls_credentials`, which consumer fields the certificate's CN is matched
    /// against, in order.
    #[serde(default = "default_consumer_by")]
    pub consumer_by: Vec<ConsumerBy>,
    /// Accept any verified certificate without mapping it to a consumer.
    #[serde(default)]
    pub skip_consumer_lookup: bool,
    /// Consumer (id or username) to continue as without a usable certificate.
    #[serde(default)]
    pub anonymous: Option<String>,
    /// Send `X-Client-Cert-Subject` and `X-Client-Cert-Fingerprint` (SHA-256) upstream.
    #[serde(default = "yes")]
    pub forward_headers: bool,
}

/// The `mtls-auth` factory.
pub struct MtlsAuth;

/// Consumers by certificate subject, username and custom id (shared by every instance).
#[derive(Default)]
struct MtlsIndex {
    subject: HashMap<String, Identity>,
    username: HashMap<String, Identity>,
    custom_id: HashMap<String, Identity>,
}

struct Compiled {
    cfg: MtlsAuthConfig,
    by: Arc<MtlsIndex>,
    anonymous: Option<Identity>,
}

static SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
static FINGERPRINT: HeaderName = HeaderName::from_static("x-client-cert-fingerprint");

impl Factory for MtlsAuth {
    fn name(&self) -> &'static str {
        "mtls-auth"
    }
    fn priority(&self) -> i32 {
        1600
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<MtlsAuthConfig>(v, |_| Vec::new())
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let cfg: MtlsAuthConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let by = ctx.shared.get_or_build("mtls-auth", || {
            let mut ix = MtlsIndex::default();
            for c in &ctx.config.consumers {
                let rt = super::consumer_rt(c);
                for cred in &c.mtls_credentials {
                    ix.subject.insert(
                        cred.subject_name.clone(),
                        Identity::new(rt.clone(), Some(cred.id.to_string()), false),
                    );
                }
                if let Some(u) = &c.username {
                    ix.username
                        .insert(u.clone(), Identity::new(rt.clone(), None, false));
                }
                if let Some(id) = &c.custom_id {
                    ix.custom_id
                        .insert(id.clone(), Identity::new(rt.clone(), None, false));
                }
            }
            Ok(ix)
        })?;
        let anonymous = anonymous_identity(ctx.config, cfg.anonymous.as_deref())?;
        Ok(Arc::new(Compiled { cfg, by, anonymous }))
    }
    fn schema(&self) -> Value {
        config::schema::<MtlsAuthConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<MtlsAuthConfig>(config)
    }
}

impl Compiled {
    fn lookup(&self, cert: &gatehouse_proxy::tls::server::ClientCert) -> Option<&Identity> {
        let names = cert.common_name.iter().chain(cert.sans.iter());
        for n in names {
            if let Some(id) = self.by.subject.get(&**n) {
                return Some(id);
            }
        }
        let cn = cert.common_name.as_deref()?;
        self.cfg.consumer_by.iter().find_map(|by| match by {
            ConsumerBy::Username => self.by.username.get(cn),
            ConsumerBy::CustomId => self.by.custom_id.get(cn),
        })
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        let cert = ctx.tls.as_ref().and_then(|t| t.client_cert.clone());
        if self.cfg.forward_headers {
            if let Some(c) = &cert {
                if let Ok(v) = HeaderValue::from_str(&c.subject) {
                    req.headers.insert(SUBJECT.clone(), v);
                }
                if let Ok(v) = HeaderValue::from_str(&c.fingerprint) {
                    req.headers.insert(FINGERPRINT.clone(), v);
                }
            }
        }
        let result = match &cert {
            None => Err("no client certificate: connect over TLS with a certificate"),
            Some(_) if self.cfg.skip_consumer_lookup => {
                ctx.credential = cert.as_ref().map(|c| c.fingerprint.clone());
                return Flow::Continue;
            }
            Some(c) => self
                .lookup(c)
                .ok_or("the client certificate does not belong to a consumer"),
        };
        static CHALLENGE: HeaderValue = HeaderValue::from_static("mTLS");
        conclude(
            ctx,
            &mut req.headers,
            result,
            self.anonymous.as_ref(),
            &CHALLENGE,
        )
    }
}
