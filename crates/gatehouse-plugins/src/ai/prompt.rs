//! `ai-prompt-template` (APIPark's prompt encapsulation: a prompt published as a plain REST
//! API) and `ai-prompt-guard` (allow and deny patterns on prompts). Both work on the request
//! body before `ai-proxy` sends it.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::config;
use crate::security::request_validator::{first_error, validator};

/// Left in the request by `ai-prompt-template`: `ai-proxy` serves the rewritten body as a
/// chat call whatever the path, and answers with the completion's text.
#[derive(Clone, Copy, Debug)]
pub struct PromptCall;

/// One templated message.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text with `{{name}}` placeholders filled from the request's fields.
    pub content: String,
}

/// Settings of `ai-prompt-template`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiPromptTemplateConfig {
    /// The messages sent to the model.
    pub messages: Vec<TemplateMessage>,
    /// JSON Schema of the request body (an object whose fields fill the placeholders).
    #[schema(value_type = Object)]
    pub inputs: Value,
    /// Public model to call (else `ai-proxy`'s pinned model).
    #[serde(default)]
    pub model: Option<String>,
    /// Extra request fields (`temperature`, `max_tokens`…).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

/// The `ai-prompt-template` factory.
pub struct AiPromptTemplate;

/// The `{{name}}` placeholders of a text.
fn placeholders(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { break };
        out.push(after[..j].trim());
        rest = &after[j + 2..];
    }
    out
}

/// Fills placeholders from `inputs` (strings as they are, other values as JSON).
fn render(text: &str, inputs: &Value) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { break };
        out.push_str(&rest[..i]);
        match inputs.get(after[..j].trim()) {
            Some(Value::String(s)) => out.push_str(s),
            Some(Value::Null) | None => {}
            Some(v) => out.push_str(&v.to_string()),
        }
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    out
}

impl Factory for AiPromptTemplate {
    fn name(&self) -> &'static str {
        "ai-prompt-template"
    }
    fn priority(&self) -> i32 {
        773
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<AiPromptTemplateConfig>(v, |c| {
            let mut e = Vec::new();
            if c.messages.is_empty() {
                e.push(("messages".into(), "needs at least one message".into()));
            }
            for (i, m) in c.messages.iter().enumerate() {
                if !matches!(
                    m.role.as_str(),
                    "system" | "user" | "assistant" | "developer"
                ) {
                    e.push((
                        format!("messages[{i}].role"),
                        "must be system, developer, user or assistant".into(),
                    ));
                }
                for p in placeholders(&m.content) {
                    if c.inputs.pointer(&format!("/properties/{p}")).is_none() {
                        e.push((
                            format!("messages[{i}].content"),
                            format!("`{{{{{p}}}}}` is not a property of `inputs`"),
                        ));
                    }
                }
            }
            if c.inputs.get("type").and_then(Value::as_str) != Some("object") {
                e.push((
                    "inputs".into(),
                    "must be a JSON Schema with `type: object`".into(),
                ));
            } else if let Err(err) = validator(&c.inputs) {
                e.push(("inputs".into(), format!("invalid JSON Schema: {err}")));
            }
            for f in ["messages", "model", "stream"] {
                if c.params.contains_key(f) {
                    e.push((
                        format!("params.{f}"),
                        "is set by the template itself".into(),
                    ));
                }
            }
            e
        })
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: AiPromptTemplateConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let inputs = validator(&c.inputs).map_err(|e| format!("inputs: {e}"))?;
        Ok(Arc::new(Template { c, inputs }))
    }
    fn schema(&self) -> Value {
        config::schema::<AiPromptTemplateConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<AiPromptTemplateConfig>(config)
    }
}

struct Template {
    c: AiPromptTemplateConfig,
    inputs: jsonschema::Validator,
}

impl Plugin for Template {
    fn wants_request_body(&self) -> bool {
        true
    }
    fn request_body(
        &self,
        ctx: &mut RequestCtx,
        req: &mut http::request::Parts,
        body: Bytes,
    ) -> Result<Bytes, Flow> {
        let bad = |ctx: &RequestCtx, msg: String| {
            ctx.reject(StatusCode::BAD_REQUEST, "invalid_input", &msg)
        };
        if req.method != http::Method::POST {
            return Err(ctx.reject(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this prompt API takes POST with a JSON body",
            ));
        }
        let inputs: Value = serde_json::from_slice(&body)
            .map_err(|e| bad(ctx, format!("body is not valid JSON: {e}")))?;
        if let Some((path, msg)) = first_error(&self.inputs, &inputs) {
            let field = if path.is_empty() {
                "body".to_string()
            } else {
                path.trim_start_matches('/').replace('/', ".")
            };
            return Err(bad(ctx, format!("{field}: {msg}")));
        }
        let messages: Vec<Value> = self
            .c
            .messages
            .iter()
            .map(|m| json!({"role": m.role, "content": render(&m.content, &inputs)}))
            .collect();
        let mut out = self.c.params.clone();
        out.insert("messages".into(), Value::Array(messages));
        if let Some(m) = &self.c.model {
            out.insert("model".into(), json!(m));
        }
        out.insert("stream".into(), Value::Bool(false));
        ctx.extensions.insert(PromptCall);
        Ok(Bytes::from(Value::Object(out).to_string()))
    }
}

// ---------------------------------------------------------------------------------------
// ai-prompt-guard

/// Settings of `ai-prompt-guard`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiPromptGuardConfig {
    /// Prompts must match one of these patterns (regular expressions; empty: any).
    #[serde(default)]
    pub allow_patterns: Vec<String>,
    /// Prompts matching any of these are refused.
    #[serde(default)]
    pub deny_patterns: Vec<String>,
    /// Check every message (system and assistant too), not only the user's.
    #[serde(default)]
    pub match_all_roles: bool,
}

/// The `ai-prompt-guard` factory.
pub struct AiPromptGuard;

fn compile(patterns: &[String], field: &str) -> Result<Vec<regex::Regex>, (String, String)> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            regex::RegexBuilder::new(p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| (format!("{field}[{i}]"), e.to_string()))
        })
        .collect()
}

impl Factory for AiPromptGuard {
    fn name(&self) -> &'static str {
        "ai-prompt-guard"
    }
    fn priority(&self) -> i32 {
        771
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<AiPromptGuardConfig>(v, |c| {
            let mut e = Vec::new();
            if c.allow_patterns.is_empty() && c.deny_patterns.is_empty() {
                e.push((
                    "deny_patterns".into(),
                    "set allow_patterns, deny_patterns or both".into(),
                ));
            }
            for r in [
                compile(&c.allow_patterns, "allow_patterns"),
                compile(&c.deny_patterns, "deny_patterns"),
            ] {
                if let Err(x) = r {
                    e.push(x);
                }
            }
            e
        })
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: AiPromptGuardConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let allow =
            compile(&c.allow_patterns, "allow_patterns").map_err(|(p, m)| format!("{p}: {m}"))?;
        let deny =
            compile(&c.deny_patterns, "deny_patterns").map_err(|(p, m)| format!("{p}: {m}"))?;
        Ok(Arc::new(Guard {
            allow,
            deny,
            all_roles: c.match_all_roles,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<AiPromptGuardConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<AiPromptGuardConfig>(config)
    }
}

struct Guard {
    allow: Vec<regex::Regex>,
    deny: Vec<regex::Regex>,
    all_roles: bool,
}

/// The text of every message of a chat request in either format (and of a top-level
/// Anthropic `system` when all roles are checked).
fn prompt_texts(body: &Value, all_roles: bool) -> Vec<String> {
    fn text_of(c: &Value, out: &mut Vec<String>) {
        match c {
            Value::String(s) => out.push(s.clone()),
            Value::Array(parts) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        out.push(t.to_string());
                    }
                    if let Some(inner) = p.get("content") {
                        text_of(inner, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if all_roles || role == "user" {
            if let Some(c) = m.get("content") {
                text_of(c, &mut out);
            }
        }
    }
    if all_roles {
        if let Some(s) = body.get("system") {
            text_of(s, &mut out);
        }
    }
    out
}

impl Plugin for Guard {
    fn wants_request_body(&self) -> bool {
        true
    }
    fn request_body(
        &self,
        ctx: &mut RequestCtx,
        _req: &mut http::request::Parts,
        body: Bytes,
    ) -> Result<Bytes, Flow> {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            // Not JSON: ai-proxy answers that with its own 400.
            return Ok(body);
        };
        let texts = prompt_texts(&v, self.all_roles);
        let refuse = |why: &str| ctx.reject(StatusCode::BAD_REQUEST, "prompt_blocked", why);
        if texts
            .iter()
            .any(|t| self.deny.iter().any(|r| r.is_match(t)))
        {
            return Err(refuse("the prompt matches a pattern this API refuses"));
        }
        if !self.allow.is_empty()
            && !texts
                .iter()
                .all(|t| self.allow.iter().any(|r| r.is_match(t)))
        {
            return Err(refuse(
                "the prompt does not match any pattern this API allows",
            ));
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render_from_inputs() {
        let t = "Translate into {{ language }}: {{text}} ({{n}})";
        assert_eq!(placeholders(t), ["language", "text", "n"]);
        let out = render(
            t,
            &json!({"language": "fr", "text": "a \"quoted\" text", "n": 2}),
        );
        assert_eq!(out, "Translate into fr: a \"quoted\" text (2)");
    }

    #[test]
    fn guard_reads_both_formats() {
        let openai = json!({"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]});
        assert_eq!(prompt_texts(&openai, false), ["hi"]);
        assert_eq!(prompt_texts(&openai, true), ["sys", "hi"]);
        let anthropic = json!({"system": "s", "messages": [{"role": "user", "content": [{"type": "tool_result", "content": [{"type": "text", "text": "r"}]}]}]});
        assert_eq!(prompt_texts(&anthropic, true), ["r", "s"]);
    }
}
