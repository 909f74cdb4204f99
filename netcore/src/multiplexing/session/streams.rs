//! The handles' side of [`Session`]: what the substream handles call to open, accept,
//! read, write, shut down, reset and drop streams.

use std::io;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};

use bytes::BytesMut;
use tokio::io::ReadBuf;
use tokio::time::Instant;

use super::{ConnState, SEND_BUF_STEP, Session, StreamState};
use crate::multiplexing::config::SPEC_INITIAL_WINDOW;
use crate::multiplexing::error::MuxError;
use crate::multiplexing::frame::{FrameType, Header, flags};
use crate::multiplexing::priority::Priority;

/// What a stream's receive window is multiplied by when its reader keeps up with the
/// link (half the window read within two round trips): from the initial 256 KiB to the
/// 64 MiB a 1 Gbit/s link across continents needs in three round trips.
const WINDOW_GROWTH: u32 = 8;

impl Session {
    // ---- The handles' side. ----

    /// Opens a stream of class `priority`: its SYN rides on its first frame, so this
    /// costs no round trip.
    pub(crate) fn open_stream(
        &mut self,
        now: Instant,
        priority: Priority,
    ) -> Result<u32, MuxError> {
        self.check_open()?;
        if let Some(code) = self.remote_go_away {
            return Err(MuxError::RemoteGoAway(code));
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(MuxError::TooManyStreams(self.config.max_streams));
        }
        let id = self.next_id;
        self.next_id = id.checked_add(2).ok_or(MuxError::StreamIdsExhausted)?;
        let window = self.config.initial_window;
        self.granted += window as usize;
        let mut stream = StreamState::new(
            SPEC_INITIAL_WINDOW,
            window,
            flags::SYN,
            now,
            &mut self.spare,
        );
        stream.priority = priority;
        self.streams.insert(id, stream);
        self.schedule(id);
        Ok(id)
    }

    /// Puts stream `id` in class `priority`; if it waits to send, it waits there.
    pub(crate) fn set_priority(&mut self, id: u32, priority: Priority) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let from = std::mem::replace(&mut s.priority, priority);
        if s.queued && from != priority {
            self.ready.requeue(id, from, priority);
        }
    }

    /// The next inbound stream; `None` once the connection closed or went away.
    pub(crate) fn poll_accept(&mut self, waker: &Waker) -> Poll<Option<u32>> {
        if let Some(id) = self.inbound.pop_front() {
            return Poll::Ready(Some(id));
        }
        if !matches!(self.state, ConnState::Open) || self.remote_go_away.is_some() {
            return Poll::Ready(None);
        }
        self.incoming = Some(waker.clone());
        Poll::Pending
    }

    /// Inbound streams go to an acceptor the connection task calls, not to whoever
    /// polls `Incoming`: a new stream no longer wakes that poller.
    pub(crate) fn set_direct_accept(&mut self, on: bool) {
        self.direct_accept = on;
    }

    /// Whether inbound streams wait for the acceptor.
    pub(crate) fn direct_inbound_waiting(&self) -> bool {
        self.direct_accept && !self.inbound.is_empty()
    }

    /// The oldest inbound stream not yet accepted.
    pub(crate) fn take_inbound(&mut self) -> Option<u32> {
        self.inbound.pop_front()
    }

    /// Nobody accepts inbound streams any more: refuse new ones, reset queued ones.
    pub(crate) fn close_incoming(&mut self) {
        self.incoming_open = false;
        while let Some(id) = self.inbound.pop_front() {
            self.drop_handle(id);
        }
    }

    /// Reads buffered data of stream `id` into `out`; EOF after the remote's FIN.
    pub(crate) fn poll_read(
        &mut self,
        id: u32,
        waker: &Waker,
        out: &mut ReadBuf<'_>,
        now: impl FnOnce() -> Instant,
    ) -> Poll<io::Result<()>> {
        let closed = !matches!(self.state, ConnState::Open | ConnState::Closing { .. });
        let closed_error = if closed {
            Some(self.closed_error())
        } else {
            None
        };
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(MuxError::StreamReset.into_io()));
        };
        if s.read_failed {
            return Poll::Ready(Err(MuxError::StreamReset.into_io()));
        }
        if s.recv_buf.is_empty() {
            if s.read_closed {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = closed_error {
                return Poll::Ready(Err(e.into_io()));
            }
            s.reader = Some(waker.clone());
            return Poll::Pending;
        }
        let (spare, max) = (
            &mut self.spare_payloads,
            self.config.max_frame_size as usize,
        );
        s.recv_buf
            .read_into(out, |payload| spare.keep(payload, max));
        if !closed {
            self.maybe_update_window(id, now);
        }
        Poll::Ready(Ok(()))
    }

    /// Sends a window update once half the window was read, growing the window first
    /// when it was read within two RTTs (the link is faster than the window allows): by
    /// [`WINDOW_GROWTH`], or at once to the largest window grown on the connection, as
    /// far as the connection's cap leaves room.
    fn maybe_update_window(&mut self, id: u32, now: impl FnOnce() -> Instant) {
        let (rtt, max_window, cap, learned) = (
            self.rtt,
            self.config.max_window,
            self.config.max_connection_window,
            self.learned_window,
        );
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.read_closed || s.reset {
            return;
        }
        let freed = s.recv_window - s.recv_credit - s.recv_buf.len() as u32;
        if freed < s.recv_window / 2 {
            return;
        }
        // Read the clock only when an update is due: reads are the hot path.
        let now = now();
        if let Some(rtt) = rtt
            && now.saturating_duration_since(s.epoch) < rtt * 2
        {
            // A stream that shows it keeps up goes straight to the largest window
            // grown on its connection: the path is known, so each new stream (each RPC)
            // does not ramp up again. Streams that never read fast stay small.
            let grown = (s.recv_window.saturating_mul(WINDOW_GROWTH))
                .max(learned)
                .min(max_window);
            let room = cap.saturating_sub(self.granted);
            let extra = ((grown - s.recv_window) as usize).min(room);
            if extra > 0 {
                let grown = s.recv_window + extra as u32;
                self.granted += extra;
                s.recv_window = grown;
                self.learned_window = self.learned_window.max(grown);
                self.stats.window_grows.fetch_add(1, Ordering::Relaxed);
            }
        }
        let delta = s.recv_window - s.recv_credit - s.recv_buf.len() as u32;
        s.recv_credit += delta;
        s.epoch = now;
        // A pending ACK (or SYN) goes with it.
        let fl = std::mem::take(&mut s.flags_pending);
        self.queue_control(Header::new(FrameType::WindowUpdate, fl, id, delta));
    }

    /// Takes as much of `data` as the send window and buffer allow.
    pub(crate) fn poll_write(
        &mut self,
        id: u32,
        waker: &Waker,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.check_open() {
            return Poll::Ready(Err(e.into_io()));
        }
        let send_buffer = self.config.send_buffer;
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(MuxError::StreamReset.into_io()));
        };
        if s.reset {
            return Poll::Ready(Err(MuxError::StreamReset.into_io()));
        }
        if s.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let buffered = s.send_buf.len();
        let room = (s.send_credit as usize)
            .saturating_sub(buffered)
            .min(send_buffer.saturating_sub(buffered));
        if room == 0 {
            s.writer = Some(waker.clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        if s.send_buf.capacity() - s.send_buf.len() < n {
            // Grow in steps, larger each time up to several frames: the frames split
            // off share the buffer, so small steps would mean an allocation per write
            // for a busy stream, and large first steps a waste for a short one.
            s.send_buf.reserve(n.max(s.send_step));
            s.send_step = (s.send_step * 2).min(SEND_BUF_STEP);
        }
        crate::copy::extend_bytes(&mut s.send_buf, &data[..n]);
        self.schedule(id);
        Poll::Ready(Ok(n))
    }

    /// Ready once everything written to stream `id` has been taken by the connection
    /// task for writing to the socket (at most one write batch ahead of it); an error
    /// if the stream was reset or is gone, or the connection closed.
    pub(crate) fn poll_sent(&mut self, id: u32, waker: &Waker) -> Poll<io::Result<()>> {
        if let Err(e) = self.check_open() {
            return Poll::Ready(Err(e.into_io()));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Poll::Ready(Err(MuxError::StreamReset.into_io()));
        };
        if s.reset {
            return Poll::Ready(Err(MuxError::StreamReset.into_io()));
        }
        if s.send_buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        // Woken, as a blocked writer is, each time frames of the stream go out.
        s.writer = Some(waker.clone());
        Poll::Pending
    }

    /// Half-closes stream `id`: a FIN follows what is buffered.
    pub(crate) fn shutdown(&mut self, id: u32) -> io::Result<()> {
        let Some(s) = self.streams.get_mut(&id) else {
            return Err(MuxError::StreamReset.into_io());
        };
        if s.reset {
            return Err(MuxError::StreamReset.into_io());
        }
        s.write_closed = true;
        self.schedule(id);
        Ok(())
    }

    /// Resets stream `id`: buffered data is dropped both ways and the remote gets RST.
    pub(crate) fn reset(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.reset {
            return;
        }
        s.reset = true;
        s.read_failed = true;
        s.send_buf = BytesMut::new();
        s.recv_buf.clear();
        let fl = flags::RST | std::mem::take(&mut s.flags_pending);
        self.wake_stream(id);
        self.queue_control(Header::new(FrameType::WindowUpdate, fl, id, 0));
        self.remove_if_finished(id);
    }

    /// The handle of stream `id` is gone: unless the stream is closed both ways (or
    /// closed for writing, when the FIN still goes out first) it is reset.
    pub(crate) fn drop_handle(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        s.handle = false;
        s.reader = None;
        s.writer = None;
        if !s.reset {
            if !s.write_closed {
                self.reset(id);
            } else if !s.read_closed {
                s.recv_buf.clear();
                if s.fin_sent {
                    self.reset(id);
                } else {
                    s.rst_after_fin = true;
                }
            }
        }
        self.remove_if_finished(id);
    }
}
