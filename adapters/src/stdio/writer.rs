//! The output queue and the thread that writes it.
//!
//! Report handlers must never wait on output: a terminal, a pipe or a disk can stall for
//! any length of time. Formatted lines therefore go into a bounded queue, and one
//! dedicated OS thread (not an async task, so a blocking `write` can never stall the
//! runtime's workers) writes them out through a buffer. When the queue is full a line is
//! dropped and counted instead of waiting for room.
//!
//! A line the output refuses (a full disk, a closed pipe) is lost too, and counted in the
//! same self-metric: the buffer ([`LineBuffer`]) knows how many whole lines it holds, so a
//! failed write reports exactly how many were lost. The buffer is then emptied and the
//! writer carries on, so output resumes by itself once the stream or file accepts writes
//! again; the failure is logged when it starts, every [`FAILURE_LOG_INTERVAL`] while it
//! lasts, and when it ends, never once per line.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ::prometheus::IntCounter;

/// Buffered output is written out at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Size of the output buffer in front of the stream or file: large enough that a busy
/// writer makes few system calls, small enough to be lost cheaply on a crash.
pub const BUFFER_BYTES: usize = 64 * 1024;

/// Bytes of queued lines a writer holds at most (besides its bound in lines): what a
/// stalled output can cost in memory when lines are unusually long (a client sending
/// huge header values, say). Ordinary access-log lines never come near it.
pub const QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// While output keeps failing, the failure is logged again at most this often.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Lines lost because the stream or file refused a write.
#[derive(Debug, thiserror::Error)]
#[error("{lines} line(s) lost: {source}")]
pub struct Lost {
    /// Lines not (completely) written; 0 when only a flush of the stream failed.
    pub lines: u64,
    #[source]
    pub source: io::Error,
}

/// Two losses (either may be absent) as one result, reported with the first error.
pub fn combine(first: Option<Lost>, then: Option<Lost>) -> Result<(), Lost> {
    match (first, then) {
        (None, None) => Ok(()),
        (Some(l), None) | (None, Some(l)) => Err(l),
        (Some(a), Some(b)) => Err(Lost {
            lines: a.lines + b.lines,
            source: a.source,
        }),
    }
}

/// Where the writer thread puts lines. Lines accepted may be buffered; a write that
/// fails reports the lines it lost (buffered ones included), and those lines are gone:
/// the sink must stay usable for the next ones.
pub trait LineSink: Send {
    /// Writes (or buffers) one whole line, newline included.
    fn write_line(&mut self, line: &[u8]) -> Result<(), Lost>;
    /// Writes every buffered line to the stream or file.
    fn flush_lines(&mut self) -> Result<(), Lost>;
}

/// A write buffer of whole lines in front of a stream or file.
///
/// Unlike `BufWriter`, which keeps the bytes of a failed write and fails every later
/// write while they do not go out, it drops what could not be written and says how many
/// lines that was. A line cut short by a failure (a disk filling up mid-write) is ended
/// with a newline before anything else is written, so the next line starts on its own.
pub struct LineBuffer<W: Write> {
    inner: W,
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    capacity: usize,
    /// The last write stopped inside a line.
    torn: bool,
}

impl<W: Write> LineBuffer<W> {
    /// A buffer of `capacity` bytes in front of `inner`.
    pub fn with_capacity(capacity: usize, inner: W) -> LineBuffer<W> {
        LineBuffer {
            inner,
            buf: Vec::with_capacity(capacity),
            lines: 0,
            capacity,
            torn: false,
        }
    }

    /// Writes out the buffer (emptying it whatever happens).
    fn flush_buf(&mut self) -> Result<(), Lost> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = put(&mut self.inner, &mut self.torn, &self.buf, self.lines);
        self.buf.clear();
        self.lines = 0;
        result
    }
}

impl<W: Write + Send> LineSink for LineBuffer<W> {
    fn write_line(&mut self, line: &[u8]) -> Result<(), Lost> {
        let mut lost = None;
        if self.buf.len() + line.len() > self.capacity {
            lost = self.flush_buf().err();
        }
        if line.len() >= self.capacity {
            // Too big to buffer: straight out.
            let direct = put(&mut self.inner, &mut self.torn, line, 1).err();
            return combine(lost, direct);
        }
        self.buf.extend_from_slice(line);
        self.lines += 1;
        combine(lost, None)
    }

    fn flush_lines(&mut self) -> Result<(), Lost> {
        self.flush_buf()?;
        self.inner
            .flush()
            .map_err(|source| Lost { lines: 0, source })
    }
}

/// Writes `bytes`, which hold `lines` whole lines, to `w`; on failure, the lines not
/// completely written. `torn` carries "a line was cut short" from one call to the next.
fn put<W: Write + ?Sized>(
    w: &mut W,
    torn: &mut bool,
    bytes: &[u8],
    lines: u64,
) -> Result<(), Lost> {
    if *torn {
        w.write_all(b"\n")
            .map_err(|source| Lost { lines, source })?;
        *torn = false;
    }
    let mut written = 0;
    while written < bytes.len() {
        match w.write(&bytes[written..]) {
            Ok(0) => {
                return Err(cut_short(
                    bytes,
                    written,
                    lines,
                    torn,
                    io::ErrorKind::WriteZero.into(),
                ));
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(cut_short(bytes, written, lines, torn, e)),
        }
    }
    Ok(())
}

/// The loss when only `written` bytes of `bytes` (holding `lines` lines) went out.
fn cut_short(bytes: &[u8], written: usize, lines: u64, torn: &mut bool, source: io::Error) -> Lost {
    let done = &bytes[..written];
    let complete = done.iter().filter(|&&b| b == b'\n').count() as u64;
    *torn = done.last().is_some_and(|&b| b != b'\n');
    Lost {
        lines: lines.saturating_sub(complete),
        source,
    }
}

enum Msg {
    /// The lines of one handler call, sent together so that a Report batch wakes the
    /// writer thread once rather than once per line.
    Lines(Vec<String>),
    /// Sent by `close`: every line accepted before it is written, then the thread ends.
    Close,
}

/// The sending side, held by the handler, and the writer thread's handle.
pub struct Writer {
    tx: SyncSender<Msg>,
    dropped: IntCounter,
    /// Lines queued and not yet taken by the writer: the queue's bound is in lines, and
    /// a message may carry many.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    /// Bytes of the lines in `queued`, bounded by `max_bytes`.
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread for `sink`, with room for `capacity` queued lines (at
    /// least one) of at most [`QUEUE_BYTES`] together. `dropped` counts lines refused
    /// because the queue was full or the writer had stopped, and lines the sink lost.
    /// `handler` names the handler in the writer's log messages.
    pub fn spawn(
        handler: &str,
        sink: Box<dyn LineSink>,
        capacity: usize,
        dropped: IntCounter,
    ) -> io::Result<Writer> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::sync_channel(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let taken = Taken {
            lines: queued.clone(),
            bytes: queued_bytes.clone(),
        };
        let output = Output {
            sink,
            handler: handler.to_owned(),
            dropped: dropped.clone(),
            failing: None,
        };
        let thread = std::thread::Builder::new()
            .name("stdio-writer".to_owned())
            .spawn(move || run(&rx, output, &taken))?;
        Ok(Writer {
            tx,
            dropped,
            queued,
            capacity,
            queued_bytes,
            max_bytes: QUEUE_BYTES,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The same writer with room for at most `max_bytes` of queued lines.
    #[cfg(test)]
    pub fn with_max_queued_bytes(mut self, max_bytes: usize) -> Writer {
        self.max_bytes = max_bytes;
        self
    }

    /// Queues one line without ever waiting; returns whether it was accepted.
    #[cfg(test)]
    pub fn push(&self, line: String) -> bool {
        self.push_lines(vec![line]) == 1
    }

    /// Queues several lines as one message, without ever waiting: as many as the queue
    /// has room for are accepted, the rest dropped and counted. Returns how many were
    /// accepted.
    pub fn push_lines(&self, mut lines: Vec<String>) -> usize {
        if lines.is_empty() {
            return 0;
        }
        let take = self.reserve(&lines);
        if take == 0 {
            return 0;
        }
        lines.truncate(take);
        let bytes = lines.iter().map(String::len).sum();
        match self.tx.try_send(Msg::Lines(lines)) {
            Ok(()) => take,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.release(take, bytes);
                self.dropped.inc_by(take as u64);
                0
            }
        }
    }

    /// Claims room for as many of the first of `lines` as fit in both bounds; counts
    /// the others as dropped.
    fn reserve(&self, lines: &[String]) -> usize {
        let taken = self.reserve_lines(lines.len());
        let mut fit = 0;
        let mut bytes = 0;
        // The closure may run more than once (on contention); it starts afresh each time.
        let _ = self
            .queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (fit, bytes) = (0, 0);
                for line in &lines[..taken] {
                    if current + bytes + line.len() > self.max_bytes {
                        break;
                    }
                    bytes += line.len();
                    fit += 1;
                }
                (fit > 0).then_some(current + bytes)
            });
        if fit < taken {
            self.queued.fetch_sub(taken - fit, Ordering::AcqRel);
        }
        self.dropped.inc_by((lines.len() - fit) as u64);
        fit
    }

    /// Claims room for up to `n` lines.
    fn reserve_lines(&self, n: usize) -> usize {
        let mut current = self.queued.load(Ordering::Acquire);
        loop {
            let take = n.min(self.capacity.saturating_sub(current));
            if take == 0 {
                return 0;
            }
            match self.queued.compare_exchange_weak(
                current,
                current + take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return take,
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back room claimed for lines that were not sent after all.
    fn release(&self, lines: usize, bytes: usize) {
        self.queued.fetch_sub(lines, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Writes out every accepted line, flushes and stops the thread. Later calls do
    /// nothing; lines pushed after it are dropped and counted.
    pub fn close(&self) {
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(handle) = handle else { return };
        // A blocking send is right here: close is not on the request path, and the
        // writer is emptying the queue, so room appears. The marker queues behind every
        // accepted line, which is what makes closing lose nothing.
        if self.tx.send(Msg::Close).is_err() {
            tracing::warn!("stdio writer thread had already stopped before close");
        }
        if handle.join().is_err() {
            tracing::error!("stdio writer thread panicked; some output may be lost");
        }
    }
}

// Dropping a `Writer` without `close` drops the sender: the thread then writes what is
// queued, flushes and ends on its own. It is not joined, so that dropping the last
// handler reference never blocks whichever thread happens to do it.

/// The sink plus what the writer knows about its health, for counting and logging.
struct Output {
    sink: Box<dyn LineSink>,
    handler: String,
    /// Counts lines lost to failed writes (with those the queue refused).
    dropped: IntCounter,
    /// Set while writes fail.
    failing: Option<Failing>,
}

/// A run of failed writes, for logging it rate-limited.
struct Failing {
    /// Lines lost since the run started.
    lost: u64,
    /// Lines lost since the run was last logged.
    unlogged: u64,
    logged_at: Instant,
}

impl Output {
    fn write(&mut self, line: &str) {
        if let Err(lost) = self.sink.write_line(line.as_bytes()) {
            self.failed(lost);
        }
    }

    /// A successful flush is what shows the output works again: a line merely buffered
    /// proves nothing.
    fn flush(&mut self) {
        match self.sink.flush_lines() {
            Ok(()) => {
                if let Some(run) = self.failing.take() {
                    tracing::info!(
                        handler = %self.handler,
                        lost_lines = run.lost,
                        "stdio output is being written again",
                    );
                }
            }
            Err(lost) => self.failed(lost),
        }
    }

    fn failed(&mut self, lost: Lost) {
        self.dropped.inc_by(lost.lines);
        match &mut self.failing {
            None => {
                tracing::warn!(
                    handler = %self.handler,
                    error = %lost.source,
                    lost_lines = lost.lines,
                    "stdio output could not be written; lines are lost (counted in \
                     mixer_adapter_stdio_dropped_lines_total) until writing succeeds again",
                );
                self.failing = Some(Failing {
                    lost: lost.lines,
                    unlogged: 0,
                    logged_at: Instant::now(),
                });
            }
            Some(run) => {
                run.lost += lost.lines;
                run.unlogged += lost.lines;
                if run.logged_at.elapsed() >= FAILURE_LOG_INTERVAL {
                    tracing::warn!(
                        handler = %self.handler,
                        error = %lost.source,
                        lost_lines = run.unlogged,
                        "stdio output still cannot be written; lines are being lost",
                    );
                    run.unlogged = 0;
                    run.logged_at = Instant::now();
                }
            }
        }
    }
}

/// The queue's counters, which the writer thread lowers as it takes lines off.
struct Taken {
    lines: Arc<AtomicUsize>,
    bytes: Arc<AtomicUsize>,
}

impl Taken {
    /// Frees the room of `lines`, taken off the queue: it is free again even while the
    /// sink is slow.
    fn take(&self, lines: &[String]) {
        self.lines.fetch_sub(lines.len(), Ordering::AcqRel);
        let bytes = lines.iter().map(String::len).sum();
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The writer thread: writes lines as they come, flushes at most a second after a line
/// was written, and on `Close` or disconnection writes what is left and flushes.
fn run(rx: &Receiver<Msg>, mut out: Output, queued: &Taken) {
    let mut last_flush = Instant::now();
    let mut unflushed = false;
    loop {
        // With nothing buffered there is no deadline to wake up for.
        let msg = if unflushed {
            match rx.recv_timeout(FLUSH_INTERVAL.saturating_sub(last_flush.elapsed())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => break,
            }
        };
        match msg {
            Some(Msg::Lines(lines)) => {
                queued.take(&lines);
                for line in &lines {
                    out.write(line);
                }
                unflushed = true;
            }
            Some(Msg::Close) => {
                // Lines racing with close (pushed after its marker) are still written.
                while let Ok(msg) = rx.try_recv() {
                    match msg {
                        Msg::Lines(lines) => lines.iter().for_each(|l| out.write(l)),
                        Msg::Close => {}
                    }
                }
                break;
            }
            None => {}
        }
        // After a quiet spell the first line is flushed at once; under steady load the
        // buffer is flushed once a second (and whenever it fills).
        if unflushed && last_flush.elapsed() >= FLUSH_INTERVAL {
            out.flush();
            unflushed = false;
            last_flush = Instant::now();
        }
    }
    out.flush();
}

#[cfg(test)]
pub mod testing {
    //! Sinks that let tests see and hold up the writer thread.

    use std::sync::mpsc::{Receiver, Sender};
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Duration;

    use super::{LineSink, Lost};

    /// Collects lines in memory. With a gate, the first write announces itself on
    /// `entered` and then waits (at most `max_wait`) for the gate to open, holding the
    /// writer thread still the way a stalled terminal or disk would.
    pub struct CaptureSink {
        pub lines: Arc<Mutex<Vec<String>>>,
        pub flushes: Arc<Mutex<usize>>,
        pub gate: Option<(Sender<()>, Receiver<()>)>,
        pub max_wait: Duration,
    }

    impl Default for CaptureSink {
        fn default() -> CaptureSink {
            CaptureSink {
                lines: Arc::default(),
                flushes: Arc::default(),
                gate: None,
                max_wait: Duration::from_secs(10),
            }
        }
    }

    impl CaptureSink {
        /// A sink whose first write signals `entered` and waits for `open`.
        pub fn gated(entered: Sender<()>, open: Receiver<()>) -> CaptureSink {
            CaptureSink {
                gate: Some((entered, open)),
                ..CaptureSink::default()
            }
        }
    }

    impl LineSink for CaptureSink {
        fn write_line(&mut self, line: &[u8]) -> Result<(), Lost> {
            if let Some((entered, open)) = self.gate.take() {
                let _ = entered.send(());
                let _ = open.recv_timeout(self.max_wait);
            }
            self.lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(String::from_utf8_lossy(line).into_owned());
            Ok(())
        }

        fn flush_lines(&mut self) -> Result<(), Lost> {
            *self.flushes.lock().unwrap_or_else(PoisonError::into_inner) += 1;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::PoisonError;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::testing::CaptureSink;
    use super::*;
    use std::sync::Mutex;

    fn counter() -> IntCounter {
        IntCounter::new("test_dropped", "test").unwrap()
    }

    #[test]
    fn full_queue_drops_and_counts_without_waiting() {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (open_tx, open_rx) = mpsc::channel();
        let sink = CaptureSink::gated(entered_tx, open_rx);
        let lines = sink.lines.clone();
        let dropped = counter();
        let w = Writer::spawn("h", Box::new(sink), 2, dropped.clone()).unwrap();

        assert!(w.push("a\n".into()));
        // The writer now holds "a" inside the stalled sink; the queue is empty.
        entered_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("writer reached the sink");
        assert!(w.push("b\n".into()));
        assert!(w.push("c\n".into()));
        // Full: these return at once, refused and counted.
        assert!(!w.push("d\n".into()));
        assert!(!w.push("e\n".into()));
        assert_eq!(dropped.get(), 2);

        open_tx.send(()).unwrap();
        w.close();
        let got = lines.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(got, ["a\n", "b\n", "c\n"]);
        // After close nothing is accepted, and every refusal is counted.
        assert!(!w.push("f\n".into()));
        assert_eq!(dropped.get(), 3);
        w.close();
    }

    #[test]
    fn a_batch_takes_what_room_there_is_and_counts_the_rest() {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (open_tx, open_rx) = mpsc::channel();
        let sink = CaptureSink::gated(entered_tx, open_rx);
        let lines = sink.lines.clone();
        let dropped = counter();
        let w = Writer::spawn("h", Box::new(sink), 2, dropped.clone()).unwrap();
        assert!(w.push("a\n".into()));
        entered_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("writer reached the sink");
        let batch = vec!["b\n".to_owned(), "c\n".to_owned(), "d\n".to_owned()];
        assert_eq!(w.push_lines(batch), 2);
        assert_eq!(dropped.get(), 1);
        assert_eq!(w.push_lines(vec!["e\n".to_owned()]), 0);
        assert_eq!(dropped.get(), 2);
        open_tx.send(()).unwrap();
        w.close();
        let got = lines.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(got, ["a\n", "b\n", "c\n"]);
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (open_tx, open_rx) = mpsc::channel();
        let sink = CaptureSink::gated(entered_tx, open_rx);
        let lines = sink.lines.clone();
        let dropped = counter();
        let w = Writer::spawn("h", Box::new(sink), 1000, dropped.clone())
            .unwrap()
            .with_max_queued_bytes(25);
        assert!(w.push("stall\n".into()));
        entered_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("writer reached the sink");
        // Room for 1000 lines but only 25 bytes: two 10-byte lines fit, the rest do not.
        let ten = || "123456789\n".to_owned();
        assert_eq!(w.push_lines(vec![ten(), ten(), ten()]), 2);
        assert!(!w.push(ten()));
        assert!(w.push("1234\n".into()));
        assert_eq!(dropped.get(), 2);
        open_tx.send(()).unwrap();
        w.close();
        let got = lines.lock().unwrap_or_else(PoisonError::into_inner).len();
        assert_eq!(got, 4);
    }

    #[test]
    fn close_writes_everything_and_flushes() {
        let sink = CaptureSink::default();
        let (lines, flushes) = (sink.lines.clone(), sink.flushes.clone());
        let w = Writer::spawn("h", Box::new(sink), 1000, counter()).unwrap();
        for i in 0..1000 {
            assert!(w.push(format!("{i}\n")));
        }
        w.close();
        let got = lines.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(got.len(), 1000);
        assert!(got.iter().enumerate().all(|(i, l)| *l == format!("{i}\n")));
        assert!(*flushes.lock().unwrap_or_else(PoisonError::into_inner) >= 1);
    }

    #[test]
    fn dropping_the_writer_still_drains_the_queue() {
        let (entered_tx, entered_rx) = mpsc::channel();
        let (open_tx, open_rx) = mpsc::channel();
        let sink = CaptureSink::gated(entered_tx, open_rx);
        let (lines, flushes) = (sink.lines.clone(), sink.flushes.clone());
        let w = Writer::spawn("h", Box::new(sink), 10, counter()).unwrap();
        let handle = w.thread.lock().unwrap().take().unwrap();
        w.push("1\n".into());
        entered_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        w.push("2\n".into());
        drop(w);
        open_tx.send(()).unwrap();
        handle.join().unwrap();
        let got = lines.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(got, ["1\n", "2\n"]);
        assert!(*flushes.lock().unwrap_or_else(PoisonError::into_inner) >= 1);
    }

    /// A disk with `space` bytes left: writes take what fits, then fail with ENOSPC.
    #[derive(Clone, Default)]
    struct Disk {
        space: Arc<AtomicUsize>,
        data: Arc<Mutex<Vec<u8>>>,
    }

    impl Disk {
        fn with_space(space: usize) -> Disk {
            let d = Disk::default();
            d.space.store(space, Ordering::Release);
            d
        }

        fn text(&self) -> String {
            String::from_utf8(self.data.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let space = self.space.load(Ordering::Acquire);
            if space == 0 {
                return Err(io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(space);
            self.space.fetch_sub(n, Ordering::AcqRel);
            self.data.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_reports_the_lines_it_lost_and_the_buffer_carries_on() {
        let disk = Disk::with_space(7);
        let mut b = LineBuffer::with_capacity(16, disk.clone());
        for _ in 0..3 {
            b.write_line(b"aaaa\n").unwrap();
        }
        // 7 bytes fit: one whole line and two bytes of the next.
        let lost = b.flush_lines().unwrap_err();
        assert_eq!(lost.lines, 2);
        assert_eq!(lost.source.raw_os_error(), Some(28));
        // Still full: the buffer is dropped each time, never resent.
        b.write_line(b"bbbb\n").unwrap();
        assert_eq!(b.flush_lines().unwrap_err().lines, 1);
        // A line that does not fit in the buffer goes straight out (and is lost).
        let long = [b'c'; 40];
        let mut line = long.to_vec();
        line.push(b'\n');
        assert_eq!(b.write_line(&line).unwrap_err().lines, 1);

        // Space again: the cut line is ended first, so the next one starts on its own.
        disk.space.store(1000, Ordering::Release);
        b.write_line(b"dddd\n").unwrap();
        b.flush_lines().unwrap();
        assert_eq!(disk.text(), "aaaa\naa\ndddd\n");
        // A full buffer writes itself out when the next line does not fit.
        for _ in 0..4 {
            b.write_line(b"eeee\n").unwrap();
        }
        assert_eq!(disk.text(), "aaaa\naa\ndddd\neeee\neeee\neeee\n");
    }

    #[test]
    fn lines_lost_to_a_full_disk_are_counted_and_writing_resumes() {
        let disk = Disk::with_space(0);
        let sink = LineBuffer::with_capacity(64, disk.clone());
        let dropped = counter();
        let w = Writer::spawn("h", Box::new(sink), 1000, dropped.clone()).unwrap();
        for i in 0..100 {
            assert!(w.push(format!("line {i:03}\n")));
        }
        // Every line is counted, some when the buffer fills, the rest at the periodic
        // flush (bounded wait; no claim about how fast).
        let deadline = Instant::now() + Duration::from_secs(10);
        while dropped.get() < 100 {
            assert!(Instant::now() < deadline, "{} counted", dropped.get());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(dropped.get(), 100);
        assert_eq!(disk.text(), "");

        disk.space.store(1 << 20, Ordering::Release);
        assert_eq!(
            w.push_lines(vec!["back\n".to_owned(), "again\n".to_owned()]),
            2
        );
        w.close();
        assert_eq!(disk.text(), "back\nagain\n");
        assert_eq!(dropped.get(), 100);
    }

    #[test]
    fn dev_full_loses_every_line_and_counts_it() {
        let file = match std::fs::OpenOptions::new().append(true).open("/dev/full") {
            Ok(f) => f,
            Err(e) => panic!("/dev/full: {e}"),
        };
        let dropped = counter();
        let sink = LineBuffer::with_capacity(BUFFER_BYTES, file);
        let w = Writer::spawn("h", Box::new(sink), 10_000, dropped.clone()).unwrap();
        // About 3 buffers' worth, so both full-buffer and final flushes fail.
        let line = format!("{}\n", "x".repeat(199));
        for _ in 0..1000 {
            w.push(line.clone());
        }
        w.close();
        assert_eq!(dropped.get(), 1000);
    }

    #[test]
    fn flushes_without_close() {
        let sink = CaptureSink::default();
        let flushes = sink.flushes.clone();
        let w = Writer::spawn("h", Box::new(sink), 10, counter()).unwrap();
        w.push("x\n".into());
        // Bounded wait for the periodic flush; no claim about how fast it comes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while *flushes.lock().unwrap_or_else(PoisonError::into_inner) == 0 {
            assert!(Instant::now() < deadline, "no flush within 10s");
            std::thread::sleep(Duration::from_millis(10));
        }
        w.close();
    }
}
