//! What the search and analytics APIs ask and answer: filters read from query parameters
//! (a bad value is refused naming the parameter), opaque cursors, and the answer shapes.

use std::collections::HashMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::call::Call;
use crate::rollup::{Agg, Resolution};

/// A parameter with a bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct BadParam {
    /// The query parameter.
    pub param: String,
    /// What is wrong.
    pub message: String,
    /// The value has the documented form but breaks a rule (a range backwards, a name
    /// nothing has): 422 rather than 400.
    pub rule: bool,
}

fn bad(param: &str, message: impl Into<String>) -> BadParam {
    BadParam {
        param: param.to_string(),
        message: message.into(),
        rule: false,
    }
}

fn rule(param: &str, message: impl Into<String>) -> BadParam {
    BadParam {
        rule: true,
        ..bad(param, message)
    }
}

/// Longest service, route or consumer reference (characters).
pub const MAX_REF: usize = 256;
/// Longest `request_id` (characters).
pub const MAX_REQUEST_ID: usize = 200;
/// Longest `method`.
pub const MAX_METHOD: usize = 32;
/// Longest `q`.
pub const MAX_Q: usize = 512;
/// Most entries of a top-N list.
pub const MAX_TOP: usize = 100;
/// `min_latency_ms` is below this.
pub const MAX_LATENCY_MS: f64 = 1e9;

/// The documented form of a time parameter (what the OpenAPI document's pattern says).
pub const TIME_PATTERN: &str = r"^([0-9]{1,15}|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2}))$";
/// The documented form of a status filter.
pub const STATUS_PATTERN: &str = "^([1-5]xx|[1-5]XX|[1-5][0-9]{2})$";
/// The documented form of a cursor.
pub const CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
/// Text parameters: no control characters.
pub const TEXT_PATTERN: &str = r"^[^\x00-\x1F\x7F]+$";

fn looks_like_time(v: &str) -> bool {
    let b = v.as_bytes();
    (!b.is_empty() && b.len() <= 15 && b.iter().all(u8::is_ascii_digit))
        || (b.len() >= 20
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && matches!(b[10], b'T' | b't' | b' '))
}

/// A service, route or consumer named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    /// By id.
    Id(Uuid),
    /// By name (when the config no longer has it).
    Name(String),
}

/// Where a page ends: the next page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Its time.
    pub ts: i64,
    /// Its row.
    pub rowid: i64,
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}.{}", self.ts, self.rowid))
    }

    /// From the text form.
    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (ts, rowid) = text.split_once('.')?;
        Some(Cursor {
            ts: ts.parse().ok()?,
            rowid: rowid.parse().ok()?,
        })
    }
}

/// Most calls on one page.
pub const MAX_PAGE: usize = 1_000;
/// Default page size.
pub const DEFAULT_PAGE: usize = 50;
/// Default search window when `from` is not given.
pub const DEFAULT_WINDOW_MS: i64 = 24 * 3_600_000;

/// A call search.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// From (Unix ms, inclusive).
    pub from: i64,
    /// To (Unix ms, exclusive).
    pub to: i64,
    /// Service.
    pub service: Option<Ref>,
    /// Route.
    pub route: Option<Ref>,
    /// Consumer.
    pub consumer: Option<Ref>,
    /// Status range (inclusive).
    pub status: Option<(u16, u16)>,
    /// Slowest only: total latency at least this (ms).
    pub min_latency_ms: Option<f64>,
    /// One request id.
    pub request_id: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// Text the path contains.
    pub q: Option<String>,
    /// Page size.
    pub size: usize,
    /// Continue after.
    pub cursor: Option<Cursor>,
}

/// A time given as Unix ms or RFC 3339 (`2026-12-02T10:00:00Z`).
pub fn parse_time(param: &str, v: &str) -> Result<i64, BadParam> {
    if !looks_like_time(v) {
        return Err(bad(
            param,
            "must be Unix milliseconds or an RFC 3339 time (2026-12-02T10:00:00Z)",
        ));
    }
    if let Ok(n) = v.parse::<i64>() {
        if (0..=253_402_300_799_999).contains(&n) {
            return Ok(n);
        }
        return Err(rule(param, "must be Unix milliseconds from 1970 to 9999"));
    }
    rfc3339_ms(v).ok_or_else(|| rule(param, "is not a real time (month 1-12, day 1-31…)"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` as Unix ms.
fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        ms = format!("{:0<3}", &f[..digits.min(3)]).parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh: i64 = o[1..3].parse().ok()?;
            let om: i64 = o[4..6].parse().ok()?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3_600 + mi * 60 + sec - offset_min * 60) * 1_000) + ms)
}

/// A service, route or consumer parameter.
pub fn one_ref(param: &str, v: &str) -> Result<Ref, BadParam> {
    // Characters, as JSON Schema's maxLength counts.
    if v.is_empty() || v.chars().count() > MAX_REF {
        return Err(bad(param, "must be an id or a name of 1-256 characters"));
    }
    Ok(match Uuid::parse_str(v) {
        Ok(u) => Ref::Id(u),
        Err(_) => Ref::Name(v.to_string()),
    })
}

/// `2xx`…`5xx`, or one status.
fn status_range(v: &str) -> Result<(u16, u16), BadParam> {
    let e = || {
        bad(
            "status",
            "must be a status (404) or a class (2xx, 4xx, 5xx)",
        )
    };
    if let Some(c) = v.strip_suffix("xx").or_else(|| v.strip_suffix("XX")) {
        let d: u16 = c.parse().map_err(|_| e())?;
        if !(1..=5).contains(&d) {
            return Err(e());
        }
        return Ok((d * 100, d * 100 + 99));
    }
    let s: u16 = v.parse().map_err(|_| e())?;
    if !(100..=599).contains(&s) {
        return Err(e());
    }
    Ok((s, s))
}

/// The known parameters of a call search, checked; `now_ms` anchors the default window.
pub fn filter(params: &HashMap<String, String>, now_ms: i64) -> Result<Filter, BadParam> {
    for k in params.keys() {
        if !matches!(
            k.as_str(),
            "from"
                | "to"
                | "service"
                | "route"
                | "consumer"
                | "status"
                | "min_latency_ms"
                | "request_id"
                | "method"
                | "q"
                | "size"
                | "cursor"
                | "format"
        ) {
            return Err(bad(k, "is not a parameter of this search"));
        }
    }
    let get = |k: &str| params.get(k).map(String::as_str);
    let to = match get("to") {
        Some(v) => parse_time("to", v)?,
        None => now_ms + 1,
    };
    let from = match get("from") {
        Some(v) => parse_time("from", v)?,
        None => to - DEFAULT_WINDOW_MS,
    };
    if from >= to {
        return Err(rule("from", "must be before `to`"));
    }
    let size = match get("size") {
        None => DEFAULT_PAGE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(bad("size", format!("must be 1-{MAX_PAGE}"))),
        },
    };
    let min_latency_ms = match get("min_latency_ms") {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(n) if (0.0..MAX_LATENCY_MS).contains(&n) => Some(n),
            _ => {
                return Err(bad(
                    "min_latency_ms",
                    "must be a number of milliseconds ≥ 0",
                ))
            }
        },
    };
    let text = |k: &str, max: usize| -> Result<Option<String>, BadParam> {
        match get(k) {
            None => Ok(None),
            // Characters, as JSON Schema counts them; controls as the pattern says (C0, DEL).
            Some(v)
                if !v.is_empty()
                    && v.chars().count() <= max
                    && !v.chars().any(|c| c < ' ' || c == '\u{7f}') =>
            {
                Ok(Some(v.to_string()))
            }
            Some(_) => Err(bad(
                k,
                format!("must be 1-{max} characters, no control characters"),
            )),
        }
    };
    Ok(Filter {
        from,
        to,
        service: get("service").map(|v| one_ref("service", v)).transpose()?,
        route: get("route").map(|v| one_ref("route", v)).transpose()?,
        consumer: get("consumer")
            .map(|v| one_ref("consumer", v))
            .transpose()?,
        status: get("status").map(status_range).transpose()?,
        min_latency_ms,
        request_id: text("request_id", MAX_REQUEST_ID)?,
        method: text("method", MAX_METHOD)?.map(|m| m.to_ascii_uppercase()),
        q: text("q", MAX_Q)?,
        size,
        cursor: match get("cursor") {
            None => None,
            Some(c)
                if c.is_empty()
                    || c.len() > 64
                    || !c
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Err(bad("cursor", "is not a cursor this API gave"))
            }
            Some(c) => Some(
                Cursor::decode(c).ok_or_else(|| rule("cursor", "is not a cursor this API gave"))?,
            ),
        },
    })
}

/// A page of calls.
pub struct Page {
    /// Newest first.
    pub data: Vec<Call>,
    /// Where the next page starts, if there is one.
    pub next: Option<Cursor>,
}

impl Page {
    /// The API's answer.
    pub fn to_json(&self) -> Value {
        json!({
            "data": self.data.iter().map(Call::to_json).collect::<Vec<_>>(),
            "next": self.next.map(|c| c.encode()),
        })
    }
}

/// Which rows an analytics query keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dims {
    /// One service.
    pub service: Option<Uuid>,
    /// One route.
    pub route: Option<Uuid>,
    /// One consumer.
    pub consumer: Option<Uuid>,
}

/// A time series query.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    /// Resolution.
    pub res: Resolution,
    /// From (bucket-aligned down).
    pub from: i64,
    /// To.
    pub to: i64,
    /// Filter.
    pub dims: Dims,
}

/// Most buckets one series may span.
pub const MAX_BUCKETS: i64 = 2_000;

/// A series query from parameters; `dims` are resolved by the caller (names → ids).
pub fn series(
    params: &HashMap<String, String>,
    now_ms: i64,
    dims: Dims,
) -> Result<SeriesQuery, BadParam> {
    for k in params.keys() {
        if !matches!(
            k.as_str(),
            "from" | "to" | "resolution" | "service" | "route" | "consumer"
        ) {
            return Err(bad(k, "is not a parameter of this query"));
        }
    }
    let get = |k: &str| params.get(k).map(String::as_str);
    let to = match get("to") {
        Some(v) => parse_time("to", v)?,
        None => now_ms + 1,
    };
    let from = match get("from") {
        Some(v) => parse_time("from", v)?,
        None => to - DEFAULT_WINDOW_MS,
    };
    if from >= to {
        return Err(rule("from", "must be before `to`"));
    }
    let res = match get("resolution") {
        Some(r) => {
            Resolution::parse(r).ok_or_else(|| bad("resolution", "must be minute, hour or day"))?
        }
        // The finest resolution that keeps the series within bounds.
        None => Resolution::ALL
            .into_iter()
            .find(|r| (to - from) / r.millis() <= 360)
            .unwrap_or(Resolution::Day),
    };
    let from = res.bucket(from);
    if (to - from) / res.millis() > MAX_BUCKETS {
        return Err(rule(
            "resolution",
            format!("{} buckets of a {} are more than {MAX_BUCKETS}: ask for a coarser resolution or a shorter range",
                (to - from) / res.millis(), res.code()),
        ));
    }
    Ok(SeriesQuery {
        res,
        from,
        to,
        dims,
    })
}

fn ms(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| json!((x * 1000.0).round() / 1000.0))
}

/// One point of a series.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Bucket start (Unix ms).
    pub t: i64,
    /// The point's numbers.
    #[serde(flatten)]
    pub v: Value,
}

fn numbers(a: &Agg) -> Value {
    json!({
        "requests": a.requests, "errors_4xx": a.s4xx, "errors_5xx": a.s5xx,
        "bytes_in": a.bytes_in, "bytes_out": a.bytes_out,
        "tokens_in": a.tokens_in, "tokens_out": a.tokens_out, "cost_usd": a.cost_micros as f64 / 1e6,
        "latency_ms": {"p50": ms(a.quantile(0.5)), "p95": ms(a.quantile(0.95)), "p99": ms(a.quantile(0.99))},
    })
}

impl Bucket {
    /// From a merged rollup.
    pub fn of(t: i64, a: &Agg) -> Bucket {
        Bucket { t, v: numbers(a) }
    }
}

/// Top-N by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBy {
    /// Services by calls.
    Services,
    /// Routes by calls.
    Routes,
    /// Consumers by calls.
    Consumers,
    /// Routes by 4xx + 5xx answers.
    ErrorRoutes,
}

impl TopBy {
    /// From the path segment.
    pub fn parse(s: &str) -> Option<TopBy> {
        match s {
            "services" => Some(TopBy::Services),
            "routes" => Some(TopBy::Routes),
            "consumers" => Some(TopBy::Consumers),
            "error-routes" => Some(TopBy::ErrorRoutes),
            _ => None,
        }
    }
}

/// A top-N query.
#[derive(Debug, Clone)]
pub struct TopQuery {
    /// What to rank.
    pub by: TopBy,
    /// How many.
    pub n: usize,
    /// Resolution of the rollups read.
    pub res: Resolution,
    /// From.
    pub from: i64,
    /// To.
    pub to: i64,
    /// Filter.
    pub dims: Dims,
}

/// One entry of a top-N list.
#[derive(Debug, Clone, Serialize)]
pub struct Top {
    /// Id (nil for calls with none, e.g. anonymous consumers).
    pub id: Option<Uuid>,
    /// Name.
    pub name: Option<String>,
    /// Its numbers.
    #[serde(flatten)]
    pub v: Value,
}

impl Top {
    /// From a merged rollup.
    pub fn of(id: Uuid, name: Option<String>, a: &Agg) -> Top {
        Top {
            id: (!id.is_nil()).then_some(id),
            name,
            v: numbers(a),
        }
    }
}

/// A consumer's use of a service.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// Consumer id (none: anonymous calls).
    pub consumer_id: Option<Uuid>,
    /// Consumer username.
    pub consumer: Option<String>,
    /// Service id.
    pub service_id: Option<Uuid>,
    /// Service name.
    pub service: Option<String>,
    /// Its numbers.
    #[serde(flatten)]
    pub v: Value,
}

impl Usage {
    /// From a merged rollup.
    pub fn of(consumer: Uuid, service: Uuid, a: &Agg) -> Usage {
        Usage {
            consumer_id: (!consumer.is_nil()).then_some(consumer),
            consumer: a.consumer_name.clone(),
            service_id: (!service.is_nil()).then_some(service),
            service: a.service_name.clone(),
            v: numbers(a),
        }
    }
}

/// How long each kind of data is kept (days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Raw calls (default 7).
    pub raw_days: u32,
    /// Minute rollups (default 7).
    pub minute_days: u32,
    /// Hour rollups (default 90).
    pub hour_days: u32,
    /// Day rollups (default 730).
    pub day_days: u32,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            raw_days: 7,
            minute_days: 7,
            hour_days: 90,
            day_days: 730,
        }
    }
}

impl Retention {
    /// Checks the values (1-3650 days each; coarser rollups kept at least as long as
    /// finer ones).
    pub fn check(&self) -> Result<(), BadParam> {
        for (k, v) in [
            ("raw_days", self.raw_days),
            ("minute_days", self.minute_days),
            ("hour_days", self.hour_days),
            ("day_days", self.day_days),
        ] {
            if !(1..=3650).contains(&v) {
                return Err(bad(k, "must be 1-3650 days"));
            }
        }
        if self.hour_days < self.minute_days {
            return Err(rule("hour_days", "must be at least minute_days"));
        }
        if self.day_days < self.hour_days {
            return Err(rule("day_days", "must be at least hour_days"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> HashMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_are_read_and_bad_values_named() {
        let f = filter(
            &params(&[
                ("status", "5xx"),
                ("from", "2026-12-02T10:00:00Z"),
                ("to", "1796209200001"),
                ("service", "billing"),
                ("size", "10"),
                ("q", "50%_off"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(f.status, Some((500, 599)));
        assert_eq!(f.from, 1_796_205_600_000);
        assert_eq!(f.service, Some(Ref::Name("billing".into())));
        for (k, v) in [
            ("status", "6xx"),
            ("size", "0"),
            ("from", "yesterday"),
            ("min_latency_ms", "-1"),
            ("cursor", "!!"),
            ("nope", "1"),
            ("q", ""),
        ] {
            assert_eq!(
                filter(&params(&[(k, v)]), 1_000_000_000).unwrap_err().param,
                k,
                "{k}={v}"
            );
        }
        assert_eq!(
            filter(&params(&[("from", "5"), ("to", "5")]), 0)
                .unwrap_err()
                .param,
            "from"
        );
        let c = Cursor {
            ts: 1_764_669_600_123,
            rowid: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(
            rfc3339_ms("2026-12-02T11:00:00+01:00"),
            Some(1_796_205_600_000)
        );
        assert_eq!(
            rfc3339_ms("2026-12-02T10:00:00.5Z"),
            Some(1_796_205_600_500)
        );
    }

    #[test]
    fn series_pick_a_resolution_and_refuse_huge_ones() {
        let day: i64 = 86_400_000;
        let q = series(
            &params(&[("from", "0"), ("to", &(day / 2).to_string())]),
            0,
            Dims::default(),
        )
        .unwrap();
        assert_eq!(q.res, Resolution::Hour);
        let q = series(
            &params(&[("from", "0"), ("to", "3600000")]),
            0,
            Dims::default(),
        )
        .unwrap();
        assert_eq!(q.res, Resolution::Minute);
        let e = series(
            &params(&[
                ("from", "0"),
                ("to", &(30 * day).to_string()),
                ("resolution", "minute"),
            ]),
            0,
            Dims::default(),
        )
        .unwrap_err();
        assert_eq!(e.param, "resolution");
        assert!(Retention {
            raw_days: 0,
            ..Retention::default()
        }
        .check()
        .is_err());
        assert!(Retention {
            hour_days: 1,
            ..Retention::default()
        }
        .check()
        .is_err());
    }
}
