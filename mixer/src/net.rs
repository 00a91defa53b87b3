//! Connection hygiene for every listener: at most so many connections at once, back-off
//! instead of spinning when accepting fails (no file descriptors left), connections closed
//! after a while without a byte from the peer, and for gRPC a bound on what one connection
//! may have buffered in unfinished requests and on how long a request may take to arrive.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::Status;

/// Limits of one listener's connections.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection whose peer sent nothing for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/1 request headers, and a gRPC request body, must arrive within this; and a peer
    /// that takes nothing of what the server sends for this long is closed.
    pub request_read_timeout: Duration,
    /// Bytes of unfinished gRPC requests one connection may have buffered.
    pub max_buffered_bytes: usize,
    /// HTTP/2 pings: how often, and how long to wait for the answer before closing.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// HTTP/2 streams (calls) open at once on one connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 4096,
            idle_timeout: Duration::from_secs(300),
            request_read_timeout: Duration::from_secs(10),
            max_buffered_bytes: 32 * 1024 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_concurrent_streams: 1024,
        }
    }
}

/// Accepted connections of `listener`, as a stream for tonic or [`serve_http`]. It never
/// yields an error: accept failures are logged and retried with back-off, so a process out
/// of file descriptors waits instead of spinning.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    name: &'static str,
) -> impl futures::Stream<Item = Result<Connection, std::io::Error>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let state = (listener, slots, limits);
    futures::stream::unfold(state, move |(listener, slots, limits)| async move {
        let conn = accept(&listener, &slots, &limits, name).await;
        Some((Ok(conn), (listener, slots, limits)))
    })
}

async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    limits: &ConnectionLimits,
    name: &'static str,
) -> Connection {
    let permit = match slots.clone().acquire_owned().await {
        Ok(p) => p,
        // The semaphore is never closed; waiting forever is the honest fallback.
        Err(_) => return futures::future::pending().await,
    };
    let mut backoff = Duration::from_millis(5);
    let mut last_warning: Option<Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Connection::new(stream, peer, permit, limits);
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                    tracing::warn!(listener = name, error = %e, retry_in = ?backoff, "Cannot accept connections.");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Errors of one connection that came and went before it was accepted.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// What one connection has buffered in unfinished requests, shared by its requests.
#[derive(Debug, Default)]
pub struct ConnectionBudget {
    buffered: AtomicUsize,
}

/// Request extension for tonic calls: the peer and its connection's budget.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    pub budget: Arc<ConnectionBudget>,
}

/// An accepted TCP connection that holds its listener slot and fails once the peer has
/// sent nothing for the idle timeout, or taken nothing of a pending write for the write
/// timeout.
pub struct Connection {
    stream: TcpStream,
    info: ConnectionInfo,
    _slot: OwnedSemaphorePermit,
    idle_timeout: Duration,
    last_read: Instant,
    idle: Pin<Box<Sleep>>,
    write_timeout: Duration,
    /// Running while a write waits for the peer to take data.
    write_stall: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        limits: &ConnectionLimits,
    ) -> Connection {
        Connection {
            stream,
            info: ConnectionInfo {
                peer,
                budget: Arc::default(),
            },
            _slot: slot,
            idle_timeout: limits.idle_timeout,
            last_read: Instant::now(),
            idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            write_timeout: limits.request_read_timeout,
            write_stall: None,
        }
    }

    /// A write's outcome, failed once it has waited for the peer past the write timeout:
    /// a peer that reads nothing would hold the response in memory for good.
    fn watch_write(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        if written.is_ready() {
            self.write_stall = None;
            return written;
        }
        self.poll_write_stall(cx).map(Err)
    }

    /// Pending while a stalled write is within the write timeout; an error after.
    fn poll_write_stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let timeout = self.write_timeout;
        // Started when a write first waits; most writes never do.
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stall.as_mut().poll(cx));
        Poll::Ready(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer took nothing of a pending write within the write timeout",
        ))
    }

    /// Pending while the peer has been heard from within the idle timeout; an error after.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        loop {
            ready!(self.idle.as_mut().poll(cx));
            // The timer is not moved on every read; it is checked against the last one.
            let deadline = self.last_read + self.idle_timeout;
            if Instant::now() >= deadline {
                return Poll::Ready(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the peer sent nothing within the idle timeout",
                ));
            }
            self.idle
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_read = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match this.poll_idle(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch_write(cx, written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watch_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// Serves HTTP/1.1 (`router`) on `listener` with the connection limits and a deadline for
/// request headers. Runs until the task is dropped.
///
/// HTTP/1.1 only: health probes and Prometheus speak it, and one response at a time per
/// connection means a peer that stops reading stalls the socket, which the write timeout
/// closes (HTTP/2 flow control would hold any number of responses without a stalled write).
pub async fn serve_http(
    listener: TcpListener,
    limits: ConnectionLimits,
    name: &'static str,
    router: axum::Router,
) {
    use futures::StreamExt;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_read_timeout);
    let builder = Arc::new(builder);
    let mut connections = std::pin::pin!(incoming(listener, limits, name));
    while let Some(Ok(conn)) = connections.next().await {
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _ = builder.serve_connection(TokioIo::new(conn), service).await;
        });
    }
}

/// A tower layer for the gRPC server: bounds the body of every request (see
/// [`LimitedBody`]).
#[derive(Clone, Debug)]
pub struct RequestLimitsLayer {
    limits: Arc<RequestLimits>,
}

#[derive(Clone, Debug)]
struct RequestLimits {
    max_message: usize,
    max_connection_buffered: usize,
    read_timeout: Duration,
    /// Paths of client-streaming methods, whose bodies are bounded per message.
    streaming: Vec<&'static str>,
}

impl RequestLimitsLayer {
    pub fn new(max_message: usize, connection: &ConnectionLimits) -> RequestLimitsLayer {
        RequestLimitsLayer {
            limits: Arc::new(RequestLimits {
                max_message,
                max_connection_buffered: connection.max_buffered_bytes,
                read_timeout: connection.request_read_timeout,
                streaming: Vec::new(),
            }),
        }
    }

    /// Marks `paths` (`/package.Service/Method`) as client-streaming: a stream may live
    /// for days and wait between messages, so the read deadline and the connection's
    /// buffer budget apply to each message instead of to the whole body.
    pub fn streaming(mut self, paths: &[&'static str]) -> RequestLimitsLayer {
        let limits = Arc::make_mut(&mut self.limits);
        limits.streaming.extend_from_slice(paths);
        self
    }
}

impl<S> tower_layer::Layer<S> for RequestLimitsLayer {
    type Service = RequestLimitsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLimitsService {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RequestLimitsService<S> {
    inner: S,
    limits: Arc<RequestLimits>,
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for RequestLimitsService<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let budget = req
            .extensions()
            .get::<ConnectionInfo>()
            .map(|i| i.budget.clone());
        let limits = self.limits.clone();
        let streaming = limits.streaming.contains(&req.uri().path());
        let req = req
            .map(|body| tonic::body::Body::new(LimitedBody::new(body, limits, budget, streaming)));
        self.inner.call(req)
    }
}

/// A gRPC request body that fails, freeing what it buffered, when
///
/// * a message's length prefix is over `--max-message-size` (RESOURCE_EXHAUSTED, before
///   any of it is buffered),
/// * its connection's unfinished requests would hold more than
///   `--max-connection-buffered-bytes` (RESOURCE_EXHAUSTED), or
/// * it has not arrived completely within `--request-read-timeout` (DEADLINE_EXCEEDED).
///
/// A client-streaming body is bounded per message instead: only bytes of its unfinished
/// message are charged to the connection, and the deadline runs from the stream's start
/// until its first message is complete, then from the first byte of each later message
/// to its last. Between messages it may wait as long as the connection lives.
pub struct LimitedBody {
    inner: tonic::body::Body,
    limits: Arc<RequestLimits>,
    budget: Option<Arc<ConnectionBudget>>,
    /// Bytes charged to the connection's budget.
    held: usize,
    frames: FrameParser,
    streaming: bool,
    /// When the part that must arrive within the read timeout started; `None` while a
    /// stream waits between messages.
    started: Option<Instant>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl LimitedBody {
    fn new(
        inner: tonic::body::Body,
        limits: Arc<RequestLimits>,
        budget: Option<Arc<ConnectionBudget>>,
        streaming: bool,
    ) -> LimitedBody {
        LimitedBody {
            inner,
            limits,
            budget,
            held: 0,
            frames: FrameParser::default(),
            streaming,
            started: Some(Instant::now()),
            deadline: None,
        }
    }

    /// For a stream, after each data frame: frees the budget of the messages it completed
    /// and moves the deadline to the message now arriving, if any.
    fn track_messages(&mut self) {
        if !self.streaming {
            return;
        }
        let pending = self.frames.pending_bytes();
        if let Some(budget) = &self.budget
            && pending < self.held
        {
            budget
                .buffered
                .fetch_sub(self.held - pending, Ordering::Relaxed);
            self.held = pending;
        }
        if pending == 0 {
            self.started = None;
        } else if self.started.is_none() {
            self.started = Some(Instant::now());
        }
    }

    fn charge(&mut self, data: &Bytes) -> Result<(), Status> {
        if let Some(len) = self.frames.over_limit(data, self.limits.max_message) {
            return Err(Status::resource_exhausted(format!(
                "the request message is {len} bytes, over the limit of {} bytes (--max-message-size)",
                self.limits.max_message
            )));
        }
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let n = data.len();
        let total = budget.buffered.fetch_add(n, Ordering::Relaxed) + n;
        self.held += n;
        let max = self.limits.max_connection_buffered;
        if total > max {
            return Err(Status::resource_exhausted(format!(
                "this connection's unfinished requests hold more than {max} bytes (--max-connection-buffered-bytes)"
            )));
        }
        Ok(())
    }

    /// Ready with an error once the read deadline has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<Status> {
        let timeout = self.limits.read_timeout;
        let Some(started) = self.started else {
            // A stream between messages: no deadline.
            self.deadline = None;
            return Poll::Pending;
        };
        let at = tokio::time::Instant::from_std(started + timeout);
        // Created only for bodies that do not arrive at once: most never need a timer.
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if deadline.deadline() != at {
            deadline.as_mut().reset(at);
        }
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Status::deadline_exceeded(if self.streaming {
            format!(
                "a message of this stream did not arrive completely within {timeout:?} (--request-read-timeout)"
            )
        } else {
            format!(
                "the request did not arrive completely within {timeout:?} (--request-read-timeout)"
            )
        }))
    }
}

impl Drop for LimitedBody {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.buffered.fetch_sub(self.held, Ordering::Relaxed);
        }
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = this.charge(data) {
                        return Poll::Ready(Some(Err(status)));
                    }
                    this.track_messages();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(status))) => Poll::Ready(Some(Err(status))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.poll_deadline(cx) {
                Poll::Ready(status) => Poll::Ready(Some(Err(status))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Follows the gRPC length-prefixed messages of a body across data frames, to read each
/// message's declared length before its bytes are buffered.
#[derive(Debug, Default)]
struct FrameParser {
    /// Bytes of the current 5-byte prefix seen so far.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    /// The declared length of the current message.
    length: usize,
}

impl FrameParser {
    /// The declared length of a message in `data` that is over `max`, if any.
    fn over_limit(&mut self, data: &Bytes, max: usize) -> Option<usize> {
        let mut data = data.clone();
        while data.has_remaining() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.remaining());
                data.advance(n);
                self.remaining -= n;
                continue;
            }
            let n = (5 - self.prefix_len).min(data.remaining());
            data.copy_to_slice(&mut self.prefix[self.prefix_len..self.prefix_len + n]);
            self.prefix_len += n;
            if self.prefix_len == 5 {
                self.prefix_len = 0;
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as usize;
                if len > max {
                    return Some(len);
                }
                self.remaining = len;
                self.length = len;
            }
        }
        None
    }

    /// Bytes received so far of the message not yet complete (0 between messages).
    fn pending_bytes(&self) -> usize {
        if self.prefix_len > 0 {
            self.prefix_len
        } else if self.remaining > 0 {
            5 + self.length - self.remaining
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn frame_parser_reads_prefixes_across_frames() {
        let mut body = message(10);
        body.extend(message(3));
        body.extend(message(100));
        // Split at every position: the third message is found over a limit of 50, the
        // first two are not.
        for cut in 0..body.len() {
            let mut p = FrameParser::default();
            let a = p.over_limit(&Bytes::copy_from_slice(&body[..cut]), 50);
            let b = p.over_limit(&Bytes::copy_from_slice(&body[cut..]), 50);
            assert_eq!(a.or(b), Some(100), "cut at {cut}");
        }
        let mut p = FrameParser::default();
        assert_eq!(p.over_limit(&Bytes::from(body), 100), None);
    }

    #[test]
    fn frame_parser_counts_the_bytes_of_the_unfinished_message() {
        let mut body = message(10);
        body.extend(message(3));
        let mut p = FrameParser::default();
        let pending = |p: &mut FrameParser, bytes: &[u8]| {
            p.over_limit(&Bytes::copy_from_slice(bytes), 100);
            p.pending_bytes()
        };
        assert_eq!(pending(&mut p, &body[..3]), 3, "inside the first prefix");
        assert_eq!(pending(&mut p, &body[3..9]), 9, "inside the first message");
        assert_eq!(
            pending(&mut p, &body[9..15]),
            0,
            "the first message is complete"
        );
        assert_eq!(
            pending(&mut p, &body[15..18]),
            3,
            "the second one has begun"
        );
        assert_eq!(pending(&mut p, &body[18..]), 0, "both are complete");
        assert_eq!(
            pending(&mut p, &message(0)),
            0,
            "an empty message is complete at once"
        );
    }
}
