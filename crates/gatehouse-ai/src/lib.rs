//! The AI gateway's core, free of the proxy: what the AI plugins use to speak to LLM
//! providers.
//!
//! - [`sse`]: incremental Server-Sent Events parsing (chunk in, events out).
//! - [`anthropic`]: translation between OpenAI's Chat Completions and Anthropic's Messages
//!   API, both ways, for whole answers and for streams (a state machine per stream: no
//!   stream is ever buffered whole).
//! - [`gemini`]: OpenAI → Gemini `generateContent` (Gemini API and Vertex AI), answers and
//!   streams back; [`google`]: Vertex AI service-account credentials.
//! - [`bedrock`]: OpenAI → Bedrock Converse, answers and event streams back; [`aws`]:
//!   SigV4 signing and the event-stream framing; [`decode`]: either framing as events.
//!   A client speaking Anthropic's format reaches these through the OpenAI form.
//! - [`openai`]: what the gateway changes in an OpenAI-format request or stream it passes
//!   through (model, `stream_options.include_usage`, the usage chunk).
//! - [`usage`]: one normalized usage record from either format; [`price`]: what it costs.
//! - [`keys`]: a provider's key pool (weights, cooldowns).
//! - [`provider`]: per provider kind, the URL, auth headers and wire format.
//! - [`tokens`]: the estimate used when a provider reports no usage.

pub mod anthropic;
pub mod aws;
pub mod bedrock;
mod chat;
pub mod decode;
pub mod gemini;
pub mod google;
pub mod keys;
pub mod openai;
pub mod price;
pub mod provider;
pub mod sse;
pub mod tokens;
pub mod usage;

pub use usage::Usage;
