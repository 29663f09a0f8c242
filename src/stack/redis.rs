//! The one Redis client gauntlet has: a command at a time over RESP2, for readiness pings and
//! for reading the router's state (cooldowns, cache entries, usage counters). Never writes.
//!
//! Each call connects, logs in and selects the database the `redis://` URL names (`AUTH`,
//! `SELECT`), sends one command and reads one complete reply — however the reply is split
//! across TCP reads — all within the caller's time bound.
//!
//! Deliberately not the `redis` crate: gauntlet needs one command and one reply at a time, which
//! is this file; that crate brings its own connection management and a tree of dependencies.

use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Redis' own default port, for a URL that names none.
pub const DEFAULT_PORT: u16 = 6379;
/// Redis' own limit on a bulk string.
const MAX_BULK: i64 = 512 * 1024 * 1024;
/// Longer than any status, error or length line Redis sends.
const MAX_LINE: u64 = 64 * 1024;

/// One reply of Redis' protocol (RESP2), as far as gauntlet reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Nil,
    Int(i64),
    Text(String),
    List(Vec<Resp>),
}

impl Resp {
    pub fn text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// A Redis to talk to: where it is, and what a `redis://` URL says to log in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A name or an address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The database to `SELECT` (the URL's path), if not the default.
    pub db: Option<u32>,
}

impl Target {
    /// `host:port`, no login.
    pub fn at(host: &str, port: u16) -> Self {
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        Self {
            host: host.to_owned(),
            port,
            username: None,
            password: None,
            db: None,
        }
    }

    /// `redis://[[username]:password@]host[:port][/db]`, as redis-py and LiteLLM read it: the
    /// port defaults to 6379, `[::1]` is an IPv6 host, user and password are percent-decoded.
    /// The password is registered for redaction.
    pub fn parse(url: &str) -> Result<Self, String> {
        let u = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        match u.scheme() {
            "redis" => {}
            "rediss" => return Err("TLS (rediss://) is not supported".into()),
            other => return Err(format!("the scheme is {other}://, not redis://")),
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err("no host".into()),
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "the user or password is not UTF-8 once percent-decoded".to_owned())
        };
        let username = Some(decode(u.username())?).filter(|s| !s.is_empty());
        let password = u.password().map(decode).transpose()?;
        if let Some(p) = &password {
            crate::redact::register(p);
        }
        let db = match u.path().trim_start_matches('/') {
            "" => None,
            n => Some(
                n.parse::<u32>()
                    .map_err(|_| format!("the path {:?} is not a database number", u.path()))?,
            ),
        };
        Ok(Self {
            host,
            port: u.port().unwrap_or(DEFAULT_PORT),
            username,
            password,
            db,
        })
    }

    /// `host:port`, for messages (never the password).
    pub fn shown(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Sends `args` to the Redis at `url` (`redis://…`, see [`Target::parse`]) and reads the reply,
/// all within `bound`.
pub async fn command_at(url: &str, args: &[&str], bound: Duration) -> anyhow::Result<Resp> {
    let target = Target::parse(url).map_err(|e| anyhow::anyhow!("redis URL {}: {e}", crate::redact::redact(url)))?;
    command(&target, args, bound).await
}

/// Sends `args` to the Redis at `target` (after `AUTH` and `SELECT`, if it names them) and
/// reads the reply, all within `bound`. An error reply is an error naming the command.
pub async fn command(target: &Target, args: &[&str], bound: Duration) -> anyhow::Result<Resp> {
    let name = args.first().copied().unwrap_or_default();
    let at = target.shown();
    let io = async {
        let s = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
        let mut s = BufReader::new(s);
        if let Some(p) = &target.password {
            let mut auth = vec!["AUTH"];
            auth.extend(target.username.as_deref());
            auth.push(p);
            exchange(&mut s, &auth).await?;
        }
        if let Some(db) = target.db {
            exchange(&mut s, &["SELECT", &db.to_string()]).await?;
        }
        exchange(&mut s, args).await
    };
    tokio::time::timeout(bound, io)
        .await
        .map_err(|_| anyhow::anyhow!("redis at {at}: no answer to {name} within {}s", bound.as_secs_f64()))?
        .with_context(|| format!("redis at {at}"))
}

/// One command and its reply on an open connection.
async fn exchange(s: &mut BufReader<tokio::net::TcpStream>, args: &[&str]) -> anyhow::Result<Resp> {
    s.get_mut().write_all(&encode(args)).await?;
    match read_reply(s).await? {
        Ok(r) => Ok(r),
        Err(e) => anyhow::bail!("{} refused: {e}", args.first().copied().unwrap_or_default()),
    }
}

/// `args` as a RESP array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one complete reply, however it arrives. The outer error is the connection's or a
/// malformed reply; the inner one an error reply (`-ERR …`) at the top level (one inside an
/// array is an outer error).
pub async fn read_reply<R: AsyncBufRead + Unpin + Send>(r: &mut R) -> anyhow::Result<Result<Resp, String>> {
    let line = read_line(r).await?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let n = || -> anyhow::Result<i64> { rest.parse().map_err(|_| anyhow::anyhow!("malformed reply {line:?}")) };
    Ok(Ok(match kind {
        "+" => Resp::Text(rest.to_owned()),
        "-" => return Ok(Err(rest.to_owned())),
        ":" => Resp::Int(n()?),
        "$" => match n()? {
            len if len < 0 => Resp::Nil,
            len if len > MAX_BULK => anyhow::bail!("a bulk string of {len} bytes"),
            len => {
                let mut buf = vec![0u8; len as usize + 2];
                r.read_exact(&mut buf).await.map_err(closed)?;
                anyhow::ensure!(buf.ends_with(b"\r\n"), "a bulk string not ended by CRLF");
                buf.truncate(len as usize);
                Resp::Text(String::from_utf8_lossy(&buf).into_owned())
            }
        },
        "*" => match n()? {
            len if len < 0 => Resp::Nil,
            len => {
                let mut items = Vec::with_capacity(len.min(1024) as usize);
                for _ in 0..len {
                    match Box::pin(read_reply(r)).await? {
                        Ok(item) => items.push(item),
                        Err(e) => anyhow::bail!("an error inside an array: {e}"),
                    }
                }
                Resp::List(items)
            }
        },
        _ => anyhow::bail!("malformed reply {line:?}"),
    }))
}

/// One `\r\n`-ended line, without its end.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    (&mut *r).take(MAX_LINE).read_until(b'\n', &mut buf).await?;
    if !buf.ends_with(b"\n") {
        return Err(if buf.len() as u64 >= MAX_LINE {
            anyhow::anyhow!("a reply line longer than {MAX_LINE} bytes")
        } else {
            closed(std::io::ErrorKind::UnexpectedEof.into())
        });
    }
    anyhow::ensure!(buf.ends_with(b"\r\n"), "a reply line not ended by CRLF");
    buf.truncate(buf.len() - 2);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn closed(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        anyhow::anyhow!("the connection closed in the middle of a reply")
    } else {
        e.into()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake Redis on loopback: for each command it reads (a whole RESP array, however it
    /// arrives), it records the command and writes the next scripted reply in the given
    /// pieces, pausing between them so each piece is its own TCP read on the other side.
    pub(crate) async fn fake_redis(
        script: Vec<Vec<&'static [u8]>>,
    ) -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut s = BufReader::new(s);
            for pieces in script {
                let Ok(Ok(Resp::List(cmd))) = read_reply(&mut s).await else {
                    return;
                };
                let _ = tx.send(cmd.iter().filter_map(|c| c.text().map(str::to_owned)).collect());
                for p in pieces {
                    s.get_mut().write_all(p).await.unwrap();
                    s.get_mut().flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
        });
        (port, rx)
    }

    const BOUND: Duration = Duration::from_secs(3);

    #[tokio::test]
    async fn replies_split_across_reads_are_read_whole() {
        let (port, _) = fake_redis(vec![vec![b":12", b"34\r", b"\n"]]).await;
        let r = command(&Target::at("127.0.0.1", port), &["PTTL", "k"], BOUND).await;
        assert_eq!(r.unwrap(), Resp::Int(1234));
        let (port, _) = fake_redis(vec![vec![b"*3\r\n$5\r\nhel", b"lo\r\n$-1\r", b"\n:", b"7\r\n"]]).await;
        let r = command(&Target::at("127.0.0.1", port), &["X"], BOUND).await;
        assert_eq!(
            r.unwrap(),
            Resp::List(vec![Resp::Text("hello".into()), Resp::Nil, Resp::Int(7)])
        );
        let (port, _) = fake_redis(vec![vec![b"-ERR wrong", b"type\r\n"]]).await;
        let e = command(&Target::at("127.0.0.1", port), &["GET", "k"], BOUND)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("GET refused: ERR wrongtype"), "{e:#}");
        // A reply the server never finishes is an error, not what arrived of it.
        let (port, _) = fake_redis(vec![vec![b":12"]]).await;
        let e = command(&Target::at("127.0.0.1", port), &["PTTL", "k"], BOUND)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("closed in the middle"), "{e:#}");
    }

    #[tokio::test]
    async fn the_url_logs_in_and_selects_its_database() {
        let (port, mut seen) = fake_redis(vec![vec![b"+OK\r\n"], vec![b"+OK\r\n"], vec![b":-2\r\n"]]).await;
        let url = format!("redis://app:p%40ss-word-1234@127.0.0.1:{port}/3");
        assert_eq!(command_at(&url, &["PTTL", "k"], BOUND).await.unwrap(), Resp::Int(-2));
        let mut got = Vec::new();
        while let Ok(c) = seen.try_recv() {
            got.push(c.join(" "));
        }
        assert_eq!(got, ["AUTH app p@ss-word-1234", "SELECT 3", "PTTL k"]);
        let (port, _) = fake_redis(vec![vec![b"-WRONGPASS invalid password\r\n"]]).await;
        let e = command_at(&format!("redis://:nope-nope-nope@127.0.0.1:{port}"), &["PING"], BOUND)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("AUTH refused: WRONGPASS"), "{e:#}");
    }

    #[test]
    fn urls_parse_as_redis_clients_read_them() {
        let t = Target::parse("redis://[::1]:7000").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("::1", 7000, None));
        assert_eq!(t.shown(), "[::1]:7000");
        let t = Target::parse("redis://:secret-pw-123@cache.internal/2").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.username, t.password.as_deref(), t.db),
            ("cache.internal", DEFAULT_PORT, None, Some("secret-pw-123"), Some(2))
        );
        assert_eq!(Target::parse("redis://h:1/").unwrap().db, None);
        assert_eq!(Target::at("[::1]", 1).host, "::1");
        for (bad, why) in [
            ("redis://h/x", "database number"),
            ("rediss://h", "TLS"),
            ("http://h", "scheme"),
            ("redis://h:notaport", "not a URL"),
            ("redis://", "no host"),
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
