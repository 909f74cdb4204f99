//! The server's side: reads an inbound request, hands it to the application and writes
//! its answer, or tells the caller why there is none.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use netcore::PeerId;
use netcore::framing::{FramingError, MessageCodec};
use proto::rpc::RpcResponse;
use proto::rpc::rpc_failure::Code;
use tokio::sync::oneshot;
use tracing::debug;

use super::RpcResponder;
use super::answering::{AnswerState, Answering, DirectReply, Reply};
use super::core::{self, Answer, failure, response_frame_limit};
use super::{RpcStream, await_fin, record_inbound, remote_finished, send_response};
use crate::channel::QueueError;
use crate::protocol_id::ProtocolId;
use crate::protocols::deadline::Deadline;
use crate::protocols::{Delivery, Event, PeerHandle, Protocols};
use crate::rate_limit::MessageLimiter;
use crate::reputation::Misbehaviour;
use crate::routes::Route;

/// How long a server that ran out of time still spends telling the caller so: long
/// enough for a healthy connection to carry one small frame each way.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one inbound request on `io`: reads it, hands it to the application, writes
/// its answer. Bounded by the per-peer inbound limit and by `deadline` (set to the
/// inbound timeout from the substream's arrival). When the caller's FIN came with its
/// request, the answer is written where it is given ([`Answering`]) and this returns
/// once the application has the request.
pub(crate) async fn serve_inbound(
    protocols: &Arc<Protocols>,
    handle: Arc<PeerHandle>,
    route_index: usize,
    mut io: RpcStream,
    deadline: &mut Deadline,
) {
    let route = &protocols.routes[route_index];
    let peer = handle.metadata.peer_id;
    // Answers are framed with room for the envelope around a payload of the limit.
    let answers = MessageCodec::new(response_frame_limit(route.max_message_size));
    let permit = Arc::clone(&handle.inbound_rpcs).try_acquire_owned();
    // The handle is not kept while this waits: it holds the connection open.
    let limiter = handle.message_limiter.clone();
    let deadlines = Arc::clone(&handle.answer_deadlines);
    drop(handle);
    let read = read_request(protocols, route, peer, &mut io, permit.is_ok(), limiter);
    let request = match deadline.bound(read).await {
        Some(Ok(request)) => request,
        Some(Err(label)) => return record_inbound(route, label),
        None => {
            let label = Box::pin(time_out(&mut io, &answers)).await;
            return record_inbound(route, label);
        }
    };
    let permit = match permit {
        Ok(permit) if remote_finished(&mut io) => permit,
        Ok(_) => {
            // Boxed, as the other paths that wait: the serving of every substream is
            // begun in a box as large as its future.
            let label = Box::pin(answer_in_task(
                protocols, route, peer, io, &answers, deadline, request,
            ))
            .await;
            return record_inbound(route, label);
        }
        Err(_) => {
            let label = Box::pin(refuse(io, &answers, deadline)).await;
            return record_inbound(route, label);
        }
    };
    let answering = Arc::new(Answering {
        state: parking_lot::Mutex::new(Some(AnswerState {
            io,
            protocols: Arc::clone(protocols),
            route: route_index,
            deadline: deadline.at(),
            _permit: permit,
        })),
        done: AtomicBool::new(false),
    });
    let compact_at = 2 * protocols.config.max_concurrent_inbound_rpcs.max(16);
    if let Err(answering) = deadlines.push(deadline.at(), Arc::clone(&answering), compact_at) {
        // The connection ended meanwhile: its task times out nothing more, so this one
        // keeps its deadline here.
        if let Some(state) = answering.take() {
            let label = Box::pin(answer_in_task(
                protocols, route, peer, state.io, &answers, deadline, request,
            ))
            .await;
            record_inbound(route, label);
        }
        return;
    }
    drop(deadlines);
    deliver_for_direct_answer(protocols, route, peer, request, answering, deadline).await;
}

/// Reads the request; counts it when it will be served (`counted`: it holds a permit),
/// after the peer's message rate let it through. Fails with the outcome's label.
async fn read_request(
    protocols: &Protocols,
    route: &Route,
    peer: PeerId,
    io: &mut RpcStream,
    counted: bool,
    limiter: Option<Arc<MessageLimiter>>,
) -> Result<Bytes, &'static str> {
    let codec = MessageCodec::new(route.max_request_size);
    let request = match codec.read_message(io).await {
        Ok(Some(request)) => request,
        Err(e) => {
            route.metrics.decode_failures.inc();
            debug!(peer = %peer.short_str(), protocol = %route.protocol, error = %e, "bad inbound RPC request");
            if let FramingError::TooLarge { .. } = e {
                protocols
                    .reporter
                    .report(peer, Misbehaviour::OversizedMessage);
            }
            return Err("bad_request");
        }
        Ok(None) => return Err("cancelled"),
    };
    if counted {
        // Over its message rate, the peer's request waits here (under the inbound
        // timeout) before the application sees it.
        if let Some(limiter) = &limiter
            && !limiter.try_acquire()
        {
            Box::pin(limiter.acquire()).await;
        }
        route.metrics.messages_in.inc();
        route.metrics.bytes_in.inc_by(request.len() as u64);
    }
    Ok(request)
}

/// Hands a request to the application with a responder that writes the answer into
/// `answering`'s substream. Waits (until the deadline) only while the application's
/// queue is full; a gone application is told to the caller at once.
async fn deliver_for_direct_answer(
    protocols: &Protocols,
    route: &Route,
    peer: PeerId,
    request: Bytes,
    answering: Arc<Answering>,
    deadline: &mut Deadline,
) {
    let reply = Reply::Direct(DirectReply(Some(Arc::clone(&answering))));
    let max = route.max_message_size;
    let event = request_event(peer, route.protocol, request, reply, max);
    let key = (peer, Some(route.protocol));
    let gone = match protocols.apps[route.app].try_push(key, Delivery::Event(event)) {
        Ok(()) => return,
        Err(QueueError::Full(event)) => {
            // Boxed, as the other paths that wait; and kept when the deadline passes, so
            // the caller is told of the timeout before the request (with its responder)
            // is dropped.
            let mut push = Box::pin(protocols.apps[route.app].push(key, event));
            match deadline.bound(push.as_mut()).await {
                Some(Ok(())) => return,
                // `push` waits while full: it fails only when closed.
                Some(Err(QueueError::Closed(event) | QueueError::Full(event))) => event,
                None => {
                    answering.time_out();
                    return;
                }
            }
        }
        Err(QueueError::Closed(event)) => event,
    };
    answering.finish(
        failure(Code::NoResponse, "application is gone"),
        "no_application",
    );
    drop(gone);
}

/// Tells the caller the peer has too many requests in flight; returns the outcome's
/// label.
async fn refuse(mut io: RpcStream, codec: &MessageCodec, deadline: &mut Deadline) -> &'static str {
    let response = failure(Code::TooManyRequests, "too many requests in flight");
    let reply = async {
        send_response(&mut io, codec, response).await?;
        await_fin(&mut io).await;
        Ok::<_, FramingError>(())
    };
    match deadline.bound(reply).await {
        Some(Ok(())) => "too_many_requests",
        Some(Err(_)) => "write_failed",
        None => "timeout",
    }
}

/// An inbound request as the application sees it.
fn request_event(
    peer: PeerId,
    protocol: ProtocolId,
    data: Bytes,
    reply: Reply,
    max: usize,
) -> Event {
    Event::RpcRequest {
        peer_id: peer,
        protocol,
        data,
        responder: RpcResponder { reply, max },
    }
}

/// Serves a request whose answer comes back through this task: hands it to the
/// application, writes the answer, waits for the caller's FIN. Returns the outcome's
/// label.
async fn answer_in_task(
    protocols: &Protocols,
    route: &Route,
    peer: PeerId,
    mut io: RpcStream,
    codec: &MessageCodec,
    deadline: &mut Deadline,
    request: Bytes,
) -> &'static str {
    // Set once the answer starts out: a timeout after that cannot add a frame.
    let answering = AtomicBool::new(false);
    let serve = async {
        let (tx, rx) = oneshot::channel();
        let max = route.max_message_size;
        let event = request_event(peer, route.protocol, request, Reply::Task(tx), max);
        let (response, label) = answer(protocols, route, peer, event, rx).await;
        answering.store(true, Ordering::Relaxed);
        if send_response(&mut io, codec, response).await.is_err() {
            return "write_failed";
        }
        await_fin(&mut io).await;
        label
    };
    match deadline.bound(serve).await {
        Some(label) => label,
        // Part of the answer may be out, and a second frame would land inside it: the
        // substream is dropped, which resets it, and the caller sees the failure.
        None if answering.load(Ordering::Relaxed) => "timeout",
        None => time_out(&mut io, codec).await,
    }
}

/// Tells the caller the server ran out of time, closes our side and waits for its
/// FIN, so the failure is not reset away; bounded, since a caller that stopped reading
/// could block the write itself. Returns the outcome's label.
async fn time_out(io: &mut RpcStream, codec: &MessageCodec) -> &'static str {
    let tell = async {
        send_response(io, codec, failure(Code::Timeout, "server timed out")).await?;
        await_fin(io).await;
        Ok::<_, FramingError>(())
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, tell).await;
    "timeout"
}

/// Hands `event` (a request) to the application and returns its answer, as it comes
/// on `rx`, and an outcome label.
async fn answer(
    protocols: &Protocols,
    route: &Route,
    peer: PeerId,
    event: Event,
    rx: oneshot::Receiver<Answer>,
) -> (RpcResponse, &'static str) {
    if protocols.apps[route.app]
        .push((peer, Some(route.protocol)), Delivery::Event(event))
        .await
        .is_err()
    {
        return (
            failure(Code::NoResponse, "application is gone"),
            "no_application",
        );
    }
    match rx.await {
        Ok(result) => {
            if let Answer::Data(data) = &result {
                route.metrics.bytes_out.inc_by(data.len() as u64);
            }
            core::response_to(result)
        }
        Err(_) => (failure(Code::NoResponse, "no response"), "no_response"),
    }
}
