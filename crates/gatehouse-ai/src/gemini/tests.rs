use bytes::BytesMut;
use serde_json::{json, Value};

use super::*;
use crate::sse::{Event, Parser};

fn data(v: Value) -> Event {
    Event {
        event: None,
        data: v.to_string(),
    }
}

/// The OpenAI chunks a stream translation wrote.
fn chunks(out: &BytesMut) -> Vec<String> {
    let mut p = Parser::default();
    let mut evs = Vec::new();
    p.feed(out, &mut evs).unwrap();
    evs.into_iter().map(|e| e.data).collect()
}

#[test]
fn requests_carry_system_images_tools_and_signatures() {
    let body = json!({
        "model": "g", "max_tokens": 100, "temperature": 0.3, "stop": "END",
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        "reasoning_effort": "low",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.webp"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0_w", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                 "extra_content": {"google": {"thought_signature": "SIG1"}}},
                {"id": "call_1_w", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_0_w", "content": "{\"temp\": 20}"},
            {"role": "tool", "tool_call_id": "call_1_w", "content": "sunny"}],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "d",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
    });
    let r = request_from_openai(&body).unwrap();
    assert_eq!(
        r["systemInstruction"],
        json!({"parts": [{"text": "be brief"}]})
    );
    let c = r["contents"].as_array().unwrap();
    assert_eq!(c.len(), 3, "{r}");
    assert_eq!(
        c[0]["parts"][1]["inlineData"],
        json!({"mimeType": "image/png", "data": "AAAA"})
    );
    assert_eq!(c[0]["parts"][2]["fileData"]["mimeType"], "image/webp");
    assert_eq!(c[1]["role"], "model");
    assert_eq!(
        c[1]["parts"][0]["functionCall"]["args"],
        json!({"city": "Paris"})
    );
    assert_eq!(c[1]["parts"][0]["thoughtSignature"], "SIG1");
    assert!(c[1]["parts"][1].get("thoughtSignature").is_none());
    // Both results in one user turn, by the name of their call.
    assert_eq!(c[2]["role"], "user");
    assert_eq!(
        c[2]["parts"][0]["functionResponse"],
        json!({"name": "weather", "response": {"temp": 20}})
    );
    assert_eq!(
        c[2]["parts"][1]["functionResponse"]["response"],
        json!({"content": "sunny"})
    );
    let g = &r["generationConfig"];
    assert_eq!(g["maxOutputTokens"], 100);
    assert_eq!(g["stopSequences"], json!(["END"]));
    assert_eq!(g["responseMimeType"], "application/json");
    assert_eq!(g["responseJsonSchema"], json!({"type": "object"}));
    assert_eq!(g["thinkingConfig"]["thinkingBudget"], 1024);
    assert_eq!(r["tools"][0]["functionDeclarations"][0]["name"], "weather");
    assert_eq!(
        r["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["weather"]})
    );
    // A history from another model gets the placeholder signature on its first call.
    let foreign = json!({"messages": [{"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "x", "content": "ok"}]});
    let r = request_from_openai(&foreign).unwrap();
    assert_eq!(
        r["contents"][1]["parts"][0]["thoughtSignature"],
        SKIP_SIGNATURE
    );
    let orphan = json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]});
    assert_eq!(
        request_from_openai(&orphan).unwrap_err().field,
        "messages[0].tool_call_id"
    );
}

#[test]
fn answers_translate_with_usage_calls_and_thoughts() {
    let resp = json!({"responseId": "r1", "candidates": [{"content": {"role": "model", "parts": [
        {"text": "thinking...", "thought": true},
        {"text": "Let me check."},
        {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "SIG"}]},
        "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4, "totalTokenCount": 18}});
    let o = response_to_openai(&resp, "public");
    assert_eq!(o["model"], "public");
    let m = &o["choices"][0]["message"];
    assert_eq!(m["content"], "Let me check.");
    assert_eq!(m["reasoning_content"], "thinking...");
    assert_eq!(
        m["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(
        m["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
        "SIG"
    );
    assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(o["usage"]["prompt_tokens"], 10);
    assert_eq!(o["usage"]["completion_tokens"], 8);
    assert_eq!(o["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    assert_eq!(
        o["usage"]["completion_tokens_details"]["reasoning_tokens"],
        3
    );
    let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}});
    assert_eq!(
        response_to_openai(&blocked, "m")["choices"][0]["finish_reason"],
        "content_filter"
    );
    let long = json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "finishReason": "MAX_TOKENS"}]});
    assert_eq!(
        response_to_openai(&long, "m")["choices"][0]["finish_reason"],
        "length"
    );
}

#[test]
fn streams_translate_event_by_event() {
    for include in [false, true] {
        let mut s = ToOpenAiStream::new("public", include);
        let mut out = BytesMut::new();
        s.event(&data(json!({"responseId": "r", "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
            "usageMetadata": {"promptTokenCount": 7}})), &mut out);
        assert!(s.content_seen && !s.done);
        s.event(&data(json!({"candidates": [{"content": {"parts": [{"text": "lo"},
            {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "S"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 4, "totalTokenCount": 11}})), &mut out);
        assert!(s.done);
        assert_eq!(s.usage.unwrap().output, 4);
        let c = chunks(&out);
        let v: Vec<Value> = c
            .iter()
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(v[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(v[0]["id"], "chatcmpl-r");
        assert_eq!(v[1]["choices"][0]["delta"]["content"], "Hel");
        assert_eq!(v[2]["choices"][0]["delta"]["content"], "lo");
        let call = &v[3]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(call["index"], 0);
        assert_eq!(call["function"]["arguments"], "{\"a\":1}");
        assert_eq!(call["extra_content"]["google"]["thought_signature"], "S");
        assert_eq!(v[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v.len(), if include { 6 } else { 5 });
        if include {
            assert_eq!(v[5]["usage"]["total_tokens"], 11);
        }
        assert_eq!(c.last().unwrap(), "[DONE]");
    }
}

#[test]
fn embeddings_translate() {
    let r = embeddings_from_openai(
        &json!({"input": ["a", "b"], "dimensions": 8}),
        "text-embedding-004",
    )
    .unwrap();
    assert_eq!(r["requests"][1]["model"], "models/text-embedding-004");
    assert_eq!(r["requests"][1]["content"]["parts"][0]["text"], "b");
    assert_eq!(r["requests"][0]["outputDimensionality"], 8);
    assert!(embeddings_from_openai(&json!({"input": [1, 2]}), "m").is_err());
    let o = embeddings_to_openai(
        &json!({"embeddings": [{"values": [0.1]}, {"values": [0.2]}]}),
        "pub",
    );
    assert_eq!(o["data"][1]["embedding"], json!([0.2]));
    assert_eq!(o["data"][1]["index"], 1);
}
