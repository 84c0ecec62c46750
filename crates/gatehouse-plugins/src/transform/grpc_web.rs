//! `grpc-web`: lets browser gRPC-Web clients (`application/grpc-web`, `+proto`, and the
//! base64 `application/grpc-web-text` forms, over HTTP/1.1 or HTTP/2) reach gRPC upstreams.
//! The request goes upstream as `application/grpc` with `te: trailers` (a `-text` body
//! decoded); the answer comes back as gRPC-Web: messages passed through as they stream, the
//! trailers (`grpc-status`, `grpc-message`, metadata) turned into the final frame the
//! protocol defines (flag `0x80`), everything base64 for `-text`. Requests that are not
//! gRPC-Web pass untouched.

use std::sync::Arc;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use gatehouse_proxy::plugin::{BuildCtx, Factory, Flow, Plugin, RequestCtx, StreamFilter};
use http::header::{self, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::config;

/// Settings of `grpc-web` (none yet: the translation follows the protocol).
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcWebConfig {}

/// The `grpc-web` factory.
pub struct GrpcWeb;

struct Compiled;

/// A gRPC-Web call in progress (kept in the request's extensions).
#[derive(Clone)]
struct Call {
    /// `-text`: bodies are base64 both ways.
    text: bool,
    /// The content type the client sent, to answer with.
    content_type: HeaderValue,
}

impl Factory for GrpcWeb {
    fn name(&self) -> &'static str {
        "grpc-web"
    }
    fn priority(&self) -> i32 {
        // Before authentication: auth plugins see the request as gRPC.
        3000
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<GrpcWebConfig>(v, |_| Vec::new())
    }
    fn build(&self, v: &Value, _ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let _: GrpcWebConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        Ok(Arc::new(Compiled))
    }
    fn schema(&self) -> Value {
        config::schema::<GrpcWebConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<GrpcWebConfig>(config)
    }
}

/// The gRPC-Web call a content type names, if it is one.
fn call_of(ct: &HeaderValue) -> Option<Call> {
    let v = ct.to_str().ok()?.trim();
    let rest = v.strip_prefix("application/grpc-web")?;
    let (text, suffix) = match rest.strip_prefix("-text") {
        Some(s) => (true, s),
        None => (false, rest),
    };
    if !(suffix.is_empty() || suffix.starts_with('+')) {
        return None;
    }
    Some(Call {
        text,
        content_type: ct.clone(),
    })
}

/// Decodes a `-text` body: base64 chunks, each possibly padded, one after another.
fn decode_text(b: &[u8]) -> Option<Bytes> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(b.len() * 3 / 4);
    let clean: Vec<u8> = b
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let mut start = 0;
    // A padded chunk ends at '=' (one or two); decode chunk by chunk.
    let mut i = 0;
    while i < clean.len() {
        if clean[i] == b'=' {
            let mut end = i + 1;
            if end < clean.len() && clean[end] == b'=' {
                end += 1;
            }
            out.extend(engine.decode(&clean[start..end]).ok()?);
            start = end;
            i = end;
            continue;
        }
        i += 1;
    }
    if start < clean.len() {
        out.extend(engine.decode(&clean[start..]).ok()?);
    }
    Some(out.into())
}

impl Plugin for Compiled {
    fn access(&self, ctx: &mut RequestCtx, req: &mut http::request::Parts) -> Flow {
        let Some(call) = req.headers.get(header::CONTENT_TYPE).and_then(call_of) else {
            return Flow::Continue;
        };
        let suffix = call
            .content_type
            .to_str()
            .ok()
            .and_then(|v| v.split_once('+').map(|(_, s)| s.to_string()));
        let grpc = match suffix {
            Some(s) => HeaderValue::from_str(&format!("application/grpc+{s}"))
                .unwrap_or(HeaderValue::from_static("application/grpc")),
            None => HeaderValue::from_static("application/grpc"),
        };
        req.headers.insert(header::CONTENT_TYPE, grpc);
        req.headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
        req.headers.remove(header::CONTENT_LENGTH);
        req.headers.remove("x-grpc-web");
        ctx.extensions.insert(call);
        Flow::Continue
    }

    fn wants_request_body(&self) -> bool {
        true
    }

    fn request_body(
        &self,
        ctx: &mut RequestCtx,
        _req: &mut http::request::Parts,
        body: Bytes,
    ) -> Result<Bytes, Flow> {
        match ctx.extensions.get::<Call>() {
            Some(c) if c.text => decode_text(&body).ok_or_else(|| {
                ctx.reject(
                    http::StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the grpc-web-text body is not base64",
                )
            }),
            _ => Ok(body),
        }
    }

    fn response(&self, ctx: &mut RequestCtx, resp: &mut http::response::Parts) {
        if let Some(c) = ctx.extensions.get::<Call>() {
            resp.headers
                .insert(header::CONTENT_TYPE, c.content_type.clone());
            resp.headers.remove(header::CONTENT_LENGTH);
        }
    }

    fn stream_response(
        &self,
        ctx: &RequestCtx,
        _resp: &http::response::Parts,
    ) -> Option<Box<dyn StreamFilter>> {
        let c = ctx.extensions.get::<Call>()?;
        Some(Box::new(Frames { text: c.text }))
    }
}

/// Turns a gRPC response stream into gRPC-Web.
struct Frames {
    text: bool,
}

impl Frames {
    fn out(&self, b: Bytes) -> Bytes {
        if self.text {
            base64::engine::general_purpose::STANDARD
                .encode(&b)
                .into_bytes()
                .into()
        } else {
            b
        }
    }
}

impl StreamFilter for Frames {
    fn data(&mut self, data: Bytes) -> Bytes {
        self.out(data)
    }

    fn trailers(&mut self, trailers: &http::HeaderMap) -> Option<Bytes> {
        let mut block = BytesMut::new();
        for (k, v) in trailers {
            block.put_slice(k.as_str().as_bytes());
            block.put_slice(b": ");
            block.put_slice(v.as_bytes());
            block.put_slice(b"\r\n");
        }
        let mut frame = BytesMut::with_capacity(5 + block.len());
        frame.put_u8(0x80);
        frame.put_u32(block.len() as u32);
        frame.put_slice(&block);
        Some(self.out(frame.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for (ct, text) in [
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/grpc-web-text", true),
            ("application/grpc-web-text+proto", true),
        ] {
            let c = call_of(&HeaderValue::from_static(ct)).unwrap();
            assert_eq!(c.text, text, "{ct}");
        }
        assert!(call_of(&HeaderValue::from_static("application/grpc")).is_none());
        assert!(call_of(&HeaderValue::from_static("application/grpc-webx")).is_none());
    }

    #[test]
    fn text_bodies_in_padded_chunks() {
        let e = base64::engine::general_purpose::STANDARD;
        let joined = format!("{}{}", e.encode(b"ab"), e.encode(b"cde"));
        assert_eq!(
            decode_text(joined.as_bytes()).unwrap(),
            Bytes::from_static(b"abcde")
        );
        assert!(decode_text(b"!!!").is_none());
    }

    #[test]
    fn trailers_become_the_final_frame() {
        let mut f = Frames { text: false };
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let b = f.trailers(&t).unwrap();
        assert_eq!(b[0], 0x80);
        assert_eq!(&b[5..], b"grpc-status: 0\r\n");
        assert_eq!(
            u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize,
            b.len() - 5
        );
    }
}
