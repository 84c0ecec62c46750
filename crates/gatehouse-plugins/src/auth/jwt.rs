//! `jwt`: JSON Web Tokens (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)
//! from a header, the query string or a cookie. The consumer is the one whose `jwt_secrets`
//! key equals the token's `key_claim_name` claim. Keys come from the credential, or from a
//! JWKS endpoint fetched in the background: cached for `jwks_cache_ttl`, refetched early
//! (at most every `jwks_min_refresh_interval`) when a token names an unknown `kid`, so key
//! rotation needs no reload.

use std::collections::{BTreeMap, HashMap as StdHashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use foldhash::{HashMap, HashMapExt};
use gatehouse_model::validate::parse_service_url;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::{HeaderName, HeaderValue};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{anonymous_identity, conclude, Identity};
use crate::config;

fn default_params() -> Vec<String> {
    vec!["jwt".into()]
}
fn default_headers() -> Vec<String> {
    vec!["authorization".into()]
}
fn iss() -> String {
    "iss".into()
}
fn exp_only() -> Vec<String> {
    vec!["exp".into()]
}
fn yes() -> bool {
    true
}
fn ttl() -> u64 {
    300
}
fn min_refresh() -> u64 {
    10
}

/// Settings of `jwt`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Query parameters that may carry the token.
    #[serde(default = "default_params")]
    pub uri_param_names: Vec<String>,
    /// Cookies that may carry the token.
    #[serde(default)]
    pub cookie_names: Vec<String>,
    /// Headers that may carry the token (`Authorization: Bearer …`, or the raw token).
    #[serde(default = "default_headers")]
    pub header_names: Vec<String>,
    /// Claim naming the credential (`jwt_secrets[].key`).
    #[serde(default = "iss")]
    pub key_claim_name: String,
    /// HS secrets are base64.
    #[serde(default)]
    pub secret_is_base64: bool,
    /// Registered claims to check: `exp`, `nbf`.
    #[serde(default = "exp_only")]
    pub claims_to_verify: Vec<String>,
    /// Seconds of clock tolerance for exp/nbf.
    #[serde(default)]
    pub leeway: u64,
    /// Longest lifetime accepted, in seconds (`exp` − now); 0: no limit.
    #[serde(default)]
    pub maximum_expiration: u64,
    /// Accepted issuers (`iss`); empty: any.
    #[serde(default)]
    pub issuer: Vec<String>,
    /// Accepted audiences (`aud`); empty: not checked.
    #[serde(default)]
    pub audience: Vec<String>,
    /// Consumer (id or username) to continue as without a valid token.
    #[serde(default)]
    pub anonymous: Option<String>,
    /// Authenticate CORS preflight (`OPTIONS`) requests too.
    #[serde(default = "yes")]
    pub run_on_preflight: bool,
    /// JWKS endpoint (`http://…`) for asymmetric keys by `kid`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Seconds JWKS keys are cached.
    #[serde(default = "ttl")]
    pub jwks_cache_ttl: u64,
    /// Fewest seconds between two early JWKS refetches (unknown `kid`).
    #[serde(default = "min_refresh")]
    pub jwks_min_refresh_interval: u64,
    /// Claims to forward upstream as headers: claim name → header name.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
}

/// The `jwt` factory.
pub struct Jwt;

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn is_symmetric(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

struct Cred {
    key: Option<(DecodingKey, Algorithm)>,
    identity: Identity,
}

/// Keys fetched from a JWKS endpoint; shared with the refresher thread.
#[derive(Default)]
pub struct Jwks {
    keys: RwLock<StdHashMap<String, (DecodingKey, Algorithm)>>,
    wanted: AtomicBool,
}

struct Compiled {
    cfg: JwtConfig,
    header_names: Vec<HeaderName>,
    creds: Arc<HashMap<String, Cred>>,
    anonymous: Option<Identity>,
    jwks: Option<Arc<Jwks>>,
    claim_headers: Vec<(String, HeaderName)>,
}

async fn fetch_jwks(uri: &str) -> Result<JwkSet, String> {
    let u = parse_service_url(uri)?;
    let path = if u.path.is_empty() {
        "/".to_string()
    } else {
        u.path.clone()
    };
    let req = http::Request::get(path)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = crate::client::send(&u.host, u.port, req).await?;
    serde_json::from_slice(resp.body()).map_err(|e| e.to_string())
}

fn refresher(uri: String, jwks: std::sync::Weak<Jwks>, ttl: Duration, min_gap: Duration) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let mut last: Option<Instant> = None;
    loop {
        let Some(j) = jwks.upgrade() else { return };
        let due = last.is_none_or(|l| {
            l.elapsed() >= ttl || (j.wanted.load(Ordering::Relaxed) && l.elapsed() >= min_gap)
        });
        if due {
            j.wanted.store(false, Ordering::Relaxed);
            last = Some(Instant::now());
            match rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), fetch_jwks(&uri)).await
            }) {
                Ok(Ok(set)) => {
                    let mut keys = StdHashMap::new();
                    for k in &set.keys {
                        let (Some(kid), Ok(dk)) =
                            (k.common.key_id.clone(), DecodingKey::from_jwk(k))
                        else {
                            continue;
                        };
                        let alg = k
                            .common
                            .key_algorithm
                            .and_then(|a| a.to_string().parse::<Algorithm>().ok());
                        if let Some(alg) = alg.filter(|a| !is_symmetric(*a)) {
                            keys.insert(kid, (dk, alg));
                        }
                    }
                    *j.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
                }
                Ok(Err(e)) => eprintln!("jwt: JWKS fetch from {uri} failed: {e}"),
                Err(_) => eprintln!("jwt: JWKS fetch from {uri} timed out"),
            }
        }
        drop(j);
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Factory for Jwt {
    fn name(&self) -> &'static str {
        "jwt"
    }
    fn priority(&self) -> i32 {
        1450
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<JwtConfig>(v, |c| {
            let mut e = Vec::new();
            for (i, n) in c.header_names.iter().enumerate() {
                if let Err(m) = config::header_name(n) {
                    e.push((format!("header_names[{i}]"), m));
                }
            }
            for (i, n) in c.claims_to_verify.iter().enumerate() {
                if n != "exp" && n != "nbf" {
                    e.push((
                        format!("claims_to_verify[{i}]"),
                        "only `exp` and `nbf`".into(),
                    ));
                }
            }
            if let Some(u) = &c.jwks_uri {
                if let Err(m) = parse_service_url(u) {
                    e.push(("jwks_uri".into(), m));
                }
            }
            for (claim, h) in &c.claims_to_headers {
                if let Err(m) = config::header_name(h) {
                    e.push((format!("claims_to_headers.{claim}"), m));
                }
            }
            if c.maximum_expiration > 0 && !c.claims_to_verify.iter().any(|x| x == "exp") {
                e.push((
                    "maximum_expiration".into(),
                    "needs `exp` in claims_to_verify".into(),
                ));
            }
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let cfg: JwtConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        // The secrets' decoding depends on one setting: instances that agree on it share.
        let key = format!("jwt:base64={}", cfg.secret_is_base64);
        let creds = ctx.shared.get_or_build(&key, || {
            let mut creds = HashMap::new();
            for consumer in &ctx.config.consumers {
                let rt = super::consumer_rt(consumer);
                for s in &consumer.jwt_secrets {
                    let alg = algorithm(&s.algorithm).ok_or_else(|| {
                        format!("consumer credential {}: unknown algorithm", s.key)
                    })?;
                    let key = match (&s.secret, &s.rsa_public_key) {
                        (Some(secret), _) if is_symmetric(alg) => Some(if cfg.secret_is_base64 {
                            DecodingKey::from_base64_secret(secret)
                                .map_err(|e| format!("jwt secret {}: {e}", s.key))?
                        } else {
                            DecodingKey::from_secret(secret.as_bytes())
                        }),
                        (_, Some(pem)) if !is_symmetric(alg) => Some(
                            match alg {
                                Algorithm::ES256 | Algorithm::ES384 => {
                                    DecodingKey::from_ec_pem(pem.as_bytes())
                                }
                                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem.as_bytes()),
                                _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
                            }
                            .map_err(|e| format!("jwt key {}: {e}", s.key))?,
                        ),
                        _ => None,
                    };
                    creds.insert(
                        s.key.clone(),
                        Cred {
                            key: key.map(|k| (k, alg)),
                            identity: Identity::new(rt.clone(), Some(s.id.to_string()), false),
                        },
                    );
                }
            }
            Ok(creds)
        })?;
        let anonymous = anonymous_identity(ctx.config, cfg.anonymous.as_deref())?;
        let jwks = match &cfg.jwks_uri {
            None => None,
            Some(uri) => Some(ctx.state.get_or_insert(ctx.id, v, || {
                let j = Arc::new(Jwks::default());
                let weak = Arc::downgrade(&j);
                let (uri, ttl, gap) = (
                    uri.clone(),
                    Duration::from_secs(cfg.jwks_cache_ttl),
                    Duration::from_secs(cfg.jwks_min_refresh_interval),
                );
                // Ends when the last snapshot using these keys is gone.
                let _ = std::thread::Builder::new()
                    .name("gatehouse-jwks".into())
                    .spawn(move || refresher(uri, weak, ttl, gap));
                JwksHandle(j)
            }))
            .map(|h| h.0.clone()),
        };
        let header_names = cfg
            .header_names
            .iter()
            .map(|n| config::header_name(n))
            .collect::<Result<_, _>>()?;
        let claim_headers = cfg
            .claims_to_headers
            .iter()
            .map(|(c, h)| Ok((c.clone(), config::header_name(h)?)))
            .collect::<Result<_, String>>()?;
        Ok(Arc::new(Compiled {
            cfg,
            header_names,
            creds,
            anonymous,
            jwks,
            claim_headers,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<JwtConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<JwtConfig>(config)
    }
}

/// The JWKS state kept across reloads (the Arc keeps the refresher alive).
struct JwksHandle(Arc<Jwks>);

impl Compiled {
    fn token(&self, req: &http::request::Parts) -> Option<String> {
        for n in &self.header_names {
            if let Some(v) = req.headers.get(n).and_then(|v| v.to_str().ok()) {
                let v = v.trim();
                let t = match v.split_once(' ') {
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                    _ => v,
                };
                return Some(t.to_string());
            }
        }
        if let Some(q) = req.uri.query() {
            for n in &self.cfg.uri_param_names {
                if let Some((_, v)) = form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == n) {
                    return Some(v.into_owned());
                }
            }
        }
        for c in req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for pair in c.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=') {
                    if self.cfg.cookie_names.iter().any(|n| n == k) {
                        return Some(v.to_string());
                    }
                }
            }
        }
        None
    }

    fn verify(&self, token: &str) -> Result<(&Cred, serde_json::Map<String, Value>), &'static str> {
        let header = decode_header(token).map_err(|_| "malformed token")?;
        let claims: serde_json::Map<String, Value> =
            jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Map<String, Value>>(
                token,
            )
            .map_err(|_| "malformed token")?;
        let key_value = claims
            .get(&self.cfg.key_claim_name)
            .and_then(Value::as_str)
            .ok_or("the token has no key claim")?;
        let cred = self
            .creds
            .get(key_value)
            .ok_or("no credential for this token")?;
        // The key: the credential's own, or the JWKS key named by `kid` (never a symmetric one).
        let jwks_key;
        let (key, alg) = match (&cred.key, &self.jwks, &header.kid) {
            (Some((k, a)), _, _) => (k, *a),
            (None, Some(jwks), Some(kid)) => {
                let keys = jwks.keys.read().unwrap_or_else(PoisonError::into_inner);
                match keys.get(kid) {
                    Some((k, a)) => {
                        jwks_key = (k.clone(), *a);
                        (&jwks_key.0, jwks_key.1)
                    }
                    None => {
                        jwks.wanted.store(true, Ordering::Relaxed);
                        return Err("unknown signing key");
                    }
                }
            }
            _ => return Err("no key to verify this token"),
        };
        let mut v = Validation::new(alg);
        v.leeway = self.cfg.leeway;
        v.validate_exp = self.cfg.claims_to_verify.iter().any(|c| c == "exp");
        v.validate_nbf = self.cfg.claims_to_verify.iter().any(|c| c == "nbf");
        v.required_spec_claims = v
            .validate_exp
            .then(|| "exp".to_string())
            .into_iter()
            .collect();
        if self.cfg.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.cfg.audience);
        }
        if !self.cfg.issuer.is_empty() {
            v.set_issuer(&self.cfg.issuer);
        }
        decode::<serde_json::Map<String, Value>>(token, key, &v)
            .map_err(|e| refusal(e.kind(), &claims))?;
        if self.cfg.maximum_expiration > 0 {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let exp = claims
                .get("exp")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            if exp.saturating_sub(now) > self.cfg.maximum_expiration {
                return Err("token lifetime exceeds the maximum");
            }
        }
        Ok((cred, claims))
    }
}

/// What a client is told when a token does not verify: which claim is missing or bad, so a
/// token without `exp` is not mistaken for a forged one. `claims` are the token's own: the
/// library reports a required claim it cannot read as missing, though it is there.
fn refusal(
    kind: &jsonwebtoken::errors::ErrorKind,
    claims: &serde_json::Map<String, Value>,
) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::MissingRequiredClaim(c)
            if c == "exp" && claims.get("exp").is_some_and(|x| !x.is_number()) =>
        {
            "claim `exp` must be a number"
        }
        K::ExpiredSignature => "token expired (claim `exp`)",
        K::ImmatureSignature => "token not valid yet (claim `nbf`)",
        K::InvalidIssuer => "invalid issuer (claim `iss`)",
        K::InvalidAudience => "invalid audience (claim `aud`)",
        K::InvalidSubject => "invalid subject (claim `sub`)",
        K::InvalidAlgorithm | K::MissingAlgorithm => "algorithm not allowed",
        K::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => "missing claim `exp`",
            "nbf" => "missing claim `nbf`",
            "iss" => "missing claim `iss`",
            "aud" => "missing claim `aud`",
            "sub" => "missing claim `sub`",
            _ => "a required claim is missing",
        },
        K::InvalidClaimFormat(c) => match c.as_str() {
            "exp" => "claim `exp` must be a number",
            "nbf" => "claim `nbf` must be a number",
            _ => "a claim has the wrong type",
        },
        K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => "malformed token",
        _ => "invalid signature",
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        if !self.cfg.run_on_preflight && req.method == http::Method::OPTIONS {
            return Flow::Continue;
        }
        for (_, h) in &self.claim_headers {
            req.headers.remove(h);
        }
        let result = match self.token(req) {
            None => Err("no token found in request"),
            Some(t) => self.verify(&t),
        };
        static CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer realm=\"gatehouse\"");
        let flow = conclude(
            ctx,
            &mut req.headers,
            result.as_ref().map(|(c, _)| &c.identity).map_err(|e| *e),
            self.anonymous.as_ref(),
            &CHALLENGE,
        );
        if let Ok((_, claims)) = &result {
            for (claim, h) in &self.claim_headers {
                let text = match claims.get(claim) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                };
                if let Some(v) = text.and_then(|t| config::header_value(&t).ok()) {
                    req.headers.insert(h.clone(), v);
                }
            }
        }
        flow
    }
}
