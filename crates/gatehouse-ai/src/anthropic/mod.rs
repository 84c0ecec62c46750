//! OpenAI Chat Completions ⇄ Anthropic Messages, both ways: requests, whole answers and
//! streams. Streams are translated event by event by small state machines
//! ([`ToOpenAiStream`], [`FromOpenAiStream`]); nothing is buffered beyond one event.
//!
//! State that must survive a round trip through the OpenAI surface: Anthropic's thinking
//! blocks (with their signatures) come back on the assistant message as `thinking_blocks`
//! (and their text as `reasoning_content`); sent back on the next request's assistant
//! message, they are put first in its content, as Anthropic requires.

use serde_json::json;

use crate::sse;

mod request;
mod response;
mod stream;

pub(crate) use request::json_instruction;
pub use request::{request_from_openai, request_to_openai};
pub use response::{response_from_openai, response_to_openai};
pub use stream::{FromOpenAiStream, PassStream, ToOpenAiStream};

/// `max_tokens` when an OpenAI-format request sets none (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// OpenAI's finish reason for Anthropic's stop reason.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Anthropic's stop reason for OpenAI's finish reason.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// The error event a broken Anthropic-format stream ends with.
pub fn stream_error(message: &str) -> bytes::Bytes {
    sse::frame(
        Some("error"),
        &json!({"type": "error", "error": {"type": "api_error", "message": message}}).to_string(),
    )
}

#[cfg(test)]
mod tests;
