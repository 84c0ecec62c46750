//! OpenAI Chat Completions → AWS Bedrock Converse, and Converse answers and
//! `converse-stream` events (AWS event-stream frames, decoded by [`crate::aws`]) back into
//! OpenAI's form.
//!
//! Bedrock differs from OpenAI where a translation must take care: images only inline
//! (bytes, no URLs), no `tool_choice: none` (the tools stay, the choice is left out, as
//! Bedrock requires `toolConfig` whenever the history holds tool calls), JSON mode as an
//! instruction, and reasoning (Claude on Bedrock) with signatures that must come back: they
//! reach the client as `thinking_blocks` (the same form as from Anthropic) and go back as
//! `reasoningContent` blocks.

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use crate::chat::{self, Choice, Chunks, Part};
use crate::openai::BadRequest;
use crate::sse::Event;
use crate::Usage;

/// Translates an OpenAI Chat Completions request into a Converse body for upstream model
/// `model` (which goes into the URL; it decides whether reasoning can be asked for).
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
        let at = format!("messages[{i}]");
        match m.get("role").and_then(Value::as_str).unwrap_or("") {
            "system" | "developer" => {
                let text = chat::text_of(m.get("content"), &format!("{at}.content"))?;
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
            }
            "user" => {
                let blocks = user_blocks(m.get("content"), &format!("{at}.content"))?;
                crate::chat::push_turn(&mut out, "user", "content", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                for t in m
                    .get("thinking_blocks")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(b) = reasoning_block(t) {
                        blocks.push(b);
                    }
                }
                let text = chat::text_of(m.get("content"), &format!("{at}.content"))?;
                if !text.is_empty() {
                    blocks.push(json!({"text": text}));
                }
                for c in chat::tool_calls(m, &at)? {
                    blocks.push(
                        json!({"toolUse": {"toolUseId": c.id, "name": c.name, "input": c.args}}),
                    );
                }
                crate::chat::push_turn(&mut out, "assistant", "content", blocks);
            }
            "tool" | "function" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| BadRequest::new(format!("{at}.tool_call_id"), "is required"))?;
                let text = chat::text_of(m.get("content"), &format!("{at}.content"))?;
                let content = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => json!([{"json": v}]),
                    _ => json!([{"text": text}]),
                };
                crate::chat::push_turn(
                    &mut out,
                    "user",
                    "content",
                    vec![json!({"toolResult": {"toolUseId": id, "content": content}})],
                );
            }
            other => {
                return Err(BadRequest::new(
                    format!("{at}.role"),
                    format!("`{other}` is not one of system, developer, user, assistant, tool"),
                ))
            }
        }
    }
    if let Some(instruction) = crate::anthropic::json_instruction(body.get("response_format"))? {
        system.push(json!({"text": instruction}));
    }
    let mut req = Map::new();
    req.insert("messages".into(), Value::Array(out));
    if !system.is_empty() {
        req.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    let mut max = chat::max_tokens(body);
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        inference.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = body.get("top_p").filter(|v| v.is_number()) {
        inference.insert("topP".into(), p.clone());
    }
    let stops = chat::stops(body);
    if !stops.is_empty() {
        inference.insert("stopSequences".into(), Value::Array(stops));
    }
    if let Some(budget) = chat::thinking_budget(body)? {
        if is_claude(model) {
            req.insert(
                "additionalModelRequestFields".into(),
                json!({"thinking": {"type": "enabled", "budget_tokens": budget}}),
            );
            // Claude refuses a temperature other than 1 with thinking on, and wants room
            // for the answer beyond the budget.
            inference.remove("temperature");
            let m = max.unwrap_or(crate::anthropic::DEFAULT_MAX_TOKENS);
            if m <= budget {
                max = Some(budget + m);
            }
        }
    }
    if let Some(m) = max {
        inference.insert("maxTokens".into(), json!(m));
    }
    if !inference.is_empty() {
        req.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let tools = chat::tool_defs(body)?;
    if !tools.is_empty() {
        let specs: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut s = json!({"name": t.name, "inputSchema": {"json": t.parameters}});
                if let Some(d) = t.description {
                    s["description"] = json!(d);
                }
                json!({"toolSpec": s})
            })
            .collect();
        let mut config = json!({"tools": specs});
        match chat::tool_choice(body)? {
            Some(Choice::Auto) => config["toolChoice"] = json!({"auto": {}}),
            Some(Choice::Required) => config["toolChoice"] = json!({"any": {}}),
            Some(Choice::Named(n)) => config["toolChoice"] = json!({"tool": {"name": n}}),
            Some(Choice::None) | None => {}
        }
        req.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(req))
}

fn is_claude(model: &str) -> bool {
    model.contains("anthropic.") || model.contains("claude")
}

/// A thinking block the client got (from Bedrock or Anthropic) as a `reasoningContent`
/// block; redacted ones carry their opaque data.
fn reasoning_block(t: &Value) -> Option<Value> {
    match t.get("type").and_then(Value::as_str) {
        Some("thinking") => Some(json!({"reasoningContent": {"reasoningText": {
            "text": t.get("thinking").and_then(Value::as_str).unwrap_or(""),
            "signature": t.get("signature").and_then(Value::as_str).unwrap_or("")}}})),
        Some("redacted_thinking") => Some(
            json!({"reasoningContent": {"redactedContent": t.get("data").cloned().unwrap_or(Value::Null)}}),
        ),
        _ => None,
    }
}

fn user_blocks(content: Option<&Value>, at: &str) -> Result<Vec<Value>, BadRequest> {
    let mut out = Vec::new();
    for (k, p) in chat::parts(content, at)?.into_iter().enumerate() {
        let here = format!("{at}[{k}].image_url.url");
        out.push(match p {
            Part::Text(t) => json!({"text": t}),
            Part::Image(url) => {
                let Some((mime, data)) = chat::data_url(url, &here)? else {
                    return Err(BadRequest::new(
                        here,
                        "this model's provider (Bedrock) takes images only inline, as data: URLs",
                    ));
                };
                let format = match mime {
                    "image/png" => "png",
                    "image/jpeg" | "image/jpg" => "jpeg",
                    "image/gif" => "gif",
                    "image/webp" => "webp",
                    other => {
                        return Err(BadRequest::new(
                            here,
                            format!(
                            "`{other}` is not one of image/png, image/jpeg, image/gif, image/webp"
                        ),
                        ))
                    }
                };
                json!({"image": {"format": format, "source": {"bytes": data}}})
            }
        });
    }
    Ok(out)
}

/// OpenAI's finish reason for Converse's stop reason.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop",
    }
}

/// Translates a whole Converse answer; `model` is the name the client asked for.
pub fn response_to_openai(resp: &Value, model: &str) -> Value {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut thinking = Vec::new();
    let mut calls = Vec::new();
    for b in resp
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(u) = b.get("toolUse") {
            calls.push(json!({"id": u.get("toolUseId"), "type": "function", "function": {
                "name": u.get("name"), "arguments": u.get("input").map_or_else(|| "{}".to_string(), Value::to_string)}}));
        } else if let Some(r) = b.get("reasoningContent") {
            if let Some(rt) = r.get("reasoningText") {
                let t = rt.get("text").and_then(Value::as_str).unwrap_or("");
                reasoning.push_str(t);
                thinking.push(json!({"type": "thinking", "thinking": t,
                    "signature": rt.get("signature").and_then(Value::as_str).unwrap_or("")}));
            } else if let Some(d) = r.get("redactedContent") {
                thinking.push(json!({"type": "redacted_thinking", "data": d}));
            }
        }
    }
    let mut message = json!({"role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !thinking.is_empty() {
        message["reasoning_content"] = Value::String(reasoning);
        message["thinking_blocks"] = Value::Array(thinking);
    }
    let finish = finish_reason(resp.get("stopReason").and_then(Value::as_str).unwrap_or(""));
    let usage = resp.get("usage").map(Usage::from_bedrock);
    let id = format!("chatcmpl-bedrock-{}", crate::anthropic::unix_now());
    chat::completion(&id, model, message, finish, usage)
}

/// Turns `converse-stream` events into OpenAI chunks. The stop reason (`messageStop`)
/// comes before the usage (`metadata`): the finish chunk is written at the first, the
/// usage chunk and `[DONE]` at the second (or at the end of the stream if it never comes).
pub struct ToOpenAiStream {
    chunks: Chunks,
    /// Converse block index → OpenAI tool call index.
    tools: Vec<(u64, u64)>,
    /// Thinking text and signature of the open reasoning block.
    thinking: Option<(String, String)>,
    stopped: bool,
    /// Usage (from `metadata`).
    pub usage: Option<Usage>,
    /// The stream ended properly and the closing chunks were written.
    pub done: bool,
    /// Some content arrived.
    pub content_seen: bool,
}

impl ToOpenAiStream {
    /// For a client that asked for `model`, with (or without) the usage chunk.
    pub fn new(model: &str, include_usage: bool) -> ToOpenAiStream {
        let mut chunks = Chunks::new(model, include_usage);
        let id = format!("chatcmpl-bedrock-{}", chunks.created());
        chunks.set_id(id);
        ToOpenAiStream {
            chunks,
            tools: Vec::new(),
            thinking: None,
            stopped: false,
            usage: None,
            done: false,
            content_seen: false,
        }
    }

    /// One event (`event` is the frame's `:event-type`, or `exception`); writes the chunks
    /// it makes into `out`.
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        if self.text_delta(ev, out) {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        let index = v
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match ev.event.as_deref().unwrap_or("") {
            "messageStart" => {
                self.chunks
                    .chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            "contentBlockStart" => {
                if let Some(u) = v.pointer("/start/toolUse") {
                    self.content_seen = true;
                    let t = self.tools.len() as u64;
                    self.tools.push((index, t));
                    self.chunks.chunk(
                        out,
                        json!({"tool_calls": [{"index": t, "id": u.get("toolUseId"), "type": "function",
                            "function": {"name": u.get("name"), "arguments": ""}}]}),
                        None,
                    );
                }
            }
            "contentBlockDelta" => self.delta(index, &v["delta"], out),
            "contentBlockStop" => {
                if let Some((thinking, signature)) = self.thinking.take() {
                    self.chunks.chunk(
                        out,
                        json!({"thinking_blocks": [{"type": "thinking", "thinking": thinking, "signature": signature}]}),
                        None,
                    );
                }
            }
            "messageStop" => {
                let stop = v.get("stopReason").and_then(Value::as_str).unwrap_or("");
                self.chunks.chunk(out, json!({}), Some(finish_reason(stop)));
                self.stopped = true;
            }
            "metadata" => {
                if let Some(u) = v.get("usage").filter(|u| crate::usage::present(u)) {
                    self.usage = Some(Usage::from_bedrock(u));
                }
                if self.stopped {
                    self.chunks.end(out, self.usage);
                    self.done = true;
                }
            }
            "exception" => {
                let msg = v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the provider reported an error");
                let kind = v
                    .get("exception")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream_error");
                self.chunks.error(out, msg, kind);
                self.done = true;
            }
            _ => {}
        }
    }

    /// The hot path: a text delta, read without a JSON tree. `false` for anything else.
    fn text_delta(&mut self, ev: &Event, out: &mut BytesMut) -> bool {
        #[derive(serde::Deserialize)]
        struct Delta<'a> {
            #[serde(borrow)]
            text: Option<std::borrow::Cow<'a, str>>,
        }
        #[derive(serde::Deserialize)]
        struct DeltaEvent<'a> {
            #[serde(borrow)]
            delta: Delta<'a>,
        }
        if ev.event.as_deref() != Some("contentBlockDelta") {
            return false;
        }
        match serde_json::from_str::<DeltaEvent>(&ev.data) {
            Ok(DeltaEvent {
                delta: Delta { text: Some(t) },
            }) => {
                self.content_seen = true;
                self.chunks.text(out, "content", &t);
                true
            }
            _ => false,
        }
    }

    fn delta(&mut self, index: u64, d: &Value, out: &mut BytesMut) {
        if let Some(t) = d.get("text").and_then(Value::as_str) {
            self.content_seen = true;
            self.chunks.text(out, "content", t);
        } else if let Some(input) = d.pointer("/toolUse/input").and_then(Value::as_str) {
            let t = self
                .tools
                .iter()
                .find(|(i, _)| *i == index)
                .map_or(0, |(_, t)| *t);
            self.chunks.chunk(
                out,
                json!({"tool_calls": [{"index": t, "function": {"arguments": input}}]}),
                None,
            );
        } else if let Some(r) = d.get("reasoningContent") {
            let (text, sig) = self.thinking.get_or_insert_with(Default::default);
            if let Some(t) = r.get("text").and_then(Value::as_str) {
                text.push_str(t);
                self.content_seen = true;
                self.chunks
                    .chunk(out, json!({"reasoning_content": t}), None);
            }
            if let Some(s) = r.get("signature").and_then(Value::as_str) {
                sig.push_str(s);
            }
        }
    }

    /// At the end of the stream: closes a stream that stopped but sent no `metadata`.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.stopped && !self.done {
            self.chunks.end(out, self.usage);
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests;
