//! A blocking HTTP/1.1 client for tests: one GET per connection (`Connection: close`),
//! bounded in time and, optionally, in body size. Enough for the monitoring and Prometheus
//! listeners and for checking how they treat a client; not a general client.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Bytes read beyond a body cap before giving up: the head and chunk framing.
const FRAMING_SLACK: usize = 64 * 1024;

/// A response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The body, de-chunked when it was sent chunked.
    pub body: Vec<u8>,
    /// From before connecting until the whole response was read.
    pub elapsed: Duration,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `path` from `addr`; the whole exchange, connecting included, must finish within
/// `timeout` (an error of kind `TimedOut` otherwise).
pub fn get(addr: impl ToSocketAddrs, path: &str, timeout: Duration) -> io::Result<Response> {
    fetch(addr, "GET", path, &[], timeout, usize::MAX)
}

/// `method path` with extra request `headers` (a proxy test's request).
pub fn request(
    addr: impl ToSocketAddrs,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<Response> {
    fetch(addr, method, path, headers, timeout, usize::MAX)
}

/// As [`get`], reading at most about `cap` body bytes: a longer body is an error (of kind
/// `InvalidData`) instead of memory the test cannot afford.
pub fn get_capped(
    addr: impl ToSocketAddrs,
    path: &str,
    cap: usize,
    timeout: Duration,
) -> io::Result<Response> {
    fetch(addr, "GET", path, &[], timeout, cap)
}

fn fetch(
    addr: impl ToSocketAddrs,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
    cap: usize,
) -> io::Result<Response> {
    let started = Instant::now();
    let deadline = started + timeout;
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str("Host: localhost\r\n");
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes())?;
    let limit = cap.saturating_add(FRAMING_SLACK);
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            Err(e) => return Err(e),
        }
        if raw.len() > limit {
            return Err(invalid(format!("the response is over {cap} body bytes")));
        }
    }
    let elapsed = started.elapsed();
    parse(&raw, elapsed)
}

/// Time left before `deadline`; a `TimedOut` error when none is.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(timed_out()),
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no complete response in time")
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn parse(raw: &[u8], elapsed: Duration) -> io::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers".to_owned()))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("no status in {head:?}")))?;
    let body = &raw[split + 4..];
    let chunked = head.lines().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        head,
        body,
        elapsed,
    })
}

/// The data of a chunked body (trailers ignored).
fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let truncated = || invalid("a truncated chunked body".to_owned());
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(truncated)?;
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| truncated())?;
        // A chunk extension (`;name=value`) may follow the size.
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size {line:?}")))?;
        if size == 0 {
            return Ok(out);
        }
        let data = rest.get(eol + 2..eol + 2 + size).ok_or_else(truncated)?;
        out.extend_from_slice(data);
        rest = rest.get(eol + 4 + size..).ok_or_else(truncated)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let plain = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!((plain.status, plain.text().as_str()), (200, "hello"));
        let chunked = parse(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\n, w\r\n0\r\n\r\n",
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!((chunked.status, chunked.text().as_str()), (503, "hello, w"));
        assert!(
            parse(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
                Duration::ZERO
            )
            .is_err()
        );
        assert!(parse(b"HTTP/1.1 200 OK\r\n", Duration::ZERO).is_err());
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let err = get(addr, "/", Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(listener);
    }
}
