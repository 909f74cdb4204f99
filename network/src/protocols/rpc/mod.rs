//! RPC: one substream per request; the caller sends one length-delimited message, the
//! server answers with one `RpcResponse`.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use netcore::framing::{FramingError, MessageCodec};
use netcore::multiplexing::Substream;
use netcore::negotiate::Negotiated;
use proto::Message;
use proto::rpc::rpc_failure::Code;
use proto::rpc::{RpcFailure, RpcResponse, rpc_response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};

use crate::shared::{Route, Shared};

mod answering;
mod deadlines;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

pub(crate) use answering::Reply;
pub(crate) use deadlines::{AnswerDeadlines, later};
pub(crate) use inbound::serve_inbound;
pub(crate) use outbound::outbound;

/// The most bytes the response envelope adds to a payload: `RpcResponse.ok`'s key and
/// its length as a varint (at most 10 bytes). The payload limit is the same both ways,
/// so a response frame may be this much longer than a request frame.
pub(crate) const ENVELOPE_OVERHEAD: usize = 11;

/// The longest explanation a failure carries; the rest of a longer one is cut, so that
/// a failure always fits its frame.
const MAX_FAILURE_MESSAGE: usize = 1024;

/// The largest response frame for a payload limit of `max`.
fn response_frame_limit(max: usize) -> usize {
    max.saturating_add(ENVELOPE_OVERHEAD)
}

/// What the application answered, as the server writes it.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The response payload.
    Data(Bytes),
    /// The application failed the request, with a short explanation.
    Failed(String),
    /// The application's response was over the payload limit.
    TooLarge {
        /// The response's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

fn failure(code: Code, message: &str) -> RpcResponse {
    let mut end = message.len().min(MAX_FAILURE_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    RpcResponse {
        result: Some(rpc_response::Result::Failure(RpcFailure {
            code: code.into(),
            message: message[..end].to_owned(),
            size: 0,
            limit: 0,
        })),
    }
}

/// The failure that tells the caller the response was over the payload limit.
fn too_large(len: usize, max: usize) -> RpcResponse {
    RpcResponse {
        result: Some(rpc_response::Result::Failure(RpcFailure {
            code: Code::TooLarge.into(),
            message: format!("response of {len} bytes is over the limit of {max}"),
            size: len as u64,
            limit: max as u64,
        })),
    }
}

/// An inbound RPC's substream.
type RpcStream = Negotiated<Substream>;

/// Writes `response` as one message, encoded straight into its frame, then closes our
/// side of the substream.
async fn send_response(
    io: &mut RpcStream,
    codec: &MessageCodec,
    response: &RpcResponse,
) -> Result<(), FramingError> {
    codec
        .write_message_with(io, response.encoded_len(), |mut dst| {
            // The slice is exactly the encoded length, so encoding cannot fail.
            let _ = response.encode_into(&mut dst);
        })
        .await?;
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
fn record_inbound(shared: &Shared, route: &Route, label: &'static str) {
    if label == "ok" {
        route.metrics.rpc_inbound_ok.inc();
    } else {
        shared
            .metrics
            .rpc_outcomes
            .with_label_values(&[route.protocol.as_str(), "inbound", label])
            .inc();
    }
}
