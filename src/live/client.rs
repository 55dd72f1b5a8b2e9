//! A blocking Thrift client for one backend: one call at a time on one connection.
//!
//! Live mode opens one [`Connection`] per (client, backend) pair and calls it
//! from its own thread. Every failure is a [`ClientError`] naming the
//! backend address; after a transport or protocol error the connection is
//! marked broken (the stream position is unknown) and later calls fail fast
//! with [`ClientError::Broken`] until the caller reconnects.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use thrift::TransportErrorKind;

use super::proto::{self, BackendSyncClient, TBackendSyncClient};
use super::transport::{InputProtocol, OutputProtocol, Protocol, Transport, protocol_stack};

/// How to reach backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Thrift protocol; must match the server's.
    pub protocol: Protocol,
    /// Thrift transport; must match the server's.
    pub transport: Transport,
    /// Longest wait for the TCP handshake.
    pub connect_timeout: Duration,
    /// Longest wait for any single read or write; `None` waits forever.
    /// A call that waits in a backend queue longer than this fails with
    /// [`ClientError::Timeout`].
    pub io_timeout: Option<Duration>,
}

impl Default for ClientConfig {
    /// Binary protocol, framed transport, 1 s to connect, 30 s per read or write.
    fn default() -> Self {
        Self {
            protocol: Protocol::Binary,
            transport: Transport::Framed,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl ClientConfig {
    /// Default timeouts with the given wire settings.
    pub fn new(protocol: Protocol, transport: Transport) -> Self {
        Self {
            protocol,
            transport,
            ..Self::default()
        }
    }

    /// Opens a TCP connection to `addr` as every client of live mode does: the handshake
    /// within [`ClientConfig::connect_timeout`], Nagle's algorithm off (calls are small
    /// and latency is what is measured), and [`ClientConfig::io_timeout`] on every read
    /// and write.
    pub(crate) fn dial(&self, addr: SocketAddr) -> Result<TcpStream, ClientError> {
        self.dial_from(addr, None)
    }

    /// [`ClientConfig::dial`] from the local address `source` (any port) when given: how
    /// the connection-level driver gives each client its own loopback address, which
    /// proxies that hash the client's address read.
    pub(crate) fn dial_from(
        &self,
        addr: SocketAddr,
        source: Option<std::net::Ipv4Addr>,
    ) -> Result<TcpStream, ClientError> {
        let connect_err = |source| ClientError::Connect { addr, source };
        let stream = match source {
            None => TcpStream::connect_timeout(&addr, self.connect_timeout),
            Some(ip) => connect_from(ip, addr, self.connect_timeout),
        }
        .map_err(connect_err)?;
        stream.set_nodelay(true).map_err(connect_err)?;
        stream
            .set_read_timeout(self.io_timeout)
            .map_err(connect_err)?;
        stream
            .set_write_timeout(self.io_timeout)
            .map_err(connect_err)?;
        Ok(stream)
    }
}

/// A TCP connection to `addr` from `source` (port chosen by the system), within
/// `timeout` (Linux bounds a blocking connect by the send timeout). On loopback any
/// `127.x.y.z` is a valid source without configuration.
#[cfg(target_os = "linux")]
pub fn connect_from(
    source: std::net::Ipv4Addr,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, ipproto, socket, sockopt};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "a source IPv4 address for an IPv6 destination",
            ));
        }
    };
    let fd = socket(family, SocketType::STREAM, Some(ipproto::TCP))?;
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(timeout))?;
    bind(&fd, &std::net::SocketAddrV4::new(source, 0))?;
    connect(&fd, &addr)?;
    Ok(TcpStream::from(fd))
}

/// Elsewhere a connection cannot choose its source address here.
#[cfg(not(target_os = "linux"))]
pub fn connect_from(
    _source: std::net::Ipv4Addr,
    _addr: SocketAddr,
    _timeout: Duration,
) -> std::io::Result<TcpStream> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "binding a connection to a client address of its own needs Linux",
    ))
}

/// What became of a call that got an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The backend served the call.
    Served {
        /// Id of the backend that served it.
        server_id: String,
        /// Time the call waited in the backend's FIFO queue.
        queued_ns: u64,
        /// Time the call spent in service.
        served_ns: u64,
        /// The load report the reply carried, if the backend sends one.
        load: Option<ReplyLoad>,
        /// How much later than its service's end the backend's worker woke, if the
        /// backend says (an emulated one: its service is a sleep, which a busy machine
        /// ends late).
        woke_late_ns: Option<u64>,
    },
    /// The backend's queue was full.
    Rejected {
        /// Id of the backend that turned the call away.
        server_id: String,
        /// Calls waiting in its queue at that moment.
        queue_len: u32,
        /// Admission control dropped the call after it waited (`Rejected.shed`), rather
        /// than a full queue turning it away.
        shed: bool,
    },
}

/// A backend's load as a reply or a probe answer reports it (wall-clock nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLoad {
    /// Calls at the backend (waiting + in service), not counting the one answered.
    pub in_flight: u32,
    /// Of those, waiting for a worker.
    pub queued: u32,
    /// The backend's recent mean service time (probe answers; 0 on replies).
    pub service_ns: u64,
    /// The backend's estimate of the response time of a call arriving now.
    pub latency_ns: u64,
}

impl ReplyLoad {
    /// The load report of a reply, when it carries one (every field present).
    pub(crate) fn of_reply(r: &proto::Reply) -> Option<ReplyLoad> {
        Some(ReplyLoad {
            in_flight: u32::try_from(r.in_flight?).unwrap_or(0),
            queued: u32::try_from(r.queued?).unwrap_or(0),
            service_ns: 0,
            latency_ns: u64::try_from(r.latency_ns?).unwrap_or(0),
        })
    }
}

/// Answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingReply {
    /// Id of the backend.
    pub server_id: String,
    /// Round-trip time measured by the client.
    pub rtt: Duration,
}

/// Why a call or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be opened: is the backend running at that address?
    #[error("cannot connect to backend {addr}: {source}")]
    Connect {
        /// Backend address.
        addr: SocketAddr,
        /// The connect error.
        source: io::Error,
    },
    /// No answer within the configured I/O timeout.
    #[error("backend {addr} did not answer within {timeout:?}")]
    Timeout {
        /// Backend address.
        addr: SocketAddr,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The backend closed or reset the connection (killed, restarted, overloaded).
    #[error("backend {addr} closed the connection: {detail}")]
    Closed {
        /// Backend address.
        addr: SocketAddr,
        /// What the transport reported.
        detail: String,
    },
    /// Another socket error.
    #[error("I/O error talking to backend {addr}: {detail}")]
    Io {
        /// Backend address.
        addr: SocketAddr,
        /// What the transport reported.
        detail: String,
    },
    /// The bytes received are not a valid answer: check that client and
    /// backend use the same protocol and transport.
    #[error(
        "protocol error talking to backend {addr} (same protocol and transport on both sides?): {detail}"
    )]
    Protocol {
        /// Backend address.
        addr: SocketAddr,
        /// What the decoder reported.
        detail: String,
    },
    /// The backend answered with a Thrift application exception.
    #[error("backend {addr} raised an application error: {detail}")]
    Application {
        /// Backend address.
        addr: SocketAddr,
        /// The exception's message.
        detail: String,
    },
    /// The live driver gave up on the call before sending it: the backend had failed
    /// (an earlier call timed out, its connection broke, or it refused connections), or
    /// too many calls already waited for a connection to it.
    #[error("call to backend {addr} not sent: {reason}")]
    NotSent {
        /// Backend address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// An earlier error left this connection unusable: open a new one.
    #[error("connection to backend {addr} is broken by an earlier error; reconnect")]
    Broken {
        /// Backend address.
        addr: SocketAddr,
    },
}

impl ClientError {
    /// Backend address the error is about.
    pub fn addr(&self) -> SocketAddr {
        match self {
            ClientError::Connect { addr, .. }
            | ClientError::Timeout { addr, .. }
            | ClientError::Closed { addr, .. }
            | ClientError::Io { addr, .. }
            | ClientError::Protocol { addr, .. }
            | ClientError::Application { addr, .. }
            | ClientError::NotSent { addr, .. }
            | ClientError::Broken { addr } => *addr,
        }
    }
}

type Client = BackendSyncClient<InputProtocol, OutputProtocol>;

/// An open connection to one backend.
pub struct Connection {
    addr: SocketAddr,
    io_timeout: Option<Duration>,
    client: Client,
    stream: Arc<TcpStream>,
    broken: bool,
    opened: Instant,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.addr)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens a connection to the backend at `addr`.
    pub fn connect(addr: SocketAddr, cfg: &ClientConfig) -> Result<Self, ClientError> {
        let stream = Arc::new(cfg.dial(addr)?);
        let (input, output) = protocol_stack(&stream, cfg.protocol, cfg.transport);
        Ok(Self {
            addr,
            io_timeout: cfg.io_timeout,
            client: BackendSyncClient::new(input, output),
            stream,
            broken: false,
            opened: Instant::now(),
        })
    }

    /// Backend address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// True once an error has made the connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends call `id` carrying `work_ns` of work and waits for the answer.
    pub fn call(
        &mut self,
        id: i64,
        work_ns: i64,
        key: Option<i64>,
    ) -> Result<CallOutcome, ClientError> {
        self.call_with_payload(id, work_ns, key, None)
    }

    /// Like [`Connection::call`], with an opaque payload to make the request bigger.
    pub fn call_with_payload(
        &mut self,
        id: i64,
        work_ns: i64,
        key: Option<i64>,
        payload: Option<Vec<u8>>,
    ) -> Result<CallOutcome, ClientError> {
        self.check_usable()?;
        match self
            .client
            .call(proto::Call::new(id, work_ns, key, payload))
        {
            Ok(reply) if reply.id == id => Ok(CallOutcome::Served {
                load: ReplyLoad::of_reply(&reply),
                server_id: reply.server_id,
                queued_ns: u64::try_from(reply.queued_ns).unwrap_or(0),
                served_ns: u64::try_from(reply.served_ns).unwrap_or(0),
                woke_late_ns: reply.woke_late_ns.and_then(|n| u64::try_from(n).ok()),
            }),
            Ok(reply) => Err(self.protocol_error(format!(
                "reply for call {} received for call {id}",
                reply.id
            ))),
            Err(thrift::Error::User(user)) => match user.downcast::<proto::Rejected>() {
                Ok(rej) => Ok(CallOutcome::Rejected {
                    server_id: rej.server_id,
                    queue_len: u32::try_from(rej.queue_len).unwrap_or(0),
                    shed: rej.shed == Some(true),
                }),
                Err(other) => Err(self.protocol_error(format!("unexpected exception: {other}"))),
            },
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Checks that the backend answers; measures the round trip.
    pub fn ping(&mut self) -> Result<PingReply, ClientError> {
        self.check_usable()?;
        let sent = Instant::now();
        let sent_ns = i64::try_from((sent - self.opened).as_nanos()).unwrap_or(i64::MAX);
        match self.client.ping(sent_ns) {
            Ok(pong) if pong.sent_ns == sent_ns => Ok(PingReply {
                server_id: pong.server_id,
                rtt: sent.elapsed(),
            }),
            Ok(pong) => {
                Err(self
                    .protocol_error(format!("ping echoed {} instead of {sent_ns}", pong.sent_ns)))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Probes the backend (prequal): its load now.
    pub fn probe(&mut self) -> Result<ReplyLoad, ClientError> {
        self.probe_at_cost(None).map(|(load, _)| load)
    }

    /// Probes the backend, the probe costing it `cost_ns` of work (at speed 1) if given:
    /// its load as the probe arrived, and what the probes' cost jobs that ended so far
    /// took, (waited, served) in nanoseconds, if the backend runs them.
    pub fn probe_at_cost(
        &mut self,
        cost_ns: Option<i64>,
    ) -> Result<(ReplyLoad, Option<(u64, u64)>), ClientError> {
        self.check_usable()?;
        let sent_ns = i64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(i64::MAX);
        let ns = |v: i64| u64::try_from(v).unwrap_or(0);
        match self.client.probe(sent_ns, cost_ns) {
            Ok(load) if load.sent_ns == sent_ns => Ok((
                ReplyLoad {
                    in_flight: u32::try_from(load.in_flight).unwrap_or(0),
                    queued: u32::try_from(load.queued).unwrap_or(0),
                    service_ns: ns(load.service_ns),
                    latency_ns: ns(load.latency_ns),
                },
                load.cost_queued_ns
                    .zip(load.cost_served_ns)
                    .map(|(q, s)| (ns(q), ns(s))),
            )),
            Ok(load) => Err(self.protocol_error(format!(
                "probe echoed {} instead of {sent_ns}",
                load.sent_ns
            ))),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        if self.broken {
            Err(ClientError::Broken { addr: self.addr })
        } else {
            Ok(())
        }
    }

    fn protocol_error(&mut self, detail: String) -> ClientError {
        self.break_connection();
        ClientError::Protocol {
            addr: self.addr,
            detail,
        }
    }

    fn break_connection(&mut self) {
        self.broken = true;
        // Release the backend's connection thread now rather than on drop.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Classifies a thrift error; every kind but an application exception
    /// leaves the stream in an unknown position and breaks the connection.
    fn fail(&mut self, err: thrift::Error) -> ClientError {
        let (error, breaks) = classify(self.addr, self.io_timeout, err);
        if breaks {
            self.break_connection();
        }
        error
    }
}

/// A thrift error as a [`ClientError`], and whether it leaves the connection unusable
/// (every kind but an application exception does: the stream position is unknown).
pub(crate) fn classify(
    addr: SocketAddr,
    io_timeout: Option<Duration>,
    err: thrift::Error,
) -> (ClientError, bool) {
    match err {
        thrift::Error::Application(e) => (
            ClientError::Application {
                addr,
                detail: e.message,
            },
            false,
        ),
        thrift::Error::Transport(e) => (
            match e.kind {
                TransportErrorKind::TimedOut => ClientError::Timeout {
                    addr,
                    timeout: io_timeout.unwrap_or_default(),
                },
                TransportErrorKind::EndOfFile | TransportErrorKind::NotOpen => {
                    ClientError::Closed {
                        addr,
                        detail: e.message,
                    }
                }
                // Broken pipe has no kind of its own in the thrift crate.
                _ if e.message.contains("Broken pipe") => ClientError::Closed {
                    addr,
                    detail: e.message,
                },
                _ => ClientError::Io {
                    addr,
                    detail: e.message,
                },
            },
            true,
        ),
        thrift::Error::Protocol(e) => (
            ClientError::Protocol {
                addr,
                detail: e.message,
            },
            true,
        ),
        thrift::Error::User(e) => (
            ClientError::Protocol {
                addr,
                detail: e.to_string(),
            },
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn unreachable_address_is_a_connect_error_naming_it() {
        // Bind then drop to get a port with (almost certainly) nobody listening.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = Connection::connect(addr, &ClientConfig::default()).unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert_eq!(err.addr(), addr);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }

    #[test]
    fn silent_backend_times_out_and_breaks() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = ClientConfig {
            io_timeout: Some(Duration::from_millis(100)),
            ..ClientConfig::default()
        };
        let mut conn = Connection::connect(addr, &cfg).unwrap();
        let started = Instant::now();
        let err = conn.call(1, 0, None).unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(conn.is_broken());
        assert!(matches!(
            conn.call(2, 0, None),
            Err(ClientError::Broken { .. })
        ));
        drop(listener);
    }

    #[test]
    fn garbage_reply_is_a_protocol_error() {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            // A frame of 8 bytes that is not a binary-protocol message.
            let _ = s.write_all(&[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
            std::thread::sleep(Duration::from_millis(200));
        });
        let cfg = ClientConfig {
            io_timeout: Some(Duration::from_secs(2)),
            ..ClientConfig::default()
        };
        let mut conn = Connection::connect(addr, &cfg).unwrap();
        let err = conn.call(1, 0, None).unwrap_err();
        assert!(
            matches!(err, ClientError::Protocol { .. } | ClientError::Io { .. }),
            "{err:?}"
        );
        assert!(conn.is_broken());
        peer.join().unwrap();
    }
}
