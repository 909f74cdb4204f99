//! The comparison suite: the same workloads over our stack, over rust-libp2p (TCP +
//! Noise + yamux; a plain stream and request-response), and over the machine's raw limits
//! (loopback TCP, memsocket, the cipher alone), in one run; prints each figure and each
//! ratio and writes them as a Markdown table.
//!
//! `./benches/compare/run.sh` (from the workspace root) builds it and writes
//! `benches/README.md`. Every workload runs on one tokio current-thread runtime with both
//! ends in one process, so both sides of every ratio get one core under the same
//! conditions; and the two sides of each ratio to a raw limit take turns in rounds (see
//! [`rounds::interleave`]), as the machine's speed drifts within a run. The memory
//! workloads run in a fresh child process each.

mod libp2p_side;
mod memory;
mod nodes;
mod ours;
mod remote;
mod remote_rpc;
mod report;
mod rounds;
mod server;

use std::collections::BTreeMap;

use benches::layers::Layers;
use benches::stack::Socket;

use rounds::{Cut, IN_FLIGHT, Side, interleave, percentile, rpc_rounds, runtime, spawned};

/// The sizes of one run.
#[derive(Clone, Copy)]
pub struct Sizes {
    bulk_bytes: u64,
    bulk_chunk: usize,
    messages: u64,
    rpc_samples: usize,
    /// Rounds the RPC latency workload's sides take turns in.
    rpc_rounds: usize,
    rpc_rate_count: u64,
    setups: u32,
    /// Handshakes' worth of X25519 work timed for the setup's crypto ceiling.
    handshakes: u32,
    idle_connections: u32,
    mesh_nodes: usize,
    /// The larger mesh's nodes.
    mesh_nodes_large: usize,
}

/// The sizes.
const FULL: Sizes = Sizes {
    bulk_bytes: 1 << 30,
    bulk_chunk: 64 * 1024,
    messages: 2_000_000,
    rpc_samples: 20_000,
    rpc_rounds: rounds::ROUNDS,
    rpc_rate_count: 200_000,
    setups: 300,
    handshakes: 3_000,
    idle_connections: 1_000,
    mesh_nodes: 100,
    mesh_nodes_large: 300,
};

/// A smoke run of every workload in seconds.
const QUICK: Sizes = Sizes {
    bulk_bytes: 64 << 20,
    bulk_chunk: 64 * 1024,
    messages: 100_000,
    rpc_samples: 1_000,
    rpc_rounds: rounds::ROUNDS,
    rpc_rate_count: 10_000,
    setups: 20,
    handshakes: 200,
    idle_connections: 100,
    mesh_nodes: 20,
    mesh_nodes_large: 40,
};

/// One run's figures: figure name → value.
type Run = BTreeMap<&'static str, f64>;

/// A count given on the command line; exits with usage if it is not one.
fn count(arg: Option<&String>) -> usize {
    arg.and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or_else(|| {
            eprintln!("--rpc-samples, --rpc-rounds and --rpc-rate take a count");
            std::process::exit(2);
        })
}

/// One run of every workload (or of `only`).
fn run_once(sizes: &Sizes, only: Option<&str>, ours_only: bool) -> Run {
    let mut f = Run::new();
    let want = |name: &str| only.is_none_or(|o| o == name);
    if want("bulk") {
        bulk(&mut f, sizes, ours_only);
    }
    if want("messages") {
        messages(&mut f, sizes, ours_only);
    }
    if want("rpc") {
        rpc(&mut f, sizes, ours_only);
    }
    if want("setup") {
        setup(&mut f, sizes, ours_only);
    }
    if want("memory") {
        f.insert(
            "memory.ours",
            memory::memory("ours", sizes.idle_connections) / 1024.0,
        );
        f.insert(
            "memory.libp2p",
            memory::memory("libp2p", sizes.idle_connections) / 1024.0,
        );
        eprintln!("memory done");
    }
    if want("processes") {
        processes(&mut f, sizes, ours_only);
    }
    if want("mesh") {
        f.insert(
            "mesh.ours",
            runtime().block_on(ours::mesh(sizes.mesh_nodes)),
        );
        f.insert(
            "mesh_large.ours",
            runtime().block_on(ours::mesh(sizes.mesh_nodes_large)),
        );
        f.insert(
            "mesh_large_mt.ours",
            remote::multi_thread().block_on(ours::mesh(sizes.mesh_nodes_large)),
        );
        eprintln!("mesh done");
    }
    f
}

/// Bulk: ours and TCP take turns, then rust-libp2p, memsocket and the cipher alone.
fn bulk(f: &mut Run, sizes: &Sizes, ours_only: bool) {
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
        return;
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

/// Small messages: DirectSend, the multiplexer's stream and the framed floor take turns,
/// then rust-libp2p. `ours_only` (for profiling) runs DirectSend alone.
fn messages(f: &mut Run, sizes: &Sizes, ours_only: bool) {
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
        return;
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

/// RPC: ours and the TCP echo take turns, then rust-libp2p. `ours_only` (for profiling)
/// runs our RPC alone.
fn rpc(f: &mut Run, sizes: &Sizes, ours_only: bool) {
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
        return;
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

/// Connection setup: ours, its crypto ceiling, then rust-libp2p.
fn setup(f: &mut Run, sizes: &Sizes, ours_only: bool) {
    f.insert("setup.ours", runtime().block_on(ours::setup(sizes.setups)));
    if ours_only {
        return;
    }
    f.insert("setup.crypto", ours::handshake_crypto(sizes.handshakes));
    f.insert(
        "setup.libp2p",
        runtime()
            .block_on(libp2p_side::setup(sizes.setups))
            .expect("libp2p setup"),
    );
    eprintln!("setup done");
}

/// The two-process workloads (see [`remote`]): bulk, with ours, rust-libp2p and plain
/// TCP taking turns; then RPC round trips, with ours, rust-libp2p and the TCP echo taking
/// turns, and ours' and rust-libp2p's rate with `IN_FLIGHT` outstanding. `ours_only` (for profiling)
/// runs our sides alone.
fn processes(f: &mut Run, sizes: &Sizes, ours_only: bool) {
    let chunk = sizes.bulk_chunk;
    let mut sides = vec![remote::BulkSide::ours(chunk)];
    if !ours_only {
        sides.push(remote::BulkSide::libp2p(chunk));
        sides.push(remote::BulkSide::tcp(chunk));
    }
    let cut = Cut::new(sizes.bulk_bytes, 3, chunk as u64);
    let mib = cut.measured() as f64 / (1024.0 * 1024.0);
    let secs = interleave(&mut sides, cut);
    drop(sides);
    f.insert("procs_bulk.ours", mib / secs[0]);
    if !ours_only {
        f.insert("procs_bulk.libp2p", mib / secs[1]);
        f.insert("procs_bulk.tcp", mib / secs[2]);
    }
    let rpc = remote_rpc::rpc(
        sizes.rpc_samples,
        sizes.rpc_rounds,
        IN_FLIGHT,
        sizes.rpc_rate_count,
        ours_only,
    );
    for (name, lat, rate) in rpc.sides {
        let (p50, p99, r) = match name {
            "ours" => (
                "procs_rpc_p50.ours",
                "procs_rpc_p99.ours",
                Some("procs_rpc_rate.ours"),
            ),
            "libp2p" => (
                "procs_rpc_p50.libp2p",
                "procs_rpc_p99.libp2p",
                Some("procs_rpc_rate.libp2p"),
            ),
            _ => ("procs_rpc_p50.tcp", "procs_rpc_p99.tcp", None),
        };
        f.insert(p50, percentile(&lat, 0.5));
        f.insert(p99, percentile(&lat, 0.99));
        if let (Some(r), Some(rate)) = (r, rate) {
            f.insert(r, rate);
        }
    }
    eprintln!("processes done");
}

/// The command line's choices.
struct Options {
    out: Option<String>,
    runs: usize,
    sizes: Sizes,
    only: Option<String>,
    ours_only: bool,
}

const USAGE: &str = "usage: compare [--out FILE] [--runs N] [--quick] [--only bulk|messages|rpc|setup|memory|processes|mesh [--ours-only]] [--rpc-samples N] [--rpc-rounds N] [--rpc-rate N]";

/// Parses the arguments after the program's name; exits with usage on a bad one.
fn options(args: &[String]) -> Options {
    let mut o = Options {
        out: None,
        runs: 3,
        sizes: FULL,
        only: None,
        ours_only: false,
    };
    let (mut rpc_samples, mut rpc_rate, mut rpc_rounds) = (None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => o.out = it.next().cloned(),
            "--runs" => o.runs = it.next().and_then(|r| r.parse().ok()).unwrap_or(3),
            "--quick" => o.sizes = QUICK,
            // For profiling the RPC rounds: two runs that differ in the sample count
            // differ by whole calls only.
            "--rpc-samples" => rpc_samples = Some(count(it.next())),
            "--rpc-rate" => rpc_rate = Some(count(it.next()) as u64),
            // For studying the machine's changes of speed: shorter turns.
            "--rpc-rounds" => rpc_rounds = Some(count(it.next())),
            "--only" => o.only = it.next().cloned(),
            // For profiling: our side of the `--only` workload, nothing else (messages:
            // DirectSend alone; rpc: no echo).
            "--ours-only" => o.ours_only = true,
            other => {
                eprintln!("unknown argument {other}; {USAGE}");
                std::process::exit(2);
            }
        }
    }
    if let Some(rounds) = rpc_rounds {
        // Even, so that each side goes first equally often.
        o.sizes.rpc_rounds = rounds.max(1).next_multiple_of(2);
    }
    if let Some(samples) = rpc_samples {
        o.sizes.rpc_samples = samples;
    }
    if o.sizes.rpc_samples < o.sizes.rpc_rounds {
        eprintln!(
            "{} RPC samples cannot fill {} rounds: --rpc-samples takes at least one per \
             round (--rpc-rounds)",
            o.sizes.rpc_samples, o.sizes.rpc_rounds
        );
        std::process::exit(2);
    }
    if let Some(rate) = rpc_rate {
        o.sizes.rpc_rate_count = rate.max(1);
    }
    o
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child-memory") {
        let count = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(1000);
        memory::memory_child(args.get(2).map_or("ours", String::as_str), count);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--child-server") {
        let chunk = args
            .get(3)
            .and_then(|c| c.parse().ok())
            .unwrap_or(64 * 1024);
        server::child_server(args.get(2).map_or("ours", String::as_str), chunk);
        return;
    }
    let o = options(&args[1..]);
    let mut each = Vec::with_capacity(o.runs);
    for run in 0..o.runs {
        eprintln!("run {}/{}", run + 1, o.runs);
        let figures = run_once(&o.sizes, o.only.as_deref(), o.ours_only);
        for (k, v) in &figures {
            eprintln!("  {k} = {v:.2}");
        }
        each.push(figures);
    }
    let t = report::table(&report::Figures::new(each), &o.sizes, o.runs);
    println!("{t}");
    let machine = report::machine();
    println!("{machine}");
    if let Some(path) = o.out {
        report::write_out(&path, &t, &machine);
    }
}
