//! `key-auth`: API keys in a header or the query string. Keys are stored as SHA-256 and
//! looked up by hash, so neither the store nor a timing side channel reveals them.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::HeaderValue;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{anonymous_identity, conclude, Identity};
use crate::config;

fn default_key_names() -> Vec<String> {
    vec!["apikey".into()]
}
fn yes() -> bool {
    true
}

/// Settings of `key-auth`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    /// Header or query parameter names that may carry the key.
    #[serde(default = "default_key_names")]
    pub key_names: Vec<String>,
    /// Look for the key in request headers.
    #[serde(default = "yes")]
    pub key_in_header: bool,
    /// Look for the key in the query string.
    #[serde(default = "yes")]
    pub key_in_query: bool,
    /// Remove the key before the request goes upstream.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Consumer (id or username) to use when no valid key is given, instead of answering 401
    /// (lets a route accept any of several authentication plugins).
    #[serde(default)]
    pub anonymous: Option<String>,
    /// Authenticate CORS preflight (`OPTIONS`) requests too.
    #[serde(default = "yes")]
    pub run_on_preflight: bool,
}

/// The `key-auth` factory.
pub struct KeyAuth;

struct Compiled {
    cfg: KeyAuthConfig,
    header_names: Vec<http::HeaderName>,
    keys: Arc<HashMap<[u8; 32], Identity>>,
    anonymous: Option<Identity>,
}

impl Factory for KeyAuth {
    fn name(&self) -> &'static str {
        "key-auth"
    }
    fn priority(&self) -> i32 {
        1250
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<KeyAuthConfig>(v, |c| {
            let mut e = Vec::new();
            if c.key_names.is_empty() {
                e.push(("key_names".into(), "list at least one name".into()));
            }
            for (i, n) in c.key_names.iter().enumerate() {
                if let Err(m) = config::header_name(n) {
                    e.push((format!("key_names[{i}]"), m));
                }
            }
            if !c.key_in_header && !c.key_in_query {
                e.push((
                    "key_in_header".into(),
                    "the key must be allowed in the header or the query".into(),
                ));
            }
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let cfg: KeyAuthConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let header_names = cfg
            .key_names
            .iter()
            .map(|n| config::header_name(n))
            .collect::<Result<_, _>>()?;
        let keys = ctx.shared.get_or_build("key-auth", || {
            let mut keys = HashMap::new();
            for c in &ctx.config.consumers {
                let rt = super::consumer_rt(c);
                for cred in &c.keyauth_credentials {
                    if let Some(d) = cred.key_hash.as_deref().and_then(digest_from_hex) {
                        keys.insert(
                            d,
                            Identity::new(rt.clone(), Some(cred.id.to_string()), false),
                        );
                    }
                }
            }
            Ok(keys)
        })?;
        let anonymous = anonymous_identity(ctx.config, cfg.anonymous.as_deref())?;
        Ok(Arc::new(Compiled {
            cfg,
            header_names,
            keys,
            anonymous,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<KeyAuthConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<KeyAuthConfig>(config)
    }
}

/// The 32 bytes of a hex SHA-256 (as stored in `key_hash`).
fn digest_from_hex(h: &str) -> Option<[u8; 32]> {
    let b = h.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// A query parameter's name with its percent-escapes decoded (`api%6Bey` is `apikey` to
/// most backends, so it must be to the gateway too).
fn param_name(raw: &str) -> std::borrow::Cow<'_, str> {
    if !raw.contains('%') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (param_name(k) == name).then_some(v)
    })
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        if !self.cfg.run_on_preflight && req.method == http::Method::OPTIONS {
            return Flow::Continue;
        }
        // Find the key (headers first, then the query string); only its digest is kept.
        let digest = |k: &str| <[u8; 32]>::from(Sha256::digest(k.as_bytes()));
        let mut found: Option<[u8; 32]> = None;
        if self.cfg.key_in_header {
            found = self
                .header_names
                .iter()
                .find_map(|n| req.headers.get(n).and_then(|v| v.to_str().ok()))
                .map(digest);
        }
        if found.is_none() && self.cfg.key_in_query {
            if let Some(q) = req.uri.query() {
                found = self
                    .cfg
                    .key_names
                    .iter()
                    .find_map(|n| query_value(q, n))
                    .map(digest);
            }
        }
        if self.cfg.hide_credentials && found.is_some() {
            // Every copy goes, wherever the key may be read from: a second key in the
            // query beside the one in the header must not reach the upstream either.
            if self.cfg.key_in_header {
                for n in &self.header_names {
                    req.headers.remove(n);
                }
            }
            if self.cfg.key_in_query {
                strip_query_params(req, &self.cfg.key_names);
            }
        }
        let matched = found.as_ref().and_then(|d| self.keys.get(d));
        // Same answer whether the key is unknown or belongs to nobody: no oracle.
        let result = match (matched, &found) {
            (Some(id), _) => Ok(id),
            (None, None) => Err("no API key found in request"),
            (None, Some(_)) => Err("invalid authentication credentials"),
        };
        static CHALLENGE: HeaderValue = HeaderValue::from_static("Key realm=\"gatehouse\"");
        conclude(
            ctx,
            &mut req.headers,
            result,
            self.anonymous.as_ref(),
            &CHALLENGE,
        )
    }
}

fn strip_query_params(req: &mut http::request::Parts, names: &[String]) {
    let Some(q) = req.uri.query() else { return };
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| {
            let k = p.split_once('=').map_or(*p, |(k, _)| k);
            let k = param_name(k);
            !names.iter().any(|n| *n == k)
        })
        .collect();
    let pq = if kept.is_empty() {
        req.uri.path().to_string()
    } else {
        format!("{}?{}", req.uri.path(), kept.join("&"))
    };
    if let Ok(uri) = http::Uri::try_from(pq) {
        req.uri = uri;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_are_decoded_and_every_copy_stripped() {
        assert_eq!(query_value("a=1&api%6Bey=k&b=2", "apikey"), Some("k"));
        let mut req = http::Request::get("/p?apikey=1&x=2&api%6bey=3&key=4&apikey")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        strip_query_params(&mut req, &["apikey".into(), "key".into()]);
        assert_eq!(req.uri.to_string(), "/p?x=2");
        let mut req = http::Request::get("/p?apikey=1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        strip_query_params(&mut req, &["apikey".into()]);
        assert_eq!(req.uri.to_string(), "/p");
    }
}
