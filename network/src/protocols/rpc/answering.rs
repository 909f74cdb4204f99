//! Where an inbound RPC's answer goes: to its substream's task, or straight into the
//! substream when no task waits with it.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use proto::rpc::RpcResponse;
use proto::rpc::rpc_failure::Code;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::core::{self, Answer, failure};
use super::{RpcStream, record_inbound};
use crate::protocols::Protocols;

/// Where an inbound RPC's answer goes: what an [`RpcResponder`] holds.
///
/// [`RpcResponder`]: super::RpcResponder
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
pub(crate) struct DirectReply(pub(super) Option<Arc<Answering>>);

impl Drop for DirectReply {
    fn drop(&mut self) {
        if let Some(answering) = self.0.take() {
            answering.finish(failure(Code::NoResponse, "no response"), "no_response");
        }
    }
}

/// An inbound RPC whose request and FIN are both in, waiting for its answer. No task
/// waits with it: whoever gets there first writes into its substream, the
/// application's responder (the answer) or the connection's task once the inbound
/// timeout passed ([`AnswerDeadlines`]). Saves the substream's task a wake-up and a
/// poll per request, and the hand-over of the answer through a channel.
///
/// [`AnswerDeadlines`]: super::AnswerDeadlines
pub(crate) struct Answering {
    /// Taken by the first of the answer and the timeout.
    pub(super) state: parking_lot::Mutex<Option<AnswerState>>,
    /// `state` was taken; read without the lock by the deadline queue.
    pub(super) done: AtomicBool,
}

impl fmt::Debug for Answering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answering")
            .field("done", &self.is_done())
            .finish()
    }
}

/// What writing an inbound RPC's answer takes.
pub(super) struct AnswerState {
    pub(super) io: RpcStream,
    pub(super) protocols: Arc<Protocols>,
    /// The route's index in the node's routes.
    pub(super) route: usize,
    /// The inbound timeout's deadline, which also bounds a write that must wait.
    pub(super) deadline: tokio::time::Instant,
    /// The peer's inbound RPC permit, released with the answer.
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Answering {
    /// Writes the application's answer, unless the timeout got there first.
    fn answer(&self, result: Answer) {
        let Some(state) = self.take() else {
            return;
        };
        let route = &state.protocols.routes[state.route];
        if let Answer::Data(data) = &result {
            route.metrics.bytes_out.inc_by(data.len() as u64);
        }
        let (response, label) = core::response_to(result);
        state.write(response, label);
    }

    /// Writes `response` and counts the outcome as `label`, unless it is answered.
    pub(super) fn finish(&self, response: RpcResponse, label: &'static str) {
        if let Some(state) = self.take() {
            state.write(response, label);
        }
    }

    /// Tells the caller the server ran out of time, unless it is answered.
    pub(super) fn time_out(&self) {
        self.finish(failure(Code::Timeout, "server timed out"), "timeout");
    }

    pub(super) fn take(&self) -> Option<AnswerState> {
        let state = self.state.lock().take();
        self.done.store(true, Ordering::Release);
        state
    }

    /// Whether it is answered (or timed out).
    pub(super) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }
}

/// Writes `head` and then `body` into `io` as far as it takes them without waiting;
/// returns how many bytes of each it took, or `None` if a write failed or took
/// nothing.
fn write_now<W: AsyncWrite + Unpin>(
    io: &mut W,
    head: &[u8],
    body: &[u8],
) -> Option<(usize, usize)> {
    let mut cx = Context::from_waker(Waker::noop());
    let (mut head_written, mut body_written) = (0, 0);
    loop {
        let in_head = head_written < head.len();
        let rest = if in_head {
            &head[head_written..]
        } else if body_written < body.len() {
            &body[body_written..]
        } else {
            return Some((head_written, body_written));
        };
        match Pin::new(&mut *io).poll_write(&mut cx, rest) {
            Poll::Ready(Ok(n)) if n > 0 && in_head => head_written += n,
            Poll::Ready(Ok(n)) if n > 0 => body_written += n,
            Poll::Pending => return Some((head_written, body_written)),
            Poll::Ready(_) => return None,
        }
    }
}

impl AnswerState {
    /// Writes `response` and our FIN without waiting (the answer of a small request
    /// fits the substream's window); a task writes what the window did not take.
    fn write(self, response: RpcResponse, label: &'static str) {
        let max = self.protocols.routes[self.route].max_message_size;
        let Some(whole) = core::frame_len(&response, max) else {
            // Dropping the substream resets it: the caller learns the answer is lost.
            return self.record("write_failed");
        };
        self.write_frame(&core::AnswerFrame::new(response, whole), label);
    }

    /// Writes `frame`, then our FIN, as far as the substream takes them now; a task
    /// writes the rest, until the deadline (the substream is then dropped, which resets
    /// it, as on the task path).
    fn write_frame(mut self, frame: &core::AnswerFrame, label: &'static str) {
        let (head, body) = (frame.head(), frame.body());
        let Some((head_written, body_written)) = write_now(&mut self.io, head, body) else {
            return self.record("write_failed");
        };
        if head_written == head.len() && body_written == body.len() {
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(&mut self.io).poll_shutdown(&mut cx) {
                Poll::Ready(Ok(())) => return self.record(label),
                Poll::Ready(Err(_)) => return self.record("write_failed"),
                Poll::Pending => {}
            }
        }
        // The caller's window is short.
        let head = head[head_written..].to_vec();
        let body = body.slice(body_written..);
        let runtime = self.protocols.runtime.clone();
        runtime.spawn(async move {
            let finish = async {
                self.io.write_all(&head).await?;
                self.io.write_all(&body).await?;
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
        record_inbound(&self.protocols.routes[self.route], label);
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    /// Takes one byte per call, and `budget` calls before it answers `Pending`.
    struct Trickle {
        taken: Vec<u8>,
        budget: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.budget == 0 {
                return Poll::Pending;
            }
            self.budget -= 1;
            self.taken.push(buf[0]);
            Poll::Ready(Ok(1))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_write_cut_anywhere_resumes_where_it_stopped() {
        let head: Vec<u8> = (0..7).collect();
        let body: Vec<u8> = (100..=120).collect();
        let whole: Vec<u8> = head.iter().chain(&body).copied().collect();
        for cut in 0..=whole.len() + 1 {
            let mut io = Trickle {
                taken: Vec::new(),
                budget: cut,
            };
            let (h, b) = write_now(&mut io, &head, &body).unwrap();
            let took = cut.min(whole.len());
            assert_eq!(
                (h, b),
                (took.min(head.len()), took.saturating_sub(head.len()))
            );
            assert_eq!(io.taken, whole[..took]);
            // The rest, from the offsets returned, completes the frame.
            io.budget = usize::MAX;
            assert_eq!(
                write_now(&mut io, &head[h..], &body[b..]),
                Some((head.len() - h, body.len() - b))
            );
            assert_eq!(io.taken, whole);
        }
    }
}
