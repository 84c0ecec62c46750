//! The attempts of one AI call: keys and targets tried in order, what each failure means,
//! and the answer once one succeeds — streamed through an `AiBody`, or read whole,
//! checked, translated and settled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_ai::decode::Decoder;
use gatehouse_ai::keys::{retry_after_ms, verdict, Verdict};
use gatehouse_ai::provider::{Op, Wire};
use gatehouse_ai::{anthropic, bedrock, gemini, tokens, Usage};
use gatehouse_proxy::body::ProxyBody;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use super::body::{AiBody, Settle, Translator, UpstreamBody};
use super::catalog::{ModelRt, ProviderRt, TargetRt};
use super::proxy::{Call, CallCtx, Failure, Surface};
use super::{AiCallCell, AiCallInfo, Reservation};

/// Largest whole (not streamed) answer read from a provider.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The attempts of one call: keys and targets tried, the last failure, reservations to
/// settle however the call ends.
pub(super) struct Attempts {
    reservations: Option<Vec<Box<dyn Reservation>>>,
    estimated_input: u64,
    request: Bytes,
    model: Arc<str>,
    max_attempts: u32,
    pub(super) tried: u32,
    last: Option<String>,
    /// Every failure so far was a rate limit (or a pool with every key resting).
    all_limited: bool,
    retry_after_ms: Option<u64>,
    cell: AiCallCell,
    started: Instant,
    outcall: Option<gatehouse_proxy::outcall::Outcall>,
}

impl Attempts {
    pub(super) fn new(
        call: &CallCtx,
        model: &ModelRt,
        reservations: Vec<Box<dyn Reservation>>,
        estimated_input: u64,
        request: Bytes,
    ) -> Attempts {
        Attempts {
            reservations: Some(reservations),
            estimated_input,
            request,
            model: model.name.clone(),
            max_attempts: call.c.max_attempts,
            tried: 0,
            last: None,
            all_limited: true,
            retry_after_ms: None,
            cell: call.cell.clone(),
            started: call.started,
            outcall: call.outcall.clone(),
        }
    }

    /// Gives back what was reserved (nothing was used) and passes the failure on.
    pub(super) fn fail(&mut self, f: Failure) -> Failure {
        if let Some(held) = self.reservations.take() {
            if !held.is_empty() {
                tokio::spawn(async move {
                    for r in held {
                        r.settle(&Usage::default(), 0).await;
                    }
                });
            }
        }
        f
    }

    fn note(&mut self, why: String, limited: bool, retry_ms: Option<u64>) {
        tracing::warn!(model = %self.model, error = %why, "ai attempt failed; trying the next key or target");
        self.all_limited &= limited;
        if let Some(ms) = retry_ms {
            self.retry_after_ms = Some(self.retry_after_ms.map_or(ms, |m| m.min(ms)));
        }
        self.last = Some(why);
    }

    /// No attempt succeeded.
    pub(super) fn exhausted(&mut self) -> Failure {
        let last = self
            .last
            .clone()
            .unwrap_or_else(|| "no provider could be tried".into());
        // `last` is set by every failure, so `tried > 0` means one was seen.
        let f = if self.all_limited && self.tried > 0 {
            Failure {
                retry_after_s: Some(self.retry_after_ms.unwrap_or(1_000).div_ceil(1_000)),
                ..Failure::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "providers_exhausted",
                    format!(
                        "every key and provider of `{}` is rate limited: {last}",
                        self.model
                    ),
                )
            }
        } else {
            Failure::new(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_error",
                format!("no provider of `{}` answered: {last}", self.model),
            )
        };
        self.fail(f)
    }

    /// Tries keys of `target` until one answers with something for the client: a success,
    /// or a client error every key would get too. `Next`: move on to the next target.
    pub(super) async fn send(&mut self, target: &TargetRt, op: Op, body: Bytes) -> Sent {
        let p = &target.provider;
        let Some(url) = p.endpoint.url(op, &target.model) else {
            return Sent::Next;
        };
        let mut skip: Vec<usize> = Vec::new();
        loop {
            if self.tried >= self.max_attempts {
                return Sent::Next;
            }
            let now = unix_ms();
            let key = if p.keys.is_empty() {
                None
            } else {
                match p.keys.pick(now, &skip, &target.model) {
                    Ok(k) => Some(k),
                    Err(wait) => {
                        if skip.is_empty() {
                            self.tried += 1;
                            self.note(
                                format!("every key of provider `{}` is resting", p.name),
                                true,
                                Some(wait),
                            );
                        }
                        return Sent::Next;
                    }
                }
            };
            self.tried += 1;
            let mut headers = http::HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            for (n, v) in &p.headers {
                headers.insert(n.clone(), v.clone());
            }
            let presented = match key {
                Some(k) => {
                    super::credentials::present(p, k, &url, &body, self.outcall.as_ref()).await
                }
                None => Ok(p.endpoint.auth_headers(None)),
            };
            match presented {
                Ok(h) => {
                    for (n, v) in h {
                        headers.insert(n, v);
                    }
                }
                Err(why) => {
                    self.note(format!("provider `{}`: {why}", p.name), false, None);
                    if let Some(k) = key {
                        p.keys.cool_down(
                            k.index,
                            None,
                            now,
                            gatehouse_ai::keys::COOLDOWN_REFUSED_MS,
                        );
                        skip.push(k.index);
                        continue;
                    }
                    return Sent::Next;
                }
            }
            let resp = match self.call(p, &url, headers, body.clone()).await {
                Ok(r) => r,
                Err(why) => {
                    self.note(format!("provider `{}`: {why}", p.name), false, None);
                    return Sent::Next;
                }
            };
            let status = resp.status();
            if status.is_success() {
                return Sent::Ok(Box::new(resp));
            }
            let retry_ms = retry_after_ms(resp.headers(), std::time::SystemTime::now());
            let text = read_limited(resp.into_body(), 64 * 1024, Duration::from_secs(5)).await;
            let message =
                provider_message(&text).unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
            let what = format!(
                "provider `{}` answered {}: {message}",
                p.name,
                status.as_u16()
            );
            let rest = match verdict(status.as_u16(), retry_ms) {
                Verdict::ClientError => return Sent::ClientError(status, message),
                Verdict::ProviderFailed => {
                    self.note(what, false, None);
                    return Sent::Next;
                }
                Verdict::RateLimited(ms) => {
                    self.note(what, true, Some(ms));
                    (Some(&*target.model), ms)
                }
                Verdict::KeyRefused(ms) => {
                    self.note(what, false, None);
                    (None, ms)
                }
            };
            match key {
                Some(k) => {
                    p.keys.cool_down(k.index, rest.0, now, rest.1);
                    skip.push(k.index);
                }
                None => return Sent::Next,
            }
        }
    }

    /// One exchange with a provider, within its first-token timeout, on the worker's own
    /// client and connection pool.
    async fn call(
        &self,
        p: &ProviderRt,
        url: &str,
        headers: http::HeaderMap,
        body: Bytes,
    ) -> Result<Response<UpstreamBody>, String> {
        let within = p.first_token_timeout;
        // Every request a worker serves carries its client; nothing else calls this.
        let Some(outcall) = &self.outcall else {
            return Err("no worker client to call with".into());
        };
        let path = url.strip_prefix(p.dest.origin()).unwrap_or(url);
        let path = if path.is_empty() { "/" } else { path };
        match outcall.post(&p.dest, path, &headers, body, within).await {
            Ok(r) => Ok(r),
            Err(gatehouse_proxy::outcall::OutcallError::Timeout(_)) => {
                Err(format!("sent no answer within {} ms", within.as_millis()))
            }
            Err(e) => Err(error_chain(&e)),
        }
    }

    fn info(&self, target: &TargetRt) -> AiCallInfo {
        AiCallInfo {
            provider: target.provider.name.to_string(),
            model: self.model.to_string(),
            upstream_model: target.model.to_string(),
            fallbacks: self.tried.saturating_sub(1),
            ..AiCallInfo::default()
        }
    }

    fn settle(&mut self, target: &TargetRt) -> Settle {
        Settle {
            reservations: self.reservations.take().unwrap_or_default(),
            price: target.price,
            info: self.info(target),
            cell: self.cell.clone(),
            estimated_input: self.estimated_input,
            request: self.request.clone(),
        }
    }

    /// A streamed answer.
    pub(super) fn stream(
        &mut self,
        resp: Response<UpstreamBody>,
        tr: Translator,
        target: &TargetRt,
        headers: bool,
    ) -> Response<ProxyBody> {
        let p = &target.provider;
        let settle = self.settle(target);
        let decoder = match p.endpoint.wire {
            Wire::Bedrock => Decoder::Aws(gatehouse_ai::aws::Parser::default()),
            _ => Decoder::default(),
        };
        let body = AiBody::new(
            resp.into_body(),
            decoder,
            tr,
            settle,
            self.started,
            p.first_token_timeout,
            p.timeout,
        );
        let mut out = Response::new(ProxyBody::Dyn(Box::pin(body)));
        let h = out.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        if headers {
            usage_headers(h, &self.info(target), false);
        }
        out
    }

    /// A whole answer: read, checked, translated, settled.
    pub(super) async fn whole(
        &mut self,
        resp: Response<UpstreamBody>,
        surface: Surface,
        call: Call,
        target: &TargetRt,
        headers: bool,
    ) -> Result<Response<ProxyBody>, Failure> {
        let p = &target.provider;
        let wire = p.endpoint.wire;
        let left = p.timeout.saturating_sub(self.started.elapsed());
        // A provider is trusted with a stream's pace, not with unbounded memory.
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES);
        let read = tokio::time::timeout(left, limited.collect()).await;
        let bytes = match read {
            Err(_) => {
                return Err(self.fail(Failure::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "api_error",
                    "upstream_timeout",
                    format!(
                        "provider `{}` did not finish within {} ms",
                        p.name,
                        p.timeout.as_millis()
                    ),
                )))
            }
            Ok(Err(e)) => {
                let why = if e.is::<http_body_util::LengthLimitError>() {
                    format!("answered more than {MAX_ANSWER_BYTES} bytes")
                } else {
                    format!("broke off its answer: {}", error_chain(&*e))
                };
                return Err(self.fail(Failure::new(
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "upstream_error",
                    format!("provider `{}` {why}", p.name),
                )));
            }
            Ok(Ok(c)) => c.to_bytes(),
        };
        let expected = match (call, wire) {
            (Call::Embeddings, Wire::Gemini) => "embeddings",
            (Call::Embeddings, _) => "data",
            (_, Wire::OpenAi) => "choices",
            (_, Wire::Anthropic) => "content",
            (_, Wire::Gemini) => "candidates",
            (_, Wire::Bedrock) => "output",
        };
        let invalid = |what: String| {
            Failure::new(
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_invalid",
                what,
            )
        };
        let not_json = || {
            invalid(format!(
                "provider `{}` answered with something that is not JSON (an HTML page or garbage)",
                p.name
            ))
        };
        let without = || {
            invalid(format!(
                "provider `{}` answered JSON without `{expected}`",
                p.name
            ))
        };
        let translate = !matches!(
            (surface, wire),
            (Surface::OpenAi, Wire::OpenAi) | (Surface::Anthropic, Wire::Anthropic)
        );
        let (out, usage) = if translate {
            let v: Value = serde_json::from_slice(&bytes).map_err(|_| self.fail(not_json()))?;
            // Gemini may answer a blocked prompt with no candidates but its feedback.
            let blocked = wire == Wire::Gemini && v.get("promptFeedback").is_some();
            if !blocked
                && !v
                    .get(expected)
                    .is_some_and(|x| x.is_array() || x.is_object())
            {
                return Err(self.fail(without()));
            }
            let usage_field = match wire {
                Wire::Gemini => "usageMetadata",
                _ => "usage",
            };
            let usage = v
                .get(usage_field)
                .filter(|u| gatehouse_ai::usage::present(u))
                .map(|u| match wire {
                    Wire::OpenAi => Usage::from_openai(u),
                    Wire::Anthropic => Usage::from_anthropic(u),
                    Wire::Gemini => Usage::from_gemini(u),
                    Wire::Bedrock => Usage::from_bedrock(u),
                });
            let out = translate_answer(&v, wire, surface, call, &self.model);
            (Bytes::from(out.to_string()), usage)
        } else {
            // Passed on as it came: read only what is needed, without a JSON tree.
            let peek =
                gatehouse_ai::usage::Peek::of(&bytes).ok_or_else(|| self.fail(not_json()))?;
            if !peek.has(expected) {
                return Err(self.fail(without()));
            }
            (bytes, peek.usage())
        };
        // Only needed when the provider reported no usage.
        let output_estimate = match usage {
            None => serde_json::from_slice::<Value>(&out).map_or(0, |v| tokens::count_answer(&v)),
            Some(_) => 0,
        };
        let settle = self.settle(target);
        let cell = settle.cell.clone();
        settle.finish(usage, output_estimate).await;
        // A translated answer without the provider's usage carries the gateway's count
        // (a passed-through one is left as the provider wrote it).
        let out = match (usage, translate) {
            (None, true) => with_counted_usage(out, &cell, surface),
            _ => out,
        };
        let mut resp = Response::new(ProxyBody::full(out.clone()));
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        if headers {
            if let Some(info) = cell
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
            {
                usage_headers(h, info, true);
            }
        }
        Ok(resp)
    }
}

/// Puts the settled (counted) usage into a translated answer's `usage`.
fn with_counted_usage(out: Bytes, cell: &AiCallCell, surface: Surface) -> Bytes {
    let Some(usage) = cell
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .map(|i| i.usage)
    else {
        return out;
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&out) else {
        return out;
    };
    v["usage"] = match surface {
        Surface::OpenAi => usage.to_openai(),
        Surface::Anthropic => usage.to_anthropic(),
    };
    Bytes::from(v.to_string())
}

/// A whole answer from the provider's format into the client's.
fn translate_answer(v: &Value, wire: Wire, surface: Surface, call: Call, model: &str) -> Value {
    let openai = match (wire, call) {
        (Wire::Gemini, Call::Embeddings) => return gemini::embeddings_to_openai(v, model),
        (Wire::OpenAi, _) => {
            return match surface {
                Surface::Anthropic => anthropic::response_from_openai(v, model),
                Surface::OpenAi => v.clone(),
            }
        }
        (Wire::Anthropic, _) => anthropic::response_to_openai(v, model),
        (Wire::Gemini, _) => gemini::response_to_openai(v, model),
        (Wire::Bedrock, _) => bedrock::response_to_openai(v, model),
    };
    match surface {
        Surface::OpenAi => openai,
        Surface::Anthropic => anthropic::response_from_openai(&openai, model),
    }
}

/// What `send` got.
pub(super) enum Sent {
    /// A success from the provider (boxed: the connection's body is large, the other
    /// variants small).
    Ok(Box<Response<UpstreamBody>>),
    /// A client error (4xx other than 401/403/429): every key and target would get it too.
    ClientError(StatusCode, String),
    /// Try the next target.
    Next,
}

/// `X-Gatehouse-AI-*` headers.
fn usage_headers(h: &mut http::HeaderMap, info: &AiCallInfo, with_usage: bool) {
    let mut set = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(http::HeaderName::from_static(name), v);
        }
    };
    set("x-gatehouse-ai-provider", info.provider.clone());
    set("x-gatehouse-ai-model", info.upstream_model.clone());
    if with_usage {
        set("x-gatehouse-ai-input-tokens", info.usage.input.to_string());
        set(
            "x-gatehouse-ai-output-tokens",
            info.usage.output.to_string(),
        );
        set(
            "x-gatehouse-ai-cost-usd",
            format!("{:.6}", info.cost_micros as f64 / 1e6),
        );
        if info.usage.estimated {
            set("x-gatehouse-ai-usage-estimated", "true".into());
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Reads at most `limit` bytes of a body within `within`.
async fn read_limited(mut body: UpstreamBody, limit: usize, within: Duration) -> Bytes {
    let mut out = bytes::BytesMut::new();
    let _ = tokio::time::timeout(within, async {
        while let Some(Ok(f)) = body.frame().await {
            if let Some(d) = f.data_ref() {
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(&d[..d.len().min(room)]);
                if out.len() >= limit {
                    break;
                }
            }
        }
    })
    .await;
    out.freeze()
}

/// The message of a provider's error body in either format; `None` for HTML pages and
/// other text that is not one.
fn provider_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/message")
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
        .map(|m| m.chars().take(500).collect())
}
