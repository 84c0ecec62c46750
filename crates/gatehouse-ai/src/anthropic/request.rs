//! Requests: OpenAI Chat Completions → Anthropic Messages, and back.

use serde_json::{json, Map, Value};

use super::DEFAULT_MAX_TOKENS;
use crate::chat::Choice;
use crate::openai::BadRequest;

/// Translates an OpenAI Chat Completions request into an Anthropic Messages request for
/// upstream model `model`.
pub fn request_from_openai(body: &Value, model: &str) -> Result<Value, BadRequest> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| BadRequest::new("messages", "is required and must be an array"))?;
    if body.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(BadRequest::new(
            "n",
            "only 1 is supported by this model's provider",
        ));
    }
    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| BadRequest::new(at("role"), "is required"))?;
        match role {
            "system" | "developer" => {
                for b in content_blocks(m.get("content"), &at("content"))? {
                    system.push(b);
                }
            }
            "user" => {
                let blocks = content_blocks(m.get("content"), &at("content"))?;
                crate::chat::push_turn(&mut out, "user", "content", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                if let Some(Value::Array(thinking)) = m.get("thinking_blocks") {
                    blocks.extend(thinking.iter().filter(|b| b.is_object()).cloned());
                }
                if !m.get("content").is_none_or(Value::is_null) {
                    blocks.extend(content_blocks(m.get("content"), &at("content"))?);
                }
                for c in crate::chat::tool_calls(m, &format!("messages[{i}]"))? {
                    blocks.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.args}),
                    );
                }
                crate::chat::push_turn(&mut out, "assistant", "content", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| BadRequest::new(at("tool_call_id"), "is required"))?;
                let content = content_blocks(m.get("content"), &at("content"))?;
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                crate::chat::push_turn(&mut out, "user", "content", vec![block]);
            }
            other => {
                return Err(BadRequest::new(
                    at("role"),
                    format!("`{other}` is not one of system, developer, user, assistant, tool"),
                ))
            }
        }
    }
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_MAX_TOKENS);
    let mut req = Map::new();
    req.insert("model".into(), Value::String(model.to_string()));
    req.insert("messages".into(), Value::Array(out));
    req.insert("max_tokens".into(), json!(max_tokens));
    if let Some(instruction) = json_instruction(body.get("response_format"))? {
        system.push(json!({"type": "text", "text": instruction}));
    }
    if !system.is_empty() {
        req.insert("system".into(), Value::Array(system));
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        // OpenAI's scale is 0-2, Anthropic's 0-1.
        req.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = body.get("top_p").filter(|v| v.is_number()) {
        req.insert("top_p".into(), p.clone());
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            req.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            req.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if crate::openai::is_stream(body) {
        req.insert("stream".into(), Value::Bool(true));
    }
    let tools: Vec<Value> = crate::chat::tool_defs(body)?
        .into_iter()
        .map(|t| {
            let mut tool = json!({"name": t.name, "input_schema": t.parameters});
            if let Some(d) = t.description {
                tool["description"] = json!(d);
            }
            tool
        })
        .collect();
    if !tools.is_empty() {
        req.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = crate::chat::tool_choice(body)?.map(|c| match c {
        Choice::Auto => json!({"type": "auto"}),
        Choice::None => json!({"type": "none"}),
        Choice::Required => json!({"type": "any"}),
        Choice::Named(name) => json!({"type": "tool", "name": name}),
    });
    if body.get("parallel_tool_calls") == Some(&Value::Bool(false)) && req.contains_key("tools") {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if let Some(c) = choice {
        if req.contains_key("tools") {
            req.insert("tool_choice".into(), c);
        }
    }
    if let Some(u) = body.get("user").and_then(Value::as_str) {
        req.insert("metadata".into(), json!({"user_id": u}));
    }
    if let Some(budget) = crate::chat::thinking_budget(body)? {
        req.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
        if max_tokens <= budget {
            req.insert("max_tokens".into(), json!(budget + max_tokens));
        }
        // Anthropic refuses a temperature other than 1 with thinking on.
        req.remove("temperature");
    }
    Ok(Value::Object(req))
}

/// OpenAI message content (a string or an array of parts) as Anthropic content blocks.
fn content_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, BadRequest> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (k, p) in parts.iter().enumerate() {
                let here = format!("{at}[{k}]");
                let kind = p
                    .get("type")
                    .and_then(Value::as_str)
                    .ok_or_else(|| BadRequest::new(format!("{here}.type"), "is required"))?;
                let mut block = match kind {
                    "text" => {
                        let text = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            BadRequest::new(format!("{here}.text"), "is required")
                        })?;
                        if text.is_empty() {
                            continue;
                        }
                        json!({"type": "text", "text": text})
                    }
                    "image_url" => {
                        let url = p
                            .pointer("/image_url/url")
                            .or_else(|| p.get("image_url").filter(|v| v.is_string()))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                BadRequest::new(format!("{here}.image_url.url"), "is required")
                            })?;
                        image_block(url, &format!("{here}.image_url.url"))?
                    }
                    other => {
                        return Err(BadRequest::new(
                            format!("{here}.type"),
                            format!("`{other}` content is not supported by this model's provider"),
                        ))
                    }
                };
                if let Some(cc) = p.get("cache_control") {
                    block["cache_control"] = cc.clone();
                }
                out.push(block);
            }
            Ok(out)
        }
        Some(_) => Err(BadRequest::new(at, "must be a string or an array of parts")),
    }
}

fn image_block(url: &str, at: &str) -> Result<Value, BadRequest> {
    Ok(match crate::chat::data_url(url, at)? {
        Some((media_type, data)) => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        None => json!({"type": "image", "source": {"type": "url", "url": url}}),
    })
}

/// OpenAI's JSON mode, said as an instruction (Anthropic has no such switch).
pub(crate) fn json_instruction(format: Option<&Value>) -> Result<Option<String>, BadRequest> {
    let Some(f) = format.filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(
            "Respond with a single JSON object and nothing else: no prose, no code fences.".into(),
        )),
        Some("json_schema") => {
            let schema = f
                .pointer("/json_schema/schema")
                .cloned()
                .unwrap_or_else(|| json!({}));
            Ok(Some(format!(
                "Respond with a single JSON value and nothing else (no prose, no code fences), valid against this JSON Schema: {schema}"
            )))
        }
        _ => Err(BadRequest::new(
            "response_format.type",
            "must be text, json_object or json_schema",
        )),
    }
}

/// Translates an Anthropic Messages request into an OpenAI Chat Completions request for
/// upstream model `model`.
pub fn request_to_openai(body: &Value, model: &str) -> Result<Value, BadRequest> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| BadRequest::new("messages", "is required and must be an array"))?;
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| {
            BadRequest::new("max_tokens", "is required and must be a positive integer")
        })?;
    let mut out: Vec<Value> = Vec::new();
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text = blocks_text(blocks);
            out.push(json!({"role": "system", "content": text}));
        }
        Some(_) => {
            return Err(BadRequest::new(
                "system",
                "must be a string or an array of text blocks",
            ))
        }
    }
    for (i, m) in messages.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| BadRequest::new(at("role"), "is required"))?;
        if role != "user" && role != "assistant" {
            return Err(BadRequest::new(
                at("role"),
                format!("`{role}` is not one of user, assistant"),
            ));
        }
        let blocks: Vec<Value> = match m.get("content") {
            Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
            Some(Value::Array(b)) => b.clone(),
            _ => {
                return Err(BadRequest::new(
                    at("content"),
                    "must be a string or an array of blocks",
                ))
            }
        };
        let mut parts = Vec::new();
        let mut calls = Vec::new();
        let mut results = Vec::new();
        for (k, b) in blocks.iter().enumerate() {
            let here = at(&format!("content[{k}]"));
            match b.get("type").and_then(Value::as_str) {
                Some("text") => parts.push(json!({"type": "text", "text": b.get("text").and_then(Value::as_str).unwrap_or("")})),
                Some("image") => {
                    let src = &b["source"];
                    let url = match src.get("type").and_then(Value::as_str) {
                        Some("base64") => format!(
                            "data:{};base64,{}",
                            src.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
                            src.get("data").and_then(Value::as_str).unwrap_or("")
                        ),
                        Some("url") => src.get("url").and_then(Value::as_str).unwrap_or("").to_string(),
                        _ => return Err(BadRequest::new(format!("{here}.source.type"), "must be base64 or url")),
                    };
                    parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                }
                Some("tool_use") => calls.push(json!({
                    "id": b["id"], "type": "function",
                    "function": {"name": b["name"], "arguments": b.get("input").map_or_else(|| "{}".into(), Value::to_string)},
                })),
                Some("tool_result") => {
                    let content = match b.get("content") {
                        Some(Value::String(s)) => s.clone(),
                        Some(Value::Array(a)) => blocks_text(a),
                        _ => String::new(),
                    };
                    results.push(json!({"role": "tool", "tool_call_id": b["tool_use_id"], "content": content}));
                }
                Some("thinking" | "redacted_thinking") => {}
                Some(other) => {
                    return Err(BadRequest::new(
                        format!("{here}.type"),
                        format!("`{other}` blocks are not supported by this model's provider"),
                    ))
                }
                None => return Err(BadRequest::new(format!("{here}.type"), "is required")),
            }
        }
        out.extend(results);
        if role == "assistant" {
            let text: String = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) }});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            if !msg["content"].is_null() || msg.get("tool_calls").is_some() {
                out.push(msg);
            }
        } else if !parts.is_empty() {
            let all_text = parts.iter().all(|p| p["type"] == "text");
            let content = if all_text {
                Value::String(
                    parts
                        .iter()
                        .filter_map(|p| p.get("text").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            } else {
                Value::Array(parts)
            };
            out.push(json!({"role": "user", "content": content}));
        }
    }
    let mut req = json!({"model": model, "messages": out, "max_tokens": max_tokens});
    for f in ["temperature", "top_p"] {
        if let Some(v) = body.get(f).filter(|v| v.is_number()) {
            req[f] = v.clone();
        }
    }
    if let Some(s) = body
        .get("stop_sequences")
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
    {
        req["stop"] = Value::Array(s.clone());
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        req["stream"] = Value::Bool(true);
        req["stream_options"] = json!({"include_usage": true});
    }
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut list = Vec::new();
        for (j, t) in tools.iter().enumerate() {
            if t.get("type")
                .and_then(Value::as_str)
                .is_some_and(|k| k != "custom")
            {
                return Err(BadRequest::new(
                    format!("tools[{j}].type"),
                    "server tools are not supported by this model's provider",
                ));
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| BadRequest::new(format!("tools[{j}].name"), "is required"))?;
            let mut f = json!({"name": name, "parameters": t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"}))});
            if let Some(d) = t.get("description") {
                f["description"] = d.clone();
            }
            list.push(json!({"type": "function", "function": f}));
        }
        if !list.is_empty() {
            req["tools"] = Value::Array(list);
        }
    }
    if let Some(c) = body.get("tool_choice").filter(|c| c.is_object()) {
        let choice = match c.get("type").and_then(Value::as_str) {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => json!({"type": "function", "function": {"name": c["name"]}}),
            _ => {
                return Err(BadRequest::new(
                    "tool_choice.type",
                    "must be auto, any, tool or none",
                ))
            }
        };
        if req.get("tools").is_some() {
            req["tool_choice"] = choice;
            if c.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
                req["parallel_tool_calls"] = Value::Bool(false);
            }
        }
    }
    if let Some(u) = body.pointer("/metadata/user_id").and_then(Value::as_str) {
        req["user"] = json!(u);
    }
    Ok(req)
}

fn blocks_text(blocks: &[Value]) -> String {
    blocks
        .iter()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}
