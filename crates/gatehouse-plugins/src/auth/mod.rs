//! Authentication plugins: identify a consumer, forward who it is upstream.

pub mod basic_auth;
pub mod hasher;
pub mod hmac_auth;
pub mod jwt;
pub mod key_auth;
pub mod mtls_auth;

use std::sync::Arc;

use gatehouse_proxy::plugin::{ConsumerRt, RequestCtx};
use http::{HeaderName, HeaderValue};

/// Headers every authentication plugin sets upstream (and strips when the client sent them).
pub static CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
/// See [`CONSUMER_ID`].
pub static CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
/// See [`CONSUMER_ID`].
pub static CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
/// See [`CONSUMER_ID`].
pub static CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
/// Set to `true` when the request was let through as the anonymous consumer.
pub static ANONYMOUS: HeaderName = HeaderName::from_static("x-anonymous-consumer");

/// Removes identity headers a client may have forged. One pass over the (few) request
/// headers first: five removals that miss would hash five names for nothing.
pub fn strip_identity(h: &mut http::HeaderMap) {
    let forged = h.keys().any(|k| {
        let k = k.as_str();
        k.starts_with("x-consumer-")
            || k == "x-credential-identifier"
            || k == "x-anonymous-consumer"
    });
    if !forged {
        return;
    }
    for n in [
        &CONSUMER_ID,
        &CONSUMER_USERNAME,
        &CONSUMER_CUSTOM_ID,
        &CREDENTIAL_IDENTIFIER,
        &ANONYMOUS,
    ] {
        h.remove(n);
    }
}

/// A consumer (and credential) as authentication plugins forward it: the header values are
/// built once per config, not per request.
pub struct Identity {
    /// The consumer.
    pub consumer: Arc<ConsumerRt>,
    /// The credential identifier, if any.
    pub credential: Option<Arc<str>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Identity {
    /// Prepares the upstream headers for `consumer` authenticated with `credential`.
    pub fn new(consumer: Arc<ConsumerRt>, credential: Option<String>, anonymous: bool) -> Identity {
        let mut headers = Vec::new();
        let mut add = |n: &HeaderName, v: Option<&str>| {
            if let Some(v) = v.and_then(|v| HeaderValue::from_str(v).ok()) {
                headers.push((n.clone(), v));
            }
        };
        add(&CONSUMER_ID, Some(&consumer.id.to_string()));
        add(&CONSUMER_USERNAME, consumer.username.as_deref());
        add(&CONSUMER_CUSTOM_ID, consumer.custom_id.as_deref());
        add(&CREDENTIAL_IDENTIFIER, credential.as_deref());
        if anonymous {
            add(&ANONYMOUS, Some("true"));
        }
        Identity {
            consumer,
            credential: credential.map(Arc::from),
            headers,
        }
    }

    /// Records the consumer on the request and tells the upstream who it is (replacing any
    /// identity headers the client sent).
    pub fn apply(&self, ctx: &mut RequestCtx, h: &mut http::HeaderMap) {
        strip_identity(h);
        for (n, v) in &self.headers {
            h.insert(n.clone(), v.clone());
        }
        ctx.consumer = Some(self.consumer.clone());
        ctx.credential = self.credential.clone();
    }
}

/// The identity an authentication plugin falls back to (`anonymous: id or username`).
pub fn anonymous_identity(
    cfg: &gatehouse_model::Config,
    name: Option<&str>,
) -> Result<Option<Identity>, String> {
    match name {
        None => Ok(None),
        Some(a) => {
            let c = find_consumer(cfg, a).ok_or_else(|| format!("anonymous: no consumer `{a}`"))?;
            Ok(Some(Identity::new(c, None, true)))
        }
    }
}

/// How every authentication plugin ends its access phase: the authenticated identity, else
/// the anonymous one, else `401` with the reason and a `WWW-Authenticate` challenge.
pub fn conclude(
    ctx: &mut RequestCtx,
    headers: &mut http::HeaderMap,
    result: Result<&Identity, &str>,
    anonymous: Option<&Identity>,
    challenge: &HeaderValue,
) -> gatehouse_proxy::plugin::Flow {
    use gatehouse_proxy::plugin::Flow;
    match (result, anonymous) {
        (Ok(id), _) | (Err(_), Some(id)) => {
            id.apply(ctx, headers);
            Flow::Continue
        }
        (Err(why), None) => {
            let mut flow = ctx.reject(http::StatusCode::UNAUTHORIZED, "unauthorized", why);
            if let Flow::Respond(r) = &mut flow {
                r.headers_mut()
                    .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
            }
            flow
        }
    }
}

/// The consumer named by id or username in `cfg`.
pub fn find_consumer(cfg: &gatehouse_model::Config, key: &str) -> Option<Arc<ConsumerRt>> {
    cfg.consumers
        .iter()
        .find(|c| c.id.to_string() == key || c.username.as_deref() == Some(key))
        .map(consumer_rt)
}

/// Runtime view of a consumer.
pub fn consumer_rt(c: &gatehouse_model::Consumer) -> Arc<ConsumerRt> {
    Arc::new(ConsumerRt {
        id: c.id,
        username: c.username.as_deref().map(Arc::from),
        custom_id: c.custom_id.as_deref().map(Arc::from),
    })
}
