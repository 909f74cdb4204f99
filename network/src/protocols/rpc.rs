//! RPC: one substream per request; the caller sends one length-delimited message, the
//! server answers with one `RpcResponse`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use netcore::PeerId;
use netcore::framing::{FramingError, MessageCodec};
use netcore::multiplexing::Substream;
use netcore::negotiate::{NegotiateError, Negotiated};
use proto::Message;
use proto::rpc::rpc_failure::Code;
use proto::rpc::{RpcFailure, RpcResponse, rpc_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Sleep;
use tracing::debug;

use super::{OpenError, connection_closed, is_refusal, open_substream};
use crate::error::{InvalidResponse, RemoteFailure, RpcError};
use crate::interface::{Event, Queued, RpcResponder};
use crate::peer::before;
use crate::protocol_id::ProtocolId;
use crate::reputation::Misbehaviour;
use crate::shared::{PeerHandle, Route, Shared};

/// How long a server that ran out of time still spends telling the caller so: long
/// enough for a healthy connection to carry one small frame each way.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Sends one request and waits for its response; see `NetworkSender::rpc`.
pub(crate) async fn outbound(
    shared: &Shared,
    peer: PeerId,
    protocol: ProtocolId,
    request: Bytes,
    timeout: Duration,
) -> Result<Bytes, RpcError> {
    // One clock read serves the deadline and the latency.
    let start = tokio::time::Instant::now();
    let result = outbound_inner(shared, peer, protocol, request, start + timeout).await;
    match (&result, shared.route(protocol)) {
        (Ok(_), Some(route)) => {
            route
                .metrics
                .rpc_latency
                .observe(start.elapsed().as_secs_f64());
            route.metrics.rpc_outbound_ok.inc();
        }
        (result, _) => {
            let outcome = result.as_ref().map_or_else(RpcError::as_str, |_| "ok");
            shared
                .metrics
                .rpc_outcomes
                .with_label_values(&[protocol.as_str(), "outbound", outcome])
                .inc();
        }
    }
    result
}

async fn outbound_inner(
    shared: &Shared,
    peer: PeerId,
    protocol: ProtocolId,
    request: Bytes,
    deadline: tokio::time::Instant,
) -> Result<Bytes, RpcError> {
    let max = shared.config.max_message_size;
    if request.len() > max {
        return Err(RpcError::TooLarge {
            len: request.len(),
            max,
        });
    }
    let handle = shared.peer(&peer).ok_or(RpcError::NotConnected(peer))?;
    let _permit = Arc::clone(&handle.outbound_rpcs)
        .try_acquire_owned()
        .map_err(|_| RpcError::TooManyRequests)?;
    let route = shared
        .route(protocol)
        .ok_or(RpcError::UnregisteredProtocol(protocol))?;
    let request_len = request.len() as u64;
    let exchange = async {
        let supported = handle.metadata.supports(protocol);
        let mut io = open_substream(&handle.control, supported, protocol)
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
        let frame = match codec.read_message(&mut io).await {
            Ok(Some(frame)) => frame,
            Err(e) => return Err(stream_error(&handle, e)),
            Ok(None) if connection_closed(&handle) => return Err(RpcError::Disconnected),
            Ok(None) => return Err(RpcError::InvalidResponse(InvalidResponse::Missing)),
        };
        route.metrics.bytes_in.inc_by(frame.len() as u64);
        decode_response(frame).inspect_err(|e| {
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
        FramingError::Io(_) | FramingError::Truncated(_) if connection_closed(handle) => {
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

fn decode_response(frame: Bytes) -> Result<Bytes, RpcError> {
    let response = RpcResponse::decode(frame)
        .map_err(|_| RpcError::InvalidResponse(InvalidResponse::Undecodable))?;
    match response.result {
        Some(rpc_response::Result::Ok(data)) => Ok(data),
        Some(rpc_response::Result::Failure(failure)) => {
            let kind = match failure.code() {
                Code::TooManyRequests => return Err(RpcError::TooManyRequests),
                Code::NoResponse => RemoteFailure::NoResponse,
                Code::Application => RemoteFailure::Application,
                Code::Timeout => RemoteFailure::Timeout,
            };
            Err(RpcError::Remote {
                failure: kind,
                message: failure.message,
            })
        }
        None => Err(RpcError::InvalidResponse(InvalidResponse::Empty)),
    }
}

fn failure(code: Code, message: &str) -> RpcResponse {
    RpcResponse {
        result: Some(rpc_response::Result::Failure(RpcFailure {
            code: code.into(),
            message: message.to_owned(),
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
            let _ = response.encode(&mut dst);
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

/// Serves one inbound request on `io`: reads it, hands it to the application, writes
/// its answer. Bounded by the per-peer inbound limit and by `deadline` (set to the
/// inbound timeout from the substream's arrival).
pub(crate) async fn serve_inbound(
    shared: &Shared,
    handle: Arc<PeerHandle>,
    route: &Route,
    mut io: Negotiated<Substream>,
    deadline: Pin<&mut Sleep>,
) {
    let peer = handle.metadata.peer_id;
    let protocol = route.protocol;
    let codec = MessageCodec::new(shared.config.max_message_size);
    let permit = Arc::clone(&handle.inbound_rpcs).try_acquire_owned();
    let limiter = handle.message_limiter.clone();
    drop(handle);
    // Set once the answer starts out: a timeout after that cannot add a frame.
    let answering = AtomicBool::new(false);
    let serve = async {
        let request = match codec.read_message(&mut io).await {
            Ok(Some(request)) => request,
            Err(e) => {
                route.metrics.decode_failures.inc();
                debug!(peer = %peer.short_str(), %protocol, error = %e, "bad inbound RPC request");
                if let FramingError::TooLarge { .. } = e {
                    shared.report(peer, Misbehaviour::OversizedMessage);
                }
                return "bad_request";
            }
            Ok(None) => return "cancelled",
        };
        let (response, label) = if permit.is_err() {
            (
                failure(Code::TooManyRequests, "too many requests in flight"),
                "too_many_requests",
            )
        } else {
            // Over its message rate, the peer's request waits here (under the inbound
            // timeout) before the application sees it.
            if let Some(limiter) = &limiter {
                limiter.acquire().await;
            }
            route.metrics.messages_in.inc();
            route.metrics.bytes_in.inc_by(request.len() as u64);
            answer(shared, route, peer, request).await
        };
        answering.store(true, Ordering::Relaxed);
        if send_response(&mut io, &codec, &response).await.is_err() {
            return "write_failed";
        }
        await_fin(&mut io).await;
        label
    };
    let label = match before(deadline, serve).await {
        Some(label) => label,
        // Part of the answer may be out, and a second frame would land inside it: the
        // substream is dropped, which resets it, and the caller sees the failure.
        None if answering.load(Ordering::Relaxed) => "timeout",
        None => {
            // Tell the caller, close our side and wait for its FIN, so the failure is
            // not reset away; bounded, since a caller that stopped reading could block
            // the write itself.
            let tell = async {
                send_response(&mut io, &codec, &failure(Code::Timeout, "server timed out")).await?;
                await_fin(&mut io).await;
                Ok::<_, FramingError>(())
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, tell).await;
            "timeout"
        }
    };
    if label == "ok" {
        route.metrics.rpc_inbound_ok.inc();
    } else {
        shared
            .metrics
            .rpc_outcomes
            .with_label_values(&[protocol.as_str(), "inbound", label])
            .inc();
    }
}

/// Hands `request` to the application and returns its answer and an outcome label.
async fn answer(
    shared: &Shared,
    route: &Route,
    peer: PeerId,
    request: Bytes,
) -> (RpcResponse, &'static str) {
    let (tx, rx) = oneshot::channel();
    let event = Event::RpcRequest {
        peer_id: peer,
        protocol: route.protocol,
        data: request,
        responder: RpcResponder { tx },
    };
    if shared.apps[route.app]
        .push((peer, Some(route.protocol)), Queued::Event(event))
        .await
        .is_err()
    {
        return (
            failure(Code::NoResponse, "application is gone"),
            "no_application",
        );
    }
    match rx.await {
        Ok(Ok(data)) => {
            route.metrics.bytes_out.inc_by(data.len() as u64);
            let msg = RpcResponse {
                result: Some(rpc_response::Result::Ok(data)),
            };
            (msg, "ok")
        }
        Ok(Err(reason)) => (failure(Code::Application, &reason), "application_error"),
        Err(_) => (failure(Code::NoResponse, "no response"), "no_response"),
    }
}
