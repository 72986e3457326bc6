//! A second, minimal connection to the bus that receives the value signals and the answers to
//! `GetItems`, and is read only when the daemon wants the values: at each tick, and while a
//! scan waits for its answer.
//!
//! Not a zbus stream: zbus reads each message as it arrives, so every battery signal (one per
//! changed path) would wake the daemon, and wake-ups are what a tick costs. This socket is not
//! watched between ticks: the bus daemon queues what we have not read (in the socket's buffer,
//! then in its own queue for us), and the tick reads it in large chunks and decodes only
//! sender, path and `Value`.
//!
//! The tick reads up to a barrier: a call to the bus daemon itself, whose answer the bus daemon
//! queues after everything it queued for us before it, so that once the answer is read the
//! view holds everything the bus delivered before the tick, however much that was (a socket
//! that is momentarily empty says nothing of the bus daemon's own queue). [`Barriers`] keeps
//! the send times of the barriers, so the age of the view is known when the bus is behind.
//! Because the `GetItems` answers come on the same socket as the signals, their order is the
//! order in which the services sent them: a scan's values are never overwritten by an older
//! signal, nor does a scan undo a newer one.
//!
//! Nothing here waits on the runtime's thread: the connect and the handshake are
//! asynchronous, reads never wait, and calls are written by a [`CallSender`] that waits for
//! room asynchronously.
//!
//! Only `unix:path=` and `unix:abstract=` addresses (the only kinds Venus OS uses).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::socket::{register, MessageWriter};
use crate::wire::{self, Kind, Message};

/// Longest wait for the bus during the handshake.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read per `read` call; the buffer grows past it only for a longer message.
const CHUNK: usize = 64 * 1024;

/// What a message takes of a socket's memory beyond its own bytes, at most (the kernel's
/// buffer header and the rounding of its data area: a small message takes about 1.3 KiB).
/// Counted generously: the socket's load is only ever over-estimated.
const MESSAGE_OVERHEAD: usize = 1024;

/// The socket memory the bus daemon's end of the connection gets by default (the system's
/// `net.core.wmem_default`), when the system does not say.
const DEFAULT_SOCKET_MEMORY: usize = 160 * 1024;

/// The bus daemon's name.
pub const BUS: &str = "org.freedesktop.DBus";
const BUS_PATH: &str = "/org/freedesktop/DBus";

/// The connection.
#[derive(Debug)]
pub struct RawConnection {
    stream: Arc<UnixStream>,
    buf: Vec<u8>,
    /// Bytes of `buf` received and not yet parsed.
    filled: usize,
    calls: CallSender,
    unique_name: String,
    barriers: Barriers,
    /// What the messages read since the last tick took of the socket's memory.
    load: SocketLoad,
}

/// What the messages read from a socket took of its memory, against the memory the bus
/// daemon may fill before it queues for us.
#[derive(Debug)]
pub struct SocketLoad {
    /// Counted with [`MESSAGE_OVERHEAD`] per message.
    taken: usize,
    /// Messages read.
    messages: usize,
    /// Half the socket memory: a load below it means the socket never filled.
    quiet_below: usize,
}

impl SocketLoad {
    /// For a socket whose sending end may hold `memory` bytes.
    pub fn new(memory: usize) -> SocketLoad {
        SocketLoad {
            taken: 0,
            messages: 0,
            quiet_below: memory / 2,
        }
    }

    /// A message of `len` bytes was read.
    pub fn read(&mut self, len: usize) {
        self.taken = self
            .taken
            .saturating_add(len.saturating_add(MESSAGE_OVERHEAD));
        self.messages += 1;
    }

    /// Whether messages came since the last call (the bus daemon was routing to us) and took
    /// so little that they cannot have filled the socket; starts counting anew.
    pub fn take_quiet(&mut self) -> bool {
        let messages = std::mem::take(&mut self.messages);
        std::mem::take(&mut self.taken) < self.quiet_below && messages > 0
    }
}

/// The barriers sent on a value connection and not yet answered, oldest first, and the send
/// time of the newest one answered: everything the bus delivered before it is in the view.
#[derive(Debug)]
pub struct Barriers {
    pending: VecDeque<(u32, Instant)>,
    current_as_of: Instant,
}

impl Barriers {
    /// At most this many unanswered barriers are remembered (one per tick): a bus so far
    /// behind is stale long before, and the oldest are forgotten.
    const KEPT: usize = 64;

    /// The view is current as of `at` (the connection's set-up).
    pub fn new(at: Instant) -> Barriers {
        Barriers {
            pending: VecDeque::new(),
            current_as_of: at,
        }
    }

    /// A barrier call with `serial` is about to be sent at `at`.
    pub fn sent(&mut self, serial: u32, at: Instant) {
        if self.pending.len() == Self::KEPT {
            self.pending.pop_front();
        }
        self.pending.push_back((serial, at));
    }

    /// An answer to `serial` was read: whether it was a barrier's (then taken in). Answers
    /// come in the order of the calls, so older barriers still pending are answered too.
    pub fn answered(&mut self, serial: u32) -> bool {
        let Some(k) = self.pending.iter().position(|(s, _)| *s == serial) else {
            return false;
        };
        self.current_as_of = self.current_as_of.max(self.pending[k].1);
        self.pending.drain(..=k);
        true
    }

    /// Whether the barrier `serial` has been answered (or forgotten).
    pub fn is_answered(&self, serial: u32) -> bool {
        !self.pending.iter().any(|(s, _)| *s == serial)
    }

    /// The age of the view at `now`: the time since the newest answered barrier was sent.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.current_as_of)
    }

    /// Whether every barrier sent has been answered (none is pending).
    pub fn all_answered(&self) -> bool {
        self.pending.is_empty()
    }

    /// The view holds everything the bus delivered before `at`, known without a barrier.
    pub fn current_at(&mut self, at: Instant) {
        self.current_as_of = self.current_as_of.max(at);
    }
}

/// Sends method calls on a value connection; cheap to clone. Its answers arrive through
/// [`RawConnection::drain`].
#[derive(Clone, Debug)]
pub struct CallSender {
    writer: MessageWriter,
    serial: Arc<AtomicU32>,
}

impl CallSender {
    /// The serial for a call, taken before the call is sent so that its answer is expected
    /// before it can arrive.
    pub fn next_serial(&self) -> u32 {
        loop {
            let serial = self.serial.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if serial != 0 {
                return serial;
            }
        }
    }

    /// Sends a method call encoded by [`wire::method_call`] with a serial from
    /// [`CallSender::next_serial`]; `TimedOut` (and nothing sent) when the bus takes nothing of
    /// it within `limit`.
    pub async fn send(&self, call: &[u8], limit: Duration) -> io::Result<()> {
        self.writer.send_within(call, limit).await
    }
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The first usable socket of a D-Bus address (`transport:key=value,…;…`), connected without
/// blocking (a stopped bus's queue of new connections fills); non-blocking, not registered
/// with the runtime.
pub(crate) async fn connect_address(address: &str) -> io::Result<UnixStream> {
    let mut last = invalid(format!("no unix socket in the D-Bus address `{address}`"));
    for part in address.split(';').filter(|p| !p.is_empty()) {
        let Some(params) = part.strip_prefix("unix:") else {
            continue;
        };
        for kv in params.split(',') {
            let Some((key, value)) = kv.split_once('=') else {
                continue;
            };
            let value = unescape(value);
            let addr = match key {
                "path" => std::os::unix::net::SocketAddr::from_pathname(&value),
                "abstract" => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(value.as_bytes())
                }
                _ => continue,
            };
            let attempt = match addr {
                Ok(addr) => tokio::net::UnixStream::connect_addr(&addr.into())
                    .await
                    .and_then(|stream| stream.into_std()),
                Err(err) => Err(err),
            };
            match attempt {
                Ok(stream) => return Ok(stream),
                Err(err) => last = err,
            }
        }
    }
    Err(last)
}

/// Undoes the `%xx` escapes of address values.
fn unescape(value: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl RawConnection {
    /// Connects, authenticates (EXTERNAL, by our uid), says `Hello` and adds `rules`, waiting
    /// for each answer (5 s at most each), so that every signal the rules match from now on
    /// is received. The socket is watched by the runtime only for these answers.
    pub async fn connect(address: &str, rules: &[&str]) -> io::Result<RawConnection> {
        let stream = Arc::new(connect_address(address).await?);
        let watched = register(Arc::clone(&stream), Interest::READABLE)?;
        let mut conn = RawConnection {
            stream: Arc::clone(&stream),
            buf: vec![0; CHUNK],
            filled: 0,
            calls: CallSender {
                writer: MessageWriter::new(stream),
                serial: Arc::new(AtomicU32::new(0)),
            },
            unique_name: String::new(),
            barriers: Barriers::new(Instant::now()),
            load: SocketLoad::new(socket_memory()),
        };
        let uid = std::fs::metadata("/proc/self")?.uid();
        let hex: String = uid
            .to_string()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        conn.write_during_setup(format!("\0AUTH EXTERNAL {hex}\r\n").as_bytes())
            .await?;
        let answer = within_setup_time(read_line(&watched), "the authentication").await?;
        if !answer.starts_with("OK ") {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("the bus refused authentication: {answer}"),
            ));
        }
        conn.write_during_setup(b"BEGIN\r\n").await?;
        let hello = conn.call_during_setup("Hello", &[]).await?;
        let mut unique = None;
        within_setup_time(
            conn.wait_for(&watched, hello, |msg| {
                unique = msg.body.string().ok().map(str::to_string);
            }),
            "Hello",
        )
        .await?;
        conn.unique_name = unique.ok_or_else(|| invalid("Hello answered without a name"))?;
        for rule in rules {
            let serial = conn.call_during_setup("AddMatch", &[rule]).await?;
            within_setup_time(conn.wait_for(&watched, serial, |_| {}), "AddMatch").await?;
        }
        // Every match rule is in: the view is complete from here.
        conn.barriers = Barriers::new(Instant::now());
        Ok(conn)
    }

    /// Our unique name on the bus.
    pub fn unique_name(&self) -> &str {
        &self.unique_name
    }

    /// The sender of method calls on this connection.
    pub fn sender(&self) -> CallSender {
        self.calls.clone()
    }

    async fn write_during_setup(&self, bytes: &[u8]) -> io::Result<()> {
        self.calls.writer.send_within(bytes, SETUP_TIMEOUT).await
    }

    /// Sends a call to the bus daemon during set-up; returns its serial.
    async fn call_during_setup(&self, member: &str, args: &[&str]) -> io::Result<u32> {
        let serial = self.calls.next_serial();
        let bytes = wire::method_call(serial, BUS, BUS_PATH, BUS, member, args);
        self.write_during_setup(&bytes).await?;
        Ok(serial)
    }

    /// During set-up: waits for the answer to `serial`; an error answer is an error.
    async fn wait_for(
        &mut self,
        watched: &AsyncFd<Arc<UnixStream>>,
        serial: u32,
        mut on_answer: impl FnMut(&Message<'_>),
    ) -> io::Result<()> {
        let mut result = None;
        while result.is_none() {
            if !self.receive_once()? {
                watched.readable().await?.clear_ready();
                continue;
            }
            self.parse_all(|msg| {
                if msg.reply_serial != Some(serial) {
                    return;
                }
                match msg.kind {
                    Kind::Return => {
                        on_answer(msg);
                        result = Some(Ok(()));
                    }
                    Kind::Error => {
                        result = Some(Err(invalid(format!(
                            "the bus answered {}",
                            msg.error_name.unwrap_or("an error")
                        ))))
                    }
                    _ => {}
                }
            })?;
        }
        result.unwrap_or(Ok(()))
    }

    /// Reads once into the buffer, without waiting; `Ok(false)` when there was nothing to read.
    fn receive_once(&mut self) -> io::Result<bool> {
        if self.buf.len() - self.filled < CHUNK / 4 {
            let len = self.buf.len() + CHUNK;
            self.buf.resize(len, 0);
        }
        match (&*self.stream).read(&mut self.buf[self.filled..]) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the bus closed the connection",
            )),
            Ok(n) => {
                self.filled += n;
                Ok(true)
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(err) => Err(err),
        }
    }

    /// Hands every complete message in the buffer to `on`, in order, and keeps the rest.
    fn parse_all(&mut self, mut on: impl FnMut(&Message<'_>)) -> io::Result<()> {
        let mut at = 0;
        while let Some(len) = wire::frame_len(&self.buf[at..self.filled]).map_err(invalid_wire)? {
            if at + len > self.filled {
                // Make room for the whole of a long message.
                if len > self.buf.len() {
                    self.buf.resize(len + CHUNK, 0);
                }
                break;
            }
            match wire::parse(&self.buf[at..at + len]) {
                Ok(msg) => on(&msg),
                Err(err) => tracing::debug!("D-Bus message dropped: {err}"),
            }
            self.load.read(len);
            at += len;
        }
        self.buf.copy_within(at..self.filled, 0);
        self.filled -= at;
        // Give back memory a burst made us take.
        if self.filled == 0 && self.buf.len() > 4 * CHUNK {
            self.buf = vec![0; CHUNK];
        }
        Ok(())
    }

    /// Reads everything received so far and hands each message to `on`, in order, but for
    /// the answers to barriers, which are taken in here. An error means the connection is
    /// unusable (closed by the bus, or a stream we cannot frame).
    pub fn drain(&mut self, mut on: impl FnMut(&Message<'_>)) -> io::Result<()> {
        let mut barriers = std::mem::replace(&mut self.barriers, Barriers::new(Instant::now()));
        let mut result = Ok(());
        loop {
            let got = match self.receive_once() {
                Ok(got) => got,
                Err(err) => {
                    result = Err(err);
                    break;
                }
            };
            let parsed = self.parse_all(|msg| {
                let answer = matches!(msg.kind, Kind::Return | Kind::Error);
                let barrier = answer && msg.reply_serial.is_some_and(|s| barriers.answered(s));
                if !barrier {
                    on(msg);
                }
            });
            if let Err(err) = parsed {
                result = Err(err);
                break;
            }
            if !got {
                break;
            }
        }
        self.barriers = barriers;
        result
    }

    /// Encodes a barrier (the bus daemon's `GetId`: answered by the bus daemon itself, after
    /// everything it queued for us) and records it as sent now; returns its serial and bytes,
    /// for [`CallSender::send`].
    pub fn barrier(&mut self) -> (u32, Vec<u8>) {
        let serial = self.calls.next_serial();
        self.barriers.sent(serial, Instant::now());
        (
            serial,
            wire::method_call(serial, BUS, BUS_PATH, BUS, "GetId", &[]),
        )
    }

    /// The barriers of this connection.
    pub fn barriers(&self) -> &Barriers {
        &self.barriers
    }

    /// The barriers of this connection, to record what is known without one.
    pub fn barriers_mut(&mut self) -> &mut Barriers {
        &mut self.barriers
    }

    /// Whether messages were read since the last call (the bus daemon was routing to us), and
    /// took so little of the socket's memory that the socket cannot have filled meanwhile
    /// (then the bus daemon queued nothing for us: it writes to a socket with room at once);
    /// starts counting anew.
    pub fn take_quiet(&mut self) -> bool {
        self.load.take_quiet()
    }

    /// A duplicate of the socket registered with the runtime, to wait for data without
    /// holding the connection.
    pub fn waiter(&self) -> io::Result<Waiter> {
        register(self.stream.try_clone()?, Interest::READABLE).map(Waiter)
    }
}

/// A duplicate of a value connection's socket, registered with the runtime for as long as
/// someone waits for data ([`RawConnection::waiter`]): registered for good, every signal would
/// wake the daemon. Kept through a whole wait, which may take several reads.
pub struct Waiter(AsyncFd<UnixStream>);

impl Waiter {
    /// Waits until the socket has data to read (at once when it came since the last call).
    pub async fn readable(&self) -> io::Result<()> {
        self.0.readable().await?.clear_ready();
        Ok(())
    }
}

/// The socket memory a connection's end gets by default: `net.core.wmem_default`, which the
/// bus daemon's end of our connection has (it sets no other), else [`DEFAULT_SOCKET_MEMORY`].
fn socket_memory() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/wmem_default")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_SOCKET_MEMORY)
}

fn invalid_wire(err: wire::WireError) -> io::Error {
    invalid(err.to_string())
}

/// Writes what the socket takes of `bytes` now: how many it took (0 after an interrupted
/// call), or `None` when it takes nothing (its buffer is full).
pub(crate) fn write_some(mut stream: &UnixStream, bytes: &[u8]) -> io::Result<Option<usize>> {
    match stream.write(bytes) {
        Ok(0) if !bytes.is_empty() => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(Some(n)),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(err) if err.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
        Err(err) => Err(err),
    }
}

/// `step` within [`SETUP_TIMEOUT`], else a `TimedOut` error naming `what` the bus did not
/// answer.
async fn within_setup_time<T>(
    step: impl std::future::Future<Output = io::Result<T>>,
    what: &str,
) -> io::Result<T> {
    tokio::time::timeout(SETUP_TIMEOUT, step)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the bus did not answer {what} within {} s",
                    SETUP_TIMEOUT.as_secs()
                ),
            ))
        })
}

/// A line of the authentication exchange, read a byte at a time: what follows it is the
/// messages', read by [`RawConnection::drain`].
async fn read_line(watched: &AsyncFd<Arc<UnixStream>>) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if line.len() > 512 {
            return Err(invalid("an authentication line longer than 512 bytes"));
        }
        let mut ready = watched.readable().await?;
        match ready.try_io(|s| (&**s.get_ref()).read(&mut byte)) {
            Ok(Ok(0)) => {
                return Err(invalid(
                    "the bus closed the connection during authentication",
                ))
            }
            Ok(Ok(_)) => line.push(byte[0]),
            Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(err)) => return Err(err),
            Err(_would_block) => {}
        }
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_is_as_old_as_the_newest_answered_barrier() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut barriers = Barriers::new(start);
        assert_eq!(
            barriers.age(at(1)),
            Duration::from_secs(1),
            "from the set-up"
        );
        barriers.sent(7, at(1));
        barriers.sent(8, at(2));
        barriers.sent(9, at(3));
        assert!(!barriers.answered(3), "not a barrier's answer");
        assert_eq!(
            barriers.age(at(3)),
            Duration::from_secs(3),
            "nothing answered yet"
        );
        assert!(barriers.answered(8));
        assert!(barriers.is_answered(7) && barriers.is_answered(8));
        assert!(!barriers.is_answered(9));
        assert_eq!(barriers.age(at(5)), Duration::from_secs(3));
        assert!(!barriers.answered(7), "taken in with the newer one");
        assert!(barriers.answered(9));
        assert_eq!(barriers.age(at(3)), Duration::ZERO);
    }

    #[test]
    fn a_view_known_current_without_a_barrier_is_as_old_as_that_and_no_older_after() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut barriers = Barriers::new(start);
        assert!(barriers.all_answered(), "none sent");
        barriers.sent(1, at(1));
        assert!(!barriers.all_answered());
        assert!(barriers.answered(1));
        assert!(barriers.all_answered());
        barriers.current_at(at(5));
        assert_eq!(barriers.age(at(6)), Duration::from_secs(1));
        barriers.sent(2, at(3));
        assert!(barriers.answered(2));
        assert_eq!(
            barriers.age(at(6)),
            Duration::from_secs(1),
            "an older barrier does not make the view older"
        );
    }

    #[test]
    fn a_socket_that_held_half_its_memory_may_have_filled() {
        let mut load = SocketLoad::new(100 * 1024);
        assert!(
            !load.take_quiet(),
            "nothing read: the bus daemon may have stopped"
        );
        load.read(200);
        assert!(load.take_quiet());
        for _ in 0..40 {
            load.read(200);
        }
        assert!(load.take_quiet(), "40 small messages: 48 KiB counted");
        for _ in 0..42 {
            load.read(200);
        }
        assert!(!load.take_quiet(), "42 small messages: 50.4 KiB counted");
        load.read(200);
        assert!(load.take_quiet(), "counted anew");
        load.read(usize::MAX);
        assert!(!load.take_quiet(), "no overflow");
    }

    #[test]
    fn only_so_many_unanswered_barriers_are_kept() {
        let start = Instant::now();
        let mut barriers = Barriers::new(start);
        for k in 0..(Barriers::KEPT as u32 + 10) {
            barriers.sent(k + 1, start + Duration::from_secs(u64::from(k)));
        }
        assert!(!barriers.answered(1), "forgotten");
        assert!(barriers.answered(Barriers::KEPT as u32 + 10));
        assert_eq!(
            barriers.age(start + Duration::from_secs(Barriers::KEPT as u64 + 9)),
            Duration::ZERO
        );
    }
}
