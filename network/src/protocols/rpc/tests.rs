use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::answering::Answering;
use super::deadlines::{AnswerDeadlines, MIN_LOOK_INTERVAL};

/// An RPC in the queue, answered (`done`) or waiting, with nothing to write.
fn entry(done: bool) -> Arc<Answering> {
    Arc::new(Answering {
        state: parking_lot::Mutex::new(None),
        done: AtomicBool::new(done),
    })
}

#[tokio::test(start_paused = true)]
async fn only_a_deadline_before_the_armed_one_wakes_the_connection_task() {
    let t = Duration::from_secs(10);
    let now = tokio::time::Instant::now();
    let deadlines = AnswerDeadlines::new(now + t);
    // Requests that arrive after the task looked are due no earlier than it waits.
    deadlines.push(now + t, entry(false), 64).unwrap();
    deadlines
        .push(now + t + Duration::from_secs(1), entry(false), 64)
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_millis(1), deadlines.earlier()).await;
    assert!(woken.is_err(), "no earlier deadline was queued");
    // One read slowly, queued after the task looked, is due earlier, so it wakes it.
    let slow = entry(false);
    deadlines
        .push(now + Duration::from_secs(3), Arc::clone(&slow), 64)
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_millis(1), deadlines.earlier()).await;
    assert!(woken.is_ok(), "the earlier deadline woke the task");
    // It is the next due, though queued last.
    let next = deadlines.expire(now + Duration::from_secs(3), t);
    assert!(slow.is_done());
    assert_eq!(next, now + t);
}

#[tokio::test(start_paused = true)]
async fn expiring_takes_what_is_due_and_arms_the_next() {
    let t = Duration::from_secs(10);
    let start = tokio::time::Instant::now();
    let deadlines = AnswerDeadlines::new(start + t);
    let first = entry(false);
    let second = entry(false);
    deadlines
        .push(start + Duration::from_secs(2), Arc::clone(&first), 64)
        .unwrap();
    deadlines
        .push(start + Duration::from_secs(5), Arc::clone(&second), 64)
        .unwrap();
    let next = deadlines.expire(start + Duration::from_secs(2), t);
    assert!(first.is_done() && !second.is_done());
    assert_eq!(next, start + Duration::from_secs(5));
    assert_eq!(deadlines.armed(), next);
    // Empty, it looks again a whole timeout later, and never sooner than the
    // least interval.
    let at = start + Duration::from_secs(6);
    assert_eq!(deadlines.expire(at, t), at + t);
    // Armed at that later look: a request due before it must wake the task.
    assert_eq!(deadlines.armed(), at + t);
    assert!(second.is_done());
    assert_eq!(deadlines.expire(at, Duration::ZERO), at + MIN_LOOK_INTERVAL);
    // Answered ones are not waited for.
    deadlines
        .push(at + Duration::from_secs(1), entry(true), 64)
        .unwrap();
    assert_eq!(deadlines.expire(at, t), at + t);
}

#[tokio::test(start_paused = true)]
async fn a_closed_queue_takes_nothing_more_and_drains_by_the_deadlines() {
    let t = Duration::from_secs(10);
    let start = tokio::time::Instant::now();
    let deadlines = AnswerDeadlines::new(start + t);
    let waiting = entry(false);
    deadlines
        .push(start + Duration::from_secs(4), Arc::clone(&waiting), 64)
        .unwrap();
    deadlines.close();
    let refused = deadlines.push(start + Duration::from_secs(5), entry(false), 64);
    assert!(refused.is_err(), "queued after the connection ended");
    // What waits is timed out at its deadline, not at the close.
    deadlines.drain().await;
    assert!(waiting.is_done());
    assert_eq!(start.elapsed(), Duration::from_secs(4));
}

#[test]
fn answered_rpcs_behind_a_waiting_one_are_dropped_in_bulk() {
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let deadlines = AnswerDeadlines::new(far);
    let compact_at = 32;
    // The oldest waits; everything behind it gets answered at once.
    deadlines.push(far, entry(false), compact_at).unwrap();
    for _ in 0..1000 {
        deadlines.push(far, entry(true), compact_at).unwrap();
        let len = deadlines.inner.lock().len();
        assert!(len <= compact_at, "{len} queued");
    }
    // Answered ones at the front leave on the next push.
    let deadlines = AnswerDeadlines::new(far);
    for _ in 0..10 {
        deadlines.push(far, entry(true), compact_at).unwrap();
    }
    assert_eq!(deadlines.inner.lock().len(), 1);
}
