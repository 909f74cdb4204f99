//! The anti-replay guard: the last handshake timestamp accepted from each static key.
//!
//! A pure state machine (time comes in as an argument). Its memory is bounded by
//! [`REPLAY_GUARD_CAPACITY`]: when full, it forgets the key with the oldest timestamp
//! and raises a *floor* to that timestamp; a key it does not remember must then present
//! a timestamp above the floor. So a forgotten key's old messages stay refused (they are
//! at or below the floor), and an honest dialer, whose timestamp is its current clock,
//! passes. Timestamps more than [`MAX_TIMESTAMP_FUTURE_SKEW`] ahead of our clock are
//! refused, so a flood of fresh keys cannot raise the floor beyond that far ahead.
//!
//! A guard starts with its floor at its own start: a message captured before a listener
//! restarted is refused after the restart though the guard remembers nothing of it, and
//! so are timestamps older than [`MAX_TIMESTAMP_AGE`] at any time. Nothing is stored. A
//! dialer whose clock is behind the listener's by less than that age is refused only in
//! the first moments after a listener starts (until its clock passes the start), and
//! connects on its next attempt.

use std::collections::{BTreeSet, HashMap};

use crate::constants::{MAX_TIMESTAMP_AGE, MAX_TIMESTAMP_FUTURE_SKEW, REPLAY_GUARD_CAPACITY};

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayRefusal {
    /// Not above `last_accepted` (the key's last timestamp, or the floor).
    Replay { last_accepted: u64 },
    /// Too far ahead of `now`.
    InFuture { now: u64 },
    /// Older than the allowed age at `now`.
    TooOld { now: u64 },
}

#[derive(Debug)]
pub(crate) struct ReplayGuard {
    last: HashMap<[u8; 32], u64>,
    /// The same entries ordered by timestamp, to find the oldest.
    by_time: BTreeSet<(u64, [u8; 32])>,
    /// Every forgotten key's last timestamp is at or below this.
    floor: u64,
    capacity: usize,
}

impl ReplayGuard {
    /// A guard started at `start_ms`: timestamps from before it are refused.
    pub(crate) fn starting_at(start_ms: u64) -> Self {
        Self::with_capacity(REPLAY_GUARD_CAPACITY, start_ms)
    }

    pub(crate) fn with_capacity(capacity: usize, start_ms: u64) -> Self {
        Self {
            last: HashMap::new(),
            by_time: BTreeSet::new(),
            floor: start_ms.saturating_sub(1),
            capacity: capacity.max(1),
        }
    }

    /// Accepts `timestamp` from `key` if it is after the last one accepted from it and
    /// not too far ahead of `now_ms`, and records it.
    pub(crate) fn check_and_record(
        &mut self,
        key: [u8; 32],
        timestamp: u64,
        now_ms: u64,
    ) -> Result<(), ReplayRefusal> {
        let max_skew = MAX_TIMESTAMP_FUTURE_SKEW.as_millis() as u64;
        if timestamp > now_ms.saturating_add(max_skew) {
            return Err(ReplayRefusal::InFuture { now: now_ms });
        }
        if timestamp < now_ms.saturating_sub(MAX_TIMESTAMP_AGE.as_millis() as u64) {
            return Err(ReplayRefusal::TooOld { now: now_ms });
        }
        let last_accepted = self.last.get(&key).copied().unwrap_or(self.floor);
        if timestamp <= last_accepted {
            return Err(ReplayRefusal::Replay { last_accepted });
        }
        if let Some(old) = self.last.insert(key, timestamp) {
            self.by_time.remove(&(old, key));
        }
        self.by_time.insert((timestamp, key));
        while self.last.len() > self.capacity {
            let Some((oldest, oldest_key)) = self.by_time.pop_first() else {
                break;
            };
            self.last.remove(&oldest_key);
            self.floor = self.floor.max(oldest);
        }
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    /// When the guards of these tests started.
    const START: u64 = NOW - 10_000;

    fn guard() -> ReplayGuard {
        ReplayGuard::starting_at(START)
    }

    #[test]
    fn a_timestamp_not_after_the_last_one_is_a_replay() {
        let mut guard = guard();
        guard.check_and_record([1; 32], NOW, NOW).unwrap();
        assert_eq!(
            guard.check_and_record([1; 32], NOW, NOW),
            Err(ReplayRefusal::Replay { last_accepted: NOW })
        );
        assert_eq!(
            guard.check_and_record([1; 32], NOW - 1, NOW),
            Err(ReplayRefusal::Replay { last_accepted: NOW })
        );
        guard.check_and_record([1; 32], NOW + 1, NOW).unwrap();
        // Another key has its own history.
        guard.check_and_record([2; 32], NOW, NOW).unwrap();
    }

    #[test]
    fn a_timestamp_too_far_ahead_is_refused() {
        let mut guard = guard();
        let skew = MAX_TIMESTAMP_FUTURE_SKEW.as_millis() as u64;
        guard.check_and_record([1; 32], NOW + skew, NOW).unwrap();
        assert_eq!(
            guard.check_and_record([2; 32], NOW + skew + 1, NOW),
            Err(ReplayRefusal::InFuture { now: NOW })
        );
    }

    #[test]
    fn memory_stays_bounded_and_forgotten_keys_stay_replay_safe() {
        let mut guard = ReplayGuard::with_capacity(4, START);
        for i in 0..10u8 {
            guard
                .check_and_record([i; 32], NOW + u64::from(i), NOW)
                .unwrap();
            assert!(guard.len() <= 4);
        }
        // Key 0 was forgotten; its old message is still refused through the floor.
        assert!(matches!(
            guard.check_and_record([0; 32], NOW, NOW),
            Err(ReplayRefusal::Replay { .. })
        ));
        // A fresh message from it, with a current clock, passes.
        guard.check_and_record([0; 32], NOW + 100, NOW).unwrap();
    }

    #[test]
    fn a_message_from_before_the_guard_started_is_refused_without_any_memory_of_it() {
        // A listener restarted at NOW: what a dialer sent it a second earlier, captured
        // and replayed now, is refused by the new guard, which remembers nothing.
        let mut restarted = ReplayGuard::starting_at(NOW);
        assert_eq!(
            restarted.check_and_record([1; 32], NOW - 1_000, NOW),
            Err(ReplayRefusal::Replay {
                last_accepted: NOW - 1
            })
        );
        // The dialer's next handshake, with its clock, passes.
        restarted
            .check_and_record([1; 32], NOW + 5, NOW + 5)
            .unwrap();
    }

    #[test]
    fn a_timestamp_older_than_the_allowed_age_is_refused() {
        let mut guard = ReplayGuard::starting_at(0);
        let age = MAX_TIMESTAMP_AGE.as_millis() as u64;
        guard.check_and_record([1; 32], NOW - age, NOW).unwrap();
        assert_eq!(
            guard.check_and_record([2; 32], NOW - age - 1, NOW),
            Err(ReplayRefusal::TooOld { now: NOW })
        );
    }
}
