//! Whole answers: Anthropic → OpenAI, and back.

use serde_json::{json, Value};

use super::{finish_reason, stop_reason, unix_now};
use crate::Usage;

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
