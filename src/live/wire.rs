//! The `call` method of the `Backend` service split into its two halves, so that one
//! thread can write a call and another wait for its answer.
//!
//! The generated client (`proto::BackendSyncClient`) writes a call and reads its answer in
//! one method, which forces the thread that decides *when* to send to also wait for the
//! reply. The driver writes from its dispatcher thread at the scheduled time and reads on
//! a per-connection thread; these two functions produce and consume exactly the bytes the
//! generated client does (`call_args { 1: Call req }`, `call_result { 0: Reply success,
//! 1: Rejected rej }`).

use thrift::protocol::{
    TFieldIdentifier, TInputProtocol, TMessageIdentifier, TMessageType, TOutputProtocol,
    TSerializable, TStructIdentifier, TType,
};
use thrift::{ProtocolError, ProtocolErrorKind};

use super::client::CallOutcome;
use super::proto::{Call, Rejected, Reply};

/// Writes and flushes call `seq`.
pub(crate) fn write_call(
    out: &mut dyn TOutputProtocol,
    seq: i32,
    call: &Call,
) -> thrift::Result<()> {
    out.write_message_begin(&TMessageIdentifier::new("call", TMessageType::Call, seq))?;
    out.write_struct_begin(&TStructIdentifier::new("call_args"))?;
    out.write_field_begin(&TFieldIdentifier::new("req", TType::Struct, 1))?;
    call.write_to_out_protocol(out)?;
    out.write_field_end()?;
    out.write_field_stop()?;
    out.write_struct_end()?;
    out.write_message_end()?;
    out.flush()
}

fn protocol_error(message: String) -> thrift::Error {
    thrift::Error::Protocol(ProtocolError::new(ProtocolErrorKind::InvalidData, message))
}

/// Reads the answer to call `seq` (with id `id`).
pub(crate) fn read_call_answer(
    inp: &mut dyn TInputProtocol,
    seq: i32,
    id: i64,
) -> thrift::Result<CallOutcome> {
    let ident = inp.read_message_begin()?;
    if ident.sequence_number != seq || ident.name != "call" {
        return Err(protocol_error(format!(
            "answer {} #{} to call #{seq}",
            ident.name, ident.sequence_number
        )));
    }
    if ident.message_type == TMessageType::Exception {
        let e = thrift::Error::read_application_error_from_in_protocol(inp)?;
        inp.read_message_end()?;
        return Err(thrift::Error::Application(e));
    }
    match read_call_result(inp)? {
        Some((Some(reply_id), _)) if reply_id != id => Err(protocol_error(format!(
            "reply for call {reply_id} received for call {id}"
        ))),
        Some((_, outcome)) => Ok(outcome),
        None => Err(protocol_error("call answered with no result".to_string())),
    }
}

/// Reads the result struct of a `call` answer and the message end: the outcome, with the
/// id of the call a `Reply` answers (`None` for a rejection); `None` when the answer holds
/// no result (an error for that call only: the stream stays usable).
pub(crate) fn read_call_result(
    inp: &mut dyn TInputProtocol,
) -> thrift::Result<Option<(Option<i64>, CallOutcome)>> {
    inp.read_struct_begin()?;
    let (mut reply, mut rejected) = (None, None);
    loop {
        let field = inp.read_field_begin()?;
        if field.field_type == TType::Stop {
            break;
        }
        match field.id {
            Some(0) => reply = Some(Reply::read_from_in_protocol(inp)?),
            Some(1) => rejected = Some(Rejected::read_from_in_protocol(inp)?),
            _ => inp.skip(field.field_type)?,
        }
        inp.read_field_end()?;
    }
    inp.read_struct_end()?;
    inp.read_message_end()?;
    match (reply, rejected) {
        (Some(r), _) => Ok(Some((
            Some(r.id),
            CallOutcome::Served {
                load: super::client::ReplyLoad::of_reply(&r),
                server_id: r.server_id,
                queued_ns: u64::try_from(r.queued_ns).unwrap_or(0),
                served_ns: u64::try_from(r.served_ns).unwrap_or(0),
                woke_late_ns: r.woke_late_ns.and_then(|n| u64::try_from(n).ok()),
            },
        ))),
        (None, Some(rej)) => Ok(Some((
            None,
            CallOutcome::Rejected {
                server_id: rej.server_id,
                queue_len: u32::try_from(rej.queue_len).unwrap_or(0),
                shed: rej.shed == Some(true),
            },
        ))),
        (None, None) => Ok(None),
    }
}
