//! Server-Sent Events, incrementally: bytes in as they arrive, whole events out. A line
//! split across chunks waits for its end; nothing else is held back.

use bytes::{BufMut, Bytes, BytesMut};

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// Longest line accepted (a provider sending more without a line end is broken).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Parses a stream of SSE bytes.
#[derive(Default)]
pub struct Parser {
    buf: BytesMut,
    cur: Event,
    has_data: bool,
    /// A `\r` ended the last line: a `\n` right after it belongs to it.
    after_cr: bool,
}

/// The stream broke the SSE grammar.
#[derive(Debug, thiserror::Error)]
#[error("event stream line longer than {MAX_LINE} bytes")]
pub struct TooLong;

impl Parser {
    /// Feeds bytes; appends the events they complete to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), TooLong> {
        let mut rest = chunk;
        if self.after_cr {
            if let Some(r) = rest.strip_prefix(b"\n") {
                rest = r;
            }
            self.after_cr = false;
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', rest) {
            let line_end = rest[i];
            if self.buf.is_empty() {
                self.line(&rest[..i], out);
            } else {
                self.buf.extend_from_slice(&rest[..i]);
                let line = std::mem::take(&mut self.buf);
                self.line(&line, out);
            }
            rest = &rest[i + 1..];
            if line_end == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    _ => {}
                }
            }
        }
        if self.buf.len() + rest.len() > MAX_LINE {
            return Err(TooLong);
        }
        self.buf.extend_from_slice(rest);
        Ok(())
    }

    /// At the end of the stream: the event left without its blank line, if any.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.line(&line, out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        // Valid UTF-8 (every provider's case) is checked on the fast path, not copied twice.
        let value = match std::str::from_utf8(value) {
            Ok(v) => std::borrow::Cow::Borrowed(v),
            Err(_) => String::from_utf8_lossy(value),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.cur.data.push('\n');
                }
                self.cur.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.cur.event = Some(value.into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        if self.has_data {
            out.push(std::mem::take(&mut self.cur));
        }
        self.cur = Event::default();
        self.has_data = false;
    }
}

/// Writes one event (`event:` line when named; `data` must hold no line breaks, which
/// serialized JSON never does).
pub fn write(out: &mut BytesMut, event: Option<&str>, data: &str) {
    if let Some(e) = event {
        out.put_slice(b"event: ");
        out.put_slice(e.as_bytes());
        out.put_slice(b"\n");
    }
    out.put_slice(b"data: ");
    out.put_slice(data.as_bytes());
    out.put_slice(b"\n\n");
}

/// One event as bytes.
pub fn frame(event: Option<&str>, data: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 32);
    write(&mut b, event, data);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        p.finish(&mut out);
        out
    }

    #[test]
    fn events_split_anywhere() {
        let text = b"event: message_start\ndata: {\"a\":1}\n\n: ping\r\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let whole = all(&[text]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(whole[1].data, "x\ny");
        assert_eq!(whole[2].data, "[DONE]");
        for cut in 0..text.len() {
            assert_eq!(all(&[&text[..cut], &text[cut..]]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(all(&bytes), whole);
    }

    #[test]
    fn a_last_event_without_blank_line_is_kept() {
        assert_eq!(all(&[b"data: tail"])[0].data, "tail");
        assert!(all(&[b": only a comment\n\n"]).is_empty());
    }

    #[test]
    fn endless_line_is_refused() {
        let mut p = Parser::default();
        let big = vec![b'a'; MAX_LINE + 1];
        assert!(p.feed(&big, &mut Vec::new()).is_err());
    }
}
