//! A mock LLM provider speaking OpenAI's Chat Completions and Embeddings and Anthropic's
//! Messages wire formats as their references document them (whole answers, SSE streams,
//! tool calls with streamed argument deltas, usage), plus the failures a gateway must
//! survive. What it does is chosen by the upstream model name:
//!
//! - anything: answers `echo: <last user text>`; with tools and a user text that mentions
//!   `weather`, a call of the first tool with `{"city":"Paris"}` instead
//! - `…-429` / `…-500`: that status with a JSON error (`retry-after: 1` on 429)
//! - `…-html`: 502 with an HTML page; `…-garbage`: 200 with a body that is not JSON
//! - `…-slow`: waits 3 s before answering; `…-slowstream`: streams one word per 300 ms
//! - `…-break`: a stream that stops after two events without finishing
//! - `…-nousage`: no usage in answers or streams
//!
//! and by the key: `bad-key` gets 401, `limited-key` 429. Usage: a prompt token per word of
//! every message text, a completion token per word of the answer. Every request is recorded
//! (path, headers, body) for assertions.
//!
//! The same behaviours answer in Gemini's and Bedrock Converse's formats on their paths,
//! with their authentication checked ([`cloud`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

pub mod cloud;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// What the handlers share.
#[derive(Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    abandoned: Arc<std::sync::atomic::AtomicUsize>,
    /// Public key (PEM) that verifies service account assertions at `/token`.
    google_key: Mutex<Option<String>>,
    /// Access tokens issued at `/token`.
    tokens: Mutex<Vec<String>>,
}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path.
    pub path: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body as JSON (Null if not JSON).
    pub body: Value,
}

/// A running mock provider; stops when dropped.
pub struct MockLlm {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Streams whose client went away before the end.
    pub abandoned: Arc<std::sync::atomic::AtomicUsize>,
    shared: Arc<Shared>,
    _server: crate::server_thread::ServerThread,
}

impl MockLlm {
    /// Starts a mock provider on 127.0.0.1.
    pub fn start() -> MockLlm {
        MockLlm::serve(None)
    }

    /// Starts it over HTTPS with `cert`/`key` (PEM).
    pub fn start_tls(cert: &str, key: &str) -> MockLlm {
        let cfg = crate::server_thread::tls_config(cert, key, None);
        MockLlm::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))))
    }

    fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> MockLlm {
        let shared: Arc<Shared> = Arc::default();
        let s2 = shared.clone();
        let (addr, server) = crate::server_thread::accept_loop("mock llm", move |stream| {
            let (shared, tls) = (s2.clone(), tls.clone());
            async move {
                let svc = service_fn(move |req| handle(shared.clone(), req));
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                    }
                }
            }
        });
        MockLlm {
            addr,
            seen: shared.seen.clone(),
            abandoned: shared.abandoned.clone(),
            shared,
            _server: server,
        }
    }

    /// Verifies service account assertions at `/token` with this RSA public key (PEM).
    pub fn expect_google_key(&self, public_pem: &str) {
        *self.shared.google_key.lock().expect("key") = Some(public_pem.to_string());
    }

    /// Access tokens issued at `/token` so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.tokens.lock().expect("tokens").clone()
    }

    /// `http://127.0.0.1:PORT/v1`, a provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `https://localhost:PORT/v1` (for a mock started with [`MockLlm::start_tls`] and a
    /// certificate for `localhost`).
    pub fn tls_base_url(&self) -> String {
        format!("https://localhost:{}/v1", self.addr.port())
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("response")
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Every text of the request's messages (and Anthropic's `system`).
fn texts(body: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => {
                for k in ["text", "content"] {
                    if let Some(x) = o.get(k) {
                        walk(x, out);
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(s) = body.get("system") {
        walk(s, &mut out);
    }
    for m in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(c) = m.get("content") {
            walk(c, &mut out);
        }
    }
    out
}

/// The text of the last message (a tool's result reads `tool said …`).
fn last_user_text(body: &Value) -> String {
    let Some(m) = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
    else {
        return String::new();
    };
    if m["role"] == "tool" {
        return format!("tool said {}", m["content"]);
    }
    let mut out = Vec::new();
    match &m["content"] {
        Value::String(s) => out.push(s.clone()),
        Value::Array(parts) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    out.push(t.to_string());
                }
                if p["type"] == "tool_result" {
                    out.push(format!("tool said {}", p["content"]));
                }
            }
        }
        _ => {}
    }
    out.join(" ")
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let abandoned = shared.abandoned.clone();
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let raw: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let path = parts.uri.path().to_string();
    shared.seen.lock().expect("seen").push(Seen {
        path: path.clone(),
        headers: parts.headers.clone(),
        body: raw.clone(),
    });
    let anthropic = path.ends_with("/messages");
    let routed = cloud::route(&path);
    let cloud = routed.as_ref().map(|(c, _)| (*c, ()));
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    };
    let mut key = header("x-api-key")
        .or_else(|| header("x-goog-api-key"))
        .or_else(|| header("authorization"))
        .unwrap_or_default()
        .trim_start_matches("Bearer ")
        .to_string();
    let err = |status: StatusCode, msg: &str| -> Response<Body> {
        let (body, extra) = match cloud {
            Some((c, _)) => cloud::error(c, status, msg),
            None if anthropic => (
                json!({"type": "error", "error": {"type": "api_error", "message": msg}})
                    .to_string(),
                vec![],
            ),
            None => (
                json!({"error": {"message": msg, "type": "api_error", "code": null}}).to_string(),
                vec![],
            ),
        };
        let mut r = full(status, "application/json", body);
        for (n, v) in extra {
            if let Ok(v) = http::HeaderValue::from_str(&v) {
                r.headers_mut().insert(n, v);
            }
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("1"));
        }
        r
    };
    // The clouds' own faces: authentication, then their body in the shape read below.
    let v = match cloud {
        None => raw,
        Some((cloud::Cloud::Token, _)) => {
            let pem = shared.google_key.lock().expect("key").clone();
            let mut issued = shared.tokens.lock().expect("tokens");
            return Ok(match cloud::token(&bytes, pem.as_deref(), &mut issued) {
                Ok(t) => full(StatusCode::OK, "application/json", t.to_string()),
                Err(e) => full(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    json!({"error": "invalid_grant", "error_description": e}).to_string(),
                ),
            });
        }
        Some((c, ())) => {
            let model = routed.as_ref().map_or("", |(_, m)| m.as_str());
            match c {
                cloud::Cloud::Bedrock { .. } => match cloud::check_aws(&parts, &bytes) {
                    Ok(k) => key = k,
                    Err(e) => return Ok(err(StatusCode::FORBIDDEN, &e)),
                },
                cloud::Cloud::Gemini { vertex: true, .. } => {
                    let known = shared.tokens.lock().expect("tokens").contains(&key);
                    if !known && !key.starts_with("ya29.static") {
                        return Ok(err(
                            StatusCode::UNAUTHORIZED,
                            "Request had invalid authentication credentials.",
                        ));
                    }
                }
                _ => {}
            }
            if c == cloud::Cloud::GeminiEmbed {
                return Ok(full(
                    StatusCode::OK,
                    "application/json",
                    cloud::embeddings(&raw).to_string(),
                ));
            }
            match cloud::normalize(c, model, &raw) {
                Ok(n) => n,
                Err(e) => return Ok(err(StatusCode::BAD_REQUEST, &e)),
            }
        }
    };
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if key == "bad-key" {
        return Ok(err(StatusCode::UNAUTHORIZED, "invalid api key"));
    }
    if key == "limited-key" || model.ends_with("-429") {
        return Ok(err(StatusCode::TOO_MANY_REQUESTS, "rate limited"));
    }
    if model.ends_with("-500") {
        return Ok(err(StatusCode::INTERNAL_SERVER_ERROR, "server exploded"));
    }
    if model.ends_with("-html") {
        return Ok(full(
            StatusCode::BAD_GATEWAY,
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        ));
    }
    if model.ends_with("-garbage") {
        return Ok(full(
            StatusCode::OK,
            "application/json",
            "this is {not json",
        ));
    }
    if model.ends_with("-slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if path.ends_with("/embeddings") {
        let inputs: Vec<String> = match &v["input"] {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect(),
            _ => vec![],
        };
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": [s.len() as f64, 0.5, -0.25]}))
            .collect();
        let n: u64 = inputs.iter().map(|s| words(s)).sum();
        let body = json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": n, "total_tokens": n}});
        return Ok(full(StatusCode::OK, "application/json", body.to_string()));
    }
    let prompt_tokens: u64 = texts(&v).iter().map(|t| words(t)).sum();
    let user = last_user_text(&v);
    let tool = v
        .get("tools")
        .and_then(Value::as_array)
        .and_then(|t| t.first())
        .filter(|_| user.contains("weather") && !user.contains("tool said"))
        .map(|t| {
            t.pointer("/function/name")
                .or_else(|| t.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("tool")
                .to_string()
        });
    let reply = format!("echo: {user}");
    let completion_tokens = if tool.is_some() { 5 } else { words(&reply) };
    let usage = !model.ends_with("-nousage");
    let stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if let (Some((c, _)), false) = (cloud, stream) {
        let a = cloud::Answer {
            reply: &reply,
            tool: tool.as_deref(),
            prompt_tokens,
            completion_tokens,
            usage,
        };
        return Ok(full(
            StatusCode::OK,
            "application/json",
            cloud::whole(c, &a).to_string(),
        ));
    }
    if !stream {
        let body = if anthropic {
            let content = match &tool {
                Some(name) => json!([{"type": "text", "text": "Let me check."},
                    {"type": "tool_use", "id": "toolu_01", "name": name, "input": {"city": "Paris"}}]),
                None => json!([{"type": "text", "text": reply}]),
            };
            let mut b = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null});
            if usage {
                b["usage"] = json!({"input_tokens": prompt_tokens, "output_tokens": completion_tokens,
                    "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0});
            }
            b
        } else {
            let message = match &tool {
                Some(name) => json!({"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_01", "type": "function", "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}}]}),
                None => json!({"role": "assistant", "content": reply}),
            };
            let mut b = json!({"id": "chatcmpl-01", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": null,
                    "finish_reason": if tool.is_some() { "tool_calls" } else { "stop" }}]});
            if usage {
                b["usage"] = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens});
            }
            b
        };
        return Ok(full(StatusCode::OK, "application/json", body.to_string()));
    }
    let events: Vec<Bytes> = if let Some((c, _)) = cloud {
        let a = cloud::Answer {
            reply: &reply,
            tool: tool.as_deref(),
            prompt_tokens,
            completion_tokens,
            usage,
        };
        cloud::stream(c, &a)
    } else if anthropic {
        anthropic_events(
            &model,
            &reply,
            tool.as_deref(),
            prompt_tokens,
            completion_tokens,
            usage,
        )
        .into_iter()
        .map(Bytes::from)
        .collect()
    } else {
        let include = v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        openai_events(
            &model,
            &reply,
            tool.as_deref(),
            prompt_tokens,
            completion_tokens,
            usage && include,
        )
        .into_iter()
        .map(Bytes::from)
        .collect()
    };
    let gap = if model.ends_with("-slowstream") {
        Duration::from_millis(300)
    } else {
        Duration::ZERO
    };
    let broken = model.ends_with("-break");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        for (i, e) in events.into_iter().enumerate() {
            if broken && i == 2 {
                let _ = tx
                    .send(Err(std::io::Error::other("mock broke the stream")))
                    .await;
                return;
            }
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            if tx.send(Ok(Frame::data(e))).await.is_err() {
                abandoned.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    let content_type = match cloud {
        Some((cloud::Cloud::Bedrock { .. }, _)) => "application/vnd.amazon.eventstream",
        _ => "text/event-stream",
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(body)
        .expect("response"))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn openai_events(
    model: &str,
    reply: &str,
    tool: Option<&str>,
    pt: u64,
    ct: u64,
    usage: bool,
) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-01", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        )
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    match tool {
        Some(name) => {
            out.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_01", "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            for part in ["{\"city\"", ":\"Par", "is\"}"] {
                out.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}),
                    Value::Null,
                ));
            }
            out.push(chunk(json!({}), json!("tool_calls")));
        }
        None => {
            for (i, w) in reply.split(' ').enumerate() {
                let t = if i == 0 {
                    w.to_string()
                } else {
                    format!(" {w}")
                };
                out.push(chunk(json!({"content": t}), Value::Null));
            }
            out.push(chunk(json!({}), json!("stop")));
        }
    }
    if usage {
        out.push(format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-01", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                "choices": [], "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}})
        ));
    }
    out.push("data: [DONE]\n\n".into());
    out
}

fn anthropic_events(
    model: &str,
    reply: &str,
    tool: Option<&str>,
    pt: u64,
    ct: u64,
    usage: bool,
) -> Vec<String> {
    let ev = |kind: &str, v: Value| format!("event: {kind}\ndata: {v}\n\n");
    let u = if usage {
        json!({"input_tokens": pt, "output_tokens": 1})
    } else {
        json!({})
    };
    let mut out = vec![ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
            "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": u}}),
    )];
    out.push(ev("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
    out.push(ev("ping", json!({"type": "ping"})));
    let text = if tool.is_some() {
        "Let me check."
    } else {
        reply
    };
    for (i, w) in text.split(' ').enumerate() {
        let t = if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        };
        out.push(ev("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})));
    }
    out.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    if let Some(name) = tool {
        out.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_01", "name": name, "input": {}}}),
        ));
        for part in ["{\"city\"", ": \"Par", "is\"}"] {
            out.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        out.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    let du = if usage {
        json!({"output_tokens": ct})
    } else {
        json!({})
    };
    out.push(ev("message_delta", json!({"type": "message_delta",
        "delta": {"stop_reason": if tool.is_some() { "tool_use" } else { "end_turn" }, "stop_sequence": null}, "usage": du})));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    out
}
