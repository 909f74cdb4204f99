//! The kernel mix benchmark: a 32 B RPC every 10 ms beside 4 MiB responses on the same
//! connection, over real TCP between two processes (in `scripts/kernel-mix.sh`, two
//! network namespaces joined by a shaped veth pair). Two implementations of the same
//! workload: our stack ([`ours`]: one connection, the small protocol `Urgent`, the bulk
//! one `Bulk`) and one plain TCP connection with `TCP_NOTSENT_LOWAT` ([`plain`]: the
//! server puts each small response between two 16 KiB chunks of bulk as soon as its
//! request arrives, the best one connection can do).
//!
//! The client sends a small request every [`SMALL_INTERVAL`] (on a fixed schedule,
//! whether or not earlier ones were answered) and keeps `in_flight` bulk requests
//! outstanding, each answered with [`BULK_SIZE`] bytes. After a warm-up it records for
//! a given duration, waits [`GRACE`] for the last answers, and prints one line of
//! `key=value` fields ([`Summary`]).

pub mod ours;
pub mod plain;

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Size of a small request and of its response.
pub const SMALL_SIZE: usize = 32;
/// Size of a bulk response.
pub const BULK_SIZE: usize = 4 << 20;
/// Interval between two small requests.
pub const SMALL_INTERVAL: Duration = Duration::from_millis(10);
/// `TCP_NOTSENT_LOWAT` of the plain connection unless told otherwise.
pub const PLAIN_LOWAT: u32 = 16 * 1024;
/// How long the client waits after the measured window for answers to requests sent in
/// it. A request still unanswered then counts as lost.
pub const GRACE: Duration = Duration::from_secs(2);

/// Which implementation carries the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// One plain TCP connection with our own framing ([`plain`]).
    Plain,
    /// Our stack ([`ours`]).
    Stack,
}

impl Implementation {
    /// `"plain"` or `"stack"`.
    pub fn label(self) -> &'static str {
        match self {
            Implementation::Plain => "plain",
            Implementation::Stack => "stack",
        }
    }
}

/// `TCP_NOTSENT_LOWAT` for both ends: the implementation's default, a value, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lowat {
    /// 16 KiB for plain, the TCP transport's default for the stack.
    Default,
    /// This many bytes.
    Bytes(u32),
    /// Not set: the kernel's default (no limit).
    Off,
}

impl Lowat {
    /// The value for `implementation`, `None` for no limit.
    pub fn resolve(self, implementation: Implementation) -> Option<u32> {
        match (self, implementation) {
            (Lowat::Default, Implementation::Plain) => Some(PLAIN_LOWAT),
            (Lowat::Default, Implementation::Stack) => {
                netcore::transport::TcpConfig::default().notsent_lowat
            }
            (Lowat::Bytes(bytes), _) => Some(bytes),
            (Lowat::Off, _) => None,
        }
    }
}

/// What the client runs.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The server's address.
    pub server: SocketAddr,
    /// Bulk requests kept outstanding (0: none).
    pub in_flight: usize,
    /// Whether small requests are sent.
    pub small: bool,
    /// Time before the measured window.
    pub warmup: Duration,
    /// Length of the measured window.
    pub duration: Duration,
    /// `TCP_NOTSENT_LOWAT` of the client's socket.
    pub lowat: Option<u32>,
}

impl ClientOptions {
    /// The measured window, for a run that started at `start`.
    pub fn window(&self, start: Instant) -> (Instant, Instant) {
        (start + self.warmup, start + self.warmup + self.duration)
    }
}

/// What the client observed: small requests sent and answered, bulk responses done.
#[derive(Debug, Default)]
pub struct Recorder {
    sent: Mutex<Vec<Instant>>,
    answered: Mutex<Vec<(Instant, Duration)>>,
    bulk_done: Mutex<Vec<(usize, Instant)>>,
}

impl Recorder {
    /// A small request left at `at`.
    pub fn small_sent(&self, at: Instant) {
        self.sent.lock().push(at);
    }

    /// The small request sent at `sent` was answered `latency` later.
    pub fn small_answered(&self, sent: Instant, latency: Duration) {
        self.answered.lock().push((sent, latency));
    }

    /// A bulk response of [`BULK_SIZE`] bytes of bulk lane `lane` (one of the
    /// `in_flight` requests kept outstanding, each asked again once answered) completed
    /// now.
    pub fn bulk_completed(&self, lane: usize) {
        self.bulk_done.lock().push((lane, Instant::now()));
    }

    /// The figures of the window `[from, to)`, with bulk lanes `0..lanes`.
    pub fn summary(&self, from: Instant, to: Instant, lanes: usize) -> Figures {
        let inside = |t: &Instant| *t >= from && *t < to;
        let sent = self.sent.lock().iter().filter(|t| inside(t)).count();
        let mut latencies: Vec<Duration> = (self.answered.lock().iter())
            .filter(|(t, _)| inside(t))
            .map(|(_, l)| *l)
            .collect();
        latencies.sort_unstable();
        let done: Vec<(usize, Instant)> = (self.bulk_done.lock().iter())
            .filter(|(_, t)| inside(t))
            .copied()
            .collect();
        Figures {
            answered: latencies.len(),
            lost: sent.saturating_sub(latencies.len()),
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied(),
            responses: done.len(),
            goodput_mbit: goodput_mbit(&done, lanes),
        }
    }
}

/// Bulk goodput from completions `(lane, time)` of lanes `0..lanes`, Mbit/s: the sum
/// of each lane's rate, whole responses between its first and its last completion, so
/// no partial response counts at either end of the window. (Completions of all lanes
/// together would not do: concurrent responses served in turns complete in clusters.) `None` without lanes, or when a lane did not complete twice
/// (a window too short to tell).
fn goodput_mbit(done: &[(usize, Instant)], lanes: usize) -> Option<f64> {
    let lane_rate = |lane: usize| {
        let times: Vec<Instant> = (done.iter())
            .filter(|(l, _)| *l == lane)
            .map(|(_, t)| *t)
            .collect();
        match (times.first(), times.last()) {
            (Some(first), Some(last)) if times.len() >= 2 => {
                let bits = ((times.len() - 1) * BULK_SIZE * 8) as f64;
                Some(bits / (*last - *first).as_secs_f64() / 1e6)
            }
            _ => None,
        }
    };
    let rates: Option<Vec<f64>> = (0..lanes).map(lane_rate).collect();
    rates.filter(|r| !r.is_empty()).map(|r| r.iter().sum())
}

/// The nearest-rank `p` quantile of `sorted`, `None` if empty.
fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

/// The figures of one run's measured window.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    /// Small requests sent in the window and answered.
    pub answered: usize,
    /// Small requests sent in the window and not answered within [`GRACE`] after it.
    pub lost: usize,
    /// Median latency of the small RPC.
    pub p50: Option<Duration>,
    /// 99th percentile latency of the small RPC.
    pub p99: Option<Duration>,
    /// Largest latency of the small RPC.
    pub max: Option<Duration>,
    /// Bulk responses completed in the window.
    pub responses: usize,
    /// Bulk response payload per second, Mbit/s: each lane's rate between its first
    /// and last completion in the window, summed over the lanes; `None` without bulk,
    /// or when a lane completed fewer than twice.
    pub goodput_mbit: Option<f64>,
}

/// One run's result line: what ran and its figures.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The implementation.
    pub implementation: Implementation,
    /// The client's options.
    pub options: ClientOptions,
    /// The figures.
    pub figures: Figures,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (o, r) = (&self.options, &self.figures);
        let lowat = o.lowat.map_or("off".to_owned(), |b| b.to_string());
        write!(
            f,
            "impl={} k={} small={} lowat={} rpcs={} lost={} p50_ms={} p99_ms={} max_ms={} \
             responses={} goodput_mbit={}",
            self.implementation.label(),
            o.in_flight,
            if o.small { "on" } else { "off" },
            lowat,
            r.answered,
            r.lost,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.responses,
            r.goodput_mbit.map_or("-".to_owned(), |g| format!("{g:.1}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&sorted[..1], 0.99),
            Some(Duration::from_millis(1))
        );
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn goodput_of_clustered_completions_is_the_sum_of_the_lanes() {
        // Four lanes served a frame each in turn: all complete together, every 4 s (4 × 4 MiB per
        // 4 s is 4 MiB/s, 33.55 Mbit/s).
        let start = Instant::now();
        let done: Vec<(usize, Instant)> = (0..3)
            .flat_map(|i| (0..4).map(move |lane| (lane, start + Duration::from_secs(4 * i))))
            .collect();
        let expected = (4 * BULK_SIZE * 8) as f64 / 4.0 / 1e6;
        let measured = goodput_mbit(&done, 4).expect("every lane completed twice");
        assert!((measured - expected).abs() < 1e-9);
        assert_eq!(goodput_mbit(&done[..4], 4), None);
        assert_eq!(goodput_mbit(&done, 5), None);
        assert_eq!(goodput_mbit(&[], 0), None);
    }
}
