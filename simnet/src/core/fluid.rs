//! One flow's transmission as a curve: the bytes put on the wire against time.
//!
//! Between two changes of its rate a flow sends at a constant rate, so the curve is
//! piecewise linear. Bytes sent at instant `t` arrive at `t + latency`: the receiver's
//! count of arrived bytes is the curve read `latency` in the past, which is why the curve
//! keeps its segments of the last `latency`.

use std::collections::VecDeque;
use std::time::Duration;

/// Fractions of a byte below this are rounding noise of the floating-point rate
/// arithmetic (rates are shares of a capacity, e.g. a third of it), not bytes.
pub(crate) const EPSILON: f64 = 0.01;

/// A stretch of constant rate: from `since`, `at` bytes sent, `rate` more bytes per
/// nanosecond, never beyond `cap`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Segment {
    since: Duration,
    at: f64,
    rate: f64,
    cap: f64,
}

impl Segment {
    fn value(&self, t: Duration) -> f64 {
        let elapsed = nanos(t.saturating_sub(self.since));
        (self.at + self.rate * elapsed).min(self.cap).max(self.at)
    }

    /// The first instant, not before `since`, at which this segment reaches `x`.
    fn time_of(&self, x: f64) -> Option<Duration> {
        if x <= self.at + EPSILON {
            return Some(self.since);
        }
        if x > self.cap + EPSILON || self.rate <= 0.0 {
            return None;
        }
        Some(self.since + from_nanos(((x - self.at) / self.rate).ceil()))
    }
}

/// The bytes a flow has put on the wire, as a function of time.
#[derive(Clone, Debug)]
pub(crate) struct Fluid {
    /// Earlier segments, oldest first, each ending where the next begins.
    past: VecDeque<Segment>,
    current: Segment,
}

impl Fluid {
    /// Nothing sent yet, at instant `now`.
    pub(crate) fn new(now: Duration) -> Self {
        Self {
            past: VecDeque::new(),
            current: Segment {
                since: now,
                at: 0.0,
                rate: 0.0,
                cap: 0.0,
            },
        }
    }

    /// Bytes sent by `t`, which is at or after the last change.
    pub(crate) fn value(&self, t: Duration) -> f64 {
        self.current.value(t)
    }

    /// Bytes sent by `t`, which may lie in the kept past; before it, the oldest count
    /// kept.
    pub(crate) fn value_at(&self, t: Duration) -> f64 {
        if t >= self.current.since {
            return self.current.value(t);
        }
        match self.past.partition_point(|s| s.since <= t) {
            0 => self.past.front().map_or(self.current.at, |s| s.at),
            i => self.past[i - 1].value(t),
        }
    }

    /// The current rate, in bytes per nanosecond.
    pub(crate) fn rate(&self) -> f64 {
        self.current.rate
    }

    /// From `now` on, sends at `rate` up to `cap`. Segments that ended more than
    /// `horizon` before `now` are forgotten: no arrival is read that far back.
    pub(crate) fn set(&mut self, now: Duration, rate: f64, cap: f64, horizon: Duration) {
        let value = self.current.value(now);
        let moving = value + EPSILON < self.current.cap;
        if rate == self.current.rate && (moving || rate == 0.0) {
            // Same rate, and not yet at the old cap (a write to a flow that is sending)
            // or not moving at all: the line goes on, only its end moves, so no segment
            // is added.
            self.current.cap = cap.max(value);
            return;
        }
        let mut at = self.current.value(now);
        if (cap - at).abs() < EPSILON {
            // Reaching the cap is an event computed to the nanosecond; snap to it.
            at = cap;
        }
        if now > self.current.since {
            self.past.push_back(self.current);
        }
        self.current = Segment {
            since: now,
            at,
            rate,
            cap: cap.max(at),
        };
        let oldest_needed = now.saturating_sub(horizon);
        while self.past.get(1).map_or(self.current.since, |s| s.since) <= oldest_needed
            && !self.past.is_empty()
        {
            self.past.pop_front();
        }
    }

    /// The first instant at which `x` bytes have been sent, at the current rate and
    /// cap; `None` if the curve does not reach `x` without a change.
    pub(crate) fn time_of(&self, x: f64) -> Option<Duration> {
        // Segments start at counts that never decrease: `x` is reached in the last one
        // starting below it, or else where the next one starts.
        let i = self.past.partition_point(|s| s.at + EPSILON < x);
        if i > 0 {
            let end = self.past.get(i).map_or(self.current.since, |s| s.since);
            if let Some(t) = self.past[i - 1].time_of(x).filter(|t| *t <= end) {
                return Some(t);
            }
        }
        match self.past.get(i) {
            Some(segment) => Some(segment.since),
            None => self.current.time_of(x),
        }
    }

    /// Forgets everything after `to` bytes: the bytes beyond were lost (a cut), and are
    /// to be sent again. Nothing is sent from `now` until the next [`set`](Self::set).
    pub(crate) fn rewind(&mut self, now: Duration, to: f64) {
        self.past.clear();
        self.current = Segment {
            since: now,
            at: to,
            rate: 0.0,
            cap: to,
        };
    }

    /// Segments kept, for tests of the bound on memory.
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.past.len() + 1
    }
}

/// A duration in nanoseconds, as a float for the rate arithmetic.
pub(crate) fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Nanoseconds back to a duration, saturating on what no simulation reaches.
pub(crate) fn from_nanos(ns: f64) -> Duration {
    if ns >= u64::MAX as f64 {
        Duration::from_nanos(u64::MAX)
    } else {
        Duration::from_nanos(ns.max(0.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// One byte per microsecond.
    const RATE: f64 = 1e-3;

    #[test]
    fn a_constant_rate_sends_linearly_up_to_the_cap() {
        let mut f = Fluid::new(ms(0));
        f.set(ms(0), RATE, 1500.0, ms(10));
        assert_eq!(f.value(ms(1)), 1000.0);
        assert_eq!(f.value(ms(2)), 1500.0);
        assert_eq!(f.time_of(1000.0), Some(ms(1)));
        assert_eq!(f.time_of(1501.0), None);
    }

    #[test]
    fn the_past_is_read_through_each_segment() {
        let mut f = Fluid::new(ms(0));
        f.set(ms(0), RATE, 1e9, ms(100));
        f.set(ms(10), RATE / 2.0, 1e9, ms(100));
        f.set(ms(20), 0.0, 1e9, ms(100));
        assert_eq!(f.value_at(ms(5)), 5_000.0);
        assert_eq!(f.value_at(ms(15)), 12_500.0);
        assert_eq!(f.value_at(ms(30)), 15_000.0);
        assert_eq!(f.time_of(12_500.0), Some(ms(15)));
        assert_eq!(f.time_of(15_001.0), None);
    }

    #[test]
    fn segments_older_than_the_horizon_are_forgotten() {
        let mut f = Fluid::new(ms(0));
        for t in 0..1000 {
            f.set(ms(t), RATE, 1e12, ms(5));
        }
        assert!(f.kept() <= 7, "kept {}", f.kept());
        assert_eq!(f.value_at(ms(995)), 995_000.0);
    }

    #[test]
    fn a_rewind_holds_the_count_until_sending_resumes() {
        let mut f = Fluid::new(ms(0));
        f.set(ms(0), RATE, 1e9, ms(100));
        f.rewind(ms(10), 4_000.0);
        assert_eq!(f.value_at(ms(5)), 4_000.0);
        assert_eq!(f.value(ms(50)), 4_000.0);
        f.set(ms(50), RATE, 1e9, ms(100));
        assert_eq!(f.value(ms(51)), 5_000.0);
    }
}
