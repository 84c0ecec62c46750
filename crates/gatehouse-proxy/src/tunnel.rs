//! The byte tunnel behind an accepted WebSocket upgrade: client and upstream joined until
//! either side closes or nothing moves in either direction for the idle timeout (a tunnel is
//! a connection like any other: it must not stay open forever).

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::stream::{ClientStream, UpstreamStream};

/// A stream that notes when bytes last moved through it.
struct Watched<S> {
    io: S,
    last: Rc<Cell<Instant>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last.set(Instant::now());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Joins `client` and `upstream`, first passing on what each side sent before the switch
/// (`from_client`, `from_upstream`), until both ends close or the tunnel is idle for `idle`.
pub async fn run(
    mut client: ClientStream,
    from_client: bytes::Bytes,
    mut upstream: UpstreamStream,
    from_upstream: BytesMut,
    idle: Duration,
) {
    if !from_upstream.is_empty() && client.write_all(&from_upstream).await.is_err() {
        return;
    }
    if !from_client.is_empty() && upstream.write_all(&from_client).await.is_err() {
        return;
    }
    let last = Rc::new(Cell::new(Instant::now()));
    let mut a = Watched {
        io: client,
        last: last.clone(),
    };
    let mut b = Watched {
        io: upstream,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let deadline = last.get() + idle;
        tokio::select! {
            _ = &mut copy => return,
            _ = tokio::time::sleep_until(deadline) => {
                if last.get() + idle <= Instant::now() {
                    tracing::debug!(?idle, "WebSocket tunnel idle; closing");
                    return;
                }
            }
        }
    }
}
