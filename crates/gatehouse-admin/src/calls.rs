//! The call log in the admin API: search (`/calls`), one call (`/calls/{request_id}`),
//! export (`/calls/export`), analytics from the rollups (`/analytics/…`) and the call log's
//! settings (`/call-log/settings`). Services, routes and consumers are named by id or by
//! name (username for consumers); a name the config has is searched by its id (indexed).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gatehouse_telemetry::query::{self, BadParam, Dims, Ref, Retention, TopBy, TopQuery};
use gatehouse_telemetry::CallLog;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::api::AdminState;
use crate::error::{ApiError, ErrorBody};

type St = State<Arc<AdminState>>;
type ApiResult<T> = Result<T, ApiError>;

/// Most calls one export holds.
pub const MAX_EXPORT: usize = 100_000;

fn log(s: &AdminState) -> ApiResult<&Arc<CallLog>> {
    s.calls.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "call_log_off",
            "the call log is off on this node (serve --call-log on)",
        )
    })
}

/// 400 for a value that does not have the documented form, 422 for one that has it but
/// breaks a rule (the admin API's convention for bodies too).
fn bad_param(e: BadParam) -> ApiError {
    if e.rule {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_parameter",
            e.to_string(),
        )
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", e.to_string())
    }
}

fn malformed(param: &str, message: &str) -> ApiError {
    bad_param(BadParam {
        param: param.into(),
        message: message.into(),
        rule: false,
    })
}

fn store_error(e: gatehouse_telemetry::store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "call store query failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "call_store_unavailable",
        "the call store could not answer; see the node's log",
    )
}

/// Which entity kind a reference names.
#[derive(Clone, Copy)]
enum Kind {
    Service,
    Route,
    Consumer,
}

/// A name the config has becomes its id.
fn resolve(s: &AdminState, kind: Kind, r: Ref) -> Ref {
    let Ref::Name(name) = &r else {
        return r;
    };
    let cur = s.control.current();
    let c = &cur.config;
    let found = match kind {
        Kind::Service => c
            .services
            .iter()
            .find(|x| x.name.as_deref() == Some(name))
            .map(|x| x.id),
        Kind::Route => c
            .routes
            .iter()
            .find(|x| x.name.as_deref() == Some(name))
            .map(|x| x.id),
        Kind::Consumer => c
            .consumers
            .iter()
            .find(|x| x.username.as_deref() == Some(name))
            .map(|x| x.id),
    };
    found.map_or(r, Ref::Id)
}

fn now_ms() -> i64 {
    gatehouse_telemetry::pipeline::now_ms()
}

/// Parameters of a call search.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CallSearch {
    /// From (Unix ms or RFC 3339; default: 24 h before `to`).
    from: Option<String>,
    /// To, exclusive (Unix ms or RFC 3339; default: now).
    to: Option<String>,
    /// Service id or name.
    service: Option<String>,
    /// Route id or name.
    route: Option<String>,
    /// Consumer id or username.
    consumer: Option<String>,
    /// A status (`404`) or a class (`2xx`, `4xx`, `5xx`).
    status: Option<String>,
    /// Only calls that took at least this long (ms).
    min_latency_ms: Option<String>,
    /// One request id.
    request_id: Option<String>,
    /// Method (`GET`…).
    method: Option<String>,
    /// Text the path contains.
    q: Option<String>,
    /// Page size (1-1000, default 50).
    size: Option<String>,
    /// Where to continue: the previous page's `next`.
    cursor: Option<String>,
}

/// A page of calls, newest first.
#[derive(Serialize, ToSchema)]
pub struct CallPage {
    /// Calls.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
    /// Cursor of the next page (`null`: this was the last).
    pub next: Option<String>,
}

fn search_filter(s: &AdminState, p: &HashMap<String, String>) -> ApiResult<query::Filter> {
    let mut f = query::filter(p, now_ms()).map_err(bad_param)?;
    f.service = f.service.map(|r| resolve(s, Kind::Service, r));
    f.route = f.route.map(|r| resolve(s, Kind::Route, r));
    f.consumer = f.consumer.map(|r| resolve(s, Kind::Consumer, r));
    Ok(f)
}

/// Searches the call log, newest first, a page at a time.
#[utoipa::path(get, path = "/calls", tag = "calls", params(CallSearch),
    responses((status = 200, body = CallPage), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn search(
    State(s): St,
    Query(p): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let log = log(&s)?;
    if p.contains_key("format") {
        return Err(malformed("format", "is a parameter of /calls/export"));
    }
    let f = search_filter(&s, &p)?;
    let page = log.store().search(&f).await.map_err(store_error)?;
    Ok(Json(page.to_json()))
}

/// One call by request id (with any others that carried the same id).
#[utoipa::path(get, path = "/calls/{request_id}", tag = "calls",
    params(("request_id" = String, Path, description = "The request id (`X-Request-Id`)")),
    responses((status = 200, description = "the call", body = Object), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn get_call(State(s): St, Path(request_id): Path<String>) -> ApiResult<Json<Value>> {
    let log = log(&s)?;
    let calls = log
        .store()
        .by_request_id(&request_id)
        .await
        .map_err(store_error)?;
    let Some(first) = calls.first() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no call with request id `{request_id}` is stored"),
        ));
    };
    let mut v = first.to_json();
    if calls.len() > 1 {
        v["same_request_id"] = Value::Array(calls[1..].iter().map(|c| c.to_json()).collect());
    }
    Ok(Json(v))
}

/// Parameters of an export: the search's, and the format.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct CallExport {
    /// `jsonl` (default) or `csv`.
    format: Option<String>,
    /// From (Unix ms or RFC 3339).
    from: Option<String>,
    /// To, exclusive.
    to: Option<String>,
    /// Service id or name.
    service: Option<String>,
    /// Route id or name.
    route: Option<String>,
    /// Consumer id or username.
    consumer: Option<String>,
    /// A status or a class.
    status: Option<String>,
    /// Only calls that took at least this long (ms).
    min_latency_ms: Option<String>,
    /// Text the path contains.
    q: Option<String>,
}

const CSV_COLUMNS: &str = "started_at,request_id,trace_id,method,host,path,status,total_ms,upstream_ms,service,route,consumer,client_ip,bytes_in,bytes_out,upstream,retries,error,ai_model,ai_input_tokens,ai_output_tokens,ai_cost_usd";

fn csv_field(out: &mut String, v: &str) {
    if v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

fn csv_row(out: &mut String, c: &gatehouse_telemetry::Call) {
    let name = |p: &Option<(Uuid, Option<Arc<str>>)>| {
        p.as_ref()
            .map(|(id, n)| n.as_deref().map_or_else(|| id.to_string(), str::to_string))
            .unwrap_or_default()
    };
    let cols = [
        c.ts_ms.to_string(),
        c.request_id.clone(),
        c.trace_id.clone().unwrap_or_default(),
        c.method.clone(),
        c.host.clone().unwrap_or_default(),
        c.path.clone(),
        c.status.to_string(),
        format!("{:.3}", c.total_us as f64 / 1000.0),
        c.upstream_us
            .map(|u| format!("{:.3}", u as f64 / 1000.0))
            .unwrap_or_default(),
        name(&c.service),
        name(&c.route),
        name(&c.consumer),
        c.client_ip.to_string(),
        c.bytes_in.map(|b| b.to_string()).unwrap_or_default(),
        c.bytes_out.to_string(),
        c.upstream
            .as_ref()
            .map(|(h, p)| format!("{h}:{p}"))
            .unwrap_or_default(),
        c.retries.to_string(),
        c.error.as_deref().unwrap_or("").to_string(),
        c.ai.as_ref().map(|a| a.model.clone()).unwrap_or_default(),
        c.ai.as_ref()
            .map(|a| a.input_tokens.to_string())
            .unwrap_or_default(),
        c.ai.as_ref()
            .map(|a| a.output_tokens.to_string())
            .unwrap_or_default(),
        c.ai.as_ref()
            .map(|a| format!("{:.6}", a.cost_micros as f64 / 1e6))
            .unwrap_or_default(),
    ];
    for (i, v) in cols.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, v);
    }
    out.push('\n');
}

/// Exports the calls a search finds (newest first, at most 100,000; `X-Gatehouse-Truncated:
/// true` when there were more) as JSON lines or CSV.
#[utoipa::path(get, path = "/calls/export", tag = "calls", params(CallExport),
    responses((status = 200, description = "the calls", content(
        (String = "application/x-ndjson"),
        (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn export(
    State(s): St,
    Query(mut p): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let log = log(&s)?;
    let csv = match p.remove("format").as_deref() {
        None | Some("jsonl") => false,
        Some("csv") => true,
        Some(_) => return Err(malformed("format", "must be jsonl or csv")),
    };
    for k in ["size", "cursor"] {
        if p.contains_key(k) {
            return Err(malformed(k, "is not a parameter of an export"));
        }
    }
    let mut f = search_filter(&s, &p)?;
    f.size = query::MAX_PAGE;
    let mut out = String::new();
    if csv {
        out.push_str(CSV_COLUMNS);
        out.push('\n');
    }
    let mut n = 0usize;
    let mut truncated = false;
    loop {
        let page = log.store().search(&f).await.map_err(store_error)?;
        for c in &page.data {
            if n == MAX_EXPORT {
                truncated = true;
                break;
            }
            if csv {
                csv_row(&mut out, c);
            } else {
                out.push_str(&c.to_json().to_string());
                out.push('\n');
            }
            n += 1;
        }
        match page.next {
            Some(next) if !truncated => f.cursor = Some(next),
            _ => break,
        }
    }
    let ct = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    let mut resp = ([(header::CONTENT_TYPE, ct)], out).into_response();
    if truncated {
        resp.headers_mut().insert(
            "x-gatehouse-truncated",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// Parameters of the analytics queries.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct AnalyticsParams {
    /// From (Unix ms or RFC 3339; default: 24 h before `to`).
    from: Option<String>,
    /// To, exclusive (default: now).
    to: Option<String>,
    /// `minute`, `hour` or `day` (default: the finest that keeps the series within 360
    /// points).
    resolution: Option<String>,
    /// Service id or name.
    service: Option<String>,
    /// Route id or name.
    route: Option<String>,
    /// Consumer id or username.
    consumer: Option<String>,
}

fn dims(s: &AdminState, p: &HashMap<String, String>) -> ApiResult<Dims> {
    let one = |k: &str, kind: Kind| -> ApiResult<Option<Uuid>> {
        let Some(v) = p.get(k) else {
            return Ok(None);
        };
        let r = query::one_ref(k, v).map_err(bad_param)?;
        match resolve(s, kind, r) {
            Ref::Id(id) => Ok(Some(id)),
            Ref::Name(n) => Err(bad_param(BadParam {
                param: k.into(),
                message: format!("no {k} is named `{n}` (give its id for one that was deleted)"),
                rule: true,
            })),
        }
    };
    Ok(Dims {
        service: one("service", Kind::Service)?,
        route: one("route", Kind::Route)?,
        consumer: one("consumer", Kind::Consumer)?,
    })
}

/// Requests, 4xx and 5xx, latency p50/p95/p99 (from merged sketches), bytes, tokens and
/// cost per minute, hour or day — from the rollups, never the raw calls.
#[utoipa::path(get, path = "/analytics/series", tag = "calls", params(AnalyticsParams),
    responses((status = 200, description = "`{resolution, from, to, points: [{t, requests, errors_4xx, errors_5xx, latency_ms: {p50, p95, p99}, bytes_in, bytes_out, tokens_in, tokens_out, cost_usd}]}`", body = Object),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn series(
    State(s): St,
    Query(p): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let log = log(&s)?;
    let d = dims(&s, &p)?;
    let q = query::series(&p, now_ms(), d).map_err(bad_param)?;
    let points = log.store().timeseries(&q).await.map_err(store_error)?;
    Ok(Json(json!({
        "resolution": q.res.name(),
        "from": q.from, "to": q.to, "points": points,
    })))
}

/// Parameters of a top-N list.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TopParams {
    /// How many (1-100, default 10).
    n: Option<String>,
    /// From (Unix ms or RFC 3339; default: 24 h before `to`).
    from: Option<String>,
    /// To, exclusive (default: now).
    to: Option<String>,
    /// Rollups read (`minute`, `hour`, `day`; default by the range).
    resolution: Option<String>,
    /// Only this service's calls.
    service: Option<String>,
    /// Only this route's calls.
    route: Option<String>,
    /// Only this consumer's calls.
    consumer: Option<String>,
}

/// The top services, routes or consumers by calls, or the routes with the most 4xx + 5xx
/// answers (`error-routes`), with their latency percentiles.
#[utoipa::path(get, path = "/analytics/top/{by}", tag = "calls",
    params(("by" = String, Path, description = "`services`, `routes`, `consumers` or `error-routes`"), TopParams),
    responses((status = 200, description = "`{by, data: [{id, name, requests, errors_4xx, errors_5xx, latency_ms, …}]}`", body = Object),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn top(
    State(s): St,
    Path(by): Path<String>,
    Query(mut p): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let log = log(&s)?;
    let which = TopBy::parse(&by)
        .ok_or_else(|| malformed("by", "must be services, routes, consumers or error-routes"))?;
    let n = match p.remove("n") {
        None => 10,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=query::MAX_TOP).contains(&n) => n,
            _ => return Err(malformed("n", &format!("must be 1-{}", query::MAX_TOP))),
        },
    };
    let d = dims(&s, &p)?;
    let q = query::series(&p, now_ms(), d).map_err(bad_param)?;
    let data = log
        .store()
        .top(&TopQuery {
            by: which,
            n,
            res: q.res,
            from: q.from,
            to: q.to,
            dims: q.dims,
        })
        .await
        .map_err(store_error)?;
    Ok(Json(
        json!({"by": by, "from": q.from, "to": q.to, "data": data}),
    ))
}

/// Each consumer's use of each service over a range (calls, errors, latency, bytes,
/// tokens, cost); filter by `consumer` or `service`.
#[utoipa::path(get, path = "/analytics/usage", tag = "calls", params(AnalyticsParams),
    responses((status = 200, description = "`{data: [{consumer_id, consumer, service_id, service, requests, …}]}`", body = Object),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn usage(
    State(s): St,
    Query(p): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let log = log(&s)?;
    let d = dims(&s, &p)?;
    let q = query::series(&p, now_ms(), d).map_err(bad_param)?;
    let data = log.store().usage(&q).await.map_err(store_error)?;
    Ok(Json(json!({"from": q.from, "to": q.to, "data": data})))
}

/// Days each kind of call-log data is kept.
#[derive(Serialize, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionDays {
    /// Raw calls (default 7).
    #[schema(minimum = 1, maximum = 3650)]
    pub raw_days: u32,
    /// Minute rollups (default 7).
    #[schema(minimum = 1, maximum = 3650)]
    pub minute_days: u32,
    /// Hour rollups (default 90; at least `minute_days`).
    #[schema(minimum = 1, maximum = 3650)]
    pub hour_days: u32,
    /// Day rollups (default 730; at least `hour_days`).
    #[schema(minimum = 1, maximum = 3650)]
    pub day_days: u32,
}

impl From<Retention> for RetentionDays {
    fn from(r: Retention) -> RetentionDays {
        RetentionDays {
            raw_days: r.raw_days,
            minute_days: r.minute_days,
            hour_days: r.hour_days,
            day_days: r.day_days,
        }
    }
}

/// The call log's settings.
#[derive(Serialize, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallLogSettings {
    /// Days each kind of data is kept.
    pub retention: RetentionDays,
}

/// The retention of raw calls and of minute, hour and day rollups.
#[utoipa::path(get, path = "/call-log/settings", tag = "calls",
    responses((status = 200, body = CallLogSettings), (status = 503, body = ErrorBody)))]
pub async fn get_settings(State(s): St) -> ApiResult<Json<CallLogSettings>> {
    let log = log(&s)?;
    let retention = log.store().retention().await.map_err(store_error)?;
    Ok(Json(CallLogSettings {
        retention: retention.into(),
    }))
}

/// Changes the retention; old data goes at the next retention run (within a minute, or
/// `POST /call-log/prune`), in small batches.
#[utoipa::path(put, path = "/call-log/settings", tag = "calls", request_body = CallLogSettings,
    responses((status = 200, body = CallLogSettings), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn put_settings(
    State(s): St,
    body: crate::input::Input,
) -> ApiResult<Json<CallLogSettings>> {
    let log = log(&s)?;
    let v = body.required("CallLogSettings")?;
    let input: CallLogSettings = serde_path_to_error::deserialize(&v).map_err(|e| {
        ApiError::invalid(vec![gatehouse_model::FieldError::new(
            "call-log settings",
            e.path().to_string(),
            e.inner().to_string(),
        )])
    })?;
    let d = &input.retention;
    let r = Retention {
        raw_days: d.raw_days,
        minute_days: d.minute_days,
        hour_days: d.hour_days,
        day_days: d.day_days,
    };
    if let Err(e) = r.check() {
        let status = if e.rule {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        return Err(ApiError::new(
            status,
            "invalid_settings",
            format!("retention.{e}"),
        ));
    }
    log.store().set_retention(&r).await.map_err(store_error)?;
    Ok(Json(input))
}

/// Runs retention now (it also runs every minute), in small batches; answers how many rows
/// went.
#[utoipa::path(post, path = "/call-log/prune", tag = "calls",
    responses((status = 200, description = "`{deleted}`", body = Object), (status = 503, body = ErrorBody)))]
pub async fn prune(State(s): St) -> ApiResult<Json<Value>> {
    let log = log(&s)?;
    let before = log
        .stats()
        .pruned
        .load(std::sync::atomic::Ordering::Relaxed);
    gatehouse_telemetry::pipeline::prune(log.store(), log.stats()).await;
    let after = log
        .stats()
        .pruned
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(Json(json!({"deleted": after - before})))
}
