//! The drivers' tests: acknowledgements written to a substream that takes little or
//! nothing, the outbox's bound, gauge and closing, the rate limiter's admission, and
//! the application's side of a batch. The rules they drive are tested in `core`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use netcore::PeerId;
use netcore::framing::MessageCodec;
use prometheus::IntGauge;
use proto::Message;
use proto::direct_send::DirectSendAck;
use tokio::io::AsyncWrite;
use tokio_util::codec::Decoder;

use super::DEPTH_STEP;
use super::core::{MAX_ACK_SIZE, scan};
use super::outbox::{OutboxReader, Taken, outbox, push_to, push_tracked};
use super::reader::{AckWriter, MessageBatch, admission};
use crate::channel::QueueError;
use crate::interface::Event;
use crate::protocol_id::ProtocolId;
use crate::rate_limit::MessageLimiter;

/// A writer that takes at most `room` bytes per call, and nothing (pending) when
/// `room` is zero; it keeps what it took.
struct Tight {
    room: usize,
    taken: Vec<u8>,
}

impl AsyncWrite for Tight {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.room == 0 {
            return Poll::Pending;
        }
        let n = data.len().min(self.room);
        self.taken.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn decode_all(wire: &[u8]) -> Vec<u64> {
    let mut codec = MessageCodec::new(MAX_ACK_SIZE);
    let mut buf = BytesMut::from(wire);
    let mut counts = Vec::new();
    while let Some(frame) = codec.decode(&mut buf).unwrap_or(None) {
        counts.push(DirectSendAck::decode(frame).map_or(u64::MAX, |a| a.delivered));
    }
    assert!(buf.is_empty(), "a torn acknowledgement");
    counts
}

#[tokio::test]
async fn an_unread_acknowledgement_never_blocks_and_the_latest_count_follows_it() {
    let mut io = Tight {
        room: 0,
        taken: Vec::new(),
    };
    let mut acks = AckWriter::new();
    // Nothing is taken: the reader is not held up.
    acks.offer(&mut io, 5).await;
    acks.offer(&mut io, 9).await;
    assert!(io.taken.is_empty());
    // Three bytes at a time: the pending count (5) goes out whole first, then the
    // newest (12); the count 9 was superseded while it waited.
    io.room = 3;
    for _ in 0..10 {
        acks.offer(&mut io, 12).await;
    }
    assert_eq!(decode_all(&io.taken), vec![5, 12]);
    // Nothing new to acknowledge: nothing is written.
    let before = io.taken.len();
    acks.offer(&mut io, 12).await;
    assert_eq!(io.taken.len(), before);
}

#[tokio::test]
async fn acknowledgements_fit_the_frame_limit() {
    let mut io = Tight {
        room: usize::MAX,
        taken: Vec::new(),
    };
    let mut acks = AckWriter::new();
    acks.offer(&mut io, u64::MAX).await;
    assert_eq!(decode_all(&io.taken), vec![u64::MAX]);
}

fn frames_of(messages: &[&[u8]]) -> BytesMut {
    let codec = MessageCodec::new(1 << 20);
    let mut wire = BytesMut::new();
    for m in messages {
        codec.write_prefix(m.len(), &mut wire).unwrap();
        wire.extend_from_slice(m);
    }
    wire
}

fn depth() -> IntGauge {
    IntGauge::new("depth", "test").unwrap()
}

/// Everything a writer would take now, as the bytes it writes.
async fn take_all(reader: &mut OutboxReader) -> (Vec<Bytes>, usize, u64) {
    let mut taken = Taken::new();
    assert!(reader.take(&mut taken).await);
    (taken.runs, taken.messages, taken.bytes)
}

#[tokio::test]
async fn an_outbox_refuses_past_capacity_and_moves_its_gauge_in_steps() {
    let gauge = depth();
    let (outbox, mut reader) = outbox(DEPTH_STEP * 2 + 3, gauge.clone());
    for _ in 0..DEPTH_STEP - 1 {
        push_to(&outbox.shared, Bytes::from_static(b"m")).unwrap();
    }
    assert_eq!(gauge.get(), 0, "below one step, nothing is reported");
    for _ in 0..DEPTH_STEP + 4 {
        push_to(&outbox.shared, Bytes::from_static(b"m")).unwrap();
    }
    assert_eq!(gauge.get(), DEPTH_STEP as i64 * 2);
    assert!(matches!(
        push_to(&outbox.shared, Bytes::from_static(b"x")),
        Err(QueueError::Full(_))
    ));
    let (_, messages, _) = take_all(&mut reader).await;
    assert_eq!(messages, DEPTH_STEP * 2 + 3);
    assert_eq!(gauge.get(), 0, "exact once the writer took everything");
    // Closing drops and counts what is left; the gauge ends at zero.
    for _ in 0..DEPTH_STEP {
        push_to(&outbox.shared, Bytes::from_static(b"m")).unwrap();
    }
    assert_eq!(reader.close_and_clear(), DEPTH_STEP);
    assert_eq!(gauge.get(), 0);
    assert!(matches!(
        push_to(&outbox.shared, Bytes::from_static(b"m")),
        Err(QueueError::Closed(_))
    ));
}

#[tokio::test]
async fn a_dropped_outbox_hands_over_what_it_holds_then_ends() {
    let (outbox, mut reader) = outbox(10, depth());
    push_to(&outbox.shared, Bytes::from_static(b"last")).unwrap();
    drop(outbox);
    let (runs, messages, _) = take_all(&mut reader).await;
    assert_eq!(
        (runs.concat(), messages),
        (frames_of(&[b"last"]).to_vec(), 1)
    );
    let mut taken = Taken::new();
    assert!(!reader.take(&mut taken).await, "closed and empty");
}

#[tokio::test]
async fn a_tracked_message_is_settled_with_the_batch_that_carries_it() {
    let (outbox, mut reader) = outbox(10, depth());
    push_to(&outbox.shared, Bytes::from_static(b"a")).unwrap();
    let (_, mut first) = push_tracked(&outbox.shared, Bytes::from_static(b"b")).unwrap();
    let mut taken = Taken::new();
    assert!(reader.take(&mut taken).await);
    assert_eq!((taken.messages, taken.end, taken.marked), (2, 2, true));
    // Taken but not yet sent: nothing told.
    assert!(first.try_recv().is_err());
    reader.settle_marks(taken.end, true);
    assert_eq!(first.try_recv(), Ok(()));
    // A later batch without a tracked message is not marked; a lost one drops its
    // receipt.
    push_to(&outbox.shared, Bytes::from_static(b"c")).unwrap();
    assert!(reader.take(&mut taken).await);
    assert_eq!((taken.end, taken.marked), (3, false));
    let (_, mut lost) = push_tracked(&outbox.shared, Bytes::from_static(b"d")).unwrap();
    let (_, mut waiting) = push_tracked(&outbox.shared, Bytes::from_static(b"e")).unwrap();
    assert!(reader.take(&mut taken).await);
    reader.settle_marks(taken.end - 1, false);
    assert!(matches!(
        lost.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Closed)
    ));
    // Closing the queue drops the rest.
    assert_eq!(reader.close_and_clear(), 0);
    assert!(matches!(
        waiting.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Closed)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_scan_admits_what_the_rate_limiter_allows() {
    let codec = MessageCodec::new(64);
    let wire = frames_of(&[b"1", b"2", b"3", b"4"]);
    let limiter = MessageLimiter::new(
        crate::rate_limit::Rate {
            per_second: 1,
            burst: 2,
        },
        prometheus::IntCounter::new("waits", "test").unwrap(),
    );
    let mut admitted = false;
    let found = scan(&codec, &wire, 10, admission(Some(&limiter), &mut admitted));
    assert_eq!((found.count, found.limited), (2, true));
    let found = scan(
        &codec,
        &wire[found.end..],
        10,
        admission(Some(&limiter), &mut admitted),
    );
    assert_eq!((found.count, found.limited), (0, true));
    // A frame whose permit the reader waited for is admitted without asking again,
    // once.
    admitted = true;
    let found = scan(
        &codec,
        &wire[10..],
        10,
        admission(Some(&limiter), &mut admitted),
    );
    assert_eq!((found.count, found.limited, admitted), (1, true, false));
    // Without a limiter, every whole frame is admitted.
    let found = scan(&codec, &wire, 10, admission(None, &mut admitted));
    assert_eq!((found.count, found.limited), (4, false));
}

#[test]
fn a_message_batch_hands_out_its_frames_in_order_without_copying() {
    let peer = PeerId::new([7; 32]);
    let protocol = ProtocolId::new("/test/1");
    let frames = frames_of(&[b"one", b"", b"three"]).freeze();
    let base = frames.as_ptr() as usize;
    let mut batch = MessageBatch {
        peer_id: peer,
        protocol,
        frames,
        len: 3,
    };
    let mut got = Vec::new();
    while let Some(event) = batch.next_event() {
        let Event::Message {
            peer_id,
            protocol: p,
            data,
        } = event
        else {
            panic!("not a message");
        };
        assert_eq!((peer_id, p), (peer, protocol));
        let at = data.as_ptr() as usize;
        assert!(
            data.is_empty() || (base..base + 20).contains(&at),
            "a slice of the batch"
        );
        got.push(data);
    }
    assert_eq!(got, vec![&b"one"[..], b"", b"three"]);
    assert_eq!(batch.len(), 0);
}

#[test]
fn a_message_batch_splits_between_its_frames() {
    let frames = frames_of(&[b"a", b"bb", b"ccc"]).freeze();
    let mut rest = MessageBatch {
        peer_id: PeerId::new([1; 32]),
        protocol: ProtocolId::new("/test/1"),
        frames,
        len: 3,
    };
    assert!(rest.split_off(3).is_none(), "all of it is no split");
    assert!(rest.split_off(0).is_none());
    let mut head = rest.split_off(2).unwrap();
    assert_eq!((head.len(), rest.len()), (2, 1));
    let data = |b: &mut MessageBatch| match b.next_event() {
        Some(Event::Message { data, .. }) => data,
        other => panic!("{other:?}"),
    };
    assert_eq!(data(&mut head), &b"a"[..]);
    assert_eq!(data(&mut head), &b"bb"[..]);
    assert!(head.next_event().is_none());
    assert_eq!(data(&mut rest), &b"ccc"[..]);
}
