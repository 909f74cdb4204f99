//! The multiplexer's core: every rule of the yamux protocol, with no I/O.
//!
//! A [`Session`] takes decoded frame headers, payload bytes and instants in, and gives
//! encoded frames ([`Session::poll_transmit`]) and wake-ups out. The substream handles
//! call into it for reads and writes; the connection task feeds it what the socket
//! delivered and writes what it returns. Tests drive it with exact frames and instants.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use super::Mode;
use super::buffers::{OutQueue, RecvBuffer, SparePayloads, clear_if_small};
use super::config::{MuxConfig, SPEC_INITIAL_WINDOW};
use super::error::MuxError;
use super::frame::{FrameType, Header, SESSION_ID, flags, go_away};
use super::priority::{Priority, ReadyQueue};
use super::stats::MuxStats;

/// The most a stream's send buffer grows by at a time (four 16 KiB frames).
const SEND_BUF_STEP: usize = 64 * 1024;

/// What a stream's send buffer grows by first: enough for a request or a response.
/// Each later growth doubles it, up to [`SEND_BUF_STEP`].
const FIRST_SEND_BUF_STEP: usize = 1024;

/// Buffers of finished streams a connection keeps for its next streams, and the largest
/// capacity kept: enough for request-sized streams, little for an idle connection.
const SPARE_BUFFERS: usize = 4;
const SPARE_BUFFER_CAPACITY: usize = 2 * 1024;

/// What the connection task does with the payload of a frame whose header it decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    /// No payload: the frame is fully handled.
    None,
    /// Read this many bytes and hand them to [`Session::on_data`].
    Deliver(usize),
    /// Read and drop this many bytes (data of a stream that is gone or refused).
    Skip(usize),
}

/// One stream's state, both halves.
#[derive(Debug)]
struct StreamState {
    /// Bytes written by the handle, not yet framed. Never more than `send_credit`.
    send_buf: BytesMut,
    /// `send_buf` was split to queue a large payload: it may share that allocation.
    send_buf_split: bool,
    /// Bytes the remote lets us send before its next window update.
    send_credit: u32,
    /// What `send_buf` grows by next.
    send_step: usize,
    /// SYN or ACK to put on the next frame of this stream.
    flags_pending: u16,
    /// Window above the spec's default to announce with the SYN/ACK.
    announce: u32,
    /// The handle shut down its write side: a FIN follows the buffered data.
    write_closed: bool,
    fin_sent: bool,
    /// The handle is gone while the remote still writes: RST right after the FIN.
    rst_after_fin: bool,
    /// In the ready queue.
    queued: bool,
    /// Its class in the ready queue.
    priority: Priority,
    writer: Option<Waker>,
    /// Data received, not yet read by the handle.
    recv_buf: RecvBuffer,
    /// The window this stream is granted; grows by auto-tuning.
    recv_window: u32,
    /// Bytes the remote may still send before our next window update.
    recv_credit: u32,
    /// When the last window update was sent (or the stream began).
    epoch: Instant,
    /// The remote sent FIN.
    read_closed: bool,
    reader: Option<Waker>,
    /// Reset by either side.
    reset: bool,
    /// Reads fail: reset locally, or by the remote before its FIN (after a FIN the
    /// data is complete and stays readable).
    read_failed: bool,
    /// A handle (or a pending accept) exists.
    handle: bool,
}

impl StreamState {
    /// A stream whose buffers start as `spare`'s, if it has any.
    fn new(
        send_credit: u32,
        recv_window: u32,
        flags_pending: u16,
        now: Instant,
        spare: &mut Vec<BytesMut>,
    ) -> Self {
        let send_buf = spare.pop().unwrap_or_default();
        let recv_buf = spare
            .pop()
            .map_or_else(RecvBuffer::default, RecvBuffer::with_tail);
        Self {
            send_buf,
            send_buf_split: false,
            send_credit,
            send_step: FIRST_SEND_BUF_STEP,
            flags_pending,
            announce: recv_window - SPEC_INITIAL_WINDOW,
            write_closed: false,
            fin_sent: false,
            rst_after_fin: false,
            queued: false,
            priority: Priority::default(),
            writer: None,
            recv_buf,
            recv_window,
            recv_credit: recv_window,
            epoch: now,
            read_closed: false,
            reader: None,
            reset: false,
            read_failed: false,
            handle: true,
        }
    }

    /// Whether a frame can be sent for this stream now.
    fn sendable(&self) -> bool {
        !self.reset
            && (self.flags_pending != 0
                || (!self.send_buf.is_empty() && self.send_credit > 0)
                || (self.write_closed && !self.fin_sent && self.send_buf.is_empty()))
    }

    /// Whether the stream is over and can be forgotten.
    fn finished(&self) -> bool {
        !self.handle && (self.reset || (self.fin_sent && self.read_closed && !self.queued))
    }
}

/// The RTT probe.
#[derive(Debug, Clone, Copy)]
enum PingState {
    /// A ping is out.
    Awaiting { nonce: u32, sent_at: Instant },
    /// The next ping goes out at this instant.
    Idle { next: Instant },
}

/// How far the connection is.
#[derive(Debug, Clone)]
enum ConnState {
    Open,
    /// A GoAway with this code goes out once the frames before it are sent.
    Closing {
        code: u32,
    },
    /// Over; `Ok` for a clean close.
    Closed(Result<(), MuxError>),
}

/// The state of one multiplexed connection. See the module docs.
#[derive(Debug)]
pub(crate) struct Session {
    mode: Mode,
    config: MuxConfig,
    /// Keyed by stream id with a fast seeded hasher: looked up on every frame.
    streams: HashMap<u32, StreamState, foldhash::fast::RandomState>,
    next_id: u32,
    /// Inbound streams not yet taken by `Incoming`.
    inbound: VecDeque<u32>,
    incoming_open: bool,
    incoming: Option<Waker>,
    /// An acceptor takes inbound streams (see `set_direct_accept`).
    direct_accept: bool,
    /// Buffers of finished streams, for new streams to start with (at most
    /// [`SPARE_BUFFERS`] of at most [`SPARE_BUFFER_CAPACITY`] bytes).
    spare: Vec<BytesMut>,
    /// Emptied buffers of large payloads the application read, for the next ones.
    spare_payloads: SparePayloads,
    /// Encoded control frames (window updates, pings, RSTs), sent before data.
    control: BytesMut,
    /// Streams with frames to send: by class, in turns within one.
    ready: ReadyQueue,
    /// Sum of the receive windows of all streams.
    granted: usize,
    /// The largest window a stream of this connection grew to: what the path's
    /// bandwidth-delay product asked for so far. A stream that keeps up grows to it at
    /// its first window update.
    learned_window: u32,
    rtt: Option<Duration>,
    /// The smallest round trip measured: the path's, without the queueing that bulk
    /// traffic adds to later probes.
    min_rtt: Option<Duration>,
    ping: PingState,
    next_nonce: u32,
    state: ConnState,
    go_away_sent: bool,
    remote_go_away: Option<u32>,
    /// Why a closing connection closes, when it is an error.
    pending_reason: Option<MuxError>,
    /// When a closing connection gives up sending and ends.
    close_deadline: Option<Instant>,
    stats: Arc<MuxStats>,
    /// The connection task, and whether it was woken since it last took frames.
    driver: Option<Waker>,
    driver_notified: bool,
    /// Tasks waiting for the connection to end.
    closed_waiters: Vec<Waker>,
    /// Wakers to call once the lock is released.
    pub(crate) to_wake: Vec<Waker>,
}

impl Session {
    /// A new session; its first RTT probe is queued at once.
    pub(crate) fn new(mode: Mode, config: MuxConfig, now: Instant) -> Self {
        let config = config.normalized();
        let mut session = Self {
            next_id: match mode {
                Mode::Client => 1,
                Mode::Server => 2,
            },
            mode,
            config,
            streams: HashMap::default(),
            inbound: VecDeque::new(),
            incoming_open: true,
            incoming: None,
            direct_accept: false,
            spare: Vec::new(),
            spare_payloads: SparePayloads::default(),
            control: BytesMut::new(),
            ready: ReadyQueue::default(),
            granted: 0,
            learned_window: 0,
            rtt: None,
            min_rtt: None,
            ping: PingState::Idle { next: now },
            next_nonce: 1,
            state: ConnState::Open,
            go_away_sent: false,
            remote_go_away: None,
            pending_reason: None,
            close_deadline: None,
            stats: Arc::new(MuxStats::default()),
            driver: None,
            driver_notified: false,
            closed_waiters: Vec::new(),
            to_wake: Vec::new(),
        };
        session.handle_timeout(now);
        session
    }

    /// The connection's counters.
    pub(crate) fn stats(&self) -> &Arc<MuxStats> {
        &self.stats
    }

    /// The last measured round-trip time.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// The smallest measured round-trip time.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    fn queue_control(&mut self, header: Header) {
        header.encode(&mut self.control);
        self.notify_driver();
    }

    fn notify_driver(&mut self) {
        if !self.driver_notified {
            self.driver_notified = true;
            if let Some(w) = self.driver.take() {
                self.to_wake.push(w);
            }
        }
    }

    fn schedule(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id)
            && !s.queued
            && s.sendable()
        {
            s.queued = true;
            self.ready.push(id, s.priority);
            self.notify_driver();
        }
    }

    fn wake_stream(&mut self, id: u32) {
        if let Some(s) = self.streams.get_mut(&id) {
            self.to_wake.extend(s.reader.take());
            self.to_wake.extend(s.writer.take());
        }
    }

    fn remove_if_finished(&mut self, id: u32) {
        if self.streams.get(&id).is_some_and(StreamState::finished)
            && let Some(s) = self.streams.remove(&id)
        {
            self.granted -= s.recv_window as usize;
            // Small buffers go to the next streams: a stream per request then costs
            // no allocation for them.
            // One that was ever split may share a larger allocation with a payload: it
            // is not kept.
            let send_buf = (!s.send_buf_split).then_some(s.send_buf);
            for mut buf in [send_buf, s.recv_buf.into_tail()].into_iter().flatten() {
                if self.spare.len() < SPARE_BUFFERS
                    && clear_if_small(&mut buf, SPARE_BUFFER_CAPACITY)
                {
                    self.spare.push(buf);
                }
            }
        }
    }

    fn is_ours(&self, id: u32) -> bool {
        match self.mode {
            Mode::Client => id & 1 == 1,
            Mode::Server => id & 1 == 0,
        }
    }

    fn check_open(&self) -> Result<(), MuxError> {
        match &self.state {
            ConnState::Open => Ok(()),
            ConnState::Closing { .. } | ConnState::Closed(Ok(())) => Err(MuxError::Closed),
            ConnState::Closed(Err(e)) => Err(e.clone()),
        }
    }

    /// The error a stream operation sees once the connection is over.
    fn closed_error(&self) -> MuxError {
        match &self.state {
            ConnState::Closed(Err(e)) => e.clone(),
            _ => MuxError::Closed,
        }
    }

    /// Begins a graceful close: what is buffered goes out, then GoAway(normal), within
    /// the close timeout from `now`.
    pub(crate) fn close(&mut self, now: Instant) {
        if matches!(self.state, ConnState::Open) {
            self.state = ConnState::Closing {
                code: go_away::NORMAL,
            };
            // A timeout past the clock's range means none.
            self.close_deadline = now.checked_add(self.config.close_timeout);
            self.close_incoming();
            self.notify_driver();
        }
    }

    /// Whether the connection is over (the connection task stops).
    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.state, ConnState::Closed(_))
    }

    /// Whether the connection is closing or closed.
    pub(crate) fn is_closed(&self) -> bool {
        !matches!(self.state, ConnState::Open)
    }

    /// How the connection ended, once it has.
    pub(crate) fn poll_closed(&mut self, waker: &Waker) -> Poll<Result<(), MuxError>> {
        match &self.state {
            ConnState::Closed(r) => Poll::Ready(r.clone()),
            _ => {
                if !self.closed_waiters.iter().any(|w| w.will_wake(waker)) {
                    self.closed_waiters.push(waker.clone());
                }
                Poll::Pending
            }
        }
    }

    // ---- The connection task's side. ----

    /// Registers the connection task's waker; it is woken when frames are ready.
    pub(crate) fn set_driver(&mut self, waker: &Waker) {
        if !self.driver.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.driver = Some(waker.clone());
        }
        self.driver_notified = false;
    }

    /// Bytes of control frames waiting: the task stops reading while this is large, so a
    /// remote that pings without reading cannot grow our memory.
    pub(crate) fn control_backlog(&self) -> usize {
        self.control.len()
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let spare_check = self.spare_payloads.check_at();
        let due = match (&self.state, self.ping) {
            (ConnState::Open, PingState::Idle { next }) => Some(next),
            (ConnState::Open, PingState::Awaiting { .. }) => None,
            (ConnState::Closing { .. }, _) => self.close_deadline,
            _ => return None,
        };
        due.into_iter().chain(spare_check).min()
    }

    /// Sends the RTT probe when it is due; ends a closing connection whose close timed
    /// out.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.spare_payloads.check(now);
        if matches!(self.state, ConnState::Closing { .. })
            && self.close_deadline.is_some_and(|deadline| now >= deadline)
        {
            // A protocol error stays the reason; otherwise the timeout is.
            self.finish(Err(MuxError::CloseTimedOut));
            return;
        }
        if let PingState::Idle { next } = self.ping
            && now >= next
            && matches!(self.state, ConnState::Open)
        {
            let nonce = self.next_nonce;
            self.next_nonce = self.next_nonce.wrapping_add(1);
            self.ping = PingState::Awaiting {
                nonce,
                sent_at: now,
            };
            self.queue_control(Header::new(FrameType::Ping, flags::SYN, SESSION_ID, nonce));
        }
    }

    /// A buffer for a large payload of `len` bytes read at `now` (see
    /// [`SparePayloads::take`]).
    pub(crate) fn payload_buffer(&mut self, len: usize, now: Instant) -> BytesMut {
        self.spare_payloads.take(len, now)
    }

    /// Appends frames to `out` until it holds at least `budget` bytes or nothing is
    /// left: control frames first, then data frames (at most `max_frame_size` each) of
    /// the ready streams in turns, higher classes first ([`Priority`]; a turn is one
    /// frame, or up to [`BULK_TURN`](super::BULK_TURN) bytes for a bulk stream), then
    /// the GoAway of a closing connection. Returns whether it took data of an [`Priority::Urgent`]
    /// stream; such a batch ends with the last urgent frame ready, so that the driver
    /// can flush it before anything of a lower class joins it.
    pub(crate) fn poll_transmit(&mut self, out: &mut OutQueue, budget: usize) -> bool {
        let mut urgent = false;
        if matches!(self.state, ConnState::Closed(_)) {
            return urgent;
        }
        if !self.control.is_empty() {
            out.copy(&self.control);
            self.control.clear();
        }
        let max_frame = self.config.max_frame_size as usize;
        while out.len() < budget {
            if urgent && !self.ready.has(Priority::Urgent) {
                break;
            }
            let Some(id) = self.ready.pop() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            s.queued = false;
            if !s.sendable() {
                continue;
            }
            let n = s.send_buf.len().min(max_frame).min(s.send_credit as usize);
            let mut fl = std::mem::take(&mut s.flags_pending);
            if fl != 0 && (s.announce > 0 || n == 0) {
                // The SYN/ACK goes on a window update that announces our larger window.
                let announce = std::mem::take(&mut s.announce);
                out.header(Header::new(FrameType::WindowUpdate, fl, id, announce));
                fl = 0;
            }
            let fin = s.write_closed && !s.fin_sent && n == s.send_buf.len();
            if n > 0 || fl != 0 {
                out.header(Header::new(FrameType::Data, fl, id, n as u32));
                if n > 0 {
                    s.send_buf_split |= out.payload_from(&mut s.send_buf, n);
                    urgent |= s.priority == Priority::Urgent;
                }
                s.send_credit -= n as u32;
                self.to_wake.extend(s.writer.take());
            }
            if fin {
                // FIN travels in an empty data frame of its own, in the same batch as
                // the stream's last data: some yamux implementations drop the payload
                // of a data frame that carries FIN (docs/WIRE.md).
                out.header(Header::new(FrameType::Data, flags::FIN, id, 0));
                s.fin_sent = true;
            }
            if s.fin_sent && s.rst_after_fin && !s.reset {
                s.reset = true;
                out.header(Header::new(FrameType::WindowUpdate, flags::RST, id, 0));
            }
            if s.sendable() {
                s.queued = true;
                self.ready.push_after_send(id, s.priority, n);
            }
            self.remove_if_finished(id);
        }
        if let ConnState::Closing { code } = self.state
            && self.ready.is_empty()
            && self.control.is_empty()
            && !self.go_away_sent
        {
            out.header(Header::new(FrameType::GoAway, 0, SESSION_ID, code));
            self.go_away_sent = true;
        }
        urgent
    }

    /// The GoAway of a closing connection is out: the task flushes and shuts down.
    pub(crate) fn go_away_sent(&self) -> bool {
        self.go_away_sent
    }

    /// The connection is over: `reason` is `Ok` for a clean end. Wakes every handle.
    pub(crate) fn finish(&mut self, reason: Result<(), MuxError>) {
        if matches!(self.state, ConnState::Closed(_)) {
            return;
        }
        let reason = match self.pending_reason.take() {
            Some(e) => Err(e),
            None => reason,
        };
        self.state = ConnState::Closed(reason);
        self.ready.clear();
        self.control.clear();
        self.wake_all();
        self.to_wake.append(&mut self.closed_waiters);
    }

    /// The remote closed its end: clean if it said GoAway(normal) first.
    pub(crate) fn on_eof(&mut self) {
        let reason = match self.remote_go_away {
            Some(go_away::NORMAL) => Ok(()),
            Some(code) => Err(MuxError::RemoteGoAway(code)),
            None if matches!(self.state, ConnState::Closing { .. }) => Ok(()),
            None => Err(MuxError::Closed),
        };
        self.finish(reason);
    }

    fn wake_all(&mut self) {
        for s in self.streams.values_mut() {
            self.to_wake.extend(s.reader.take());
            self.to_wake.extend(s.writer.take());
        }
        self.to_wake.extend(self.incoming.take());
    }

    #[cfg(test)]
    fn stream(&self, id: u32) -> Option<&StreamState> {
        self.streams.get(&id)
    }
}

mod receive;
mod streams;

#[cfg(test)]
mod priority_tests;
#[cfg(test)]
mod sent_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod window_tests;
