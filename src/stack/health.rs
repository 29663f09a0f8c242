//! Readiness checks and the bounded wait for them (`wait_health`).

use std::time::{Duration, Instant};

use super::manifest::Health;
use super::redis::Resp;

/// One readiness probe against `host:port`. `Ok(())` means ready; `Err` says why not.
pub async fn probe(health: &Health, host: &str, port: u16, http: &reqwest::Client) -> Result<(), String> {
    let target = super::redis::Target::at(host, port);
    if health.redis {
        return redis_ping(&target).await;
    }
    let path = health.http.as_deref().unwrap_or("/");
    let url = format!("http://{}{path}", target.shown());
    match http.get(&url).timeout(Duration::from_secs(2)).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("GET {url} answered {}", r.status())),
        Err(e) => Err(format!("GET {url}: {}", crate::client::error_chain(&e))),
    }
}

/// How long `gauntlet probe` may take in all: a healthcheck that hangs would only be killed at
/// the engine's own timeout, and say nothing.
pub const PROBE_BOUND: Duration = Duration::from_secs(5);

/// `gauntlet probe URL`: one readiness check, for a container healthcheck in an image with no
/// shell or curl (the gauntlet image is `FROM scratch`). `http(s)://` is a GET, ready on 2xx as
/// in [`probe`]; `redis://host:port` a PING. Proxies in the environment are ignored: the
/// target is the container itself.
pub async fn probe_url(url: &str) -> Result<String, String> {
    let check = async {
        if url.starts_with("redis://") {
            let target = super::redis::Target::parse(url).map_err(|e| {
                format!("{url}: want redis://host:port (optionally user:password@ before the host, /db after it): {e}")
            })?;
            return redis_ping(&target).await.map(|()| format!("{url}: PONG"));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(PROBE_BOUND)
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
        match http.get(url).send().await {
            Ok(r) if r.status().is_success() => Ok(format!("GET {url}: {}", r.status())),
            Ok(r) => Err(format!("GET {url} answered {}", r.status())),
            Err(e) => Err(format!("GET {url}: {}", crate::client::error_chain(&e))),
        }
    };
    tokio::time::timeout(PROBE_BOUND, check)
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer within {}s", PROBE_BOUND.as_secs())))
}

/// How long a PING or a PTTL may take, connecting included.
const REDIS_BOUND: Duration = Duration::from_secs(2);

async fn redis_ping(target: &super::redis::Target) -> Result<(), String> {
    let at = target.shown();
    match super::redis::command(target, &["PING"], REDIS_BOUND).await {
        Ok(Resp::Text(t)) if t == "PONG" => Ok(()),
        Ok(other) => Err(format!("redis at {at} answered {other:?} to PING")),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Milliseconds until `key` expires in the Redis at `url` (`redis://…`, see
/// [`super::redis::Target::parse`]): -2 when it does not exist, -1 when it never expires
/// (Redis' own `PTTL` answers).
pub async fn redis_pttl(url: &str, key: &str) -> anyhow::Result<i64> {
    match super::redis::command_at(url, &["PTTL", key], REDIS_BOUND).await? {
        Resp::Int(ms) => Ok(ms),
        other => anyhow::bail!("redis at {} answered {other:?} to PTTL", crate::redact::redact(url)),
    }
}

/// Why a service never became ready.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WaitError {
    /// It exited (or otherwise stopped) while being waited for.
    #[error("{0}")]
    Dead(String),
    /// Still not ready when the bound ran out; the last probe's answer.
    #[error("not healthy after {:.1}s (last: {last})", after.as_secs_f64())]
    TimedOut { after: Duration, last: String },
}

/// Polls `check` until it succeeds or `timeout` passes; `dead` is asked between polls so a
/// service that exited fails at once instead of after the whole timeout.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    mut check: F,
    mut dead: impl FnMut() -> Option<String>,
) -> Result<Duration, WaitError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let last = match check().await {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => e,
        };
        if let Some(why) = dead() {
            return Err(WaitError::Dead(why));
        }
        if start.elapsed() >= timeout {
            return Err(WaitError::TimedOut { after: timeout, last });
        }
        tokio::time::sleep(pause.min(timeout.saturating_sub(start.elapsed()))).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// `HEALTH_TIMEOUT` in seconds (default 60): a number, or a usage error naming the variable.
pub fn health_timeout() -> Result<Duration, crate::error::RunError> {
    parse_timeout(std::env::var("HEALTH_TIMEOUT").ok().as_deref())
}

fn parse_timeout(v: Option<&str>) -> Result<Duration, crate::error::RunError> {
    match v.map(str::trim) {
        None | Some("") => Ok(Duration::from_secs(60)),
        Some(s) => match s.parse::<f64>() {
            Ok(n) if n.is_finite() && n > 0.0 && n <= 86_400.0 => Ok(Duration::from_secs_f64(n)),
            _ => Err(crate::error::RunError::usage(format!(
                "HEALTH_TIMEOUT={s:?} is not a number of seconds between 0 and 86400 (e.g. HEALTH_TIMEOUT=120)"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::stack::redis::tests::fake_redis;

    /// The old PING and PTTL did one read and took what it held: `:1234\r\n` arriving as
    /// `:12` and `34\r\n` was 12 milliseconds, and `+PO` + `NG\r\n` a failed check.
    #[tokio::test]
    async fn redis_replies_split_across_reads() {
        let (port, _) = fake_redis(vec![vec![b":12", b"34\r\n"]]).await;
        let ms = redis_pttl(&format!("redis://127.0.0.1:{port}"), "deployment:x:cooldown").await;
        assert_eq!(ms.unwrap(), 1234);
        let (port, _) = fake_redis(vec![vec![b"+PO", b"NG\r\n"]]).await;
        let r = probe_url(&format!("redis://127.0.0.1:{port}")).await;
        assert!(r.is_ok(), "{r:?}");
        let (port, _) = fake_redis(vec![vec![b"+PO", b"NG\r\n"]]).await;
        let health = Health {
            http: None,
            redis: true,
        };
        let r = probe(&health, "127.0.0.1", port, &reqwest::Client::new()).await;
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn health_timeout_parsing() {
        assert_eq!(parse_timeout(None).unwrap(), Duration::from_secs(60));
        assert_eq!(parse_timeout(Some("2.5")).unwrap(), Duration::from_millis(2500));
        for bad in ["abc", "-1", "0", "nan", "1e9"] {
            let e = parse_timeout(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("HEALTH_TIMEOUT"), "{e}");
        }
    }

    /// A one-shot server on loopback answering `reply` to whatever it is sent.
    async fn answering(reply: &'static [u8]) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn probe_url_http_redis_and_refusals() {
        let ok = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        let r = probe_url(&format!("http://127.0.0.1:{ok}/health")).await;
        assert!(r.as_ref().is_ok_and(|m| m.contains("200")), "{r:?}");
        let bad =
            answering(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        let r = probe_url(&format!("http://127.0.0.1:{bad}/health")).await;
        assert!(r.as_ref().is_err_and(|m| m.contains("503")), "{r:?}");
        let pong = answering(b"+PONG\r\n").await;
        assert!(probe_url(&format!("redis://127.0.0.1:{pong}")).await.is_ok());
        let closed = crate::stack::free_port().unwrap();
        assert!(probe_url(&format!("http://127.0.0.1:{closed}/")).await.is_err());
        assert!(
            probe_url("redis://host:notaport")
                .await
                .unwrap_err()
                .contains("redis://host:port")
        );
        // Silence is bounded.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = l.local_addr().unwrap().port();
        let t = Instant::now();
        assert!(probe_url(&format!("http://127.0.0.1:{silent}/")).await.is_err());
        assert!(t.elapsed() < PROBE_BOUND + Duration::from_secs(2));
        drop(l);
    }

    #[tokio::test]
    async fn wait_is_bounded_and_reports_the_last_error() {
        let t = Instant::now();
        let r = wait_until(Duration::from_millis(200), || async { Err("nope".to_owned()) }, || None).await;
        assert!(
            matches!(r, Err(WaitError::TimedOut { ref last, .. }) if last == "nope"),
            "{r:?}"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        let r = wait_until(
            Duration::from_secs(30),
            || async { Err("x".to_owned()) },
            || Some("exited".into()),
        )
        .await;
        assert_eq!(r.unwrap_err(), WaitError::Dead("exited".into()));
    }
}
