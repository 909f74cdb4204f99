//! One direction of a connection: the sender's buffer, the bytes on the wire, the
//! receiver's window, and the instants at which each side's state changes.

use std::collections::VecDeque;
use std::time::Duration;

use super::events::Slot;
use super::fluid::{EPSILON, Fluid};
use crate::config::NodeId;

/// Window updates sent within this span of each other travel as one (the later count,
/// at the earlier one's time): a reader that reads in many small steps does not queue an
/// update for each.
const UPDATE_COALESCING: Duration = Duration::from_micros(100);

/// What a reader can do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Readable {
    /// This many bytes have arrived and are unread.
    Bytes(u64),
    /// The writer shut down and every byte has been read.
    Eof,
    /// Nothing yet.
    Nothing,
}

/// One direction of a connection.
#[derive(Debug)]
pub(crate) struct Flow {
    pub(crate) src: NodeId,
    pub(crate) dst: NodeId,
    /// One-way latency from `src` to `dst`: data and the FIN.
    latency: Duration,
    /// One-way latency back: window updates.
    back_latency: Duration,
    fluid: Fluid,
    /// Bytes the writer handed over.
    written: u64,
    /// Bytes the reader took.
    read: u64,
    /// The reader's count as the sender last heard it.
    acked: u64,
    /// The most bytes ever sent: bytes lost in a cut are resent, not unsent again.
    sent_mark: u64,
    window: u64,
    send_buffer: u64,
    lowat: Option<u64>,
    /// Window updates on their way to the sender: when each arrives, and the count.
    updates: VecDeque<(Duration, u64)>,
    /// The writer shut down: a FIN follows the last byte.
    write_closed: bool,
    /// When the FIN left, once every byte had.
    fin_sent: Option<Duration>,
    /// The handshake completed: the flow may carry bytes.
    pub(crate) open: bool,
    /// The reader's end was dropped: arriving bytes are discarded.
    pub(crate) reader_gone: bool,
    /// The writer heard that the reader is gone: writes fail.
    pub(crate) reset: bool,
    /// Its nodes are cut apart: nothing moves.
    pub(crate) cut: bool,
    /// Among the flows sharing capacity (it has bytes it may send).
    pub(crate) active: bool,
    pub(crate) waiting_read: bool,
    pub(crate) waiting_write: bool,
    /// The instant each timer is set for, by [`Slot`].
    pub(crate) scheduled: [Option<Duration>; 3],
}

/// What a flow is created with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FlowParams {
    pub(crate) src: NodeId,
    pub(crate) dst: NodeId,
    pub(crate) latency: Duration,
    pub(crate) back_latency: Duration,
    pub(crate) window: u64,
    pub(crate) send_buffer: u64,
}

impl Flow {
    pub(crate) fn new(now: Duration, params: FlowParams) -> Self {
        Self {
            src: params.src,
            dst: params.dst,
            latency: params.latency,
            back_latency: params.back_latency,
            fluid: Fluid::new(now),
            written: 0,
            read: 0,
            acked: 0,
            sent_mark: 0,
            window: params.window.max(1),
            send_buffer: params.send_buffer.max(1),
            lowat: None,
            updates: VecDeque::new(),
            write_closed: false,
            fin_sent: None,
            open: false,
            reader_gone: false,
            reset: false,
            cut: false,
            active: false,
            waiting_read: false,
            waiting_write: false,
            scheduled: [None; 3],
        }
    }

    /// Bytes sent by `now`, as a fraction.
    fn sent(&self, now: Duration) -> f64 {
        self.fluid.value(now)
    }

    /// How far the sender may send: its bytes, within the window it last heard of.
    pub(crate) fn target(&self) -> u64 {
        self.written.min(self.acked.saturating_add(self.window))
    }

    /// Whether the flow has bytes it may send now.
    pub(crate) fn wants_to_send(&self, now: Duration) -> bool {
        self.open && !self.cut && !self.reset && self.target() as f64 > self.sent(now) + EPSILON
    }

    /// Bytes arrived at the receiver by `now`.
    pub(crate) fn arrived(&self, now: Duration) -> u64 {
        let Some(left) = now.checked_sub(self.latency) else {
            return 0;
        };
        let arrived = (self.fluid.value_at(left) + EPSILON).floor() as u64;
        arrived.min(self.written)
    }

    pub(crate) fn readable(&self, now: Duration) -> Readable {
        let unread = self.arrived(now).saturating_sub(self.read);
        if unread > 0 {
            Readable::Bytes(unread)
        } else if self.read == self.written
            && self.fin_sent.is_some_and(|t| t + self.latency <= now)
        {
            Readable::Eof
        } else {
            Readable::Nothing
        }
    }

    /// Bytes handed over by the writer and not yet sent once.
    pub(crate) fn unsent(&self, now: Duration) -> u64 {
        let sent = ((self.sent(now) + EPSILON).floor() as u64).max(self.sent_mark);
        self.written.saturating_sub(sent)
    }

    /// The most unsent bytes the writer may leave: the send buffer, or the lower
    /// threshold set.
    fn threshold(&self) -> u64 {
        self.lowat
            .map_or(self.send_buffer, |l| l.min(self.send_buffer))
    }

    /// Bytes the writer may hand over now.
    pub(crate) fn room(&self, now: Duration) -> u64 {
        self.threshold().saturating_sub(self.unsent(now))
    }

    pub(crate) fn set_lowat(&mut self, lowat: Option<u64>) {
        self.lowat = lowat;
    }

    pub(crate) fn write(&mut self, n: u64) {
        self.written += n;
    }

    /// The reader took `n` bytes; the sender hears of it a latency later.
    pub(crate) fn consume(&mut self, now: Duration, n: u64) {
        self.read += n;
        let arrives = now + self.back_latency;
        match self.updates.back_mut() {
            Some((at, count)) if arrives.saturating_sub(*at) < UPDATE_COALESCING => {
                *count = self.read;
            }
            _ => self.updates.push_back((arrives, self.read)),
        }
    }

    /// Takes in the window updates that arrived by `now`.
    pub(crate) fn apply_updates(&mut self, now: Duration) {
        while let Some(&(at, count)) = self.updates.front() {
            if at > now {
                break;
            }
            self.acked = self.acked.max(count);
            self.updates.pop_front();
        }
    }

    /// Sends at `rate` from `now` on, up to the current target.
    pub(crate) fn set_rate(&mut self, now: Duration, rate: f64) {
        let cap = self.target() as f64;
        self.fluid.set(now, rate, cap, self.latency);
    }

    pub(crate) fn rate(&self) -> f64 {
        self.fluid.rate()
    }

    /// The writer shut down.
    pub(crate) fn close_write(&mut self) {
        self.write_closed = true;
    }

    pub(crate) fn write_closed(&self) -> bool {
        self.write_closed
    }

    /// Sends the FIN if every byte has left and it has not.
    pub(crate) fn send_fin_if_done(&mut self, now: Duration) {
        let done = self.sent(now) + EPSILON >= self.written as f64;
        if self.write_closed && self.fin_sent.is_none() && done && !self.cut {
            self.fin_sent = Some(now);
        }
    }

    /// The nodes were cut apart at `now`: bytes on the wire are lost and will be sent
    /// again, and so are the FIN and window updates on their way.
    pub(crate) fn cut(&mut self, now: Duration) {
        let sent = self.sent(now);
        self.sent_mark = self.sent_mark.max((sent + EPSILON).floor() as u64);
        let arrived = match now.checked_sub(self.latency) {
            Some(left) => self.fluid.value_at(left),
            None => 0.0,
        };
        self.fluid.rewind(now, arrived);
        if self.fin_sent.is_some_and(|t| t + self.latency > now) {
            self.fin_sent = None;
        }
        self.updates.clear();
        self.cut = true;
    }

    /// The cut was healed at `now`: the receiver's window is sent again.
    pub(crate) fn heal(&mut self, now: Duration) {
        self.cut = false;
        self.updates.push_back((now + self.back_latency, self.read));
    }

    /// The writer heard its reader is gone: what it had not sent is dropped.
    pub(crate) fn on_reset(&mut self, now: Duration) {
        self.reset = true;
        self.written = self
            .written
            .min(((self.sent(now) + EPSILON).floor() as u64).max(self.sent_mark));
    }

    /// Bytes sent and not yet read: those in flight and those unread at the receiver.
    #[cfg(test)]
    pub(crate) fn in_flight_and_unread(&self, now: Duration) -> f64 {
        self.sent(now) - self.read as f64
    }

    /// When the timer of `slot` should next fire, as of `now`.
    pub(crate) fn timer(&self, slot: Slot, now: Duration) -> Option<Duration> {
        match slot {
            Slot::Send => self.send_timer(),
            Slot::Read if self.waiting_read => self.read_timer(),
            Slot::Write if self.waiting_write => self.write_timer(now),
            Slot::Read | Slot::Write => None,
        }
    }

    /// An active flow: when it runs out of what it may send. A flow blocked by its
    /// window: when the next window update arrives.
    fn send_timer(&self) -> Option<Duration> {
        if self.active {
            return self.fluid.time_of(self.target() as f64);
        }
        let window_bound = self.open && !self.cut && !self.reset && self.target() < self.written;
        window_bound
            .then(|| self.updates.front().map(|(at, _)| *at))
            .flatten()
    }

    /// When the next unread byte, or the FIN after the last, arrives.
    fn read_timer(&self) -> Option<Duration> {
        let next_byte = (self.read < self.written)
            .then(|| self.fluid.time_of((self.read + 1) as f64))
            .flatten()
            .map(|t| t + self.latency);
        let fin = self.fin_sent.map(|t| t + self.latency);
        [next_byte, fin].into_iter().flatten().min()
    }

    /// Whether a waiting writer is to be woken: its unsent bytes fell to half the
    /// threshold, as Linux wakes a writer (so that it wakes to write a good share of
    /// the buffer, not a byte), or it can no longer write at all.
    pub(crate) fn writer_ready(&self, now: Duration) -> bool {
        self.reset || self.unsent(now) <= self.threshold() / 2
    }

    /// When a waiting writer is to be woken.
    fn write_timer(&self, now: Duration) -> Option<Duration> {
        if self.writer_ready(now) {
            return Some(now);
        }
        let goal = self.written - self.threshold() / 2;
        self.fluid.time_of(goal as f64)
    }
}
