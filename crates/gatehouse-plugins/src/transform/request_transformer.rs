//! `request-transformer`: rewrite the request before it goes upstream — headers, query
//! string, JSON or form body, method and path — in Kong's order: remove, rename, replace,
//! add, append. Values may use `$(uri_captures.NAME)`, `$(headers.NAME)` and
//! `$(query_params.NAME)`.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::{HeaderName, Method};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::config;

/// Names per part.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Names {
    /// Header names.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Query parameter names.
    #[serde(default)]
    pub querystring: Vec<String>,
    /// Top-level JSON or form body field names.
    #[serde(default)]
    pub body: Vec<String>,
}

/// `name:value` (or `old:new` for rename) pairs per part.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pairs {
    /// Headers.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Query parameters.
    #[serde(default)]
    pub querystring: Vec<String>,
    /// Top-level JSON or form body fields.
    #[serde(default)]
    pub body: Vec<String>,
}

/// `replace` also takes the upstream path.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replace {
    /// Headers (only when present).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Query parameters (only when present).
    #[serde(default)]
    pub querystring: Vec<String>,
    /// Body fields (only when present).
    #[serde(default)]
    pub body: Vec<String>,
    /// New upstream path (templates allowed), replacing strip_path and the service path.
    #[serde(default)]
    pub uri: Option<String>,
}

/// Settings of `request-transformer`.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestTransformerConfig {
    /// Change the method.
    #[serde(default)]
    pub http_method: Option<String>,
    /// Remove these.
    #[serde(default)]
    pub remove: Names,
    /// Rename `old:new`.
    #[serde(default)]
    pub rename: Pairs,
    /// Replace values of present ones.
    #[serde(default)]
    pub replace: Replace,
    /// Add when absent.
    #[serde(default)]
    pub add: Pairs,
    /// Add even when present (headers and query: another value; JSON: an array).
    #[serde(default)]
    pub append: Pairs,
}

/// The `request-transformer` factory.
pub struct RequestTransformer;

type Pair = (String, String);

struct Compiled {
    method: Option<Method>,
    remove: (Vec<HeaderName>, Vec<String>, Vec<String>),
    rename: (Vec<(HeaderName, HeaderName)>, Vec<Pair>, Vec<Pair>),
    replace: (Vec<(HeaderName, String)>, Vec<Pair>, Vec<Pair>),
    add: (Vec<(HeaderName, String)>, Vec<Pair>, Vec<Pair>),
    append: (Vec<(HeaderName, String)>, Vec<Pair>, Vec<Pair>),
    uri: Option<String>,
    touches_body: bool,
}

fn pair(s: &str) -> Result<Pair, String> {
    s.split_once(':')
        .map(|(a, b)| (a.trim().to_string(), b.to_string()))
        .ok_or_else(|| format!("`{s}` must be `name:value`"))
}

fn header_pairs(list: &[String]) -> Result<Vec<(HeaderName, String)>, String> {
    list.iter()
        .map(|s| pair(s).and_then(|(n, v)| Ok((config::header_name(&n)?, v))))
        .collect()
}

fn pairs(list: &[String]) -> Result<Vec<Pair>, String> {
    list.iter().map(|s| pair(s)).collect()
}

fn compile(c: &RequestTransformerConfig) -> Result<Compiled, (String, String)> {
    fn at(f: &'static str) -> impl Fn(String) -> (String, String) {
        move |m| (f.to_string(), m)
    }
    let method = c
        .http_method
        .as_deref()
        .map(|m| {
            Method::from_bytes(m.as_bytes())
                .map_err(|_| ("http_method".to_string(), format!("`{m}` is not a method")))
        })
        .transpose()?;
    let remove_headers = c
        .remove
        .headers
        .iter()
        .map(|h| config::header_name(h))
        .collect::<Result<_, _>>()
        .map_err(at("remove.headers"))?;
    let rename_headers = pairs(&c.rename.headers)
        .and_then(|v| {
            v.into_iter()
                .map(|(a, b)| Ok((config::header_name(&a)?, config::header_name(&b)?)))
                .collect()
        })
        .map_err(at("rename.headers"))?;
    let touches_body = !(c.remove.body.is_empty()
        && c.rename.body.is_empty()
        && c.replace.body.is_empty()
        && c.add.body.is_empty()
        && c.append.body.is_empty());
    Ok(Compiled {
        method,
        remove: (
            remove_headers,
            c.remove.querystring.clone(),
            c.remove.body.clone(),
        ),
        rename: (
            rename_headers,
            pairs(&c.rename.querystring).map_err(at("rename.querystring"))?,
            pairs(&c.rename.body).map_err(at("rename.body"))?,
        ),
        replace: (
            header_pairs(&c.replace.headers).map_err(at("replace.headers"))?,
            pairs(&c.replace.querystring).map_err(at("replace.querystring"))?,
            pairs(&c.replace.body).map_err(at("replace.body"))?,
        ),
        add: (
            header_pairs(&c.add.headers).map_err(at("add.headers"))?,
            pairs(&c.add.querystring).map_err(at("add.querystring"))?,
            pairs(&c.add.body).map_err(at("add.body"))?,
        ),
        append: (
            header_pairs(&c.append.headers).map_err(at("append.headers"))?,
            pairs(&c.append.querystring).map_err(at("append.querystring"))?,
            pairs(&c.append.body).map_err(at("append.body"))?,
        ),
        uri: c.replace.uri.clone(),
        touches_body,
    })
}

impl Factory for RequestTransformer {
    fn name(&self) -> &'static str {
        "request-transformer"
    }
    fn priority(&self) -> i32 {
        801
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<RequestTransformerConfig>(v, |c| {
            let mut e = Vec::new();
            if let Err(err) = compile(c) {
                e.push(err);
            }
            if let Some(u) = &c.replace.uri {
                if !u.starts_with('/') || u.contains(char::is_whitespace) {
                    e.push((
                        "replace.uri".into(),
                        "must start with `/` and contain no spaces".into(),
                    ));
                }
            }
            e
        })
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: RequestTransformerConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        compile(&c)
            .map(|c| Arc::new(c) as Arc<dyn Plugin>)
            .map_err(|(p, m)| format!("{p}: {m}"))
    }
    fn schema(&self) -> Value {
        config::schema::<RequestTransformerConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<RequestTransformerConfig>(config)
    }
}

/// Expands `$(uri_captures.X)`, `$(headers.X)`, `$(query_params.X)`; unknown ones become "".
fn expand(template: &str, ctx: &RequestCtx, req: &http::request::Parts) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find(')') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let expr = &rest[start + 2..start + end];
        let value = match expr.split_once('.') {
            Some(("uri_captures", n)) => ctx
                .params
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone()),
            Some(("headers", n)) => req
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            Some(("query_params", n)) => query_pairs(req)
                .into_iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v),
            _ => None,
        };
        out.push_str(&value.unwrap_or_default());
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

fn query_pairs(req: &http::request::Parts) -> Vec<Pair> {
    req.uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn set_query(req: &mut http::request::Parts, q: &[Pair]) {
    let mut pq = req.uri.path().to_string();
    if !q.is_empty() {
        pq.push('?');
        pq.push_str(
            &form_urlencoded::Serializer::new(String::new())
                .extend_pairs(q)
                .finish(),
        );
    }
    if let Ok(u) = http::Uri::try_from(pq) {
        req.uri = u;
    }
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        let h = &mut req.headers;
        for n in &self.remove.0 {
            h.remove(n);
        }
        for (a, b) in &self.rename.0 {
            if let Some(v) = h.remove(a) {
                h.insert(b.clone(), v);
            }
        }
        let expanded: Vec<(bool, HeaderName, String)> = self
            .replace
            .0
            .iter()
            .map(|(n, v)| (false, n.clone(), v.clone()))
            .chain(self.add.0.iter().map(|(n, v)| (true, n.clone(), v.clone())))
            .map(|(add, n, v)| (add, n, expand(&v, ctx, req)))
            .collect();
        for (add, n, v) in expanded {
            let Ok(v) = config::header_value(&v) else {
                continue;
            };
            let present = req.headers.contains_key(&n);
            if add != present {
                req.headers.insert(n, v);
            }
        }
        let appended: Vec<(HeaderName, String)> = self
            .append
            .0
            .iter()
            .map(|(n, v)| (n.clone(), expand(v, ctx, req)))
            .collect();
        for (n, v) in appended {
            if let Ok(v) = config::header_value(&v) {
                req.headers.append(n, v);
            }
        }
        let q_changes = !(self.remove.1.is_empty()
            && self.rename.1.is_empty()
            && self.replace.1.is_empty()
            && self.add.1.is_empty()
            && self.append.1.is_empty());
        if q_changes {
            let mut q = query_pairs(req);
            q.retain(|(k, _)| !self.remove.1.contains(k));
            for (a, b) in &self.rename.1 {
                for (k, _) in q.iter_mut().filter(|(k, _)| k == a) {
                    *k = b.clone();
                }
            }
            for (k, v) in &self.replace.1 {
                let v = expand(v, ctx, req);
                for (_, val) in q.iter_mut().filter(|(n, _)| n == k) {
                    *val = v.clone();
                }
            }
            for (k, v) in &self.add.1 {
                if !q.iter().any(|(n, _)| n == k) {
                    q.push((k.clone(), expand(v, ctx, req)));
                }
            }
            for (k, v) in &self.append.1 {
                q.push((k.clone(), expand(v, ctx, req)));
            }
            set_query(req, &q);
        }
        if let Some(m) = &self.method {
            req.method = m.clone();
        }
        if let Some(u) = &self.uri {
            let mut p = expand(u, ctx, req);
            if let Some(q) = req.uri.query() {
                p.push('?');
                p.push_str(q);
            }
            ctx.upstream_path = Some(p);
        }
        Flow::Continue
    }

    fn wants_request_body(&self) -> bool {
        self.touches_body
    }

    fn request_body(
        &self,
        ctx: &mut RequestCtx,
        req: &mut http::request::Parts,
        body: Bytes,
    ) -> Result<Bytes, Flow> {
        let ct = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if ct.starts_with("application/json") {
            let mut obj: Map<String, Value> = match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(m)) => m,
                Ok(_) if body.is_empty() => Map::new(),
                Ok(_) => return Ok(body),
                Err(_) if body.is_empty() => Map::new(),
                Err(_) => {
                    return Err(ctx.reject(
                        http::StatusCode::BAD_REQUEST,
                        "bad_request_body",
                        "the JSON body could not be parsed",
                    ))
                }
            };
            for k in &self.remove.2 {
                obj.remove(k);
            }
            for (a, b) in &self.rename.2 {
                if let Some(v) = obj.remove(a) {
                    obj.insert(b.clone(), v);
                }
            }
            for (k, v) in &self.replace.2 {
                if obj.contains_key(k) {
                    obj.insert(k.clone(), Value::String(expand(v, ctx, req)));
                }
            }
            for (k, v) in &self.add.2 {
                if !obj.contains_key(k) {
                    obj.insert(k.clone(), Value::String(expand(v, ctx, req)));
                }
            }
            for (k, v) in &self.append.2 {
                let new = Value::String(expand(v, ctx, req));
                match obj.get_mut(k) {
                    Some(Value::Array(a)) => a.push(new),
                    Some(old) => *old = Value::Array(vec![old.take(), new]),
                    None => {
                        obj.insert(k.clone(), new);
                    }
                }
            }
            return Ok(Bytes::from(Value::Object(obj).to_string()));
        }
        if ct.starts_with("application/x-www-form-urlencoded") {
            let mut f: Vec<Pair> = form_urlencoded::parse(&body).into_owned().collect();
            f.retain(|(k, _)| !self.remove.2.contains(k));
            for (a, b) in &self.rename.2 {
                for (k, _) in f.iter_mut().filter(|(k, _)| k == a) {
                    *k = b.clone();
                }
            }
            for (k, v) in &self.replace.2 {
                let v = expand(v, ctx, req);
                for (_, val) in f.iter_mut().filter(|(n, _)| n == k) {
                    *val = v.clone();
                }
            }
            for (k, v) in &self.add.2 {
                if !f.iter().any(|(n, _)| n == k) {
                    f.push((k.clone(), expand(v, ctx, req)));
                }
            }
            for (k, v) in &self.append.2 {
                f.push((k.clone(), expand(v, ctx, req)));
            }
            return Ok(Bytes::from(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&f)
                    .finish(),
            ));
        }
        Ok(body)
    }
}
