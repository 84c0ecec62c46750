//! A provider's stream on its way to the client: parsed event by event, translated when the
//! client speaks another format, its usage picked up, and the call settled (limits, metrics,
//! call info) exactly once when it ends — normally, broken, timed out, or abandoned by the
//! client. A client that goes away does not stop the bill: the rest of the provider's
//! stream is read in the background (bounded) for its usage.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gatehouse_ai::decode::Decoder;
use gatehouse_ai::price::Price;
use gatehouse_ai::sse::{self, Event};
use gatehouse_ai::{anthropic, bedrock, gemini, openai, Usage};
use gatehouse_proxy::body::BoxError;
use http_body::{Body, Frame};
use tokio::time::Sleep;

use super::{AiCallCell, AiCallInfo, Reservation};

/// A provider's answer body, read from the worker's own HTTP/1 connection (not `Send`: it
/// returns the connection to the worker's pool when it ends).
pub type UpstreamBody = gatehouse_proxy::h1::ResponseBody;

/// How long an abandoned stream is still read for its usage.
pub const DRAIN_MAX: Duration = Duration::from_secs(30);
/// How many bytes of an abandoned stream are read at most.
pub const DRAIN_MAX_BYTES: usize = 8 * 1024 * 1024;

/// How a stream is carried from the provider's format to the client's.
pub enum Translator {
    /// OpenAI → OpenAI.
    PassOpenAi(openai::PassStream),
    /// Anthropic → Anthropic.
    PassAnthropic(anthropic::PassStream),
    /// Anthropic provider → OpenAI client.
    ToOpenAi(anthropic::ToOpenAiStream),
    /// OpenAI provider → Anthropic client.
    ToAnthropic(anthropic::FromOpenAiStream),
    /// Gemini provider → OpenAI client.
    FromGemini(gemini::ToOpenAiStream),
    /// Bedrock provider → OpenAI client.
    FromBedrock(bedrock::ToOpenAiStream),
    /// Gemini or Bedrock provider → Anthropic client, through the OpenAI form.
    ViaOpenAi(Box<ViaOpenAi>),
}

impl Translator {
    /// An Anthropic client's translation from a provider that is translated to OpenAI's
    /// form (`inner`, made with the usage chunk on).
    pub fn via_openai(inner: Translator, model: &str) -> Translator {
        Translator::ViaOpenAi(Box::new(ViaOpenAi {
            inner,
            parser: sse::Parser::default(),
            scratch: BytesMut::new(),
            events: Vec::new(),
            outer: anthropic::FromOpenAiStream::new(model),
        }))
    }

    fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        match self {
            Translator::PassOpenAi(t) => t.event(ev, out),
            Translator::PassAnthropic(t) => t.event(ev, out),
            Translator::ToOpenAi(t) => t.event(ev, out),
            Translator::ToAnthropic(t) => t.event(ev, out),
            Translator::FromGemini(t) => t.event(ev, out),
            Translator::FromBedrock(t) => t.event(ev, out),
            Translator::ViaOpenAi(t) => t.event(ev, out),
        }
    }
    /// At the provider's end of stream: closing events a translation owes the client.
    fn finish(&mut self, out: &mut BytesMut) {
        match self {
            Translator::ToAnthropic(t) if t.usage.is_some() || t.content_seen => t.finish(out),
            Translator::FromBedrock(t) => t.finish(out),
            Translator::ViaOpenAi(t) => t.finish(out),
            _ => {}
        }
    }
    fn usage(&self) -> Option<Usage> {
        match self {
            Translator::PassOpenAi(t) => t.usage,
            Translator::PassAnthropic(t) => t.usage,
            Translator::ToOpenAi(t) => t.usage,
            Translator::ToAnthropic(t) => t.usage,
            Translator::FromGemini(t) => t.usage,
            Translator::FromBedrock(t) => t.usage,
            Translator::ViaOpenAi(t) => t.inner.usage(),
        }
    }
    fn done(&self) -> bool {
        match self {
            Translator::PassOpenAi(t) => t.done,
            Translator::PassAnthropic(t) => t.done,
            Translator::ToOpenAi(t) => t.done,
            Translator::ToAnthropic(t) => t.done,
            Translator::FromGemini(t) => t.done,
            Translator::FromBedrock(t) => t.done,
            Translator::ViaOpenAi(t) => t.outer.done,
        }
    }
    fn content_seen(&self) -> bool {
        match self {
            Translator::PassOpenAi(t) => t.content_seen,
            Translator::PassAnthropic(t) => t.content_seen,
            Translator::ToOpenAi(t) => t.content_seen,
            Translator::ToAnthropic(t) => t.content_seen,
            Translator::FromGemini(t) => t.content_seen,
            Translator::FromBedrock(t) => t.content_seen,
            Translator::ViaOpenAi(t) => t.inner.content_seen(),
        }
    }
    /// The error event in the client's format.
    fn error(&self, message: &str) -> Bytes {
        match self {
            Translator::PassOpenAi(_)
            | Translator::ToOpenAi(_)
            | Translator::FromGemini(_)
            | Translator::FromBedrock(_) => openai::stream_error(message),
            Translator::PassAnthropic(_)
            | Translator::ToAnthropic(_)
            | Translator::ViaOpenAi(_) => anthropic::stream_error(message),
        }
    }
}

/// Two translations in a row: the provider's stream into OpenAI chunks, those into
/// Anthropic events (the chunks are re-read from bytes: only Anthropic clients of Gemini
/// and Bedrock take this path).
pub struct ViaOpenAi {
    inner: Translator,
    parser: sse::Parser,
    scratch: BytesMut,
    events: Vec<Event>,
    outer: anthropic::FromOpenAiStream,
}

impl ViaOpenAi {
    fn event(&mut self, ev: &Event, out: &mut BytesMut) {
        self.inner.event(ev, &mut self.scratch);
        self.pass(out);
    }
    fn pass(&mut self, out: &mut BytesMut) {
        let chunk = self.scratch.split();
        // OpenAI chunks the gateway wrote itself: no line comes near the parser's limit.
        let _ = self.parser.feed(&chunk, &mut self.events);
        for e in self.events.drain(..) {
            self.outer.event(&e, out);
        }
    }
    fn finish(&mut self, out: &mut BytesMut) {
        self.inner.finish(&mut self.scratch);
        self.pass(out);
        if self.outer.usage.is_some() || self.outer.content_seen {
            self.outer.finish(out);
        }
    }
}

/// Settles a call once: limits, metrics and the call info for the log phase.
pub struct Settle {
    /// Reservations to settle.
    pub reservations: Vec<Box<dyn Reservation>>,
    /// The target's price.
    pub price: Option<Price>,
    /// Provider, models, fallbacks, time to first token.
    pub info: AiCallInfo,
    /// Where the log phase reads the result.
    pub cell: AiCallCell,
    /// Prompt tokens estimated from the request (if even the tokenizer cannot count).
    pub estimated_input: u64,
    /// The client's request, counted with the tokenizer when the provider reports no
    /// usage (shared, not copied).
    pub request: Bytes,
}

impl Settle {
    /// Settles with the provider's usage, or — flagged `estimated` — the request's tokens
    /// and `output` tokens counted in what the client got.
    pub async fn finish(self, usage: Option<Usage>, output: u64) {
        self.conclude(usage, output).await;
    }

    /// Records the call at once (metrics, and the call info the log phase reads, which must
    /// be there when the response body ends) and returns the settlement of the limits,
    /// which may need Redis.
    pub fn conclude(
        mut self,
        usage: Option<Usage>,
        output: u64,
    ) -> impl std::future::Future<Output = ()> + Send {
        let usage = usage.unwrap_or_else(|| Usage {
            input: serde_json::from_slice::<serde_json::Value>(&self.request)
                .map_or(self.estimated_input, |v| {
                    gatehouse_ai::tokens::count_request(&v)
                }),
            output,
            estimated: true,
            ..Usage::default()
        });
        let cost = self.price.map_or(0, |p| p.cost_micros(&usage));
        self.info.usage = usage;
        self.info.cost_micros = cost;
        super::metrics::record(&self.info);
        if usage.estimated {
            tracing::info!(provider = %self.info.provider, model = %self.info.model,
                input = usage.input, output = usage.output, "ai usage estimated: the provider reported none");
        }
        *self
            .cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(self.info);
        let reservations = std::mem::take(&mut self.reservations);
        async move {
            for r in reservations {
                r.settle(&usage, cost).await;
            }
        }
    }
}

/// The streamed answer.
pub struct AiBody {
    upstream: Option<UpstreamBody>,
    parser: Decoder,
    tr: Translator,
    out: BytesMut,
    events: Vec<Event>,
    total: Pin<Box<Sleep>>,
    first_token: Option<Pin<Box<Sleep>>>,
    first_token_timeout: Duration,
    settle: Option<Settle>,
    started: Instant,
    delivered: Delivered,
    ended: bool,
}

/// Most bytes of a stream kept to count its tokens if the provider reports no usage.
const DELIVERED_MAX: usize = 4 * 1024 * 1024;

/// What a stream's client got (the frames themselves, shared, not copied), to count
/// tokens in when the provider reports none.
#[derive(Default)]
struct Delivered {
    frames: Vec<Bytes>,
    len: usize,
}

impl Delivered {
    fn keep(&mut self, b: &Bytes) {
        if self.len < DELIVERED_MAX {
            self.len += b.len();
            self.frames.push(b.clone());
        }
    }
    /// Output tokens counted in what was delivered (0 when the usage is known).
    fn tokens(&self, usage: Option<Usage>) -> u64 {
        if usage.is_some() {
            return 0;
        }
        gatehouse_ai::tokens::count_stream(&self.frames.concat())
    }
}

impl AiBody {
    /// Streams `upstream` through `tr`; the call is settled by `settle` when it ends.
    pub fn new(
        upstream: UpstreamBody,
        parser: Decoder,
        tr: Translator,
        settle: Settle,
        started: Instant,
        first_token_timeout: Duration,
        total_timeout: Duration,
    ) -> AiBody {
        AiBody {
            upstream: Some(upstream),
            parser,
            tr,
            out: BytesMut::new(),
            events: Vec::new(),
            total: Box::pin(tokio::time::sleep_until(
                tokio::time::Instant::from_std(started) + total_timeout,
            )),
            first_token: Some(Box::pin(tokio::time::sleep(first_token_timeout))),
            first_token_timeout,
            settle: Some(settle),
            started,
            delivered: Delivered::default(),
            ended: false,
        }
    }

    fn translate(&mut self) {
        for ev in self.events.drain(..) {
            self.tr.event(&ev, &mut self.out);
            if self.tr.content_seen() && self.first_token.take().is_some() {
                if let Some(s) = &mut self.settle {
                    s.info.ttft_ms = Some(self.started.elapsed().as_millis() as u64);
                }
            }
        }
    }

    /// Ends the stream: an error event if it did not finish properly, then settlement.
    fn end(&mut self, error: Option<&str>) {
        if let Some(msg) = error {
            let e = self.tr.error(msg);
            self.out.extend_from_slice(&e);
        }
        self.ended = true;
        self.upstream = None;
        if let Some(s) = self.settle.take() {
            let usage = self.tr.usage();
            tokio::spawn(s.conclude(usage, self.delivered.tokens(usage)));
        }
    }
}

impl Body for AiBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let me = self.get_mut();
        loop {
            if !me.out.is_empty() {
                let data = me.out.split().freeze();
                me.delivered.keep(&data);
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if me.ended {
                return Poll::Ready(None);
            }
            if me.total.as_mut().poll(cx).is_ready() {
                me.end(Some("the provider did not finish within the timeout"));
                continue;
            }
            if let Some(ft) = &mut me.first_token {
                if ft.as_mut().poll(cx).is_ready() {
                    let msg = format!(
                        "no token from the provider within {} ms",
                        me.first_token_timeout.as_millis()
                    );
                    me.end(Some(&msg));
                    continue;
                }
            }
            let Some(up) = me.upstream.as_mut() else {
                me.end(None);
                continue;
            };
            match Pin::new(up).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        if me.parser.feed(d, &mut me.events).is_err() {
                            me.end(Some("the provider sent an invalid event stream"));
                            continue;
                        }
                        me.translate();
                        if me.tr.done() {
                            me.end(None);
                        }
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "ai provider stream broke");
                    me.end(Some("the provider's stream broke off"));
                }
                Poll::Ready(None) => {
                    me.parser.finish(&mut me.events);
                    me.translate();
                    me.tr.finish(&mut me.out);
                    if me.tr.done() {
                        me.end(None);
                    } else {
                        me.end(Some("the provider's stream ended before it finished"));
                    }
                }
            }
        }
    }
}

impl Drop for AiBody {
    /// The client went away before the end: read on for the usage, then settle.
    fn drop(&mut self) {
        let Some(settle) = self.settle.take() else {
            return;
        };
        let Some(upstream) = self.upstream.take() else {
            let usage = self.tr.usage();
            tokio::spawn(settle.finish(usage, self.delivered.tokens(usage)));
            return;
        };
        let tr = std::mem::replace(
            &mut self.tr,
            Translator::PassOpenAi(openai::PassStream::new(false)),
        );
        let parser = std::mem::take(&mut self.parser);
        let delivered = std::mem::take(&mut self.delivered);
        // Workers run their tasks on a LocalSet; the body (the worker's connection) stays
        // on its thread.
        tokio::task::spawn_local(drain(upstream, parser, tr, settle, delivered));
    }
}

/// Reads an abandoned stream (at most [`DRAIN_MAX`] and [`DRAIN_MAX_BYTES`]) for its usage.
async fn drain(
    mut upstream: UpstreamBody,
    mut parser: Decoder,
    mut tr: Translator,
    settle: Settle,
    mut delivered: Delivered,
) {
    let work = async {
        let mut read = 0usize;
        let mut events = Vec::new();
        let mut sink = BytesMut::new();
        while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut upstream).await {
            if let Some(d) = frame.data_ref() {
                read += d.len();
                if parser.feed(d, &mut events).is_err() {
                    break;
                }
                for ev in events.drain(..) {
                    tr.event(&ev, &mut sink);
                }
                // What the client would have got counts if no usage comes.
                delivered.keep(&sink.split().freeze());
                if tr.done() || read > DRAIN_MAX_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_MAX, work).await;
    let usage = tr.usage();
    tracing::debug!(
        found = usage.is_some(),
        "ai stream abandoned by the client; billed"
    );
    settle.finish(usage, delivered.tokens(usage)).await;
}
