//! The negotiation exchange as state machines with no I/O: bytes in, bytes out.
//!
//! [`ListenerCore`] and [`DialerCore`] consume whole messages from an input buffer and
//! append their answers to an output buffer; the async layer in [`negotiate`](super)
//! only moves bytes between those buffers and the stream. Bytes past the message that
//! settles the negotiation stay in the input buffer: they are the first application data.

use std::borrow::Cow;

use bytes::{Buf, BytesMut};
use tokio_util::codec::Encoder;

use super::MAX_PROPOSALS;
use super::codec::{ENCODED_HEADER, HEADER, LineCodec, Message, encode_list, peek_line};
use super::error::NegotiateError;

/// Where a listener stands after the input it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerProgress {
    /// No decision yet: send the queued output, then read more.
    NeedInput,
    /// The dialer proposed `supported[index]` and the echo is queued.
    Accepted(usize),
}

/// The responding side: checks the header, answers each proposal with an echo (if
/// supported) or `na`, and answers `ls` with the list of supported protocols.
#[derive(Debug, Default)]
pub(crate) struct ListenerCore {
    header_seen: bool,
    /// Proposals (and `ls` requests) answered so far.
    proposals: usize,
    /// An `na` was sent: a dialer that gives up now has been refused, not misbehaved.
    sent_na: bool,
}

impl ListenerCore {
    /// A listener that has read nothing yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Consumes whole messages from `input`, queueing answers on `out`, until a
    /// proposal of one of `supported` is accepted or the input runs out.
    pub(crate) fn on_input<P: AsRef<str>>(
        &mut self,
        supported: &[P],
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<ListenerProgress, NegotiateError> {
        self.step(supported, input, out)
            .map_err(|err| self.gave_up_or(err))
    }

    /// The error for a stream that ended before a protocol was agreed.
    pub(crate) fn on_eof(&self) -> NegotiateError {
        self.gave_up_or(NegotiateError::UnexpectedEof)
    }

    /// The error for a stream whose read failed before a protocol was agreed: after an
    /// `na`, a dialer that resets the stream (the usual way to drop it) has given up.
    pub(crate) fn on_read_error(&self, err: std::io::Error) -> NegotiateError {
        if self.sent_na {
            NegotiateError::Refused
        } else {
            NegotiateError::Io(err)
        }
    }

    fn step<P: AsRef<str>>(
        &mut self,
        supported: &[P],
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<ListenerProgress, NegotiateError> {
        // Each message is read where it lies and passed over once answered.
        while let Some((taken, line)) = peek_line(input)? {
            let msg = Message::parse(line);
            if !self.header_seen {
                if msg != Message::Header {
                    return Err(NegotiateError::BadHeader);
                }
                self.header_seen = true;
                // A message that parsed is in its one encoding (the length prefix is
                // minimal), so the answer is a copy of it.
                out.extend_from_slice(&input[..taken]);
                input.advance(taken);
                continue;
            }
            let protocol = match msg {
                Message::Header => return Err(NegotiateError::UnexpectedMessage("second header")),
                Message::NotAvailable => {
                    return Err(NegotiateError::UnexpectedMessage("`na` from the dialer"));
                }
                Message::List => None,
                Message::Protocol(protocol) => Some(protocol),
            };
            if self.proposals == MAX_PROPOSALS {
                return Err(NegotiateError::TooManyProposals { max: MAX_PROPOSALS });
            }
            self.proposals += 1;
            let Some(protocol) = protocol else {
                encode_list(supported, out);
                input.advance(taken);
                continue;
            };
            let index = supported
                .iter()
                .position(|s| s.as_ref().as_bytes() == protocol);
            if let Some(index) = index {
                // The echo: a copy of the proposal as it came.
                out.extend_from_slice(&input[..taken]);
                input.advance(taken);
                return Ok(ListenerProgress::Accepted(index));
            }
            LineCodec.encode(Message::NotAvailable, out)?;
            input.advance(taken);
            self.sent_na = true;
        }
        Ok(ListenerProgress::NeedInput)
    }

    /// After an `na`, a dialer that closes the stream or sends something that is not a
    /// negotiation message (an optimistic dialer's data behind its refused proposal)
    /// has given up: that is a refusal, not a protocol violation.
    fn gave_up_or(&self, err: NegotiateError) -> NegotiateError {
        let gave_up = matches!(
            err,
            NegotiateError::UnexpectedEof
                | NegotiateError::Malformed(_)
                | NegotiateError::MessageTooLong { .. }
                | NegotiateError::LengthPrefixTooLong { .. }
                | NegotiateError::UnexpectedMessage(_)
        );
        if self.sent_na && gave_up {
            NegotiateError::Refused
        } else {
            err
        }
    }
}

/// Where a dialer stands after the input it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialerProgress {
    /// No answer yet: send the queued output, then read more.
    NeedInput,
    /// The listener echoed the current proposal.
    Accepted,
    /// The listener answered `na`: propose another protocol or give up.
    Refused,
}

/// The proposing side: sends the header and one proposal at a time, and reads the
/// listener's header and its answer to each proposal.
#[derive(Debug)]
pub(crate) struct DialerCore {
    header_seen: bool,
    /// The protocol awaiting an answer; `None` once it is answered. Borrowed for a
    /// `'static` id (all of the stack's): a substream's negotiation allocates no copy.
    proposal: Option<Cow<'static, str>>,
}

impl DialerCore {
    /// Starts a negotiation: queues the header and a proposal of `protocol` on `out`.
    pub(crate) fn start(
        protocol: impl Into<Cow<'static, str>>,
        out: &mut BytesMut,
    ) -> Result<Self, NegotiateError> {
        let protocol = protocol.into();
        validate_protocol(&protocol)?;
        let mut core = DialerCore {
            header_seen: false,
            proposal: None,
        };
        // Room for both messages at once (each takes at most a 2-byte length prefix),
        // and for a small first write behind them; and for a read, as an optimistic
        // dialer reads the answer into this buffer once it is sent (`Negotiated`).
        let room = ENCODED_HEADER.len() + protocol.len() + 3 + super::FIRST_WRITE_ROOM;
        out.reserve(room.max(super::READ_CHUNK));
        out.extend_from_slice(ENCODED_HEADER);
        core.queue_proposal(protocol, out)?;
        Ok(core)
    }

    /// Queues a proposal of `protocol` on `out`, after the previous one was refused.
    pub(crate) fn propose(
        &mut self,
        protocol: impl Into<Cow<'static, str>>,
        out: &mut BytesMut,
    ) -> Result<(), NegotiateError> {
        let protocol = protocol.into();
        validate_protocol(&protocol)?;
        self.queue_proposal(protocol, out)
    }

    /// Queues a proposal of `protocol`, already validated.
    fn queue_proposal(
        &mut self,
        protocol: Cow<'static, str>,
        out: &mut BytesMut,
    ) -> Result<(), NegotiateError> {
        LineCodec.encode(Message::Protocol(protocol.as_bytes()), out)?;
        self.proposal = Some(protocol);
        Ok(())
    }

    /// Consumes whole messages from `input` until the current proposal is answered or
    /// the input runs out.
    pub(crate) fn on_input(
        &mut self,
        input: &mut BytesMut,
    ) -> Result<DialerProgress, NegotiateError> {
        // Each message is read where it lies and passed over once understood.
        while let Some((taken, line)) = peek_line(input)? {
            let msg = Message::parse(line);
            if !self.header_seen {
                if msg != Message::Header {
                    return Err(NegotiateError::BadHeader);
                }
                self.header_seen = true;
                input.advance(taken);
                continue;
            }
            let Some(proposal) = self.proposal.take() else {
                return Err(NegotiateError::UnexpectedMessage("answer to no proposal"));
            };
            let progress = match msg {
                Message::Protocol(echo) if echo == proposal.as_bytes() => {
                    Ok(DialerProgress::Accepted)
                }
                Message::NotAvailable => Ok(DialerProgress::Refused),
                Message::Protocol(_) => Err(NegotiateError::UnexpectedMessage(
                    "echo of a protocol that was not proposed",
                )),
                Message::Header => Err(NegotiateError::UnexpectedMessage("second header")),
                Message::List => Err(NegotiateError::UnexpectedMessage("`ls` from the listener")),
            };
            input.advance(taken);
            return progress;
        }
        Ok(DialerProgress::NeedInput)
    }

    /// The error for a stream that ended before the listener answered.
    pub(crate) fn on_eof(&self) -> NegotiateError {
        NegotiateError::UnexpectedEof
    }
}

/// Checks that `protocol` can be proposed: a `/`-prefixed id (other implementations
/// refuse anything else), not the header, with no newline, that fits in a message.
pub(crate) fn validate_protocol(protocol: &str) -> Result<(), NegotiateError> {
    if !protocol.starts_with('/') {
        return Err(NegotiateError::InvalidProtocol("must start with '/'"));
    }
    if protocol.contains('\n') {
        return Err(NegotiateError::InvalidProtocol(
            "must not contain a newline",
        ));
    }
    if protocol.as_bytes() == HEADER {
        return Err(NegotiateError::InvalidProtocol("is the multistream header"));
    }
    if protocol.len() + 1 > super::MAX_MESSAGE_LEN {
        return Err(NegotiateError::InvalidProtocol(
            "longer than a negotiation message may be",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
