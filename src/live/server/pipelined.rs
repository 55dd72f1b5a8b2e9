//! Pipelined connections: calls on one connection are served concurrently and answered
//! as each finishes, out of order, matched by their sequence number.
//!
//! A classic Thrift server handles one call per connection at a time, so a client that
//! writes a second call before the first is answered waits behind it (head-of-line
//! blocking). The connection-level topology of the simulator (`[connections]`, an L4
//! proxy in front of the servers) sends each request over its client's next connection
//! whatever is in flight on it, and the server's workers take requests from all
//! connections alike: a connection carries many calls at once, as multiplexing Thrift
//! transports do (fbthrift's header/Rocket transports, Finagle's ThriftMux). A pipelined
//! server is what makes that model hold live: this connection thread only reads and
//! decodes calls; each call is handed to a connection worker (kept for reuse, one more
//! started when all are busy), which waits for a worker slot in the server's FIFO
//! admission like any other call and writes its answer under the connection's write lock.
//! Pings are answered at once by the reading thread.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TMessageIdentifier, TMessageType, TOutputProtocol,
    TSerializable, TStructIdentifier, TType,
};
use thrift::{ApplicationError, ApplicationErrorKind};

use super::super::proto::{BackendSyncHandler, Call, Pong, Rejected};
use super::super::transport::{
    MessageGuard, OutputProtocol, Protocol, Transport, protocol_stack_guarded,
};
use super::{CONNECTION_STACK, Handler, Shared};

/// A decoded call waiting for a connection worker.
struct Work {
    seq: i32,
    call: Call,
}

/// Serves calls on one connection until it closes or the server stops; returns once every
/// call read from it has been answered (or its answer could not be written).
pub(super) fn serve(
    stream: &Arc<TcpStream>,
    guard: Arc<MessageGuard>,
    shared: &Arc<Shared>,
    protocol: Protocol,
    transport: Transport,
) {
    // The same limits as one-call-at-a-time connections: size limits before allocation,
    // idle and per-message timeouts, a write timeout.
    let _ = stream.set_write_timeout(Some(shared.limits.message_timeout));
    let (mut input, output) = protocol_stack_guarded(
        stream,
        protocol,
        transport,
        shared.limits.max_message_bytes,
        Some(Arc::clone(&guard)),
    );
    let output = Arc::new(Mutex::new(output));
    let (work_tx, work_rx) = mpsc::channel::<Work>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    // Workers waiting for work and not yet promised any.
    let idle = Arc::new(AtomicUsize::new(0));
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        guard.next_message();
        let Ok(ident) = input.read_message_begin() else {
            break;
        };
        let seq = ident.sequence_number;
        let ok = match ident.name.as_str() {
            "call" => match read_call_args(&mut *input) {
                Ok(call) => {
                    // Promise the call to an idle worker, or start one for it, so that a
                    // call never waits behind another of the same connection.
                    let promised = idle
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                        .is_ok();
                    if !promised {
                        workers.retain(|w| !w.is_finished());
                        // Bounded: beyond MAX_CALL_THREADS calls in service at once on one
                        // connection, a call waits in this connection for a free thread.
                        if workers.len() < MAX_CALL_THREADS {
                            match spawn_worker(shared, &output, &work_rx, &idle) {
                                Ok(handle) => workers.push(handle),
                                Err(_) => break,
                            }
                        }
                    }
                    work_tx.send(Work { seq, call }).is_ok()
                }
                Err(_) => false,
            },
            "ping" => match read_ping_args(&mut *input) {
                // An `unreachable` fault: health checks fail, as on a classic connection.
                Ok(_) if shared.faults.unreachable() => {
                    let mut out = output.lock().unwrap_or_else(PoisonError::into_inner);
                    write_exception(
                        &mut **out,
                        "ping",
                        seq,
                        &ApplicationError::new(
                            ApplicationErrorKind::InternalError,
                            format!("server {}: unreachable (unreachable fault)", shared.id),
                        ),
                    )
                    .is_ok()
                }
                Ok(sent_ns) => {
                    let pong = Pong::new(shared.id.clone(), sent_ns);
                    let mut out = output.lock().unwrap_or_else(PoisonError::into_inner);
                    write_result(
                        &mut **out,
                        ("ping", "ping_result"),
                        seq,
                        ("success", 0),
                        &pong,
                    )
                    .is_ok()
                }
                Err(_) => false,
            },
            other => {
                let name = other.to_string();
                let skipped = input
                    .skip(TType::Struct)
                    .and_then(|()| input.read_message_end());
                let mut out = output.lock().unwrap_or_else(PoisonError::into_inner);
                skipped.is_ok()
                    && write_exception(
                        &mut **out,
                        &name,
                        seq,
                        &ApplicationError::new(
                            ApplicationErrorKind::UnknownMethod,
                            format!("unknown method {name}"),
                        ),
                    )
                    .is_ok()
            }
        };
        // After a decoding or writing error the stream position is unknown: stop.
        if !ok {
            break;
        }
    }
    // No more calls: workers finish what they hold, then see the channel closed.
    drop(work_tx);
    for w in workers {
        let _ = w.join();
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Most threads serving the calls of one pipelined connection at once: a hostile client
/// pipelining thousands of calls costs the server at most this many threads per connection
/// (and the connection limit bounds connections).
pub(crate) const MAX_CALL_THREADS: usize = 64;

fn spawn_worker(
    shared: &Arc<Shared>,
    output: &Arc<Mutex<OutputProtocol>>,
    work: &Arc<Mutex<Receiver<Work>>>,
    idle: &Arc<AtomicUsize>,
) -> std::io::Result<JoinHandle<()>> {
    let handler = Handler(Arc::clone(shared));
    let output = Arc::clone(output);
    let work = Arc::clone(work);
    let idle = Arc::clone(idle);
    thread::Builder::new()
        .name(format!("lbsim-{}-call", shared.id))
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            super::precise_sleeps();
            loop {
                // Only one worker waits on the channel at a time; the others wait on the
                // lock, which is the same.
                let next = work.lock().unwrap_or_else(PoisonError::into_inner).recv();
                let Ok(Work { seq, call }) = next else {
                    return;
                };
                let result = handler.handle_call(call);
                {
                    let mut out = output.lock().unwrap_or_else(PoisonError::into_inner);
                    let written = match result {
                        Ok(reply) => write_result(
                            &mut **out,
                            ("call", "call_result"),
                            seq,
                            ("success", 0),
                            &reply,
                        ),
                        Err(thrift::Error::User(e)) => match e.downcast_ref::<Rejected>() {
                            Some(rej) => write_result(
                                &mut **out,
                                ("call", "call_result"),
                                seq,
                                ("rej", 1),
                                rej,
                            ),
                            None => write_exception(
                                &mut **out,
                                "call",
                                seq,
                                &ApplicationError::new(
                                    ApplicationErrorKind::Unknown,
                                    e.to_string(),
                                ),
                            ),
                        },
                        Err(thrift::Error::Application(e)) => {
                            write_exception(&mut **out, "call", seq, &e)
                        }
                        Err(e) => write_exception(
                            &mut **out,
                            "call",
                            seq,
                            &ApplicationError::new(ApplicationErrorKind::Unknown, e.to_string()),
                        ),
                    };
                    if written.is_err() {
                        // The connection is gone; the reading thread sees it too.
                        return;
                    }
                }
                idle.fetch_add(1, Ordering::AcqRel);
            }
        })
}

/// Reads `call_args { 1: Call req }` and the message end.
fn read_call_args(inp: &mut dyn TInputProtocol) -> thrift::Result<Call> {
    inp.read_struct_begin()?;
    let mut call = None;
    loop {
        let field = inp.read_field_begin()?;
        if field.field_type == TType::Stop {
            break;
        }
        match (field.id, field.field_type) {
            (Some(1), TType::Struct) => call = Some(Call::read_from_in_protocol(inp)?),
            _ => inp.skip(field.field_type)?,
        }
        inp.read_field_end()?;
    }
    inp.read_struct_end()?;
    inp.read_message_end()?;
    call.ok_or_else(|| {
        thrift::Error::Protocol(thrift::ProtocolError::new(
            thrift::ProtocolErrorKind::InvalidData,
            "call without its `req` argument",
        ))
    })
}

/// Reads `ping_args { 1: i64 sent_ns }` and the message end.
fn read_ping_args(inp: &mut dyn TInputProtocol) -> thrift::Result<i64> {
    inp.read_struct_begin()?;
    let mut sent = 0;
    loop {
        let field = inp.read_field_begin()?;
        if field.field_type == TType::Stop {
            break;
        }
        match (field.id, field.field_type) {
            (Some(1), TType::I64) => sent = inp.read_i64()?,
            _ => inp.skip(field.field_type)?,
        }
        inp.read_field_end()?;
    }
    inp.read_struct_end()?;
    inp.read_message_end()?;
    Ok(sent)
}

/// Writes and flushes `<result> { id: value }` (`0: success` or a declared exception), as
/// the generated processor does.
fn write_result<T: TSerializable>(
    out: &mut dyn TOutputProtocol,
    (method, result): (&str, &str),
    seq: i32,
    (name, id): (&str, i16),
    value: &T,
) -> thrift::Result<()> {
    out.write_message_begin(&TMessageIdentifier::new(method, TMessageType::Reply, seq))?;
    out.write_struct_begin(&TStructIdentifier::new(result))?;
    out.write_field_begin(&TFieldIdentifier::new(name, TType::Struct, id))?;
    value.write_to_out_protocol(out)?;
    out.write_field_end()?;
    out.write_field_stop()?;
    out.write_struct_end()?;
    out.write_message_end()?;
    out.flush()
}

/// Writes and flushes an application exception answering `method` call `seq`.
fn write_exception(
    out: &mut dyn TOutputProtocol,
    method: &str,
    seq: i32,
    e: &ApplicationError,
) -> thrift::Result<()> {
    out.write_message_begin(&TMessageIdentifier::new(
        method,
        TMessageType::Exception,
        seq,
    ))?;
    thrift::Error::write_application_error_to_out_protocol(e, out)?;
    out.write_message_end()?;
    out.flush()
}
