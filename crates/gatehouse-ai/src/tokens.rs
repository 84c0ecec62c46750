//! Token counts for calls whose provider reports no usage, and estimates for reservations
//! made before a call.
//!
//! - [`count`], [`count_request`], [`count_answer`], [`count_stream`]: OpenAI's `o200k_base`
//!   tokenizer (its current models') over the text of a request, an answer or the events
//!   a client got. Exact for those models, close for others; such usage is flagged
//!   `estimated`. The tables load once ([`warm`] loads them off the request path).
//! - [`of_text`], [`of_request`]: a fast estimate that errs high, for reservations on every
//!   call: about one token per 3.5 bytes of text, the density of English and code under
//!   OpenAI's and Anthropic's tokenizers, and one per byte for text with few ASCII letters
//!   (CJK and the like tokenize densely).

use std::sync::OnceLock;

use serde_json::Value;

/// Tokens the chat format adds per message (role and separators) and to prime the reply,
/// as OpenAI documents for its chat models.
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

fn tokenizer() -> Option<&'static tiktoken_rs::CoreBPE> {
    static BPE: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| match tiktoken_rs::o200k_base() {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "tokenizer tables could not load; token counts fall back to estimates");
            None
        }
    })
    .as_ref()
}

/// Loads the tokenizer's tables (a fraction of a second) so no request waits for them.
pub fn warm() {
    let _ = tokenizer();
}

/// Tokens of a text (the estimate if the tokenizer could not load).
pub fn count(s: &str) -> u64 {
    if s.is_empty() {
        return 0;
    }
    match tokenizer() {
        Some(b) => b.encode_ordinary(s).len() as u64,
        None => of_text(s),
    }
}

/// Prompt tokens of a request in either format: every text and tool definition, plus the
/// chat format's tokens per message; images at a flat 1,000 (their real cost depends on
/// the provider's resizing).
pub fn count_request(body: &Value) -> u64 {
    let mut n = 0;
    collect(body.get("system"), &mut n);
    let messages = body.get("messages").and_then(Value::as_array);
    if messages.is_some() {
        n += REPLY_PRIMING;
    }
    for m in messages.into_iter().flatten() {
        n += PER_MESSAGE;
        collect(m.get("content"), &mut n);
        collect(m.get("tool_calls"), &mut n);
    }
    if let Some(t) = body.get("tools") {
        n += count(&t.to_string());
    }
    for key in ["input", "prompt"] {
        collect(body.get(key), &mut n);
    }
    n
}

/// Counts the strings of a content value (images at a flat rate).
fn collect(v: Option<&Value>, n: &mut u64) {
    match v {
        Some(Value::String(s)) => *n += count(s),
        Some(Value::Array(a)) => a.iter().for_each(|x| collect(Some(x), n)),
        Some(Value::Object(o)) => {
            if matches!(
                o.get("type").and_then(Value::as_str),
                Some("image_url" | "image" | "input_image")
            ) {
                *n += 1_000;
                return;
            }
            for (k, x) in o {
                if k != "type" && k != "id" && k != "tool_use_id" && k != "cache_control" {
                    collect(Some(x), n);
                }
            }
        }
        _ => {}
    }
}

/// Completion tokens of a whole answer in either format (text, reasoning, tool calls).
pub fn count_answer(answer: &Value) -> u64 {
    let mut text = String::new();
    for c in answer
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push_openai(&mut text, &c["message"]);
    }
    for b in answer
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push_str(&mut text, b.get("text"));
        push_str(&mut text, b.get("thinking"));
        if let Some(i) = b.get("input") {
            push_str(&mut text, b.get("name"));
            text.push_str(&i.to_string());
        }
    }
    count(&text)
}

/// Completion tokens of the SSE events a client got, in either format.
pub fn count_stream(events: &[u8]) -> u64 {
    let mut parser = crate::sse::Parser::default();
    let mut evs = Vec::new();
    if parser.feed(events, &mut evs).is_err() {
        return of_text(&String::from_utf8_lossy(events));
    }
    parser.finish(&mut evs);
    let mut text = String::new();
    for e in evs {
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
            continue;
        };
        if let Some(d) = v.pointer("/choices/0/delta") {
            push_openai(&mut text, d);
        }
        if let Some(d) = v.get("delta") {
            for k in ["text", "partial_json", "thinking"] {
                push_str(&mut text, d.get(k));
            }
        }
        push_str(&mut text, v.pointer("/content_block/name"));
    }
    count(&text)
}

/// The generated text of an OpenAI message or stream delta: content, reasoning, tool calls.
fn push_openai(text: &mut String, m: &Value) {
    push_str(text, m.get("content"));
    push_str(text, m.get("reasoning_content"));
    for call in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        push_str(text, call.pointer("/function/name"));
        push_str(text, call.pointer("/function/arguments"));
    }
}

fn push_str(text: &mut String, v: Option<&Value>) {
    if let Some(s) = v.and_then(Value::as_str) {
        text.push_str(s);
    }
}

/// Estimated tokens of a text.
pub fn of_text(s: &str) -> u64 {
    if s.is_empty() {
        return 0;
    }
    let ascii = s.bytes().filter(u8::is_ascii).count();
    let other = s.chars().filter(|c| !c.is_ascii()).count();
    (ascii as u64 * 2).div_ceil(7) + other as u64
}

/// Estimated prompt tokens of a request body in either format: the text of every string
/// in it (roles, names and schemas included — they are sent to the model too) plus a few
/// per message, and a flat 1,000 per image.
pub fn of_request(body: &Value) -> u64 {
    fn walk(v: &Value, n: &mut u64) {
        match v {
            Value::String(s) => *n += of_text(s),
            Value::Array(a) => a.iter().for_each(|x| walk(x, n)),
            Value::Object(o) => {
                if matches!(
                    o.get("type").and_then(Value::as_str),
                    Some("image_url" | "image" | "input_image")
                ) {
                    *n += 1_000;
                    return;
                }
                *n += 3;
                o.values().for_each(|x| walk(x, n));
            }
            _ => {}
        }
    }
    let mut n = 0;
    for key in ["messages", "system", "tools", "input", "prompt"] {
        if let Some(v) = body.get(key) {
            walk(v, &mut n);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates_err_high_and_count_images() {
        // "Hello, world" is 3-4 tokens under real tokenizers.
        assert_eq!(of_text("Hello, world"), 4);
        assert_eq!(of_text("你好"), 2);
        let with_image = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]});
        assert!(of_request(&with_image) > 1_000);
        // The real tokenizer: o200k_base makes two tokens of "hello world".
        assert_eq!(count("hello world"), 2);
        assert!(count_request(&with_image) > 1_000);
        assert_eq!(count_request(&json!({"input": ["one two", "three"]})), 3);
        assert_eq!(
            count_request(&json!({"messages": [{"role": "user", "content": "hello world"}]})),
            2 + PER_MESSAGE + REPLY_PRIMING
        );
    }

    #[test]
    fn answers_and_streams_are_counted_in_either_format() {
        let openai = json!({"choices": [{"message": {"content": "hello world", "tool_calls": [
            {"function": {"name": "f", "arguments": "{}"}}]}}]});
        assert_eq!(count_answer(&openai), count("hello worldf{}"));
        let anthropic = json!({"content": [{"type": "text", "text": "hello world"}]});
        assert_eq!(count_answer(&anthropic), 2);
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"hello\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" world\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(count_stream(sse), 2);
        let ev = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hello world\"}}\n\n";
        assert_eq!(count_stream(ev), 2);
    }
}
