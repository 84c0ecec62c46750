//! `basic-auth`: HTTP Basic credentials checked against argon2id hashes.
//!
//! The hash check never runs on a proxy worker: `prepare` sends it to the hashing pool
//! (`auth::hasher`) and the access phase reads the verdict. Unknown users are checked against
//! a dummy hash, so a wrong password takes the same time whether or not the user exists. A
//! small cache of recently verified username/password pairs (keyed by their SHA-256, never
//! the password) spares a valid client a hash per request, and failed checks are limited per
//! username (`max_failures` in `failure_window`), after which that username is refused with
//! 429 without hashing until the window ends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use foldhash::{HashMap, HashMapExt};
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, PrepareFuture, RequestCtx};
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
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
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
    /// Failed password checks allowed per username within `failure_window`; after that
    /// the username is refused (429) without a check until the window ends. 0: no limit.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Seconds over which failures are counted.
    #[serde(default = "default_failure_window")]
    pub failure_window: u64,
}

fn default_max_failures() -> u32 {
    10
}
fn default_failure_window() -> u64 {
    60
}

fn default_realm() -> String {
    "gatehouse".into()
}

/// The `basic-auth` factory.
pub struct BasicAuth;

struct Cred {
    hash: Arc<str>,
    identity: Identity,
}

/// Verified pairs kept at most (then the cache starts over).
const CACHE_MAX: usize = 10_000;
/// Usernames with recent failures tracked at most (expired ones are dropped first).
const FAILURES_MAX: usize = 100_000;

struct Compiled {
    hide: bool,
    preflight: bool,
    challenge: HeaderValue,
    users: Arc<HashMap<String, Cred>>,
    anonymous: Option<Identity>,
    verified: Mutex<HashMap<[u8; 32], Arc<str>>>,
    limit: FailureLimit,
}

/// Failed checks per username (keyed by the name's SHA-256, whether or not it exists).
struct FailureLimit {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<[u8; 32], (u32, Instant)>>,
}

impl FailureLimit {
    fn locked(&self, user: &[u8; 32]) -> bool {
        if self.max == 0 {
            return false;
        }
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.get(user)
            .is_some_and(|(n, since)| *n >= self.max && since.elapsed() < self.window)
    }

    fn failed(&self, user: [u8; 32]) {
        if self.max == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= FAILURES_MAX {
            let window = self.window;
            seen.retain(|_, (_, since)| since.elapsed() < window);
            if seen.len() >= FAILURES_MAX {
                seen.clear();
            }
        }
        let e = seen.entry(user).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

/// What `prepare` found out for the access phase.
enum Verdict {
    /// The hashing pool checked the password.
    Checked(bool),
    /// Too many recent failures for this username: not checked.
    Locked,
    /// The hashing pool is saturated: not checked.
    Busy,
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
        super::hasher::warm_up();
        let c: BasicAuthConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let users = ctx.shared.get_or_build("basic-auth", || {
            let mut users = HashMap::new();
            for consumer in &ctx.config.consumers {
                let rt = super::consumer_rt(consumer);
                for cred in &consumer.basicauth_credentials {
                    if let Some(h) = &cred.password_hash {
                        users.insert(
                            cred.username.clone(),
                            Cred {
                                hash: Arc::from(h.as_str()),
                                identity: Identity::new(
                                    rt.clone(),
                                    Some(cred.id.to_string()),
                                    false,
                                ),
                            },
                        );
                    }
                }
            }
            Ok(users)
        })?;
        let anonymous = anonymous_identity(ctx.config, c.anonymous.as_deref())?;
        Ok(Arc::new(Compiled {
            hide: c.hide_credentials,
            preflight: c.run_on_preflight,
            challenge: config::header_value(&format!("Basic realm=\"{}\"", c.realm))?,
            users,
            anonymous,
            verified: Mutex::new(HashMap::new()),
            limit: FailureLimit {
                max: c.max_failures,
                window: Duration::from_secs(c.failure_window.max(1)),
                seen: Mutex::new(HashMap::new()),
            },
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<BasicAuthConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<BasicAuthConfig>(config)
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

fn digest(parts: &[&[u8]]) -> [u8; 32] {
    let mut d = Sha256::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            d.update([0]);
        }
        d.update(p);
    }
    d.finalize().into()
}

impl Compiled {
    /// The credential when this exact pair was verified recently (no hashing).
    fn cached(&self, user: &str, password: &str) -> Option<&Cred> {
        let cred = self.users.get(user)?;
        let key = digest(&[user.as_bytes(), password.as_bytes()]);
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        (verified.get(&key) == Some(&cred.hash)).then_some(cred)
    }

    fn remember(&self, user: &str, password: &str, cred: &Cred) {
        let key = digest(&[user.as_bytes(), password.as_bytes()]);
        let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, cred.hash.clone());
    }
}

impl Plugin for Compiled {
    fn prepare(&self, _ctx: &RequestCtx, req: &http::request::Parts) -> Option<PrepareFuture> {
        if !self.preflight && req.method == http::Method::OPTIONS {
            return None;
        }
        let (user, password) = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(decode)?;
        if self.cached(&user, &password).is_some() {
            return None;
        }
        if self.limit.locked(&digest(&[user.as_bytes()])) {
            return Some(Box::pin(std::future::ready(Some(
                Box::new(Verdict::Locked) as Box<dyn std::any::Any>,
            ))));
        }
        let hash = self.users.get(&user).map(|c| c.hash.clone());
        let rx = super::hasher::verify(password, hash);
        Some(Box::pin(async move {
            let verdict = match rx {
                Ok(rx) => Verdict::Checked(rx.await.unwrap_or(false)),
                Err(_) => Verdict::Busy,
            };
            Some(Box::new(verdict) as Box<dyn std::any::Any>)
        }))
    }

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
        let verdict = ctx
            .prepared
            .take()
            .and_then(|p| p.downcast::<Verdict>().ok());
        let result = match (&given, verdict.as_deref()) {
            (None, _) => Err("no Basic credentials in request"),
            (Some((u, p)), None) => self
                .cached(u, p)
                .map(|c| &c.identity)
                .ok_or("invalid authentication credentials"),
            (Some((u, p)), Some(Verdict::Checked(true))) => match self.users.get(u.as_str()) {
                Some(cred) => {
                    self.remember(u, p, cred);
                    Ok(&cred.identity)
                }
                None => Err("invalid authentication credentials"),
            },
            (Some((u, _)), Some(Verdict::Checked(false))) => {
                self.limit.failed(digest(&[u.as_bytes()]));
                // The same answer for an unknown user and a wrong password.
                Err("invalid authentication credentials")
            }
            (Some(_), Some(Verdict::Locked)) if self.anonymous.is_none() => {
                let mut flow = ctx.reject(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "too_many_failures",
                    "too many failed logins for this user; retry later",
                );
                if let Flow::Respond(r) = &mut flow {
                    r.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        HeaderValue::from(self.limit.window.as_secs()),
                    );
                }
                return flow;
            }
            (Some(_), Some(Verdict::Locked)) => Err("invalid authentication credentials"),
            (Some(_), Some(Verdict::Busy)) => {
                let mut flow = ctx.reject(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "auth_busy",
                    "too many password checks in progress; retry shortly",
                );
                if let Flow::Respond(r) = &mut flow {
                    r.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                return flow;
            }
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
