//! The multistream-select 1.0 wire format: each message is an unsigned-varint length,
//! then that many bytes, the last of them a newline.
//!
//! [`LineCodec`] checks the declared length against [`MAX_MESSAGE_LEN`] before it waits
//! for (or reserves room for) the message, and reads at most
//! [`MAX_LENGTH_PREFIX_LEN`] bytes of length prefix.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use unsigned_varint::{decode, encode};

use super::error::NegotiateError;
use super::{MAX_LENGTH_PREFIX_LEN, MAX_MESSAGE_LEN};

/// The header both sides send first.
pub(crate) const HEADER: &[u8] = b"/multistream/1.0.0";
/// The header as a whole message: its length prefix (the header's length with the
/// newline, under 128, so one varint byte), the header and the newline.
pub(crate) const ENCODED_HEADER: &[u8] = &encoded_header();

const fn encoded_header() -> [u8; HEADER.len() + 2] {
    assert!(
        HEADER.len() + 1 < 0x80,
        "the header's length prefix is one byte"
    );
    let mut out = [0u8; HEADER.len() + 2];
    out[0] = (HEADER.len() + 1) as u8;
    let mut i = 0;
    while i < HEADER.len() {
        out[i + 1] = HEADER[i];
        i += 1;
    }
    out[HEADER.len() + 1] = b'\n';
    out
}
/// "Not available": the listener refuses the proposed protocol.
const NOT_AVAILABLE: &[u8] = b"na";
/// "List": the dialer asks which protocols the listener supports.
const LIST: &[u8] = b"ls";

/// One negotiation message, as its line without the trailing newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// `/multistream/1.0.0`.
    Header,
    /// `na`.
    NotAvailable,
    /// `ls`.
    List,
    /// Any other line: a protocol id, proposed by a dialer or echoed by a listener.
    Protocol(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The message a line (without its newline) carries.
    pub(crate) fn parse(line: &'a [u8]) -> Message<'a> {
        match line {
            HEADER => Message::Header,
            NOT_AVAILABLE => Message::NotAvailable,
            LIST => Message::List,
            protocol => Message::Protocol(protocol),
        }
    }

    /// The line of this message, without its newline.
    fn line(self) -> &'a [u8] {
        match self {
            Message::Header => HEADER,
            Message::NotAvailable => NOT_AVAILABLE,
            Message::List => LIST,
            Message::Protocol(protocol) => protocol,
        }
    }
}

/// Frames negotiation messages: decodes to a line without its newline, encodes a
/// [`Message`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LineCodec;

/// Finds the first whole message at the start of `src` without consuming it: returns
/// how many bytes it takes (length prefix and newline included) and its line without
/// the newline, or `None` while it is incomplete. The negotiation cores read messages
/// this way, in place, and advance past them once they have answered.
pub(crate) fn peek_line(src: &[u8]) -> Result<Option<(usize, &[u8])>, NegotiateError> {
    let prefix_end = src
        .iter()
        .take(MAX_LENGTH_PREFIX_LEN)
        .position(|b| decode::is_last(*b));
    let Some(prefix_len) = prefix_end.map(|i| i + 1) else {
        if src.len() >= MAX_LENGTH_PREFIX_LEN {
            return Err(NegotiateError::LengthPrefixTooLong {
                max: MAX_LENGTH_PREFIX_LEN,
            });
        }
        return Ok(None);
    };
    let (len, _) = decode::usize(&src[..prefix_len])
        .map_err(|_| NegotiateError::Malformed("length prefix is not minimal"))?;
    if len > MAX_MESSAGE_LEN {
        return Err(NegotiateError::MessageTooLong {
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    if len == 0 {
        return Err(NegotiateError::Malformed("empty message"));
    }
    if src.len() < prefix_len + len {
        return Ok(None);
    }
    let Some((b'\n', line)) = src[prefix_len..prefix_len + len].split_last() else {
        return Err(NegotiateError::Malformed("no trailing newline"));
    };
    if line.contains(&b'\n') {
        return Err(NegotiateError::Malformed("newline inside a message"));
    }
    Ok(Some((prefix_len + len, line)))
}

impl Decoder for LineCodec {
    type Item = BytesMut;
    type Error = NegotiateError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, NegotiateError> {
        let Some((taken, line)) = peek_line(src)? else {
            return Ok(None);
        };
        let line_len = line.len();
        src.advance(taken - line_len - 1);
        let mut line = src.split_to(line_len + 1);
        line.truncate(line_len);
        Ok(Some(line))
    }
}

impl Encoder<Message<'_>> for LineCodec {
    type Error = NegotiateError;

    fn encode(&mut self, msg: Message<'_>, dst: &mut BytesMut) -> Result<(), NegotiateError> {
        let line = msg.line();
        let len = line.len() + 1;
        if len > MAX_MESSAGE_LEN {
            return Err(NegotiateError::MessageTooLong {
                len,
                max: MAX_MESSAGE_LEN,
            });
        }
        let mut prefix = encode::usize_buffer();
        let prefix = encode::usize(len, &mut prefix);
        dst.reserve(prefix.len() + len);
        dst.put_slice(prefix);
        dst.put_slice(line);
        dst.put_u8(b'\n');
        Ok(())
    }
}

/// Appends the answer to `ls`: one message whose body lists `protocols`, each as an
/// unsigned-varint length, the id and a newline, and ends with a newline of its own (the
/// layout of the multistream-select spec and of libp2p's implementations). Protocols are
/// listed in order while the message stays within [`MAX_MESSAGE_LEN`]; the ones that
/// would pass it are left out, as no dialer with our limit could read them.
pub(crate) fn encode_list<P: AsRef<str>>(protocols: &[P], dst: &mut BytesMut) {
    let mut buf = encode::usize_buffer();
    let mut body_len = 1; // the closing newline
    let mut listed = 0;
    for p in protocols {
        let item = p.as_ref().len() + 1;
        let with = body_len + encode::usize(item, &mut buf).len() + item;
        if with > MAX_MESSAGE_LEN {
            break;
        }
        body_len = with;
        listed += 1;
    }
    dst.reserve(MAX_LENGTH_PREFIX_LEN + body_len);
    dst.put_slice(encode::usize(body_len, &mut buf));
    for p in &protocols[..listed] {
        let id = p.as_ref().as_bytes();
        dst.put_slice(encode::usize(id.len() + 1, &mut buf));
        dst.put_slice(id);
        dst.put_u8(b'\n');
    }
    dst.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(msg: Message<'_>) -> BytesMut {
        let mut dst = BytesMut::new();
        LineCodec.encode(msg, &mut dst).unwrap();
        dst
    }

    #[test]
    fn header_is_encoded_as_the_spec_shows() {
        assert_eq!(&encoded(Message::Header)[..], b"\x13/multistream/1.0.0\n");
        assert_eq!(&encoded(Message::Header)[..], ENCODED_HEADER);
        assert_eq!(&encoded(Message::NotAvailable)[..], b"\x03na\n");
        assert_eq!(&encoded(Message::List)[..], b"\x03ls\n");
    }

    #[test]
    fn the_answer_to_ls_lists_each_protocol_with_its_length_and_ends_with_a_newline() {
        let mut dst = BytesMut::new();
        encode_list(&["/a/1", "/bb/2"], &mut dst);
        assert_eq!(&dst[..], b"\x0e\x05/a/1\n\x06/bb/2\n\n");
        let mut empty = BytesMut::new();
        encode_list::<&str>(&[], &mut empty);
        assert_eq!(&empty[..], b"\x01\n");
    }

    #[test]
    fn the_answer_to_ls_stays_within_the_message_limit() {
        let long = "/".repeat(200);
        let protocols = vec![long.as_str(); 10];
        let mut dst = BytesMut::new();
        encode_list(&protocols, &mut dst);
        // 203 bytes an entry (two bytes of prefix, the id, its newline): five fit in
        // 1024 with the closing newline, behind a two-byte prefix of the whole.
        let (len, body) = decode::usize(&dst).unwrap();
        assert_eq!(len, 5 * 203 + 1);
        assert_eq!(body.len(), len, "one whole message");
        assert!(len <= MAX_MESSAGE_LEN);
    }

    #[test]
    fn lines_decode_one_at_a_time_and_leave_the_rest() {
        let mut src = encoded(Message::Header);
        src.extend_from_slice(&encoded(Message::Protocol(b"/echo/1")));
        src.extend_from_slice(b"data");
        assert_eq!(&LineCodec.decode(&mut src).unwrap().unwrap()[..], HEADER);
        assert_eq!(
            &LineCodec.decode(&mut src).unwrap().unwrap()[..],
            b"/echo/1"
        );
        assert_eq!(
            &src[..],
            b"data",
            "bytes after the lines are left untouched"
        );
    }

    #[test]
    fn partial_line_waits_for_more() {
        let full = encoded(Message::Header);
        for cut in 0..full.len() {
            let mut src = BytesMut::from(&full[..cut]);
            assert!(
                LineCodec.decode(&mut src).unwrap().is_none(),
                "cut at {cut}"
            );
            assert_eq!(src.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn declared_length_over_the_maximum_is_refused_before_the_body_arrives() {
        // 1025 = 0x81 0x08 as a varint; no body follows.
        let mut src = BytesMut::from(&[0x81, 0x08][..]);
        let capacity = src.capacity();
        assert!(matches!(
            LineCodec.decode(&mut src),
            Err(NegotiateError::MessageTooLong {
                len: 1025,
                max: MAX_MESSAGE_LEN
            })
        ));
        assert_eq!(src.capacity(), capacity, "nothing was reserved");
    }

    #[test]
    fn message_at_the_maximum_decodes() {
        let mut src = BytesMut::new();
        let mut prefix = encode::usize_buffer();
        src.extend_from_slice(encode::usize(MAX_MESSAGE_LEN, &mut prefix));
        src.extend_from_slice(&[b'/'; MAX_MESSAGE_LEN - 1]);
        src.put_u8(b'\n');
        let line = LineCodec.decode(&mut src).unwrap().unwrap();
        assert_eq!(line.len(), MAX_MESSAGE_LEN - 1);
    }

    #[test]
    fn length_prefix_past_its_maximum_is_refused() {
        let mut src = BytesMut::from(&[0x80, 0x80][..]);
        assert!(matches!(
            LineCodec.decode(&mut src),
            Err(NegotiateError::LengthPrefixTooLong {
                max: MAX_LENGTH_PREFIX_LEN
            })
        ));
    }

    #[test]
    fn non_minimal_prefix_empty_message_and_missing_newline_are_malformed() {
        for bad in [&b"\x83\x00na\n"[..], b"\x00", b"\x03nax"] {
            let mut src = BytesMut::from(bad);
            assert!(
                matches!(
                    LineCodec.decode(&mut src),
                    Err(NegotiateError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn newline_inside_a_message_is_malformed() {
        let mut src = BytesMut::from(&b"\x05/a\nb\n"[..]);
        assert!(matches!(
            LineCodec.decode(&mut src),
            Err(NegotiateError::Malformed("newline inside a message"))
        ));
    }

    #[test]
    fn encoding_a_line_over_the_maximum_fails() {
        let long = vec![b'/'; MAX_MESSAGE_LEN];
        let mut dst = BytesMut::new();
        assert!(matches!(
            LineCodec.encode(Message::Protocol(&long), &mut dst),
            Err(NegotiateError::MessageTooLong { .. })
        ));
        assert!(dst.is_empty());
    }

    #[test]
    fn parse_names_the_reserved_lines() {
        assert_eq!(Message::parse(HEADER), Message::Header);
        assert_eq!(Message::parse(b"na"), Message::NotAvailable);
        assert_eq!(Message::parse(b"ls"), Message::List);
        assert_eq!(Message::parse(b"/x"), Message::Protocol(b"/x"));
    }

    proptest! {
        #[test]
        fn protocol_lines_round_trip(line in "/[a-z0-9/._-]{0,1000}") {
            let mut src = encoded(Message::Protocol(line.as_bytes()));
            let decoded = LineCodec.decode(&mut src).unwrap().unwrap();
            prop_assert_eq!(&decoded[..], line.as_bytes());
            prop_assert!(src.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut src = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = LineCodec.decode(&mut src) {}
        }
    }
}
