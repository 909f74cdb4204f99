//! The caller's side: sends one request on a new substream and reads the response it
//! gets back.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netcore::PeerId;
use netcore::framing::{FramingError, MessageCodec};
use netcore::negotiate::NegotiateError;
use tokio::io::AsyncWriteExt;
use tracing::debug;

use super::core::{self, response_frame_limit};
use crate::error::{InvalidResponse, RpcError};
use crate::protocol_id::ProtocolId;
use crate::protocols::{OpenError, PeerHandle, Protocols, is_refusal, open_substream};

/// Sends one request to `peer`, whose live connection is `handle`, and waits for its
/// response; see `NetworkSender::rpc`.
pub(crate) async fn outbound(
    protocols: &Protocols,
    peer: PeerId,
    handle: Option<Arc<PeerHandle>>,
    protocol: ProtocolId,
    request: Bytes,
    timeout: Duration,
) -> Result<Bytes, RpcError> {
    // One clock read serves the deadline and the latency.
    let start = tokio::time::Instant::now();
    let result = outbound_inner(protocols, peer, handle, protocol, request, start + timeout).await;
    match (&result, protocols.routes.get(protocol)) {
        (Ok(_), Some(route)) => {
            route
                .metrics
                .rpc_latency
                .observe(start.elapsed().as_secs_f64());
            route.metrics.rpc_outbound_ok.inc();
        }
        (result, _) => {
            let outcome = result.as_ref().map_or_else(RpcError::as_str, |_| "ok");
            protocols
                .metrics
                .rpc
                .outcomes
                .with_label_values(&[protocol.as_str(), "outbound", outcome])
                .inc();
        }
    }
    result
}

async fn outbound_inner(
    protocols: &Protocols,
    peer: PeerId,
    handle: Option<Arc<PeerHandle>>,
    protocol: ProtocolId,
    request: Bytes,
    deadline: tokio::time::Instant,
) -> Result<Bytes, RpcError> {
    let route = protocols
        .routes
        .get(protocol)
        .ok_or(RpcError::UnregisteredProtocol(protocol))?;
    core::check_request(request.len(), route.max_request_size)?;
    let max = route.max_message_size;
    let handle = handle.ok_or(RpcError::NotConnected(peer))?;
    let _permit = Arc::clone(&handle.outbound_rpcs)
        .try_acquire_owned()
        .map_err(|_| RpcError::TooManyRequests)?;
    let request_len = request.len() as u64;
    let exchange = async {
        let supported = handle.metadata.supports(protocol);
        let mut io = open_substream(&handle.control, supported, route)
            .await
            .map_err(|e| match e {
                OpenError::Closed => RpcError::Disconnected,
                OpenError::Refused => RpcError::ProtocolNotSupported,
                OpenError::Negotiation(e) => {
                    debug!(peer = %peer.short_str(), %protocol, error = %e, "RPC negotiation failed");
                    RpcError::InvalidResponse(InvalidResponse::Negotiation)
                }
            })?;
        // No `Framed`: one message each way needs no codec buffers. The request and our
        // FIN go out in one batch: the server knows the request is whole, and the
        // substream closes cleanly once it answers.
        let codec = MessageCodec::new(max);
        codec
            .write_message(&mut io, &request)
            .await
            .map_err(|e| stream_error(&handle, e))?;
        io.shutdown()
            .await
            .map_err(|e| stream_error(&handle, e.into()))?;
        route.metrics.messages_out.inc();
        route.metrics.bytes_out.inc_by(request_len);
        let frame = match MessageCodec::new(response_frame_limit(max))
            .read_message(&mut io)
            .await
        {
            Ok(Some(frame)) => frame,
            Err(e) => return Err(stream_error(&handle, e)),
            Ok(None) if handle.is_closed() => return Err(RpcError::Disconnected),
            Ok(None) => return Err(RpcError::InvalidResponse(InvalidResponse::Missing)),
        };
        route.metrics.bytes_in.inc_by(frame.len() as u64);
        core::decode_response(frame, max).inspect_err(|e| {
            if let RpcError::InvalidResponse(_) = e {
                debug!(peer = %peer.short_str(), %protocol, error = %e, "invalid RPC response");
            }
        })
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Ok(result) => result,
        // Dropping the exchange drops the substream, which resets it: the server stops.
        Err(_) => Err(RpcError::Timeout),
    }
}

/// Maps a substream failure to what the caller should learn from it.
fn stream_error(handle: &PeerHandle, err: FramingError) -> RpcError {
    match err {
        FramingError::TooLarge { len, max } => RpcError::TooLarge { len, max },
        FramingError::Io(e) if is_refusal(&e) => RpcError::ProtocolNotSupported,
        FramingError::Io(_) | FramingError::Truncated(_) if handle.is_closed() => {
            RpcError::Disconnected
        }
        // An optimistic proposal's answer is read with the response.
        FramingError::Io(e) if NegotiateError::from_io(&e).is_some() => {
            debug!(peer = %handle.metadata.peer_id.short_str(), error = %e, "RPC negotiation failed");
            RpcError::InvalidResponse(InvalidResponse::Negotiation)
        }
        other => {
            debug!(peer = %handle.metadata.peer_id.short_str(), error = %other, "RPC substream failed");
            RpcError::InvalidResponse(InvalidResponse::Stream)
        }
    }
}
