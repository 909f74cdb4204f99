//! Tests of the negotiation cores, fed exact bytes.

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
fn listener_read_failure_is_an_io_error_before_any_na_and_a_refusal_after() {
    let reset = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    let listener = ListenerCore::new();
    assert!(matches!(
        listener.on_read_error(reset()),
        NegotiateError::Io(_)
    ));

    // A dialer that drops its stream after an `na` resets it: it gave up.
    let mut listener = ListenerCore::new();
    let mut input = wire(&[Message::Header, proto("/nope")]);
    listener
        .on_input(&SUPPORTED, &mut input, &mut BytesMut::new())
        .unwrap();
    assert!(matches!(
        listener.on_read_error(reset()),
        NegotiateError::Refused
    ));
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
                    None => match listener.on_input(supported, &mut listener_in, &mut to_dialer) {
                        Ok(ListenerProgress::Accepted(i)) => Ok(i),
                        other => Err(format!("{other:?}")),
                    },
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
                        let listener_result =
                            listener_result.unwrap_or_else(|| Err(listener.on_eof().to_string()));
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
