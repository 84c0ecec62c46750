//! The JSON record logging plugins write: one object per request.
//!
//! Written by hand into one `String` (no serializer, no intermediate structs): the log
//! phase runs for every request, and serde_json with float formatting measured at several
//! percent of a proxied request with file-log on.

use std::fmt::Write as _;

use std::cell::RefCell;
use std::sync::Arc;

use gatehouse_proxy::plugin::{CallRecord, ConsumerRt, RequestCtx};

/// Microseconds as milliseconds with three decimals (`12.345`).
fn push_ms(out: &mut String, micros: u128) {
    // u64 arithmetic: 128-bit division is a library call (584,000 years fit in u64 µs).
    let micros = u64::try_from(micros).unwrap_or(u64::MAX);
    let mut b = itoa::Buffer::new();
    out.push_str(b.format(micros / 1000));
    // 1000 + the fraction prints as "1xyz": its last three digits are the decimals.
    let frac = b.format(1000 + micros % 1000);
    out.push('.');
    out.push_str(frac.get(1..).unwrap_or("000"));
}

/// True when `s` has a byte JSON must escape (a control character, `"` or `\`). Looks at
/// eight bytes at a time: the log phase runs for every request.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Some byte b of x is below n (n <= 0x80) iff (x - n*ONES) & !x & HIGHS != 0; equality
    // with c is "x ^ c*ONES has a zero byte", the same test with n = 1.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or([0; 8]));
        let hit = below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1);
        if hit != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A JSON string literal (RFC 8259 §7 escaping).
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(esc);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn push_opt_str(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn push_uuid(out: &mut String, id: &uuid::Uuid) {
    out.push('"');
    out.push_str(
        id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
    out.push('"');
}

/// The text of `"route":{…},"service":{…},"consumer":…` for one route and consumer.
/// It depends on config only, so each worker thread keeps it for recent combinations and a
/// record copies it instead of formatting ids and names. An entry holds the name `Arc`s it
/// was made from: equal pointers mean the same names (a reload makes new ones).
struct Fragment {
    route: uuid::Uuid,
    route_name: Option<Arc<str>>,
    service: uuid::Uuid,
    service_name: Option<Arc<str>>,
    consumer: Option<Arc<ConsumerRt>>,
    text: String,
}

fn same<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Fragment {
    fn matches(&self, ctx: &RequestCtx) -> bool {
        self.route == ctx.route_id
            && self.service == ctx.service_id
            && same(&self.route_name, &ctx.request.route_name)
            && same(&self.service_name, &ctx.request.service_name)
            && same(&self.consumer, &ctx.consumer)
    }
}

/// Entries per worker thread (direct-mapped by route and consumer id).
const FRAGMENTS: usize = 16;

thread_local! {
    static RECENT: RefCell<[Option<Fragment>; FRAGMENTS]> = RefCell::new(Default::default());
}

fn write_identity(o: &mut String, ctx: &RequestCtx) {
    o.push_str("\"route\":{\"id\":");
    push_uuid(o, &ctx.route_id);
    o.push_str(",\"name\":");
    push_opt_str(o, ctx.request.route_name.as_deref());
    o.push_str("},\"service\":{\"id\":");
    push_uuid(o, &ctx.service_id);
    o.push_str(",\"name\":");
    push_opt_str(o, ctx.request.service_name.as_deref());
    o.push_str("},\"consumer\":");
    match &ctx.consumer {
        Some(c) => {
            o.push_str("{\"id\":");
            push_uuid(o, &c.id);
            o.push_str(",\"username\":");
            push_opt_str(o, c.username.as_deref());
            o.push('}');
        }
        None => o.push_str("null"),
    }
}

fn push_identity(o: &mut String, ctx: &RequestCtx) {
    let key = ctx.route_id.as_u128() ^ ctx.consumer.as_ref().map_or(0, |c| c.id.as_u128());
    let slot = (key % FRAGMENTS as u128) as usize;
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        let entry = &mut recent[slot];
        if let Some(f) = entry.as_ref().filter(|f| f.matches(ctx)) {
            o.push_str(&f.text);
            return;
        }
        let mut text = String::with_capacity(192);
        write_identity(&mut text, ctx);
        o.push_str(&text);
        *entry = Some(Fragment {
            route: ctx.route_id,
            route_name: ctx.request.route_name.clone(),
            service: ctx.service_id,
            service_name: ctx.request.service_name.clone(),
            consumer: ctx.consumer.clone(),
            text,
        });
    });
}

/// An IP address as text; IPv4 (the common case) without the formatting machinery.
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut b = itoa::Buffer::new();
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(b.format(o));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The JSON record of one request, as one line (no newline). Holds no header or query
/// string, so credentials never reach a log.
pub fn to_line(rec: &CallRecord) -> String {
    let mut o = String::with_capacity(512);
    write_line(rec, &mut o);
    o
}

/// Appends the record of [`to_line`] to `o` (no newline).
pub fn write_line(rec: &CallRecord, o: &mut String) {
    let ctx = rec.ctx;
    let r = &ctx.request;
    o.push_str("{\"request_id\":");
    push_str(o, ctx.request_id.to_str().unwrap_or(""));
    o.push_str(",\"started_at\":");
    push_u64(o, r.started_unix_ms);
    o.push_str(",\"client_ip\":\"");
    push_ip(o, ctx.client_ip);
    o.push_str("\",\"request\":{\"method\":");
    push_str(o, r.method.as_str());
    o.push_str(",\"host\":");
    push_opt_str(o, r.host.as_ref().and_then(|h| h.to_str().ok()));
    o.push_str(",\"path\":");
    push_str(o, &r.path);
    o.push_str(",\"size\":");
    match r.body_bytes {
        Some(n) => push_u64(o, n),
        None => o.push_str("null"),
    }
    o.push_str("},\"response\":{\"status\":");
    push_u64(o, u64::from(rec.status.as_u16()));
    o.push_str(",\"size\":");
    push_u64(o, rec.response_bytes);
    o.push_str(if rec.complete {
        ",\"complete\":true},"
    } else {
        ",\"complete\":false},"
    });
    push_identity(o, ctx);
    let total = rec.total.as_micros();
    o.push_str(",\"latencies\":{\"total_ms\":");
    push_ms(o, total);
    o.push_str(",\"upstream_ms\":");
    match ctx.upstream_latency {
        Some(u) => {
            let u = u.as_micros();
            push_ms(o, u);
            o.push_str(",\"gateway_ms\":");
            push_ms(o, total.saturating_sub(u));
        }
        None => o.push_str("null,\"gateway_ms\":null"),
    }
    o.push('}');
    push_ai(o, ctx);
    o.push('}');
}

/// `,"ai":{provider, model, upstream_model, usage, cost_micros, ttft_ms, fallbacks}` for a
/// call `ai-proxy` answered (once its usage is known).
fn push_ai(o: &mut String, ctx: &RequestCtx) {
    let Some(cell) = ctx.extensions.get::<crate::ai::AiCallCell>() else {
        return;
    };
    let info = cell
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(text) = info.and_then(|i| serde_json::to_string(&i).ok()) {
        o.push_str(",\"ai\":");
        o.push_str(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_numbers_formatted() {
        let mut o = String::new();
        push_str(&mut o, "a\"b\\c\nd\u{1}é");
        assert_eq!(o, r#""a\"b\\c\nd\u0001é""#);
        let v: serde_json::Value = serde_json::from_str(&o).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}é");
        let mut o = String::new();
        push_ms(&mut o, 12_345);
        push_str(&mut o, "");
        push_ms(&mut o, 7);
        assert_eq!(o, "12.345\"\"0.007");
    }

    fn ctx(route: (uuid::Uuid, &Arc<str>), consumer: Option<&Arc<ConsumerRt>>) -> RequestCtx {
        let mut ctx = RequestCtx::new(
            http::HeaderValue::from_static("abc"),
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            (route.0, uuid::Uuid::nil()),
            gatehouse_proxy::plugin::RequestInfo {
                method: http::Method::GET,
                path: "/".into(),
                host: None,
                route_name: Some(route.1.clone()),
                service_name: None,
                body_bytes: None,
                started: std::time::Instant::now(),
                started_unix_ms: 0,
            },
            Vec::new(),
        );
        ctx.consumer = consumer.cloned();
        ctx
    }

    /// The per-thread fragment cache never hands out another route's or consumer's text,
    /// nor the old name after a reload (new name `Arc`, same id).
    #[test]
    fn cached_identity_text_always_matches_the_record() {
        let (r1, r2) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let n1: Arc<str> = Arc::from("one");
        let n1_renamed: Arc<str> = Arc::from("uno");
        let n2: Arc<str> = Arc::from("two");
        let alice = Arc::new(ConsumerRt {
            id: uuid::Uuid::new_v4(),
            username: Some(Arc::from("alice")),
            custom_id: None,
        });
        let cases = [
            ctx((r1, &n1), Some(&alice)),
            ctx((r1, &n1), Some(&alice)),
            ctx((r1, &n1), None),
            ctx((r2, &n2), Some(&alice)),
            ctx((r1, &n1_renamed), Some(&alice)),
            ctx((r1, &n1), Some(&alice)),
        ];
        for c in &cases {
            let mut cached = String::new();
            push_identity(&mut cached, c);
            let mut fresh = String::new();
            write_identity(&mut fresh, c);
            assert_eq!(cached, fresh);
            let v: serde_json::Value = serde_json::from_str(&format!("{{{cached}}}")).unwrap();
            assert_eq!(v["route"]["id"], c.route_id.to_string());
            assert_eq!(v["route"]["name"], &*c.request.route_name.clone().unwrap());
            assert_eq!(v["consumer"].is_null(), c.consumer.is_none());
        }
    }

    /// The eight-bytes-at-a-time check agrees with the plain one on every byte value at
    /// every position of strings long enough to use both paths.
    #[test]
    fn escape_check_finds_every_byte_that_needs_it() {
        let plain = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 31] {
            for pos in 0..len {
                for b in 0u8..=255 {
                    let mut s = vec![b'a'; len];
                    s[pos] = b;
                    assert_eq!(needs_escape(&s), plain(&s), "byte {b:#x} at {pos} of {len}");
                }
            }
            assert!(!needs_escape(&vec![b'~'; len]));
        }
        // Neighbouring bytes that would make a sloppy borrow trick misfire.
        for s in [
            &b"\x00\x01\x20\x21\x23\x5b\x5d\x7f"[..],
            b"!!!!!!!!#",
            b"\x80\xff\x20aaaaaa",
            b"\x21\x21\x21\x21\x21\x21\x21\x1f",
        ] {
            assert_eq!(needs_escape(s), plain(s), "{s:?}");
        }
    }

    #[test]
    fn ids_and_addresses_are_written_exactly() {
        let id = uuid::Uuid::new_v4();
        let mut o = String::new();
        push_uuid(&mut o, &id);
        assert_eq!(o, format!("\"{id}\""));
        for ip in [
            "10.0.0.255",
            "127.0.0.1",
            "0.0.0.0",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let mut o = String::new();
            push_ip(&mut o, ip.parse().unwrap());
            assert_eq!(o, ip);
        }
    }
}
