//! `hmac-auth`: requests signed with a shared secret (HMAC-SHA256/384/512) over the date,
//! the request line and chosen headers, optionally with a body digest. Dates outside the
//! allowed clock skew are refused, and a signature seen twice within the skew window is
//! refused as a replay.

use std::collections::HashMap as StdHashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use foldhash::{HashMap, HashMapExt};
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use hmac::{Hmac, Mac};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha384, Sha512};
use utoipa::ToSchema;

use super::{anonymous_identity, conclude, Identity};
use crate::config;

fn skew() -> u64 {
    300
}
fn all_algorithms() -> Vec<String> {
    ["hmac-sha256", "hmac-sha384", "hmac-sha512"]
        .map(String::from)
        .to_vec()
}

/// Settings of `hmac-auth`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacAuthConfig {
    /// Remove the Authorization header before forwarding.
    #[serde(default)]
    pub hide_credentials: bool,
    /// Seconds the `Date`/`X-Date` may differ from the gateway's clock (also the replay window).
    #[serde(default = "skew")]
    pub clock_skew: u64,
    /// Consumer (id or username) to continue as without a valid signature.
    #[serde(default)]
    pub anonymous: Option<String>,
    /// Require a `Digest: SHA-256=<base64>` header that matches the body (the body is then
    /// read whole before forwarding).
    #[serde(default)]
    pub validate_request_body: bool,
    /// Headers every signature must cover (besides a date).
    #[serde(default)]
    pub enforce_headers: Vec<String>,
    /// Accepted algorithms.
    #[serde(default = "all_algorithms")]
    pub algorithms: Vec<String>,
}

/// The `hmac-auth` factory.
pub struct HmacAuth;

struct Cred {
    secret: Vec<u8>,
    identity: Identity,
}

/// Signatures seen recently, for replay protection; kept across reloads with the same config.
#[derive(Default)]
pub struct Seen {
    until: Mutex<StdHashMap<[u8; 32], u64>>,
}

struct Compiled {
    cfg: HmacAuthConfig,
    users: Arc<HashMap<String, Cred>>,
    anonymous: Option<Identity>,
    seen: Arc<Seen>,
}

impl Factory for HmacAuth {
    fn name(&self) -> &'static str {
        "hmac-auth"
    }
    fn priority(&self) -> i32 {
        1030
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<HmacAuthConfig>(v, |c| {
            let mut e = Vec::new();
            for (i, a) in c.algorithms.iter().enumerate() {
                if !all_algorithms().contains(a) {
                    e.push((
                        format!("algorithms[{i}]"),
                        format!("`{a}`: use hmac-sha256, hmac-sha384 or hmac-sha512"),
                    ));
                }
            }
            if c.algorithms.is_empty() {
                e.push(("algorithms".into(), "list at least one".into()));
            }
            if c.clock_skew == 0 || c.clock_skew > 86_400 {
                e.push(("clock_skew".into(), "must be 1-86400 seconds".into()));
            }
            for (i, h) in c.enforce_headers.iter().enumerate() {
                if h != "request-line" {
                    if let Err(m) = config::header_name(h) {
                        e.push((format!("enforce_headers[{i}]"), m));
                    }
                }
            }
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let cfg: HmacAuthConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let users = ctx.shared.get_or_build("hmac-auth", || {
            let mut users = HashMap::new();
            for consumer in &ctx.config.consumers {
                let rt = super::consumer_rt(consumer);
                for cred in &consumer.hmacauth_credentials {
                    users.insert(
                        cred.username.clone(),
                        Cred {
                            secret: cred.secret.as_bytes().to_vec(),
                            identity: Identity::new(rt.clone(), Some(cred.id.to_string()), false),
                        },
                    );
                }
            }
            Ok(users)
        })?;
        let anonymous = anonymous_identity(ctx.config, cfg.anonymous.as_deref())?;
        let seen = ctx.state.get_or_insert(ctx.id, v, Seen::default);
        Ok(Arc::new(Compiled {
            cfg,
            users,
            anonymous,
            seen,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<HmacAuthConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<HmacAuthConfig>(config)
    }
}

/// The fields of `Authorization: hmac username="…", algorithm="…", headers="…", signature="…"`.
struct Params {
    username: String,
    algorithm: String,
    headers: Vec<String>,
    signature: Vec<u8>,
}

fn parse_params(h: &HeaderValue) -> Option<Params> {
    let s = h.to_str().ok()?;
    let (scheme, rest) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("hmac") {
        return None;
    }
    let mut map = StdHashMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        map.insert(
            k.trim().to_ascii_lowercase(),
            v.trim().trim_matches('"').to_string(),
        );
    }
    Some(Params {
        username: map.remove("username")?,
        algorithm: map.remove("algorithm")?.to_ascii_lowercase(),
        headers: map
            .remove("headers")
            .unwrap_or_else(|| "date".into())
            .split_whitespace()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        signature: base64::engine::general_purpose::STANDARD
            .decode(map.remove("signature")?)
            .ok()?,
    })
}

fn signing_string(req: &http::request::Parts, headers: &[String]) -> Option<String> {
    let mut lines = Vec::with_capacity(headers.len());
    for h in headers {
        if h == "request-line" {
            let pq = req.uri.path_and_query().map_or("/", |p| p.as_str());
            let v = match req.version {
                http::Version::HTTP_10 => "HTTP/1.0",
                http::Version::HTTP_2 => "HTTP/2",
                _ => "HTTP/1.1",
            };
            lines.push(format!("{} {pq} {v}", req.method));
        } else {
            let values: Vec<&str> = req
                .headers
                .get_all(h.as_str())
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            if values.is_empty() {
                return None;
            }
            lines.push(format!("{h}: {}", values.join(", ")));
        }
    }
    Some(lines.join("\n"))
}

fn verify(alg: &str, secret: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    macro_rules! check {
        ($h:ty) => {
            <Hmac<$h> as Mac>::new_from_slice(secret).is_ok_and(|mut m| {
                m.update(msg);
                m.verify_slice(sig).is_ok()
            })
        };
    }
    match alg {
        "hmac-sha256" => check!(Sha256),
        "hmac-sha384" => check!(Sha384),
        "hmac-sha512" => check!(Sha512),
        _ => false,
    }
}

impl Compiled {
    /// Checks the signature; `Err` is the refusal message.
    fn authenticate(&self, req: &http::request::Parts) -> Result<&Cred, &'static str> {
        let auth = req
            .headers
            .get(http::header::AUTHORIZATION)
            .ok_or("no HMAC signature in request")?;
        let p = parse_params(auth).ok_or("malformed HMAC Authorization header")?;
        if !self.cfg.algorithms.contains(&p.algorithm) {
            return Err("HMAC algorithm not allowed");
        }
        let date_name = if p.headers.iter().any(|h| h == "x-date") {
            "x-date"
        } else {
            "date"
        };
        if !p.headers.iter().any(|h| h == date_name) {
            return Err("the signature must cover date or x-date");
        }
        for h in &self.cfg.enforce_headers {
            if !p.headers.iter().any(|x| x.eq_ignore_ascii_case(h)) {
                return Err("the signature does not cover the required headers");
            }
        }
        if self.cfg.validate_request_body && !p.headers.iter().any(|h| h == "digest") {
            return Err("the signature must cover digest");
        }
        let date = req
            .headers
            .get(date_name)
            .and_then(|v| v.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .ok_or("missing or invalid date")?;
        let now = SystemTime::now();
        let skew = Duration::from_secs(self.cfg.clock_skew);
        let off = now
            .duration_since(date)
            .or_else(|_| date.duration_since(now))
            .unwrap_or(Duration::MAX);
        if off > skew {
            return Err("the request date is outside the allowed clock skew");
        }
        let msg = signing_string(req, &p.headers).ok_or("a signed header is missing")?;
        // Unknown user and bad signature get the same answer.
        let cred = self
            .users
            .get(&p.username)
            .filter(|c| verify(&p.algorithm, &c.secret, msg.as_bytes(), &p.signature))
            .ok_or("invalid signature")?;
        // Replay protection: remember valid signatures for twice the skew.
        let key: [u8; 32] = Sha256::digest(&p.signature).into();
        let now_s = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut seen = self
            .seen
            .until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.get(&key).is_some_and(|until| *until >= now_s) {
            return Err("replayed request");
        }
        if seen.len() > 100_000 {
            seen.retain(|_, until| *until >= now_s);
        }
        seen.insert(key, now_s + 2 * self.cfg.clock_skew);
        Ok(cred)
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        let result = self.authenticate(req);
        if result.is_ok() && self.cfg.hide_credentials {
            req.headers.remove(http::header::AUTHORIZATION);
        }
        static CHALLENGE: HeaderValue = HeaderValue::from_static("hmac realm=\"gatehouse\"");
        conclude(
            ctx,
            &mut req.headers,
            result.map(|c| &c.identity),
            self.anonymous.as_ref(),
            &CHALLENGE,
        )
    }

    fn wants_request_body(&self) -> bool {
        self.cfg.validate_request_body
    }

    fn request_body(
        &self,
        ctx: &mut RequestCtx,
        req: &mut http::request::Parts,
        body: Bytes,
    ) -> Result<Bytes, Flow> {
        if ctx.credential.is_none() {
            return Ok(body); // anonymous: nothing was signed
        }
        let want = req
            .headers
            .get("digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|d| d.strip_prefix("SHA-256="))
            .map(str::trim);
        let have = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&body));
        if want == Some(have.as_str()) {
            Ok(body)
        } else {
            Err(ctx.reject(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the body does not match its digest",
            ))
        }
    }
}
