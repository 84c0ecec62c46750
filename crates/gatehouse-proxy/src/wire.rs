//! HTTP/1 wire syntax shared by the server side (`h1server`) and the upstream client (`h1`):
//! the chunked decoder, Content-Length and Transfer-Encoding rules, list tokens and the
//! hop-by-hop header list.
//!
//! Everything here is strict on purpose. A proxy in front of Gatehouse, or the upstream
//! behind it, may read a lenient message differently (a bare LF, `0x5` as a chunk size, a
//! trailer without a colon), and that disagreement is what request smuggling is made of.
//! RFC 9112 §6 and §7 are followed to the letter: what the grammar does not allow is an error.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (size and extensions) accepted.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields accepted after the last chunk (they are read and dropped).
pub const MAX_TRAILERS: u32 = 16 * 1024;

/// Chunked decoding state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line (bytes of trailers so far).
    Trailers(u32),
}

/// One step of chunked decoding.
#[derive(Debug)]
pub enum Chunk {
    /// Body bytes.
    Data(Bytes),
    /// The last chunk and the trailers were consumed.
    End,
    /// More input is needed.
    More,
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    memchr::memmem::find(b, b"\r\n")
}

/// `tchar` of RFC 9110 §5.6.2.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn skip_bws(line: &[u8], mut i: usize) -> usize {
    while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
        i += 1;
    }
    i
}

fn token_end(line: &[u8], i: usize) -> usize {
    let mut j = i;
    while j < line.len() && is_tchar(line[j]) {
        j += 1;
    }
    j
}

/// End of a quoted-string starting at `i` (which holds the opening quote), or `None`.
fn quoted_end(line: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < line.len() {
        match line[j] {
            b'"' => return Some(j + 1),
            b'\\' => {
                let c = *line.get(j + 1)?;
                if !(c == b'\t' || c == b' ' || c.is_ascii_graphic() || c >= 0x80) {
                    return None;
                }
                j += 2;
            }
            c if c == b'\t' || c == b' ' || c >= 0x80 || (c.is_ascii_graphic() && c != b'\\') => {
                j += 1
            }
            _ => return None,
        }
    }
    None
}

/// Parses a chunk-size line (without its CRLF): `1*HEXDIG *( BWS ";" BWS name [ BWS "=" BWS
/// value ] )`. Extensions are checked, then ignored.
pub fn parse_chunk_size_line(line: &[u8]) -> Result<u64, &'static str> {
    let mut size: u64 = 0;
    let mut i = 0;
    while i < line.len() {
        let d = match line[i] {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => break,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(d)))
            .ok_or("chunk size too large")?;
        i += 1;
    }
    if i == 0 {
        return Err("bad chunk size");
    }
    while i < line.len() {
        i = skip_bws(line, i);
        if line.get(i) != Some(&b';') {
            return Err("bad chunk size");
        }
        i = skip_bws(line, i + 1);
        let end = token_end(line, i);
        if end == i {
            return Err("bad chunk extension");
        }
        i = skip_bws(line, end);
        if line.get(i) == Some(&b'=') {
            i = skip_bws(line, i + 1);
            i = match line.get(i) {
                Some(b'"') => quoted_end(line, i).ok_or("bad chunk extension")?,
                _ => {
                    let end = token_end(line, i);
                    if end == i {
                        return Err("bad chunk extension");
                    }
                    end
                }
            };
        } else if i < line.len() && line[i] != b';' && line[i] != b' ' && line[i] != b'\t' {
            return Err("bad chunk extension");
        }
    }
    Ok(size)
}

/// Checks one trailer field line (without its CRLF): `field-name ":" OWS field-value OWS`.
pub fn check_field_line(line: &[u8]) -> Result<(), &'static str> {
    let colon = line
        .iter()
        .position(|b| *b == b':')
        .ok_or("trailer field without a colon")?;
    if colon == 0 || !line[..colon].iter().all(|b| is_tchar(*b)) {
        return Err("bad trailer field name");
    }
    if !line[colon + 1..].iter().all(|b| is_field_vchar(*b)) {
        return Err("bad trailer field value");
    }
    Ok(())
}

/// A byte allowed in a field value: VCHAR, obs-text, SP, HTAB.
pub fn is_field_vchar(b: u8) -> bool {
    b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80
}

/// Decodes what `buf` holds of a chunked body (RFC 9112 §7.1): the next data, the end, or a
/// request for more bytes. Chunk extensions and trailers are checked against the grammar and
/// dropped: Gatehouse never forwards them.
pub fn decode_chunk(buf: &mut BytesMut, state: &mut ChunkState) -> Result<Chunk, &'static str> {
    loop {
        match *state {
            ChunkState::Size => match find_crlf(buf) {
                Some(i) if i <= MAX_CHUNK_LINE => {
                    let size = parse_chunk_size_line(&buf[..i])?;
                    buf.advance(i + 2);
                    *state = if size == 0 {
                        ChunkState::Trailers(0)
                    } else {
                        ChunkState::Data(size)
                    };
                }
                Some(_) => return Err("chunk size line too long"),
                None if buf.len() > MAX_CHUNK_LINE => return Err("chunk size line too long"),
                None => {
                    // A byte the size line can never hold is an error now, not after 4 KiB.
                    if memchr::memchr(b'\n', buf).is_some() {
                        return Err("bare LF in chunk size line");
                    }
                    return Ok(Chunk::More);
                }
            },
            ChunkState::Data(n) => {
                if buf.is_empty() {
                    return Ok(Chunk::More);
                }
                let take = (n.min(buf.len() as u64)) as usize;
                let data = buf.split_to(take).freeze();
                let left = n - take as u64;
                *state = if left == 0 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(left)
                };
                return Ok(Chunk::Data(data));
            }
            ChunkState::DataEnd => {
                if buf.len() < 2 {
                    if buf.first().is_some_and(|b| *b != b'\r') {
                        return Err("missing CRLF after chunk");
                    }
                    return Ok(Chunk::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("missing CRLF after chunk");
                }
                buf.advance(2);
                *state = ChunkState::Size;
            }
            ChunkState::Trailers(seen) => match find_crlf(buf) {
                Some(0) => {
                    buf.advance(2);
                    return Ok(Chunk::End);
                }
                Some(i) => {
                    let total = seen.saturating_add(i as u32 + 2);
                    if total > MAX_TRAILERS {
                        return Err("trailers too large");
                    }
                    check_field_line(&buf[..i])?;
                    buf.advance(i + 2);
                    *state = ChunkState::Trailers(total);
                }
                None if seen as usize + buf.len() > MAX_TRAILERS as usize => {
                    return Err("trailers too large")
                }
                None => {
                    if memchr::memchr(b'\n', buf).is_some() {
                        return Err("bare LF in trailers");
                    }
                    return Ok(Chunk::More);
                }
            },
        }
    }
}

/// A Content-Length value: one or more digits and nothing else (no sign, no list), after
/// optional whitespace around it.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// What the Transfer-Encoding header lines of a message say, all lines taken as one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferCodings {
    /// Some Transfer-Encoding line was present.
    pub present: bool,
    /// The final coding is `chunked`.
    pub chunked_final: bool,
    /// `chunked` appeared before the end (applied twice, or not last).
    pub chunked_early: bool,
    /// A coding other than `chunked` appeared.
    pub other: bool,
    /// No coding at all (an empty value).
    pub empty: bool,
}

impl TransferCodings {
    /// Adds one Transfer-Encoding line.
    pub fn add(&mut self, v: &[u8]) {
        if !self.present {
            self.present = true;
            self.empty = true;
        }
        for t in v.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if t.is_empty() {
                continue;
            }
            if self.chunked_final {
                // A coding after chunked: chunked was not last.
                self.chunked_early = true;
            }
            self.empty = false;
            self.chunked_final = t.eq_ignore_ascii_case(b"chunked");
            if !self.chunked_final {
                self.other = true;
            }
        }
    }
}

/// True when the comma-separated list `v` holds `token` (case-insensitive).
pub fn contains_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus `Expect` (100-continue is answered by the
/// server side) and `HTTP2-Settings` (only meaningful with an h2c upgrade, which is never
/// forwarded): never forwarded as they came.
pub const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "expect",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
];

/// [`HOP_BY_HOP`] membership for a raw header name of any case (runs for every header of
/// every request and response: the length picks the candidates first).
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => is(b"te"),
        6 => is(b"expect"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        14 => is(b"http2-settings"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        18 => is(b"proxy-authenticate"),
        19 => is(b"proxy-authorization"),
        _ => false,
    }
}

/// Headers a `Connection` header may never remove, whoever sends it: the message's framing
/// and its target. (Headers the gateway sets itself are added after this filter runs.)
pub fn is_protected_from_connection(name: &[u8]) -> bool {
    [
        &b"content-length"[..],
        b"transfer-encoding",
        b"host",
        b"connection",
    ]
    .iter()
    .any(|n| n.eq_ignore_ascii_case(name))
}

/// Headers only the gateway (or a trusted proxy in front of it) may set: who the client
/// is and where the request came from. An untrusted client's copies are dropped when the
/// head is read, on every route, so a backend can believe them: identity headers
/// (`X-Consumer-*`, `X-Credential-Identifier`, `X-Anonymous-Consumer`, `X-Client-Cert-*`
/// from mtls-auth), forwarding headers
/// (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`) and the path overrides some frameworks obey
/// (`X-Original-URL`, `X-Rewrite-URL`), which would let a request reach another path than
/// the one the gateway routed and authorized.
#[inline]
pub fn is_gateway_owned(name: &[u8]) -> bool {
    let starts = |p: &[u8]| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p);
    match name.first() {
        Some(b'x' | b'X') => {
            starts(b"x-consumer-")
                || starts(b"x-forwarded-")
                || starts(b"x-client-cert-")
                || name.eq_ignore_ascii_case(b"x-credential-identifier")
                || name.eq_ignore_ascii_case(b"x-anonymous-consumer")
                || name.eq_ignore_ascii_case(b"x-real-ip")
                || name.eq_ignore_ascii_case(b"x-original-url")
                || name.eq_ignore_ascii_case(b"x-rewrite-url")
        }
        Some(b'f' | b'F') => name.eq_ignore_ascii_case(b"forwarded"),
        _ => false,
    }
}

/// True when a header name contains `_` (a plain loop: names are short, and a `memchr`
/// call costs more than it saves on a dozen bytes).
#[inline]
pub fn has_underscore(name: &[u8]) -> bool {
    let mut found = false;
    for &b in name {
        found |= b == b'_';
    }
    found
}

/// Bytes allowed in a Host value: unreserved, sub-delims, `%`, `:` and `[`/`]` (a table, as
/// this runs on every request).
const HOST_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b'%'
                    | b':'
                    | b'['
                    | b']'
            );
        c += 1;
    }
    t
};

/// A Host value (or absolute-form authority): `uri-host [ ":" port ]` with no userinfo, path
/// or whitespace. Empty is allowed (RFC 9112 §3.2: a target without an authority).
#[inline]
pub fn valid_host(v: &[u8]) -> bool {
    v.iter().all(|b| HOST_BYTES[usize::from(*b)])
}

/// Offset of the first LF in `head` that is not preceded by CR, if any (RFC 9112 §2.2 lets a
/// recipient accept a bare LF; Gatehouse refuses it, since a proxy in front may not).
pub fn bare_lf(head: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', head).find(|&i| i == 0 || head[i - 1] != b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<u8>, &'static str> {
        let mut buf = BytesMut::from(input);
        let mut st = ChunkState::Size;
        let mut out = Vec::new();
        loop {
            match decode_chunk(&mut buf, &mut st)? {
                Chunk::Data(d) => out.extend_from_slice(&d),
                Chunk::End => return Ok(out),
                Chunk::More => return Err("incomplete"),
            }
        }
    }

    #[test]
    fn valid_chunked_forms() {
        assert_eq!(decode_all(b"5\r\nhello\r\n0\r\n\r\n").unwrap(), b"hello");
        assert_eq!(
            decode_all(b"5;a=b;c\r\nhello\r\n0 ; x = \"q \\\" s\"\r\nT: v\r\nU:\r\n\r\n").unwrap(),
            b"hello"
        );
        assert_eq!(
            decode_all(b"00005\r\nhello\r\n0\r\n\r\n").unwrap(),
            b"hello"
        );
        assert_eq!(
            decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            b"0123456789"
        );
    }

    #[test]
    fn lenient_forms_are_refused() {
        for bad in [
            &b"0x5\r\nhello\r\n0\r\n\r\n"[..],
            b"+5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
            b"5;a=b c\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nno colon\r\n\r\n",
            b"5\r\nhello\r\n0\r\nBad Name: v\r\n\r\n",
            b"5\r\nhello\r\n0\r\nT: a\nb\r\n\r\n",
            b"5\r\nhello\r\n0\r\n: v\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"\r\n",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?} must be refused",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bare_lf_is_an_error_before_the_line_limit() {
        let mut buf = BytesMut::from(&b"5\nhello"[..]);
        let mut st = ChunkState::Size;
        assert!(decode_chunk(&mut buf, &mut st).is_err());
        let mut buf = BytesMut::from(&b"0\r\nT: v\n"[..]);
        let mut st = ChunkState::Size;
        assert!(decode_chunk(&mut buf, &mut st).is_err());
    }

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        for bad in [
            &b""[..],
            b"+42",
            b"-1",
            b"4 2",
            b"42,42",
            b"0x10",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn transfer_codings_across_lines() {
        let tc = |lines: &[&[u8]]| {
            let mut t = TransferCodings::default();
            for l in lines {
                t.add(l);
            }
            t
        };
        let t = tc(&[b"chunked"]);
        assert!(t.chunked_final && !t.other && !t.chunked_early);
        let t = tc(&[b"gzip", b"chunked"]);
        assert!(t.chunked_final && t.other);
        let t = tc(&[b"chunked, chunked"]);
        assert!(t.chunked_final && t.chunked_early);
        let t = tc(&[b"chunked", b"gzip"]);
        assert!(!t.chunked_final && t.chunked_early);
        assert!(tc(&[b""]).empty);
        assert!(tc(&[b" , "]).empty);
    }

    #[test]
    fn hop_by_hop_lookup_matches_the_list() {
        for n in HOP_BY_HOP {
            assert!(is_hop_by_hop_name(n.as_bytes()), "{n}");
            assert!(is_hop_by_hop_name(n.to_ascii_uppercase().as_bytes()), "{n}");
        }
        for n in ["tee", "host", "content-length", "upgrades", "x-connection"] {
            assert!(!is_hop_by_hop_name(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn host_bytes() {
        assert!(valid_host(b"api.example.com:8443"));
        assert!(valid_host(b"[::1]:80"));
        assert!(valid_host(b""));
        for bad in [
            &b"a b"[..],
            b"a/b",
            b"a@b",
            b"a?b",
            b"a#b",
            b"a\\b",
            b"\"a\"",
        ] {
            assert!(!valid_host(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn gateway_owned_names() {
        for n in [
            &b"X-Consumer-Username"[..],
            b"x-consumer-id",
            b"X-Forwarded-Prefix",
            b"x-forwarded-for",
            b"Forwarded",
            b"X-Real-IP",
            b"X-Original-URL",
            b"x-rewrite-url",
            b"X-Anonymous-Consumer",
            b"x-credential-identifier",
        ] {
            assert!(is_gateway_owned(n), "{}", String::from_utf8_lossy(n));
        }
        for n in [
            &b"x-request-id"[..],
            b"x-consumer",
            b"authorization",
            b"forwarded-x",
            b"x",
        ] {
            assert!(!is_gateway_owned(n), "{}", String::from_utf8_lossy(n));
        }
    }

    #[test]
    fn bare_lf_in_heads() {
        assert_eq!(bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
        assert_eq!(bare_lf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), Some(14));
        assert_eq!(bare_lf(b"\n"), Some(0));
    }
}
