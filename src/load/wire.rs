//! One kept-alive HTTP/1.1 connection for the load generator's plain `http://` path.
//!
//! Design note. A load generator's own cost per request is taken from the server it
//! measures when both share a machine, so this path does only what a request needs: the
//! request head is a few bytes written beside the prebuilt body in one `writev`, the answer's
//! head is parsed in place by `httparse`, and the body (`Content-Length`, chunked, or up to
//! the close) is handed to the caller as it arrives, without copies. hyper's client costs
//! ~3 µs of user time per request on top (header maps, its dispatch channel, a task per
//! connection), which at 50k req/s is a tenth of a core taken from the server. Anything this
//! reader does not understand is an error of the request, never a guess.

use std::io::IoSlice;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Headers read from one answer at most; LiteLLM sends about fifteen.
const MAX_HEADERS: usize = 64;
/// An answer head larger than this is not an HTTP server we can measure.
const MAX_HEAD: usize = 64 * 1024;

/// How one exchange went wrong, for the transport to classify.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// The connection closed or failed before any byte of the answer: on a reused connection
    /// the server may have closed it while idle, so one retry on a fresh one is safe.
    BeforeAnswer,
    /// The answer started but did not finish (closed mid-body, bad chunk framing).
    Incomplete,
    /// The bytes were not an HTTP/1.x answer.
    Malformed,
}

/// The answer's head, as far as the generator cares.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    /// `x-litellm-overhead-duration-ms`, the router's account of its own time.
    pub claimed_overhead_ms: Option<f64>,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// One connection, reused request after request while the server keeps it open.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    head: Vec<u8>,
    /// False once the server said it closes, or the body ran to the close.
    reusable: bool,
    /// How the body of the answer whose head was read is framed, until it is read.
    framing: Option<Framing>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            head: Vec::with_capacity(256),
            reusable: true,
            framing: None,
        })
    }

    /// Whether another request may follow on this connection.
    pub fn reusable(&self) -> bool {
        self.reusable && self.framing.is_none()
    }

    /// Sends `POST path` with `body` and reads the answer's head; [`Conn::body`] reads the rest.
    pub async fn request(
        &mut self,
        path: &str,
        host: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> Result<Head, WireError> {
        self.write_request(path, host, auth, body)
            .await
            .map_err(|_| WireError::BeforeAnswer)?;
        let (head, framing) = self.read_head().await?;
        self.framing = Some(framing);
        Ok(head)
    }

    /// Reads the body of the answer [`Conn::request`] began, handing each piece over as it
    /// arrives.
    pub async fn body(&mut self, mut on_data: impl FnMut(Bytes)) -> Result<(), WireError> {
        match self.framing.take().ok_or(WireError::Malformed)? {
            Framing::Length(n) => self.pass(n, &mut on_data).await?,
            Framing::Chunked => self.read_chunked(&mut on_data).await?,
            Framing::UntilClose => {
                self.reusable = false;
                loop {
                    if !self.buf.is_empty() {
                        on_data(self.buf.split().freeze());
                    }
                    if self.fill().await? == 0 {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn write_request(&mut self, path: &str, host: &str, auth: Option<&str>, body: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.head.clear();
        write!(
            self.head,
            "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        )?;
        if let Some(a) = auth {
            write!(self.head, "authorization: {a}\r\n")?;
        }
        self.head.extend_from_slice(b"\r\n");
        let (mut head, mut body) = (&self.head[..], body);
        while !head.is_empty() || !body.is_empty() {
            let n = self
                .stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        Ok(())
    }

    /// Reads into the buffer; 0 means the server closed.
    async fn fill(&mut self) -> Result<usize, WireError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.stream
            .read_buf(&mut self.buf)
            .await
            .map_err(|_| WireError::Incomplete)
    }

    async fn read_head(&mut self) -> Result<(Head, Framing), WireError> {
        let mut got_any = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = resp.code.ok_or(WireError::Malformed)?;
                        let (framing, claimed, close) = framing_of(resp.version, resp.headers)?;
                        self.buf.advance(len);
                        if close {
                            self.reusable = false;
                        }
                        // 1xx answers precede the real one; nothing is posted that asks for them.
                        if (100..200).contains(&status) {
                            continue;
                        }
                        let head = Head {
                            status,
                            claimed_overhead_ms: claimed,
                        };
                        return Ok((head, framing));
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => {}
                    _ => return Err(WireError::Malformed),
                }
            }
            let n = match self.fill().await {
                Ok(n) => n,
                Err(_) if !got_any => return Err(WireError::BeforeAnswer),
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Err(if got_any {
                    WireError::Incomplete
                } else {
                    WireError::BeforeAnswer
                });
            }
            got_any = true;
        }
    }

    /// Hands the next `n` bytes of the body over as they arrive (what is buffered at once).
    async fn pass(&mut self, n: usize, on_data: &mut impl FnMut(Bytes)) -> Result<(), WireError> {
        let mut left = n;
        while left > 0 {
            if self.buf.is_empty() && self.fill().await? == 0 {
                return Err(WireError::Incomplete);
            }
            let take = left.min(self.buf.len());
            on_data(self.buf.split_to(take).freeze());
            left -= take;
        }
        Ok(())
    }

    async fn read_chunked(&mut self, on_data: &mut impl FnMut(Bytes)) -> Result<(), WireError> {
        loop {
            let size = loop {
                if let Some(at) = find_crlf(&self.buf) {
                    let line = std::str::from_utf8(&self.buf[..at]).map_err(|_| WireError::Malformed)?;
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16).map_err(|_| WireError::Malformed)?;
                    self.buf.advance(at + 2);
                    break size;
                }
                if self.buf.len() > 1024 {
                    return Err(WireError::Malformed);
                }
                if self.fill().await? == 0 {
                    return Err(WireError::Incomplete);
                }
            };
            if size == 0 {
                // Trailers, if any, then the empty line.
                loop {
                    if let Some(at) = find_crlf(&self.buf) {
                        self.buf.advance(at + 2);
                        if at == 0 {
                            return Ok(());
                        }
                        continue;
                    }
                    if self.buf.len() > MAX_HEAD {
                        return Err(WireError::Malformed);
                    }
                    if self.fill().await? == 0 {
                        return Err(WireError::Incomplete);
                    }
                }
            }
            self.pass(size, on_data).await?;
            while self.buf.len() < 2 {
                if self.fill().await? == 0 {
                    return Err(WireError::Incomplete);
                }
            }
            if &self.buf[..2] != b"\r\n" {
                return Err(WireError::Malformed);
            }
            self.buf.advance(2);
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// How the body is framed, the overhead claim, and whether the server closes after it.
fn framing_of(version: Option<u8>, headers: &[httparse::Header]) -> Result<(Framing, Option<f64>, bool), WireError> {
    let mut length = None;
    let mut chunked = false;
    let mut claimed = None;
    let mut close = version == Some(0);
    for h in headers {
        let v = || std::str::from_utf8(h.value).map(str::trim);
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = v().ok().and_then(|s| s.parse().ok()).ok_or(WireError::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(WireError::Malformed);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v().is_ok_and(|s| s.to_ascii_lowercase().ends_with("chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            let s = v().unwrap_or("").to_ascii_lowercase();
            close = s.contains("close") || (version == Some(0) && !s.contains("keep-alive"));
        } else if h.name.eq_ignore_ascii_case(super::transport::OVERHEAD_HEADER) {
            claimed = v().ok().and_then(|s| s.parse().ok());
        }
    }
    let framing = match (chunked, length) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    };
    Ok((framing, claimed, close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that reads one request head+body per answer and writes the canned answers in
    /// the pieces given (each piece its own write, so chunk and head boundaries fall mid-read).
    async fn serve(answers: Vec<Vec<&'static [u8]>>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = Vec::new();
            for pieces in answers {
                // Wait for a whole request: head, then content-length bytes.
                loop {
                    let mut b = [0u8; 4096];
                    let n = s.read(&mut b).await.unwrap();
                    seen.extend_from_slice(&b[..n]);
                    if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = std::str::from_utf8(&seen[..end]).unwrap().to_owned();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .unwrap()
                            .parse()
                            .unwrap();
                        if seen.len() >= end + 4 + len {
                            seen.drain(..end + 4 + len);
                            break;
                        }
                    }
                }
                for p in pieces {
                    s.write_all(p).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
        });
        addr
    }

    async fn one(c: &mut Conn) -> Result<(u16, Option<f64>, Vec<Vec<u8>>), WireError> {
        let head = c.request("/v1/chat/completions", "h", Some("Bearer k"), b"{}").await?;
        let mut pieces = Vec::new();
        c.body(|b| pieces.push(b.to_vec())).await?;
        Ok((head.status, head.claimed_overhead_ms, pieces))
    }

    #[tokio::test]
    async fn length_chunked_and_split_heads_read_back_whole_on_one_connection() {
        let addr = serve(vec![
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-litellm-overhead-duration-ms: 2.5\r\n\r\nhel",
                b"lo",
            ],
            vec![
                b"HTTP/1.1 200 OK\r\ntransfer-enc",
                b"oding: chunked\r\n\r\n3\r\nabc\r",
                b"\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
            ],
            vec![b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"],
        ])
        .await;
        let mut c = Conn::connect(addr).await.unwrap();
        let (s, claimed, body) = one(&mut c).await.unwrap();
        assert_eq!((s, claimed, body.concat()), (200, Some(2.5), b"hello".to_vec()));
        let (s, _, body) = one(&mut c).await.unwrap();
        assert_eq!((s, body.concat()), (200, b"abc0123456789abcdef".to_vec()));
        assert!(body.len() >= 2, "chunks are handed over as they arrive: {body:?}");
        let (s, _, body) = one(&mut c).await.unwrap();
        assert_eq!((s, body.len()), (503, 0));
        assert!(c.reusable());
    }

    #[tokio::test]
    async fn a_close_before_the_answer_is_retryable_and_mid_body_is_not() {
        let addr = serve(vec![vec![]]).await;
        let mut c = Conn::connect(addr).await.unwrap();
        assert_eq!(one(&mut c).await.unwrap_err(), WireError::BeforeAnswer);
        let addr = serve(vec![vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]]).await;
        let mut c = Conn::connect(addr).await.unwrap();
        assert_eq!(one(&mut c).await.unwrap_err(), WireError::Incomplete);
    }

    #[tokio::test]
    async fn garbage_and_bad_chunk_sizes_are_malformed() {
        let addr = serve(vec![vec![b"<html>teapot</html>\r\n\r\n"]]).await;
        assert_eq!(
            one(&mut Conn::connect(addr).await.unwrap()).await.unwrap_err(),
            WireError::Malformed
        );
        let addr = serve(vec![vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ]])
        .await;
        assert_eq!(
            one(&mut Conn::connect(addr).await.unwrap()).await.unwrap_err(),
            WireError::Malformed
        );
    }

    #[tokio::test]
    async fn a_body_to_the_close_ends_the_connection() {
        let addr = serve(vec![vec![b"HTTP/1.0 200 OK\r\n\r\nall of it"]]).await;
        let mut c = Conn::connect(addr).await.unwrap();
        // The test server closes once its answers are written.
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), one(&mut c)).await;
        assert_eq!(
            r.expect("the read ends at the close").unwrap().2.concat(),
            b"all of it".to_vec()
        );
        assert!(!c.reusable());
    }
}
