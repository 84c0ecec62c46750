//! `response-transformer`: rewrite the upstream's answer — headers, and top-level fields of
//! JSON bodies — in Kong's order: remove, rename, replace, add, append.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Plugin, RequestCtx, ResponseHead};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::config;

/// Names per part.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RespNames {
    /// Header names.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Top-level JSON field names.
    #[serde(default)]
    pub json: Vec<String>,
}

/// `name:value` (or `old:new` for rename) pairs per part.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RespPairs {
    /// Headers.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Top-level JSON fields (values become strings).
    #[serde(default)]
    pub json: Vec<String>,
}

/// Settings of `response-transformer`.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseTransformerConfig {
    /// Remove these.
    #[serde(default)]
    pub remove: RespNames,
    /// Rename `old:new`.
    #[serde(default)]
    pub rename: RespPairs,
    /// Replace values of present ones.
    #[serde(default)]
    pub replace: RespPairs,
    /// Add when absent.
    #[serde(default)]
    pub add: RespPairs,
    /// Add even when present (headers: another value; JSON: an array).
    #[serde(default)]
    pub append: RespPairs,
}

/// The `response-transformer` factory.
pub struct ResponseTransformer;

type Pair = (String, String);

struct Compiled {
    remove_h: Vec<HeaderName>,
    rename_h: Vec<(HeaderName, HeaderName)>,
    replace_h: Vec<(HeaderName, HeaderValue)>,
    add_h: Vec<(HeaderName, HeaderValue)>,
    append_h: Vec<(HeaderName, HeaderValue)>,
    remove_j: Vec<String>,
    rename_j: Vec<Pair>,
    replace_j: Vec<Pair>,
    add_j: Vec<Pair>,
    append_j: Vec<Pair>,
}

fn pair(s: &str) -> Result<Pair, String> {
    s.split_once(':')
        .map(|(a, b)| (a.trim().to_string(), b.to_string()))
        .ok_or_else(|| format!("`{s}` must be `name:value`"))
}

fn pairs(list: &[String], field: &str) -> Result<Vec<Pair>, (String, String)> {
    list.iter()
        .map(|s| pair(s).map_err(|e| (field.to_string(), e)))
        .collect()
}

fn header_pairs(
    list: &[String],
    field: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, (String, String)> {
    list.iter()
        .map(|s| {
            let (n, v) = pair(s)?;
            Ok((config::header_name(&n)?, config::header_value(&v)?))
        })
        .collect::<Result<_, String>>()
        .map_err(|e| (field.to_string(), e))
}

fn compile(c: &ResponseTransformerConfig) -> Result<Compiled, (String, String)> {
    Ok(Compiled {
        remove_h: c
            .remove
            .headers
            .iter()
            .map(|h| config::header_name(h))
            .collect::<Result<_, _>>()
            .map_err(|e| ("remove.headers".to_string(), e))?,
        rename_h: pairs(&c.rename.headers, "rename.headers")?
            .into_iter()
            .map(|(a, b)| Ok((config::header_name(&a)?, config::header_name(&b)?)))
            .collect::<Result<_, String>>()
            .map_err(|e| ("rename.headers".to_string(), e))?,
        replace_h: header_pairs(&c.replace.headers, "replace.headers")?,
        add_h: header_pairs(&c.add.headers, "add.headers")?,
        append_h: header_pairs(&c.append.headers, "append.headers")?,
        remove_j: c.remove.json.clone(),
        rename_j: pairs(&c.rename.json, "rename.json")?,
        replace_j: pairs(&c.replace.json, "replace.json")?,
        add_j: pairs(&c.add.json, "add.json")?,
        append_j: pairs(&c.append.json, "append.json")?,
    })
}

impl Factory for ResponseTransformer {
    fn name(&self) -> &'static str {
        "response-transformer"
    }
    fn priority(&self) -> i32 {
        800
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<ResponseTransformerConfig>(v, |c| compile(c).err().into_iter().collect())
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: ResponseTransformerConfig =
            config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        compile(&c)
            .map(|c| Arc::new(c) as Arc<dyn Plugin>)
            .map_err(|(p, m)| format!("{p}: {m}"))
    }
    fn schema(&self) -> Value {
        config::schema::<ResponseTransformerConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<ResponseTransformerConfig>(config)
    }
}

impl Compiled {
    fn touches_json(&self) -> bool {
        !(self.remove_j.is_empty()
            && self.rename_j.is_empty()
            && self.replace_j.is_empty()
            && self.add_j.is_empty()
            && self.append_j.is_empty())
    }
}

impl Plugin for Compiled {
    fn response(&self, _ctx: &mut RequestCtx, resp: &mut http::response::Parts) {
        let h = &mut resp.headers;
        for n in &self.remove_h {
            h.remove(n);
        }
        for (a, b) in &self.rename_h {
            if let Some(v) = h.remove(a) {
                h.insert(b.clone(), v);
            }
        }
        for (n, v) in &self.replace_h {
            if h.contains_key(n) {
                h.insert(n.clone(), v.clone());
            }
        }
        for (n, v) in &self.add_h {
            if !h.contains_key(n) {
                h.insert(n.clone(), v.clone());
            }
        }
        for (n, v) in &self.append_h {
            h.append(n.clone(), v.clone());
        }
    }

    fn wants_response_body(&self, _ctx: &RequestCtx, resp: &http::response::Parts) -> bool {
        let json = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.to_ascii_lowercase().starts_with("application/json"));
        self.touches_json()
            && json
            && resp.status != http::StatusCode::NO_CONTENT
            && resp.status != http::StatusCode::NOT_MODIFIED
    }

    fn response_body(&self, _ctx: &RequestCtx, _head: &ResponseHead, body: Bytes) -> Bytes {
        let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body) else {
            return body;
        };
        let o: &mut Map<String, Value> = &mut obj;
        for k in &self.remove_j {
            o.remove(k);
        }
        for (a, b) in &self.rename_j {
            if let Some(v) = o.remove(a) {
                o.insert(b.clone(), v);
            }
        }
        for (k, v) in &self.replace_j {
            if o.contains_key(k) {
                o.insert(k.clone(), Value::String(v.clone()));
            }
        }
        for (k, v) in &self.add_j {
            if !o.contains_key(k) {
                o.insert(k.clone(), Value::String(v.clone()));
            }
        }
        for (k, v) in &self.append_j {
            let new = Value::String(v.clone());
            match o.get_mut(k) {
                Some(Value::Array(a)) => a.push(new),
                Some(old) => *old = Value::Array(vec![old.take(), new]),
                None => {
                    o.insert(k.clone(), new);
                }
            }
        }
        Bytes::from(Value::Object(obj).to_string())
    }
}
