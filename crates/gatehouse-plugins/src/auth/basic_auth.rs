//! `basic-auth`: HTTP Basic credentials checked against argon2id hashes. A small cache of
//! recently verified username/password pairs (keyed by their SHA-256, never the password)
//! spares a valid client an argon2 hash per request.

use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine;
use foldhash::{HashMap, HashMapExt};
use gatehouse_model::secret::verify_password;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::HeaderValue;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{anonymous_identity, conclude, Identity};
use crate::config;

fn yes() -> bool {
    true
}

/// Settings of `basic-auth`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// Remove the Authorization header before the request goes upstream.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Consumer (id or username) to continue as when no valid credentials are given.
    #[serde(default)]
    pub anonymous: Option<String>,
    /// Authenticate CORS preflight (`OPTIONS`) requests too.
    #[serde(default = "yes")]
    pub run_on_preflight: bool,
    /// Realm in the `WWW-Authenticate` challenge.
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "gatehouse".into()
}

/// The `basic-auth` factory.
pub struct BasicAuth;

struct Cred {
    hash: String,
    identity: Identity,
}

/// Verified pairs kept at most (then the cache starts over).
const CACHE_MAX: usize = 10_000;

struct Compiled {
    hide: bool,
    preflight: bool,
    challenge: HeaderValue,
    users: HashMap<String, Cred>,
    anonymous: Option<Identity>,
    verified: Mutex<HashMap<[u8; 32], String>>,
}

impl Factory for BasicAuth {
    fn name(&self) -> &'static str {
        "basic-auth"
    }
    fn priority(&self) -> i32 {
        1100
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<BasicAuthConfig>(v, |c| {
            match config::header_value(&format!("Basic realm=\"{}\"", c.realm)) {
                Ok(_) if !c.realm.contains('"') => Vec::new(),
                _ => vec![(
                    "realm".into(),
                    "must be printable text without quotes".into(),
                )],
            }
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: BasicAuthConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let mut users = HashMap::new();
        for consumer in &ctx.config.consumers {
            let rt = super::consumer_rt(consumer);
            for cred in &consumer.basicauth_credentials {
                if let Some(h) = &cred.password_hash {
                    users.insert(
                        cred.username.clone(),
                        Cred {
                            hash: h.clone(),
                            identity: Identity::new(rt.clone(), Some(cred.id.to_string()), false),
                        },
                    );
                }
            }
        }
        let anonymous = anonymous_identity(ctx.config, c.anonymous.as_deref())?;
        Ok(Arc::new(Compiled {
            hide: c.hide_credentials,
            preflight: c.run_on_preflight,
            challenge: config::header_value(&format!("Basic realm=\"{}\"", c.realm))?,
            users,
            anonymous,
            verified: Mutex::new(HashMap::new()),
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<BasicAuthConfig>()
    }
}

fn decode(h: &HeaderValue) -> Option<(String, String)> {
    let s = h.to_str().ok()?;
    let (scheme, b64) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl Compiled {
    fn check(&self, user: &str, password: &str) -> Option<&Cred> {
        let cred = self.users.get(user)?;
        let mut d = Sha256::new();
        d.update(user.as_bytes());
        d.update([0]);
        d.update(password.as_bytes());
        let key: [u8; 32] = d.finalize().into();
        if self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            == Some(&cred.hash)
        {
            return Some(cred);
        }
        if !verify_password(password, &cred.hash) {
            return None;
        }
        let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, cred.hash.clone());
        Some(cred)
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        if !self.preflight && req.method == http::Method::OPTIONS {
            return Flow::Continue;
        }
        let given = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(decode);
        if given.is_some() && self.hide {
            req.headers.remove(http::header::AUTHORIZATION);
        }
        let ok = given.as_ref().and_then(|(u, p)| self.check(u, p));
        // The same answer for an unknown user and a wrong password.
        let result = match (ok, &given) {
            (Some(cred), _) => Ok(&cred.identity),
            (None, None) => Err("no Basic credentials in request"),
            (None, Some(_)) => Err("invalid authentication credentials"),
        };
        conclude(
            ctx,
            &mut req.headers,
            result,
            self.anonymous.as_ref(),
            &self.challenge,
        )
    }
}
