//! `cors`: answers CORS preflight requests at the gateway and adds the CORS headers to
//! actual responses, for allowed origins only.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_proxy::body::ProxyBody;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config;

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}

/// Settings of `cors`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins: exact (`https://app.example.com`), `*`, or `~regex`.
    #[serde(default)]
    pub origins: Vec<String>,
    /// Methods allowed in preflight answers.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Request headers allowed (empty: echo what the preflight asks for).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    /// Allow credentials (cookies, Authorization).
    #[serde(default)]
    pub credentials: bool,
    /// Seconds a preflight answer may be cached.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Send preflight requests upstream instead of answering them.
    #[serde(default)]
    pub preflight_continue: bool,
}

/// The `cors` factory.
pub struct Cors;

enum Origin {
    Any,
    Exact(String),
    Regex(regex::Regex),
}

struct Compiled {
    origins: Vec<Origin>,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    exposed: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
    preflight_continue: bool,
}

fn joined(list: &[String]) -> Result<Option<HeaderValue>, String> {
    if list.is_empty() {
        return Ok(None);
    }
    config::header_value(&list.join(", ")).map(Some)
}

impl Factory for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }
    fn priority(&self) -> i32 {
        2000
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<CorsConfig>(v, |c| {
            let mut e = Vec::new();
            for (i, o) in c.origins.iter().enumerate() {
                if let Some(rx) = o.strip_prefix('~') {
                    if let Err(m) = regex::Regex::new(rx) {
                        e.push((format!("origins[{i}]"), format!("invalid regex: {m}")));
                    }
                } else if let Err(m) = config::header_value(o) {
                    e.push((format!("origins[{i}]"), m));
                }
            }
            for (field, list) in [
                ("methods", &c.methods),
                ("headers", &c.headers),
                ("exposed_headers", &c.exposed_headers),
            ] {
                if let Err(m) = joined(list) {
                    e.push((field.into(), m));
                }
            }
            if c.credentials && c.origins.iter().any(|o| o == "*") {
                e.push((
                    "credentials".into(),
                    "browsers refuse credentials with origin `*`; list the origins".into(),
                ));
            }
            e
        })
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: CorsConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let origins = c
            .origins
            .iter()
            .map(|o| match o.as_str() {
                "*" => Ok(Origin::Any),
                o => match o.strip_prefix('~') {
                    Some(rx) => regex::Regex::new(&format!("^(?:{rx})$"))
                        .map(Origin::Regex)
                        .map_err(|e| e.to_string()),
                    None => Ok(Origin::Exact(o.to_string())),
                },
            })
            .collect::<Result<_, _>>()?;
        Ok(Arc::new(Compiled {
            origins,
            methods: joined(&c.methods)?.unwrap_or(HeaderValue::from_static("GET")),
            headers: joined(&c.headers)?,
            exposed: joined(&c.exposed_headers)?,
            credentials: c.credentials,
            max_age: c.max_age.map(HeaderValue::from),
            preflight_continue: c.preflight_continue,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<CorsConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<CorsConfig>(config)
    }
}

impl Compiled {
    /// The value for Access-Control-Allow-Origin, if the origin is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let o = origin.to_str().ok()?;
        let mut any = false;
        for rule in &self.origins {
            match rule {
                Origin::Any => any = true,
                Origin::Exact(x) if x.eq_ignore_ascii_case(o) => return Some(origin.clone()),
                Origin::Regex(r) if r.is_match(o) => return Some(origin.clone()),
                _ => {}
            }
        }
        (any || self.origins.is_empty()).then(|| {
            if self.credentials {
                origin.clone()
            } else {
                HeaderValue::from_static("*")
            }
        })
    }

    /// True when the answer depends on the request's Origin (anything but `*` without
    /// credentials): every answer then says `Vary: Origin` — refusals too, or a cache would
    /// serve a refused origin's answer to an allowed one, or the reverse.
    fn varies(&self) -> bool {
        self.credentials || self.origins.iter().any(|o| !matches!(o, Origin::Any))
    }

    fn vary(&self, h: &mut http::HeaderMap) {
        if self.varies() {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    fn common(&self, h: &mut http::HeaderMap, allow: HeaderValue) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight || self.preflight_continue {
            if let Some(o) = req.headers.get(header::ORIGIN) {
                ctx.extensions.insert(RequestOrigin(o.clone()));
            }
            return Flow::Continue;
        }
        let mut r = Response::new(ProxyBody::Full(Some(Bytes::new())));
        *r.status_mut() = StatusCode::NO_CONTENT;
        self.vary(r.headers_mut());
        if let Some(allow) = req
            .headers
            .get(header::ORIGIN)
            .and_then(|o| self.allow_origin(o))
        {
            let h = r.headers_mut();
            self.common(h, allow);
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
            let asked = req
                .headers
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned();
            if let Some(v) = self.headers.clone().or(asked) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            if let Some(m) = &self.max_age {
                h.insert(header::ACCESS_CONTROL_MAX_AGE, m.clone());
            }
        }
        Flow::Respond(Box::new(r))
    }

    fn response(&self, ctx: &mut RequestCtx, resp: &mut http::response::Parts) {
        self.vary(&mut resp.headers);
        // The access phase kept the request's Origin in the context.
        let Some(origin) = ctx.extensions.get::<RequestOrigin>().map(|o| o.0.clone()) else {
            return;
        };
        if resp
            .headers
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        {
            return;
        }
        if let Some(allow) = self.allow_origin(&origin) {
            self.common(&mut resp.headers, allow);
            if let Some(e) = &self.exposed {
                resp.headers
                    .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
            }
        }
    }
}

/// The request's `Origin`, carried to the response phase.
#[derive(Clone)]
pub struct RequestOrigin(pub HeaderValue);
