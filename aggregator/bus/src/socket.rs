//! The socket under our zbus connections: a Unix stream the runtime watches for reading only.
//!
//! zbus's own tokio socket is registered for reading and writing, edge-triggered. Each message
//! we send then wakes the process a second time when the bus has read it (the socket turns
//! writable again, which the runtime is told of even though nothing waits to write): for a
//! service that sends one signal per tick, that is a second wake-up per tick, and on a small
//! ARM box, or a virtual machine, a wake-up costs more than the tick's work. This socket is
//! registered for reading only. A write goes straight to the socket; in the rare case the bus
//! is not taking data (its buffer full), a duplicate of the descriptor is registered for
//! writing just for that wait.
//!
//! Reads are buffered, so a burst of messages (a scan's answers, several signals) takes one
//! system call.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{Mutex, OwnedMutexGuard};
use zbus::connection::socket::{ReadHalf, Socket, Split, WriteHalf};

use crate::raw::write_some;

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// A connected Unix stream for zbus (`zbus::connection::Builder::socket`).
#[derive(Debug)]
pub struct QuietSocket {
    stream: Arc<AsyncFd<Arc<UnixStream>>>,
    turn: Arc<Mutex<()>>,
}

impl QuietSocket {
    /// Wraps a connected stream; must be called within the runtime.
    pub fn new(stream: UnixStream) -> io::Result<QuietSocket> {
        stream.set_nonblocking(true)?;
        Ok(QuietSocket {
            stream: Arc::new(register(Arc::new(stream), Interest::READABLE)?),
            turn: Arc::new(Mutex::new(())),
        })
    }

    /// Writes whole messages we encode ourselves to this socket, in turn with zbus's own.
    pub fn writer(&self) -> MessageWriter {
        MessageWriter {
            stream: Arc::clone(self.stream.get_ref()),
            turn: Arc::clone(&self.turn),
        }
    }
}

/// Sends messages encoded by [`wire`](crate::wire) on a zbus connection's socket,
/// bypassing zbus's message builder (whose header serializer costs more than the rest of a
/// tick). Every write, ours and zbus's, holds the socket's turn until the whole message is
/// written, so two messages never interleave.
#[derive(Clone, Debug)]
pub struct MessageWriter {
    stream: Arc<UnixStream>,
    turn: Arc<Mutex<()>>,
}

impl MessageWriter {
    /// A writer of its own on a non-blocking stream that is not registered with the runtime
    /// (the value connection's, which is read only when the daemon wants its values).
    pub fn new(stream: Arc<UnixStream>) -> MessageWriter {
        MessageWriter {
            stream,
            turn: Arc::new(Mutex::new(())),
        }
    }

    /// Writes one whole message (see [`write_in_turn`]).
    pub async fn send(&self, message: &[u8]) -> io::Result<()> {
        let turn = Arc::clone(&self.turn).lock_owned().await;
        write_in_turn(&self.stream, turn, message, None).await
    }

    /// Waits until every message begun on the socket, ours or zbus's, is written whole (a
    /// message the bus was slow to take is finished by a task of its own after its send
    /// returned).
    pub async fn flush(&self) {
        let _turn = self.turn.lock().await;
    }

    /// Writes one whole message if the bus starts taking it within `limit`; else nothing of it
    /// is written and the error is `TimedOut` (see [`write_in_turn`]).
    pub async fn send_within(&self, message: &[u8], limit: Duration) -> io::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        let turn = tokio::time::timeout_at(deadline, Arc::clone(&self.turn).lock_owned())
            .await
            .map_err(|_| timed_out())?;
        write_in_turn(&self.stream, turn, message, Some(deadline)).await
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the bus takes no data")
}

/// Writes `message` whole while holding the socket's `turn`. Until the bus takes its first
/// bytes, the wait for room ends at `deadline` (if any) with `TimedOut`, and a caller that
/// stops waiting sends nothing. Once the bus has taken part of it, the rest is written by a
/// task of its own that keeps the turn until the last byte: a message cut short would garble
/// every one after it on the connection, so neither a time limit nor a caller that stops
/// waiting (a call's time limit dropping zbus's send) may cut one.
async fn write_in_turn(
    stream: &Arc<UnixStream>,
    turn: OwnedMutexGuard<()>,
    message: &[u8],
    deadline: Option<tokio::time::Instant>,
) -> io::Result<()> {
    let mut written = 0;
    while written == 0 && !message.is_empty() {
        match write_some(stream, message)? {
            Some(n) => written = n,
            None => match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, room(stream))
                    .await
                    .map_err(|_| timed_out())??,
                None => room(stream).await?,
            },
        }
    }
    while written < message.len() {
        match write_some(stream, &message[written..])? {
            Some(n) => written += n,
            None => {
                let stream = Arc::clone(stream);
                let rest = message[written..].to_vec();
                tokio::spawn(async move {
                    let _turn = turn;
                    if let Err(err) = write_whole(&stream, &rest).await {
                        tracing::debug!("the rest of a message not written: {err}");
                    }
                });
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Writes all of `bytes`, waiting for room whenever the bus is not taking data.
async fn write_whole(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match write_some(stream, bytes)? {
            Some(n) => bytes = &bytes[n..],
            None => room(stream).await?,
        }
    }
    Ok(())
}

/// Waits until the socket takes data again, on a descriptor of its own registered for
/// writing (the main one is registered for reading only, or not at all).
async fn room(stream: &UnixStream) -> io::Result<()> {
    let watcher = register(stream.try_clone()?, Interest::WRITABLE)?;
    let _ready = watcher.writable().await?;
    Ok(())
}

pub(crate) fn register<S: std::os::fd::AsRawFd>(
    stream: S,
    interest: Interest,
) -> io::Result<AsyncFd<S>> {
    // SAFETY: the stream is a valid open socket, moved into the `AsyncFd`; it is closed only
    // when its last owner drops it, after the `AsyncFd` has deregistered it.
    unsafe { AsyncFd::register_with_interest(stream, interest) }.map_err(io::Error::from)
}

impl Socket for QuietSocket {
    type ReadHalf = QuietRead;
    type WriteHalf = QuietWrite;

    fn split(self) -> Split<QuietRead, QuietWrite> {
        Split::new(
            QuietRead {
                stream: Arc::clone(&self.stream),
                buf: Vec::new(),
                start: 0,
                end: 0,
            },
            QuietWrite {
                stream: self.stream,
                turn: self.turn,
            },
        )
    }
}

/// The reading half: buffered reads, woken by the runtime when data arrives.
#[derive(Debug)]
pub struct QuietRead {
    stream: Arc<AsyncFd<Arc<UnixStream>>>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

#[async_trait::async_trait]
impl ReadHalf for QuietRead {
    async fn recvmsg(&mut self, out: &mut [u8]) -> io::Result<(usize, Vec<std::os::fd::OwnedFd>)> {
        if self.start == self.end {
            if self.buf.is_empty() {
                self.buf = vec![0; READ_CHUNK];
            }
            let QuietRead {
                stream, buf, end, ..
            } = self;
            loop {
                let mut ready = stream.readable().await?;
                match ready.try_io(|s| (&mut &**s.get_ref()).read(buf)) {
                    Ok(Ok(n)) => {
                        *end = n;
                        break;
                    }
                    Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(err)) => return Err(err),
                    // Not readable after all; the readiness is cleared, wait again.
                    Err(_would_block) => {}
                }
            }
            self.start = 0;
            if self.end == 0 {
                // The bus closed the connection: zbus reads 0 bytes as the end.
                return Ok((0, Vec::new()));
            }
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok((n, Vec::new()))
    }
}

/// The writing half: writes at once, waits for room only when the bus is not taking data.
#[derive(Debug)]
pub struct QuietWrite {
    stream: Arc<AsyncFd<Arc<UnixStream>>>,
    turn: Arc<Mutex<()>>,
}

#[async_trait::async_trait]
impl WriteHalf for QuietWrite {
    /// zbus hands over a whole message; it is written whole, in turn with a
    /// [`MessageWriter`]'s, and never cut short: a call's time limit drops zbus's send, maybe
    /// half-way through a message the bus is slow to take (see [`write_in_turn`]).
    async fn sendmsg(
        &mut self,
        buffer: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        if !fds.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "this socket does not pass file descriptors",
            ));
        }
        let turn = Arc::clone(&self.turn).lock_owned().await;
        write_in_turn(self.stream.get_ref(), turn, buffer, None).await?;
        Ok(buffer.len())
    }

    async fn close(&mut self) -> io::Result<()> {
        // After the message being finished by its own task, if any, but not longer than a
        // second: a bus that takes nothing must not keep the connection from closing (a message
        // cut short on a connection that closes garbles nothing after it).
        let _turn = tokio::time::timeout(Duration::from_secs(1), self.turn.lock()).await;
        match self.stream.get_ref().shutdown(std::net::Shutdown::Both) {
            Err(err) if err.kind() != io::ErrorKind::NotConnected => Err(err),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test(flavor = "current_thread")]
    async fn reads_are_buffered_and_served_in_pieces() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let (mut read, _write) = QuietSocket::new(ours).unwrap().split().take();
        peer.write_all(b"0123456789abcdef-rest").unwrap();
        let mut first = [0u8; 16];
        let (n, fds) = read.recvmsg(&mut first).await.unwrap();
        assert_eq!((n, fds.len()), (16, 0));
        assert_eq!(&first, b"0123456789abcdef");
        let mut rest = [0u8; 64];
        let (n, _) = read.recvmsg(&mut rest).await.unwrap();
        assert_eq!(&rest[..n], b"-rest");
        drop(peer);
        let (n, _) = read.recvmsg(&mut rest).await.unwrap();
        assert_eq!(n, 0, "the end of the stream reads as 0 bytes");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_socket_is_waited_for_not_failed() {
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let (_read, mut write) = QuietSocket::new(ours).unwrap().split().take();
        // Far more than a socket buffer holds: the writer must wait for the reader.
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expected = data.clone();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        });
        let mut sent = 0;
        while sent < data.len() {
            sent += write.sendmsg(&data[sent..], &[]).await.unwrap();
        }
        write.close().await.unwrap();
        assert!(
            reader.join().unwrap() == expected,
            "bytes lost or reordered"
        );
    }
}
