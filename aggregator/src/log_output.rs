//! The daemon's log output (docs/tick.md §8): each line goes into a bounded buffer, and a
//! thread of its own writes the buffer to stdout. Under daemontools stdout is the pipe to
//! multilog; a multilog that stops reading (a full or read-only `/var/log`, its service down)
//! fills the pipe, and a write to a full pipe waits until it is read. Written from the daemon's
//! thread, that wait held the tick, the bus and the signals: the limits stood still on the bus
//! and SIGTERM went unanswered. Now only the writer thread waits; the daemon's side never does.
//! A line that does not fit in the buffer is dropped and counted, and the log says how many
//! went missing where they are missing, once the output takes lines again.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The bytes of log lines that wait for stdout, besides the line being written: some 400
/// summary lines, more than the daemon logs in minutes unless something is wrong.
pub const BUFFER_BYTES: usize = 64 * 1024;

/// How long the daemon waits at its exit for the lines still waiting: a log that nobody
/// reads never holds up a stop.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(1);

/// What waits for stdout.
enum Entry {
    /// One log line, as the formatter wrote it (with its newline).
    Line(Vec<u8>),
    /// This many lines were dropped here: the buffer was full.
    Dropped(u64),
}

/// The buffer, under the lock.
#[derive(Default)]
struct Queue {
    entries: VecDeque<Entry>,
    /// The bytes of the lines in `entries`.
    bytes: usize,
    /// The writer thread is writing an entry it took out.
    writing: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Something was put into the buffer (the writer thread waits on it).
    arrived: Condvar,
    /// The writer thread has written all there was (a flush waits on it).
    idle: Condvar,
    bound_bytes: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A thread that panicked while holding the lock left the queue whole: every change
        // to it is made before anything that could panic.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues one line, or counts it as dropped when the buffer is full. Never waits but for
    /// the lock, which nobody holds across a write to stdout.
    fn put(&self, line: &[u8]) {
        let mut queue = self.lock();
        if queue.bytes == 0 || queue.bytes + line.len() <= self.bound_bytes {
            queue.bytes += line.len();
            queue.entries.push_back(Entry::Line(line.to_vec()));
        } else if let Some(Entry::Dropped(count)) = queue.entries.back_mut() {
            *count += 1;
        } else {
            queue.entries.push_back(Entry::Dropped(1));
        }
        drop(queue);
        self.arrived.notify_one();
    }
}

/// The log output: a handle to the buffer, for the log's formatter
/// ([`tracing_subscriber::fmt::MakeWriter`]) and for the flush at exit.
#[derive(Clone)]
pub struct LogOutput {
    shared: Arc<Shared>,
}

thread_local! {
    /// On the writer thread while it has the dropped lines' notice made: what the log's
    /// formatter writes then is taken here instead of being queued.
    static CAPTURED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// What `emit` writes through a [`LogOutput`] on this thread, taken instead of queued: the
/// writer thread has the notice of dropped lines made by the log's own formatter, so that it
/// looks like every other line (level, and the time stamp on a terminal).
pub fn capture(emit: impl FnOnce()) -> Vec<u8> {
    CAPTURED.with(|captured| *captured.borrow_mut() = Some(Vec::new()));
    emit();
    CAPTURED
        .with(|captured| captured.borrow_mut().take())
        .unwrap_or_default()
}

impl LogOutput {
    /// Starts the writer thread on `out`, with a buffer of `bound_bytes`; `notice(n)` makes
    /// the text written where `n` lines were dropped.
    pub fn start(
        out: impl Write + Send + 'static,
        bound_bytes: usize,
        notice: impl Fn(u64) -> Vec<u8> + Send + 'static,
    ) -> io::Result<LogOutput> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            arrived: Condvar::new(),
            idle: Condvar::new(),
            bound_bytes,
        });
        let writer = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("log output".into())
            .spawn(move || write_out(&writer, out, notice))?;
        Ok(LogOutput { shared })
    }

    /// Waits until every line put so far is written, for `within` at most; whether it was.
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut queue = self.shared.lock();
        while queue.writing || !queue.entries.is_empty() {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            queue = self
                .shared
                .idle
                .wait_timeout(queue, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// A panic's message goes into the log like any line, and the panicking thread waits
    /// [`FLUSH_LIMIT`] at most for it to be written: the default hook writes to stderr, the
    /// same pipe under daemontools, and a full pipe would hold the process instead of letting
    /// it end (and the supervisor start it again).
    pub fn take_panics(&self) {
        let output = self.clone();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            output
                .shared
                .put(format!("thread '{name}' {info}\n").as_bytes());
            output.flush(FLUSH_LIMIT);
        }));
    }
}

/// The writer thread: takes the buffer's entries in order and writes each, waiting on `out`
/// as long as it takes.
fn write_out(shared: &Shared, mut out: impl Write, notice: impl Fn(u64) -> Vec<u8>) {
    loop {
        let entry = {
            let mut queue = shared.lock();
            loop {
                if let Some(entry) = queue.entries.pop_front() {
                    if let Entry::Line(line) = &entry {
                        queue.bytes -= line.len();
                    }
                    queue.writing = true;
                    break entry;
                }
                if queue.writing {
                    queue.writing = false;
                    shared.idle.notify_all();
                }
                queue = shared
                    .arrived
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        let text = match entry {
            Entry::Line(line) => line,
            Entry::Dropped(count) => notice(count),
        };
        // A failed write (no reader left) loses the line, as a write from the formatter
        // itself did; the next line is tried anew.
        let _ = out.write_all(&text).and_then(|()| out.flush());
    }
}

/// One write of the log's formatter: a whole line.
pub struct LineSink<'a> {
    shared: &'a Shared,
}

impl Write for LineSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let taken = CAPTURED.with(|captured| match captured.borrow_mut().as_mut() {
            Some(text) => {
                text.extend_from_slice(bytes);
                true
            }
            None => false,
        });
        if !taken {
            self.shared.put(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogOutput {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> LineSink<'a> {
        LineSink {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// Stdout as a pipe nobody reads until told: each write waits for the gate.
    #[derive(Clone, Default)]
    struct Gated {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Gated {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }
        fn text(&self) -> String {
            String::from_utf8(self.written.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Gated {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (lock, opened) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn notice(count: u64) -> Vec<u8> {
        format!("{count} dropped\n").into_bytes()
    }

    fn line(output: &LogOutput, text: &str) {
        output
            .make_writer()
            .write_all(format!("{text}\n").as_bytes())
            .unwrap();
    }

    #[test]
    fn a_blocked_output_never_holds_the_caller_and_says_how_many_lines_it_dropped() {
        let out = Gated::default();
        // Room for three lines of 8 bytes.
        let output = LogOutput::start(out.clone(), 24, notice).unwrap();
        line(&output, "line 00");
        // The writer thread took the first line and waits in its write: three more fit.
        while !output.shared.lock().writing {
            std::thread::yield_now();
        }
        for k in 1..=10 {
            line(&output, &format!("line {k:02}"));
        }
        assert!(
            !output.flush(Duration::from_millis(100)),
            "nothing written yet"
        );
        line(&output, "dropped");
        out.open();
        assert!(output.flush(Duration::from_secs(5)));
        // Once room is made again, lines are taken: the notice stands where lines went missing.
        line(&output, "line 11");
        assert!(output.flush(Duration::from_secs(5)));
        assert_eq!(
            out.text(),
            "line 00\nline 01\nline 02\nline 03\n8 dropped\nline 11\n"
        );
    }

    #[test]
    fn the_flush_at_exit_waits_for_a_blocked_output_only_so_long() {
        let out = Gated::default();
        let output = LogOutput::start(out.clone(), BUFFER_BYTES, notice).unwrap();
        line(&output, "the last line");
        let asked = Instant::now();
        assert!(!output.flush(Duration::from_millis(200)));
        assert!(asked.elapsed() >= Duration::from_millis(200));
        out.open();
        assert!(output.flush(Duration::from_secs(5)));
        assert_eq!(out.text(), "the last line\n");
    }

    #[test]
    fn the_notice_is_made_by_the_log_formatter_on_the_writer_thread() {
        use std::sync::OnceLock;
        use tracing::Dispatch;
        let out = Gated::default();
        out.open();
        // The daemon's formatter is the global one; here a dispatch of the test's own, which
        // the writer thread takes too.
        let dispatch = Arc::new(OnceLock::<Dispatch>::new());
        let for_notice = Arc::clone(&dispatch);
        let output = LogOutput::start(out.clone(), BUFFER_BYTES, move |count| {
            let dispatch = for_notice.get().expect("set before any line");
            capture(|| {
                tracing::dispatcher::with_default(dispatch, || {
                    tracing::warn!("{count} log lines dropped")
                })
            })
        })
        .unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(output.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        let _ = dispatch.set(Dispatch::new(subscriber));
        tracing::dispatcher::with_default(dispatch.get().unwrap(), || {
            output.shared.put(b"first\n");
            output.shared.lock().entries.push_back(Entry::Dropped(7));
            tracing::info!("after");
        });
        assert!(output.flush(Duration::from_secs(5)));
        assert_eq!(
            out.text(),
            "first\n WARN 7 log lines dropped\n INFO after\n"
        );
    }
}
