//! OpenAI Chat Completions ⇄ Anthropic Messages, both ways: requests, whole answers and
//! streams. Streams are translated event by event by small state machines
//! ([`ToOpenAiStream`], [`FromOpenAiStream`]); nothing is buffered beyond one event.
//!
//! State that must survive a round trip through the OpenAI surface: Anthropic's thinking
//! blocks (with their signatures) come back on the assistant message as `thinking_blocks`
//! (and their text as `reasoning_content`); sent back on the next request's assistant
//! message, they are put first in its content, as Anthropic requires.

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use crate::openai::BadRequest;
use crate::sse::{self, Event};
use crate::Usage;

/// `max_tokens` when an OpenAI-format request sets none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------
// OpenAI request → Anthropic request

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
                push_message(&mut out, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                if let Some(Value::Array(thinking)) = m.get("thinking_blocks") {
                    blocks.extend(thinking.iter().filter(|b| b.is_object()).cloned());
                }
                if !m.get("content").is_none_or(Value::is_null) {
                    blocks.extend(content_blocks(m.get("content"), &at("content"))?);
                }
                if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                    for (j, c) in calls.iter().enumerate() {
                        blocks.push(tool_use_block(c, &at(&format!("tool_calls[{j}]")))?);
                    }
                }
                push_message(&mut out, "assistant", blocks);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| BadRequest::new(at("tool_call_id"), "is required"))?;
                let content = content_blocks(m.get("content"), &at("content"))?;
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                push_message(&mut out, "user", vec![block]);
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
    if let Some(tools) = body.get("tools").and_then(Value::as_array) {
        let mut list = Vec::new();
        for (j, t) in tools.iter().enumerate() {
            let f = t
                .get("function")
                .ok_or_else(|| BadRequest::new(format!("tools[{j}].function"), "is required"))?;
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                BadRequest::new(format!("tools[{j}].function.name"), "is required")
            })?;
            let mut tool = json!({
                "name": name,
                "input_schema": f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(d) = f.get("description").and_then(Value::as_str) {
                tool["description"] = json!(d);
            }
            list.push(tool);
        }
        if !list.is_empty() {
            req.insert("tools".into(), Value::Array(list));
        }
    }
    let mut choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => {
                return Err(BadRequest::new(
                    "tool_choice",
                    format!("`{other}` is not one of auto, none, required"),
                ))
            }
        }),
        Some(v) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| BadRequest::new("tool_choice.function.name", "is required"))?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
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
    if let Some(effort) = body.get("reasoning_effort").and_then(Value::as_str) {
        let budget: u64 = match effort {
            "minimal" | "low" => 1_024,
            "medium" => 4_096,
            "high" => 16_384,
            other => {
                return Err(BadRequest::new(
                    "reasoning_effort",
                    format!("`{other}` is not one of minimal, low, medium, high"),
                ))
            }
        };
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

/// Appends blocks to the last message when it has the same role (Anthropic wants the
/// roles to alternate; OpenAI allows runs, e.g. several tool results in a row).
fn push_message(out: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = out.last_mut().filter(|m| m["role"] == role) {
        if let Some(Value::Array(c)) = last.get_mut("content") {
            c.extend(blocks);
            return;
        }
    }
    out.push(json!({"role": role, "content": blocks}));
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
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| BadRequest::new(at, "a data URL needs a `,`"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| BadRequest::new(at, "a data URL must be base64"))?;
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        );
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(BadRequest::new(at, "must be an http(s) or data URL"))
}

fn tool_use_block(call: &Value, at: &str) -> Result<Value, BadRequest> {
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::new(format!("{at}.id"), "is required"))?;
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or_else(|| BadRequest::new(format!("{at}.function.name"), "is required"))?;
    let args = call
        .pointer("/function/arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    let input: Value = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(args)
            .map_err(|_| BadRequest::new(format!("{at}.function.arguments"), "is not valid JSON"))?
    };
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// OpenAI's JSON mode, said as an instruction (Anthropic has no such switch).
fn json_instruction(format: Option<&Value>) -> Result<Option<String>, BadRequest> {
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

// ---------------------------------------------------------------------------------------
// Anthropic answer → OpenAI answer

/// OpenAI's finish reason for Anthropic's stop reason.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Anthropic's stop reason for OpenAI's finish reason.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// Translates a whole Anthropic answer; `model` is the name the client asked for.
pub fn response_to_openai(resp: &Value, model: &str) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut thinking = Vec::new();
    let mut reasoning = String::new();
    for b in resp
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": b.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""));
                thinking.push(b.clone());
            }
            Some("redacted_thinking") => thinking.push(b.clone()),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !thinking.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
        message["thinking_blocks"] = Value::Array(thinking);
    }
    let usage = resp
        .get("usage")
        .map(Usage::from_anthropic)
        .unwrap_or_default();
    json!({
        "id": format!("chatcmpl-{}", resp.get("id").and_then(Value::as_str).unwrap_or("")),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(resp.get("stop_reason").and_then(Value::as_str).unwrap_or("end_turn")),
        }],
        "usage": usage.to_openai(),
    })
}

// ---------------------------------------------------------------------------------------
// Anthropic stream → OpenAI stream

/// Turns Anthropic stream events into OpenAI chunks, one event at a time.
pub struct ToOpenAiStream {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Usage so far (input from `message_start`, output from `message_delta`).
    pub usage: Option<Usage>,
    /// Anthropic block index → OpenAI tool call index.
    tools: Vec<(u64, u64)>,
    next_tool: u64,
    /// Thinking text and signature of the open thinking block.
    thinking: Option<(String, String)>,
    /// `message_stop` was seen.
    pub done: bool,
    /// Some content arrived (for time to first token).
    pub content_seen: bool,
}

impl ToOpenAiStream {
    /// For a client that asked for `model`, with (or without) the usage chunk.
    pub fn new(model: &str, include_usage: bool) -> ToOpenAiStream {
        ToOpenAiStream {
            id: String::new(),
            created: unix_now(),
            model: model.to_string(),
            include_usage,
            usage: None,
            tools: Vec::new(),
            next_tool: 0,
            thinking: None,
            done: false,
            content_seen: false,
        }
    }

    fn chunk(&self, out: &mut BytesMut, delta: Value, finish: Option<&str>) {
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        sse::write(out, None, &v.to_string());
    }

    fn merge_usage(&mut self, u: Option<&Value>) {
        if let Some(u) = u.filter(|u| crate::usage::present(u)) {
            let u = Usage::from_anthropic(u);
            match &mut self.usage {
                Some(have) => have.merge(u),
                None => self.usage = Some(u),
            }
        }
    }

    /// One Anthropic event; writes the OpenAI chunks it makes into `out`.
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                let m = &v["message"];
                self.id = format!(
                    "chatcmpl-{}",
                    m.get("id").and_then(Value::as_str).unwrap_or("")
                );
                self.merge_usage(m.get("usage"));
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            "content_block_start" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let b = &v["content_block"];
                match b.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        self.content_seen = true;
                        let t = self.next_tool;
                        self.next_tool += 1;
                        self.tools.push((index, t));
                        self.chunk(
                            out,
                            json!({"tool_calls": [{"index": t, "id": b["id"], "type": "function",
                                "function": {"name": b["name"], "arguments": ""}}]}),
                            None,
                        );
                    }
                    Some("text") => {
                        if let Some(t) = b
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            self.content_seen = true;
                            self.chunk(out, json!({"content": t}), None);
                        }
                    }
                    Some("thinking") => self.thinking = Some((String::new(), String::new())),
                    Some("redacted_thinking") => {
                        self.chunk(out, json!({"thinking_blocks": [b]}), None);
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let d = &v["delta"];
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        self.content_seen = true;
                        self.chunk(out, json!({"content": d["text"]}), None);
                    }
                    Some("input_json_delta") => {
                        let t = self
                            .tools
                            .iter()
                            .find(|(i, _)| *i == index)
                            .map_or(0, |(_, t)| *t);
                        self.chunk(
                            out,
                            json!({"tool_calls": [{"index": t, "function": {"arguments": d["partial_json"]}}]}),
                            None,
                        );
                    }
                    Some("thinking_delta") => {
                        let text = d.get("thinking").and_then(Value::as_str).unwrap_or("");
                        if let Some((t, _)) = &mut self.thinking {
                            t.push_str(text);
                        }
                        self.content_seen = true;
                        self.chunk(out, json!({"reasoning_content": text}), None);
                    }
                    Some("signature_delta") => {
                        if let Some((_, s)) = &mut self.thinking {
                            s.push_str(d.get("signature").and_then(Value::as_str).unwrap_or(""));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some((thinking, signature)) = self.thinking.take() {
                    self.chunk(
                        out,
                        json!({"thinking_blocks": [{"type": "thinking", "thinking": thinking, "signature": signature}]}),
                        None,
                    );
                }
            }
            "message_delta" => {
                self.merge_usage(v.get("usage"));
                let reason = v
                    .pointer("/delta/stop_reason")
                    .and_then(Value::as_str)
                    .map(finish_reason);
                if let Some(r) = reason {
                    self.chunk(out, json!({}), Some(r));
                }
            }
            "message_stop" => {
                if self.include_usage {
                    let usage = self.usage.unwrap_or_default().to_openai();
                    let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage});
                    sse::write(out, None, &v.to_string());
                }
                sse::write(out, None, "[DONE]");
                self.done = true;
            }
            "error" => {
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the provider reported an error");
                let kind = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream_error");
                let e = json!({"error": {"message": message, "type": kind, "code": kind}});
                sse::write(out, None, &e.to_string());
                self.done = true;
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Anthropic request → OpenAI request (the Anthropic surface over an OpenAI-format provider)

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

/// Translates a whole OpenAI answer into Anthropic's form; `model` is the name the client
/// asked for.
pub fn response_from_openai(resp: &Value, model: &str) -> Value {
    let msg = resp
        .pointer("/choices/0/message")
        .cloned()
        .unwrap_or(Value::Null);
    let mut content = Vec::new();
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for c in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = c
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({"type": "tool_use", "id": c["id"], "name": c.pointer("/function/name").cloned().unwrap_or(Value::Null), "input": input}));
    }
    let finish = resp
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let usage = resp
        .get("usage")
        .map(Usage::from_openai)
        .unwrap_or_default();
    let id = resp.get("id").and_then(Value::as_str).unwrap_or("");
    json!({
        "id": format!("msg_{}", id.trim_start_matches("chatcmpl-")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": usage.to_anthropic(),
    })
}

// ---------------------------------------------------------------------------------------
// OpenAI stream → Anthropic stream

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    Tool(u64),
}

/// Turns OpenAI chunks into Anthropic stream events, one chunk at a time. Anthropic's
/// `message_delta` carries the output usage, which OpenAI sends in a chunk after the finish
/// reason: the delta is written when the stream ends (`[DONE]`).
pub struct FromOpenAiStream {
    model: String,
    started: bool,
    open: Option<Open>,
    next_index: u64,
    /// OpenAI tool call index → Anthropic block index.
    tools: Vec<(u64, u64)>,
    stop: Option<&'static str>,
    /// Usage reported so far.
    pub usage: Option<Usage>,
    /// `[DONE]` was seen and the closing events written.
    pub done: bool,
    /// Some content arrived.
    pub content_seen: bool,
}

impl FromOpenAiStream {
    /// For a client that asked for `model`.
    pub fn new(model: &str) -> FromOpenAiStream {
        FromOpenAiStream {
            model: model.to_string(),
            started: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            stop: None,
            usage: None,
            done: false,
            content_seen: false,
        }
    }

    fn emit(out: &mut BytesMut, kind: &str, v: &Value) {
        sse::write(out, Some(kind), &v.to_string());
    }

    fn start(&mut self, id: &str, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let msg = json!({"type": "message_start", "message": {
            "id": format!("msg_{}", id.trim_start_matches("chatcmpl-")), "type": "message", "role": "assistant",
            "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}});
        Self::emit(out, "message_start", &msg);
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some(Open::Text(i) | Open::Tool(i)) = self.open.take() {
            Self::emit(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": i}),
            );
        }
    }

    /// One OpenAI event; writes the Anthropic events it makes into `out`.
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        if ev.data == "[DONE]" {
            self.finish(out);
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        if let Some(e) = v.get("error") {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider reported an error");
            Self::emit(
                out,
                "error",
                &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            );
            self.done = true;
            return;
        }
        self.start(v.get("id").and_then(Value::as_str).unwrap_or(""), out);
        if let Some(u) = v.get("usage").filter(|u| crate::usage::present(u)) {
            self.usage = Some(Usage::from_openai(u));
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(t) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            self.content_seen = true;
            let index = match self.open {
                Some(Open::Text(i)) => i,
                _ => {
                    self.close(out);
                    let i = self.next_index;
                    self.next_index += 1;
                    self.open = Some(Open::Text(i));
                    Self::emit(
                        out,
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
                    );
                    i
                }
            };
            Self::emit(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
            );
        }
        for tc in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.content_seen = true;
            let oi = tc.get("index").and_then(Value::as_u64).unwrap_or(0);
            let index = match self.tools.iter().find(|(o, _)| *o == oi) {
                Some(&(_, i)) => i,
                None => {
                    self.close(out);
                    let i = self.next_index;
                    self.next_index += 1;
                    self.tools.push((oi, i));
                    self.open = Some(Open::Tool(i));
                    Self::emit(
                        out,
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": i,
                        "content_block": {"type": "tool_use", "id": tc.get("id").cloned().unwrap_or(Value::Null),
                            "name": tc.pointer("/function/name").cloned().unwrap_or(Value::Null), "input": {}}}),
                    );
                    i
                }
            };
            if let Some(a) = tc
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                Self::emit(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": a}}),
                );
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = Some(stop_reason(f));
        }
    }

    /// Writes the closing events (on `[DONE]`, or when a provider ends without it).
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.start("", out);
        self.close(out);
        let usage = self.usage.unwrap_or_default();
        let mut u = usage.to_anthropic();
        u["output_tokens"] = json!(usage.output);
        Self::emit(
            out,
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": self.stop.unwrap_or("end_turn"), "stop_sequence": null}, "usage": u}),
        );
        Self::emit(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }
}

/// Follows a passed-through Anthropic stream for its usage and its end.
#[derive(Default)]
pub struct PassStream {
    /// Usage so far.
    pub usage: Option<Usage>,
    /// `message_stop` (or an error event) was seen.
    pub done: bool,
    /// Some content arrived.
    pub content_seen: bool,
}

impl PassStream {
    /// One event; writes it on unchanged.
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        let kind = ev.event.as_deref().unwrap_or("");
        match kind {
            "message_start" | "message_delta" => {
                if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                    let u = v.pointer("/message/usage").or_else(|| v.get("usage"));
                    if let Some(u) = u.filter(|u| crate::usage::present(u)) {
                        let u = Usage::from_anthropic(u);
                        match &mut self.usage {
                            Some(have) => have.merge(u),
                            None => self.usage = Some(u),
                        }
                    }
                }
            }
            "content_block_start" | "content_block_delta" => self.content_seen = true,
            "message_stop" | "error" => self.done = true,
            _ => {}
        }
        sse::write(out, ev.event.as_deref(), &ev.data);
    }
}

/// The error event a broken Anthropic-format stream ends with.
pub fn stream_error(message: &str) -> bytes::Bytes {
    sse::frame(
        Some("error"),
        &json!({"type": "error", "error": {"type": "api_error", "message": message}}).to_string(),
    )
}

#[cfg(test)]
mod tests;
