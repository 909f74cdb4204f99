//! RPC: one substream per request; the caller sends one length-delimited message, the
//! server answers with one `RpcResponse`.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use netcore::PeerId;
use netcore::framing::{FramingError, LENGTH_FIELD_BYTES, MessageCodec};
use netcore::multiplexing::Substream;
use netcore::negotiate::{NegotiateError, Negotiated};
use proto::Message;
use proto::rpc::rpc_failure::Code;
use proto::rpc::{RpcFailure, RpcResponse, rpc_response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, oneshot};
use tracing::debug;

use super::{OpenError, connection_closed, is_refusal, open_substream};
use crate::channel::QueueError;
use crate::error::{InvalidResponse, RemoteFailure, RpcError};
use crate::interface::{Event, Queued, RpcResponder};
use crate::peer::Deadline;
use crate::protocol_id::ProtocolId;
use crate::reputation::Misbehaviour;
use crate::shared::{PeerHandle, Route, Shared};

/// Answers up to this size, with their length prefix, are framed on the stack.
const SMALL_ANSWER: usize = 512;

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
        let frame = match MessageCodec::new(response_frame_limit(max))
            .read_message(&mut io)
            .await
        {
            Ok(Some(frame)) => frame,
            Err(e) => return Err(stream_error(&handle, e)),
            Ok(None) if connection_closed(&handle) => return Err(RpcError::Disconnected),
            Ok(None) => return Err(RpcError::InvalidResponse(InvalidResponse::Missing)),
        };
        route.metrics.bytes_in.inc_by(frame.len() as u64);
        decode_response(frame, max).inspect_err(|e| {
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

/// The payload of a response frame, or the failure it reports. A payload over `max`
/// (the frame may be a little longer than `max`, for the envelope) is refused as the
/// server should have refused it.
fn decode_response(frame: Bytes, max: usize) -> Result<Bytes, RpcError> {
    let response = RpcResponse::decode(frame)
        .map_err(|_| RpcError::InvalidResponse(InvalidResponse::Undecodable))?;
    match response.result {
        Some(rpc_response::Result::Ok(data)) if data.len() > max => Err(RpcError::TooLarge {
            len: data.len(),
            max,
        }),
        Some(rpc_response::Result::Ok(data)) => Ok(data),
        Some(rpc_response::Result::Failure(failure)) => {
            let kind = match failure.code() {
                Code::TooManyRequests => return Err(RpcError::TooManyRequests),
                Code::TooLarge => {
                    return Err(RpcError::TooLarge {
                        len: usize::try_from(failure.size).unwrap_or(usize::MAX),
                        max: usize::try_from(failure.limit).unwrap_or(usize::MAX),
                    });
                }
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

/// Where an inbound RPC's answer goes: what an [`RpcResponder`] holds.
#[derive(Debug)]
pub(crate) enum Reply {
    /// To the substream's task, which waits for it.
    Task(oneshot::Sender<Answer>),
    /// Straight into the substream (see [`Answering`]).
    Direct(DirectReply),
}

impl Reply {
    /// Answers the request; the caller may have given up, then nobody is told.
    pub(crate) fn send(self, result: Answer) {
        match self {
            Reply::Task(tx) => {
                let _ = tx.send(result);
            }
            Reply::Direct(mut reply) => {
                if let Some(answering) = reply.0.take() {
                    answering.answer(result);
                }
            }
        }
    }
}

/// A reply written straight into the substream. Dropped without an answer, it tells
/// the caller that the request got no response; that drop may run under an
/// application queue's lock (a queue dropping its events), which is fine: writing takes
/// only the multiplexer's lock, which never waits for a queue's.
#[derive(Debug)]
pub(crate) struct DirectReply(Option<Arc<Answering>>);

impl Drop for DirectReply {
    fn drop(&mut self) {
        if let Some(answering) = self.0.take() {
            answering.finish(&failure(Code::NoResponse, "no response"), "no_response");
        }
    }
}

/// An inbound RPC whose request and FIN are both in, waiting for its answer. No task
/// waits with it: whoever gets there first writes into its substream, the
/// application's responder (the answer) or the connection's task once the inbound
/// timeout passed ([`AnswerDeadlines`]). Saves the substream's task a wake-up and a
/// poll per request, and the hand-over of the answer through a channel.
pub(crate) struct Answering {
    /// Taken by the first of the answer and the timeout.
    state: parking_lot::Mutex<Option<AnswerState>>,
    /// `state` was taken; read without the lock by the deadline queue.
    done: AtomicBool,
}

impl fmt::Debug for Answering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answering")
            .field("done", &self.is_done())
            .finish()
    }
}

/// What writing an inbound RPC's answer takes.
struct AnswerState {
    io: RpcStream,
    shared: Arc<Shared>,
    /// The route's index in [`Shared::routes`].
    route: usize,
    /// The inbound timeout's deadline, which also bounds a write that must wait.
    deadline: tokio::time::Instant,
    /// The peer's inbound RPC permit, released with the answer.
    _permit: OwnedSemaphorePermit,
}

impl Answering {
    /// Writes the application's answer, unless the timeout got there first.
    fn answer(&self, result: Answer) {
        let Some(state) = self.take() else {
            return;
        };
        let (response, label) = response_to(&state.shared.routes[state.route], result);
        state.write(&response, label);
    }

    /// Writes `response` and counts the outcome as `label`, unless it is answered.
    fn finish(&self, response: &RpcResponse, label: &'static str) {
        if let Some(state) = self.take() {
            state.write(response, label);
        }
    }

    /// Tells the caller the server ran out of time, unless it is answered.
    fn time_out(&self) {
        self.finish(&failure(Code::Timeout, "server timed out"), "timeout");
    }

    fn take(&self) -> Option<AnswerState> {
        let state = self.state.lock().take();
        self.done.store(true, Ordering::Release);
        state
    }

    /// Whether it is answered (or timed out).
    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

impl AnswerState {
    /// Writes `response` and our FIN without waiting (the answer of a small request
    /// fits the substream's window); a task writes what the window did not take.
    fn write(mut self, response: &RpcResponse, label: &'static str) {
        let max = MessageCodec::new(response_frame_limit(self.shared.config.max_message_size))
            .max_message_size();
        let len = response.encoded_len();
        if len > max {
            // Dropping the substream resets it: the caller learns the answer is lost.
            return self.record("write_failed");
        }
        // A small answer is framed on the stack.
        let mut small = [0u8; SMALL_ANSWER];
        let mut large = Vec::new();
        let whole = LENGTH_FIELD_BYTES + len;
        let frame = if whole <= SMALL_ANSWER {
            &mut small[..whole]
        } else {
            large.resize(whole, 0);
            &mut large[..]
        };
        // `max` is at most `u32::MAX`, so the length fits the field.
        frame[..LENGTH_FIELD_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
        // The slice is exactly the encoded length, so encoding cannot fail.
        let _ = response.encode_into(&mut &mut frame[LENGTH_FIELD_BYTES..]);
        let mut cx = Context::from_waker(Waker::noop());
        let mut written = 0;
        while written < whole {
            match Pin::new(&mut self.io).poll_write(&mut cx, &frame[written..]) {
                Poll::Ready(Ok(n)) if n > 0 => written += n,
                Poll::Pending => break,
                Poll::Ready(_) => return self.record("write_failed"),
            }
        }
        if written == whole {
            match Pin::new(&mut self.io).poll_shutdown(&mut cx) {
                Poll::Ready(Ok(())) => return self.record(label),
                Poll::Ready(Err(_)) => return self.record("write_failed"),
                Poll::Pending => {}
            }
        }
        // The caller's window is short: a task writes the rest, until the deadline (the
        // substream is then dropped, which resets it, as on the task path).
        let rest = if whole <= SMALL_ANSWER {
            frame[written..].to_vec()
        } else {
            large.drain(..written);
            large
        };
        let runtime = self.shared.runtime.clone();
        runtime.spawn(async move {
            let finish = async {
                self.io.write_all(&rest).await?;
                self.io.shutdown().await
            };
            let label = match tokio::time::timeout_at(self.deadline, finish).await {
                Ok(Ok(())) => label,
                Ok(Err(_)) => "write_failed",
                Err(_) => "timeout",
            };
            self.record(label);
        });
    }

    fn record(&self, label: &'static str) {
        record_inbound(&self.shared, &self.shared.routes[self.route], label);
    }
}

/// A connection's directly answered RPCs that still wait, by deadline, for the
/// connection's task to time out. A deadline is the substream's arrival plus the
/// inbound timeout, so requests queue nearly in deadline order (one read slowly, or
/// held by its peer's message rate, goes in before later arrivals); and one that
/// arrives after the task looked is due no earlier than the task waits for, so queueing
/// it wakes nobody.
pub(crate) struct AnswerDeadlines {
    inner: parking_lot::Mutex<DeadlineQueue>,
    /// Wakes the connection's task for a deadline earlier than the one it waits for (a
    /// request that arrived before the task last looked, queued after).
    earlier: Notify,
}

struct DeadlineQueue {
    /// By deadline, earliest first.
    queue: VecDeque<(tokio::time::Instant, Arc<Answering>)>,
    /// The deadline the connection's task waits for.
    armed: tokio::time::Instant,
    /// The connection ended: nothing more is queued (its requests are served by their
    /// substream tasks, which keep their own deadlines).
    closed: bool,
}

/// How long an idle connection's task waits at least before it looks again, however
/// short the inbound timeout: an empty queue never makes it spin.
const MIN_LOOK_INTERVAL: Duration = Duration::from_secs(1);

impl AnswerDeadlines {
    /// An empty queue whose task first looks at `armed`.
    pub(crate) fn new(armed: tokio::time::Instant) -> Self {
        Self {
            inner: parking_lot::Mutex::new(DeadlineQueue {
                queue: VecDeque::new(),
                armed,
                closed: false,
            }),
            earlier: Notify::new(),
        }
    }

    /// Queues `answering`, due at `deadline`; gives it back once the connection has
    /// ended. Answered ones leave from the front, and all of them once the queue
    /// reaches `compact_at` (twice the RPCs a peer may have waiting), so it stays that
    /// short behind one that waits long.
    fn push(
        &self,
        deadline: tokio::time::Instant,
        answering: Arc<Answering>,
        compact_at: usize,
    ) -> Result<(), Arc<Answering>> {
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(answering);
        }
        while inner.queue.front().is_some_and(|(_, a)| a.is_done()) {
            inner.queue.pop_front();
        }
        if inner.queue.len() >= compact_at {
            inner.queue.retain(|(_, a)| !a.is_done());
        }
        if inner.queue.back().is_none_or(|(last, _)| *last <= deadline) {
            inner.queue.push_back((deadline, answering));
        } else {
            let at = inner.queue.partition_point(|(due, _)| *due <= deadline);
            inner.queue.insert(at, (deadline, answering));
        }
        let earlier = deadline < inner.armed;
        drop(inner);
        if earlier {
            self.earlier.notify_one();
        }
        Ok(())
    }

    /// The deadline the connection's task should wait for.
    pub(crate) fn armed(&self) -> tokio::time::Instant {
        self.inner.lock().armed
    }

    /// Waits until a deadline earlier than the armed one was queued.
    pub(crate) async fn earlier(&self) {
        self.earlier.notified().await;
    }

    /// Times out what is due at `now`; returns when to look next: at the earliest
    /// deadline left, or (nothing left) one `timeout` from now, at least
    /// [`MIN_LOOK_INTERVAL`].
    pub(crate) fn expire(
        &self,
        now: tokio::time::Instant,
        timeout: Duration,
    ) -> tokio::time::Instant {
        self.time_out_due(now)
            .unwrap_or_else(|| later(now, timeout.max(MIN_LOOK_INTERVAL)))
    }

    /// Times out what is due at `now`, dropping the answered ones at the front on the
    /// way; returns the earliest deadline left, then armed.
    fn time_out_due(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let mut due = Vec::new();
        let next = {
            let mut inner = self.inner.lock();
            while let Some((at, answering)) = inner.queue.front() {
                if answering.is_done() {
                    inner.queue.pop_front();
                } else if *at <= now {
                    if let Some((_, answering)) = inner.queue.pop_front() {
                        due.push(answering);
                    }
                } else {
                    break;
                }
            }
            let next = inner.queue.front().map(|(at, _)| *at);
            if let Some(next) = next {
                inner.armed = next;
            }
            next
        };
        // Written outside the lock.
        for answering in due {
            answering.time_out();
        }
        next
    }

    /// The connection ended: nothing more is queued. What waits keeps its deadline:
    /// drive [`Self::drain`] until it returns.
    pub(crate) fn close(&self) {
        self.inner.lock().closed = true;
    }

    /// After [`Self::close`]: times out what waits as its deadlines pass, answered or
    /// not by then, and returns once nothing waits. Its substreams are not reset
    /// early, so their callers learn of the connection's end from the connection.
    pub(crate) async fn drain(&self) {
        while let Some(next) = self.time_out_due(tokio::time::Instant::now()) {
            tokio::time::sleep_until(next).await;
        }
    }
}

/// `now + timeout`, or a year from now for a timeout too large to add.
pub(crate) fn later(now: tokio::time::Instant, timeout: Duration) -> tokio::time::Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(timeout).unwrap_or(now + FAR)
}

/// How a request read ended, when it did not bring a request to serve.
enum Unread {
    /// Counted as this outcome.
    Outcome(&'static str),
    /// The deadline passed first.
    TimedOut,
}

/// Serves one inbound request on `io`: reads it, hands it to the application, writes
/// its answer. Bounded by the per-peer inbound limit and by `deadline` (set to the
/// inbound timeout from the substream's arrival). When the caller's FIN came with its
/// request, the answer is written where it is given ([`Answering`]) and this returns
/// once the application has the request.
pub(crate) async fn serve_inbound(
    shared: &Arc<Shared>,
    handle: Arc<PeerHandle>,
    route_index: usize,
    mut io: RpcStream,
    deadline: &mut Deadline,
) {
    let route = &shared.routes[route_index];
    let peer = handle.metadata.peer_id;
    let protocol = route.protocol;
    let codec = MessageCodec::new(shared.config.max_message_size);
    // Answers are framed with room for the envelope around a payload of the limit.
    let answers = MessageCodec::new(response_frame_limit(codec.max_message_size()));
    let permit = Arc::clone(&handle.inbound_rpcs).try_acquire_owned();
    // The handle is not kept while this waits: it holds the connection open.
    let limiter = handle.message_limiter.clone();
    let deadlines = Arc::clone(&handle.answer_deadlines);
    drop(handle);
    let read = async {
        let request = match codec.read_message(&mut io).await {
            Ok(Some(request)) => request,
            Err(e) => {
                route.metrics.decode_failures.inc();
                debug!(peer = %peer.short_str(), %protocol, error = %e, "bad inbound RPC request");
                if let FramingError::TooLarge { .. } = e {
                    shared.report(peer, Misbehaviour::OversizedMessage);
                }
                return Err(Unread::Outcome("bad_request"));
            }
            Ok(None) => return Err(Unread::Outcome("cancelled")),
        };
        if permit.is_ok() {
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
    };
    let read = deadline.bound(read).await.unwrap_or(Err(Unread::TimedOut));
    let request = match read {
        Ok(request) => request,
        Err(Unread::Outcome(label)) => return record_inbound(shared, route, label),
        Err(Unread::TimedOut) => {
            let label = Box::pin(time_out(&mut io, &answers)).await;
            return record_inbound(shared, route, label);
        }
    };
    let permit = match permit {
        Ok(permit) if remote_finished(&mut io) => permit,
        Ok(_) => {
            // Boxed, as the other paths that wait: the serving of every substream is
            // begun in a box as large as its future.
            let label = Box::pin(answer_in_task(
                shared, route, peer, io, &answers, deadline, request,
            ))
            .await;
            return record_inbound(shared, route, label);
        }
        Err(_) => {
            let label = Box::pin(refuse(io, &answers, deadline)).await;
            return record_inbound(shared, route, label);
        }
    };
    let due = deadline.at();
    let answering = Arc::new(Answering {
        state: parking_lot::Mutex::new(Some(AnswerState {
            io,
            shared: Arc::clone(shared),
            route: route_index,
            deadline: due,
            _permit: permit,
        })),
        done: AtomicBool::new(false),
    });
    let compact_at = 2 * shared.config.max_concurrent_inbound_rpcs.max(16);
    if let Err(answering) = deadlines.push(due, Arc::clone(&answering), compact_at) {
        // The connection ended meanwhile: its task times out nothing more, so this one
        // keeps its deadline here.
        if let Some(state) = answering.take() {
            let label = Box::pin(answer_in_task(
                shared, route, peer, state.io, &answers, deadline, request,
            ))
            .await;
            record_inbound(shared, route, label);
        }
        return;
    }
    drop(deadlines);
    let reply = Reply::Direct(DirectReply(Some(Arc::clone(&answering))));
    let event = request_event(peer, protocol, request, reply, codec.max_message_size());
    let key = (peer, Some(protocol));
    let gone = match shared.apps[route.app].try_push(key, Queued::Event(event)) {
        Ok(()) => return,
        Err(QueueError::Full(event)) => {
            // Boxed, as the other paths that wait; and kept when the deadline passes, so
            // the caller is told of the timeout before the request (with its responder)
            // is dropped.
            let mut push = Box::pin(shared.apps[route.app].push(key, event));
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
        &failure(Code::NoResponse, "application is gone"),
        "no_application",
    );
    drop(gone);
}

/// Tells the caller the peer has too many requests in flight; returns the outcome's
/// label.
async fn refuse(mut io: RpcStream, codec: &MessageCodec, deadline: &mut Deadline) -> &'static str {
    let response = failure(Code::TooManyRequests, "too many requests in flight");
    let reply = async {
        send_response(&mut io, codec, &response).await?;
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
    shared: &Shared,
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
        let max = shared.config.max_message_size;
        let event = request_event(peer, route.protocol, request, Reply::Task(tx), max);
        let (response, label) = answer(shared, route, peer, event, rx).await;
        answering.store(true, Ordering::Relaxed);
        if send_response(&mut io, codec, &response).await.is_err() {
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
        send_response(io, codec, &failure(Code::Timeout, "server timed out")).await?;
        await_fin(io).await;
        Ok::<_, FramingError>(())
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, tell).await;
    "timeout"
}

/// Hands `event` (a request) to the application and returns its answer, as it comes
/// on `rx`, and an outcome label.
async fn answer(
    shared: &Shared,
    route: &Route,
    peer: PeerId,
    event: Event,
    rx: oneshot::Receiver<Answer>,
) -> (RpcResponse, &'static str) {
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
        Ok(result) => response_to(route, result),
        Err(_) => (failure(Code::NoResponse, "no response"), "no_response"),
    }
}

/// The response that carries the application's `result`, and its outcome label.
fn response_to(route: &Route, result: Answer) -> (RpcResponse, &'static str) {
    match result {
        Answer::Data(data) => {
            route.metrics.bytes_out.inc_by(data.len() as u64);
            let response = RpcResponse {
                result: Some(rpc_response::Result::Ok(data)),
            };
            (response, "ok")
        }
        Answer::Failed(reason) => (failure(Code::Application, &reason), "application_error"),
        Answer::TooLarge { len, max } => (too_large(len, max), "too_large"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RPC in the queue, answered (`done`) or waiting, with nothing to write.
    fn entry(done: bool) -> Arc<Answering> {
        Arc::new(Answering {
            state: parking_lot::Mutex::new(None),
            done: AtomicBool::new(done),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_deadline_before_the_armed_one_wakes_the_connection_task() {
        let t = Duration::from_secs(10);
        let now = tokio::time::Instant::now();
        let deadlines = AnswerDeadlines::new(now + t);
        // Requests that arrive after the task looked are due no earlier than it waits.
        deadlines.push(now + t, entry(false), 64).unwrap();
        deadlines
            .push(now + t + Duration::from_secs(1), entry(false), 64)
            .unwrap();
        let woken = tokio::time::timeout(Duration::from_millis(1), deadlines.earlier()).await;
        assert!(woken.is_err(), "no earlier deadline was queued");
        // One read slowly, queued after the task looked, is due before: it wakes it.
        let slow = entry(false);
        deadlines
            .push(now + Duration::from_secs(3), Arc::clone(&slow), 64)
            .unwrap();
        let woken = tokio::time::timeout(Duration::from_millis(1), deadlines.earlier()).await;
        assert!(woken.is_ok(), "the earlier deadline woke the task");
        // It is the next due, though queued last.
        let next = deadlines.expire(now + Duration::from_secs(3), t);
        assert!(slow.is_done());
        assert_eq!(next, now + t);
    }

    #[tokio::test(start_paused = true)]
    async fn expiring_takes_what_is_due_and_arms_the_next() {
        let t = Duration::from_secs(10);
        let start = tokio::time::Instant::now();
        let deadlines = AnswerDeadlines::new(start + t);
        let first = entry(false);
        let second = entry(false);
        deadlines
            .push(start + Duration::from_secs(2), Arc::clone(&first), 64)
            .unwrap();
        deadlines
            .push(start + Duration::from_secs(5), Arc::clone(&second), 64)
            .unwrap();
        let next = deadlines.expire(start + Duration::from_secs(2), t);
        assert!(first.is_done() && !second.is_done());
        assert_eq!(next, start + Duration::from_secs(5));
        assert_eq!(deadlines.armed(), next);
        // Empty, it looks again a whole timeout later, and never sooner than the
        // least interval.
        let at = start + Duration::from_secs(6);
        assert_eq!(deadlines.expire(at, t), at + t);
        assert!(second.is_done());
        assert_eq!(deadlines.expire(at, Duration::ZERO), at + MIN_LOOK_INTERVAL);
        // Answered ones are not waited for.
        deadlines
            .push(at + Duration::from_secs(1), entry(true), 64)
            .unwrap();
        assert_eq!(deadlines.expire(at, t), at + t);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_queue_takes_nothing_more_and_drains_by_the_deadlines() {
        let t = Duration::from_secs(10);
        let start = tokio::time::Instant::now();
        let deadlines = AnswerDeadlines::new(start + t);
        let waiting = entry(false);
        deadlines
            .push(start + Duration::from_secs(4), Arc::clone(&waiting), 64)
            .unwrap();
        deadlines.close();
        let refused = deadlines.push(start + Duration::from_secs(5), entry(false), 64);
        assert!(refused.is_err(), "queued after the connection ended");
        // What waits is timed out at its deadline, not at the close.
        deadlines.drain().await;
        assert!(waiting.is_done());
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[test]
    fn answered_rpcs_behind_a_waiting_one_are_dropped_in_bulk() {
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let deadlines = AnswerDeadlines::new(far);
        let compact_at = 32;
        // The oldest waits; everything behind it gets answered at once.
        deadlines.push(far, entry(false), compact_at).unwrap();
        for _ in 0..1000 {
            deadlines.push(far, entry(true), compact_at).unwrap();
            let len = deadlines.inner.lock().queue.len();
            assert!(len <= compact_at, "{len} queued");
        }
        // Answered ones at the front leave on the next push.
        let deadlines = AnswerDeadlines::new(far);
        for _ in 0..10 {
            deadlines.push(far, entry(true), compact_at).unwrap();
        }
        assert_eq!(deadlines.inner.lock().queue.len(), 1);
    }
}
