//! Taking turns: a workload's sides each on a runtime of their own, run in rounds in
//! rotating order, so that a change of the machine's speed within a run lands on every
//! side of a ratio.

use std::time::Duration;

use crate::ours;

/// Rounds a workload's sides take turns in (the machine drifts within a run too),
/// rounded up to a multiple of the number of sides, so that each side takes each place
/// in the order equally often.
pub const ROUNDS: usize = 8;

/// How a workload of `total` units is cut for `sides` sides taking turns: the number of
/// rounds, the units of one round and of one side's unmeasured warm-up round (a quarter
/// of a round), each a multiple of `unit` (a write's size, for bulk), so that every
/// round moves exactly what it says.
#[derive(Clone, Copy)]
pub struct Cut {
    /// Rounds per side.
    pub rounds: usize,
    /// Units of one round.
    pub per_round: u64,
    /// Units of the warm-up round.
    pub warm_up: u64,
}

impl Cut {
    /// The cut of `total` units of `unit` for `sides` sides.
    pub fn new(total: u64, sides: usize, unit: u64) -> Self {
        let rounds = ROUNDS.next_multiple_of(sides.max(1));
        let per_round = total / rounds as u64 / unit * unit;
        let warm_up = (per_round / 4 / unit).max(1) * unit;
        assert!(
            per_round > 0,
            "{total} units cannot be cut into {rounds} rounds of {unit}"
        );
        Self {
            rounds,
            per_round,
            warm_up,
        }
    }

    /// Units measured per side: what the figures are computed from.
    pub fn measured(&self) -> u64 {
        self.per_round * self.rounds as u64
    }
}

/// A workload on a runtime of its own, as every workload had before it took turns: in
/// one side's round the other side's tasks (timers, readers) do not run.
pub struct Side {
    /// Names the side in the per-round figures printed on stderr.
    name: &'static str,
    rt: tokio::runtime::Runtime,
    /// `None` only while being dropped.
    pipe: Option<Box<dyn ours::Pipe>>,
}

impl Side {
    /// Opens a pipe on a fresh runtime.
    pub fn open<P: ours::Pipe + 'static>(
        name: &'static str,
        open: impl std::future::Future<Output = P>,
    ) -> Self {
        let rt = runtime();
        let pipe = rt.block_on(open);
        Self {
            name,
            rt,
            pipe: Some(Box::new(pipe)),
        }
    }

    /// Seconds of one round of `count` units, as the runtime's `block_on` future.
    pub fn round(&mut self, count: u64) -> f64 {
        let pipe = self.pipe.as_mut().expect("open");
        self.rt.block_on(pipe.round(count))
    }
}

/// One side of a workload that takes turns with others.
pub trait Turn {
    /// Names the side in the per-round figures printed on stderr.
    fn name(&self) -> &'static str;
    /// Seconds of one round of `count` units.
    fn round(&mut self, count: u64) -> f64;
}

impl Turn for Side {
    fn name(&self) -> &'static str {
        self.name
    }

    fn round(&mut self, count: u64) -> f64 {
        Side::round(self, count)
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        // The pipe's sockets and tasks go inside their runtime.
        let _inside = self.rt.enter();
        self.pipe.take();
    }
}

/// Runs the rounds of `cut` on each side, taking turns and rotating which goes first,
/// after one warm-up round each: returns each side's seconds, summed over its rounds.
/// Each side's rate per round (units per second) goes to stderr.
pub fn interleave<S: Turn>(sides: &mut [S], cut: Cut) -> Vec<f64> {
    for side in sides.iter_mut() {
        side.round(cut.warm_up);
    }
    let mut secs = vec![Vec::new(); sides.len()];
    for round in 0..cut.rounds {
        for turn in 0..sides.len() {
            let i = (round + turn) % sides.len();
            secs[i].push(sides[i].round(cut.per_round));
        }
    }
    for (side, secs) in sides.iter().zip(&secs) {
        let rates: Vec<String> = secs
            .iter()
            .map(|s| format!("{:.3e}", cut.per_round as f64 / s))
            .collect();
        eprintln!("  {} per round: {}", side.name(), rates.join(" "));
    }
    secs.iter().map(|s| s.iter().sum()).collect()
}

/// RPCs outstanding in the rate workload.
pub const IN_FLIGHT: usize = 64;

/// A fresh tokio current-thread runtime.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs a workload as a task spawned on a fresh runtime rather than as its `block_on`
/// future. For the RPC latencies: callers in a node are tasks, and tokio polls the
/// `block_on` future only after an extra zero-timeout poll of the I/O driver whenever
/// another task (here the multiplexer's) wakes it, a system call per request that a
/// task does not pay. Both sides of the latency ratio (and rust-libp2p's) run this way;
/// the other workloads keep `block_on`, where the throughput figures were taken (a
/// spawned bulk writer varied far more from run to run).
pub fn spawned<F>(workload: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().block_on(async { tokio::spawn(workload).await.expect("workload panicked") })
}

/// The `p` quantile of `sorted`, in microseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// RPC round trips over our stack and (`with_echo`) a TCP echo, each on its own runtime,
/// taking turns in `rounds` rounds after a warm-up of a tenth of `samples` each; then
/// our rate with `IN_FLIGHT` outstanding over `rate_count` requests. Every round runs as
/// a spawned task (see [`spawned`]). Each round's p50 goes to stderr.
pub fn rpc_rounds(
    samples: usize,
    rounds: usize,
    rate_count: u64,
    with_echo: bool,
) -> (Vec<Duration>, Vec<Duration>, f64) {
    let ours_rt = runtime();
    let rpc = std::sync::Arc::new(ours_rt.block_on(ours::RpcPipe::open()));
    let echo_rt = runtime();
    let mut echo = with_echo.then(|| echo_rt.block_on(ours::EchoPipe::open()));
    let ours_round = |count: usize| {
        let rpc = std::sync::Arc::clone(&rpc);
        ours_rt.block_on(async move {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(count);
                rpc.latencies(count, &mut lat).await;
                lat
            })
            .await
            .expect("rpc round")
        })
    };
    let mut echo_round = |count: usize| {
        let Some(mut pipe) = echo.take() else {
            return Vec::new();
        };
        let (pipe, lat) = echo_rt.block_on(async move {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(count);
                pipe.latencies(count, &mut lat).await;
                (pipe, lat)
            })
            .await
            .expect("echo round")
        });
        echo = Some(pipe);
        lat
    };
    ours_round(samples / 10);
    echo_round(samples / 10);
    let (mut ours_lat, mut echo_lat) = (Vec::new(), Vec::new());
    let per_round = samples / rounds;
    let mut p50s = Vec::new();
    for round in 0..rounds {
        let (mut o, mut e) = if round % 2 == 0 {
            let o = ours_round(per_round);
            (o, echo_round(per_round))
        } else {
            let e = echo_round(per_round);
            (ours_round(per_round), e)
        };
        o.sort();
        e.sort();
        let p50 = |l: &[Duration]| {
            if l.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.1}", percentile(l, 0.5))
            }
        };
        p50s.push(format!("{}/{}", p50(&o), p50(&e)));
        ours_lat.append(&mut o);
        echo_lat.append(&mut e);
    }
    eprintln!("  rpc p50 per round, ours/echo µs: {}", p50s.join(" "));
    let rate = ours_rt.block_on(async move {
        tokio::spawn(async move { rpc.rate(IN_FLIGHT, rate_count).await })
            .await
            .expect("rate")
    });
    {
        // The echo's socket goes inside its runtime.
        let _inside = echo_rt.enter();
        drop(echo.take());
    }
    (ours_lat, echo_lat, rate)
}
