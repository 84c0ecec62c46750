use bytes::BytesMut;
use serde_json::{json, Value};

use super::*;
use crate::aws;
use crate::sse::{Event, Parser};

fn chunks(out: &BytesMut) -> Vec<Value> {
    let mut p = Parser::default();
    let mut evs = Vec::new();
    p.feed(out, &mut evs).unwrap();
    evs.into_iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

#[test]
fn requests_carry_system_images_tools_and_thinking() {
    let body = json!({
        "max_tokens": 100, "temperature": 1.5, "stop": ["END"], "reasoning_effort": "medium",
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "see"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}]},
            {"role": "assistant", "content": "checking",
             "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "SIG"}],
             "tool_calls": [{"id": "tu1", "type": "function", "function": {"name": "w", "arguments": "{\"c\":1}"}}]},
            {"role": "tool", "tool_call_id": "tu1", "content": "{\"t\":2}"},
            {"role": "user", "content": "thanks"}],
        "tools": [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
    });
    let r = request_from_openai(&body, "anthropic.claude-sonnet-4-v1:0").unwrap();
    assert_eq!(r["system"][0], json!({"text": "be brief"}));
    assert!(r["system"][1]["text"].as_str().unwrap().contains("JSON"));
    let m = r["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3, "{r}");
    assert_eq!(
        m[0]["content"][1]["image"],
        json!({"format": "jpeg", "source": {"bytes": "AAAA"}})
    );
    assert_eq!(
        m[1]["content"][0]["reasoningContent"]["reasoningText"]["signature"],
        "SIG"
    );
    assert_eq!(
        m[1]["content"][2]["toolUse"],
        json!({"toolUseId": "tu1", "name": "w", "input": {"c": 1}})
    );
    // The tool result and the next user text share one user turn.
    assert_eq!(
        m[2]["content"][0]["toolResult"]["content"],
        json!([{"json": {"t": 2}}])
    );
    assert_eq!(m[2]["content"][1]["text"], "thanks");
    assert_eq!(r["inferenceConfig"]["maxTokens"], 4196);
    assert!(r["inferenceConfig"].get("temperature").is_none());
    assert_eq!(r["inferenceConfig"]["stopSequences"], json!(["END"]));
    assert_eq!(
        r["additionalModelRequestFields"]["thinking"]["budget_tokens"],
        4096
    );
    assert_eq!(r["toolConfig"]["toolChoice"], json!({"any": {}}));
    assert_eq!(
        r["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
        json!({"type": "object"})
    );
    // Not Claude: no thinking fields; images by URL refused with the field named.
    let plain = request_from_openai(
        &json!({"temperature": 0.5, "reasoning_effort": "low",
        "messages": [{"role": "user", "content": "hi"}]}),
        "amazon.nova-pro-v1:0",
    )
    .unwrap();
    assert!(plain.get("additionalModelRequestFields").is_none());
    assert_eq!(plain["inferenceConfig"]["temperature"], 0.5);
    let url = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]});
    assert_eq!(
        request_from_openai(&url, "m").unwrap_err().field,
        "messages[0].content[0].image_url.url"
    );
}

#[test]
fn answers_translate() {
    let resp = json!({"output": {"message": {"role": "assistant", "content": [
        {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "SIG"}}},
        {"text": "Let me check."},
        {"toolUse": {"toolUseId": "tu1", "name": "w", "input": {"c": 1}}}]}},
        "stopReason": "tool_use",
        "usage": {"inputTokens": 10, "outputTokens": 6, "totalTokens": 16, "cacheReadInputTokens": 2}});
    let o = response_to_openai(&resp, "pub");
    let m = &o["choices"][0]["message"];
    assert_eq!(m["content"], "Let me check.");
    assert_eq!(m["tool_calls"][0]["id"], "tu1");
    assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"c\":1}");
    assert_eq!(m["thinking_blocks"][0]["signature"], "SIG");
    assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(o["usage"]["prompt_tokens"], 12);
    assert_eq!(o["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    // The thinking block goes back as it came.
    let again = request_from_openai(
        &json!({"messages": [{"role": "user", "content": "q"}, m.clone()]}),
        "m",
    )
    .unwrap();
    assert_eq!(
        again["messages"][1]["content"][0]["reasoningContent"]["reasoningText"]["text"],
        "hmm"
    );
}

#[test]
fn event_streams_translate_frame_by_frame() {
    let frames: Vec<(&str, Value)> = vec![
        ("messageStart", json!({"role": "assistant"})),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 0})),
        (
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu1", "name": "w"}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"c\""}}}),
        ),
        (
            "contentBlockDelta",
            json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": ":1}"}}}),
        ),
        ("contentBlockStop", json!({"contentBlockIndex": 1})),
        ("messageStop", json!({"stopReason": "tool_use"})),
        (
            "metadata",
            json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7}, "metrics": {"latencyMs": 5}}),
        ),
    ];
    let mut bytes = Vec::new();
    for (kind, v) in &frames {
        bytes.extend(aws::frame(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            v.to_string().as_bytes(),
        ));
    }
    let mut p = aws::Parser::default();
    let mut evs = Vec::new();
    // Split in odd places: frames arrive however TCP cuts them.
    for piece in bytes.chunks(7) {
        p.feed(piece, &mut evs).unwrap();
    }
    let mut s = ToOpenAiStream::new("pub", true);
    let mut out = BytesMut::new();
    for e in &evs {
        s.event(e, &mut out);
    }
    assert!(s.done && s.content_seen);
    assert_eq!(s.usage.unwrap().total(), 7);
    let c = chunks(&out);
    assert_eq!(c[1]["choices"][0]["delta"]["content"], "Hi");
    assert_eq!(c[2]["choices"][0]["delta"]["tool_calls"][0]["id"], "tu1");
    assert_eq!(
        c[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
        "{\"c\""
    );
    assert_eq!(c[5]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(c[6]["usage"]["completion_tokens"], 4);
    // An exception mid-stream ends it with an error chunk.
    let mut s = ToOpenAiStream::new("pub", false);
    let mut out = BytesMut::new();
    s.event(
        &Event {
            event: Some("exception".into()),
            data: json!({"exception": "throttlingException", "message": "slow"}).to_string(),
        },
        &mut out,
    );
    assert!(s.done);
    assert_eq!(chunks(&out)[0]["error"]["code"], "throttlingException");
}
