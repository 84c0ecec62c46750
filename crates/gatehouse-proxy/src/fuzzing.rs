//! Entry points for the `cargo fuzz` targets in `fuzz/` (see docs/fuzzing.md): each feeds
//! arbitrary bytes to one parser and checks what must hold whatever the input — beyond not
//! panicking. Not part of the API the rest of Gatehouse uses.

use bytes::BytesMut;
use http::Method;

use crate::h1::{parse_response_head, BodyFraming};
use crate::request_head::{parse_head, BodyState, HeadLimits};
use crate::wire::{decode_chunk, Chunk, ChunkState};

/// Decodes `data` as a chunked body fed in pieces cut at `cuts`; `Some(body)` when it ended.
fn decode_in_pieces(data: &[u8], cuts: &[usize]) -> Result<Option<Vec<u8>>, &'static str> {
    let mut buf = BytesMut::new();
    let mut st = ChunkState::Size;
    let mut out = Vec::new();
    let mut fed = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    points.push(data.len());
    for p in points {
        if p < fed {
            continue;
        }
        buf.extend_from_slice(&data[fed..p]);
        fed = p;
        loop {
            match decode_chunk(&mut buf, &mut st)? {
                Chunk::Data(d) => out.extend_from_slice(&d),
                Chunk::End => return Ok(Some(out)),
                Chunk::More => break,
            }
        }
    }
    Ok(None)
}

/// The chunked decoder: the same verdict and the same body however the input is split
/// across reads.
pub fn chunked(data: &[u8]) {
    let (cuts, body) = match data.split_first() {
        Some((n, rest)) => {
            let n = usize::from(*n % 8);
            let (c, b) = rest.split_at(n.min(rest.len()));
            (c.iter().map(|x| usize::from(*x) * 7).collect::<Vec<_>>(), b)
        }
        None => return,
    };
    let whole = decode_in_pieces(body, &[]);
    let split = decode_in_pieces(body, &cuts);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "split reads changed the body"),
        (Err(_), Err(_)) => {}
        // A split may only stop earlier (More) where the whole input fails later.
        (Err(_), Ok(None)) | (Ok(None), Err(_)) => {}
        _ => panic!("split reads changed the verdict: {whole:?} vs {split:?}"),
    }
    if let Ok(Some(b)) = whole {
        assert!(b.len() <= body.len());
    }
}

/// The request-head parser (and, for a chunked request, the body after it): whatever it
/// accepts has one framing, at most one Host, and no bare LF.
pub fn request_head(data: &[u8]) {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let limits = HeadLimits {
        max_head: 32 * 1024,
        max_headers: 100,
        allow_underscores: flags & 1 != 0,
        trusted: flags & 2 != 0,
    };
    let mut rbuf = BytesMut::from(rest);
    let mut spans = Vec::new();
    let Ok(Some(head)) = parse_head(&mut rbuf, limits, &mut spans) else {
        return;
    };
    let consumed = rest.len() - rbuf.len();
    assert!(
        crate::wire::bare_lf(&rest[..consumed]).is_none(),
        "accepted a bare LF"
    );
    let h = head.req.headers();
    assert!(h.get_all(http::header::HOST).iter().count() <= 1);
    if h.contains_key(http::header::TRANSFER_ENCODING) {
        assert!(!h.contains_key(http::header::CONTENT_LENGTH));
    }
    if !limits.allow_underscores {
        assert!(h.keys().all(|k| !k.as_str().contains('_')));
    }
    if !limits.trusted {
        assert!(h
            .keys()
            .all(|k| !crate::wire::is_gateway_owned(k.as_str().as_bytes())));
    }
    if head.upgrade {
        assert_eq!(head.req.method(), Method::GET);
    }
    if let BodyState::Chunked(_) = head.body {
        let _ = decode_in_pieces(&rbuf, &[]);
    }
}

/// The upstream response-head parser, then the body as framed: no panic, and a body read
/// by Content-Length is never longer than announced.
pub fn response_head(data: &[u8]) {
    let Some((flags, rest)) = data.split_first() else {
        return;
    };
    let method = if flags & 1 != 0 {
        Method::HEAD
    } else {
        Method::GET
    };
    let mut rbuf = BytesMut::from(rest);
    let mut spans = Vec::new();
    let Ok(Some((resp, framing))) = parse_response_head(&mut rbuf, &mut spans, &method) else {
        return;
    };
    for name in crate::wire::HOP_BY_HOP {
        if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            assert!(!resp.headers().contains_key(name), "{name} kept");
        }
    }
    let chunked = match framing {
        BodyFraming::Chunked(_) | BodyFraming::Closing(_, Some(_)) => true,
        BodyFraming::Length(_) | BodyFraming::UntilClose | BodyFraming::Closing(_, None) => false,
    };
    if chunked {
        assert!(!resp.headers().contains_key(http::header::CONTENT_LENGTH));
        let _ = decode_in_pieces(&rbuf, &[]);
    }
}

/// Path normalization: the result is absolute, has no empty, `.` or `..` segment, and is its
/// own normal form.
pub fn path(data: &[u8]) {
    let Ok(p) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(n) = crate::pathnorm::normalize(p) else {
        return;
    };
    assert!(n.starts_with('/'), "{n:?}");
    assert!(!n.contains("//"), "{n:?}");
    for seg in n.split('/') {
        assert!(seg != "." && seg != "..", "{n:?}");
    }
    let again = crate::pathnorm::normalize(&n).expect("a normal path normalizes");
    assert!(again == n, "not idempotent: {p:?} -> {n:?} -> {again:?}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn entry_points_take_arbitrary_bytes() {
        for input in [
            &b""[..],
            b"\x00",
            b"\x00POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"\x01HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
            b"\x03\x01\x02\x035;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
            b"/a/%2e%2E/../b//./c%2f",
        ] {
            super::request_head(input);
            super::response_head(input);
            super::chunked(input);
            super::path(input);
        }
    }
}
