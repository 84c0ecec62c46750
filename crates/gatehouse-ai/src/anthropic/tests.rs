use super::*;
use crate::sse::{Event, Parser};
use bytes::BytesMut;
use serde_json::Value;

fn events(text: &str) -> Vec<Event> {
    let mut p = Parser::default();
    let mut out = Vec::new();
    p.feed(text.as_bytes(), &mut out).unwrap();
    p.finish(&mut out);
    out
}

#[test]
fn openai_request_becomes_messages() {
    let body = json!({
        "model": "claude", "stop": "END", "tool_choice": "required", "parallel_tool_calls": false,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
            {"role": "assistant", "content": null,
             "thinking_blocks": [{"type": "thinking", "thinking": "hmm", "signature": "sig"}],
             "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"q\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "look", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "call_2", "content": "a dog"}],
        "tools": [{"type": "function", "function": {"name": "look", "description": "looks", "parameters": {"type": "object"}}}],
    });
    let r = request_from_openai(&body, "claude-sonnet-4-20250514").unwrap();
    assert_eq!(r["model"], "claude-sonnet-4-20250514");
    assert_eq!(r["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(r["system"][0]["text"], "be brief");
    assert_eq!(r["stop_sequences"], json!(["END"]));
    let m = r["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3, "{m:#?}");
    assert_eq!(
        m[0]["content"][1]["source"],
        json!({"type": "base64", "media_type": "image/png", "data": "iVBO"})
    );
    assert_eq!(m[1]["content"][0]["signature"], "sig", "thinking first");
    assert_eq!(m[1]["content"][1]["input"], json!({"q": 1}));
    assert_eq!(m[1]["content"][2]["input"], json!({}));
    assert_eq!(
        m[2]["content"].as_array().unwrap().len(),
        2,
        "tool results merged"
    );
    assert_eq!(m[2]["content"][1]["tool_use_id"], "call_2");
    assert_eq!(r["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(
        r["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
}

#[test]
fn bad_requests_name_the_field() {
    let e = request_from_openai(&json!({"messages": [{"content": "x"}]}), "m").unwrap_err();
    assert_eq!(e.field, "messages[0].role");
    let e = request_from_openai(
        &json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}]}),
        "m",
    )
    .unwrap_err();
    assert_eq!(e.field, "messages[0].tool_calls[0].function.arguments");
    let e = request_from_openai(&json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}), "m").unwrap_err();
    assert_eq!(e.field, "messages[0].content[0].image_url.url");
    assert_eq!(
        request_from_openai(&json!({}), "m").unwrap_err().field,
        "messages"
    );
    assert_eq!(
        request_to_openai(&json!({"messages": []}), "m")
            .unwrap_err()
            .field,
        "max_tokens"
    );
}

#[test]
fn anthropic_answer_becomes_a_completion() {
    let resp = json!({"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "tool_use",
        "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "x"}}],
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 5}});
    let r = response_to_openai(&resp, "claude");
    assert_eq!(r["model"], "claude");
    assert_eq!(r["choices"][0]["finish_reason"], "tool_calls");
    let m = &r["choices"][0]["message"];
    assert_eq!(m["content"], "Let me look.");
    assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"q\":\"x\"}");
    assert_eq!(m["thinking_blocks"][0]["signature"], "s");
    assert_eq!(r["usage"]["prompt_tokens"], 15);
    assert_eq!(r["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
}

const ANTHROPIC_STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"weather\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[test]
fn anthropic_stream_becomes_chunks() {
    for include_usage in [false, true] {
        let mut s = ToOpenAiStream::new("claude", include_usage);
        let mut out = BytesMut::new();
        for e in events(ANTHROPIC_STREAM) {
            s.event(&e, &mut out);
        }
        let chunks = events(std::str::from_utf8(&out).unwrap());
        assert_eq!(chunks.last().unwrap().data, "[DONE]");
        let parsed: Vec<Value> = chunks[..chunks.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect();
        let text: String = parsed
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(text, "Checking");
        let args: String = parsed
            .iter()
            .filter_map(|c| {
                c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"city": "Paris"})
        );
        let first_call = parsed
            .iter()
            .find_map(|c| c.pointer("/choices/0/delta/tool_calls/0"))
            .unwrap();
        assert_eq!(
            (first_call["id"].as_str(), first_call["index"].as_u64()),
            (Some("toolu_9"), Some(0))
        );
        assert!(parsed
            .iter()
            .any(|c| c.pointer("/choices/0/finish_reason") == Some(&json!("tool_calls"))));
        let usage_chunk = parsed.iter().find(|c| c.get("usage").is_some());
        assert_eq!(usage_chunk.is_some(), include_usage);
        if let Some(u) = usage_chunk {
            assert_eq!(u["usage"]["prompt_tokens"], 25);
            assert_eq!(u["usage"]["completion_tokens"], 42);
        }
        let u = s.usage.unwrap();
        assert_eq!((u.input, u.output), (25, 42));
        assert!(s.done && s.content_seen);
    }
}

#[test]
fn anthropic_request_and_answer_over_openai() {
    let body = json!({"model": "m", "max_tokens": 100, "system": [{"type": "text", "text": "sys"}], "stream": true,
        "tools": [{"name": "look", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "look"},
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "id": "t1", "name": "look", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "seen"}]},
                                         {"type": "text", "text": "and?"}]}]});
    let r = request_to_openai(&body, "gpt-4o").unwrap();
    let m = r["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "system", "content": "sys"}));
    assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "t1", "content": "seen"})
    );
    assert_eq!(m[4], json!({"role": "user", "content": "and?"}));
    assert_eq!(r["stream_options"]["include_usage"], true);
    assert_eq!(r["tool_choice"]["function"]["name"], "look");

    let resp = json!({"id": "chatcmpl-7", "choices": [{"index": 0, "finish_reason": "length",
        "message": {"role": "assistant", "content": "partial"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 4}}});
    let a = response_from_openai(&resp, "m");
    assert_eq!(a["id"], "msg_7");
    assert_eq!(a["stop_reason"], "max_tokens");
    assert_eq!(a["content"][0]["text"], "partial");
    assert_eq!(a["usage"]["input_tokens"], 5);
    assert_eq!(a["usage"]["cache_read_input_tokens"], 4);
}

#[test]
fn openai_stream_becomes_anthropic_events() {
    let chunks = [
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"lo"}}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"x\":"}}]}}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"2}"}}]}}]}"#,
        r#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7}}"#,
        "[DONE]",
    ];
    let mut s = FromOpenAiStream::new("m");
    let mut out = BytesMut::new();
    for c in chunks {
        s.event(
            &Event {
                event: None,
                data: c.into(),
            },
            &mut out,
        );
    }
    let evs = events(std::str::from_utf8(&out).unwrap());
    let kinds: Vec<&str> = evs.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let delta: Value = serde_json::from_str(&evs[9].data).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 7);
    let tool: Value = serde_json::from_str(&evs[5].data).unwrap();
    assert_eq!(tool["content_block"]["id"], "call_1");
    assert_eq!(tool["index"], 1);
    assert_eq!(s.usage.unwrap().input, 11);
}
