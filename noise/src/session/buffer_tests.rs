//! Tests of the session's buffers: allocated and grown as the traffic needs, compacted
//! in place, never let go with bytes in them, and given back once a burst is over.

use super::tests::{SUITES, decode, feed, pair, pair_with, seal, take};
use super::*;

#[test]
fn a_new_session_holds_no_buffers_and_small_traffic_keeps_them_small() {
    let (mut a, mut b) = pair();
    assert_eq!(
        (
            a.wire_in.capacity(),
            a.wire_out.len(),
            a.plain_out.capacity()
        ),
        (0, 0, 0)
    );
    let wire = seal(&mut a, b"hello");
    feed(&mut b, &wire);
    assert_eq!(
        decode(&mut b, 32),
        (Ok(Decoded::Direct(5)), b"hello".to_vec())
    );
    assert_eq!(b.wire_in.capacity(), crate::INITIAL_READ_BUFFER_LEN);
    assert!(
        a.wire_out.len() <= 64,
        "wire buffer of {}",
        a.wire_out.len()
    );
}

#[test]
fn a_quiet_session_lets_go_of_its_small_read_buffer_but_never_of_unread_bytes() {
    let (mut a, mut b) = pair();
    // A partial frame stays.
    let wire = seal(&mut a, b"hello");
    feed(&mut b, &wire[..4]);
    b.release_if_empty(no_clock);
    assert_eq!(b.wire_in.capacity(), crate::INITIAL_READ_BUFFER_LEN);
    feed(&mut b, &wire[4..]);
    // Plaintext not yet handed out stays.
    assert_eq!(decode(&mut b, 2), (Ok(Decoded::Buffered), Vec::new()));
    b.release_if_empty(no_clock);
    assert_eq!(take(&mut b, 2), b"he");
    b.release_if_empty(no_clock);
    assert_eq!(take(&mut b, 32), b"llo");
    // All read: the buffer goes, and the next frame takes a new one.
    b.release_if_empty(no_clock);
    assert_eq!((b.wire_in.capacity(), b.plaintext().len()), (0, 0));
    let wire = seal(&mut a, b"again");
    feed(&mut b, &wire);
    assert_eq!(
        decode(&mut b, 32),
        (Ok(Decoded::Direct(5)), b"again".to_vec())
    );
}

/// For releases that must not read the clock (the small buffer's, or none).
fn no_clock() -> Instant {
    panic!("the clock is read only while the large buffer is held")
}

#[test]
fn the_large_read_buffer_goes_once_no_read_needed_it_for_the_quiet_period() {
    let (mut a, mut b) = pair();
    let t0 = Instant::now();
    let at = |secs: u64| move || t0 + std::time::Duration::from_secs(secs);
    let large = |a: &mut NoiseSession, b: &mut NoiseSession| {
        let data = vec![3u8; 10_000];
        feed(b, &seal(a, &data));
        assert_eq!(decode(b, 10_000), (Ok(Decoded::Direct(10_000)), data));
    };
    let small = |a: &mut NoiseSession, b: &mut NoiseSession| {
        feed(b, &seal(a, b"ping"));
        assert_eq!(decode(b, 64), (Ok(Decoded::Direct(4)), b"ping".to_vec()));
    };
    large(&mut a, &mut b);
    // A burst just ended: the quiet period starts; small reads do not end it.
    b.release_if_empty(at(0));
    small(&mut a, &mut b);
    b.release_if_empty(at(5));
    assert!(b.wire_in.capacity() >= READ_BUFFER_LEN);
    // Another large read starts the period over.
    large(&mut a, &mut b);
    b.release_if_empty(at(9));
    b.release_if_empty(at(18));
    assert!(b.wire_in.capacity() >= READ_BUFFER_LEN, "9 s quiet");
    small(&mut a, &mut b);
    b.release_if_empty(at(19));
    assert_eq!(b.wire_in.capacity(), 0, "10 s quiet: given back");
    // The next small message takes the small buffer, and lets it go without the clock.
    small(&mut a, &mut b);
    assert_eq!(b.wire_in.capacity(), crate::INITIAL_READ_BUFFER_LEN);
    b.release_if_empty(no_clock);
    assert_eq!(b.wire_in.capacity(), 0);
}

#[test]
fn the_write_buffers_go_once_no_large_frame_was_sealed_for_the_quiet_period() {
    for suite in SUITES {
        let (mut a, mut b) = pair_with(suite);
        let t0 = Instant::now();
        let at = |secs: u64| move || t0 + std::time::Duration::from_secs(secs);
        // Small frames keep small buffers, and never read the clock.
        let vote = seal(&mut a, b"vote");
        a.release_write_if_quiet(no_clock);
        assert!(a.wire_out.capacity() <= crate::INITIAL_READ_BUFFER_LEN);
        // A large frame: kept while it is on its way, then through the quiet period,
        // which another large frame starts over.
        let data = vec![5u8; 20_000];
        assert_eq!(a.write_plaintext(&data).unwrap(), data.len());
        assert!(a.seal().unwrap());
        a.release_write_if_quiet(at(100));
        assert!(
            !a.pending_wire().is_empty(),
            "{suite:?}: not yet written: kept"
        );
        let first = a.pending_wire().to_vec();
        a.advance_wire(first.len());
        a.release_write_if_quiet(at(0));
        let second = seal(&mut a, &data);
        a.release_write_if_quiet(at(9));
        a.release_write_if_quiet(at(18));
        assert!(a.plain_out.capacity().max(a.wire_out.capacity()) > 20_000);
        // Plaintext written and not yet sealed holds them too.
        assert_eq!(a.write_plaintext(b"unsealed").unwrap(), 8);
        a.release_write_if_quiet(at(60));
        assert!(
            a.plain_out.capacity() > 20_000,
            "{suite:?}: unsealed bytes kept"
        );
        assert!(a.seal().unwrap());
        let third = a.pending_wire().to_vec();
        a.advance_wire(third.len());
        a.release_write_if_quiet(at(70));
        assert_eq!(
            (a.wire_out.capacity(), a.plain_out.capacity()),
            (0, 0),
            "{suite:?}: given back"
        );
        // The session goes on: every frame decodes, in order, on the other end.
        let after = seal(&mut a, b"after");
        let mut got = Vec::new();
        for (wire, room) in [
            (vote, 64),
            (first, 30_000),
            (second, 30_000),
            (third, 64),
            (after, 64),
        ] {
            feed(&mut b, &wire);
            let (result, plain) = decode(&mut b, room);
            assert!(
                matches!(result, Ok(Decoded::Direct(_))),
                "{suite:?}: {result:?}"
            );
            got.extend_from_slice(&plain);
        }
        let expected = [&b"vote"[..], &data, &data, b"unsealed", b"after"].concat();
        assert!(got == expected, "{suite:?}: the frames arrive intact");
    }
}

#[test]
fn the_large_read_buffer_is_never_let_go_with_bytes_in_it() {
    let (mut a, mut b) = pair();
    let t0 = Instant::now();
    let data = vec![3u8; 10_000];
    feed(&mut b, &seal(&mut a, &data));
    let wire = seal(&mut a, b"partial");
    feed(&mut b, &wire[..5]);
    assert_eq!(decode(&mut b, 10_000), (Ok(Decoded::Direct(10_000)), data));
    b.release_if_empty(|| t0);
    b.release_if_empty(|| t0 + std::time::Duration::from_secs(60));
    assert!(b.wire_in.capacity() >= READ_BUFFER_LEN);
    feed(&mut b, &wire[5..]);
    assert_eq!(
        decode(&mut b, 64),
        (Ok(Decoded::Direct(7)), b"partial".to_vec())
    );
}

#[test]
fn a_frame_larger_than_the_initial_read_buffer_grows_it_to_two_frames() {
    let (mut a, mut b) = pair();
    let data = vec![3u8; 10_000];
    let wire = seal(&mut a, &data);
    feed(&mut b, &wire);
    assert_eq!(decode(&mut b, 10_000), (Ok(Decoded::Direct(10_000)), data));
    assert!(b.wire_in.capacity() >= READ_BUFFER_LEN);
}

#[test]
fn the_large_read_buffer_starts_on_a_page_and_frames_decode_across_its_compactions() {
    for suite in SUITES {
        let (mut a, mut b) = pair_with(suite);
        // Forty frames of odd sizes, back to back on the wire, arriving in pieces
        // that cut them anywhere: the buffer fills past a frame and compacts with a
        // partial frame left to move, many times over.
        let mut sent = Vec::new();
        let mut wire = Vec::new();
        for i in 0..40u32 {
            let data: Vec<u8> = (0..30_001 + i).map(|j| (j * 7 + i) as u8).collect();
            sent.extend_from_slice(&data);
            wire.extend_from_slice(&seal(&mut a, &data));
        }
        let mut got = Vec::new();
        let mut compactions = 0;
        for piece in wire.chunks(9_000) {
            let (start_before, held) = (b.wire_in_start, b.wire_in.len() - b.wire_in_start);
            feed(&mut b, piece);
            if held > 0 && b.wire_in_start < start_before {
                compactions += 1;
            }
            // A reader with room for less than a frame: frames go out in parts,
            // through the buffered plaintext.
            loop {
                let mut storage = vec![0u8; 20_000];
                let mut out = ReadBuf::new(&mut storage);
                if !b.plaintext().is_empty() {
                    b.take_plaintext(&mut out);
                    got.extend_from_slice(out.filled());
                    continue;
                }
                match b.decode(&mut out) {
                    Ok(Decoded::Direct(_)) => got.extend_from_slice(out.filled()),
                    Ok(Decoded::Buffered) => {}
                    Ok(Decoded::NeedMore) => break,
                    Err(e) => panic!("{suite:?}: {e}"),
                }
            }
            if b.wire_in.capacity() > crate::INITIAL_READ_BUFFER_LEN {
                assert_eq!(
                    b.wire_in.as_ptr() as usize % PAGE,
                    0,
                    "{suite:?}: the large buffer's data starts on a page"
                );
            }
        }
        assert!(compactions > 5, "{suite:?}: {compactions} compactions");
        assert!(b.wire_in.capacity() >= READ_BUFFER_LEN);
        assert_eq!(got, sent, "{suite:?}");
    }
}
