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
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SUPPORTED: [&str; 2] = ["/net/rpc/1", "/net/direct/1"];

    fn wire(msgs: &[Message<'_>]) -> BytesMut {
        let mut out = BytesMut::new();
        for msg in msgs {
            LineCodec.encode(*msg, &mut out).unwrap();
        }
        out
    }

    fn proto(p: &str) -> Message<'_> {
        Message::Protocol(p.as_bytes())
    }

    #[test]
    fn listener_echoes_header_and_supported_proposal_and_keeps_trailing_data() {
        let mut input = wire(&[Message::Header, proto("/net/direct/1")]);
        input.extend_from_slice(b"request");
        let mut out = BytesMut::new();
        let progress = ListenerCore::new()
            .on_input(&SUPPORTED, &mut input, &mut out)
            .unwrap();
        assert_eq!(progress, ListenerProgress::Accepted(1));
        assert_eq!(out, wire(&[Message::Header, proto("/net/direct/1")]));
        assert_eq!(&input[..], b"request");
    }

    #[test]
    fn listener_echo_of_a_long_id_with_a_two_byte_length_prefix_is_its_encoding() {
        // 200 bytes with the newline: the length prefix takes two bytes.
        let long = format!("/{}", "x".repeat(198));
        let supported = [long.as_str()];
        let mut input = wire(&[Message::Header, proto(&long)]);
        assert_eq!(input[ENCODED_HEADER.len()..][..2], [0xc8, 0x01]);
        input.extend_from_slice(b"request");
        let mut out = BytesMut::new();
        let progress = ListenerCore::new()
            .on_input(&supported, &mut input, &mut out)
            .unwrap();
        assert_eq!(progress, ListenerProgress::Accepted(0));
        assert_eq!(out, wire(&[Message::Header, proto(&long)]));
        assert_eq!(&input[..], b"request");
    }

    #[test]
    fn a_dialer_buffer_has_room_for_the_answer_read_into_it() {
        let mut out = BytesMut::new();
        DialerCore::start("/a", &mut out).unwrap();
        assert!(out.capacity() >= super::super::READ_CHUNK);
    }

    #[test]
    fn listener_answers_unsupported_proposal_with_na_and_ls_with_its_list_then_accepts() {
        let mut listener = ListenerCore::new();
        let mut input = wire(&[Message::Header, proto("/other/1"), Message::List]);
        let mut out = BytesMut::new();
        assert_eq!(
            listener.on_input(&SUPPORTED, &mut input, &mut out).unwrap(),
            ListenerProgress::NeedInput
        );
        let mut expected = wire(&[Message::Header, Message::NotAvailable]);
        encode_list(&SUPPORTED, &mut expected);
        assert_eq!(out, expected);
        out.clear();
        let mut input = wire(&[proto("/net/rpc/1")]);
        assert_eq!(
            listener.on_input(&SUPPORTED, &mut input, &mut out).unwrap(),
            ListenerProgress::Accepted(0)
        );
        assert_eq!(out, wire(&[proto("/net/rpc/1")]));
    }

    #[test]
    fn listener_sends_its_header_as_soon_as_it_reads_the_dialers() {
        let mut input = wire(&[Message::Header]);
        let mut out = BytesMut::new();
        let progress = ListenerCore::new()
            .on_input(&SUPPORTED, &mut input, &mut out)
            .unwrap();
        assert_eq!(progress, ListenerProgress::NeedInput);
        assert_eq!(out, wire(&[Message::Header]));
    }

    #[test]
    fn listener_refuses_a_missing_header() {
        let mut input = wire(&[proto("/net/rpc/1")]);
        let err = ListenerCore::new()
            .on_input(&SUPPORTED, &mut input, &mut BytesMut::new())
            .unwrap_err();
        assert!(matches!(err, NegotiateError::BadHeader));
    }

    #[test]
    fn listener_stops_after_the_maximum_number_of_proposals() {
        let mut msgs = vec![Message::Header];
        msgs.extend(std::iter::repeat_n(proto("/nope"), MAX_PROPOSALS));
        let mut input = wire(&msgs);
        let mut out = BytesMut::new();
        let mut listener = ListenerCore::new();
        assert_eq!(
            listener.on_input(&SUPPORTED, &mut input, &mut out).unwrap(),
            ListenerProgress::NeedInput,
            "the maximum itself is answered"
        );
        let mut one_more = wire(&[proto("/net/rpc/1")]);
        let err = listener
            .on_input(&SUPPORTED, &mut one_more, &mut out)
            .unwrap_err();
        assert!(matches!(
            err,
            NegotiateError::TooManyProposals { max: MAX_PROPOSALS }
        ));
    }

    #[test]
    fn listener_eof_is_unexpected_before_any_na_and_a_refusal_after() {
        let listener = ListenerCore::new();
        assert!(matches!(listener.on_eof(), NegotiateError::UnexpectedEof));

        let mut listener = ListenerCore::new();
        let mut input = wire(&[Message::Header, proto("/nope")]);
        listener
            .on_input(&SUPPORTED, &mut input, &mut BytesMut::new())
            .unwrap();
        assert!(matches!(listener.on_eof(), NegotiateError::Refused));
    }

    #[test]
    fn listener_reads_data_behind_a_refused_proposal_as_a_refusal() {
        let mut input = wire(&[Message::Header, proto("/nope")]);
        input.extend_from_slice(b"\x00\x00\x00\x05hello");
        let err = ListenerCore::new()
            .on_input(&SUPPORTED, &mut input, &mut BytesMut::new())
            .unwrap_err();
        assert!(matches!(err, NegotiateError::Refused));
    }

    #[test]
    fn listener_refuses_na_from_the_dialer() {
        let mut input = wire(&[Message::Header, Message::NotAvailable]);
        let err = ListenerCore::new()
            .on_input(&SUPPORTED, &mut input, &mut BytesMut::new())
            .unwrap_err();
        assert!(matches!(err, NegotiateError::UnexpectedMessage(_)));
    }

    #[test]
    fn dialer_queues_header_and_proposal_together() {
        let mut out = BytesMut::new();
        DialerCore::start("/net/rpc/1", &mut out).unwrap();
        assert_eq!(out, wire(&[Message::Header, proto("/net/rpc/1")]));
    }

    #[test]
    fn dialer_accepts_the_echo_and_keeps_data_behind_it() {
        let mut dialer = DialerCore::start("/net/rpc/1", &mut BytesMut::new()).unwrap();
        let mut input = wire(&[Message::Header]);
        assert_eq!(
            dialer.on_input(&mut input).unwrap(),
            DialerProgress::NeedInput
        );
        let mut input = wire(&[proto("/net/rpc/1")]);
        input.extend_from_slice(b"response");
        assert_eq!(
            dialer.on_input(&mut input).unwrap(),
            DialerProgress::Accepted
        );
        assert_eq!(&input[..], b"response");
    }

    #[test]
    fn dialer_sees_na_as_refused_and_can_propose_again() {
        let mut dialer = DialerCore::start("/a", &mut BytesMut::new()).unwrap();
        let mut input = wire(&[Message::Header, Message::NotAvailable]);
        assert_eq!(
            dialer.on_input(&mut input).unwrap(),
            DialerProgress::Refused
        );
        let mut out = BytesMut::new();
        dialer.propose("/b", &mut out).unwrap();
        assert_eq!(out, wire(&[proto("/b")]));
        let mut input = wire(&[proto("/b")]);
        assert_eq!(
            dialer.on_input(&mut input).unwrap(),
            DialerProgress::Accepted
        );
    }

    #[test]
    fn dialer_refuses_an_echo_of_another_protocol_and_a_missing_header() {
        let mut dialer = DialerCore::start("/a", &mut BytesMut::new()).unwrap();
        let mut input = wire(&[Message::Header, proto("/b")]);
        assert!(matches!(
            dialer.on_input(&mut input),
            Err(NegotiateError::UnexpectedMessage(_))
        ));
        let mut dialer = DialerCore::start("/a", &mut BytesMut::new()).unwrap();
        let mut input = wire(&[proto("/a")]);
        assert!(matches!(
            dialer.on_input(&mut input),
            Err(NegotiateError::BadHeader)
        ));
    }

    #[test]
    fn dialer_refuses_a_second_answer() {
        let mut dialer = DialerCore::start("/a", &mut BytesMut::new()).unwrap();
        let mut input = wire(&[
            Message::Header,
            Message::NotAvailable,
            Message::NotAvailable,
        ]);
        assert_eq!(
            dialer.on_input(&mut input).unwrap(),
            DialerProgress::Refused
        );
        assert!(matches!(
            dialer.on_input(&mut input),
            Err(NegotiateError::UnexpectedMessage("answer to no proposal"))
        ));
    }

    #[test]
    fn invalid_protocol_ids_are_refused_before_anything_is_queued() {
        let too_long = format!("/{}", "x".repeat(super::super::MAX_MESSAGE_LEN));
        for bad in ["", "rpc", "/a\nb", "/multistream/1.0.0", too_long.as_str()] {
            let mut out = BytesMut::new();
            assert!(
                matches!(
                    DialerCore::start(bad.to_owned(), &mut out),
                    Err(NegotiateError::InvalidProtocol(_))
                ),
                "{bad:?}"
            );
            assert!(out.is_empty());
        }
    }

    /// Runs a dialer proposing `proposals` against a listener supporting `supported`,
    /// moving at most `chunk` bytes at a time each way, with `data` sent right behind
    /// the accepted proposal. Returns the dialer's and listener's outcomes and the bytes
    /// the listener had left over.
    fn run(
        proposals: &[&str],
        supported: &[&str],
        chunk: usize,
        data: &[u8],
    ) -> (Result<usize, String>, Result<usize, String>, Vec<u8>) {
        let mut to_listener = BytesMut::new();
        let mut dialer = DialerCore::start(proposals[0].to_owned(), &mut to_listener).unwrap();
        let mut listener = ListenerCore::new();
        let (mut dialer_in, mut listener_in, mut to_dialer) =
            (BytesMut::new(), BytesMut::new(), BytesMut::new());
        let mut index = 0;
        let mut listener_result = None;
        for _ in 0..10_000 {
            let n = chunk.min(to_listener.len());
            listener_in.extend_from_slice(&to_listener.split_to(n));
            if listener_result.is_none() {
                match listener.on_input(supported, &mut listener_in, &mut to_dialer) {
                    Ok(ListenerProgress::Accepted(i)) => listener_result = Some(Ok(i)),
                    Ok(ListenerProgress::NeedInput) => {}
                    Err(e) => listener_result = Some(Err(e.to_string())),
                }
            }
            let n = chunk.min(to_dialer.len());
            dialer_in.extend_from_slice(&to_dialer.split_to(n));
            match dialer.on_input(&mut dialer_in) {
                Ok(DialerProgress::Accepted) => {
                    to_listener.extend_from_slice(data);
                    while !to_listener.is_empty() {
                        let n = chunk.min(to_listener.len());
                        listener_in.extend_from_slice(&to_listener.split_to(n));
                    }
                    let listener_result = match listener_result {
                        Some(r) => r,
                        None => {
                            match listener.on_input(supported, &mut listener_in, &mut to_dialer) {
                                Ok(ListenerProgress::Accepted(i)) => Ok(i),
                                other => Err(format!("{other:?}")),
                            }
                        }
                    };
                    return (Ok(index), listener_result, listener_in.to_vec());
                }
                Ok(DialerProgress::Refused) => {
                    index += 1;
                    match proposals.get(index) {
                        Some(next) => dialer
                            .propose((*next).to_owned(), &mut to_listener)
                            .unwrap(),
                        None => {
                            let listener_result = listener_result
                                .unwrap_or_else(|| Err(listener.on_eof().to_string()));
                            return (Err("refused".into()), listener_result, Vec::new());
                        }
                    }
                }
                Ok(DialerProgress::NeedInput) => {}
                Err(e) => return (Err(e.to_string()), Err("dialer failed".into()), Vec::new()),
            }
        }
        panic!("the exchange did not end");
    }

    proptest! {
        #[test]
        fn cores_agree_on_the_dialers_first_protocol_the_listener_supports(
            proposals in proptest::sample::subsequence(vec!["/a", "/b", "/c", "/d"], 1..=4)
                .prop_shuffle(),
            supported in proptest::sample::subsequence(vec!["/b", "/c", "/d", "/e"], 0..=4),
            chunk in 1usize..64,
            data in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let (dialer, listener, leftover) = run(&proposals, &supported, chunk, &data);
            match proposals.iter().position(|p| supported.contains(p)) {
                Some(i) => {
                    prop_assert_eq!(dialer, Ok(i));
                    let expected = supported.iter().position(|s| *s == proposals[i]);
                    prop_assert_eq!(listener, Ok(expected.unwrap()));
                    prop_assert_eq!(leftover, data, "data behind the proposal is kept");
                }
                None => {
                    prop_assert_eq!(dialer, Err("refused".to_string()));
                    prop_assert_eq!(listener, Err(NegotiateError::Refused.to_string()));
                }
            }
        }

        #[test]
        fn arbitrary_bytes_into_the_listener_core_never_panic_nor_grow_its_answers(
            bytes in proptest::collection::vec(any::<u8>(), 0..4096),
            chunk in 1usize..300,
        ) {
            let mut listener = ListenerCore::new();
            let mut input = BytesMut::new();
            let mut out = BytesMut::new();
            for piece in bytes.chunks(chunk) {
                input.extend_from_slice(piece);
                match listener.on_input(&SUPPORTED, &mut input, &mut out) {
                    Ok(ListenerProgress::NeedInput) => {
                        prop_assert!(input.len() < super::super::MAX_MESSAGE_LEN + 2);
                    }
                    Ok(ListenerProgress::Accepted(_)) | Err(_) => break,
                }
            }
            // A header and at most one answer per allowed proposal.
            prop_assert!(out.len() <= 20 + 4 * MAX_PROPOSALS + 2 * super::super::MAX_MESSAGE_LEN);
        }
    }
}
