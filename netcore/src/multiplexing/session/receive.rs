//! The frame reader's side of [`Session`]: decoded headers, payloads, stream flags,
//! inbound SYNs, pings and the remote's protocol errors.

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use super::{ConnState, Payload, PingState, Session, StreamState};
use crate::multiplexing::config::SPEC_INITIAL_WINDOW;
use crate::multiplexing::error::{MuxError, ProtocolError};
use crate::multiplexing::frame::{FrameType, Header, SESSION_ID, flags, go_away};

impl Session {
    /// Takes a decoded header. Handles it whole unless it is a data frame, in which case
    /// it says what to do with the payload; errors are the remote's protocol violations.
    pub(crate) fn on_header(&mut self, h: &Header, now: Instant) -> Result<Payload, ProtocolError> {
        match h.ty {
            FrameType::Ping | FrameType::GoAway if h.stream_id != SESSION_ID => {
                return Err(ProtocolError::WrongStreamId(
                    if h.ty == FrameType::Ping {
                        "Ping"
                    } else {
                        "GoAway"
                    },
                    h.stream_id,
                ));
            }
            FrameType::Data | FrameType::WindowUpdate if h.stream_id == SESSION_ID => {
                return Err(ProtocolError::WrongStreamId("stream", SESSION_ID));
            }
            FrameType::Ping => {
                self.on_ping(h, now);
                return Ok(Payload::None);
            }
            FrameType::GoAway => {
                self.remote_go_away = Some(h.length);
                self.to_wake.extend(self.incoming.take());
                return Ok(Payload::None);
            }
            FrameType::Data | FrameType::WindowUpdate => {}
        }
        let id = h.stream_id;
        let is_data = h.ty == FrameType::Data;
        let len = if is_data { h.length } else { 0 };
        if h.has(flags::SYN) && !self.accept_syn(h, now)? {
            return Ok(if len > 0 {
                Payload::Skip(len as usize)
            } else {
                Payload::None
            });
        }
        let Some(s) = self.streams.get_mut(&id) else {
            // A stream we have forgotten (reset or finished): frames in flight still come.
            return Ok(if len > 0 {
                Payload::Skip(len as usize)
            } else {
                Payload::None
            });
        };
        if !is_data {
            s.send_credit = s
                .send_credit
                .checked_add(h.length)
                .ok_or(ProtocolError::WindowOverflow(id))?;
            self.to_wake.extend(s.writer.take());
            self.schedule(id);
            self.on_stream_flags(id, h.flags);
            return Ok(Payload::None);
        }
        if len > s.recv_credit {
            return Err(ProtocolError::WindowExceeded {
                stream: id,
                len,
                credit: s.recv_credit,
            });
        }
        if len == 0 {
            self.on_stream_flags(id, h.flags);
            return Ok(Payload::None);
        }
        if s.reset || s.read_closed || !s.handle {
            // Data nobody will read: still counted against the window, then dropped.
            s.recv_credit -= len;
            return Ok(Payload::Skip(len as usize));
        }
        Ok(Payload::Deliver(len as usize))
    }

    /// The payload of a data frame [`on_header`](Self::on_header) asked to deliver.
    pub(crate) fn on_data(&mut self, h: &Header, payload: &[u8]) {
        let id = h.stream_id;
        if let Some(s) = self.streams.get_mut(&id) {
            s.recv_credit -= payload.len() as u32;
            s.recv_buf.push_slice(payload);
            self.to_wake.extend(s.reader.take());
        }
        self.on_stream_flags(id, h.flags);
    }

    /// Like [`on_data`](Self::on_data) for a payload read into its own buffer.
    pub(crate) fn on_data_bytes(&mut self, h: &Header, payload: Bytes) {
        let id = h.stream_id;
        if let Some(s) = self.streams.get_mut(&id) {
            s.recv_credit -= payload.len() as u32;
            s.recv_buf.push(payload);
            self.to_wake.extend(s.reader.take());
        }
        self.on_stream_flags(id, h.flags);
    }

    /// The flags of a skipped data frame still count (FIN, RST).
    pub(crate) fn on_skipped(&mut self, h: &Header) {
        self.on_stream_flags(h.stream_id, h.flags);
    }

    fn on_stream_flags(&mut self, id: u32, fl: u16) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if fl & flags::RST != 0 && !s.reset {
            s.reset = true;
            s.send_buf = BytesMut::new();
            if !s.read_closed {
                s.recv_buf.clear();
                s.read_failed = true;
            }
            s.read_closed = true;
            self.wake_stream(id);
        } else if fl & flags::FIN != 0 && !s.read_closed {
            s.read_closed = true;
            self.to_wake.extend(s.reader.take());
        }
        self.remove_if_finished(id);
    }

    /// A SYN: accept the stream (true) or refuse it with RST (false).
    fn accept_syn(&mut self, h: &Header, now: Instant) -> Result<bool, ProtocolError> {
        let id = h.stream_id;
        if self.is_ours(id) || self.streams.contains_key(&id) {
            return Err(ProtocolError::InvalidStreamId(id));
        }
        let len = if h.ty == FrameType::Data { h.length } else { 0 };
        if len > SPEC_INITIAL_WINDOW {
            return Err(ProtocolError::WindowExceeded {
                stream: id,
                len,
                credit: SPEC_INITIAL_WINDOW,
            });
        }
        if !matches!(self.state, ConnState::Open)
            || !self.incoming_open
            || self.streams.len() >= self.config.max_streams
        {
            self.stats.count_refused();
            tracing::debug!(stream = id, "refusing inbound stream");
            self.queue_control(Header::new(FrameType::WindowUpdate, flags::RST, id, 0));
            return Ok(false);
        }
        // The spec's window; a window update's extra credit is added by the caller
        // like that of any other window update.
        let window = self.config.initial_window;
        self.granted += window as usize;
        let stream = StreamState::new(
            SPEC_INITIAL_WINDOW,
            window,
            flags::ACK,
            now,
            &mut self.spare,
        );
        let announce = stream.announce > 0;
        self.streams.insert(id, stream);
        // The ACK rides on the stream's first frame, as in rust-yamux: a response
        // carries it, with no frame of its own. A window larger than the spec's is
        // announced at once, so the remote can use it.
        if announce {
            self.schedule(id);
        }
        self.inbound.push_back(id);
        if !self.direct_accept {
            self.to_wake.extend(self.incoming.take());
        }
        Ok(true)
    }

    fn on_ping(&mut self, h: &Header, now: Instant) {
        if h.has(flags::SYN) {
            self.queue_control(Header::new(
                FrameType::Ping,
                flags::ACK,
                SESSION_ID,
                h.length,
            ));
        } else if h.has(flags::ACK) {
            match self.ping {
                PingState::Awaiting { nonce, sent_at } if nonce == h.length => {
                    let rtt = now.saturating_duration_since(sent_at);
                    self.rtt = Some(rtt);
                    self.min_rtt = Some(self.min_rtt.map_or(rtt, |min| min.min(rtt)));
                    self.ping = PingState::Idle {
                        next: now + self.config.rtt_probe_interval,
                    };
                }
                _ => tracing::debug!(nonce = h.length, "ignoring unexpected pong"),
            }
        }
    }

    /// The remote broke the protocol: drop pending data, send GoAway(protocol error)
    /// within the close timeout from `now`.
    pub(crate) fn on_protocol_error(&mut self, e: ProtocolError, now: Instant) {
        tracing::debug!(error = %e, "yamux protocol error");
        self.stats.count_protocol_error();
        self.ready.clear();
        self.control.clear();
        self.state = ConnState::Closing {
            code: go_away::PROTOCOL_ERROR,
        };
        self.go_away_sent = false;
        // A close already under way keeps its earlier deadline.
        if self.close_deadline.is_none() {
            self.close_deadline = now.checked_add(self.config.close_timeout);
        }
        self.pending_reason = Some(MuxError::Protocol(e));
        self.close_incoming();
        self.wake_all();
    }
}
