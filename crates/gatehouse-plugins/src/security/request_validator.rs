//! `request-validator`: check request bodies, query parameters, headers and path parameters
//! against JSON Schemas before the upstream sees them. A refusal (400) names the failing
//! location: `body/items/0/qty`, `query.limit`, `header.x-version`, `path.id`.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config;

/// Where a parameter is.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParamIn {
    /// Query string.
    Query,
    /// Request header.
    Header,
    /// Route `{param}` or named regex group.
    Path,
}

/// One parameter rule.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSchema {
    /// Parameter name.
    pub name: String,
    /// Where it is.
    #[serde(rename = "in")]
    pub location: ParamIn,
    /// Refuse requests without it.
    #[serde(default)]
    pub required: bool,
    /// JSON Schema of the value (the text, or its number/boolean reading, must match).
    #[schema(value_type = Object)]
    pub schema: Value,
}

fn json_only() -> Vec<String> {
    vec!["application/json".into()]
}

/// Settings of `request-validator`.
#[derive(Debug, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestValidatorConfig {
    /// JSON Schema the body must match (the body is then read whole, within the body limit).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub body_schema: Option<Value>,
    /// Rules for query, header and path parameters.
    #[serde(default)]
    pub parameter_schema: Vec<ParamSchema>,
    /// Content types a body may have (with `body_schema`).
    #[serde(default = "json_only")]
    pub allowed_content_types: Vec<String>,
}

/// The `request-validator` factory.
pub struct RequestValidator;

struct Param {
    name: String,
    location: ParamIn,
    required: bool,
    validator: jsonschema::Validator,
}

struct Compiled {
    body: Option<jsonschema::Validator>,
    params: Vec<Param>,
    content_types: Vec<String>,
}

/// A validator whose `pattern` keywords run on the linear-time `regex` engine: patterns are
/// matched against client input, and a backtracking engine lets a crafted body spend
/// millions of steps per request.
pub(crate) fn validator(
    schema: &Value,
) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
}

fn compile(c: &RequestValidatorConfig) -> Result<Compiled, (String, String)> {
    let body = match &c.body_schema {
        None => None,
        Some(s) => Some(validator(s).map_err(|e| {
            (
                "body_schema".to_string(),
                format!("invalid JSON Schema: {e}"),
            )
        })?),
    };
    let mut params = Vec::new();
    for (i, p) in c.parameter_schema.iter().enumerate() {
        let validator = validator(&p.schema).map_err(|e| {
            (
                format!("parameter_schema[{i}].schema"),
                format!("invalid JSON Schema: {e}"),
            )
        })?;
        params.push(Param {
            name: p.name.clone(),
            location: p.location,
            required: p.required,
            validator,
        });
    }
    Ok(Compiled {
        body,
        params,
        content_types: c
            .allowed_content_types
            .iter()
            .map(|t| t.to_ascii_lowercase())
            .collect(),
    })
}

impl Factory for RequestValidator {
    fn name(&self) -> &'static str {
        "request-validator"
    }
    fn priority(&self) -> i32 {
        999
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<RequestValidatorConfig>(v, |c| {
            let mut e: Vec<(String, String)> = compile(c).err().into_iter().collect();
            if c.body_schema.is_none() && c.parameter_schema.is_empty() {
                e.push((
                    "body_schema".into(),
                    "set `body_schema` or `parameter_schema`".into(),
                ));
            }
            e
        })
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: RequestValidatorConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        compile(&c)
            .map(|c| Arc::new(c) as Arc<dyn Plugin>)
            .map_err(|(p, m)| format!("{p}: {m}"))
    }
    fn schema(&self) -> Value {
        config::schema::<RequestValidatorConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<RequestValidatorConfig>(config)
    }
}

/// A parameter's text as JSON: numbers, booleans and null when they parse, else a string.
fn as_json(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => v,
        _ => Value::String(text.to_string()),
    }
}

pub(crate) fn first_error(v: &jsonschema::Validator, instance: &Value) -> Option<(String, String)> {
    v.iter_errors(instance)
        .next()
        .map(|e| (e.instance_path().to_string(), e.to_string()))
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        let query: Vec<(String, String)> = req
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        for p in &self.params {
            let (prefix, value) = match p.location {
                ParamIn::Query => (
                    "query",
                    query
                        .iter()
                        .find(|(k, _)| *k == p.name)
                        .map(|(_, v)| v.clone()),
                ),
                ParamIn::Header => (
                    "header",
                    req.headers
                        .get(p.name.as_str())
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                ),
                ParamIn::Path => (
                    "path",
                    ctx.params
                        .iter()
                        .find(|(k, _)| *k == p.name)
                        .map(|(_, v)| v.clone()),
                ),
            };
            match value {
                None if p.required => {
                    return ctx.reject(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        &format!("{prefix}.{}: required", p.name),
                    );
                }
                None => {}
                Some(text) => {
                    // Parameters are text: accept the text, or its number/boolean reading.
                    let as_text = Value::String(text.clone());
                    if p.validator.is_valid(&as_text) {
                        continue;
                    }
                    let typed = as_json(&text);
                    if let Some((_, msg)) = first_error(&p.validator, &typed) {
                        return ctx.reject(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            &format!("{prefix}.{}: {msg}", p.name),
                        );
                    }
                }
            }
        }
        if self.body.is_some() {
            let ct = req
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let base = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if !self.content_types.contains(&base) {
                return ctx.reject(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("body: content type `{base}` is not allowed"),
                );
            }
        }
        Flow::Continue
    }

    fn wants_request_body(&self) -> bool {
        self.body.is_some()
    }

    fn request_body(
        &self,
        ctx: &mut RequestCtx,
        _req: &mut http::request::Parts,
        body: Bytes,
    ) -> Result<Bytes, Flow> {
        let Some(v) = &self.body else { return Ok(body) };
        let instance: Value = serde_json::from_slice(&body).map_err(|e| {
            ctx.reject(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("body: not valid JSON: {e}"),
            )
        })?;
        if let Some((path, msg)) = first_error(v, &instance) {
            return Err(ctx.reject(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("body{path}: {msg}"),
            ));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patterns_use_the_linear_regex_engine() {
        // Backtracking-only syntax is refused when the config is checked…
        let errs = RequestValidator
            .check(&json!({"body_schema": {"type": "string", "pattern": "^(?=a)a$"}}));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "body_schema");
        // …and the classic catastrophic pattern is just a pattern.
        let c: RequestValidatorConfig =
            config::parse(&json!({"body_schema": {"type": "string", "pattern": "^(a+)+$"}}))
                .unwrap();
        let compiled = compile(&c).unwrap();
        let evil = Value::String("a".repeat(5000) + "!");
        assert!(compiled.body.as_ref().unwrap().validate(&evil).is_err());
    }
}
