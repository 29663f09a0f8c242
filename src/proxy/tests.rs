//! The proxy against local tokio upstreams: an echo server, a server that speaks first (writes
//! N bytes and closes), one that only counts connections. Timing is asserted as lower bounds,
//! with upper bounds (5 s) only against hanging; every wait is bounded.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{ProxyClient, ProxyHandle, Toxic, start};

const BOUND: Duration = Duration::from_secs(5);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(BOUND, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {BOUND:?}"))
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Serves every connection with `f`, on a free port.
async fn upstream<F, Fut>(f: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind(any_port()).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(f(s));
        }
    });
    addr
}

/// Sends back what it reads; closes its side when the client closes its own.
async fn echo() -> SocketAddr {
    upstream(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Speaks first: writes `pattern(n)`, then closes.
async fn speaker(n: usize) -> SocketAddr {
    upstream(move |mut s| async move {
        let _ = s.write_all(&pattern(n)).await;
        let _ = s.shutdown().await;
    })
    .await
}

async fn proxy_to(up: SocketAddr) -> ProxyHandle {
    start(any_port(), &up.to_string()).await.unwrap()
}

async fn connect(p: &ProxyHandle) -> TcpStream {
    within("connect", TcpStream::connect(p.addr())).await.unwrap()
}

/// Writes `msg` and reads as many bytes back.
async fn roundtrip(c: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    c.write_all(msg).await.unwrap();
    let mut got = vec![0; msg.len()];
    within("echo", c.read_exact(&mut got)).await.unwrap();
    got
}

async fn read_all(c: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    within("read to the end", c.read_to_end(&mut got)).await.map(|_| got)
}

#[tokio::test]
async fn forwards_both_ways_byte_for_byte() {
    let p = proxy_to(echo().await).await;
    let mut c = connect(&p).await;
    let data = pattern(300_000);
    let (mut r, mut w) = c.split();
    // Both at once: the echo's replies would otherwise fill the buffers and stall the send.
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let recv = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = within("echo 300 kB", async { tokio::join!(send, recv) }).await;
    assert!(
        got == data,
        "{} bytes came back, not the {} sent",
        got.len(),
        data.len()
    );
    let s = p.stats();
    assert_eq!(
        (s.connections_accepted, s.bytes_up, s.bytes_down, s.control_connections),
        (1, 300_000, 300_000, 0),
        "{s:?}"
    );
}

#[tokio::test]
async fn latency_delays_each_chunk() {
    let p = proxy_to(echo().await).await;
    p.client().add(&Toxic::latency("lag", 200, 0)).await.unwrap();
    let mut c = connect(&p).await;
    for msg in [&b"ping"[..], b"pong"] {
        let t = Instant::now();
        assert_eq!(roundtrip(&mut c, msg).await, msg);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "round trip in {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn a_toxic_added_while_a_connection_is_open_applies_to_it() {
    let p = proxy_to(echo().await).await;
    let mut c = connect(&p).await;
    assert_eq!(roundtrip(&mut c, b"before").await, b"before");
    assert_eq!(p.stats().connections_open, 1);
    p.client().add(&Toxic::latency("late", 300, 0)).await.unwrap();
    let t = Instant::now();
    assert_eq!(roundtrip(&mut c, b"after").await, b"after");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "round trip in {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn bandwidth_limits_throughput() {
    let p = proxy_to(speaker(64 * 1024).await).await;
    p.client().add(&Toxic::bandwidth("slow", 64)).await.unwrap();
    let t = Instant::now();
    let mut c = connect(&p).await;
    let got = read_all(&mut c).await.unwrap();
    assert_eq!(got.len(), 64 * 1024);
    // 65536 bytes at 64000 B/s: about 1.02 s.
    assert!(t.elapsed() >= Duration::from_millis(800), "64 KiB in {:?}", t.elapsed());
}

#[tokio::test]
async fn slow_close_delays_the_fin_after_the_data() {
    let p = proxy_to(speaker(5).await).await;
    p.client().add(&Toxic::slow_close("linger", 400)).await.unwrap();
    let mut c = connect(&p).await;
    let mut data = [0; 5];
    within("data", c.read_exact(&mut data)).await.unwrap();
    let t = Instant::now();
    let mut more = [0; 16];
    let n = within("eof", c.read(&mut more)).await.unwrap();
    assert_eq!(n, 0, "EOF after the data");
    // 400 ms from the proxy's write; this side may have seen the data a little late.
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "EOF {:?} after the data",
        t.elapsed()
    );
}

#[tokio::test]
async fn timeout_zero_holds_data_until_removed() {
    let p = proxy_to(echo().await).await;
    let mut c = connect(&p).await;
    assert_eq!(roundtrip(&mut c, b"flowing").await, b"flowing");
    p.client().add(&Toxic::timeout("hole", 0)).await.unwrap();
    c.write_all(b"held").await.unwrap();
    let mut got = [0; 4];
    let early = tokio::time::timeout(Duration::from_millis(300), c.read(&mut got)).await;
    assert!(early.is_err(), "bytes came through a black hole: {early:?}");
    p.client().remove("hole").await.unwrap();
    within("held bytes", c.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"held");
}

#[tokio::test]
async fn timeout_closes_after_its_time_with_nothing_through() {
    let p = proxy_to(echo().await).await;
    p.client().add(&Toxic::timeout("cut", 300)).await.unwrap();
    let mut c = connect(&p).await;
    let t = Instant::now();
    c.write_all(b"ping").await.unwrap();
    let got = read_all(&mut c).await.unwrap();
    assert!(got.is_empty(), "{got:?} came through");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "closed after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn reset_peer_resets_the_connection() {
    let p = proxy_to(echo().await).await;
    p.client().add(&Toxic::reset_peer("rst", 0)).await.unwrap();
    let mut c = connect(&p).await;
    c.write_all(b"ping").await.unwrap();
    let e = read_all(&mut c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
}

#[tokio::test]
async fn reset_peer_with_a_timeout_lets_data_through_until_then() {
    let p = proxy_to(echo().await).await;
    p.client().add(&Toxic::reset_peer("rst", 200)).await.unwrap();
    let mut c = connect(&p).await;
    let t = Instant::now();
    assert_eq!(roundtrip(&mut c, b"ping").await, b"ping");
    let e = read_all(&mut c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "reset after {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn slicer_cuts_data_into_small_reads() {
    let p = proxy_to(echo().await).await;
    p.client()
        .add(&Toxic::slicer("slices", 100, 20, 100_000))
        .await
        .unwrap();
    let mut c = connect(&p).await;
    let data = pattern(500);
    c.write_all(&data).await.unwrap();
    let (mut got, mut reads) = (Vec::new(), Vec::new());
    let mut buf = [0; 4096];
    while got.len() < data.len() {
        let n = within("a slice", c.read(&mut buf)).await.unwrap();
        assert!(n > 0, "EOF after {} bytes", got.len());
        reads.push(n);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, data);
    assert!(reads.len() >= 5 && reads.iter().all(|&n| n <= 120), "reads {reads:?}");
}

#[tokio::test]
async fn limit_data_passes_exactly_its_bytes_then_closes() {
    let p = proxy_to(speaker(10_000).await).await;
    p.client().add(&Toxic::limit_data("cap", 1234)).await.unwrap();
    let mut c = connect(&p).await;
    let got = read_all(&mut c).await.unwrap();
    assert_eq!(got.len(), 1234);
    assert!(got == pattern(1234));
}

#[tokio::test]
async fn toxicity_zero_never_applies_and_one_always_does() {
    let p = proxy_to(echo().await).await;
    p.add(Toxic::limit_data("never", 2).with_toxicity(0.0)).unwrap();
    for _ in 0..5 {
        let mut c = connect(&p).await;
        assert_eq!(roundtrip(&mut c, b"hello").await, b"hello");
    }
    p.clear();
    p.add(Toxic::limit_data("always", 2).with_toxicity(1.0)).unwrap();
    for _ in 0..5 {
        let mut c = connect(&p).await;
        c.write_all(b"hello").await.unwrap();
        assert_eq!(read_all(&mut c).await.unwrap(), b"he");
    }
}

#[tokio::test]
async fn upstream_refused_closes_the_client_quickly() {
    let gone = TcpListener::bind(any_port()).await.unwrap().local_addr().unwrap();
    let p = proxy_to(gone).await;
    let mut c = connect(&p).await;
    c.write_all(b"GET /v1/models HTTP/1.1\r\n\r\n").await.unwrap();
    match read_all(&mut c).await {
        Ok(got) => assert!(got.is_empty(), "{got:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(p.stats().upstream_failures, 1);
}

#[tokio::test]
async fn control_api_adds_lists_removes_and_refuses() {
    let p = proxy_to(echo().await).await;
    let api = p.client();
    api.health().await.unwrap();
    let lag = Toxic::latency("lag", 500, 50);
    api.add(&lag).await.unwrap();
    api.add(&Toxic::timeout("hole", 0).upstream()).await.unwrap();
    assert_eq!(
        api.toxics().await.unwrap(),
        vec![lag.clone(), Toxic::timeout("hole", 0).upstream()]
    );
    let e = api.add(&lag).await.unwrap_err().to_string();
    assert!(
        e.contains("409") && e.contains(r#""lag" exists"#) && e.contains(&p.url()),
        "{e}"
    );
    api.remove("lag").await.unwrap();
    let e = api.remove("lag").await.unwrap_err().to_string();
    assert!(e.contains("404"), "{e}");
    api.clear().await.unwrap();
    assert!(api.toxics().await.unwrap().is_empty());

    let http = reqwest::Client::builder().no_proxy().timeout(BOUND).build().unwrap();
    let post = |body: &'static str| {
        http.post(format!("{}/__gauntlet/proxy/toxics", p.url()))
            .body(body)
            .send()
    };
    for (body, status, says) in [
        ("{not json", 400, "invalid toxic"),
        (
            r#"{"name":"x","type":"jitter","attributes":{}}"#,
            400,
            r#"unknown toxic type \"jitter\""#,
        ),
        (
            r#"{"name":"x","type":"latency","attributes":{"latency_ms":-1}}"#,
            400,
            "latency attributes",
        ),
    ] {
        let r = post(body).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(says) && !text.contains('\n'), "{body}: {text}");
    }
    let r = post(r#"{"name":"lag","type":"latency","stream":"downstream","toxicity":1.0,"attributes":{"latency_ms":500,"jitter_ms":50}}"#)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.json::<Toxic>().await.unwrap(), lag);
    let r = http
        .get(format!("{}/__gauntlet/proxy/nothing", p.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let s = api.stats().await.unwrap();
    assert!(s.control_connections >= 1 && s.connections_accepted == 0, "{s:?}");

    let gone = TcpListener::bind(any_port()).await.unwrap().local_addr().unwrap();
    let e = ProxyClient::new(&gone.to_string())
        .health()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with(&format!("proxy http://{gone}: health: no answer")), "{e}");
}

#[tokio::test]
async fn a_control_request_is_never_forwarded() {
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let up = upstream(move |s| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            // Holds the connection and answers nothing: a forwarded request would hang.
            tokio::time::sleep(BOUND * 2).await;
            drop(s);
        }
    })
    .await;
    let p = proxy_to(up).await;
    let api = p.client();
    api.health().await.unwrap();
    api.add(&Toxic::timeout("hole", 0)).await.unwrap();
    api.stats().await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 0, "the upstream saw a connection");
    assert_eq!(p.stats().connections_accepted, 0);
}

#[tokio::test]
async fn other_http_is_forwarded_byte_for_byte() {
    let p = proxy_to(echo().await).await;
    let models = b"GET /v1/models HTTP/1.1\r\nHost: upstream\r\nAuthorization: Bearer k\r\n\r\n".to_vec();
    let mut c = connect(&p).await;
    c.write_all(&models).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await.unwrap(), models);
    // Close to the prefix but not under it, arriving in two writes.
    let near = b"GET /__gauntlet/proxyish HTTP/1.1\r\n\r\n";
    let mut c = connect(&p).await;
    c.write_all(&near[..12]).await.unwrap();
    c.write_all(&near[12..]).await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(read_all(&mut c).await.unwrap(), near);
    let s = p.stats();
    assert_eq!((s.connections_accepted, s.control_connections), (2, 0), "{s:?}");
}

#[tokio::test]
async fn reset_removes_toxics_and_resets_open_connections() {
    let p = proxy_to(echo().await).await;
    let mut c = connect(&p).await;
    assert_eq!(roundtrip(&mut c, b"open").await, b"open");
    let api = p.client();
    api.add(&Toxic::latency("lag", 100, 0)).await.unwrap();
    api.reset().await.unwrap();
    let e = read_all(&mut c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    assert!(api.toxics().await.unwrap().is_empty());
    // New connections go through as before.
    let mut c = connect(&p).await;
    assert_eq!(roundtrip(&mut c, b"again").await, b"again");
}
