//! The parts of an OpenAI Chat Completions request that every translation reads the same
//! way (content parts, tools, tool choice, stops, limits), and the chunk writer of the
//! translations that answer OpenAI clients from another format's stream.

use bytes::BytesMut;
use serde_json::{json, Value};

use crate::openai::BadRequest;
use crate::sse;
use crate::Usage;

/// One part of a message's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part<'a> {
    /// Text.
    Text(&'a str),
    /// An image by URL (`https://…` or `data:…;base64,…`).
    Image(&'a str),
}

/// A message's content (a string or an array of parts) as parts; empty texts are dropped.
pub(crate) fn parts<'a>(content: Option<&'a Value>, at: &str) -> Result<Vec<Part<'a>>, BadRequest> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::Text(s)]),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (k, p) in items.iter().enumerate() {
                let here = format!("{at}[{k}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            BadRequest::new(format!("{here}.text"), "is required")
                        })?;
                        if !t.is_empty() {
                            out.push(Part::Text(t));
                        }
                    }
                    Some("image_url") => {
                        let url = p
                            .pointer("/image_url/url")
                            .or_else(|| p.get("image_url").filter(|v| v.is_string()))
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                BadRequest::new(format!("{here}.image_url.url"), "is required")
                            })?;
                        out.push(Part::Image(url));
                    }
                    Some(other) => {
                        return Err(BadRequest::new(
                            format!("{here}.type"),
                            format!("`{other}` content is not supported by this model's provider"),
                        ))
                    }
                    None => return Err(BadRequest::new(format!("{here}.type"), "is required")),
                }
            }
            Ok(out)
        }
        Some(_) => Err(BadRequest::new(at, "must be a string or an array of parts")),
    }
}

/// The text of a content (parts joined by `\n`; images left out).
pub(crate) fn text_of(content: Option<&Value>, at: &str) -> Result<String, BadRequest> {
    Ok(parts(content, at)?
        .into_iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t),
            Part::Image(_) => None,
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// A `data:` URL's media type and base64 payload; `None` for other URLs.
pub(crate) fn data_url<'a>(
    url: &'a str,
    at: &str,
) -> Result<Option<(&'a str, &'a str)>, BadRequest> {
    let Some(rest) = url.strip_prefix("data:") else {
        if url.starts_with("https://") || url.starts_with("http://") {
            return Ok(None);
        }
        return Err(BadRequest::new(at, "must be an http(s) or data URL"));
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| BadRequest::new(at, "a data URL needs a `,`"))?;
    let media_type = meta
        .strip_suffix(";base64")
        .ok_or_else(|| BadRequest::new(at, "a data URL must be base64"))?;
    Ok(Some((media_type, data)))
}

/// The media type of an image URL, guessed from its extension (Gemini wants one).
pub(crate) fn image_type_of_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        _ => "image/jpeg",
    }
}

/// An assistant message's tool call: id, name and parsed arguments.
pub(crate) struct ToolCall<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub args: Value,
    pub call: &'a Value,
}

/// The tool calls of an assistant message.
pub(crate) fn tool_calls<'a>(m: &'a Value, at: &str) -> Result<Vec<ToolCall<'a>>, BadRequest> {
    let mut out = Vec::new();
    for (j, c) in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let here = format!("{at}.tool_calls[{j}]");
        let id = c
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| BadRequest::new(format!("{here}.id"), "is required"))?;
        let name = c
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| BadRequest::new(format!("{here}.function.name"), "is required"))?;
        let raw = c
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        let args = if raw.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(raw).map_err(|_| {
                BadRequest::new(format!("{here}.function.arguments"), "is not valid JSON")
            })?
        };
        out.push(ToolCall {
            id,
            name,
            args,
            call: c,
        });
    }
    Ok(out)
}

/// A function the model may call.
pub(crate) struct ToolDef<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub parameters: Value,
}

/// The request's `tools` (functions only).
pub(crate) fn tool_defs(body: &Value) -> Result<Vec<ToolDef<'_>>, BadRequest> {
    let mut out = Vec::new();
    for (j, t) in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let f = t
            .get("function")
            .ok_or_else(|| BadRequest::new(format!("tools[{j}].function"), "is required"))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| BadRequest::new(format!("tools[{j}].function.name"), "is required"))?;
        out.push(ToolDef {
            name,
            description: f.get("description").and_then(Value::as_str),
            parameters: f
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    Ok(out)
}

/// `tool_choice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice<'a> {
    Auto,
    None,
    Required,
    Named(&'a str),
}

/// The request's `tool_choice`, if any.
pub(crate) fn tool_choice(body: &Value) -> Result<Option<Choice<'_>>, BadRequest> {
    match body.get("tool_choice") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(Choice::Auto)),
            "none" => Ok(Some(Choice::None)),
            "required" => Ok(Some(Choice::Required)),
            other => Err(BadRequest::new(
                "tool_choice",
                format!("`{other}` is not one of auto, none, required"),
            )),
        },
        Some(v) => v
            .pointer("/function/name")
            .and_then(Value::as_str)
            .map(|n| Some(Choice::Named(n)))
            .ok_or_else(|| BadRequest::new("tool_choice.function.name", "is required")),
    }
}

/// Appends `items` to the last turn of `turns` when it has the same role, else starts a
/// turn `{"role": role, <field>: items}`: Anthropic, Gemini and Bedrock want the roles to
/// alternate where OpenAI allows runs (several tool results in a row).
pub(crate) fn push_turn(turns: &mut Vec<Value>, role: &str, field: &str, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|m| m["role"] == role) {
        if let Some(Value::Array(c)) = last.get_mut(field) {
            c.extend(items);
            return;
        }
    }
    let mut turn = serde_json::Map::new();
    turn.insert("role".into(), Value::String(role.to_string()));
    turn.insert(field.into(), Value::Array(items));
    turns.push(Value::Object(turn));
}

/// The request's stop sequences.
pub(crate) fn stops(body: &Value) -> Vec<Value> {
    match body.get("stop") {
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(a)) => a.iter().filter(|s| s.is_string()).cloned().collect(),
        _ => Vec::new(),
    }
}

/// The request's output limit, if it sets one.
pub(crate) fn max_tokens(body: &Value) -> Option<u64> {
    body.get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
}

/// The thinking budget for `reasoning_effort`, if the request sets one.
pub(crate) fn thinking_budget(body: &Value) -> Result<Option<u64>, BadRequest> {
    match body.get("reasoning_effort").and_then(Value::as_str) {
        None => Ok(None),
        Some("minimal" | "low") => Ok(Some(1_024)),
        Some("medium") => Ok(Some(4_096)),
        Some("high") => Ok(Some(16_384)),
        Some(other) => Err(BadRequest::new(
            "reasoning_effort",
            format!("`{other}` is not one of minimal, low, medium, high"),
        )),
    }
}

/// Tool call id → function name, from the assistant messages (a tool result names only the
/// id; Gemini wants the name).
pub(crate) fn call_names(messages: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for m in messages.iter().filter(|m| m["role"] == "assistant") {
        for c in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(id), Some(name)) = (
                c.get("id").and_then(Value::as_str),
                c.pointer("/function/name").and_then(Value::as_str),
            ) {
                out.push((id.to_string(), name.to_string()));
            }
        }
    }
    out
}

/// Writes OpenAI chunks for a translated stream. Every chunk of a stream starts the same
/// (`data: {"id":…,"object":…,"created":…,"model":…,"choices":[{"index":0,"delta":`): that
/// prefix is written once and copied, and text deltas are written around it without a JSON
/// tree (a stream is mostly text deltas).
pub(crate) struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    prefix: String,
}

impl Chunks {
    pub fn new(model: &str, include_usage: bool) -> Chunks {
        Chunks {
            id: String::new(),
            created: crate::anthropic::unix_now(),
            model: model.to_string(),
            include_usage,
            prefix: String::new(),
        }
    }

    /// Sets the stream's id (before its first chunk).
    pub fn set_id(&mut self, id: String) {
        self.id = id;
        self.prefix.clear();
    }

    /// The creation time every chunk carries.
    pub fn created(&self) -> u64 {
        self.created
    }

    fn head(&mut self, out: &mut BytesMut) {
        if self.prefix.is_empty() {
            let head = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model})
                .to_string();
            self.prefix = format!(
                "data: {},\"choices\":[{{\"index\":0,\"delta\":",
                &head[..head.len() - 1]
            );
        }
        out.extend_from_slice(self.prefix.as_bytes());
    }

    fn tail(out: &mut BytesMut, finish: Option<&str>) {
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => {
                out.extend_from_slice(b"\"");
                out.extend_from_slice(f.as_bytes());
                out.extend_from_slice(b"\"");
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
    }

    /// One chunk with `delta` (and a finish reason: one of OpenAI's fixed words).
    pub fn chunk(&mut self, out: &mut BytesMut, delta: Value, finish: Option<&str>) {
        self.head(out);
        out.extend_from_slice(delta.to_string().as_bytes());
        Self::tail(out, finish);
    }

    /// A chunk whose delta is `{"<key>": text}` (`content`, `reasoning_content`).
    pub fn text(&mut self, out: &mut BytesMut, key: &str, text: &str) {
        self.head(out);
        out.extend_from_slice(b"{\"");
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        let mut w = bytes::BufMut::writer(std::mem::take(out));
        let _ = serde_json::to_writer(&mut w, text);
        *out = w.into_inner();
        out.extend_from_slice(b"}");
        Self::tail(out, None);
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    pub fn end(&self, out: &mut BytesMut, usage: Option<Usage>) {
        if self.include_usage {
            let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": usage.unwrap_or_default().to_openai()});
            sse::write(out, None, &v.to_string());
        }
        sse::write(out, None, "[DONE]");
    }

    /// An error chunk (what OpenAI's SDKs raise from).
    pub fn error(&self, out: &mut BytesMut, message: &str, code: &str) {
        let e = json!({"error": {"message": message, "type": "upstream_error", "code": code}});
        sse::write(out, None, &e.to_string());
    }
}

/// A whole OpenAI answer from its parts.
pub(crate) fn completion(
    id: &str,
    model: &str,
    message: Value,
    finish: &str,
    usage: Option<Usage>,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": crate::anthropic::unix_now(),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage.unwrap_or_default().to_openai(),
    })
}
