//! The output queue and the thread that writes it.
//!
//! Report handlers must never wait on output: a terminal, a pipe or a disk can stall for
//! any length of time. Formatted lines therefore go into a bounded queue, and one
//! dedicated OS thread (not an async task, so a blocking `write` can never stall the
//! runtime's workers) writes them out through a buffer. When the queue is full a line is
//! dropped and counted instead of waiting for room.

use std::io::{self, BufWriter, Write};
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

/// Where the writer thread puts lines.
pub trait LineSink: Send {
    /// Writes one whole line (newline included).
    fn write_line(&mut self, line: &[u8]) -> io::Result<()>;
    /// Pushes buffered lines to the stream or file.
    fn flush_lines(&mut self) -> io::Result<()>;
}

impl<W: Write + Send> LineSink for BufWriter<W> {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.write_all(line)
    }

    fn flush_lines(&mut self) -> io::Result<()> {
        Write::flush(self)
    }
}

enum Msg {
    Line(String),
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
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread for `sink`, with room for `capacity` queued lines (at
    /// least one). `dropped` counts lines refused because the queue was full or the
    /// writer had stopped. `handler` names the handler in the writer's log messages.
    pub fn spawn(
        handler: &str,
        sink: Box<dyn LineSink>,
        capacity: usize,
        dropped: IntCounter,
    ) -> io::Result<Writer> {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::sync_channel(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        let output = Output {
            sink,
            handler: handler.to_owned(),
            failing: false,
        };
        let thread = std::thread::Builder::new()
            .name("stdio-writer".to_owned())
            .spawn(move || run(&rx, output, &taken))?;
        Ok(Writer {
            tx,
            dropped,
            queued,
            capacity,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a line without ever waiting; returns whether it was accepted.
    pub fn push(&self, line: String) -> bool {
        if self.reserve(1) == 0 {
            return false;
        }
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                self.dropped.inc();
                false
            }
        }
    }

    /// Queues several lines as one message, without ever waiting: as many as the queue
    /// has room for are accepted, the rest dropped and counted. Returns how many were
    /// accepted.
    pub fn push_lines(&self, mut lines: Vec<String>) -> usize {
        if lines.is_empty() {
            return 0;
        }
        let take = self.reserve(lines.len());
        if take == 0 {
            return 0;
        }
        lines.truncate(take);
        match self.tx.try_send(Msg::Lines(lines)) {
            Ok(()) => take,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(take, Ordering::AcqRel);
                self.dropped.inc_by(take as u64);
                0
            }
        }
    }

    /// Claims room for up to `n` lines; counts the lines there is no room for as dropped.
    fn reserve(&self, n: usize) -> usize {
        let mut current = self.queued.load(Ordering::Acquire);
        loop {
            let take = n.min(self.capacity.saturating_sub(current));
            if take == 0 {
                self.dropped.inc_by(n as u64);
                return 0;
            }
            match self.queued.compare_exchange_weak(
                current,
                current + take,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.dropped.inc_by((n - take) as u64);
                    return take;
                }
                Err(actual) => current = actual,
            }
        }
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

/// The sink plus what the writer knows about its health, for logging.
struct Output {
    sink: Box<dyn LineSink>,
    handler: String,
    /// Whether the last write failed: errors are logged once per run of failures, not
    /// once per line.
    failing: bool,
}

impl Output {
    fn write(&mut self, line: &str) {
        let result = self.sink.write_line(line.as_bytes());
        self.note(result, "write");
    }

    fn flush(&mut self) {
        let result = self.sink.flush_lines();
        self.note(result, "flush");
    }

    fn note(&mut self, result: io::Result<()>, what: &str) {
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!(handler = %self.handler, "stdio output is being written again");
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    handler = %self.handler,
                    error = %e,
                    "stdio output could not {what}; output is lost until writing succeeds again",
                );
            }
            Err(_) => {}
        }
    }
}

/// The writer thread: writes lines as they come, flushes at most a second after a line
/// was written, and on `Close` or disconnection writes what is left and flushes.
fn run(rx: &Receiver<Msg>, mut out: Output, queued: &AtomicUsize) {
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
            Some(Msg::Line(line)) => {
                // Taken off the queue: its room is free again even while the sink is slow.
                queued.fetch_sub(1, Ordering::AcqRel);
                out.write(&line);
                unflushed = true;
            }
            Some(Msg::Lines(lines)) => {
                queued.fetch_sub(lines.len(), Ordering::AcqRel);
                for line in &lines {
                    out.write(line);
                }
                unflushed = true;
            }
            Some(Msg::Close) => {
                // Lines racing with close (pushed after its marker) are still written.
                while let Ok(msg) = rx.try_recv() {
                    match msg {
                        Msg::Line(line) => out.write(&line),
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

    use super::LineSink;

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
        fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
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

        fn flush_lines(&mut self) -> std::io::Result<()> {
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
