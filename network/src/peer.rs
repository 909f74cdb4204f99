//! One connection's substreams and its task. Each substream the remote opens is routed
//! by its negotiated protocol to the RPC or DirectSend handler of the application that
//! registered it. The multiplexer's task begins that serving as the substream arrives:
//! an RPC whose request and FIN came in its opening frame is handed to the application
//! there and then, and its answer is written where it is given. Serving that must wait
//! goes on in a task of the connection that finished its last one and waits (see
//! [`IdleTask`]), or in a new one. The connection's task times out the RPCs answered
//! that way, exports the multiplexer's counters and tells the peer manager when the
//! connection ends.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use futures::StreamExt;
use netcore::multiplexing::{Incoming, MuxStats, Priority, Substream};
use netcore::negotiate::{NegotiateError, negotiate_inbound};
use prometheus::IntCounter;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::protocol_id::ProtocolKind;
use crate::protocols::deadline::{Deadline, deadline_after};
use crate::protocols::{PeerHandle, Protocols, direct_send, rpc};
use crate::reputation::Misbehaviour;
use crate::requests::Closed;

/// Copies one connection's multiplexer counters into the node's metrics as deltas,
/// when they change (`MuxStats::changed`): an idle connection's task does not wake.
struct MuxStatsExport {
    stats: Arc<MuxStats>,
    refused: IntCounter,
    errors: IntCounter,
    seen_refused: u64,
    seen_errors: u64,
}

impl MuxStatsExport {
    fn new(protocols: &Protocols, handle: &PeerHandle) -> Self {
        Self {
            stats: handle.control.stats(),
            refused: protocols
                .metrics
                .connection
                .substreams_refused
                .with_label_values(&["mux_refused"]),
            errors: protocols.metrics.connection.mux_protocol_errors.clone(),
            seen_refused: 0,
            seen_errors: 0,
        }
    }

    fn sync(&mut self) {
        let refused = self.stats.streams_refused.load(Ordering::Relaxed);
        self.refused
            .inc_by(refused.saturating_sub(self.seen_refused));
        self.seen_refused = self.seen_refused.max(refused);
        let errors = self.stats.protocol_errors.load(Ordering::Relaxed);
        self.errors.inc_by(errors.saturating_sub(self.seen_errors));
        self.seen_errors = self.seen_errors.max(errors);
    }
}

/// Sets up the routing of the remote's substreams, then runs until the connection closes
/// or the network shuts down, and tells the peer manager.
pub(crate) async fn run(
    protocols: Arc<Protocols>,
    handle: Arc<PeerHandle>,
    mut incoming: Incoming,
    closed: mpsc::Sender<Closed>,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer_id = handle.metadata.peer_id;
    let connection_id = handle.metadata.connection_id;
    let mut stats = MuxStatsExport::new(&protocols, &handle);
    incoming.accept_with(acceptor(&protocols, &handle));
    let mux_stats = Arc::clone(&stats.stats);
    // One shutdown wait for the connection's life, not one registered and dropped per
    // substream.
    let shutdown = async move {
        let _ = shutdown.changed().await;
    };
    let mut shutdown = pin!(shutdown);
    // Times out the inbound RPCs answered without their task (see `AnswerDeadlines`).
    let deadlines = Arc::clone(&handle.answer_deadlines);
    let timeout = protocols.config.inbound_rpc_timeout;
    let mut due = pin!(tokio::time::sleep_until(deadlines.armed()));
    loop {
        tokio::select! {
            // The acceptor takes the substreams; this yields none unless one was
            // waiting before it was set, and ends with the connection.
            biased;
            substream = incoming.next() => match substream {
                Some(substream) => {
                    tokio::spawn(route_substream(Arc::clone(&protocols), Arc::clone(&handle), substream));
                }
                None => break,
            },
            () = &mut shutdown => break,
            () = &mut due => {
                let next = deadlines.expire(tokio::time::Instant::now(), timeout);
                due.as_mut().reset(next);
            }
            () = deadlines.earlier() => {
                let next = deadlines.expire(tokio::time::Instant::now(), timeout);
                due.as_mut().reset(next);
            }
            () = mux_stats.changed() => stats.sync(),
        }
    }
    // From now on a request's substream task keeps its deadline itself.
    deadlines.close();
    // A connection the multiplexer closed for a protocol violation counts against its
    // peer, so repeated violations across reconnections end in a ban.
    stats.sync();
    if stats.stats.protocol_errors.load(Ordering::Relaxed) > 0 {
        protocols
            .reporter
            .report(peer_id, Misbehaviour::ProtocolViolation);
    }
    drop(handle);
    let _ = closed
        .send(Closed {
            peer_id,
            connection_id,
        })
        .await;
    // The RPCs that still wait for their answer keep their deadlines (their callers
    // learn of the connection's end from the connection itself).
    drop(protocols);
    deadlines.drain().await;
}

/// What the multiplexer calls with each substream the remote opens, on its own task.
fn acceptor(
    protocols: &Arc<Protocols>,
    handle: &Arc<PeerHandle>,
) -> impl FnMut(Substream) + Send + 'static {
    // Each inbound substream's serving begins on the multiplexer's task (not after a
    // wake-up of this one); what must wait goes on in a waiting substream task, or in a
    // new one. Weak references: the multiplexer holds the acceptor until the
    // connection ends, and the peer handle holds the multiplexer.
    let refs = ServingRefs {
        protocols: Arc::downgrade(protocols),
        handle: Arc::downgrade(handle),
    };
    let idle_task = IdleTaskGuard(Arc::new(IdleTask::default()));
    // The box of the last serving that completed at once, for the next one.
    let mut spare = None;
    move |substream: Substream| {
        let (Some(protocols), Some(handle)) = (refs.protocols.upgrade(), refs.handle.upgrade())
        else {
            return;
        };
        // Polled once here, on the multiplexer's task: an RPC whose request and FIN
        // came in its opening frame is handed to the application now, with nothing
        // left to wait for (its answer is written where it is given). Anything that
        // must wait goes on in a substream task, which polls it again with its own
        // waker (this poll's wakers are no-ops, replaced by that poll).
        let serving = route_substream(protocols, handle, substream);
        let mut serving = match spare.take() {
            Some(mut boxed) => {
                Pin::set(&mut boxed, serving);
                boxed
            }
            None => Box::pin(serving),
        };
        let mut cx = Context::from_waker(Waker::noop());
        if serving.as_mut().poll(&mut cx).is_ready() {
            spare = Some(serving);
            return;
        }
        let serving: Serving = serving;
        if let Some(serving) = idle_task.0.offer(serving) {
            tokio::spawn(serve_substreams(Arc::clone(&idle_task.0), serving));
        }
    }
}

/// Weak references to what serving a substream needs, upgraded as each arrives: the
/// acceptor that holds them does not keep the node or the connection alive.
#[derive(Clone)]
struct ServingRefs {
    protocols: Weak<Protocols>,
    handle: Weak<PeerHandle>,
}

/// A substream task of the connection that finished serving its substream and waits
/// for the next: the multiplexer's task hands it the serving of an inbound substream
/// that must wait, rather than spawning a task (a spawn and a cache-line-aligned
/// allocation) per substream. At most one task waits per connection; others end when
/// they finish their substream.
struct IdleTask<T = Serving> {
    state: Mutex<IdleTaskState<T>>,
}

struct IdleTaskState<T> {
    /// The waiting task, if one waits.
    idle: Option<Waker>,
    /// A substream handed to the waiting task, not yet taken.
    handed: Option<T>,
    /// The connection ended: the waiting task ends.
    closed: bool,
}

impl<T> Default for IdleTask<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(IdleTaskState {
                idle: None,
                handed: None,
                closed: false,
            }),
        }
    }
}

impl<T> IdleTask<T> {
    fn state(&self) -> std::sync::MutexGuard<'_, IdleTaskState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `substream` to the waiting task; gives it back if none waits.
    fn offer(&self, substream: T) -> Option<T> {
        let mut state = self.state();
        if state.handed.is_some() || state.closed {
            return Some(substream);
        }
        let Some(waker) = state.idle.take() else {
            return Some(substream);
        };
        state.handed = Some(substream);
        drop(state);
        waker.wake();
        None
    }

    /// Waits for a substream, unless another task waits already or the connection
    /// ended: then `None`, and the caller's task ends.
    async fn next(&self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.state();
            if let Some(substream) = state.handed.take() {
                state.idle = None;
                return Poll::Ready(Some(substream));
            }
            // Also a task woken for a substream another task took, which then began to
            // wait: one waiting task is enough.
            let other_waits = state
                .idle
                .as_ref()
                .is_some_and(|idle| !idle.will_wake(cx.waker()));
            if state.closed || other_waits {
                return Poll::Ready(None);
            }
            state.idle = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The connection ended: the waiting task, if any, ends.
    fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        // Dropped outside the lock: dropping a substream takes the multiplexer's.
        let handed = state.handed.take();
        let idle = state.idle.take();
        drop(state);
        drop(handed);
        if let Some(waker) = idle {
            waker.wake();
        }
    }
}

/// Held by the acceptor, which the multiplexer drops when the connection ends.
struct IdleTaskGuard<T = Serving>(Arc<IdleTask<T>>);

impl<T> Drop for IdleTaskGuard<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The serving of one inbound substream, begun on the multiplexer's task.
type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A substream task: finishes serving `first`, then each substream handed to it, until
/// another task already waits or the connection ends.
async fn serve_substreams(idle_task: Arc<IdleTask<Serving>>, first: Serving) {
    let mut next = Some(first);
    while let Some(serving) = next.take() {
        serving.await;
        next = idle_task.next().await;
    }
}

/// Negotiates the protocol of an inbound substream and serves it.
async fn route_substream(protocols: Arc<Protocols>, handle: Arc<PeerHandle>, substream: Substream) {
    // One deadline for negotiating and, for an RPC, answering.
    let mut deadline = Deadline::new(deadline_after(
        tokio::time::Instant::now(),
        protocols.config.inbound_rpc_timeout,
    ));
    let negotiation = negotiate_inbound(substream, protocols.routes.names());
    let (io, index) = match deadline.bound(negotiation).await {
        Some(Ok(negotiated)) => negotiated,
        Some(Err(e)) => {
            let reason = match e {
                NegotiateError::Refused => "unknown_protocol",
                _ => "negotiation_failed",
            };
            debug!(peer = %handle.metadata.peer_id.short_str(), error = %e, "inbound substream refused");
            if is_garbage(&e) {
                protocols
                    .reporter
                    .report(handle.metadata.peer_id, Misbehaviour::NegotiationGarbage);
            }
            protocols
                .metrics
                .connection
                .substreams_refused
                .with_label_values(&[reason])
                .inc();
            return;
        }
        None => {
            protocols
                .metrics
                .connection
                .substreams_refused
                .with_label_values(&["negotiation_timeout"])
                .inc();
            return;
        }
    };
    // Borrowed, not cloned: a route holds a dozen metric handles.
    let Some(route) = protocols.routes.at(index) else {
        return;
    };
    // Responses and acknowledgements go out in the protocol's class too (an inbound
    // stream starts in the default class: no lock taken for it).
    if route.priority != Priority::default() {
        io.get_ref().set_priority(route.priority);
    }
    match route.kind {
        ProtocolKind::Rpc => rpc::serve_inbound(&protocols, handle, index, io, &mut deadline).await,
        // Boxed: it lives as long as its substream, and would make every substream's
        // serving (begun in a box of this size) as large.
        ProtocolKind::DirectSend => {
            Box::pin(direct_send::serve_inbound(&protocols, handle, route, io)).await;
        }
    }
}

/// Whether a negotiation failure is the remote's fault (malformed or abusive input)
/// rather than a refusal, a closed stream or an I/O failure.
fn is_garbage(e: &NegotiateError) -> bool {
    matches!(
        e,
        NegotiateError::MessageTooLong { .. }
            | NegotiateError::LengthPrefixTooLong { .. }
            | NegotiateError::Malformed(_)
            | NegotiateError::BadHeader
            | NegotiateError::UnexpectedMessage(_)
            | NegotiateError::TooManyProposals { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::task::{Context, Wake};

    /// A task's waker, which records that it was woken.
    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A stand-in for one substream task: its waker and whether it was woken.
    struct Task {
        flag: Arc<Flag>,
        waker: Waker,
    }

    impl Task {
        fn new() -> Self {
            let flag = Arc::new(Flag::default());
            let waker = Waker::from(Arc::clone(&flag));
            Self { flag, waker }
        }

        fn poll<T>(&self, next: Pin<&mut impl Future<Output = Option<T>>>) -> Poll<Option<T>> {
            next.poll(&mut Context::from_waker(&self.waker))
        }

        fn woken(&self) -> bool {
            self.flag.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn a_substream_goes_to_the_waiting_task_or_back_to_the_acceptor() {
        let idle_task = IdleTask::<u32>::default();
        let (a, b) = (Task::new(), Task::new());
        // No task waits: the acceptor keeps it (and spawns one).
        assert_eq!(idle_task.offer(1), Some(1));
        let mut waiting = pin!(idle_task.next());
        assert!(a.poll(waiting.as_mut()).is_pending());
        // A second task that finishes while one waits ends.
        assert_eq!(b.poll(pin!(idle_task.next())), Poll::Ready(None));
        // The waiting task takes the next one; a second offer before it runs goes back.
        assert_eq!(idle_task.offer(2), None);
        assert!(a.woken());
        assert_eq!(idle_task.offer(3), Some(3));
        assert_eq!(a.poll(waiting.as_mut()), Poll::Ready(Some(2)));
        // Nobody waits again until a task asks.
        assert_eq!(idle_task.offer(4), Some(4));
    }

    #[test]
    fn a_woken_task_that_finds_another_waiting_ends_rather_than_hide_it() {
        let idle_task = IdleTask::<u32>::default();
        let (a, c, d) = (Task::new(), Task::new(), Task::new());
        let mut task_a = pin!(idle_task.next());
        assert!(a.poll(task_a.as_mut()).is_pending());
        assert_eq!(idle_task.offer(1), None);
        // Task C, finishing before A runs, serves it; then D finishes and waits.
        assert_eq!(c.poll(pin!(idle_task.next())), Poll::Ready(Some(1)));
        let mut task_d = pin!(idle_task.next());
        assert!(d.poll(task_d.as_mut()).is_pending());
        // A runs at last: D waits, so A ends, and the next substream reaches D.
        assert_eq!(a.poll(task_a.as_mut()), Poll::Ready(None));
        assert_eq!(idle_task.offer(2), None);
        assert!(d.woken());
        assert_eq!(d.poll(task_d.as_mut()), Poll::Ready(Some(2)));
    }

    #[test]
    fn a_waiting_task_polled_again_keeps_waiting() {
        let idle_task = IdleTask::<u32>::default();
        let a = Task::new();
        let mut waiting = pin!(idle_task.next());
        assert!(a.poll(waiting.as_mut()).is_pending());
        assert!(a.poll(waiting.as_mut()).is_pending());
        assert_eq!(idle_task.offer(1), None);
        assert_eq!(a.poll(waiting.as_mut()), Poll::Ready(Some(1)));
    }

    #[test]
    fn the_end_of_the_connection_ends_the_waiting_task_and_drops_a_handed_substream() {
        let idle_task = Arc::new(IdleTask::<Arc<()>>::default());
        let (a, b) = (Task::new(), Task::new());
        let mut waiting = pin!(idle_task.next());
        assert!(a.poll(waiting.as_mut()).is_pending());
        let substream = Arc::new(());
        assert!(idle_task.offer(Arc::clone(&substream)).is_none());
        drop(IdleTaskGuard(Arc::clone(&idle_task)));
        assert_eq!(
            Arc::strong_count(&substream),
            1,
            "the handed one was dropped"
        );
        assert!(matches!(a.poll(waiting.as_mut()), Poll::Ready(None)));
        // After the end, nothing is handed over and no task waits.
        assert!(idle_task.offer(Arc::clone(&substream)).is_some());
        assert!(matches!(b.poll(pin!(idle_task.next())), Poll::Ready(None)));
    }
}
