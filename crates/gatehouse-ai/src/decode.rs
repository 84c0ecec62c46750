//! A provider's stream framing, decoded into [`Event`]s whatever it is: Server-Sent Events
//! (OpenAI, Anthropic, Gemini) or AWS event-stream frames (Bedrock).

use crate::sse::Event;
use crate::{aws, sse};

/// The framing of one provider stream.
pub enum Decoder {
    /// `text/event-stream`.
    Sse(sse::Parser),
    /// `application/vnd.amazon.eventstream`.
    Aws(aws::Parser),
}

/// The stream broke its framing.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// SSE.
    #[error(transparent)]
    Sse(#[from] sse::TooLong),
    /// AWS event stream.
    #[error(transparent)]
    Aws(#[from] aws::FrameError),
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::Sse(sse::Parser::default())
    }
}

impl Decoder {
    /// Feeds bytes; appends the events they complete to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), DecodeError> {
        match self {
            Decoder::Sse(p) => Ok(p.feed(chunk, out)?),
            Decoder::Aws(p) => Ok(p.feed(chunk, out)?),
        }
    }

    /// At the end of the stream: an SSE event left without its blank line (an AWS message
    /// is whole or nothing).
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if let Decoder::Sse(p) = self {
            p.finish(out);
        }
    }
}
