//! What talking to AWS takes: Signature Version 4 request signing, and the event-stream
//! framing (`application/vnd.amazon.eventstream`) Bedrock's `converse-stream` answers in.
//!
//! Both are small, fixed algorithms; a gateway that signs one request shape and reads one
//! framing needs them, not an SDK.

use bytes::{Buf, BytesMut};
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::sse::Event;

/// An access key (and the session token of temporary credentials).
#[derive(Clone)]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    secret_access_key: String,
    /// STS session token.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A pool key of the form `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`; `None` for
    /// anything else (a Bedrock API key, sent as a bearer token).
    pub fn parse(key: &str) -> Option<Credentials> {
        let mut it = key.splitn(3, ':');
        let id = it.next()?.trim();
        let secret = it.next()?.trim();
        if id.is_empty() || secret.is_empty() {
            return None;
        }
        Some(Credentials {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            session_token: it
                .next()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }
}

/// One request to sign.
pub struct Request<'a> {
    /// `POST`…
    pub method: &'a str,
    /// The `Host` header as sent.
    pub host: &'a str,
    /// The path as sent (percent-encoded).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: &'a str,
    /// Other headers to sign (lowercase names).
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub body: &'a [u8],
}

/// Where and when a signature is made.
pub struct Scope<'a> {
    /// `us-east-1`…
    pub region: &'a str,
    /// `bedrock`…
    pub service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`.
    pub amz_date: &'a str,
}

/// The headers that sign `req`: `x-amz-date`, `x-amz-content-sha256`,
/// `x-amz-security-token` (temporary credentials) and `authorization`.
pub fn sign(creds: &Credentials, scope: &Scope, req: &Request) -> Vec<(HeaderName, HeaderValue)> {
    let payload = hex::encode(Sha256::digest(req.body));
    let mut headers: Vec<(&str, &str)> = req.headers.to_vec();
    headers.push(("host", req.host));
    headers.push(("x-amz-date", scope.amz_date));
    headers.push(("x-amz-content-sha256", &payload));
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token", t));
    }
    let (signed, signature) = signature(creds, scope, req, &headers, &payload);
    let date = &scope.amz_date[..scope.amz_date.len().min(8)];
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/{date}/{}/{}/aws4_request, SignedHeaders={signed}, Signature={signature}",
        creds.access_key_id, scope.region, scope.service
    );
    let mut out = Vec::new();
    let mut add = |name: &'static str, v: &str, sensitive: bool| {
        if let Ok(mut v) = HeaderValue::from_str(v) {
            v.set_sensitive(sensitive);
            out.push((HeaderName::from_static(name), v));
        }
    };
    add("x-amz-date", scope.amz_date, false);
    add("x-amz-content-sha256", &payload, false);
    if let Some(t) = &creds.session_token {
        add("x-amz-security-token", t, true);
    }
    add("authorization", &auth, true);
    out
}

/// The signed header list and the signature over `headers` (every header signed).
pub fn signature(
    creds: &Credentials,
    scope: &Scope,
    req: &Request,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    hs.sort();
    let signed = hs
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = hs.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed}\n{payload_hash}",
        req.method,
        canonical_path(req.path),
        canonical_query(req.query),
    );
    let date = &scope.amz_date[..scope.amz_date.len().min(8)];
    let cred_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{cred_scope}\n{}",
        scope.amz_date,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [scope.region, scope.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    (signed, hex::encode(hmac(&key, to_sign.as_bytes())))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Every service but S3 signs the path encoded once more than it was sent (each segment
/// URI-encoded again): a model id's `:` is sent as `%3A` and signed as `%253A`.
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k), uri_encode(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// AWS's URI encoding: everything but unreserved characters as `%XX`.
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for Unix time `secs`.
pub fn amz_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Largest event-stream message accepted (AWS's own limit is 16 MiB).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A malformed event stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A length outside the framing's bounds.
    #[error("event-stream message of {0} bytes is malformed or too large")]
    Length(usize),
    /// A checksum did not match.
    #[error("event-stream {0} checksum mismatch")]
    Checksum(&'static str),
    /// A header could not be read.
    #[error("event-stream header malformed")]
    Header,
}

/// Reads AWS event-stream messages as they arrive and turns each into an [`Event`]:
/// `event` is the `:event-type` header (`exception` for exceptions and errors, whose data
/// gets an `exception` field naming the type), `data` the JSON payload.
#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
}

impl Parser {
    /// Feeds bytes; appends the events they complete to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), FrameError> {
        self.buf.extend_from_slice(chunk);
        while self.buf.len() >= 12 {
            let total =
                u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
            let headers_len =
                u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if !(16..=MAX_MESSAGE).contains(&total) || headers_len > total - 16 {
                return Err(FrameError::Length(total));
            }
            let prelude_crc =
                u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
            if CRC32.checksum(&self.buf[..8]) != prelude_crc {
                return Err(FrameError::Checksum("prelude"));
            }
            if self.buf.len() < total {
                return Ok(());
            }
            let msg = self.buf.split_to(total);
            let crc = u32::from_be_bytes([
                msg[total - 4],
                msg[total - 3],
                msg[total - 2],
                msg[total - 1],
            ]);
            if CRC32.checksum(&msg[..total - 4]) != crc {
                return Err(FrameError::Checksum("message"));
            }
            let headers = read_headers(&msg[12..12 + headers_len])?;
            let payload = &msg[12 + headers_len..total - 4];
            out.push(event_of(&headers, payload));
        }
        Ok(())
    }
}

fn read_headers(mut b: &[u8]) -> Result<Vec<(String, String)>, FrameError> {
    let mut out = Vec::new();
    while b.has_remaining() {
        let n = usize::from(b.get_u8());
        if b.remaining() < n + 1 {
            return Err(FrameError::Header);
        }
        let name = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        let kind = b.get_u8();
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            _ => return Err(FrameError::Header),
        };
        let len = match fixed {
            Some(l) => l,
            None => {
                if b.remaining() < 2 {
                    return Err(FrameError::Header);
                }
                usize::from(b.get_u16())
            }
        };
        if b.remaining() < len {
            return Err(FrameError::Header);
        }
        if kind == 7 {
            out.push((name, String::from_utf8_lossy(&b[..len]).into_owned()));
        }
        b.advance(len);
    }
    Ok(out)
}

fn event_of(headers: &[(String, String)], payload: &[u8]) -> Event {
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let data = String::from_utf8_lossy(payload).into_owned();
    match h(":message-type") {
        Some("exception") | Some("error") => {
            let kind = h(":exception-type").or(h(":error-code")).unwrap_or("error");
            let mut v = serde_json::from_str::<Value>(&data)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(
                    || serde_json::json!({"message": h(":error-message").unwrap_or(&data)}),
                );
            v["exception"] = Value::String(kind.to_string());
            Event {
                event: Some("exception".into()),
                data: v.to_string(),
            }
        }
        _ => Event {
            event: h(":event-type").map(str::to_string),
            data,
        },
    }
}

/// One event-stream message with string headers (what AWS sends; used by tests and mocks).
pub fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut hb = Vec::new();
    for (n, v) in headers {
        hb.push(n.len() as u8);
        hb.extend_from_slice(n.as_bytes());
        hb.push(7);
        hb.extend_from_slice(&(v.len() as u16).to_be_bytes());
        hb.extend_from_slice(v.as_bytes());
    }
    let total = 12 + hb.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(hb.len() as u32).to_be_bytes());
    let prelude = CRC32.checksum(&out);
    out.extend_from_slice(&prelude.to_be_bytes());
    out.extend_from_slice(&hb);
    out.extend_from_slice(payload);
    let crc = CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Credentials {
        Credentials::parse("AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").unwrap()
    }

    /// AWS's Signature Version 4 test suite: get-vanilla and
    /// get-vanilla-query-order-key-case.
    #[test]
    fn signatures_match_the_aws_test_suite() {
        let scope = Scope {
            region: "us-east-1",
            service: "service",
            amz_date: "20150830T123600Z",
        };
        let empty = hex::encode(Sha256::digest(b""));
        for (query, want) in [
            (
                "",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "Param2=value2&Param1=value1",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            ),
        ] {
            let req = Request {
                method: "GET",
                host: "example.amazonaws.com",
                path: "/",
                query,
                headers: &[],
                body: b"",
            };
            let headers = [
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ];
            let (signed, sig) = signature(&example(), &scope, &req, &headers, &empty);
            assert_eq!(signed, "host;x-amz-date");
            assert_eq!(sig, want, "query {query:?}");
        }
    }

    #[test]
    fn bedrock_paths_are_signed_encoded_twice() {
        assert_eq!(
            canonical_path("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse"
        );
        let c = Credentials::parse("AKID:SECRET:TOKEN").unwrap();
        assert_eq!(c.session_token.as_deref(), Some("TOKEN"));
        assert!(Credentials::parse("ABSKbearerkey").is_none());
        let h = sign(
            &c,
            &Scope {
                region: "eu-west-1",
                service: "bedrock",
                amz_date: "20261202T101500Z",
            },
            &Request {
                method: "POST",
                host: "h",
                path: "/x",
                query: "",
                headers: &[("content-type", "application/json")],
                body: b"{}",
            },
        );
        let auth = h
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1
            .to_str()
            .unwrap()
            .to_string();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20261202/eu-west-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="), "{auth}");
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
    }

    #[test]
    fn crc_is_the_standard_crc32() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn frames_split_anywhere_and_exceptions_are_named() {
        let mut bytes = frame(
            &[
                (":event-type", "contentBlockDelta"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            br#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#,
        );
        bytes.extend(frame(
            &[
                (":exception-type", "throttlingException"),
                (":message-type", "exception"),
            ],
            br#"{"message":"slow down"}"#,
        ));
        for cut in 0..bytes.len() {
            let mut p = Parser::default();
            let mut out = Vec::new();
            p.feed(&bytes[..cut], &mut out).unwrap();
            p.feed(&bytes[cut..], &mut out).unwrap();
            assert_eq!(out.len(), 2, "cut {cut}");
            assert_eq!(out[0].event.as_deref(), Some("contentBlockDelta"));
            assert!(out[0].data.contains("Hi"));
            assert_eq!(out[1].event.as_deref(), Some("exception"));
            let v: Value = serde_json::from_str(&out[1].data).unwrap();
            assert_eq!(v["exception"], "throttlingException");
            assert_eq!(v["message"], "slow down");
        }
        let mut bad = frame(&[(":event-type", "x")], b"{}");
        let n = bad.len();
        bad[n - 6] ^= 1;
        assert_eq!(
            Parser::default().feed(&bad, &mut Vec::new()),
            Err(FrameError::Checksum("message"))
        );
        let mut huge = vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let crc = CRC32.checksum(&huge);
        huge.extend_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            Parser::default().feed(&huge, &mut Vec::new()),
            Err(FrameError::Length(_))
        ));
    }
}
