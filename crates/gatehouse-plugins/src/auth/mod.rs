//! Authentication plugins: identify a consumer, forward who it is upstream.

pub mod key_auth;

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

/// Removes identity headers a client may have forged.
pub fn strip_identity(h: &mut http::HeaderMap) {
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

/// Records the consumer on the request and tells the upstream who it is.
pub fn set_consumer(
    ctx: &mut RequestCtx,
    h: &mut http::HeaderMap,
    c: &Arc<ConsumerRt>,
    credential: Option<&str>,
    anonymous: bool,
) {
    strip_identity(h);
    if let Ok(v) = HeaderValue::from_str(&c.id.to_string()) {
        h.insert(CONSUMER_ID.clone(), v);
    }
    if let Some(v) = c
        .username
        .as_deref()
        .and_then(|u| HeaderValue::from_str(u).ok())
    {
        h.insert(CONSUMER_USERNAME.clone(), v);
    }
    if let Some(v) = c
        .custom_id
        .as_deref()
        .and_then(|u| HeaderValue::from_str(u).ok())
    {
        h.insert(CONSUMER_CUSTOM_ID.clone(), v);
    }
    if let Some(v) = credential.and_then(|c| HeaderValue::from_str(c).ok()) {
        h.insert(CREDENTIAL_IDENTIFIER.clone(), v);
    }
    if anonymous {
        h.insert(ANONYMOUS.clone(), HeaderValue::from_static("true"));
    }
    ctx.consumer = Some(c.clone());
    ctx.credential = credential.map(str::to_string);
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
