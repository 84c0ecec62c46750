//! `ai-proxy`: the route serves OpenAI's API (`/v1/chat/completions`, `/v1/embeddings`,
//! `/v1/models`) and Anthropic's (`/v1/messages`) beneath its path, over every provider of
//! the config. A request names a public model (`ai_models`); its targets are tried by
//! priority (weighted within one), each with a key from its provider's pool, until one
//! answers: a 429, 401/403, 5xx, timeout or connection failure before anything reached the
//! client moves on to the next key or target. Requests are translated when the client's
//! format and the provider's differ; OpenAI-format traffic to OpenAI-format providers passes
//! through with only the model and auth rewritten (plus `stream_options.include_usage`,
//! whose chunk the client gets only if it asked).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use gatehouse_ai::openai::{self, BadRequest};
use gatehouse_ai::provider::{Op, Wire};
use gatehouse_ai::{anthropic, bedrock, gemini, tokens, Usage};
use gatehouse_proxy::body::ProxyBody;
use gatehouse_proxy::plugin::{BuildCtx, Factory, Plugin, RequestCtx, ServeFuture};
use http::{HeaderValue, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::attempts::{Attempts, Sent};
use super::body::Translator;
use super::catalog::{Catalog, ModelRt, TargetRt};
use super::{AiCallCell, AiLimits, Estimate, Reservation};
use crate::config;

fn default_attempts() -> u32 {
    4
}
fn default_max_tokens() -> u64 {
    4096
}

/// Settings of `ai-proxy`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AiProxyConfig {
    /// Serve only this public model, whatever the request names.
    #[serde(default)]
    pub model: Option<String>,
    /// The public models this route serves (empty: every `ai_models` entry).
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// Add `X-Gatehouse-AI-*` headers (provider, model, tokens, cost) to answers; streamed
    /// answers get provider and model only (their usage is known at the end).
    #[serde(default)]
    pub usage_headers: bool,
    /// Most attempts (keys and targets) for one request before giving up.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// `max_tokens` given to a chat request that sets none while an `ai-budget` or
    /// `ai-rate-limiting` limit applies, so the reservation bounds the call.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
}

/// The `ai-proxy` factory.
pub struct AiProxy;

impl Factory for AiProxy {
    fn name(&self) -> &'static str {
        "ai-proxy"
    }
    fn priority(&self) -> i32 {
        // After authentication, limits and prompt plugins; it answers the request itself.
        700
    }
    fn check(&self, v: &Value) -> Vec<(String, String)> {
        config::check::<AiProxyConfig>(v, |c| {
            let mut e = Vec::new();
            if !(1..=20).contains(&c.max_attempts) {
                e.push(("max_attempts".into(), "must be 1-20".into()));
            }
            if !(1..=10_000_000).contains(&c.default_max_tokens) {
                e.push(("default_max_tokens".into(), "must be 1-10000000".into()));
            }
            if let (Some(m), false) = (&c.model, c.allowed_models.is_empty()) {
                if !c.allowed_models.contains(m) {
                    e.push(("model".into(), "must be one of allowed_models".into()));
                }
            }
            e
        })
    }
    fn build(&self, v: &Value, ctx: &BuildCtx) -> Result<Arc<dyn Plugin>, String> {
        let c: AiProxyConfig = config::parse(v).map_err(|(p, m)| format!("{p}: {m}"))?;
        let catalog = super::catalog::of_snapshot(ctx)?;
        // The tokenizer (for providers that report no usage) loads off the request path.
        static WARM: std::sync::Once = std::sync::Once::new();
        WARM.call_once(|| {
            std::thread::spawn(tokens::warm);
        });
        for m in c.model.iter().chain(&c.allowed_models) {
            if !catalog.models.contains_key(m) {
                return Err(format!("no ai_model `{m}`"));
            }
        }
        Ok(Arc::new(Compiled {
            c: Arc::new(c),
            catalog,
        }))
    }
    fn schema(&self) -> Value {
        config::schema::<AiProxyConfig>()
    }
    fn filled(&self, config: &Value) -> Option<Value> {
        config::filled::<AiProxyConfig>(config)
    }
}

struct Compiled {
    c: Arc<AiProxyConfig>,
    catalog: Arc<Catalog>,
}

/// The API format the client speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Surface {
    OpenAi,
    Anthropic,
}

/// What the client asked for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Call {
    Chat(Surface),
    Embeddings,
    Models,
}

fn call_of(method: &Method, path: &str) -> Option<Call> {
    let path = path.trim_end_matches('/');
    match (method, path) {
        (&Method::POST, p) if p.ends_with("/chat/completions") => Some(Call::Chat(Surface::OpenAi)),
        (&Method::POST, p) if p.ends_with("/messages") => Some(Call::Chat(Surface::Anthropic)),
        (&Method::POST, p) if p.ends_with("/embeddings") => Some(Call::Embeddings),
        (&Method::GET, p) if p.ends_with("/models") => Some(Call::Models),
        _ => None,
    }
}

/// An answer the gateway makes, in the client's format.
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) kind: &'static str,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) param: Option<String>,
    pub(super) retry_after_s: Option<u64>,
}

impl Failure {
    pub(super) fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Failure {
        Failure {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            retry_after_s: None,
        }
    }
    fn bad(e: BadRequest) -> Failure {
        Failure {
            param: Some(e.field.clone()),
            ..Failure::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                e.to_string(),
            )
        }
    }
    fn respond(&self, surface: Surface, rid: &HeaderValue) -> Response<ProxyBody> {
        let rid = rid.to_str().unwrap_or("");
        let body = match surface {
            Surface::OpenAi => {
                let mut v =
                    openai::error_body(&self.message, self.kind, self.code, self.param.as_deref());
                v["error"]["request_id"] = json!(rid);
                v
            }
            Surface::Anthropic => {
                json!({"type": "error", "error": {"type": self.kind, "message": self.message}, "request_id": rid})
            }
        };
        let mut resp = json_response(self.status, &body);
        if let Some(s) = self.retry_after_s {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(s.max(1)));
        }
        resp
    }
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let bytes = Bytes::from(body.to_string());
    let len = bytes.len();
    let mut resp = Response::new(ProxyBody::full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// Everything one call needs, moved into its future.
pub(super) struct CallCtx {
    pub(super) c: Arc<AiProxyConfig>,
    catalog: Arc<Catalog>,
    limits: Option<AiLimits>,
    pub(super) cell: AiCallCell,
    rid: HeaderValue,
    pub(super) started: Instant,
    pub(super) outcall: Option<gatehouse_proxy::outcall::Outcall>,
}

impl Plugin for Compiled {
    fn serves(&self) -> bool {
        true
    }

    fn serve(&self, ctx: &mut RequestCtx, req: http::request::Parts, body: Bytes) -> ServeFuture {
        let cell: AiCallCell = Arc::default();
        ctx.extensions.insert(cell.clone());
        let call = CallCtx {
            c: self.c.clone(),
            catalog: self.catalog.clone(),
            limits: ctx.extensions.get::<AiLimits>().cloned(),
            cell,
            rid: ctx.request_id.clone(),
            started: ctx.request.started,
            outcall: ctx.outcall.clone(),
        };
        let prompt = ctx.extensions.get::<super::prompt::PromptCall>().is_some();
        let kind = if prompt {
            Some(Call::Chat(Surface::OpenAi))
        } else {
            call_of(&req.method, req.uri.path())
        };
        Box::pin(async move {
            let surface = match kind {
                Some(Call::Chat(s)) => s,
                _ => Surface::OpenAi,
            };
            let r = match kind {
                None => Err(Failure::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "unknown_url",
                    format!(
                        "no AI endpoint {} {}: this route serves POST /v1/chat/completions, POST /v1/messages, POST /v1/embeddings and GET /v1/models",
                        req.method,
                        req.uri.path()
                    ),
                )),
                Some(Call::Models) => Ok(call.models()),
                Some(Call::Chat(s)) if prompt => call.chat(s, &body).await.and_then(prompt_answer),
                Some(Call::Chat(s)) => call.chat(s, &body).await,
                Some(Call::Embeddings) => call.embeddings(&body).await,
            };
            r.unwrap_or_else(|f| f.respond(surface, &call.rid))
        })
    }
}

impl CallCtx {
    fn allowed(&self, name: &str) -> bool {
        match &self.c.model {
            Some(m) => m == name,
            None => {
                self.c.allowed_models.is_empty() || self.c.allowed_models.iter().any(|m| m == name)
            }
        }
    }

    fn models(&self) -> Response<ProxyBody> {
        let mut names: Vec<&Arc<ModelRt>> = self
            .catalog
            .models
            .values()
            .filter(|m| self.allowed(&m.name))
            .collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        let data: Vec<Value> = names
            .iter()
            .map(|m| json!({"id": &*m.name, "object": "model", "created": m.created, "owned_by": "gatehouse"}))
            .collect();
        json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
    }

    /// The model the request names (or the pinned one), if this route serves it.
    fn model(&self, body: &Value) -> Result<Arc<ModelRt>, Failure> {
        let name = match &self.c.model {
            Some(m) => m.as_str(),
            None => body.get("model").and_then(Value::as_str).ok_or_else(|| {
                Failure::bad(BadRequest::new("model", "is required and must be a string"))
            })?,
        };
        self.catalog
            .models
            .get(name)
            .filter(|_| self.allowed(name))
            .cloned()
            .ok_or_else(|| Failure {
                param: Some("model".into()),
                ..Failure::new(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    "model_not_found",
                    format!("The model `{name}` does not exist or you do not have access to it."),
                )
            })
    }

    async fn chat(&self, surface: Surface, raw: &Bytes) -> Result<Response<ProxyBody>, Failure> {
        let mut body = parse_json(raw)?;
        let model = self.model(&body)?;
        openai::validate_chat(&body, surface == Surface::Anthropic).map_err(Failure::bad)?;
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let client_wants_usage = openai::wants_usage(&body);
        let max_field = ["max_completion_tokens", "max_tokens"]
            .into_iter()
            .find(|f| body.get(*f).is_some());
        let limited = self.limits.as_ref().is_some_and(|l| !l.0.is_empty());
        if max_field.is_none() && limited {
            body["max_tokens"] = json!(self.c.default_max_tokens);
        }
        let max_output = ["max_completion_tokens", "max_tokens"]
            .into_iter()
            .find_map(|f| body.get(f).and_then(Value::as_u64))
            .unwrap_or(self.c.default_max_tokens);
        // The prompt estimate: exact enough for reservations; without a limit it only
        // stands in for a provider that reports no usage, so the raw size serves.
        let input = if limited {
            tokens::of_request(&body)
        } else {
            (raw.len() as u64 * 2).div_ceil(7)
        };
        let reservations = self.reserve(&model, input, max_output).await?;
        let mut attempt = Attempts::new(self, &model, reservations, input, raw.clone());
        // An Anthropic client of a Gemini or Bedrock provider goes through OpenAI's form.
        let as_openai = match surface {
            Surface::Anthropic
                if model
                    .targets
                    .iter()
                    .any(|t| needs_openai_form(t.provider.endpoint.wire)) =>
            {
                Some(anthropic::request_to_openai(&body, "").map_err(Failure::bad)?)
            }
            _ => None,
        };
        for target in model.attempt_order() {
            let wire = target.provider.endpoint.wire;
            let (bytes, tr) = match self.upstream_request(
                surface,
                &mut body,
                as_openai.as_ref(),
                &target,
                &model.name,
                client_wants_usage,
            ) {
                Ok(x) => x,
                Err(e) => return Err(attempt.fail(Failure::bad(e))),
            };
            let op = if stream { Op::ChatStream } else { Op::Chat };
            let resp = match attempt.send(&target, op, bytes).await {
                Sent::Ok(r) => *r,
                Sent::Next => continue,
                Sent::ClientError(status, message) => {
                    return Err(attempt.fail(provider_refused(status, &target, message)))
                }
            };
            let streamed = resp
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| match wire {
                    Wire::Bedrock => v.starts_with("application/vnd.amazon.eventstream"),
                    _ => v.starts_with("text/event-stream"),
                });
            if stream && streamed {
                return Ok(attempt.stream(resp, tr, &target, self.c.usage_headers));
            }
            return attempt
                .whole(
                    resp,
                    surface,
                    Call::Chat(surface),
                    &target,
                    self.c.usage_headers,
                )
                .await;
        }
        Err(attempt.exhausted())
    }

    /// What `target`'s provider gets, and how its stream reaches the client. OpenAI-format
    /// requests to OpenAI-format providers are changed in place (model and forced usage
    /// only; a later target rewrites the model again, translations ignore both).
    fn upstream_request(
        &self,
        surface: Surface,
        body: &mut Value,
        as_openai: Option<&Value>,
        target: &TargetRt,
        public: &str,
        client_wants_usage: bool,
    ) -> Result<(Bytes, Translator), BadRequest> {
        let wire = target.provider.endpoint.wire;
        let openai_body: &Value = match (surface, as_openai) {
            (Surface::Anthropic, Some(v)) => v,
            _ => body,
        };
        let translated = |tr: Translator| match surface {
            Surface::OpenAi => tr,
            Surface::Anthropic => Translator::via_openai(tr, public),
        };
        // An Anthropic client gets usage from the inner translation's usage chunk.
        let usage_chunk = client_wants_usage || surface == Surface::Anthropic;
        Ok(match (surface, wire) {
            (Surface::OpenAi, Wire::OpenAi) => {
                openai::prepare(body, &target.model);
                (
                    Bytes::from(body.to_string()),
                    Translator::PassOpenAi(openai::PassStream::new(client_wants_usage)),
                )
            }
            (Surface::OpenAi, Wire::Anthropic) => (
                Bytes::from(anthropic::request_from_openai(body, &target.model)?.to_string()),
                Translator::ToOpenAi(anthropic::ToOpenAiStream::new(public, client_wants_usage)),
            ),
            (Surface::Anthropic, Wire::Anthropic) => {
                body["model"] = json!(&*target.model);
                (
                    Bytes::from(body.to_string()),
                    Translator::PassAnthropic(anthropic::PassStream::default()),
                )
            }
            (Surface::Anthropic, Wire::OpenAi) => (
                Bytes::from(anthropic::request_to_openai(body, &target.model)?.to_string()),
                Translator::ToAnthropic(anthropic::FromOpenAiStream::new(public)),
            ),
            (_, Wire::Gemini) => (
                Bytes::from(gemini::request_from_openai(openai_body)?.to_string()),
                translated(Translator::FromGemini(gemini::ToOpenAiStream::new(
                    public,
                    usage_chunk,
                ))),
            ),
            (_, Wire::Bedrock) => (
                Bytes::from(bedrock::request_from_openai(openai_body, &target.model)?.to_string()),
                translated(Translator::FromBedrock(bedrock::ToOpenAiStream::new(
                    public,
                    usage_chunk,
                ))),
            ),
        })
    }

    async fn embeddings(&self, raw: &Bytes) -> Result<Response<ProxyBody>, Failure> {
        let mut body = parse_json(raw)?;
        let model = self.model(&body)?;
        if body.get("input").is_none_or(Value::is_null) {
            return Err(Failure::bad(BadRequest::new("input", "is required")));
        }
        let input = tokens::of_request(&body);
        let reservations = self.reserve(&model, input, 0).await?;
        let mut attempt = Attempts::new(self, &model, reservations, input, raw.clone());
        for target in model.attempt_order() {
            let endpoint = &target.provider.endpoint;
            if endpoint.url(Op::Embeddings, &target.model).is_none() {
                continue;
            }
            let bytes = match endpoint.wire {
                Wire::Gemini => match gemini::embeddings_from_openai(&body, &target.model) {
                    Ok(v) => Bytes::from(v.to_string()),
                    Err(e) => return Err(attempt.fail(Failure::bad(e))),
                },
                _ => {
                    body["model"] = json!(&*target.model);
                    Bytes::from(body.to_string())
                }
            };
            let resp = match attempt.send(&target, Op::Embeddings, bytes).await {
                Sent::Ok(r) => *r,
                Sent::Next => continue,
                Sent::ClientError(status, message) => {
                    return Err(attempt.fail(provider_refused(status, &target, message)))
                }
            };
            return attempt
                .whole(
                    resp,
                    Surface::OpenAi,
                    Call::Embeddings,
                    &target,
                    self.c.usage_headers,
                )
                .await;
        }
        if attempt.tried == 0 {
            return Err(attempt.fail(Failure {
                param: Some("model".into()),
                ..Failure::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "embeddings_not_supported",
                    format!("no provider of `{}` offers embeddings", model.name),
                )
            }));
        }
        Err(attempt.exhausted())
    }

    /// Reserves the call's worst case on every limit of the request; on a refusal, what was
    /// reserved is given back and the refusal answered.
    async fn reserve(
        &self,
        model: &ModelRt,
        input: u64,
        max_output: u64,
    ) -> Result<Vec<Box<dyn Reservation>>, Failure> {
        let Some(limits) = &self.limits else {
            return Ok(Vec::new());
        };
        let worst = model
            .targets
            .iter()
            .filter_map(|t| t.price)
            .map(|p| p.worst_case_micros(input, max_output))
            .max()
            .unwrap_or(0);
        let est = Estimate {
            model: model.name.clone(),
            input_tokens: input,
            max_output,
            worst_cost_micros: worst,
        };
        let mut held: Vec<Box<dyn Reservation>> = Vec::new();
        for l in &limits.0 {
            match l.reserve(&est).await {
                Ok(r) => held.push(r),
                Err(refusal) => {
                    for r in held {
                        r.settle(&Usage::default(), 0).await;
                    }
                    return Err(Failure {
                        retry_after_s: Some(refusal.retry_after_s),
                        ..Failure::new(
                            StatusCode::from_u16(refusal.status)
                                .unwrap_or(StatusCode::TOO_MANY_REQUESTS),
                            "rate_limit_error",
                            refusal.code,
                            refusal.message,
                        )
                    });
                }
            }
        }
        Ok(held)
    }
}

/// True for providers an Anthropic client reaches through OpenAI's form.
fn needs_openai_form(wire: Wire) -> bool {
    matches!(wire, Wire::Gemini | Wire::Bedrock)
}

/// A provider's refusal of the request itself (a 400 for an unknown parameter…), in the
/// client's format with the provider's words.
fn provider_refused(status: StatusCode, target: &TargetRt, message: String) -> Failure {
    Failure::new(
        status,
        "invalid_request_error",
        "provider_refused",
        format!(
            "provider `{}` refused the request: {message}",
            target.provider.name
        ),
    )
}

/// A prompt API's answer: the completion's text (and its usage) instead of the whole
/// chat completion.
fn prompt_answer(resp: Response<ProxyBody>) -> Result<Response<ProxyBody>, Failure> {
    let (parts, body) = resp.into_parts();
    let ProxyBody::Full(Some(bytes)) = body else {
        return Ok(Response::from_parts(parts, body));
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let text = v
        .pointer("/choices/0/message/content")
        .cloned()
        .unwrap_or(Value::Null);
    let out = json!({"text": text, "model": v.get("model"), "usage": v.get("usage")});
    let mut resp = json_response(parts.status, &out);
    for (k, val) in parts.headers.iter() {
        if k.as_str().starts_with("x-gatehouse-ai-") {
            resp.headers_mut().insert(k.clone(), val.clone());
        }
    }
    Ok(resp)
}

fn parse_json(raw: &Bytes) -> Result<Value, Failure> {
    let v: Value = serde_json::from_slice(raw)
        .map_err(|e| Failure::bad(BadRequest::new("body", format!("is not valid JSON: {e}"))))?;
    if !v.is_object() {
        return Err(Failure::bad(BadRequest::new(
            "body",
            "must be a JSON object",
        )));
    }
    Ok(v)
}
