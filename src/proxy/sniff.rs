//! Telling control connections from traffic on the one port: a connection is control when its
//! first bytes are an HTTP request line for a path under [`CONTROL_PREFIX`]. Everything else
//! is forwarded, with the bytes read to decide sent upstream first.
//!
//! The decision waits only as long as it must: it is made as soon as the bytes seen cannot
//! begin a control request line (for an HTTP request, within its first few bytes, usually the
//! first read), or after [`QUIET`] with nothing new from the client, so a protocol where the
//! server speaks first still works, 50 ms late.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Paths of the control API.
pub const CONTROL_PREFIX: &str = "/__gauntlet/proxy/";

/// How long a client that has sent nothing (more) is waited for.
pub(crate) const QUIET: Duration = Duration::from_millis(50);

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    Control,
    Traffic,
    /// Could still be either.
    Undecided,
}

pub(crate) fn classify(buf: &[u8]) -> Seen {
    let mut open = false;
    for m in METHODS {
        let line = [m.as_bytes(), &b" "[..], CONTROL_PREFIX.as_bytes()];
        let mut want = line.iter().flat_map(|p| p.iter());
        let mut matched = 0;
        let mut mismatch = false;
        for b in buf {
            match want.next() {
                Some(w) if w == b => matched += 1,
                Some(_) => {
                    mismatch = true;
                    break;
                }
                None => break,
            }
        }
        if mismatch {
            continue;
        }
        if matched == m.len() + 1 + CONTROL_PREFIX.len() {
            return Seen::Control;
        }
        open = true;
    }
    if open { Seen::Undecided } else { Seen::Traffic }
}

/// Reads from `stream` until it is clear what it is; returns that (never `Undecided`) and the
/// bytes read. A client that closes, or falls quiet, while undecided is traffic.
pub(crate) async fn sniff(stream: &mut TcpStream) -> io::Result<(Seen, Bytes)> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        match classify(&buf) {
            Seen::Undecided => {}
            seen => return Ok((seen, buf.freeze())),
        }
        match tokio::time::timeout(QUIET, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok((Seen::Traffic, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// A stream whose reads give `prefix` first (the bytes sniffing took), then the stream's own.
pub(crate) struct Replay<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Replay<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_under_the_prefix_is_control_and_little_else() {
        assert_eq!(classify(b"GET /__gauntlet/proxy/health HTTP/1.1\r\n"), Seen::Control);
        assert_eq!(classify(b"DELETE /__gauntlet/proxy/toxics/x HTTP/1.1"), Seen::Control);
        assert_eq!(classify(b"POST /__gauntlet/proxy/"), Seen::Control);
        // Still could be: wait for more.
        assert_eq!(classify(b""), Seen::Undecided);
        assert_eq!(classify(b"G"), Seen::Undecided);
        assert_eq!(classify(b"POST /__gauntlet/prox"), Seen::Undecided);
        assert_eq!(classify(b"PUT /__gauntlet/proxy"), Seen::Undecided);
        // Cannot be any more.
        assert_eq!(classify(b"GET /v1/models HTTP/1.1\r\n"), Seen::Traffic);
        assert_eq!(classify(b"POST /v"), Seen::Traffic);
        assert_eq!(classify(b"GET /__gauntlet/proxyx"), Seen::Traffic);
        assert_eq!(classify(b"get /__gauntlet/proxy/health"), Seen::Traffic);
        assert_eq!(classify(b"*3\r\n$3\r\nSET\r\n"), Seen::Traffic);
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Seen::Traffic);
    }
}
