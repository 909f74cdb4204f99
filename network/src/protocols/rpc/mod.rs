//! RPC: one substream per request; the caller sends one length-delimited message, the
//! server answers with one `RpcResponse`.
//!
//! `core` holds the wire rules without I/O (limits, the response an answer becomes,
//! frame layout, what a caller makes of a response) and `deadlines` the queue of
//! answers due, fed the time; `outbound`, `inbound` and `answering` are the drivers
//! that move the bytes; the helpers below are the substream I/O they share.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use netcore::framing::{FramingError, LENGTH_FIELD_BYTES, MessageCodec};
use netcore::multiplexing::Substream;
use netcore::negotiate::Negotiated;
use proto::Message;
use proto::rpc::RpcResponse;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use crate::routes::Route;

mod answering;
mod core;
#[cfg(test)]
mod core_tests;
mod deadlines;
mod inbound;
mod outbound;
mod responder;
#[cfg(test)]
mod tests;

pub(crate) use answering::Reply;
pub(crate) use core::Answer;
pub(crate) use deadlines::AnswerDeadlines;
pub(crate) use inbound::serve_inbound;
pub(crate) use outbound::outbound;
pub use responder::RpcResponder;

/// An inbound RPC's substream.
type RpcStream = Negotiated<Substream>;

/// Writes `response` as one message, laid out as the direct path does
/// ([`core::AnswerFrame`]), then closes our side of the substream. `codec` holds the
/// response frame limit.
async fn send_response(
    io: &mut RpcStream,
    codec: &MessageCodec,
    response: RpcResponse,
) -> Result<(), FramingError> {
    let (len, max) = (response.encoded_len(), codec.max_message_size());
    if len > max {
        return Err(FramingError::TooLarge { len, max });
    }
    let frame = core::AnswerFrame::new(response, LENGTH_FIELD_BYTES + len);
    io.write_all(frame.head()).await?;
    io.write_all(frame.body()).await?;
    io.shutdown().await?;
    Ok(())
}

/// Reads and drops what the caller still sends, until its FIN (it came with the
/// request), so the substream closes both ways and is not reset under the answer.
async fn await_fin(io: &mut RpcStream) {
    let mut sink = [0u8; 64];
    while let Ok(1..) = io.read(&mut sink).await {}
}

/// Whether the caller's FIN is in, right behind its request. Reads once without
/// waiting: the waker left behind is a no-op, and the task path reads again (in
/// [`await_fin`]) before it waits for the FIN. A byte the caller sent past its request
/// is dropped, as `await_fin` drops it.
fn remote_finished(io: &mut RpcStream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(Waker::noop());
    matches!(
        Pin::new(io).poll_read(&mut cx, &mut buf),
        Poll::Ready(Ok(()))
    ) && buf.filled().is_empty()
}

/// Counts an inbound RPC's outcome.
fn record_inbound(route: &Route, label: &'static str) {
    route.metrics.rpc_outcome(route.protocol, "inbound", label);
}
