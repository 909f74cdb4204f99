//! The core's rules, without a runtime: packing against the frames it must produce,
//! scanning against arbitrary reads, and both acknowledgement counts against a model.

use bytes::{Bytes, BytesMut};
use netcore::framing::{FramingError, LENGTH_FIELD_BYTES, MessageCodec};
use proptest::prelude::*;
use proto::Message;
use proto::direct_send::DirectSendAck;
use tokio_util::codec::Decoder;

use super::acks::{ACK_EVERY, AckError, MAX_ACK_SIZE, ReceiverAcks, SenderAcks};
use super::packing::{PACK_MAX, Packer, WRITE_CHUNK};
use super::scan::{DELIVER_BATCH_BYTES, frames_end, scan};

/// The wire bytes of `messages`: each a `u32` big-endian length, then the message.
fn frames_of<M: AsRef<[u8]>>(messages: &[M]) -> Vec<u8> {
    let mut wire = Vec::new();
    for m in messages {
        let m = m.as_ref();
        wire.extend_from_slice(&(m.len() as u32).to_be_bytes());
        wire.extend_from_slice(m);
    }
    wire
}

/// A message of `len` bytes whose content depends on `seed`, so that messages differ.
fn message(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// The longest run a packer makes of small messages: a run is cut once it reaches
/// [`WRITE_CHUNK`], so it holds less than that before its last frame.
const LONGEST_RUN: usize = WRITE_CHUNK + PACK_MAX + 4;

#[test]
fn a_packer_packs_small_messages_and_keeps_large_ones_whole() {
    let mut packer = Packer::new();
    let large = message(PACK_MAX + 1, 9);
    let small: Vec<Bytes> = (0..3).map(|i| message(32, i)).collect();
    let order = [&small[0], &small[1], &large, &small[2]];
    for m in order {
        packer.push(m.clone());
    }
    assert_eq!(packer.messages(), 4);
    let mut runs = Vec::new();
    let taken = packer.take_into(&mut runs);
    assert_eq!(taken.messages, 4);
    assert_eq!(taken.bytes, 3 * 32 + large.len() as u64);
    assert!(packer.is_empty());
    // Two small frames and the large one's prefix in one run, the large message
    // itself not copied, then the last small frame.
    assert_eq!(runs.len(), 3);
    assert_eq!(
        runs[1].as_ptr(),
        large.as_ptr(),
        "a large message is not copied"
    );
    assert_eq!(runs.concat(), frames_of(&order));
}

#[test]
fn a_packer_cuts_runs_at_the_write_chunk() {
    let mut packer = Packer::new();
    for i in 0..40 {
        packer.push(message(1000, i));
    }
    let mut runs = Vec::new();
    assert_eq!(packer.take_into(&mut runs).messages, 40);
    assert!(runs.iter().all(|r| r.len() <= LONGEST_RUN));
    assert_eq!(runs.iter().map(Bytes::len).sum::<usize>(), 40 * 1004);
    assert!(runs.len() >= 2, "40 KB is more than one run");
}

#[test]
fn a_cleared_packer_holds_nothing_and_packs_again() {
    let mut packer = Packer::new();
    packer.push(message(10, 1));
    packer.push(message(PACK_MAX * 2, 2));
    assert_eq!(packer.clear(), 2);
    assert!(packer.is_empty());
    let mut runs = Vec::new();
    assert_eq!(packer.take_into(&mut runs).bytes, 0);
    assert!(runs.is_empty());
    packer.push(message(3, 3));
    assert_eq!(packer.take_into(&mut runs).messages, 1);
    assert_eq!(runs.concat(), frames_of(&[message(3, 3)]));
}

/// One step of a sender: queue a message of this length, or take everything queued.
#[derive(Clone, Debug)]
enum PackStep {
    Push(usize),
    Take,
}

/// Sender steps: mostly small messages, some at or past [`PACK_MAX`], takes between.
fn pack_steps() -> impl Strategy<Value = Vec<PackStep>> {
    let len = prop_oneof![
        4 => 0..=64usize,
        2 => 0..=PACK_MAX,
        1 => Just(PACK_MAX),
        1 => Just(PACK_MAX + 1),
        2 => PACK_MAX + 1..3 * PACK_MAX,
    ];
    let step = prop_oneof![8 => len.prop_map(PackStep::Push), 1 => Just(PackStep::Take)];
    proptest::collection::vec(step, 0..60)
}

/// Takes everything `packer` holds, checking the counts against what was pushed.
fn take_checked(packer: &mut Packer, runs: &mut Vec<Bytes>, pushed: &[Bytes]) {
    let taken = packer.take_into(runs);
    assert_eq!(taken.messages, pushed.len());
    assert_eq!(
        taken.bytes,
        pushed.iter().map(|m| m.len() as u64).sum::<u64>()
    );
    assert!(packer.is_empty());
}

proptest! {
    #[test]
    fn packed_runs_are_the_frames_in_order(steps in pack_steps()) {
        let mut packer = Packer::new();
        let mut all = Vec::new();
        let mut since_take = Vec::new();
        let mut runs = Vec::new();
        for (seed, step) in steps.into_iter().enumerate() {
            match step {
                PackStep::Push(len) => {
                    let m = message(len, seed as u8);
                    packer.push(m.clone());
                    since_take.push(m.clone());
                    all.push(m);
                    prop_assert_eq!(packer.messages(), since_take.len());
                }
                PackStep::Take => {
                    take_checked(&mut packer, &mut runs, &since_take);
                    since_take.clear();
                }
            }
        }
        take_checked(&mut packer, &mut runs, &since_take);
        prop_assert_eq!(runs.concat(), frames_of(&all));
        let large: Vec<&Bytes> = all.iter().filter(|m| m.len() > PACK_MAX).collect();
        for run in &runs {
            prop_assert!(!run.is_empty());
            let is_large = large.iter().any(|m| m.as_ptr() == run.as_ptr() && m.len() == run.len());
            prop_assert!(is_large || run.len() <= LONGEST_RUN, "a run of {}", run.len());
        }
        // Every large message went out as its own buffer, not copied.
        for m in large {
            prop_assert!(runs.iter().any(|r| r.as_ptr() == m.as_ptr() && r.len() == m.len()));
        }
    }
}

#[test]
fn a_scan_stops_at_its_limits_and_at_a_frame_not_yet_whole() {
    let codec = MessageCodec::new(64);
    let wire = frames_of(&[&b"aa"[..], b"bbb", b"c", b"dddd"]);
    let found = scan(&codec, &wire, 2, || true);
    assert_eq!((found.count, found.end, found.payload), (2, 13, 5));
    // The last frame lacks a byte: its length is known, it is not counted.
    let found = scan(&codec, &wire[..wire.len() - 1], 10, || true);
    assert_eq!((found.count, found.next_len), (3, Some(8)));
    assert!(found.failure.is_none() && !found.limited);
    // A frame over the maximum ends the scan with the frames before it counted.
    let mut bad = frames_of(&[b"ok"]);
    bad.extend_from_slice(&[0, 0, 1, 0]);
    let found = scan(&codec, &bad, 10, || true);
    assert_eq!(found.count, 1);
    assert!(matches!(
        found.failure,
        Some(FramingError::TooLarge { len: 256, max: 64 })
    ));
    // The byte budget: a batch stops once it holds that many payload bytes.
    let big = vec![0u8; DELIVER_BATCH_BYTES as usize];
    let wire = frames_of(&[&big[..], b"next"]);
    let found = scan(&MessageCodec::new(1 << 20), &wire, 10, || true);
    assert_eq!(found.count, 1);
}

#[test]
fn a_scan_asks_admission_once_per_whole_frame_and_stops_at_a_refusal() {
    let codec = MessageCodec::new(64);
    let wire = frames_of(&[b"1", b"2", b"3"]);
    let mut asked = 0;
    let found = scan(&codec, &wire[..wire.len() - 1], 10, || {
        asked += 1;
        true
    });
    assert_eq!(
        (found.count, asked),
        (2, 2),
        "a frame not yet whole is not asked"
    );
    let mut answers = [true, false, true].into_iter();
    let found = scan(&codec, &wire, 10, || answers.next().unwrap_or(true));
    assert_eq!((found.count, found.end, found.limited), (1, 5, true));
    assert_eq!(answers.next(), Some(true), "nothing asked past a refusal");
}

#[test]
fn frames_end_measures_whole_frames_only() {
    let wire = frames_of(&[&b"a"[..], b"", b"ccc"]);
    assert_eq!(frames_end(&wire, 0), Some(0));
    assert_eq!(frames_end(&wire, 1), Some(5));
    assert_eq!(frames_end(&wire, 2), Some(9));
    assert_eq!(frames_end(&wire, 3), Some(wire.len()));
    assert_eq!(frames_end(&wire, 4), None);
    assert_eq!(frames_end(&wire[..wire.len() - 1], 3), None);
    assert_eq!(frames_end(&[0xff; 4], 1), None, "a prefix past the end");
}

/// What a reader driven like `serve_inbound` got from a stream.
struct Received {
    /// The messages delivered, in order.
    messages: Vec<Bytes>,
    /// The framing failure that ended it, if one did.
    failure: Option<FramingError>,
    /// Bytes left in the read buffer when the stream ended.
    left: usize,
}

/// Reads `wire` as `serve_inbound` does: scans the buffer, delivers what a scan
/// counted, waits for a permit when refused, and reads more when no whole frame is
/// buffered. Reads take `reads` bytes, batches at most `limits` messages, and the
/// limiter answers `admits` (each list cycled). Checks each scan's counts.
fn read_through(
    codec: &MessageCodec,
    wire: &[u8],
    reads: &[usize],
    limits: &[usize],
    admits: &[bool],
) -> Received {
    let cycled = |list: &[usize], turn: usize| list.get(turn % list.len().max(1)).copied();
    let (mut buf, mut at, mut turn, mut asked) = (BytesMut::new(), 0, 0, 0);
    let mut admitted = false;
    let mut messages = Vec::new();
    loop {
        turn += 1;
        let limit = cycled(limits, turn).unwrap_or(1).max(1);
        let found = scan(codec, &buf, limit, || {
            asked += 1;
            std::mem::take(&mut admitted) || admits.get(asked % admits.len().max(1)) != Some(&false)
        });
        assert!(found.count <= limit);
        if found.count > 0 {
            let mut frames = buf.split_to(found.end).freeze();
            let mut payload = 0;
            for _ in 0..found.count {
                let m = MessageCodec::split_frame(&mut frames).expect("a whole frame counted");
                // The byte budget was not reached before this frame.
                assert!(payload < DELIVER_BATCH_BYTES);
                payload += m.len() as u64;
                messages.push(m);
            }
            assert!(frames.is_empty());
            assert_eq!(payload, found.payload);
            continue;
        }
        if let Some(failure) = found.failure {
            return Received {
                messages,
                failure: Some(failure),
                left: buf.len(),
            };
        }
        if found.limited {
            admitted = true;
            continue;
        }
        if at == wire.len() {
            return Received {
                messages,
                failure: None,
                left: buf.len(),
            };
        }
        let read = cycled(reads, turn).unwrap_or(1).clamp(1, wire.len() - at);
        buf.extend_from_slice(&wire[at..at + read]);
        at += read;
    }
}

/// Message lengths, mostly small, some past the packing limit.
fn message_lens() -> impl Strategy<Value = Vec<usize>> {
    let len = prop_oneof![4 => 0..=64usize, 1 => 0..3 * PACK_MAX];
    proptest::collection::vec(len, 0..40)
}

/// Messages of `lens` bytes, each different.
fn messages_of(lens: &[usize]) -> Vec<Bytes> {
    lens.iter()
        .enumerate()
        .map(|(i, &n)| message(n, i as u8))
        .collect()
}

/// Read sizes: a byte or a few at a time, or large reads.
fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1..8usize, 1..3 * WRITE_CHUNK], 1..8)
}

/// Batch limits: the reader's are 1 to `DELIVER_BATCH` (the room in the application's
/// queue); a scan takes any.
fn batch_limits() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1..80usize, 1..8)
}

/// The limiter's answers (none: every frame is admitted).
fn admissions() -> impl Strategy<Value = Vec<bool>> {
    proptest::collection::vec(any::<bool>(), 0..8)
}

proptest! {
    #[test]
    fn scanned_frames_come_out_once_in_order_whatever_the_reads(
        lens in message_lens(),
        reads in read_sizes(),
        limits in batch_limits(),
        admits in admissions(),
    ) {
        let sent = messages_of(&lens);
        let codec = MessageCodec::new(3 * PACK_MAX);
        let got = read_through(&codec, &frames_of(&sent), &reads, &limits, &admits);
        prop_assert!(got.failure.is_none());
        prop_assert_eq!(got.left, 0);
        prop_assert_eq!(got.messages, sent);
    }

    #[test]
    fn a_frame_over_the_maximum_ends_the_stream_after_the_frames_before_it(
        lens in message_lens(),
        at in any::<prop::sample::Index>(),
        over in (3 * PACK_MAX + 1) as u32..=u32::MAX,
        reads in read_sizes(),
        limits in batch_limits(),
        admits in admissions(),
    ) {
        let sent = messages_of(&lens);
        let before = at.index(sent.len() + 1);
        let mut wire = frames_of(&sent[..before]);
        wire.extend_from_slice(&over.to_be_bytes());
        wire.extend_from_slice(&frames_of(&sent[before..]));
        let codec = MessageCodec::new(3 * PACK_MAX);
        let got = read_through(&codec, &wire, &reads, &limits, &admits);
        let refused = match got.failure {
            Some(FramingError::TooLarge { len, .. }) => len == over as usize,
            _ => false,
        };
        prop_assert!(refused, "{:?}", got.failure);
        prop_assert_eq!(&got.messages[..], &sent[..before]);
    }

    #[test]
    fn scanning_arbitrary_bytes_never_panics(
        wire in proptest::collection::vec(any::<u8>(), 0..2048),
        max in 0..600usize,
        reads in read_sizes(),
        limits in batch_limits(),
        admits in admissions(),
        count in 0..40usize,
    ) {
        let got = read_through(&MessageCodec::new(max), &wire, &reads, &limits, &admits);
        let delivered: usize = got.messages.iter().map(|m| LENGTH_FIELD_BYTES + m.len()).sum();
        prop_assert!(delivered + got.left <= wire.len());
        prop_assert_eq!(frames_end(&wire, got.messages.len()), Some(delivered));
        let _ = frames_end(&wire, count);
    }

    #[test]
    fn frames_end_is_where_the_first_frames_end(lens in message_lens(), count in 0..45usize) {
        let sent: Vec<Bytes> = lens.iter().map(|&n| message(n, 1)).collect();
        let expected = (count <= sent.len()).then(|| frames_of(&sent[..count]).len());
        prop_assert_eq!(frames_end(&frames_of(&sent), count), expected);
    }
}

/// The body of an acknowledgement frame of `delivered` messages.
fn ack_frame(delivered: u64) -> Bytes {
    DirectSendAck { delivered }.encode_to_vec().into()
}

#[test]
fn the_sender_refuses_a_malformed_or_out_of_range_acknowledgement() {
    let mut acks = SenderAcks::default();
    acks.on_written(10);
    assert!(matches!(
        acks.on_ack(Bytes::from_static(&[0xff])),
        Err(AckError::Malformed)
    ));
    assert!(matches!(
        acks.on_ack(ack_frame(11)),
        Err(AckError::OutOfRange {
            delivered: 11,
            acked: 0,
            written: 10
        })
    ));
    acks.on_ack(ack_frame(7)).unwrap();
    assert!(matches!(
        acks.on_ack(ack_frame(6)),
        Err(AckError::OutOfRange {
            delivered: 6,
            acked: 7,
            written: 10
        })
    ));
    assert_eq!(acks.unconfirmed(), 3, "a refused count changes nothing");
    acks.on_ack(ack_frame(7)).unwrap();
    acks.on_ack(ack_frame(10)).unwrap();
    assert_eq!(acks.unconfirmed(), 0);
}

/// One step of a sender's acknowledgement state: messages written, an acknowledgement
/// this far from the last one acknowledged (back, the same, ahead), or one of
/// everything written.
#[derive(Clone, Debug)]
enum SenderStep {
    Write(u64),
    AckStep(i64),
    AckAll,
}

/// Sender steps: writes and acknowledgements back, level, ahead and at the end.
fn sender_steps() -> impl Strategy<Value = Vec<SenderStep>> {
    let step = prop_oneof![
        (0..50u64).prop_map(SenderStep::Write),
        (-8..40i64).prop_map(SenderStep::AckStep),
        Just(SenderStep::AckAll),
    ];
    proptest::collection::vec(step, 0..60)
}

proptest! {
    #[test]
    fn the_sender_accepts_exactly_the_rising_counts_within_what_it_wrote(
        steps in sender_steps(),
    ) {
        let mut acks = SenderAcks::default();
        let (mut written, mut acked) = (0u64, 0u64);
        for step in steps {
            let count = match step {
                SenderStep::Write(n) => {
                    acks.on_written(n);
                    written += n;
                    prop_assert_eq!(acks.unconfirmed(), written - acked);
                    continue;
                }
                SenderStep::AckStep(d) => acked.saturating_add_signed(d),
                SenderStep::AckAll => written,
            };
            let accepted = acks.on_ack(ack_frame(count)).is_ok();
            prop_assert_eq!(accepted, acked <= count && count <= written);
            if accepted {
                acked = count;
            }
            prop_assert_eq!(acks.unconfirmed(), written - acked);
        }
    }
}

/// Splits `wire` into acknowledgement frames, each within [`MAX_ACK_SIZE`] and the
/// exact encoding of its count; returns the counts.
fn ack_counts(wire: &[u8]) -> Vec<u64> {
    let mut codec = MessageCodec::new(MAX_ACK_SIZE);
    let mut buf = BytesMut::from(wire);
    let mut counts = Vec::new();
    while let Some(frame) = codec.decode(&mut buf).expect("within the frame limit") {
        let ack = DirectSendAck::decode(frame.clone()).expect("a DirectSendAck");
        assert_eq!(frame, ack_frame(ack.delivered), "a whole frame");
        counts.push(ack.delivered);
    }
    assert!(buf.is_empty(), "a torn acknowledgement");
    counts
}

/// Offers `delivered` to `acks` through a substream that takes at most `room` bytes;
/// returns what it took.
fn offer(acks: &mut ReceiverAcks, delivered: u64, room: usize, wire: &mut Vec<u8>) {
    let frame = acks.outgoing(delivered);
    let took = frame.len().min(room);
    wire.extend_from_slice(&frame[..took]);
    acks.sent(took);
}

#[test]
fn the_receiver_finishes_a_torn_frame_before_a_newer_count() {
    let mut acks = ReceiverAcks::new();
    let mut wire = Vec::new();
    assert!(
        acks.outgoing(0).is_empty(),
        "nothing delivered, nothing to say"
    );
    offer(&mut acks, 5, 0, &mut wire);
    offer(&mut acks, 9, 0, &mut wire);
    assert!(wire.is_empty());
    // Three bytes at a time: the count 5 goes out whole first, then the newest (12);
    // 9 was superseded while 5 waited.
    for _ in 0..10 {
        offer(&mut acks, 12, 3, &mut wire);
    }
    assert_eq!(ack_counts(&wire), vec![5, 12]);
    assert!(acks.outgoing(12).is_empty(), "a count goes out once");
    offer(&mut acks, u64::MAX, usize::MAX, &mut wire);
    assert_eq!(
        ack_counts(&wire),
        vec![5, 12, u64::MAX],
        "the largest count fits"
    );
}

#[test]
fn the_receiver_is_due_every_ack_every_messages_past_the_last_count() {
    let mut acks = ReceiverAcks::new();
    assert!(!acks.due(ACK_EVERY - 1));
    assert!(acks.due(ACK_EVERY));
    let mut wire = Vec::new();
    offer(&mut acks, 10, usize::MAX, &mut wire);
    assert!(!acks.due(ACK_EVERY + 9));
    assert!(acks.due(ACK_EVERY + 10));
}

/// One step of a receiver: messages delivered, or an offer through a substream that
/// takes at most this many bytes (zero: its window is full).
#[derive(Clone, Debug)]
enum ReceiverStep {
    Deliver(u64),
    Offer(usize),
}

/// Receiver steps: deliveries and offers through windows of 0 to 19 bytes.
fn receiver_steps() -> impl Strategy<Value = Vec<ReceiverStep>> {
    let step = prop_oneof![
        (0..600u64).prop_map(ReceiverStep::Deliver),
        (0..20usize).prop_map(ReceiverStep::Offer),
    ];
    proptest::collection::vec(step, 0..60)
}

proptest! {
    #[test]
    fn the_receiver_sends_whole_rising_counts_and_the_last_one_eventually(
        steps in receiver_steps(),
    ) {
        let mut acks = ReceiverAcks::new();
        let (mut delivered, mut wire) = (0u64, Vec::new());
        for step in steps {
            match step {
                ReceiverStep::Deliver(n) => {
                    delivered += n;
                    // As the reader does after a batch; a full window takes nothing.
                    if acks.due(delivered) {
                        offer(&mut acks, delivered, 0, &mut wire);
                    }
                }
                ReceiverStep::Offer(room) => offer(&mut acks, delivered, room, &mut wire),
            }
        }
        // Writes succeed from here on: what is pending, then the last count.
        for _ in 0..2 {
            offer(&mut acks, delivered, usize::MAX, &mut wire);
        }
        prop_assert!(acks.outgoing(delivered).is_empty());
        let counts = ack_counts(&wire);
        prop_assert!(counts.windows(2).all(|w| w[0] < w[1]), "{:?}", counts);
        prop_assert_eq!(counts.last().copied().unwrap_or(0), delivered);
        prop_assert!(!acks.due(delivered));
    }
}
