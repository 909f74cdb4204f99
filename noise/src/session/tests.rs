//! Tests of the Noise session, fed exact bytes.

use super::*;
use crate::suite::{CryptoBackend, NoiseProtocol, NoiseSuite};
use proptest::prelude::*;

/// Every protocol on every backend: the ring ones open frames in place, the
/// RustCrypto ones through snow.
pub(super) const SUITES: [NoiseSuite; 4] = [
    NoiseSuite {
        protocol: NoiseProtocol::AesGcmSha256,
        backend: CryptoBackend::Ring,
    },
    NoiseSuite {
        protocol: NoiseProtocol::ChaChaPolyBlake2s,
        backend: CryptoBackend::Ring,
    },
    NoiseSuite {
        protocol: NoiseProtocol::AesGcmSha256,
        backend: CryptoBackend::RustCrypto,
    },
    NoiseSuite {
        protocol: NoiseProtocol::ChaChaPolyBlake2s,
        backend: CryptoBackend::RustCrypto,
    },
];

/// The transport ciphers of an IK handshake on `suite`: the initiator's and the
/// responder's.
pub(crate) fn cipher_pair(suite: NoiseSuite) -> (TransportCipher, TransportCipher) {
    let (i, r) = handshake(suite, suite);
    (
        TransportCipher::from_handshake(i, suite).unwrap(),
        TransportCipher::from_handshake(r, suite).unwrap(),
    )
}

/// Two sessions joined by an IK handshake, the initiator's on `initiator`'s backend
/// and the responder's on `responder`'s (same protocol).
fn pair_of(initiator: NoiseSuite, responder: NoiseSuite) -> (NoiseSession, NoiseSession) {
    let (i, r) = handshake(initiator, responder);
    (
        NoiseSession::new(TransportCipher::from_handshake(i, initiator).unwrap()),
        NoiseSession::new(TransportCipher::from_handshake(r, responder).unwrap()),
    )
}

/// The two ends of an IK handshake, done.
fn handshake(
    initiator: NoiseSuite,
    responder: NoiseSuite,
) -> (snow::HandshakeState, snow::HandshakeState) {
    assert_eq!(initiator.protocol, responder.protocol);
    let builder = initiator.builder().unwrap();
    let (ik, rk) = (
        builder.generate_keypair().unwrap(),
        builder.generate_keypair().unwrap(),
    );
    let mut i = initiator
        .builder()
        .unwrap()
        .local_private_key(&ik.private)
        .unwrap()
        .remote_public_key(&rk.public)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut r = responder
        .builder()
        .unwrap()
        .local_private_key(&rk.private)
        .unwrap()
        .build_responder()
        .unwrap();
    let (mut buf, mut out) = ([0u8; 256], [0u8; 256]);
    let n = i.write_message(&[], &mut buf).unwrap();
    r.read_message(&buf[..n], &mut out).unwrap();
    let n = r.write_message(&[], &mut buf).unwrap();
    i.read_message(&buf[..n], &mut out).unwrap();
    (i, r)
}

pub(super) fn pair_with(suite: NoiseSuite) -> (NoiseSession, NoiseSession) {
    pair_of(suite, suite)
}

pub(super) fn pair() -> (NoiseSession, NoiseSession) {
    pair_with(crate::DEFAULT_SUITE)
}

/// Seals `data` (as one buffered write) and returns the frame's wire bytes.
pub(super) fn seal(s: &mut NoiseSession, data: &[u8]) -> Vec<u8> {
    assert_eq!(s.write_plaintext(data).unwrap(), data.len());
    assert!(s.seal().unwrap());
    let wire = s.pending_wire().to_vec();
    s.advance_wire(wire.len());
    wire
}

/// Feeds `bytes` into `s` as if read from the socket: each read takes at most the
/// space the session offers.
pub(super) fn feed(s: &mut NoiseSession, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let buf = s.read_buf();
        let n = (buf.capacity() - buf.len()).min(bytes.len());
        let capacity = buf.capacity();
        buf.extend_from_slice(&bytes[..n]);
        assert_eq!(buf.capacity(), capacity, "a read never grows the buffer");
        s.filled();
        bytes = &bytes[n..];
    }
}

/// Decodes into a reader with `room` bytes of space: what `decode` said, and what
/// it put into the reader.
pub(super) fn decode(s: &mut NoiseSession, room: usize) -> (Result<Decoded, FrameError>, Vec<u8>) {
    let mut storage = vec![0u8; room];
    let mut out = ReadBuf::new(&mut storage);
    let result = s.decode(&mut out);
    (result, out.filled().to_vec())
}

/// Takes up to `room` bytes of buffered plaintext.
pub(super) fn take(s: &mut NoiseSession, room: usize) -> Vec<u8> {
    let mut storage = vec![0u8; room];
    let mut out = ReadBuf::new(&mut storage);
    let n = s.take_plaintext(&mut out);
    assert_eq!(n, out.filled().len());
    out.filled().to_vec()
}

#[test]
fn every_suite_round_trips_and_the_backends_agree_on_the_wire() {
    for suite in SUITES {
        let other = NoiseSuite {
            backend: match suite.backend {
                CryptoBackend::Ring => CryptoBackend::RustCrypto,
                CryptoBackend::RustCrypto => CryptoBackend::Ring,
            },
            ..suite
        };
        // Same backend both ends, then each backend against the other: frames one
        // seals, the other opens, in both directions and over many nonces.
        for (x, y) in [(suite, suite), (suite, other)] {
            let (mut a, mut b) = pair_of(x, y);
            for i in 1..300usize {
                let data = vec![(i % 251) as u8; i * 7];
                let wire = seal(&mut a, &data);
                feed(&mut b, &wire);
                let (result, got) = decode(&mut b, MAX_NOISE_MESSAGE_LEN);
                assert_eq!(result, Ok(Decoded::Direct(data.len())), "{x:?} -> {y:?}");
                assert_eq!(got, data, "{x:?} -> {y:?}");
                let wire = seal(&mut b, &data);
                feed(&mut a, &wire);
                let (_, got) = decode(&mut a, MAX_NOISE_MESSAGE_LEN);
                assert_eq!(got, data, "{y:?} -> {x:?}");
            }
        }
    }
}

#[test]
fn a_tampered_or_replayed_frame_fails_on_every_suite() {
    for suite in SUITES {
        let (mut a, mut b) = pair_with(suite);
        let mut wire = seal(&mut a, b"hello");
        wire[4] ^= 1;
        feed(&mut b, &wire);
        assert_eq!(decode(&mut b, 64).0, Err(FrameError::Decrypt), "{suite:?}");
        // The failure sticks.
        assert_eq!(decode(&mut b, 64).0, Err(FrameError::Decrypt), "{suite:?}");

        let (mut a, mut b) = pair_with(suite);
        let wire = seal(&mut a, b"once");
        feed(&mut b, &wire);
        assert_eq!(decode(&mut b, 64).0, Ok(Decoded::Direct(4)));
        feed(&mut b, &wire);
        assert_eq!(decode(&mut b, 64).0, Err(FrameError::Decrypt), "{suite:?}");
    }
}

#[test]
fn buffers_never_grow_past_one_frame_whatever_the_write_sizes() {
    for suite in SUITES {
        let (mut a, mut b) = pair_with(suite);
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for size in [1usize, 7, 1000, 40_000, 65_519, 70_000, 3, 65_000] {
            let data: Vec<u8> = (0..size).map(|i| (i * 31 + size) as u8).collect();
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = a.write_plaintext(rest).unwrap();
                rest = &rest[n..];
                if a.unsealed_full() || rest.is_empty() {
                    a.seal().unwrap();
                    let wire = a.pending_wire().to_vec();
                    a.advance_wire(wire.len());
                    feed(&mut b, &wire);
                    while let (Ok(Decoded::Direct(_) | Decoded::Buffered), part) =
                        decode(&mut b, MAX_NOISE_MESSAGE_LEN)
                    {
                        got.extend(part);
                        while !b.plaintext().is_empty() {
                            got.extend(take(&mut b, MAX_NOISE_MESSAGE_LEN));
                        }
                    }
                }
                assert!(a.plain_out.capacity() <= MAX_WIRE_FRAME_LEN, "{suite:?}");
                assert!(a.wire_out.capacity() <= MAX_WIRE_FRAME_LEN, "{suite:?}");
            }
            sent.extend(data);
        }
        assert_eq!(got, sent, "{suite:?}");
    }
}

#[test]
fn a_sealed_frame_is_a_length_and_ciphertext_with_a_tag() {
    let (mut a, _) = pair();
    let wire = seal(&mut a, b"hello");
    assert_eq!(wire.len(), 2 + 5 + TAG_LEN);
    assert_eq!(&wire[..2], &[0, 21]);
    assert!(!a.seal().unwrap(), "nothing left to seal");
}

#[test]
fn in_place_a_reader_needs_room_for_the_plaintext_only() {
    for suite in &SUITES[..2] {
        let (mut a, mut b) = pair_with(*suite);
        let wire = seal(&mut a, b"hello");
        feed(&mut b, &wire);
        assert_eq!(
            decode(&mut b, 5),
            (Ok(Decoded::Direct(5)), b"hello".to_vec())
        );
        assert_eq!(decode(&mut b, 5).0, Ok(Decoded::NeedMore));
    }
}

#[test]
fn through_snow_a_reader_needs_room_for_the_whole_ciphertext() {
    for suite in &SUITES[2..] {
        let (mut a, mut b) = pair_with(*suite);
        let wire = seal(&mut a, b"hello");
        feed(&mut b, &wire);
        assert_eq!(
            decode(&mut b, 5 + TAG_LEN),
            (Ok(Decoded::Direct(5)), b"hello".to_vec())
        );
        // Room for the plaintext but not the tag: served from the buffer.
        let wire = seal(&mut a, b"hello");
        feed(&mut b, &wire);
        assert_eq!(decode(&mut b, 8), (Ok(Decoded::Buffered), Vec::new()));
        assert_eq!(take(&mut b, 8), b"hello");
    }
}

#[test]
fn a_frame_too_big_for_the_reader_is_buffered_and_handed_out_in_parts() {
    for suite in SUITES {
        let (mut a, mut b) = pair_with(suite);
        let wire = seal(&mut a, b"hello world");
        feed(&mut b, &wire);
        assert_eq!(decode(&mut b, 4), (Ok(Decoded::Buffered), Vec::new()));
        assert_eq!(take(&mut b, 4), b"hell");
        assert_eq!(b.plaintext(), b"o world");
    }
}

#[test]
fn plaintext_handed_out_in_parts_survives_more_frames_arriving() {
    for suite in SUITES {
        let (mut a, mut b) = pair_with(suite);
        let first: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let wire = seal(&mut a, &first);
        feed(&mut b, &wire);
        assert_eq!(decode(&mut b, 1000).0, Ok(Decoded::Buffered), "{suite:?}");
        let mut got = take(&mut b, 1000);
        // More frames arrive before the reader took the rest (not what
        // `NoiseStream` does, but the session must not lose or mix bytes).
        let wire = seal(&mut a, b"second");
        feed(&mut b, &wire);
        assert_eq!(decode(&mut b, 1000).0, Ok(Decoded::Buffered), "{suite:?}");
        while !b.plaintext().is_empty() {
            got.extend(take(&mut b, 1000));
        }
        assert_eq!(got, first, "{suite:?}");
        assert_eq!(
            decode(&mut b, 1000),
            (Ok(Decoded::Direct(6)), b"second".to_vec())
        );
    }
}

#[test]
fn a_frame_fed_one_byte_at_a_time_decodes_only_when_complete() {
    let (mut a, mut b) = pair();
    let wire = seal(&mut a, b"split");
    for (i, byte) in wire.iter().enumerate() {
        feed(&mut b, std::slice::from_ref(byte));
        let (result, got) = decode(&mut b, 32);
        if i + 1 == wire.len() {
            assert_eq!((result, got), (Ok(Decoded::Direct(5)), b"split".to_vec()));
        } else {
            assert_eq!(result, Ok(Decoded::NeedMore));
        }
    }
}

#[test]
fn a_declared_length_below_a_tag_is_refused_before_waiting_for_the_body() {
    let (_, mut b) = pair();
    feed(&mut b, &[0, 3]);
    assert_eq!(decode(&mut b, 16).0, Err(FrameError::ShorterThanTag(3)));
}

#[test]
fn ending_inside_a_frame_is_truncated_and_between_frames_is_clean() {
    let (mut a, mut b) = pair();
    assert_eq!(b.end_of_stream(), Ok(()));
    let wire = seal(&mut a, b"abc");
    feed(&mut b, &wire[..7]);
    assert_eq!(b.end_of_stream(), Err(FrameError::Truncated(7)));
}

#[test]
fn a_full_frame_write_is_sealed_without_buffering() {
    let (mut a, mut b) = pair();
    let data = vec![1u8; MAX_FRAME_PAYLOAD_LEN + 10];
    assert_eq!(a.write_plaintext(&data).unwrap(), MAX_FRAME_PAYLOAD_LEN);
    assert_eq!(a.pending_wire().len(), MAX_WIRE_FRAME_LEN);
    assert!(!a.unsealed_full());
    let wire = a.pending_wire().to_vec();
    feed(&mut b, &wire);
    assert_eq!(
        decode(&mut b, MAX_NOISE_MESSAGE_LEN).0,
        Ok(Decoded::Direct(MAX_FRAME_PAYLOAD_LEN))
    );
}

#[test]
fn the_last_nonce_is_never_used() {
    let (mut a, _) = pair();
    if let TransportCipher::Ring(ring) = &mut a.cipher {
        ring.send.set_next_for_tests(u64::MAX - 1);
    }
    seal(&mut a, b"last");
    assert!(a.write_plaintext(b"one more").is_ok());
    assert_eq!(a.seal(), Err(FrameError::NonceExhausted));
    // The refused plaintext stays as it was: more writes neither panic nor grow it
    // past a frame.
    assert!(a.write_plaintext(&[0u8; 70_000]).is_ok());
    assert!(a.unsealed_full());
}

proptest! {
    #[test]
    fn arbitrary_bytes_from_the_network_never_panic(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 0..8)
    ) {
        for suite in [SUITES[0], SUITES[2]] {
            let (_, mut b) = pair_with(suite);
            for chunk in &chunks {
                let buf = b.read_buf();
                let n = chunk.len().min(buf.capacity() - buf.len());
                feed(&mut b, &chunk[..n]);
                loop {
                    match decode(&mut b, 100).0 {
                        Ok(Decoded::NeedMore) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}
