//! The comparison suite: the same workloads over our stack, over rust-libp2p (TCP +
//! Noise + yamux; a plain stream and request-response), and over the machine's raw limits
//! (loopback TCP, memsocket, the cipher alone), in one run; prints each figure and each
//! ratio and writes them as a Markdown table.
//!
//! `./benches/compare/run.sh` (from the workspace root) builds it and writes
//! `benches/README.md`. Every workload runs on one tokio current-thread runtime with both
//! ends in one process, so both sides of every ratio get one core under the same
//! conditions; and the two sides of each ratio to a raw limit take turns in rounds (see
//! [`interleave`]), as the machine's speed drifts within a run. The memory workloads
//! run in a fresh child process each.

mod libp2p_side;
mod ours;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use benches::layers::Layers;
use benches::stack::Socket;

/// The sizes of one run.
#[derive(Clone, Copy)]
struct Sizes {
    bulk_bytes: u64,
    bulk_chunk: usize,
    messages: u64,
    rpc_samples: usize,
    /// Rounds the RPC latency workload's sides take turns in.
    rpc_rounds: usize,
    rpc_rate_count: u64,
    setups: u32,
    idle_connections: u32,
    mesh_nodes: usize,
}

/// The sizes.
const FULL: Sizes = Sizes {
    bulk_bytes: 1 << 30,
    bulk_chunk: 64 * 1024,
    messages: 2_000_000,
    rpc_samples: 20_000,
    rpc_rounds: ROUNDS,
    rpc_rate_count: 200_000,
    setups: 300,
    idle_connections: 1_000,
    mesh_nodes: 100,
};

/// A smoke run of every workload in seconds.
const QUICK: Sizes = Sizes {
    bulk_bytes: 64 << 20,
    bulk_chunk: 64 * 1024,
    messages: 100_000,
    rpc_samples: 1_000,
    rpc_rounds: ROUNDS,
    rpc_rate_count: 10_000,
    setups: 20,
    idle_connections: 100,
    mesh_nodes: 20,
};

/// Rounds a workload's sides take turns in (the machine drifts within a run too),
/// rounded up to a multiple of the number of sides, so that each side takes each place
/// in the order equally often.
const ROUNDS: usize = 8;

/// How a workload of `total` units is cut for `sides` sides taking turns: the number of
/// rounds, the units of one round and of one side's unmeasured warm-up round (a quarter
/// of a round), each a multiple of `unit` (a write's size, for bulk), so that every
/// round moves exactly what it says.
#[derive(Clone, Copy)]
struct Cut {
    rounds: usize,
    per_round: u64,
    warm_up: u64,
}

impl Cut {
    fn new(total: u64, sides: usize, unit: u64) -> Self {
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
    fn measured(&self) -> u64 {
        self.per_round * self.rounds as u64
    }
}

/// A workload on a runtime of its own, as every workload had before it took turns: in
/// one side's round the other side's tasks (timers, readers) do not run.
struct Side {
    /// Names the side in the per-round figures printed on stderr.
    name: &'static str,
    rt: tokio::runtime::Runtime,
    /// `None` only while being dropped.
    pipe: Option<Box<dyn ours::Pipe>>,
}

impl Side {
    /// Opens a pipe on a fresh runtime.
    fn open<P: ours::Pipe + 'static>(
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
    fn round(&mut self, count: u64) -> f64 {
        let pipe = self.pipe.as_mut().expect("open");
        self.rt.block_on(pipe.round(count))
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
fn interleave(sides: &mut [Side], cut: Cut) -> Vec<f64> {
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
        eprintln!("  {} per round: {}", side.name, rates.join(" "));
    }
    secs.iter().map(|s| s.iter().sum()).collect()
}

/// RPCs outstanding in the rate workload.
const IN_FLIGHT: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
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
/// spawned bulk writer measured 500 to 1250 MiB/s from run to run).
fn spawned<F>(workload: F) -> F::Output
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().block_on(async { tokio::spawn(workload).await.expect("workload panicked") })
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Runs in a child process: prints resident bytes per idle connection.
fn memory_child(which: &str, count: u32) {
    let rt = runtime();
    rt.block_on(async {
        // Warm up the allocator and the runtime with one connection first, so the
        // figure is the per-connection cost, not first-use costs.
        let before;
        let _held;
        if which == "ours" {
            let warm = ours::idle_connections(1).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            before = rss_bytes();
            _held = (warm, ours::idle_connections(count).await);
        } else {
            libp2p_side::idle_connections(1).await.expect("libp2p");
            tokio::time::sleep(Duration::from_millis(200)).await;
            before = rss_bytes();
            libp2p_side::idle_connections(count).await.expect("libp2p");
            _held = (Vec::new(), Vec::new());
        }
        // Let every handshake's leftovers settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_bytes();
        println!("{}", (after.saturating_sub(before)) / u64::from(count));
    });
}

fn memory(which: &str, count: u32) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .args(["--child-memory", which, &count.to_string()])
        .output()
        .expect("child runs");
    assert!(out.status.success(), "memory child failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .expect("child prints a number")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// RPC round trips over our stack and (`with_echo`) a TCP echo, each on its own runtime,
/// taking turns in `rounds` rounds after a warm-up of a tenth of `samples` each; then
/// our rate with `IN_FLIGHT` outstanding over `rate_count` requests. Every round runs as
/// a spawned task (see [`spawned`]). Each round's p50 goes to stderr.
fn rpc_rounds(
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

/// A count given on the command line; exits with usage if it is not one.
fn count(arg: Option<&String>) -> usize {
    arg.and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or_else(|| {
            eprintln!("--rpc-samples, --rpc-rounds and --rpc-rate take a count");
            std::process::exit(2);
        })
}

/// One run of every workload: figure name → value.
fn run_once(sizes: &Sizes, only: Option<&str>, ours_only: bool) -> BTreeMap<&'static str, f64> {
    let mut f = BTreeMap::new();
    let want = |name: &str| only.is_none_or(|o| o == name);
    if want("bulk") {
        let chunk = sizes.bulk_chunk;
        let mut sides = vec![Side::open(
            "bulk, ours, bytes/s",
            ours::BulkPipe::open(Socket::Tcp, Layers::NoiseMux, chunk),
        )];
        if !ours_only {
            sides.push(Side::open(
                "bulk, TCP, bytes/s",
                ours::BulkPipe::open(Socket::Tcp, Layers::Plain, chunk),
            ));
        }
        let cut = Cut::new(sizes.bulk_bytes, 2, chunk as u64);
        let mib = cut.measured() as f64 / (1024.0 * 1024.0);
        let secs = interleave(&mut sides, cut);
        drop(sides);
        f.insert("bulk.ours", mib / secs[0]);
        if ours_only {
            return f;
        }
        f.insert("bulk.tcp", mib / secs[1]);
        // rust-libp2p runs whole, after the same warm-up on its stream.
        let t = runtime()
            .block_on(libp2p_side::bulk(cut.measured(), cut.warm_up, chunk))
            .expect("libp2p bulk");
        f.insert("bulk.libp2p", mib / t);
        // The memsocket limit runs whole too: it is no target's side.
        let mut memory = Side::open(
            "bulk, memsocket, bytes/s",
            ours::BulkPipe::open(Socket::Memory, Layers::Plain, chunk),
        );
        memory.round(cut.warm_up);
        let t = memory.round(cut.measured());
        drop(memory);
        f.insert("bulk.memsocket", mib / t);
        f.insert(
            "bulk.cipher",
            mib / ours::cipher(cut.measured(), chunk - 16),
        );
        eprintln!("bulk done");
    }
    if want("messages") {
        // `--ours-only` (for profiling) runs DirectSend alone.
        let mut sides = vec![Side::open(
            "messages, DirectSend, msg/s",
            ours::DirectSendPipe::open(),
        )];
        if !ours_only {
            sides.push(Side::open(
                "messages, mux stream, msg/s",
                ours::FramedPipe::open(Layers::NoiseMux),
            ));
            sides.push(Side::open(
                "messages, TCP+Noise framed, msg/s",
                ours::FramedPipe::open(Layers::Noise),
            ));
        }
        let cut = Cut::new(sizes.messages, 3, 1);
        let count = cut.measured() as f64;
        let secs = interleave(&mut sides, cut);
        drop(sides);
        f.insert("messages.ours", count / secs[0]);
        if ours_only {
            return f;
        }
        f.insert("messages.mux_stream", count / secs[1]);
        f.insert("messages.noise_framed", count / secs[2]);
        // rust-libp2p runs whole, after the same warm-up on its stream.
        f.insert(
            "messages.libp2p",
            runtime()
                .block_on(libp2p_side::small_messages(cut.measured(), cut.warm_up))
                .expect("libp2p messages"),
        );
        eprintln!("messages done");
    }
    if want("rpc") {
        // `--ours-only` (for profiling) runs our RPC alone.
        let (mut ours_lat, mut echo_lat, rate) = rpc_rounds(
            sizes.rpc_samples,
            sizes.rpc_rounds,
            sizes.rpc_rate_count,
            !ours_only,
        );
        ours_lat.sort();
        echo_lat.sort();
        f.insert("rpc_p50.ours", percentile(&ours_lat, 0.5));
        f.insert("rpc_p99.ours", percentile(&ours_lat, 0.99));
        f.insert("rpc_rate.ours", rate);
        if ours_only {
            return f;
        }
        f.insert("rpc_p50.tcp", percentile(&echo_lat, 0.5));
        f.insert("rpc_p99.tcp", percentile(&echo_lat, 0.99));
        let (lat, rate) = spawned(libp2p_side::rpc(
            sizes.rpc_samples,
            IN_FLIGHT,
            sizes.rpc_rate_count,
        ))
        .expect("libp2p rpc");
        f.insert("rpc_p50.libp2p", percentile(&lat, 0.5));
        f.insert("rpc_p99.libp2p", percentile(&lat, 0.99));
        f.insert("rpc_rate.libp2p", rate);
        eprintln!("rpc done");
    }
    if want("setup") {
        f.insert("setup.ours", runtime().block_on(ours::setup(sizes.setups)));
        if ours_only {
            return f;
        }
        f.insert(
            "setup.libp2p",
            runtime()
                .block_on(libp2p_side::setup(sizes.setups))
                .expect("libp2p setup"),
        );
        eprintln!("setup done");
    }
    if want("memory") {
        f.insert(
            "memory.ours",
            memory("ours", sizes.idle_connections) / 1024.0,
        );
        f.insert(
            "memory.libp2p",
            memory("libp2p", sizes.idle_connections) / 1024.0,
        );
        eprintln!("memory done");
    }
    if want("mesh") {
        f.insert(
            "mesh.ours",
            runtime().block_on(ours::mesh(sizes.mesh_nodes)),
        );
        eprintln!("mesh done");
    }
    f
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}, Linux {kernel}; load average at the end of the run: {load}")
}

/// Every run's figures, and their medians.
struct Figures {
    medians: BTreeMap<&'static str, f64>,
    runs: Vec<BTreeMap<&'static str, f64>>,
}

impl Figures {
    fn new(runs: Vec<BTreeMap<&'static str, f64>>) -> Self {
        let mut all: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for run in &runs {
            for (k, v) in run {
                all.entry(k).or_default().push(*v);
            }
        }
        let medians = all
            .into_iter()
            .map(|(k, mut v)| (k, median(&mut v)))
            .collect();
        Self { medians, runs }
    }

    /// `a ÷ b` in each run that measured both: the two sides of a ratio ran in the same
    /// run, taking turns (ratios to a raw limit) or back to back (ratios to rust-libp2p).
    fn per_run(&self, a: &str, b: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| Some(r.get(a)? / r.get(b)?))
            .collect()
    }
}

/// The figure's median, or a dash when the runs skipped it.
fn fig(m: &Figures, key: &str, digits: usize) -> String {
    m.medians
        .get(key)
        .map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// The median of the per-run ratios `a ÷ b`: the machine's state drifts between runs
/// (loopback TCP alone moved between 750 and 1830 MiB/s in one table), so a ratio of
/// two medians could pair figures from different runs.
fn ratio(m: &Figures, a: &str, b: &str) -> Option<f64> {
    let mut r = m.per_run(a, b);
    (!r.is_empty()).then(|| median(&mut r))
}

/// The per-run ratios `a ÷ b`, for the table's footnote.
fn per_run_line(m: &Figures, label: &str, a: &str, b: &str) -> Option<String> {
    let r = m.per_run(a, b);
    (!r.is_empty()).then(|| {
        let each: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
        format!("{label} {}", each.join(", "))
    })
}

fn show(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "–",
    }
}

fn table(m: &Figures, sizes: &Sizes, runs: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| workload | unit | ours | rust-libp2p | raw limit | ours ÷ libp2p | ours ÷ raw | target | verdict |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---:|---|---|");
    let bulk_l = ratio(m, "bulk.ours", "bulk.libp2p");
    let bulk_r = ratio(m, "bulk.ours", "bulk.tcp");
    let _ = writeln!(
        t,
        "| 1. bulk, {} MiB in {} KiB writes, one stream | MiB/s | {} | {} | {} (TCP) | {} | {} | ≥ 2.5× libp2p, ≥ 0.4× TCP | {} |",
        Cut::new(sizes.bulk_bytes, 2, sizes.bulk_chunk as u64).measured() >> 20,
        sizes.bulk_chunk / 1024,
        fig(m, "bulk.ours", 0),
        fig(m, "bulk.libp2p", 0),
        fig(m, "bulk.tcp", 0),
        show(bulk_l),
        show(bulk_r),
        verdict(bulk_l.zip(bulk_r).map(|(l, r)| l >= 2.5 && r >= 0.4)),
    );
    let _ = writeln!(
        t,
        "| 1. bulk, same, other limits | MiB/s | | | {} (memsocket), {} (AES-GCM alone) | | {} (memsocket) | | |",
        fig(m, "bulk.memsocket", 0),
        fig(m, "bulk.cipher", 0),
        show(ratio(m, "bulk.ours", "bulk.memsocket")),
    );
    let msg_r = ratio(m, "messages.ours", "messages.noise_framed");
    let _ = writeln!(
        t,
        "| 2. 32 B DirectSend messages, one connection ({} messages) | msg/s | {} | {} | {} (TCP+Noise framed) | {} | {} | ≥ 0.9× TCP+Noise framed | {} |",
        Cut::new(sizes.messages, 3, 1).measured(),
        fig(m, "messages.ours", 0),
        fig(m, "messages.libp2p", 0),
        fig(m, "messages.noise_framed", 0),
        show(ratio(m, "messages.ours", "messages.libp2p")),
        show(msg_r),
        verdict(msg_r.map(|r| r >= 0.9)),
    );
    let mux_r = ratio(m, "messages.mux_stream", "messages.noise_framed");
    let _ = writeln!(
        t,
        "| 2. same, over one substream of tcp+noise+mux (Framed, no DirectSend) | msg/s | {} | {} (its plain stream) | {} (TCP+Noise framed) | {} | {} | ≥ 0.9× TCP+Noise framed | {} |",
        fig(m, "messages.mux_stream", 0),
        fig(m, "messages.libp2p", 0),
        fig(m, "messages.noise_framed", 0),
        show(ratio(m, "messages.mux_stream", "messages.libp2p")),
        show(mux_r),
        verdict(mux_r.map(|r| r >= 0.9)),
    );
    let p50_r = ratio(m, "rpc_p50.ours", "rpc_p50.tcp");
    let _ = writeln!(
        t,
        "| 3. RPC 32 B, p50, one in flight | µs | {} | {} | {} (TCP echo) | {} | {} | ≤ 1.5× TCP echo | {} |",
        fig(m, "rpc_p50.ours", 1),
        fig(m, "rpc_p50.libp2p", 1),
        fig(m, "rpc_p50.tcp", 1),
        show(ratio(m, "rpc_p50.ours", "rpc_p50.libp2p")),
        show(p50_r),
        verdict(p50_r.map(|r| r <= 1.5)),
    );
    let _ = writeln!(
        t,
        "| 3. RPC 32 B, p99, one in flight | µs | {} | {} | {} (TCP echo) | {} | {} | | |",
        fig(m, "rpc_p99.ours", 1),
        fig(m, "rpc_p99.libp2p", 1),
        fig(m, "rpc_p99.tcp", 1),
        show(ratio(m, "rpc_p99.ours", "rpc_p99.libp2p")),
        show(ratio(m, "rpc_p99.ours", "rpc_p99.tcp")),
    );
    let rate_l = ratio(m, "rpc_rate.ours", "rpc_rate.libp2p");
    let _ = writeln!(
        t,
        "| 3. RPC 32 B, {IN_FLIGHT} in flight | req/s | {} | {} | | {} | | ≥ 5× libp2p | {} |",
        fig(m, "rpc_rate.ours", 0),
        fig(m, "rpc_rate.libp2p", 0),
        show(rate_l),
        verdict(rate_l.map(|r| r >= 5.0)),
    );
    let setup_l = ratio(m, "setup.ours", "setup.libp2p");
    let _ = writeln!(
        t,
        "| 4. connection setup + first RPC, in sequence | conn/s | {} | {} | | {} | | ≥ 1.5× libp2p | {} |",
        fig(m, "setup.ours", 0),
        fig(m, "setup.libp2p", 0),
        show(setup_l),
        verdict(setup_l.map(|r| r >= 1.5)),
    );
    let _ = writeln!(
        t,
        "| 5. resident memory per idle connection ({} open, both ends in-process) | KiB | {} | {} | | {} | | ≤ 64 KiB | {} |",
        sizes.idle_connections,
        fig(m, "memory.ours", 1),
        fig(m, "memory.libp2p", 1),
        show(ratio(m, "memory.ours", "memory.libp2p")),
        verdict(m.medians.get("memory.ours").map(|v| *v <= 64.0)),
    );
    let _ = writeln!(
        t,
        "| 6. {} nodes over memsocket form a full mesh | s | {} | | | | | ≤ 10 s | {} |",
        sizes.mesh_nodes,
        fig(m, "mesh.ours", 2),
        verdict(m.medians.get("mesh.ours").map(|v| *v <= 10.0)),
    );
    let _ = writeln!(
        t,
        "\nEach figure is the median of {runs} runs; each ratio is the median of the {runs} \
         per-run ratios. Within a run, the two sides of each ratio to a raw limit took \
         turns in rounds; each rust-libp2p figure ran whole, after ours."
    );
    let lines: Vec<String> = [
        ("bulk ÷ libp2p", "bulk.ours", "bulk.libp2p"),
        ("bulk ÷ TCP", "bulk.ours", "bulk.tcp"),
        (
            "DirectSend ÷ framed",
            "messages.ours",
            "messages.noise_framed",
        ),
        (
            "mux stream ÷ framed",
            "messages.mux_stream",
            "messages.noise_framed",
        ),
        ("RPC p50 ÷ echo", "rpc_p50.ours", "rpc_p50.tcp"),
        ("RPC rate ÷ libp2p", "rpc_rate.ours", "rpc_rate.libp2p"),
        ("setup ÷ libp2p", "setup.ours", "setup.libp2p"),
    ]
    .iter()
    .filter_map(|(label, a, b)| per_run_line(m, label, a, b))
    .collect();
    if !lines.is_empty() {
        let _ = writeln!(t, "\nPer-run ratios: {}.", lines.join("; "));
    }
    t
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child-memory") {
        let count = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(1000);
        memory_child(args.get(2).map_or("ours", String::as_str), count);
        return;
    }
    let mut out = None;
    let mut runs = 3usize;
    let mut sizes = FULL;
    let mut only = None;
    let mut ours_only = false;
    let (mut rpc_samples, mut rpc_rate, mut rpc_rounds) = (None, None, None);
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => out = it.next().cloned(),
            "--runs" => runs = it.next().and_then(|r| r.parse().ok()).unwrap_or(3),
            "--quick" => sizes = QUICK,
            // For profiling the RPC rounds: two runs that differ in the sample count
            // differ by whole calls only.
            "--rpc-samples" => rpc_samples = Some(count(it.next())),
            "--rpc-rate" => rpc_rate = Some(count(it.next()) as u64),
            // For studying the machine's changes of speed: shorter turns.
            "--rpc-rounds" => rpc_rounds = Some(count(it.next())),
            "--only" => only = it.next().cloned(),
            // For profiling: our side of the `--only` workload, nothing else (messages:
            // DirectSend alone; rpc: no echo).
            "--ours-only" => ours_only = true,
            other => {
                eprintln!(
                    "unknown argument {other}; usage: compare [--out FILE] [--runs N] [--quick] [--only bulk|messages|rpc|setup|memory|mesh [--ours-only]] [--rpc-samples N] [--rpc-rounds N] [--rpc-rate N]"
                );
                std::process::exit(2);
            }
        }
    }
    if let Some(rounds) = rpc_rounds {
        // Even, so that each side goes first equally often.
        sizes.rpc_rounds = rounds.max(1).next_multiple_of(2);
    }
    if let Some(samples) = rpc_samples {
        sizes.rpc_samples = samples;
    }
    if sizes.rpc_samples < sizes.rpc_rounds {
        eprintln!(
            "{} RPC samples cannot fill {} rounds: --rpc-samples takes at least one per \
             round (--rpc-rounds)",
            sizes.rpc_samples, sizes.rpc_rounds
        );
        std::process::exit(2);
    }
    if let Some(rate) = rpc_rate {
        sizes.rpc_rate_count = rate.max(1);
    }
    let mut each = Vec::with_capacity(runs);
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        let figures = run_once(&sizes, only.as_deref(), ours_only);
        for (k, v) in &figures {
            eprintln!("  {k} = {v:.2}");
        }
        each.push(figures);
    }
    let t = table(&Figures::new(each), &sizes, runs);
    println!("{t}");
    let machine = machine();
    println!("{machine}");
    if let Some(path) = out {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let section = format!(
            "{BEGIN}\n{t}\nMachine: {machine}. Runtime: tokio current-thread, both ends of every \
             connection in one process on that one thread, not pinned to a core; the same for \
             our stack, rust-libp2p 0.57 and the raw limits.\n{END}"
        );
        let new = match (text.find(BEGIN), text.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{section}{}", &text[..b], &text[e + END.len()..])
            }
            _ => format!("{text}\n{section}\n"),
        };
        std::fs::write(&path, new).expect("write the table");
    }
}

/// Marks where the generated table starts in the README.
const BEGIN: &str = "<!-- compare:begin -->";
/// Marks where it ends.
const END: &str = "<!-- compare:end -->";
