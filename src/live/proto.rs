//! Thrift types, client and processor for `thrift/lbsim.thrift`, written from the IDL.
//!
//! Each struct is declared once, with its field ids, by `thrift_struct!`; one generic
//! reader and writer (`read_struct`, `Field`) do the encoding for all of them, one
//! client function (`invoke`) sends every method and one (`answer`) answers it. The
//! bytes are those the Thrift 0.17 compiler's code wrote (the test at the bottom pins
//! them in both protocols), so the Python peers and the real proxies see the same
//! protocol. A change to `thrift/lbsim.thrift` is made here too: a field is one line.

use std::fmt;

use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TMessageIdentifier, TMessageType, TOutputProtocol,
    TSerializable, TStructIdentifier, TType, field_id, verify_expected_message_type,
    verify_expected_sequence_number, verify_expected_service_call, verify_required_field_exists,
};
use thrift::server::TProcessor;
use thrift::{ApplicationError, ApplicationErrorKind, TThriftClient};

/// A value that can stand in a struct field: its wire type, how it is read and written.
trait Wire: Sized {
    /// The field type written in the field header.
    const TYPE: TType;
    fn read(i: &mut dyn TInputProtocol) -> thrift::Result<Self>;
    fn write(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()>;
}

impl Wire for i32 {
    const TYPE: TType = TType::I32;
    fn read(i: &mut dyn TInputProtocol) -> thrift::Result<i32> {
        i.read_i32()
    }
    fn write(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_i32(*self)
    }
}

impl Wire for i64 {
    const TYPE: TType = TType::I64;
    fn read(i: &mut dyn TInputProtocol) -> thrift::Result<i64> {
        i.read_i64()
    }
    fn write(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_i64(*self)
    }
}

impl Wire for bool {
    const TYPE: TType = TType::Bool;
    fn read(i: &mut dyn TInputProtocol) -> thrift::Result<bool> {
        i.read_bool()
    }
    fn write(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_bool(*self)
    }
}

impl Wire for String {
    const TYPE: TType = TType::String;
    fn read(i: &mut dyn TInputProtocol) -> thrift::Result<String> {
        i.read_string()
    }
    fn write(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_string(self)
    }
}

/// `binary`: a string on the wire.
impl Wire for Vec<u8> {
    const TYPE: TType = TType::String;
    fn read(i: &mut dyn TInputProtocol) -> thrift::Result<Vec<u8>> {
        i.read_bytes()
    }
    fn write(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
        o.write_bytes(self)
    }
}

/// A struct field: a `required` one holds a [`Wire`] value, an `optional` one an `Option`
/// of it, written only when set.
trait Field: Sized {
    /// The value on the wire.
    type Value: Wire;
    /// The field from what was read (`name`, `Struct.field`, for the error of a missing
    /// required field).
    fn from_read(read: Option<Self::Value>, name: &str) -> thrift::Result<Self>;
    /// Writes the field with its header.
    fn write_field(&self, o: &mut dyn TOutputProtocol, name: &str, id: i16) -> thrift::Result<()>;
}

impl<T: Wire> Field for T {
    type Value = T;
    fn from_read(read: Option<T>, name: &str) -> thrift::Result<T> {
        verify_required_field_exists(name, &read)?;
        Ok(read.expect("checked just above"))
    }
    fn write_field(&self, o: &mut dyn TOutputProtocol, name: &str, id: i16) -> thrift::Result<()> {
        o.write_field_begin(&TFieldIdentifier::new(name, T::TYPE, id))?;
        self.write(o)?;
        o.write_field_end()
    }
}

impl<T: Wire> Field for Option<T> {
    type Value = T;
    fn from_read(read: Option<T>, _: &str) -> thrift::Result<Option<T>> {
        Ok(read)
    }
    fn write_field(&self, o: &mut dyn TOutputProtocol, name: &str, id: i16) -> thrift::Result<()> {
        self.as_ref().map_or(Ok(()), |v| v.write_field(o, name, id))
    }
}

/// Reads a struct, handing each field's id to `field`, which reads the value and returns
/// `true`, or returns `false` for an id it does not know (the value is then skipped).
fn read_struct(
    i: &mut dyn TInputProtocol,
    mut field: impl FnMut(&mut dyn TInputProtocol, i16) -> thrift::Result<bool>,
) -> thrift::Result<()> {
    i.read_struct_begin()?;
    loop {
        let ident = i.read_field_begin()?;
        if ident.field_type == TType::Stop {
            break;
        }
        if !field(i, field_id(&ident)?)? {
            i.skip(ident.field_type)?;
        }
        i.read_field_end()?;
    }
    i.read_struct_end()
}

/// Reads one field's value into `slot`.
fn put<T: Wire>(slot: &mut Option<T>, i: &mut dyn TInputProtocol) -> thrift::Result<bool> {
    *slot = Some(T::read(i)?);
    Ok(true)
}

/// Writes a struct named `name` whose fields `fields` writes.
fn write_struct(
    o: &mut dyn TOutputProtocol,
    name: &str,
    fields: impl FnOnce(&mut dyn TOutputProtocol) -> thrift::Result<()>,
) -> thrift::Result<()> {
    o.write_struct_begin(&TStructIdentifier::new(name))?;
    fields(o)?;
    o.write_field_stop()?;
    o.write_struct_end()
}

/// Declares a Thrift struct: the Rust struct, a constructor taking every field, its
/// encoding, and [`Wire`] so that it can stand in another struct's field. A field is
/// `id => name: Type` (`Option<Type>` for an optional field).
macro_rules! thrift_struct {
    ($(#[doc = $doc:literal])* $vis:vis struct $name:ident ($wire:literal) {
        $($(#[doc = $fdoc:literal])* $id:literal => $field:ident: $ty:ty,)*
    }) => {
        $(#[doc = $doc])*
        #[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
        $vis struct $name {
            $($(#[doc = $fdoc])* pub $field: $ty,)*
        }

        impl $name {
            /// A value with every field given (an optional one as a value or an `Option`).
            #[allow(clippy::too_many_arguments, dead_code)]
            pub fn new($($field: impl Into<$ty>),*) -> $name {
                $name { $($field: $field.into()),* }
            }
        }

        impl TSerializable for $name {
            fn read_from_in_protocol(i: &mut dyn TInputProtocol) -> thrift::Result<$name> {
                $(let mut $field = None;)*
                read_struct(i, |i, id| match id {
                    $($id => put(&mut $field, i),)*
                    _ => Ok(false),
                })?;
                Ok($name {
                    $($field: Field::from_read(
                        $field,
                        concat!(stringify!($name), ".", stringify!($field)),
                    )?,)*
                })
            }

            fn write_to_out_protocol(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
                write_struct(o, $wire, |o| {
                    $(self.$field.write_field(o, stringify!($field), $id)?;)*
                    Ok(())
                })
            }
        }

        impl Wire for $name {
            const TYPE: TType = TType::Struct;
            fn read(i: &mut dyn TInputProtocol) -> thrift::Result<$name> {
                $name::read_from_in_protocol(i)
            }
            fn write(&self, o: &mut dyn TOutputProtocol) -> thrift::Result<()> {
                self.write_to_out_protocol(o)
            }
        }
    };
}

thrift_struct! {
    /// One request sent by the load balancer.
    pub struct Call("Call") {
        /// Request id, echoed back unchanged.
        1 => id: i64,
        /// Service demand in nanoseconds of work at speed 1.
        2 => work_ns: i64,
        /// Optional affinity key (consistent hashing and the like).
        3 => key: Option<i64>,
        /// Optional opaque payload, to make requests bigger on the wire.
        4 => payload: Option<Vec<u8>>,
    }
}

thrift_struct! {
    /// What the server saw while handling a call.
    pub struct Reply("Reply") {
        /// Request id copied from the call.
        1 => id: i64,
        /// Id of the server that served the call.
        2 => server_id: String,
        /// Time spent waiting in the FIFO queue before service started.
        3 => queued_ns: i64,
        /// Time spent in service (the emulated work).
        4 => served_ns: i64,
        /// Load report carried on the reply (ORCA-style): requests at the server
        /// (waiting + in service) as the call ends.
        5 => in_flight: Option<i32>,
        /// Of those, waiting.
        6 => queued: Option<i32>,
        /// The server's estimate of the response time of a call arriving now.
        7 => latency_ns: Option<i64>,
        /// How much later than its service's end the worker woke to answer (emulated
        /// backends: their service is a sleep, which a busy machine ends late).
        8 => woke_late_ns: Option<i64>,
    }
}

thrift_struct! {
    /// Raised when the call arrives to a full waiting queue, or is shed by admission
    /// control.
    pub struct Rejected("Rejected") {
        /// Id of the server that refused the call.
        1 => server_id: String,
        /// Number of requests waiting when the call was turned away.
        2 => queue_len: i32,
        /// Set when admission control shed the call after it waited (queue timeout,
        /// CoDel), rather than a full queue turning it away.
        3 => shed: Option<bool>,
    }
}

impl std::error::Error for Rejected {}

impl From<Rejected> for thrift::Error {
    fn from(e: Rejected) -> Self {
        thrift::Error::User(Box::new(e))
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "remote service threw Rejected")
    }
}

thrift_struct! {
    /// The answer to a ping.
    pub struct Pong("Pong") {
        /// Id of the server.
        1 => server_id: String,
        /// `sent_ns` copied from the ping.
        2 => sent_ns: i64,
    }
}

thrift_struct! {
    /// A server's answer to a probe: its load as the probe arrived, for balancers that
    /// probe (prequal).
    pub struct Load("Load") {
        /// Id of the server.
        1 => server_id: String,
        /// `sent_ns` copied from the probe.
        2 => sent_ns: i64,
        /// Requests at the server: waiting + in service.
        3 => in_flight: i32,
        /// Of those, waiting for a worker.
        4 => queued: i32,
        /// Recent mean service time (an EWMA over the calls started).
        5 => service_ns: i64,
        /// Estimated response time of a call arriving now.
        6 => latency_ns: i64,
        /// Time the server's probe-cost jobs (probes sent with `cost_ns`) have waited for
        /// a worker, all of them that ended so far: set by servers that run them.
        7 => cost_queued_ns: Option<i64>,
        /// Time those jobs held a worker, all of them that ended so far.
        8 => cost_served_ns: Option<i64>,
    }
}

thrift_struct! {
    /// The arguments of `call`.
    struct CallArgs("call_args") {
        1 => req: Call,
    }
}

thrift_struct! {
    /// The arguments of `ping`: the sender's clock.
    struct SentArgs("sent_args") {
        1 => sent_ns: i64,
    }
}

thrift_struct! {
    /// The arguments of `probe`: the sender's clock and, optionally, the work the probe
    /// costs the server (nanoseconds at speed 1: a job holding a worker, queued behind
    /// calls when every worker is busy, started after the answer's load is taken).
    struct ProbeArgs("probe_args") {
        1 => sent_ns: i64,
        2 => cost_ns: Option<i64>,
    }
}

/// A method's result struct: its value in field 0, or the `Rejected` that `call` declares
/// in field 1 (`ping` and `probe` declare none, so their answers never set it).
struct MethodResult<T> {
    value: Option<T>,
    rej: Option<Rejected>,
}

impl<T: Wire> MethodResult<T> {
    fn read(i: &mut dyn TInputProtocol) -> thrift::Result<MethodResult<T>> {
        let (mut value, mut rej) = (None, None);
        read_struct(i, |i, id| match id {
            0 => put(&mut value, i),
            1 => put(&mut rej, i),
            _ => Ok(false),
        })?;
        Ok(MethodResult { value, rej })
    }

    fn write(&self, o: &mut dyn TOutputProtocol, name: &str) -> thrift::Result<()> {
        write_struct(o, name, |o| {
            self.value.write_field(o, "result_value", 0)?;
            self.rej.write_field(o, "rej", 1)
        })
    }

    /// The value, the declared exception, or an error naming the method (`Call`).
    fn ok_or(self, method: &str) -> thrift::Result<T> {
        match (self.rej, self.value) {
            (Some(rej), _) => Err(rej.into()),
            (None, Some(value)) => Ok(value),
            (None, None) => Err(thrift::Error::Application(ApplicationError::new(
                ApplicationErrorKind::MissingResult,
                format!("no result received for Backend{method}"),
            ))),
        }
    }
}

/// The names of a method: on the wire (`ping`) and in the result struct's name and the
/// missing-result message (`Ping`).
struct Method {
    wire: &'static str,
    title: &'static str,
}

const CALL: Method = Method {
    wire: "call",
    title: "Call",
};
const PING: Method = Method {
    wire: "ping",
    title: "Ping",
};
const PROBE: Method = Method {
    wire: "probe",
    title: "Probe",
};

/// The client side of the `Backend` service.
pub trait TBackendSyncClient {
    /// Sends a call and waits for its reply.
    fn call(&mut self, req: Call) -> thrift::Result<Reply>;
    /// Sends a ping carrying the sender's clock.
    fn ping(&mut self, sent_ns: i64) -> thrift::Result<Pong>;
    /// Asks the server for its load; `cost_ns`: work the probe costs it.
    fn probe(&mut self, sent_ns: i64, cost_ns: Option<i64>) -> thrift::Result<Load>;
}

/// A client over an input and an output protocol.
pub struct BackendSyncClient<IP: TInputProtocol, OP: TOutputProtocol> {
    i_prot: IP,
    o_prot: OP,
    sequence_number: i32,
}

impl<IP: TInputProtocol, OP: TOutputProtocol> BackendSyncClient<IP, OP> {
    /// A client reading answers from `input_protocol` and writing to `output_protocol`.
    pub fn new(input_protocol: IP, output_protocol: OP) -> BackendSyncClient<IP, OP> {
        BackendSyncClient {
            i_prot: input_protocol,
            o_prot: output_protocol,
            sequence_number: 0,
        }
    }
}

impl<IP: TInputProtocol, OP: TOutputProtocol> TThriftClient for BackendSyncClient<IP, OP> {
    fn i_prot_mut(&mut self) -> &mut dyn TInputProtocol {
        &mut self.i_prot
    }
    fn o_prot_mut(&mut self) -> &mut dyn TOutputProtocol {
        &mut self.o_prot
    }
    fn sequence_number(&self) -> i32 {
        self.sequence_number
    }
    fn increment_sequence_number(&mut self) -> i32 {
        self.sequence_number += 1;
        self.sequence_number
    }
}

/// Sends `method` with `args` and reads its answer.
fn invoke<T: Wire>(
    c: &mut dyn TThriftClient,
    method: &Method,
    args: &impl TSerializable,
) -> thrift::Result<T> {
    c.increment_sequence_number();
    let ident = TMessageIdentifier::new(method.wire, TMessageType::Call, c.sequence_number());
    c.o_prot_mut().write_message_begin(&ident)?;
    args.write_to_out_protocol(c.o_prot_mut())?;
    c.o_prot_mut().write_message_end()?;
    c.o_prot_mut().flush()?;
    let ident = c.i_prot_mut().read_message_begin()?;
    verify_expected_sequence_number(c.sequence_number(), ident.sequence_number)?;
    verify_expected_service_call(method.wire, &ident.name)?;
    if ident.message_type == TMessageType::Exception {
        let remote = thrift::Error::read_application_error_from_in_protocol(c.i_prot_mut())?;
        c.i_prot_mut().read_message_end()?;
        return Err(thrift::Error::Application(remote));
    }
    verify_expected_message_type(TMessageType::Reply, ident.message_type)?;
    let result = MethodResult::<T>::read(c.i_prot_mut())?;
    c.i_prot_mut().read_message_end()?;
    result.ok_or(method.title)
}

impl<IP: TInputProtocol, OP: TOutputProtocol> TBackendSyncClient for BackendSyncClient<IP, OP> {
    fn call(&mut self, req: Call) -> thrift::Result<Reply> {
        invoke(self, &CALL, &CallArgs { req })
    }
    fn ping(&mut self, sent_ns: i64) -> thrift::Result<Pong> {
        invoke(self, &PING, &SentArgs { sent_ns })
    }
    fn probe(&mut self, sent_ns: i64, cost_ns: Option<i64>) -> thrift::Result<Load> {
        invoke(self, &PROBE, &ProbeArgs { sent_ns, cost_ns })
    }
}

/// The server side of the `Backend` service.
pub trait BackendSyncHandler {
    /// Serves a call, or refuses it with [`Rejected`].
    fn handle_call(&self, req: Call) -> thrift::Result<Reply>;
    /// Answers a ping.
    fn handle_ping(&self, sent_ns: i64) -> thrift::Result<Pong>;
    /// Answers a probe with the server's load, and runs its cost (`cost_ns` of work).
    fn handle_probe(&self, sent_ns: i64, cost_ns: Option<i64>) -> thrift::Result<Load>;
}

/// A [`TProcessor`] that hands each message to a [`BackendSyncHandler`].
pub struct BackendSyncProcessor<H: BackendSyncHandler> {
    handler: H,
}

impl<H: BackendSyncHandler> BackendSyncProcessor<H> {
    /// A processor over `handler`.
    pub fn new(handler: H) -> BackendSyncProcessor<H> {
        BackendSyncProcessor { handler }
    }
}

/// Writes the answer to `method`'s message `seq`: its value or, where the method declares
/// it (`call`), a [`Rejected`] in a reply; any other error as an application exception.
fn answer<T: Wire>(
    o: &mut dyn TOutputProtocol,
    method: &Method,
    seq: i32,
    result: thrift::Result<T>,
) -> thrift::Result<()> {
    let declares_rejected = method.wire == CALL.wire;
    let outcome = match result {
        Ok(value) => Ok(MethodResult {
            value: Some(value),
            rej: None,
        }),
        Err(thrift::Error::User(e)) if declares_rejected && e.is::<Rejected>() => {
            let rej = *e.downcast::<Rejected>().expect("checked by `is`");
            Ok(MethodResult {
                value: None,
                rej: Some(rej),
            })
        }
        Err(thrift::Error::Application(e)) => Err(e),
        Err(e) => Err(ApplicationError::new(
            ApplicationErrorKind::Unknown,
            e.to_string(),
        )),
    };
    let kind = match outcome {
        Ok(_) => TMessageType::Reply,
        Err(_) => TMessageType::Exception,
    };
    o.write_message_begin(&TMessageIdentifier::new(method.wire, kind, seq))?;
    match outcome {
        Ok(result) => result.write(o, &format!("Backend{}Result", method.title))?,
        Err(e) => thrift::Error::write_application_error_to_out_protocol(&e, o)?,
    }
    o.write_message_end()?;
    o.flush()
}

impl<H: BackendSyncHandler> TProcessor for BackendSyncProcessor<H> {
    fn process(
        &self,
        i: &mut dyn TInputProtocol,
        o: &mut dyn TOutputProtocol,
    ) -> thrift::Result<()> {
        let ident = i.read_message_begin()?;
        let seq = ident.sequence_number;
        let h = &self.handler;
        let res = match &*ident.name {
            "call" => CallArgs::read_from_in_protocol(i)
                .and_then(|a| answer(o, &CALL, seq, h.handle_call(a.req))),
            "ping" => SentArgs::read_from_in_protocol(i)
                .and_then(|a| answer(o, &PING, seq, h.handle_ping(a.sent_ns))),
            "probe" => ProbeArgs::read_from_in_protocol(i)
                .and_then(|a| answer(o, &PROBE, seq, h.handle_probe(a.sent_ns, a.cost_ns))),
            method => Err(thrift::Error::Application(ApplicationError::new(
                ApplicationErrorKind::UnknownMethod,
                format!("unknown method {method}"),
            ))),
        };
        thrift::server::handle_process_result(&ident, res, o)
    }
}

#[cfg(test)]
mod tests {
    //! The bytes on the wire, pinned: every message of the service in both protocols, as
    //! the Thrift 0.17 compiler's code wrote them (captured before this module replaced
    //! it), so that the Python peers and real proxies see the same protocol.
    use std::cell::RefCell;
    use std::io::{self, Read, Write};
    use std::rc::Rc;

    use thrift::protocol::{
        TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol,
    };

    use super::*;

    /// A byte queue: what is written is read next; `log` keeps everything written.
    #[derive(Clone, Default)]
    struct Pipe {
        data: Rc<RefCell<Vec<u8>>>,
        log: Rc<RefCell<Vec<u8>>>,
    }

    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.data.borrow_mut().extend_from_slice(b);
            self.log.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Read for Pipe {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let mut v = self.data.borrow_mut();
            let n = out.len().min(v.len());
            out[..n].copy_from_slice(&v[..n]);
            v.drain(..n);
            Ok(n)
        }
    }

    /// Answers by request id: a reply with load fields, a rejection, an application
    /// error, a user error.
    struct Handler;

    impl BackendSyncHandler for Handler {
        fn handle_call(&self, req: Call) -> thrift::Result<Reply> {
            match req.id {
                1 => Ok(Reply::new(
                    1,
                    "s-0",
                    5,
                    6,
                    Some(2),
                    Some(1),
                    Some(700),
                    None,
                )),
                2 => Ok(Reply::new(2, "s-0", 5, 6, None, None, None, None)),
                3 => Err(Rejected::new("s-1", 9, None).into()),
                4 => Err(thrift::Error::Application(ApplicationError::new(
                    ApplicationErrorKind::InternalError,
                    "boom",
                ))),
                _ => Err(thrift::Error::User("odd".into())),
            }
        }
        fn handle_ping(&self, sent_ns: i64) -> thrift::Result<Pong> {
            Ok(Pong::new("s-0", sent_ns))
        }
        fn handle_probe(&self, sent_ns: i64, cost_ns: Option<i64>) -> thrift::Result<Load> {
            if sent_ns < 0 {
                return Err(thrift::Error::User("late".into()));
            }
            // A probe with a cost reports what cost jobs took (new fields, ids 2, 7, 8).
            let costs = cost_ns.map(|c| (c, 2 * c));
            Ok(Load::new(
                "s-0",
                sent_ns,
                3,
                1,
                1000,
                2000,
                costs.map(|c| c.0),
                costs.map(|c| c.1),
            ))
        }
    }

    /// Serves the request the client wrote when the client reads its answer.
    struct Server {
        request: Pipe,
        answer: Pipe,
        compact: bool,
    }

    impl Read for Server {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.answer.data.borrow().is_empty() && !self.request.data.borrow().is_empty() {
                let processor = BackendSyncProcessor::new(Handler);
                let (r, a) = (self.request.clone(), self.answer.clone());
                let _ = if self.compact {
                    processor.process(
                        &mut TCompactInputProtocol::new(r),
                        &mut TCompactOutputProtocol::new(a),
                    )
                } else {
                    processor.process(
                        &mut TBinaryInputProtocol::new(r, true),
                        &mut TBinaryOutputProtocol::new(a, true),
                    )
                };
            }
            self.answer.read(out)
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// What a client asks, and what it made of the answer.
    type Exchange = dyn Fn(&mut dyn TBackendSyncClient) -> String;

    /// Every exchange of the service: request bytes, answer bytes, the client's result.
    fn transcript(compact: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let calls: Vec<(&str, Box<Exchange>)> = vec![
            (
                "call 1",
                Box::new(|c| {
                    format!(
                        "{:?}",
                        c.call(Call::new(1, 40, Some(7), Some(vec![1, 2, 3])))
                    )
                }),
            ),
            (
                "call 2",
                Box::new(|c| format!("{:?}", c.call(Call::new(2, 40, None, None)))),
            ),
            (
                "call 3",
                Box::new(|c| {
                    format!(
                        "{:?}",
                        c.call(Call::new(3, 40, None, None))
                            .map_err(|e| e.to_string())
                    )
                }),
            ),
            (
                "call 4",
                Box::new(|c| {
                    format!(
                        "{:?}",
                        c.call(Call::new(4, 40, None, None))
                            .map_err(|e| e.to_string())
                    )
                }),
            ),
            (
                "call 5",
                Box::new(|c| {
                    format!(
                        "{:?}",
                        c.call(Call::new(5, 40, None, None))
                            .map_err(|e| e.to_string())
                    )
                }),
            ),
            ("ping", Box::new(|c| format!("{:?}", c.ping(123_456_789)))),
            ("probe", Box::new(|c| format!("{:?}", c.probe(99, None)))),
            (
                "probe late",
                Box::new(|c| format!("{:?}", c.probe(-1, None).map_err(|e| e.to_string()))),
            ),
            (
                "probe cost",
                Box::new(|c| format!("{:?}", c.probe(99, Some(5_000)))),
            ),
        ];
        for (name, f) in calls {
            let (request, answer) = (Pipe::default(), Pipe::default());
            let server = Server {
                request: request.clone(),
                answer: answer.clone(),
                compact,
            };
            let result = if compact {
                let mut c = BackendSyncClient::new(
                    TCompactInputProtocol::new(server),
                    TCompactOutputProtocol::new(request.clone()),
                );
                f(&mut c)
            } else {
                let mut c = BackendSyncClient::new(
                    TBinaryInputProtocol::new(server, true),
                    TBinaryOutputProtocol::new(request.clone(), true),
                );
                f(&mut c)
            };
            lines.push(format!(
                "{name}: {} -> {} = {result}",
                hex(&request.log.borrow()),
                hex(&answer.log.borrow())
            ));
        }
        lines
    }

    #[test]
    fn the_bytes_are_those_of_the_generated_code() {
        let got: Vec<String> = [false, true]
            .into_iter()
            .flat_map(|compact| {
                transcript(compact)
                    .into_iter()
                    .map(move |l| format!("{compact} {l}"))
            })
            .collect();
        assert_eq!(got.len(), GENERATED.len());
        for (got, want) in got.iter().zip(GENERATED) {
            assert_eq!(got, want);
        }
    }

    /// The transcripts of the compiler-generated code (`binary` then `compact`). The
    /// `probe cost` lines came later, with `probe`'s `cost_ns` and `Load`'s `cost_*`
    /// fields: written from the protocols' specifications and checked by hand (field
    /// headers, zigzag varints), the other lines' bytes unchanged.
    const GENERATED: &[&str] = &[
        r#"false call 1: 800100010000000463616c6c000000010c00010a000100000000000000010a000200000000000000280a000300000000000000070b0004000000030102030000 -> 800100020000000463616c6c000000010c00000a000100000000000000010b000200000003732d300a000300000000000000050a0004000000000000000608000500000002080006000000010a000700000000000002bc0000 = Ok(Reply { id: 1, server_id: "s-0", queued_ns: 5, served_ns: 6, in_flight: Some(2), queued: Some(1), latency_ns: Some(700), woke_late_ns: None })"#,
        r#"false call 2: 800100010000000463616c6c000000010c00010a000100000000000000020a000200000000000000280000 -> 800100020000000463616c6c000000010c00000a000100000000000000020b000200000003732d300a000300000000000000050a000400000000000000060000 = Ok(Reply { id: 2, server_id: "s-0", queued_ns: 5, served_ns: 6, in_flight: None, queued: None, latency_ns: None, woke_late_ns: None })"#,
        r#"false call 3: 800100010000000463616c6c000000010c00010a000100000000000000030a000200000000000000280000 -> 800100020000000463616c6c000000010c00010b000100000003732d31080002000000090000 = Err("remote service threw Rejected")"#,
        r#"false call 4: 800100010000000463616c6c000000010c00010a000100000000000000040a000200000000000000280000 -> 800100030000000463616c6c000000010b000100000004626f6f6d0800020000000600 = Err("remote service threw exception")"#,
        r#"false call 5: 800100010000000463616c6c000000010c00010a000100000000000000050a000200000000000000280000 -> 800100030000000463616c6c000000010b0001000000036f64640800020000000000 = Err("service error")"#,
        r#"false ping: 800100010000000470696e67000000010a000100000000075bcd1500 -> 800100020000000470696e67000000010c00000b000100000003732d300a000200000000075bcd150000 = Ok(Pong { server_id: "s-0", sent_ns: 123456789 })"#,
        r#"false probe: 800100010000000570726f6265000000010a0001000000000000006300 -> 800100020000000570726f6265000000010c00000b000100000003732d300a0002000000000000006308000300000003080004000000010a000500000000000003e80a000600000000000007d00000 = Ok(Load { server_id: "s-0", sent_ns: 99, in_flight: 3, queued: 1, service_ns: 1000, latency_ns: 2000, cost_queued_ns: None, cost_served_ns: None })"#,
        r#"false probe late: 800100010000000570726f6265000000010a0001ffffffffffffffff00 -> 800100030000000570726f6265000000010b0001000000046c6174650800020000000000 = Err("service error")"#,
        r#"false probe cost: 800100010000000570726f6265000000010a000100000000000000630a0002000000000000138800 -> 800100020000000570726f6265000000010c00000b000100000003732d300a0002000000000000006308000300000003080004000000010a000500000000000003e80a000600000000000007d00a000700000000000013880a000800000000000027100000 = Ok(Load { server_id: "s-0", sent_ns: 99, in_flight: 3, queued: 1, service_ns: 1000, latency_ns: 2000, cost_queued_ns: Some(5000), cost_served_ns: Some(10000) })"#,
        r#"true call 1: 8221010463616c6c1c16021650160e18030102030000 -> 8241010463616c6c0c0016021803732d30160a160c1504150216f80a0000 = Ok(Reply { id: 1, server_id: "s-0", queued_ns: 5, served_ns: 6, in_flight: Some(2), queued: Some(1), latency_ns: Some(700), woke_late_ns: None })"#,
        r#"true call 2: 8221010463616c6c1c160416500000 -> 8241010463616c6c0c0016041803732d30160a160c0000 = Ok(Reply { id: 2, server_id: "s-0", queued_ns: 5, served_ns: 6, in_flight: None, queued: None, latency_ns: None, woke_late_ns: None })"#,
        r#"true call 3: 8221010463616c6c1c160616500000 -> 8241010463616c6c1c1803732d3115120000 = Err("remote service threw Rejected")"#,
        r#"true call 4: 8221010463616c6c1c160816500000 -> 8261010463616c6c1804626f6f6d150c00 = Err("remote service threw exception")"#,
        r#"true call 5: 8221010463616c6c1c160a16500000 -> 8261010463616c6c18036f6464150000 = Err("service error")"#,
        r#"true ping: 8221010470696e6716aab4de7500 -> 8241010470696e670c001803732d3016aab4de750000 = Ok(Pong { server_id: "s-0", sent_ns: 123456789 })"#,
        r#"true probe: 8221010570726f626516c60100 -> 8241010570726f62650c001803732d3016c6011506150216d00f16a01f0000 = Ok(Load { server_id: "s-0", sent_ns: 99, in_flight: 3, queued: 1, service_ns: 1000, latency_ns: 2000, cost_queued_ns: None, cost_served_ns: None })"#,
        r#"true probe late: 8221010570726f6265160100 -> 8261010570726f626518046c617465150000 = Err("service error")"#,
        r#"true probe cost: 8221010570726f626516c60116904e00 -> 8241010570726f62650c001803732d3016c6011506150216d00f16a01f16904e16a09c010000 = Ok(Load { server_id: "s-0", sent_ns: 99, in_flight: 3, queued: 1, service_ns: 1000, latency_ns: 2000, cost_queued_ns: Some(5000), cost_served_ns: Some(10000) })"#,
    ];
}
