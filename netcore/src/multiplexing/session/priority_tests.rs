//! The session's frame scheduler: higher classes first, turns within a class.

use proptest::prelude::*;

use super::tests::{feed, hdr, session, waker, write};
use super::*;
use crate::multiplexing::buffers::OutQueue;
use crate::multiplexing::frame::HEADER_LEN;
use crate::multiplexing::priority::BULK_TURN;

/// The data frames of the next batch when the session is asked for at least one byte:
/// (stream id, payload length) of each.
fn next_data_frames(s: &mut Session) -> Vec<(u32, usize)> {
    let mut out = OutQueue::default();
    s.poll_transmit(&mut out, 1);
    let wire = out.take_all();
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(h) = Header::decode(&wire[at..]).unwrap() {
        at += HEADER_LEN;
        if h.ty == FrameType::Data {
            at += h.length as usize;
            if h.length > 0 {
                frames.push((h.stream_id, h.length as usize));
            }
        }
    }
    frames
}

/// Runs of consecutive data frames of one stream: (stream id, payload bytes).
fn runs(frames: &[(u32, usize)]) -> Vec<(u32, usize)> {
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for &(id, len) in frames {
        match runs.last_mut() {
            Some((last, bytes)) if *last == id => *bytes += len,
            _ => runs.push((id, len)),
        }
    }
    runs
}

#[test]
fn bulk_streams_take_turns_of_bulk_turn_bytes_and_urgent_frames_cut_in() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let a = s.open_stream(now, Priority::Bulk).unwrap();
    let b = s.open_stream(now, Priority::Bulk).unwrap();
    let total = 2 * BULK_TURN;
    // The peer grants both streams room for all of it.
    for id in [a, b] {
        feed(
            &mut s,
            &hdr(FrameType::WindowUpdate, flags::ACK, id, total as u32),
            now,
        )
        .unwrap();
    }
    let mut unwritten = [(a, total), (b, total)];
    let mut vote = None;
    let mut frames = Vec::new();
    loop {
        // Both streams always have data queued (as much as their buffers take): only
        // the turn rule orders them.
        for (id, left) in &mut unwritten {
            if *left > 0
                && let Poll::Ready(Ok(n)) =
                    s.poll_write(*id, &waker(), &vec![0u8; (*left).min(64 * 1024)])
            {
                *left -= n;
            }
        }
        let sent_by_a: usize = frames
            .iter()
            .filter(|(id, _)| *id == a)
            .map(|(_, n)| n)
            .sum();
        if vote.is_none() && sent_by_a == BULK_TURN / 2 {
            let id = s.open_stream(now, Priority::Urgent).unwrap();
            write(&mut s, id, &[7u8; 32]);
            vote = Some(id);
        }
        let next = next_data_frames(&mut s);
        if next.is_empty() {
            break;
        }
        frames.extend(next);
    }
    let vote = vote.expect("sent");
    assert_eq!(
        runs(&frames),
        vec![
            (a, BULK_TURN / 2),
            (vote, 32),
            (a, BULK_TURN / 2),
            (b, BULK_TURN),
            (a, BULK_TURN),
            (b, BULK_TURN),
        ]
    );
}

#[test]
fn an_urgent_message_overtakes_bulk_queued_before_it() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let bulk = s.open_stream(now, Priority::Bulk).unwrap();
    assert_eq!(write(&mut s, bulk, &[1u8; 128 * 1024]), 128 * 1024);
    assert_eq!(next_data_frames(&mut s), vec![(bulk, 16 * 1024)]);
    let vote = s.open_stream(now, Priority::Urgent).unwrap();
    assert_eq!(write(&mut s, vote, &[2u8; 32]), 32);
    assert_eq!(next_data_frames(&mut s), vec![(vote, 32)]);
    assert_eq!(next_data_frames(&mut s), vec![(bulk, 16 * 1024)]);
}

#[test]
fn a_batch_with_urgent_data_ends_with_it_and_says_so() {
    // The driver flushes such a batch at once: nothing of a lower class may join it.
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let bulk = s.open_stream(now, Priority::Bulk).unwrap();
    let votes = [
        s.open_stream(now, Priority::Urgent).unwrap(),
        s.open_stream(now, Priority::Urgent).unwrap(),
    ];
    write(&mut s, bulk, &[1u8; 64 * 1024]);
    for vote in votes {
        write(&mut s, vote, &[2u8; 32]);
    }
    let mut out = OutQueue::default();
    assert!(s.poll_transmit(&mut out, 256 * 1024), "urgent data taken");
    let len = out.len();
    assert!(
        len < 1024,
        "both votes and their SYNs, no bulk: {len} bytes"
    );
    let mut out = OutQueue::default();
    assert!(!s.poll_transmit(&mut out, 256 * 1024), "bulk only");
    assert!(out.len() >= 64 * 1024);
}

#[test]
fn a_stream_waiting_to_send_moves_when_its_class_changes() {
    let now = Instant::now();
    let mut s = session(Mode::Client, MuxConfig::default(), now);
    let first = s.open_stream(now, Priority::Normal).unwrap();
    let second = s.open_stream(now, Priority::Normal).unwrap();
    write(&mut s, first, &[1u8; 100]);
    write(&mut s, second, &[2u8; 100]);
    s.set_priority(second, Priority::Urgent);
    assert_eq!(next_data_frames(&mut s), vec![(second, 100)]);
    assert_eq!(next_data_frames(&mut s), vec![(first, 100)]);
    // A class set on a stream with nothing to send applies to its next frames.
    s.set_priority(first, Priority::Bulk);
    write(&mut s, first, &[1u8; 10]);
    write(&mut s, second, &[2u8; 10]);
    s.set_priority(second, Priority::Bulk);
    s.set_priority(first, Priority::Urgent);
    assert_eq!(next_data_frames(&mut s), vec![(first, 10)]);
}

proptest! {
    /// Whatever the streams, classes and sizes: every byte goes out, no frame of a
    /// class leaves while a higher class has data waiting, the streams of `Urgent` and
    /// `Normal` take turns a frame each, and a `Bulk` stream keeps its turn until it
    /// has sent `BULK_TURN` bytes or has no more.
    #[test]
    fn frames_leave_by_class_then_in_turns(
        streams in prop::collection::vec((0usize..3, 1usize..100_000), 1..8),
    ) {
        let now = Instant::now();
        let mut s = session(Mode::Client, MuxConfig::default(), now);
        let mut left = HashMap::new();
        let mut class = HashMap::new();
        for (c, len) in &streams {
            let id = s.open_stream(now, Priority::ALL[*c]).unwrap();
            prop_assert_eq!(write(&mut s, id, &vec![0u8; *len]), *len);
            left.insert(id, *len);
            class.insert(id, *c);
        }
        let bulk = Priority::Bulk as usize;
        let mut last_class = 0;
        // Per class: the stream that sent last, and what it sent in its turn.
        let mut previous: HashMap<usize, (u32, usize)> = HashMap::new();
        loop {
            let frames = next_data_frames(&mut s);
            if frames.is_empty() {
                break;
            }
            for (id, len) in frames {
                let c = class[&id];
                prop_assert!(c >= last_class, "class {} after class {}", c, last_class);
                let waiting_above = left.iter().any(|(o, n)| *n > 0 && class[o] < c);
                prop_assert!(!waiting_above);
                last_class = c;
                let turn = match previous.get(&c) {
                    Some(&(prev, turn)) if prev == id => {
                        let others =
                            left.iter().any(|(o, n)| *o != id && *n > 0 && class[o] == c);
                        if c == bulk {
                            // Alone in its class, a bulk stream goes on past its turn.
                            prop_assert!(!others || turn < BULK_TURN, "stream {} overran its turn", id);
                        } else {
                            prop_assert!(!others, "stream {} sent twice in a row", id);
                        }
                        turn + len
                    }
                    Some(&(prev, turn)) => {
                        if c == bulk {
                            prop_assert!(
                                left[&prev] == 0 || turn >= BULK_TURN,
                                "stream {} lost its turn after {} bytes", prev, turn
                            );
                        }
                        len
                    }
                    None => len,
                };
                previous.insert(c, (id, turn));
                let remaining = left.get_mut(&id).unwrap();
                *remaining -= len;
            }
        }
        prop_assert!(left.values().all(|n| *n == 0));
    }
}
