//! Wire settings shared by client and server: Thrift protocol and transport.
//!
//! Both sides build their protocol stack from a [`Protocol`] and a
//! [`Transport`] here, over a buffered socket so that each message costs one
//! `read` and one `write` system call. The buffering is below the Thrift
//! transport and does not change the bytes on the wire.

use std::fmt;
use std::io::{self, BufReader, BufWriter, Read};
use std::net::TcpStream;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    TInputProtocol, TOutputProtocol,
};
use thrift::transport::{TBufferedReadTransport, TFramedReadTransport, TFramedWriteTransport};

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

/// Reader that reports an expired `SO_RCVTIMEO` as `TimedOut`.
///
/// Linux reports the timeout as `EAGAIN` (`WouldBlock`), which the thrift
/// crate folds into an "unknown" transport error; `TimedOut` survives the
/// conversion as `TransportErrorKind::TimedOut`.
struct TimeoutAsError<R>(R);

impl<R: Read> Read for TimeoutAsError<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                io::Error::new(io::ErrorKind::TimedOut, "read timed out")
            } else {
                e
            }
        })
    }
}

/// Builds the protocol stack over a connected socket.
///
/// The socket is cloned for the input half. Framed transport reads through a
/// `BufReader` and writes through a `BufWriter`, so a frame (length + body)
/// is one system call each way; buffered transport's own buffers already do
/// that on reads, and a `BufWriter` does it on writes. Both flush once per
/// message, when the protocol layer calls `flush`.
pub(crate) fn protocol_stack(
    stream: &TcpStream,
    protocol: Protocol,
    transport: Transport,
) -> io::Result<(InputProtocol, OutputProtocol)> {
    let reader = TimeoutAsError(stream.try_clone()?);
    let writer = BufWriter::new(stream.try_clone()?);
    let input: Box<dyn io::Read + Send> = match transport {
        Transport::Framed => Box::new(TFramedReadTransport::new(BufReader::new(reader))),
        Transport::Buffered => Box::new(TBufferedReadTransport::new(reader)),
    };
    let output: Box<dyn io::Write + Send> = match transport {
        Transport::Framed => Box::new(TFramedWriteTransport::new(writer)),
        Transport::Buffered => Box::new(writer),
    };
    Ok(match protocol {
        Protocol::Binary => (
            Box::new(TBinaryInputProtocol::new(input, true)),
            Box::new(TBinaryOutputProtocol::new(output, true)),
        ),
        Protocol::Compact => (
            Box::new(TCompactInputProtocol::new(input)),
            Box::new(TCompactOutputProtocol::new(output)),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
