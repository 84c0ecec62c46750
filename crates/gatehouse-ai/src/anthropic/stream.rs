//! Streams, one event at a time: Anthropic → OpenAI chunks, OpenAI chunks → Anthropic
//! events, and an Anthropic stream passed through.

use bytes::BytesMut;
use serde_json::{json, Value};

use super::{finish_reason, stop_reason, unix_now};
use crate::sse::{self, Event};
use crate::Usage;

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
    /// The chunk prefix (see `prefix`).
    prefix: String,
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
            prefix: String::new(),
        }
    }

    /// `{"id":…,"object":"chat.completion.chunk",…,"choices":[{"index":0,"delta":` — the
    /// same for every chunk of the stream, written once.
    fn ensure_prefix(&mut self) {
        if self.prefix.is_empty() {
            let head = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model});
            let head = head.to_string();
            self.prefix = format!(
                "data: {},\"choices\":[{{\"index\":0,\"delta\":",
                &head[..head.len() - 1]
            );
        }
    }

    fn chunk(&mut self, out: &mut BytesMut, delta: Value, finish: Option<&str>) {
        let finish = match finish {
            Some(f) => Value::String(f.to_string()).to_string(),
            None => "null".to_string(),
        };
        self.ensure_prefix();
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(delta.to_string().as_bytes());
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        out.extend_from_slice(finish.as_bytes());
        out.extend_from_slice(b"}]}\n\n");
    }

    /// The hot path: a text delta, parsed without a JSON tree and written around the
    /// ready prefix. `false` when the event is something else.
    fn text_delta(&mut self, ev: &Event, out: &mut BytesMut) -> bool {
        #[derive(serde::Deserialize)]
        struct Delta<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            text: Option<std::borrow::Cow<'a, str>>,
        }
        #[derive(serde::Deserialize)]
        struct DeltaEvent<'a> {
            #[serde(borrow)]
            delta: Delta<'a>,
        }
        if ev.event.as_deref() != Some("content_block_delta") || !ev.data.contains("\"text_delta\"")
        {
            return false;
        }
        let Ok(e) = serde_json::from_str::<DeltaEvent>(&ev.data) else {
            return false;
        };
        let Some(text) = e.delta.text.filter(|_| e.delta.kind == "text_delta") else {
            return false;
        };
        self.content_seen = true;
        self.ensure_prefix();
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(b"{\"content\":");
        let mut w = bytes::BufMut::writer(std::mem::take(out));
        let _ = serde_json::to_writer(&mut w, &*text);
        *out = w.into_inner();
        out.extend_from_slice(b"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
        true
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
        if self.text_delta(ev, out) {
            return;
        }
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
