//! The mock provider's Gemini (`generateContent`, `streamGenerateContent?alt=sse`,
//! `batchEmbedContents`; Gemini API and Vertex AI paths) and Bedrock Converse
//! (`converse`, `converse-stream` in AWS event-stream frames) faces, and Google's token
//! endpoint. Requests are checked the way the real services check them:
//!
//! - Bedrock: a SigV4 `Authorization` is verified against the bytes received (host, path,
//!   query, signed headers, body) with the secret of access key [`AWS_KEY_ID`]; a bearer
//!   key is taken as a Bedrock API key. A history with `toolUse` blocks but no
//!   `toolConfig` gets 400, as from Bedrock.
//! - Gemini: a `functionCall` part sent back without its `thoughtSignature` gets 400, as
//!   from Gemini 3; Vertex paths need `Authorization: Bearer` with a token this mock issued.
//! - `/token`: the JWT assertion is verified (RS256) with the public key given to
//!   [`MockLlm::expect_google_key`](super::MockLlm::expect_google_key).

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;

/// The access key id the mock knows; its secret is [`AWS_SECRET`].
pub const AWS_KEY_ID: &str = "AKIDMOCKEXAMPLE";
/// The secret of [`AWS_KEY_ID`].
pub const AWS_SECRET: &str = "mock/secret+key";
/// The thought signature the mock puts on its function calls.
pub const SIGNATURE: &str = "c2lnLW1vY2s=";

/// Which cloud API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cloud {
    Gemini { stream: bool, vertex: bool },
    GeminiEmbed,
    Bedrock { stream: bool },
    Token,
}

/// The API of `path`, and the model it names.
pub(super) fn route(path: &str) -> Option<(Cloud, String)> {
    if path.ends_with("/token") {
        return Some((Cloud::Token, String::new()));
    }
    if let Some(rest) = path.strip_prefix("/model/") {
        let (model, op) = rest.rsplit_once('/')?;
        let model = percent_decode(model);
        return match op {
            "converse" => Some((Cloud::Bedrock { stream: false }, model)),
            "converse-stream" => Some((Cloud::Bedrock { stream: true }, model)),
            _ => None,
        };
    }
    let (head, op) = path.rsplit_once(':')?;
    let model = head.rsplit_once("/models/")?.1.to_string();
    let vertex = path.contains("/publishers/google/");
    match op {
        "generateContent" => Some((
            Cloud::Gemini {
                stream: false,
                vertex,
            },
            model,
        )),
        "streamGenerateContent" => Some((
            Cloud::Gemini {
                stream: true,
                vertex,
            },
            model,
        )),
        "batchEmbedContents" => Some((Cloud::GeminiEmbed, model)),
        _ => None,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks a Bedrock request's SigV4 signature (or takes a bearer API key): `Err` is the
/// 403 message AWS would give.
pub(super) fn check_aws(parts: &http::request::Parts, body: &[u8]) -> Result<String, String> {
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .ok_or("Missing Authentication Token")?;
    if let Some(key) = auth.strip_prefix("Bearer ") {
        return Ok(key.to_string());
    }
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or("unknown authorization scheme")?;
    let field = |name: &str| {
        rest.split(", ")
            .find_map(|p| p.strip_prefix(name))
            .unwrap_or("")
            .to_string()
    };
    let credential = rest.split(',').next().unwrap_or("");
    let mut scope = credential.split('/');
    let (id, _date, region, service) = (
        scope.next().unwrap_or(""),
        scope.next().unwrap_or(""),
        scope.next().unwrap_or(""),
        scope.next().unwrap_or(""),
    );
    if id != AWS_KEY_ID {
        return Err(format!(
            "The security token included in the request is invalid (key {id})"
        ));
    }
    let signed = field("SignedHeaders=");
    let given = field("Signature=");
    let mut headers = Vec::new();
    for name in signed.split(';') {
        let v = parts
            .headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| format!("signed header {name} was not sent"))?;
        headers.push((name, v));
    }
    let amz_date = parts
        .headers
        .get("x-amz-date")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let payload = hex::encode(sha2::Sha256::digest(body));
    let key = format!("{AWS_KEY_ID}:{AWS_SECRET}");
    let creds = gatehouse_ai::aws::Credentials::parse(&key).ok_or("mock credentials")?;
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let (_, want) = gatehouse_ai::aws::signature(
        &creds,
        &gatehouse_ai::aws::Scope {
            region,
            service,
            amz_date,
        },
        &gatehouse_ai::aws::Request {
            method: parts.method.as_str(),
            host,
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &[],
            body,
        },
        &headers,
        &payload,
    );
    if want != given || !signed.split(';').any(|h| h == "host") {
        return Err(
            "The request signature we calculated does not match the signature you provided".into(),
        );
    }
    Ok(key)
}

/// Checks an assertion sent to `/token` and issues a token.
pub(super) fn token(
    form: &[u8],
    public_key: Option<&str>,
    issued: &mut Vec<String>,
) -> Result<Value, String> {
    let form = String::from_utf8_lossy(form);
    let mut grant = "";
    let mut assertion = "";
    for pair in form.split('&') {
        match pair.split_once('=') {
            Some(("grant_type", v)) => grant = v,
            Some(("assertion", v)) => assertion = v,
            _ => {}
        }
    }
    if grant != "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" {
        return Err(format!("unsupported grant_type {grant}"));
    }
    let pem = public_key.ok_or("no service account key is known")?;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(assertion, &key, &v)
        .map_err(|e| format!("invalid_grant: {e}"))?;
    let c = data.claims;
    if c["scope"] != "https://www.googleapis.com/auth/cloud-platform"
        || !c["aud"].as_str().unwrap_or("").ends_with("/token")
    {
        return Err(format!("invalid_scope or audience: {c}"));
    }
    let t = format!("ya29.mock-{}", issued.len() + 1);
    issued.push(t.clone());
    Ok(json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"}))
}

/// A Gemini or Bedrock body in the OpenAI-like shape the mock's logic reads: `messages`
/// (with `text`/`content` to count), `tools` (first name), `stream`.
pub(super) fn normalize(cloud: Cloud, model: &str, v: &Value) -> Result<Value, String> {
    let mut messages = Vec::new();
    let mut tools = Vec::new();
    match cloud {
        Cloud::Gemini { .. } => {
            if let Some(s) = v.get("systemInstruction") {
                messages.push(json!({"role": "system", "content": s["parts"]}));
            }
            for c in v["contents"].as_array().into_iter().flatten() {
                let mut parts = Vec::new();
                for p in c["parts"].as_array().into_iter().flatten() {
                    if p.get("functionCall").is_some() && p.get("thoughtSignature").is_none() {
                        return Err(
                            "Function call is missing a thought_signature in functionCall parts."
                                .into(),
                        );
                    }
                    if let Some(r) = p.get("functionResponse") {
                        parts.push(
                            json!({"type": "tool_result", "content": r["response"].to_string()}),
                        );
                    } else if let Some(t) = p.get("text") {
                        parts.push(json!({"type": "text", "text": t}));
                    }
                }
                messages.push(json!({"role": c["role"], "content": parts}));
            }
            for d in v
                .pointer("/tools/0/functionDeclarations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                tools.push(json!({"name": d["name"]}));
            }
        }
        Cloud::Bedrock { .. } => {
            if let Some(s) = v.get("system") {
                messages.push(json!({"role": "system", "content": s}));
            }
            let mut uses_tools = false;
            for m in v["messages"].as_array().into_iter().flatten() {
                let mut parts = Vec::new();
                for b in m["content"].as_array().into_iter().flatten() {
                    if b.get("toolUse").is_some() {
                        uses_tools = true;
                    }
                    if let Some(r) = b.get("toolResult") {
                        parts.push(
                            json!({"type": "tool_result", "content": r["content"].to_string()}),
                        );
                    } else if let Some(t) = b.get("text") {
                        parts.push(json!({"type": "text", "text": t}));
                    }
                }
                messages.push(json!({"role": m["role"], "content": parts}));
            }
            if uses_tools && v.get("toolConfig").is_none() {
                return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into());
            }
            for t in v
                .pointer("/toolConfig/tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                tools.push(json!({"name": t.pointer("/toolSpec/name")}));
            }
        }
        _ => {}
    }
    let stream = matches!(
        cloud,
        Cloud::Gemini { stream: true, .. } | Cloud::Bedrock { stream: true }
    );
    Ok(json!({"model": model, "messages": messages, "tools": tools, "stream": stream}))
}

/// An error in the cloud's own shape.
pub(super) fn error(
    cloud: Cloud,
    status: StatusCode,
    msg: &str,
) -> (String, Vec<(&'static str, String)>) {
    match cloud {
        Cloud::Bedrock { .. } => {
            let kind = match status.as_u16() {
                429 => "ThrottlingException",
                403 => "AccessDeniedException",
                400 => "ValidationException",
                _ => "InternalServerException",
            };
            (
                json!({"message": msg}).to_string(),
                vec![("x-amzn-errortype", kind.to_string())],
            )
        }
        _ => {
            let s = match status.as_u16() {
                429 => "RESOURCE_EXHAUSTED",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                400 => "INVALID_ARGUMENT",
                _ => "INTERNAL",
            };
            (
                json!({"error": {"code": status.as_u16(), "message": msg, "status": s}})
                    .to_string(),
                vec![],
            )
        }
    }
}

/// What the mock answers: text (or a call of `tool`), with usage.
pub(super) struct Answer<'a> {
    pub reply: &'a str,
    pub tool: Option<&'a str>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub usage: bool,
}

/// A whole answer.
pub(super) fn whole(cloud: Cloud, a: &Answer) -> Value {
    match cloud {
        Cloud::Bedrock { .. } => {
            let content = match a.tool {
                Some(name) => json!([{"text": "Let me check."},
                    {"toolUse": {"toolUseId": "tooluse_01", "name": name, "input": {"city": "Paris"}}}]),
                None => json!([{"text": a.reply}]),
            };
            let mut b = json!({"output": {"message": {"role": "assistant", "content": content}},
                "stopReason": if a.tool.is_some() { "tool_use" } else { "end_turn" }, "metrics": {"latencyMs": 12}});
            if a.usage {
                b["usage"] = json!({"inputTokens": a.prompt_tokens, "outputTokens": a.completion_tokens,
                    "totalTokens": a.prompt_tokens + a.completion_tokens});
            }
            b
        }
        _ => {
            let parts = match a.tool {
                Some(name) => {
                    json!([{"functionCall": {"name": name, "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE}])
                }
                None => json!([{"text": a.reply}]),
            };
            let mut b = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                "modelVersion": "mock", "responseId": "resp-01"});
            if a.usage {
                b["usageMetadata"] = json!({"promptTokenCount": a.prompt_tokens, "candidatesTokenCount": a.completion_tokens,
                    "totalTokenCount": a.prompt_tokens + a.completion_tokens});
            }
            b
        }
    }
}

/// A stream's pieces, in the cloud's framing.
pub(super) fn stream(cloud: Cloud, a: &Answer) -> Vec<Bytes> {
    match cloud {
        Cloud::Bedrock { .. } => bedrock_frames(a),
        _ => gemini_events(a),
    }
}

fn gemini_events(a: &Answer) -> Vec<Bytes> {
    let ev = |v: Value| Bytes::from(format!("data: {v}\r\n\r\n"));
    let usage = |done: bool| {
        json!({"promptTokenCount": a.prompt_tokens, "candidatesTokenCount": if done { a.completion_tokens } else { 1 },
            "totalTokenCount": a.prompt_tokens + a.completion_tokens})
    };
    let mut out = Vec::new();
    let words: Vec<String> = match a.tool {
        Some(_) => Vec::new(),
        None => a
            .reply
            .split(' ')
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    w.to_string()
                } else {
                    format!(" {w}")
                }
            })
            .collect(),
    };
    for (i, w) in words.iter().enumerate() {
        let last = i + 1 == words.len();
        let mut v = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": w}]}, "index": 0}],
            "modelVersion": "mock", "responseId": "resp-01"});
        if last {
            v["candidates"][0]["finishReason"] = json!("STOP");
        }
        if a.usage {
            v["usageMetadata"] = usage(last);
        }
        out.push(ev(v));
    }
    if let Some(name) = a.tool {
        let mut v = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": name, "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE}]},
            "finishReason": "STOP", "index": 0}], "responseId": "resp-01"});
        if a.usage {
            v["usageMetadata"] = usage(true);
        }
        out.push(ev(v));
    }
    out
}

fn bedrock_frames(a: &Answer) -> Vec<Bytes> {
    let f = |kind: &str, v: Value| {
        Bytes::from(frame(
            &[
                (":event-type", kind),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            v.to_string().as_bytes(),
        ))
    };
    let mut out = vec![f("messageStart", json!({"role": "assistant"}))];
    let text = if a.tool.is_some() {
        "Let me check."
    } else {
        a.reply
    };
    for (i, w) in text.split(' ').enumerate() {
        let t = if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        };
        out.push(f(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": t}}),
        ));
    }
    out.push(f("contentBlockStop", json!({"contentBlockIndex": 0})));
    if let Some(name) = a.tool {
        out.push(f("contentBlockStart", json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_01", "name": name}}})));
        for part in ["{\"city\"", ":\"Par", "is\"}"] {
            out.push(f(
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": part}}}),
            ));
        }
        out.push(f("contentBlockStop", json!({"contentBlockIndex": 1})));
    }
    out.push(f(
        "messageStop",
        json!({"stopReason": if a.tool.is_some() { "tool_use" } else { "end_turn" }}),
    ));
    let usage = if a.usage {
        json!({"inputTokens": a.prompt_tokens, "outputTokens": a.completion_tokens, "totalTokens": a.prompt_tokens + a.completion_tokens})
    } else {
        json!({})
    };
    out.push(f(
        "metadata",
        json!({"usage": usage, "metrics": {"latencyMs": 12}}),
    ));
    out
}

/// One AWS event-stream message with string headers, written here rather than by the code
/// under test (the CRC is the standard CRC-32, as AWS documents).
fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut hb = Vec::new();
    for (n, v) in headers {
        hb.push(n.len() as u8);
        hb.extend_from_slice(n.as_bytes());
        hb.push(7);
        hb.extend_from_slice(&(v.len() as u16).to_be_bytes());
        hb.extend_from_slice(v.as_bytes());
    }
    let total = (16 + hb.len() + payload.len()) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(hb.len() as u32).to_be_bytes());
    let c = CRC.checksum(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out.extend_from_slice(&hb);
    out.extend_from_slice(payload);
    let c = CRC.checksum(&out);
    out.extend_from_slice(&c.to_be_bytes());
    out
}

/// Gemini embeddings: three numbers per input, as the OpenAI face gives.
pub(super) fn embeddings(v: &Value) -> Value {
    let list: Vec<Value> = v["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let t = r
                .pointer("/content/parts/0/text")
                .and_then(Value::as_str)
                .unwrap_or("");
            json!({"values": [t.len() as f64, 0.5, -0.25]})
        })
        .collect();
    json!({"embeddings": list})
}
