//! What the gateway does to OpenAI-format traffic it passes through: the request gets the
//! upstream model and, for streams, `stream_options.include_usage` (so usage is never lost);
//! the stream is followed event by event for its usage, and the usage chunk is dropped
//! when the client did not ask for it.

use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};

use crate::sse::{self, Event};
use crate::Usage;

/// A request field that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BadRequest {
    /// JSON path of the field (`messages[2].role`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl BadRequest {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> BadRequest {
        BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Checks what every chat request must have, in OpenAI's format (or, with `anthropic`,
/// Anthropic's), so a malformed body is refused by the gateway with the field named rather
/// than passed to a provider.
pub fn validate_chat(body: &Value, anthropic: bool) -> Result<(), BadRequest> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| BadRequest::new("messages", "is required and must be an array"))?;
    if messages.is_empty() {
        return Err(BadRequest::new(
            "messages",
            "must hold at least one message",
        ));
    }
    let roles: &[&str] = if anthropic {
        &["user", "assistant"]
    } else {
        &[
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
        ]
    };
    for (i, m) in messages.iter().enumerate() {
        if !m.is_object() {
            return Err(BadRequest::new(
                format!("messages[{i}]"),
                "must be an object",
            ));
        }
        match m.get("role").and_then(Value::as_str) {
            None => {
                return Err(BadRequest::new(
                    format!("messages[{i}].role"),
                    "is required",
                ))
            }
            Some(r) if !roles.contains(&r) => {
                return Err(BadRequest::new(
                    format!("messages[{i}].role"),
                    format!("`{r}` is not one of {}", roles.join(", ")),
                ))
            }
            Some(_) => {}
        }
        match m.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(BadRequest::new(
                    format!("messages[{i}].content"),
                    "must be a string or an array of parts",
                ))
            }
        }
    }
    if body
        .get("stream")
        .is_some_and(|s| !s.is_boolean() && !s.is_null())
    {
        return Err(BadRequest::new("stream", "must be true or false"));
    }
    for f in ["max_tokens", "max_completion_tokens"] {
        if body
            .get(f)
            .is_some_and(|v| !v.is_null() && v.as_u64().is_none_or(|n| n == 0))
        {
            return Err(BadRequest::new(f, "must be a positive integer"));
        }
    }
    if anthropic && body.get("max_tokens").is_none_or(Value::is_null) {
        return Err(BadRequest::new("max_tokens", "is required"));
    }
    Ok(())
}

/// True when the request streams.
pub fn is_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

/// True when a streaming client asked for the usage chunk.
pub fn wants_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Readies a pass-through request: the upstream model, and usage forced on for streams.
pub fn prepare(body: &mut Value, upstream_model: &str) {
    body["model"] = Value::String(upstream_model.to_string());
    if is_stream(body) {
        match body.get_mut("stream_options") {
            Some(Value::Object(o)) => {
                o.insert("include_usage".into(), Value::Bool(true));
            }
            _ => body["stream_options"] = json!({"include_usage": true}),
        }
    }
}

/// Follows a passed-through OpenAI stream: keeps its usage, drops the usage chunk the
/// client did not ask for, and notes whether it ended properly (`[DONE]`).
pub struct PassStream {
    client_wants_usage: bool,
    /// Usage reported by the stream so far.
    pub usage: Option<Usage>,
    /// `[DONE]` was seen.
    pub done: bool,
    /// Some content arrived (for time to first token).
    pub content_seen: bool,
}

impl PassStream {
    /// For a client that did (or did not) ask for the usage chunk.
    pub fn new(client_wants_usage: bool) -> PassStream {
        PassStream {
            client_wants_usage,
            usage: None,
            done: false,
            content_seen: false,
        }
    }

    /// One event from the provider; writes what the client gets into `out`.
    pub fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        if ev.data == "[DONE]" {
            self.done = true;
            sse::write(out, ev.event.as_deref(), &ev.data);
            return;
        }
        // Only a chunk whose `usage` is an object is parsed; content chunks (`"usage":null`
        // or none) pass as they are.
        if has_usage_object(&ev.data) {
            if let Ok(v) = serde_json::from_str::<Value>(&ev.data) {
                if let Some(u) = v.get("usage").filter(|u| crate::usage::present(u)) {
                    self.usage = Some(Usage::from_openai(u));
                    let no_choices = v
                        .get("choices")
                        .and_then(Value::as_array)
                        .is_none_or(Vec::is_empty);
                    if no_choices && !self.client_wants_usage {
                        return;
                    }
                }
            }
        }
        if !self.content_seen && ev.data.contains("\"delta\"") {
            self.content_seen = true;
        }
        sse::write(out, ev.event.as_deref(), &ev.data);
    }
}

/// True when `data` holds `"usage"` followed by an object (not `null`): a cheap scan, so
/// the chunks of a stream are not parsed one by one.
pub fn has_usage_object(data: &str) -> bool {
    let bytes = data.as_bytes();
    let finder = memchr::memmem::Finder::new(b"\"usage\"");
    for at in finder.find_iter(bytes) {
        let rest = &bytes[at + 7..];
        let mut i = 0;
        while i < rest.len() && (rest[i] == b' ' || rest[i] == b':' || rest[i] == b'\t') {
            i += 1;
        }
        if rest.get(i) == Some(&b'{') {
            return true;
        }
    }
    false
}

/// The error event a stream that broke mid-way ends with (what OpenAI's SDKs raise from).
pub fn stream_error(message: &str) -> Bytes {
    let v =
        json!({"error": {"message": message, "type": "upstream_error", "code": "stream_broken"}});
    sse::frame(None, &v.to_string())
}

/// An error body in OpenAI's shape.
pub fn error_body(message: &str, kind: &str, code: &str, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_objects_are_found_without_parsing() {
        assert!(has_usage_object(
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#
        ));
        assert!(has_usage_object(r#"{"usage" : {"a":1}}"#));
        assert!(!has_usage_object(
            r#"{"choices":[{"delta":{"content":"usage"}}],"usage":null}"#
        ));
        assert!(!has_usage_object(
            r#"{"choices":[{"delta":{"content":"\"usage\" is"}}]}"#
        ));
    }

    #[test]
    fn usage_is_forced_and_its_chunk_dropped_unless_asked() {
        let mut body = json!({"model": "fast", "stream": true, "messages": []});
        assert!(!wants_usage(&body));
        prepare(&mut body, "gpt-4o-mini");
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["stream_options"]["include_usage"], true);

        let content = Event {
            event: None,
            data: r#"{"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#.into(),
        };
        let usage = Event {
            event: None,
            data: r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#.into(),
        };
        let done = Event {
            event: None,
            data: "[DONE]".into(),
        };
        for asked in [false, true] {
            let mut s = PassStream::new(asked);
            let mut out = BytesMut::new();
            for e in [&content, &usage, &done] {
                s.event(e, &mut out);
            }
            let text = String::from_utf8(out.to_vec()).unwrap();
            assert_eq!(text.contains("prompt_tokens"), asked, "{text}");
            assert!(text.contains("\"hi\"") && text.ends_with("data: [DONE]\n\n"));
            assert_eq!(s.usage.unwrap().input, 3);
            assert!(s.done && s.content_seen);
        }
    }
}
