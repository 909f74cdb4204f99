//! The RPC core without a network: answers through the frame and back, limits, hostile
//! response frames, and the deadline queue against a model.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use netcore::framing::LENGTH_FIELD_BYTES;
use proptest::prelude::*;
use tokio::time::Instant;

use super::core::{self, Answer, MAX_FAILURE_FRAME, MAX_FAILURE_MESSAGE, response_frame_limit};
use super::deadlines::{DeadlineQueue, Settled};
use crate::error::{RemoteFailure, RpcError};

#[test]
fn an_answer_laid_out_as_head_and_body_is_its_frame() {
    // Small answers (framed whole), large ones on each side of the length varint's
    // one- to four-byte forms (head and payload), and a large failure (all body).
    let mut answers: Vec<Answer> = [0, 100, 500, 16_383, 16_384, 2_097_151, 2_097_152, 4 << 20]
        .into_iter()
        .map(|len| Answer::Data((0..len).map(|i| (i % 251) as u8).collect()))
        .collect();
    answers.push(Answer::Failed("no".into()));
    answers.push(Answer::Failed("x".repeat(MAX_FAILURE_MESSAGE)));
    for answer in answers {
        let (response, _) = core::response_to(answer.clone());
        let whole = core::frame_len(&response, 8 << 20).expect("within the limit");
        let mut expected = vec![0u8; whole];
        core::write_frame(&response, &mut expected);
        let frame = core::AnswerFrame::new(response, whole);
        let mut laid_out = frame.head().to_vec();
        laid_out.extend_from_slice(frame.body());
        assert_eq!(laid_out, expected, "{answer:?}");
        if let Answer::Data(payload) = &answer
            && whole > 512
        {
            // The payload itself, not a copy.
            assert_eq!(frame.body().as_ptr(), payload.as_ptr());
        }
    }
}

/// Frames `answer` as the server does and reads it back as the caller does.
fn through_the_wire(answer: Answer, max: usize) -> Result<Bytes, RpcError> {
    let (response, _) = core::response_to(answer);
    let whole = core::frame_len(&response, max).expect("within the response frame limit");
    assert!(whole <= LENGTH_FIELD_BYTES + response_frame_limit(max));
    let mut frame = vec![0u8; whole];
    core::write_frame(&response, &mut frame);
    let (prefix, body) = frame.split_at(LENGTH_FIELD_BYTES);
    assert_eq!(
        u32::from_be_bytes(prefix.try_into().unwrap()) as usize,
        body.len()
    );
    core::decode_response(Bytes::copy_from_slice(body), max)
}

fn answer() -> impl Strategy<Value = (Answer, usize)> {
    (0usize..4096).prop_flat_map(|max| {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..=max)
                .prop_map(move |data| (Answer::Data(Bytes::from(data)), max)),
            ".{0,1500}".prop_map(move |reason| (Answer::Failed(reason), max)),
            (0usize..usize::MAX).prop_map(move |len| (Answer::TooLarge { len, max }, max)),
        ]
    })
}

proptest! {
    #[test]
    fn every_answer_reaches_the_caller_as_what_the_application_meant((answer, max) in answer()) {
        match (answer.clone(), through_the_wire(answer, max)) {
            (Answer::Data(data), Ok(got)) => prop_assert_eq!(got, data),
            (Answer::Failed(reason), Err(RpcError::Remote { failure, message })) => {
                prop_assert_eq!(failure, RemoteFailure::Application);
                prop_assert!(message.len() <= MAX_FAILURE_MESSAGE);
                prop_assert!(reason.starts_with(&message));
                if reason.len() <= MAX_FAILURE_MESSAGE {
                    prop_assert_eq!(message, reason);
                }
            }
            (Answer::TooLarge { len, max }, Err(RpcError::TooLarge { len: l, max: m })) => {
                prop_assert_eq!((l, m), (len, max));
            }
            (answer, got) => prop_assert!(false, "{answer:?} arrived as {got:?}"),
        }
    }

    #[test]
    fn requests_and_responses_obey_the_same_payload_limit(len in 0usize..10_000, max in 0usize..10_000) {
        let request = core::check_request(len, max);
        prop_assert_eq!(request.is_ok(), len <= max);
        // A response of that payload fits its frame exactly when the request did.
        let (response, _) = core::response_to(Answer::Data(Bytes::from(vec![7u8; len])));
        if len <= max {
            prop_assert!(core::frame_len(&response, max).is_some());
        }
    }

    #[test]
    fn any_response_frame_decodes_to_a_typed_outcome_without_panicking(
        frame in prop::collection::vec(any::<u8>(), 0..512),
        max in 0usize..1024,
    ) {
        if let Ok(data) = core::decode_response(Bytes::from(frame), max) {
            prop_assert!(data.len() <= max);
        }
    }
}

#[test]
fn the_largest_failure_fits_the_smallest_response_frame() {
    let reason = "\u{10348}".repeat(MAX_FAILURE_MESSAGE);
    let (response, _) = core::response_to(Answer::Failed(reason));
    let whole = core::frame_len(&response, 0).expect("a failure always fits");
    assert!(whole - LENGTH_FIELD_BYTES <= MAX_FAILURE_FRAME);
    let (response, _) = core::response_to(Answer::TooLarge {
        len: usize::MAX,
        max: usize::MAX,
    });
    assert!(core::frame_len(&response, 0).is_some());
    let (response, _) = core::response_to(Answer::Failed("x".repeat(MAX_FAILURE_MESSAGE)));
    assert!(core::frame_len(&response, 0).is_some());
}

#[test]
fn a_payload_over_the_limit_is_refused_by_the_caller_too() {
    let got = through_the_wire(Answer::Data(Bytes::from(vec![1u8; 100])), 100);
    assert_eq!(got.unwrap().len(), 100);
    let (response, _) = core::response_to(Answer::Data(Bytes::from(vec![1u8; 101])));
    let mut frame = vec![0u8; core::frame_len(&response, 200).unwrap()];
    core::write_frame(&response, &mut frame);
    let body = Bytes::copy_from_slice(&frame[LENGTH_FIELD_BYTES..]);
    assert!(matches!(
        core::decode_response(body, 100),
        Err(RpcError::TooLarge { len: 101, max: 100 })
    ));
}

/// A queued entry the test settles at will.
#[derive(Clone)]
struct Entry {
    id: usize,
    settled: Arc<AtomicBool>,
}

impl Settled for Entry {
    fn is_settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Queue an entry due this many milliseconds from now.
    Push(u64),
    /// Settle the entry pushed this many pushes ago (if any).
    Settle(usize),
    /// Let this many milliseconds pass, then take what is due.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..100).prop_map(Op::Push),
        1 => (0usize..16).prop_map(Op::Settle),
        2 => (0u64..60).prop_map(Op::Advance),
    ]
}

proptest! {
    #[test]
    fn the_deadline_queue_times_out_exactly_what_is_due_once(
        ops in prop::collection::vec(op(), 0..200),
        compact_at in 1usize..8,
    ) {
        let start = Instant::now();
        let mut now = start;
        let mut queue = DeadlineQueue::new(start + Duration::from_secs(3600));
        let mut entries: Vec<Entry> = Vec::new();
        // The model: unsettled entries not yet taken, by id, with their deadlines.
        let mut waiting = BTreeMap::new();
        for op in ops {
            match op {
                Op::Push(ms) => {
                    let deadline = now + Duration::from_millis(ms);
                    let entry = Entry { id: entries.len(), settled: Arc::default() };
                    let armed = queue.armed();
                    let earlier = queue.push(deadline, entry.clone(), compact_at).ok();
                    prop_assert_eq!(earlier, Some(deadline < armed));
                    waiting.insert(entry.id, deadline);
                    entries.push(entry);
                }
                Op::Settle(back) => {
                    if let Some(entry) = entries.iter().rev().nth(back) {
                        entry.settled.store(true, Ordering::Relaxed);
                        waiting.remove(&entry.id);
                    }
                }
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    let mut due = Vec::new();
                    let next = queue.take_due(now, &mut due);
                    let mut taken: Vec<usize> = due.iter().map(|e| e.id).collect();
                    taken.sort_unstable();
                    let expected: Vec<usize> = waiting
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(id, _)| *id)
                        .collect();
                    prop_assert_eq!(&taken, &expected);
                    for id in &taken {
                        waiting.remove(id);
                    }
                    // The next look is at the earliest deadline still waiting.
                    prop_assert_eq!(next, waiting.values().min().copied());
                    if let Some(next) = next {
                        prop_assert_eq!(queue.armed(), next);
                    }
                }
            }
        }
    }
}

#[test]
fn a_closed_deadline_queue_gives_the_entry_back() {
    let now = Instant::now();
    let mut queue = DeadlineQueue::new(now);
    queue.close();
    let entry = Entry {
        id: 0,
        settled: Arc::default(),
    };
    assert!(queue.push(now, entry, 4).is_err());
}
