//! The JSON record logging plugins write: one object per request.
//!
//! Written by hand into one `String` (no serializer, no intermediate structs): the log
//! phase runs for every request, and serde_json with float formatting measured at several
//! percent of a proxied request with file-log on.

use std::fmt::Write as _;

use gatehouse_proxy::plugin::CallRecord;

/// Microseconds as milliseconds with three decimals (`12.345`).
fn push_ms(out: &mut String, micros: u128) {
    let mut b = itoa::Buffer::new();
    out.push_str(b.format(micros / 1000));
    let frac = (micros % 1000) as u16;
    out.push('.');
    out.push(char::from(b'0' + (frac / 100) as u8));
    out.push(char::from(b'0' + (frac / 10 % 10) as u8));
    out.push(char::from(b'0' + (frac % 10) as u8));
}

/// A JSON string literal (RFC 8259 §7 escaping).
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
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

/// Which of the record's ids a [`push_uuid`] call writes (each has its own cache slot).
#[derive(Clone, Copy)]
enum IdSlot {
    Route = 0,
    Service = 1,
    Consumer = 2,
}

thread_local! {
    /// The text of the id last written in each slot: consecutive requests mostly share
    /// route, service and consumer, so formatting is usually a compare and a copy.
    static LAST_IDS: std::cell::RefCell<[(uuid::Uuid, String); 3]> =
        std::cell::RefCell::new(Default::default());
}

fn push_uuid(out: &mut String, id: &uuid::Uuid, slot: IdSlot) {
    out.push('"');
    LAST_IDS.with(|last| {
        let mut last = last.borrow_mut();
        let (known, text) = &mut last[slot as usize];
        if known != id || text.is_empty() {
            text.clear();
            text.push_str(
                id.hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            );
            *known = *id;
        }
        out.push_str(text);
    });
    out.push('"');
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
        ",\"complete\":true},\"route\":{\"id\":"
    } else {
        ",\"complete\":false},\"route\":{\"id\":"
    });
    push_uuid(o, &ctx.route_id, IdSlot::Route);
    o.push_str(",\"name\":");
    push_opt_str(o, r.route_name.as_deref());
    o.push_str("},\"service\":{\"id\":");
    push_uuid(o, &ctx.service_id, IdSlot::Service);
    o.push_str(",\"name\":");
    push_opt_str(o, r.service_name.as_deref());
    o.push_str("},\"consumer\":");
    match &ctx.consumer {
        Some(c) => {
            o.push_str("{\"id\":");
            push_uuid(o, &c.id, IdSlot::Consumer);
            o.push_str(",\"username\":");
            push_opt_str(o, c.username.as_deref());
            o.push('}');
        }
        None => o.push_str("null"),
    }
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
    o.push_str("}}");
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

    #[test]
    fn ids_and_addresses_are_written_exactly() {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        for id in [a, a, b, uuid::Uuid::nil(), a] {
            let mut o = String::new();
            push_uuid(&mut o, &id, IdSlot::Route);
            assert_eq!(o, format!("\"{id}\""));
        }
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
