//! Wire settings shared by client and server: Thrift protocol and transport.
//!
//! Both sides build their protocol stack from a [`Protocol`] and a
//! [`Transport`] here, over a buffered socket so that each message costs one
//! `read` and one `write` system call. The buffering is below the Thrift
//! transport and does not change the bytes on the wire.
//!
//! Nothing a peer announces is allocated before it is checked: frames, strings and
//! containers above the message limit ([`DEFAULT_MAX_MESSAGE_BYTES`] unless a server sets
//! its own) end the connection. A server's connections also carry a `MessageGuard`:
//! idle and per-message timeouts and a byte budget per message.

use std::fmt;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thrift::TConfiguration;
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol,
};
use thrift::transport::{TBufferedReadTransport, TFramedWriteTransport};

/// Thrift protocol (encoding of messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// `TBinaryProtocol`, strict mode (the Thrift default).
    #[default]
    Binary,
    /// `TCompactProtocol`.
    Compact,
}

/// Thrift transport (framing of messages on the byte stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// `TFramedTransport`: each message prefixed by its 4-byte length.
    #[default]
    Framed,
    /// `TBufferedTransport`: messages sent back to back, unframed.
    Buffered,
}

impl Protocol {
    /// Every protocol, for tests and help texts.
    pub const ALL: [Protocol; 2] = [Protocol::Binary, Protocol::Compact];

    /// Name used in scenario files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Binary => "binary",
            Protocol::Compact => "compact",
        }
    }
}

impl Transport {
    /// Every transport, for tests and help texts.
    pub const ALL: [Transport; 2] = [Transport::Framed, Transport::Buffered];

    /// Name used in scenario files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Framed => "framed",
            Transport::Buffered => "buffered",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol or transport name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?}: expected one of {expected}")]
pub struct ParseWireError {
    what: &'static str,
    given: String,
    expected: &'static str,
}

impl FromStr for Protocol {
    type Err = ParseWireError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "binary" => Ok(Protocol::Binary),
            "compact" => Ok(Protocol::Compact),
            _ => Err(ParseWireError {
                what: "protocol",
                given: s.to_owned(),
                expected: "binary, compact",
            }),
        }
    }
}

impl FromStr for Transport {
    type Err = ParseWireError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "framed" => Ok(Transport::Framed),
            "buffered" => Ok(Transport::Buffered),
            _ => Err(ParseWireError {
                what: "transport",
                given: s.to_owned(),
                expected: "framed, buffered",
            }),
        }
    }
}

/// Input half of a protocol stack.
pub(crate) type InputProtocol = Box<dyn TInputProtocol + Send>;
/// Output half of a protocol stack.
pub(crate) type OutputProtocol = Box<dyn TOutputProtocol + Send>;

/// Largest Thrift message (framed: the frame) a client accepts, and a server by default.
/// `lbsim`'s own messages are under 100 bytes; the optional payload of `Call` is for
/// making requests bigger in tests.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why a [`MessageGuard`] ended a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tripped {
    /// Idle longer than the idle timeout, or a message slower than the message timeout.
    TimedOut,
    /// A frame or message larger than the limit.
    TooLarge,
}

/// What a connection is doing, for a server looking for one to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the first byte of a message.
    Awaiting = 0,
    /// Has received part of a message.
    Reading = 1,
    /// Serving a call.
    InCall = 2,
}

/// A server's limits on one connection's reads: an idle timeout between messages, a
/// deadline for each message from its first byte (a client sending a byte a second
/// cannot hold the connection), and a size limit; shared between the connection's
/// socket reader and its server loop, which calls [`MessageGuard::next_message`] before
/// each message.
#[derive(Debug)]
pub(crate) struct MessageGuard {
    epoch: Instant,
    idle_timeout: Duration,
    message_timeout: Duration,
    max_bytes: usize,
    phase: AtomicU8,
    /// Nanoseconds since `epoch` when the phase last changed.
    since: AtomicU64,
    /// Socket bytes read since the message started.
    bytes: AtomicUsize,
    /// Whether the socket's read timeout is the idle timeout (else a message's rest).
    timeout_is_idle: AtomicBool,
    /// 0: not tripped; 1 + [`Tripped`] otherwise.
    tripped: AtomicU8,
}

/// Bytes a buffered reader may read past the end of a message, allowed on top of the
/// message limit (socket bytes are counted, and reads fill a buffer).
const READ_AHEAD: usize = 16 * 1024;

impl MessageGuard {
    pub(crate) fn new(idle_timeout: Duration, message_timeout: Duration, max_bytes: usize) -> Self {
        let guard = MessageGuard {
            epoch: Instant::now(),
            idle_timeout,
            message_timeout,
            max_bytes,
            phase: AtomicU8::new(Phase::Awaiting as u8),
            since: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            timeout_is_idle: AtomicBool::new(false),
            tripped: AtomicU8::new(0),
        };
        guard.next_message();
        guard
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn set_phase(&self, phase: Phase) {
        self.since.store(self.now_ns(), Ordering::Relaxed);
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// The connection now waits for its next message.
    pub(crate) fn next_message(&self) {
        self.bytes.store(0, Ordering::Relaxed);
        self.set_phase(Phase::Awaiting);
    }

    /// The connection is serving a call (it is not idle, whatever the time).
    pub(crate) fn in_call(&self) {
        self.set_phase(Phase::InCall);
    }

    /// What the connection does, and for how long it has.
    pub(crate) fn phase(&self) -> (Phase, Duration) {
        let phase = match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Awaiting,
            1 => Phase::Reading,
            _ => Phase::InCall,
        };
        let since = self.since.load(Ordering::Relaxed);
        (
            phase,
            Duration::from_nanos(self.now_ns().saturating_sub(since)),
        )
    }

    /// Why the guard ended the connection, if it did.
    pub(crate) fn tripped(&self) -> Option<Tripped> {
        match self.tripped.load(Ordering::Relaxed) {
            1 => Some(Tripped::TimedOut),
            2 => Some(Tripped::TooLarge),
            _ => None,
        }
    }

    fn trip(&self, why: Tripped, error: io::Error) -> io::Error {
        self.tripped.store(
            match why {
                Tripped::TimedOut => 1,
                Tripped::TooLarge => 2,
            },
            Ordering::Relaxed,
        );
        error
    }

    /// Sets the socket's read timeout for the next read.
    fn before_read(&self, stream: &TcpStream) -> io::Result<()> {
        let (phase, elapsed) = self.phase();
        if phase == Phase::Awaiting {
            if !self.timeout_is_idle.swap(true, Ordering::Relaxed) {
                stream.set_read_timeout(Some(self.idle_timeout))?;
            }
            return Ok(());
        }
        let left = self.message_timeout.saturating_sub(elapsed);
        if left.is_zero() {
            return Err(self.trip(
                Tripped::TimedOut,
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "message not complete {:?} after its first byte",
                        self.message_timeout
                    ),
                ),
            ));
        }
        self.timeout_is_idle.store(false, Ordering::Relaxed);
        stream.set_read_timeout(Some(left))
    }

    /// Accounts for `n` bytes just read.
    fn after_read(&self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        if self.phase.load(Ordering::Relaxed) == Phase::Awaiting as u8 {
            self.set_phase(Phase::Reading);
        }
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.max_bytes + READ_AHEAD {
            return Err(self.too_large(total));
        }
        Ok(())
    }

    fn too_large(&self, size: usize) -> io::Error {
        self.trip(
            Tripped::TooLarge,
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "message of {size} bytes or more exceeds the limit of {} bytes",
                    self.max_bytes
                ),
            ),
        )
    }
}

/// Reads the socket; reports an expired `SO_RCVTIMEO` as `TimedOut`, and applies a
/// server's [`MessageGuard`].
///
/// Linux reports the timeout as `EAGAIN` (`WouldBlock`), which the thrift
/// crate folds into an "unknown" transport error; `TimedOut` survives the
/// conversion as `TransportErrorKind::TimedOut`.
struct SocketReader {
    stream: Arc<TcpStream>,
    guard: Option<Arc<MessageGuard>>,
}

impl Read for SocketReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(g) = &self.guard {
            g.before_read(&self.stream)?;
        }
        let n = (&*self.stream).read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                let e = io::Error::new(io::ErrorKind::TimedOut, "read timed out");
                match &self.guard {
                    Some(g) => g.trip(Tripped::TimedOut, e),
                    None => e,
                }
            } else {
                e
            }
        })?;
        if let Some(g) = &self.guard {
            g.after_read(n)?;
        }
        Ok(n)
    }
}

/// Writes the socket (shared with the reading half, so a connection costs one file
/// descriptor).
struct SocketWriter(Arc<TcpStream>);

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// `TFramedReadTransport` with a frame size limit, checked before anything is
/// allocated; the frame's buffer then grows only as its bytes arrive. (The thrift
/// crate's transport allocates whatever the 4-byte header announces, up to 16 MB, and
/// offers no way to lower that.)
struct LimitedFramedRead<R> {
    chan: R,
    max: usize,
    guard: Option<Arc<MessageGuard>>,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> Read for LimitedFramedRead<R> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            let mut header = [0u8; 4];
            self.chan.read_exact(&mut header)?;
            let size = i32::from_be_bytes(header);
            let len = usize::try_from(size).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("negative frame size {size}"),
                )
            })?;
            if len > self.max {
                let e = io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "frame of {len} bytes exceeds the limit of {} bytes",
                        self.max
                    ),
                );
                return Err(match &self.guard {
                    Some(g) => g.trip(Tripped::TooLarge, e),
                    None => e,
                });
            }
            self.buf.clear();
            self.pos = 0;
            (&mut self.chan)
                .take(len as u64)
                .read_to_end(&mut self.buf)?;
            if self.buf.len() < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed inside a frame",
                ));
            }
            // A large frame's buffer is not kept for the small ones that follow.
            if self.buf.capacity() > 4 * READ_CAPACITY && len <= READ_CAPACITY {
                self.buf.shrink_to(READ_CAPACITY);
            }
        }
        let n = b.len().min(self.buf.len() - self.pos);
        b[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Initial buffer of a framed reader.
const READ_CAPACITY: usize = 4096;

/// Builds the protocol stack over a connected socket, with the client's limits.
pub(crate) fn protocol_stack(
    stream: &Arc<TcpStream>,
    protocol: Protocol,
    transport: Transport,
) -> (InputProtocol, OutputProtocol) {
    protocol_stack_guarded(stream, protocol, transport, DEFAULT_MAX_MESSAGE_BYTES, None)
}

/// Builds the protocol stack over a connected socket.
///
/// Both halves share the socket. Framed transport reads through a `BufReader` and
/// writes through a `BufWriter`, so a frame (length + body) is one system call each
/// way; buffered transport's own buffers already do that on reads, and a `BufWriter`
/// does it on writes. Both flush once per message, when the protocol layer calls
/// `flush`. Frames above `max_message` bytes are refused before anything is allocated,
/// and so are strings, binaries and containers announcing more; `guard` adds a server's
/// timeouts and message size limit.
pub(crate) fn protocol_stack_guarded(
    stream: &Arc<TcpStream>,
    protocol: Protocol,
    transport: Transport,
    max_message: usize,
    guard: Option<Arc<MessageGuard>>,
) -> (InputProtocol, OutputProtocol) {
    let reader = SocketReader {
        stream: Arc::clone(stream),
        guard: guard.clone(),
    };
    let writer = BufWriter::new(SocketWriter(Arc::clone(stream)));
    let input: Box<dyn io::Read + Send> = match transport {
        Transport::Framed => Box::new(LimitedFramedRead {
            chan: BufReader::new(reader),
            max: max_message,
            guard,
            buf: Vec::with_capacity(READ_CAPACITY),
            pos: 0,
        }),
        Transport::Buffered => Box::new(TBufferedReadTransport::new(reader)),
    };
    let output: Box<dyn io::Write + Send> = match transport {
        Transport::Framed => Box::new(TFramedWriteTransport::new(writer)),
        Transport::Buffered => Box::new(writer),
    };
    let config = TConfiguration::builder()
        .max_string_size(Some(max_message))
        .max_container_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .max_message_size(Some(max_message))
        .build()
        .unwrap_or_default();
    match protocol {
        Protocol::Binary => (
            Box::new(TBinaryInputProtocol::with_config(input, true, config)),
            Box::new(TBinaryOutputProtocol::new(output, true)),
        ),
        Protocol::Compact => (
            Box::new(TCompactInputProtocol::with_config(input, config)),
            Box::new(TCompactOutputProtocol::new(output)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(bytes: Vec<u8>, max: usize) -> LimitedFramedRead<io::Cursor<Vec<u8>>> {
        LimitedFramedRead {
            chan: io::Cursor::new(bytes),
            max,
            guard: None,
            buf: Vec::new(),
            pos: 0,
        }
    }

    #[test]
    fn frames_above_the_limit_or_negative_are_refused_before_allocating() {
        let mut ok = 5u32.to_be_bytes().to_vec();
        ok.extend_from_slice(b"hello");
        ok.extend_from_slice(&3u32.to_be_bytes());
        ok.extend_from_slice(b"abc");
        let mut r = framed(ok, 8);
        let mut out = [0u8; 8];
        r.read_exact(&mut out).unwrap();
        assert_eq!(&out, b"helloabc");
        for header in [9u32, 16_000_000, 0x7fff_ffff, 0xffff_ffff] {
            let mut r = framed(header.to_be_bytes().to_vec(), 8);
            let err = r.read(&mut [0u8; 16]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{header}: {err}");
            assert!(r.buf.capacity() < 1024, "allocated for header {header}");
        }
        // A frame cut short: an error, and only the bytes received were buffered.
        let mut cut = 60_000u32.to_be_bytes().to_vec();
        cut.extend_from_slice(&[1u8; 100]);
        let mut r = framed(cut, 64 * 1024);
        let err = r.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(r.buf.capacity() < 4096, "{}", r.buf.capacity());
    }

    #[test]
    fn names_round_trip() {
        for p in Protocol::ALL {
            assert_eq!(p.to_string().parse::<Protocol>(), Ok(p));
        }
        for t in Transport::ALL {
            assert_eq!(t.to_string().parse::<Transport>(), Ok(t));
        }
        assert_eq!("Compact".parse::<Protocol>(), Ok(Protocol::Compact));
    }

    #[test]
    fn unknown_name_lists_choices() {
        let err = "json".parse::<Protocol>().unwrap_err().to_string();
        assert!(
            err.contains("json") && err.contains("binary, compact"),
            "{err}"
        );
    }

    #[test]
    fn serde_is_snake_case() {
        #[derive(Deserialize, Serialize)]
        struct Wire {
            protocol: Protocol,
            transport: Transport,
        }
        let w: Wire =
            serde_json::from_str(r#"{"protocol":"compact","transport":"buffered"}"#).unwrap();
        assert_eq!(
            (w.protocol, w.transport),
            (Protocol::Compact, Transport::Buffered)
        );
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"protocol":"compact","transport":"buffered"}"#
        );
    }
}
