//! OpenAI Chat Completions → Gemini `generateContent` (the Gemini API and Vertex AI speak
//! the same body), and Gemini's answers and SSE streams back into OpenAI's form.
//!
//! State that must survive a round trip: a `functionCall` part's `thoughtSignature` goes to
//! the client on the tool call as `extra_content.google.thought_signature` (the convention
//! of Google's own OpenAI-compatible endpoint) and is put back on the `functionCall` part
//! when the client sends the call back. A history without signatures (made by another
//! model) gets Google's documented placeholder on its first call, which Gemini 3 accepts.
//! Thought summaries (`thought: true` parts) reach the client as `reasoning_content`.

use bytes::BytesMut;
use serde_json::{json, Map, Value};

use crate::chat::{self, Choice, Chunks, Part};
use crate::openai::BadRequest;
use crate::sse::Event;
use crate::Usage;

/// What Gemini accepts in place of a lost thought signature (a history from elsewhere).
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// Translates an OpenAI Chat Completions request into a Gemini `generateContent` body (the
/// model goes into the URL).
pub fn request_from_openai(body: &Value) -> Result<Value, BadRequest> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| BadRequest::new("messages", "is required and must be an array"))?;
    let names = chat::call_names(messages);
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        match role {
            "system" | "developer" => {
                let text = chat::text_of(m.get("content"), &format!("{at}.content"))?;
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
            }
            "user" => {
                let parts = user_parts(m.get("content"), &format!("{at}.content"))?;
                crate::chat::push_turn(&mut contents, "user", "parts", parts);
            }
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(t) = chat::text_of(m.get("content"), &format!("{at}.content"))
                    .ok()
                    .filter(|t| !t.is_empty())
                {
                    parts.push(json!({"text": t}));
                }
                for (k, c) in chat::tool_calls(m, &at)?.into_iter().enumerate() {
                    let mut part = json!({"functionCall": {"name": c.name, "args": c.args}});
                    let signature = c
                        .call
                        .pointer("/extra_content/google/thought_signature")
                        .and_then(Value::as_str);
                    match signature {
                        Some(s) => part["thoughtSignature"] = json!(s),
                        None if k == 0 => part["thoughtSignature"] = json!(SKIP_SIGNATURE),
                        None => {}
                    }
                    parts.push(part);
                }
                crate::chat::push_turn(&mut contents, "model", "parts", parts);
            }
            "tool" | "function" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let name = m
                    .get("name")
                    .and_then(Value::as_str)
                    .or_else(|| names.iter().find(|(i, _)| i == id).map(|(_, n)| n.as_str()))
                    .ok_or_else(|| {
                        BadRequest::new(
                            format!("{at}.tool_call_id"),
                            "names no tool call of an earlier assistant message",
                        )
                    })?;
                let text = chat::text_of(m.get("content"), &format!("{at}.content"))?;
                // A JSON object result is given as it is; anything else under `content`.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    _ => json!({"content": text}),
                };
                crate::chat::push_turn(
                    &mut contents,
                    "user",
                    "parts",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
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
    let mut req = Map::new();
    req.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        req.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let config = generation_config(body)?;
    if !config.is_empty() {
        req.insert("generationConfig".into(), Value::Object(config));
    }
    let tools = chat::tool_defs(body)?;
    if !tools.is_empty() {
        let decls: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parametersJsonSchema": t.parameters});
                if let Some(desc) = t.description {
                    d["description"] = json!(desc);
                }
                d
            })
            .collect();
        req.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        if let Some(c) = chat::tool_choice(body)? {
            let fc = match c {
                Choice::Auto => json!({"mode": "AUTO"}),
                Choice::None => json!({"mode": "NONE"}),
                Choice::Required => json!({"mode": "ANY"}),
                Choice::Named(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
            };
            req.insert("toolConfig".into(), json!({"functionCallingConfig": fc}));
        }
    }
    Ok(Value::Object(req))
}

fn generation_config(body: &Value) -> Result<Map<String, Value>, BadRequest> {
    let mut g = Map::new();
    if let Some(n) = chat::max_tokens(body) {
        g.insert("maxOutputTokens".into(), json!(n));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = body.get(from).filter(|v| v.is_number()) {
            g.insert(to.into(), v.clone());
        }
    }
    if let Some(n) = body.get("n").and_then(Value::as_u64).filter(|n| *n > 1) {
        if crate::openai::is_stream(body) {
            return Err(BadRequest::new(
                "n",
                "must be 1 when streaming from this provider",
            ));
        }
        g.insert("candidateCount".into(), json!(n));
    }
    let stops = chat::stops(body);
    if !stops.is_empty() {
        g.insert("stopSequences".into(), Value::Array(stops));
    }
    if let Some(f) = body.get("response_format").filter(|f| !f.is_null()) {
        match f.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                g.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                g.insert("responseMimeType".into(), json!("application/json"));
                if let Some(s) = f.pointer("/json_schema/schema") {
                    g.insert("responseJsonSchema".into(), s.clone());
                }
            }
            _ => {
                return Err(BadRequest::new(
                    "response_format.type",
                    "must be text, json_object or json_schema",
                ))
            }
        }
    }
    if let Some(budget) = chat::thinking_budget(body)? {
        g.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": budget, "includeThoughts": true}),
        );
    }
    Ok(g)
}

fn user_parts(content: Option<&Value>, at: &str) -> Result<Vec<Value>, BadRequest> {
    let mut out = Vec::new();
    for (k, p) in chat::parts(content, at)?.into_iter().enumerate() {
        out.push(match p {
            Part::Text(t) => json!({"text": t}),
            Part::Image(url) => match chat::data_url(url, &format!("{at}[{k}].image_url.url"))? {
                Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
                None => {
                    json!({"fileData": {"mimeType": chat::image_type_of_url(url), "fileUri": url}})
                }
            },
        });
    }
    Ok(out)
}

/// OpenAI's finish reason for Gemini's.
pub fn finish_reason(reason: &str, called: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if called => "tool_calls",
        _ => "stop",
    }
}

/// A tool call in OpenAI's form, with the thought signature carried along.
fn tool_call(part: &Value, index: usize, with_index: bool) -> Option<Value> {
    let f = part.get("functionCall")?;
    let name = f.get("name").and_then(Value::as_str).unwrap_or("");
    let id = f
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("call_{index}_{name}"), str::to_string);
    let mut call = json!({"id": id, "type": "function", "function": {
        "name": name, "arguments": f.get("args").map_or_else(|| "{}".to_string(), Value::to_string)}});
    if with_index {
        call["index"] = json!(index);
    }
    if let Some(s) = part.get("thoughtSignature") {
        call["extra_content"] = json!({"google": {"thought_signature": s}});
    }
    Some(call)
}

/// Translates a whole Gemini answer; `model` is the name the client asked for.
pub fn response_to_openai(resp: &Value, model: &str) -> Value {
    let mut choices = Vec::new();
    for (n, cand) in resp
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut text = String::new();
        let mut reasoning = String::new();
        let mut calls = Vec::new();
        for p in cand
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(c) = tool_call(p, calls.len(), false) {
                calls.push(c);
            } else if let Some(t) = p.get("text").and_then(Value::as_str) {
                if p.get("thought") == Some(&Value::Bool(true)) {
                    reasoning.push_str(t);
                } else {
                    text.push_str(t);
                }
            }
        }
        let finish = finish_reason(
            cand.get("finishReason")
                .and_then(Value::as_str)
                .unwrap_or("STOP"),
            !calls.is_empty(),
        );
        let mut message = json!({"role": "assistant",
            "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        if !reasoning.is_empty() {
            message["reasoning_content"] = Value::String(reasoning);
        }
        choices.push(
            json!({"index": n, "message": message, "logprobs": null, "finish_reason": finish}),
        );
    }
    if choices.is_empty() {
        // A prompt blocked before any candidate (`promptFeedback.blockReason`).
        choices.push(
            json!({"index": 0, "message": {"role": "assistant", "content": ""},
            "logprobs": null, "finish_reason": "content_filter"}),
        );
    }
    let usage = resp.get("usageMetadata").map(Usage::from_gemini);
    let id = resp.get("responseId").and_then(Value::as_str).unwrap_or("");
    let mut out = chat::completion(&format!("chatcmpl-{id}"), model, Value::Null, "stop", usage);
    out["choices"] = Value::Array(choices);
    out
}

/// Turns Gemini's SSE stream (`streamGenerateContent?alt=sse`: one
/// `GenerateContentResponse` per event) into OpenAI chunks. Gemini sends no end marker: the
/// event with a `finishReason` is the last.
pub struct ToOpenAiStream {
    chunks: Chunks,
    started: bool,
    next_tool: usize,
    /// Usage so far (every event carries the running totals).
    pub usage: Option<Usage>,
    /// The last event was seen and the closing chunks written.
    pub done: bool,
    /// Some content arrived.
    pub content_seen: bool,
}

impl ToOpenAiStream {
    /// For a client that asked for `model`, with (or without) the usage chunk.
    pub fn new(model: &str, include_usage: bool) -> ToOpenAiStream {
        ToOpenAiStream {
            chunks: Chunks::new(model, include_usage),
            started: false,
            next_tool: 0,
            usage: None,
            done: false,
            content_seen: false,
        }
    }

    /// One event; writes the chunks it makes into `out`.
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        if self.text_event(ev, out) {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        if let Some(e) = v.get("error") {
            let msg = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider reported an error");
            self.chunks.error(out, msg, "upstream_error");
            self.done = true;
            return;
        }
        self.start(v.get("responseId").and_then(Value::as_str), out);
        if let Some(u) = v.get("usageMetadata").filter(|u| crate::usage::present(u)) {
            self.usage = Some(Usage::from_gemini(u));
        }
        let cand = v.pointer("/candidates/0");
        for p in cand
            .and_then(|c| c.pointer("/content/parts"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(call) = tool_call(p, self.next_tool, true) {
                self.next_tool += 1;
                self.content_seen = true;
                self.chunks.chunk(out, json!({"tool_calls": [call]}), None);
            } else if let Some(t) = p
                .get("text")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                self.content_seen = true;
                let key = if p.get("thought") == Some(&Value::Bool(true)) {
                    "reasoning_content"
                } else {
                    "content"
                };
                self.chunks.text(out, key, t);
            }
        }
        let finish = cand
            .and_then(|c| c.get("finishReason"))
            .and_then(Value::as_str)
            .or_else(|| {
                v.pointer("/promptFeedback/blockReason")
                    .and_then(Value::as_str)
                    .map(|_| "SAFETY")
            });
        if let Some(reason) = finish {
            self.finish(reason, out);
        }
    }

    fn start(&mut self, id: Option<&str>, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            if let Some(id) = id {
                self.chunks.set_id(format!("chatcmpl-{id}"));
            }
            self.chunks
                .chunk(out, json!({"role": "assistant", "content": ""}), None);
        }
    }

    fn finish(&mut self, reason: &str, out: &mut BytesMut) {
        let f = finish_reason(reason, self.next_tool > 0);
        self.chunks.chunk(out, json!({}), Some(f));
        self.chunks.end(out, self.usage);
        self.done = true;
    }

    /// The hot path: an event of text parts only (most of a stream), read without a JSON
    /// tree. `false` when the event has anything else (calls, errors, feedback).
    fn text_event(&mut self, ev: &Event, out: &mut BytesMut) -> bool {
        use std::borrow::Cow;
        #[derive(serde::Deserialize)]
        struct TextPart<'a> {
            #[serde(borrow)]
            text: Cow<'a, str>,
            #[serde(default)]
            thought: bool,
        }
        #[derive(serde::Deserialize)]
        struct Content<'a> {
            #[serde(borrow, default)]
            parts: Vec<TextPart<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct Candidate<'a> {
            #[serde(borrow)]
            content: Option<Content<'a>>,
            #[serde(rename = "finishReason", borrow)]
            finish: Option<Cow<'a, str>>,
        }
        #[derive(serde::Deserialize)]
        struct TextEvent<'a> {
            #[serde(borrow)]
            candidates: Vec<Candidate<'a>>,
            #[serde(rename = "usageMetadata")]
            usage: Option<Value>,
            #[serde(rename = "responseId", borrow)]
            id: Option<Cow<'a, str>>,
        }
        // Parts with anything but text (a `functionCall`) fail `TextPart` and take the
        // general path; so do errors and prompt feedback (no `candidates`).
        if ev.data.contains("\"functionCall\"") {
            return false;
        }
        let Ok(e) = serde_json::from_str::<TextEvent>(&ev.data) else {
            return false;
        };
        if e.candidates.len() != 1 {
            return false;
        }
        self.start(e.id.as_deref(), out);
        if let Some(u) = e.usage.as_ref().filter(|u| crate::usage::present(u)) {
            self.usage = Some(Usage::from_gemini(u));
        }
        let cand = &e.candidates[0];
        for p in cand.content.iter().flat_map(|c| &c.parts) {
            if !p.text.is_empty() {
                self.content_seen = true;
                let key = if p.thought {
                    "reasoning_content"
                } else {
                    "content"
                };
                self.chunks.text(out, key, &p.text);
            }
        }
        if let Some(reason) = &cand.finish {
            self.finish(reason, out);
        }
        true
    }
}

/// An OpenAI embeddings request as a Gemini `batchEmbedContents` body.
pub fn embeddings_from_openai(body: &Value, model: &str) -> Result<Value, BadRequest> {
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect()
        }
        _ => {
            return Err(BadRequest::new(
                "input",
                "must be a string or an array of strings for this model's provider",
            ))
        }
    };
    let name = format!("models/{model}");
    let mut requests = Vec::with_capacity(inputs.len());
    for text in inputs {
        let mut r = json!({"model": name, "content": {"parts": [{"text": text}]}});
        if let Some(d) = body.get("dimensions").and_then(Value::as_u64) {
            r["outputDimensionality"] = json!(d);
        }
        requests.push(r);
    }
    Ok(json!({"requests": requests}))
}

/// A Gemini `batchEmbedContents` answer in OpenAI's form (Gemini reports no usage).
pub fn embeddings_to_openai(resp: &Value, model: &str) -> Value {
    let data: Vec<Value> = resp
        .get("embeddings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| json!({"object": "embedding", "index": i, "embedding": e.get("values").cloned().unwrap_or_else(|| json!([]))}))
        .collect();
    json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0}})
}

#[cfg(test)]
mod tests;
