//! Tests of the fair queue (round-robin service, capacity, control items, slots, turns)
//! and of the metered channel.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use prometheus::IntGauge;

use super::{
    CONSUMER_BATCH, QueueClosed, QueueError, TURN_WEIGHT, Weighted, fair_queue, lock, metered,
};

fn gauge() -> IntGauge {
    IntGauge::new("depth", "test").unwrap()
}

impl Weighted for u8 {
    fn weight(&self) -> usize {
        1
    }
}

impl Weighted for u32 {
    fn weight(&self) -> usize {
        1
    }
}

impl Weighted for (u8, u32) {
    fn weight(&self) -> usize {
        1
    }
}

#[tokio::test]
async fn serves_keys_round_robin() {
    let (tx, mut rx) = fair_queue::<&str, u32>(100, gauge());
    for i in 0..10 {
        tx.try_push("flood", i).unwrap();
    }
    tx.try_push("quiet", 100).unwrap();
    let first_two: Vec<_> = (&mut rx).take(2).collect().await;
    assert_eq!(first_two, vec![0, 100]);
}

#[tokio::test]
async fn a_full_key_refuses_only_itself() {
    let (tx, _rx) = fair_queue::<&str, u32>(2, gauge());
    tx.try_push("a", 1).unwrap();
    tx.try_push("a", 2).unwrap();
    assert_eq!(tx.try_push("a", 3), Err(QueueError::Full(3)));
    tx.try_push("b", 1).unwrap();
    assert_eq!(tx.push_control("a", 4, 3, |_| {}), Ok(()));
}

#[tokio::test]
async fn a_control_item_at_the_limit_coalesces_the_queue_and_is_never_refused() {
    let (tx, mut rx) = fair_queue::<&str, u32>(2, gauge());
    for i in 0..3 {
        tx.push_control("a", i, 3, |_| {}).unwrap();
    }
    // At the limit: the coalescing keeps what matters (here: the first item).
    tx.push_control("a", 3, 3, |q| q.truncate(1)).unwrap();
    // A coalescing that frees nothing: the oldest goes, never the newest.
    tx.push_control("a", 4, 3, |_| {}).unwrap();
    tx.push_control("a", 5, 3, |_| {}).unwrap();
    drop(tx);
    let got: Vec<u32> = (&mut rx).collect().await;
    assert_eq!(got, vec![3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn push_waits_for_room_then_proceeds() {
    let (tx, mut rx) = fair_queue::<&str, u32>(1, gauge());
    tx.push("a", 1).await.unwrap();
    let blocked = tokio::time::timeout(Duration::from_secs(1), tx.push("a", 2)).await;
    assert!(blocked.is_err(), "a full key makes its producer wait");
    let tx2 = tx.clone();
    let waiter = tokio::spawn(async move { tx2.push("a", 2).await });
    assert_eq!(rx.next().await, Some(1));
    waiter.await.unwrap().unwrap();
    assert_eq!(rx.next().await, Some(2));
}

#[tokio::test]
async fn depth_gauge_follows_the_queue_and_ends_when_senders_go() {
    let depth = gauge();
    let (tx, mut rx) = fair_queue::<u8, u8>(10, depth.clone());
    tx.try_push(1, 1).unwrap();
    tx.try_push(2, 2).unwrap();
    assert_eq!(depth.get(), 2);
    rx.next().await.unwrap();
    assert!(depth.get() >= 1, "the consumer's batch is still counted");
    drop(tx);
    assert!(rx.next().await.is_some(), "queued items are still served");
    assert!(rx.next().await.is_none());
    assert_eq!(depth.get(), 0, "exact once the consumer has nothing left");
}

#[tokio::test]
async fn closing_ends_the_stream_after_the_queued_items() {
    let (tx, mut rx) = fair_queue::<u8, u8>(1, gauge());
    tx.try_push(1, 1).unwrap();
    let other = tx.clone();
    let waiting = tokio::spawn(async move { other.push(1, 2).await });
    tokio::task::yield_now().await;
    tx.close();
    assert_eq!(waiting.await.unwrap(), Err(QueueError::Closed(2)));
    assert_eq!(tx.try_push(2, 3), Err(QueueError::Closed(3)));
    assert_eq!(rx.next().await, Some(1));
    assert_eq!(rx.next().await, None);
}

#[tokio::test]
async fn dropping_the_consumer_fails_producers() {
    let (tx, rx) = fair_queue::<u8, u8>(10, gauge());
    drop(rx);
    assert_eq!(tx.try_push(1, 1), Err(QueueError::Closed(1)));
    assert_eq!(tx.push(1, 2).await, Err(QueueError::Closed(2)));
}

#[tokio::test]
async fn a_slot_sender_pushes_batches_up_to_capacity_and_waits_for_room() {
    let depth = gauge();
    let (tx, mut rx) = fair_queue::<&str, u32>(4, depth.clone());
    let slot = tx.slot("a");
    // The keyed path and the slot share one queue and one capacity.
    tx.try_push("a", 0).unwrap();
    for i in 1..=3 {
        slot.try_push(i).unwrap();
    }
    assert_eq!(slot.try_push(4), Err(QueueError::Full(4)));
    assert_eq!(depth.get(), 4);
    assert!(
        slot.room_for(1).now_or_never().is_none(),
        "a full slot has no room"
    );
    // The consumer takes what is queued in one batch; the slot has room again.
    assert_eq!(rx.next().await, Some(0));
    slot.room_for(1).await.unwrap();
    for i in 4..=6 {
        slot.try_push(i).unwrap();
    }
    assert!(
        depth.get() >= 6,
        "taken items count until they are handed out"
    );
    let served: Vec<u32> = (&mut rx).take(6).collect().await;
    assert_eq!(served, vec![1, 2, 3, 4, 5, 6]);
    assert!(rx.next().now_or_never().is_none(), "nothing left");
    assert_eq!(depth.get(), 0, "exact while the consumer waits");
}

/// An item standing for as many messages as it holds.
#[derive(Debug, PartialEq)]
struct Heavy(usize);

impl Weighted for Heavy {
    fn weight(&self) -> usize {
        self.0
    }
}

#[tokio::test]
async fn capacity_and_depth_count_weight_and_a_heavy_item_still_goes_alone() {
    let depth = gauge();
    let (tx, mut rx) = fair_queue::<u8, Heavy>(10, depth.clone());
    let slot = tx.slot(1);
    slot.try_push(Heavy(6)).unwrap();
    assert_eq!(slot.free(), 4);
    assert_eq!(slot.try_push(Heavy(5)), Err(QueueError::Full(Heavy(5))));
    slot.try_push(Heavy(4)).unwrap();
    assert_eq!(depth.get(), 10);
    assert_eq!(tx.try_push(1, Heavy(1)), Err(QueueError::Full(Heavy(1))));
    // The consumer takes about CONSUMER_BATCH of weight, but at least one item.
    assert_eq!(rx.next().await, Some(Heavy(6)));
    assert_eq!(rx.next().await, Some(Heavy(4)));
    assert!(rx.next().now_or_never().is_none());
    assert_eq!(depth.get(), 0);
    // Into an empty queue, an item heavier than the capacity goes, alone.
    slot.try_push(Heavy(CONSUMER_BATCH + 20)).unwrap();
    assert_eq!(slot.try_push(Heavy(1)), Err(QueueError::Full(Heavy(1))));
    assert_eq!(rx.next().await, Some(Heavy(CONSUMER_BATCH + 20)));
}

#[tokio::test]
async fn a_heavy_push_waits_for_room_for_its_weight_while_another_sender_fills_the_key() {
    let (tx, mut rx) = fair_queue::<u8, Heavy>(10, gauge());
    let (first, second) = (tx.slot(1), tx.slot(1));
    first.try_push(Heavy(9)).unwrap();
    // One unit of room is left, not the five a batch of five needs: its sender
    // waits (pending, not spinning) while another sender of the key takes the unit.
    assert!(first.room_for(5).now_or_never().is_none());
    second.try_push(Heavy(1)).unwrap();
    let waiting = tokio::spawn(async move {
        first.room_for(5).await.unwrap();
        first.try_push(Heavy(5))
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    assert_eq!(rx.next().await, Some(Heavy(9)));
    assert_eq!(waiting.await.unwrap(), Ok(()));
    assert_eq!(rx.next().await, Some(Heavy(1)));
    assert_eq!(rx.next().await, Some(Heavy(5)));
}

/// Messages `first..first + len` of one key, an item that splits.
#[derive(Debug, PartialEq)]
struct Run {
    key: u8,
    first: u32,
    len: usize,
}

impl Weighted for Run {
    fn weight(&self) -> usize {
        self.len
    }

    fn split_off(&mut self, weight: usize) -> Option<Self> {
        let head = Run {
            key: self.key,
            first: self.first,
            len: weight,
        };
        self.first += weight as u32;
        self.len -= weight;
        Some(head)
    }
}

#[tokio::test]
async fn a_heavy_item_is_served_in_turns_while_other_keys_wait() {
    let depth = gauge();
    let (tx, mut rx) = fair_queue::<u8, Run>(100, depth.clone());
    let (flood, quiet) = (tx.slot(1), tx.slot(2));
    flood
        .try_push(Run {
            key: 1,
            first: 0,
            len: 20,
        })
        .unwrap();
    quiet
        .try_push(Run {
            key: 2,
            first: 0,
            len: 1,
        })
        .unwrap();
    assert_eq!(depth.get(), 21);
    let served: Vec<Run> = (&mut rx).take(4).collect().await;
    let turn = TURN_WEIGHT as u32;
    assert_eq!(
        served,
        vec![
            Run {
                key: 1,
                first: 0,
                len: TURN_WEIGHT
            },
            Run {
                key: 2,
                first: 0,
                len: 1
            },
            Run {
                key: 1,
                first: turn,
                len: TURN_WEIGHT
            },
            Run {
                key: 1,
                first: 2 * turn,
                len: 20 - 2 * TURN_WEIGHT
            },
        ]
    );
    assert!(rx.next().now_or_never().is_none());
    assert_eq!(depth.get(), 0);
}

#[tokio::test]
async fn batches_are_taken_round_robin_across_keys() {
    let (tx, mut rx) = fair_queue::<u8, (u8, u32)>(100, gauge());
    let flood = tx.slot(1);
    for i in 0..80 {
        flood.try_push((1, i)).unwrap();
    }
    tx.try_push(2, (2, 0)).unwrap();
    tx.try_push(3, (3, 0)).unwrap();
    let first: Vec<_> = (&mut rx).take(4).collect().await;
    assert_eq!(first, vec![(1, 0), (2, 0), (3, 0), (1, 1)]);
}

#[tokio::test]
async fn slots_are_released_when_empty_and_unheld() {
    let (tx, mut rx) = fair_queue::<u8, u8>(10, gauge());
    let slot = tx.slot(1);
    slot.try_push(1).unwrap();
    slot.try_push(2).unwrap();
    assert_eq!(rx.next().await, Some(1));
    assert_eq!(rx.next().await, Some(2));
    assert_eq!(lock(&tx.shared).slots.len(), 1, "held by its sender");
    drop(slot);
    assert_eq!(lock(&tx.shared).slots.len(), 0);
    assert!(lock(&tx.shared).index.is_empty());
    tx.try_push(2, 3).unwrap();
    assert_eq!(rx.next().await, Some(3));
    assert_eq!(
        lock(&tx.shared).slots.len(),
        0,
        "keyed pushes leave nothing behind"
    );
}

#[tokio::test]
async fn a_slot_sender_outliving_the_consumer_fails_cleanly() {
    let depth = gauge();
    let (tx, rx) = fair_queue::<u8, u8>(1, depth.clone());
    let slot = tx.slot(1);
    slot.try_push(1).unwrap();
    let waiting = tokio::spawn(async move {
        let result = slot.room_for(1).await;
        (result, slot)
    });
    tokio::task::yield_now().await;
    drop(rx);
    let (result, slot) = waiting.await.unwrap();
    assert_eq!(result, Err(QueueClosed));
    assert_eq!(slot.try_push(2), Err(QueueError::Closed(2)));
    assert_eq!(depth.get(), 0);
    drop(slot);
    assert_eq!(lock(&tx.shared).slots.len(), 0);
}

#[tokio::test]
async fn metered_channel_tracks_depth() {
    let depth = gauge();
    let (tx, mut rx) = metered::<u8>(2, depth.clone());
    tx.send(1).await.unwrap();
    tx.try_send(2).unwrap();
    assert_eq!(tx.try_send(3), Err(QueueError::Full(3)));
    assert_eq!(depth.get(), 2);
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(depth.get(), 1);
    drop(rx);
    assert_eq!(depth.get(), 0);
}
