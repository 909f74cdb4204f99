//! The Markdown table: each figure's median over the runs, each ratio's median over the
//! per-run ratios, and the verdict against the target.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::Sizes;
use crate::rounds::{Cut, IN_FLIGHT};

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The machine's cores, CPU, kernel and load average.
pub fn machine() -> String {
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
pub struct Figures {
    medians: BTreeMap<&'static str, f64>,
    runs: Vec<BTreeMap<&'static str, f64>>,
}

impl Figures {
    /// Each run's figures, with their medians.
    pub fn new(runs: Vec<BTreeMap<&'static str, f64>>) -> Self {
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
/// (loopback TCP alone can move by a factor of two within one table), so a ratio of two
/// medians could pair figures from different runs.
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

/// The table of every figure in `m`, for runs of `sizes`.
pub fn table(m: &Figures, sizes: &Sizes, runs: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| workload | unit | ours | rust-libp2p | raw limit | ours ÷ libp2p | ours ÷ raw | target | verdict |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---:|---|---|");
    bulk_rows(&mut t, m, sizes);
    message_rows(&mut t, m, sizes);
    rpc_rows(&mut t, m);
    connection_rows(&mut t, m, sizes);
    process_rows(&mut t, m, sizes);
    footnotes(&mut t, m, runs);
    t
}

fn bulk_rows(t: &mut String, m: &Figures, sizes: &Sizes) {
    let bulk_l = ratio(m, "bulk.ours", "bulk.libp2p");
    let bulk_r = ratio(m, "bulk.ours", "bulk.tcp");
    let _ = writeln!(
        t,
        "| 1. bulk, {} MiB in {} KiB writes, one stream | MiB/s | {} | {} | {} (TCP) | {} | {} | ≥ 3× libp2p, ≥ 0.5× TCP | {} |",
        Cut::new(sizes.bulk_bytes, 2, sizes.bulk_chunk as u64).measured() >> 20,
        sizes.bulk_chunk / 1024,
        fig(m, "bulk.ours", 0),
        fig(m, "bulk.libp2p", 0),
        fig(m, "bulk.tcp", 0),
        show(bulk_l),
        show(bulk_r),
        verdict(bulk_l.zip(bulk_r).map(|(l, r)| l >= 3.0 && r >= 0.5)),
    );
    let _ = writeln!(
        t,
        "| 1. bulk, same, other limits | MiB/s | | | {} (memsocket), {} (AES-GCM alone) | | {} (memsocket) | | |",
        fig(m, "bulk.memsocket", 0),
        fig(m, "bulk.cipher", 0),
        show(ratio(m, "bulk.ours", "bulk.memsocket")),
    );
}

fn message_rows(t: &mut String, m: &Figures, sizes: &Sizes) {
    let msg_r = ratio(m, "messages.ours", "messages.noise_framed");
    let msg_l = ratio(m, "messages.ours", "messages.libp2p");
    let _ = writeln!(
        t,
        "| 2. 32 B DirectSend messages, one connection ({} messages) | msg/s | {} | {} | {} (TCP+Noise framed) | {} | {} | ≥ 1.1× libp2p, ≥ 1.0× TCP+Noise framed | {} |",
        Cut::new(sizes.messages, 3, 1).measured(),
        fig(m, "messages.ours", 0),
        fig(m, "messages.libp2p", 0),
        fig(m, "messages.noise_framed", 0),
        show(msg_l),
        show(msg_r),
        verdict(msg_l.zip(msg_r).map(|(l, r)| l >= 1.1 && r >= 1.0)),
    );
    let mux_r = ratio(m, "messages.mux_stream", "messages.noise_framed");
    let _ = writeln!(
        t,
        "| 2. same, over one substream of tcp+noise+mux (Framed, no DirectSend) | msg/s | {} | {} (its plain stream) | {} (TCP+Noise framed) | {} | {} | ≥ 1.0× TCP+Noise framed | {} |",
        fig(m, "messages.mux_stream", 0),
        fig(m, "messages.libp2p", 0),
        fig(m, "messages.noise_framed", 0),
        show(ratio(m, "messages.mux_stream", "messages.libp2p")),
        show(mux_r),
        verdict(mux_r.map(|r| r >= 1.0)),
    );
}

fn rpc_rows(t: &mut String, m: &Figures) {
    let p50_r = ratio(m, "rpc_p50.ours", "rpc_p50.tcp");
    let _ = writeln!(
        t,
        "| 3. RPC 32 B, p50, one in flight | µs | {} | {} | {} (TCP echo) | {} | {} | ≤ 1.2× TCP echo | {} |",
        fig(m, "rpc_p50.ours", 1),
        fig(m, "rpc_p50.libp2p", 1),
        fig(m, "rpc_p50.tcp", 1),
        show(ratio(m, "rpc_p50.ours", "rpc_p50.libp2p")),
        show(p50_r),
        verdict(p50_r.map(|r| r <= 1.2)),
    );
    let p99_r = ratio(m, "rpc_p99.ours", "rpc_p99.tcp");
    let _ = writeln!(
        t,
        "| 3. RPC 32 B, p99, one in flight | µs | {} | {} | {} (TCP echo) | {} | {} | ≤ 1.3× TCP echo | {} |",
        fig(m, "rpc_p99.ours", 1),
        fig(m, "rpc_p99.libp2p", 1),
        fig(m, "rpc_p99.tcp", 1),
        show(ratio(m, "rpc_p99.ours", "rpc_p99.libp2p")),
        show(p99_r),
        verdict(p99_r.map(|r| r <= 1.3)),
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
}

fn connection_rows(t: &mut String, m: &Figures, sizes: &Sizes) {
    let setup_l = ratio(m, "setup.ours", "setup.libp2p");
    let _ = writeln!(
        t,
        "| 4. connection setup + first RPC, in sequence | conn/s | {} | {} | | {} | | ≥ 2.5× libp2p | {} |",
        fig(m, "setup.ours", 0),
        fig(m, "setup.libp2p", 0),
        show(setup_l),
        verdict(setup_l.map(|r| r >= 2.5)),
    );
    let setup_r = ratio(m, "setup.ours", "setup.crypto");
    let _ = writeln!(
        t,
        "| 4. same, limit: the X25519 work of an IK handshake alone (2 key pairs + 8 DH, both ends), one core | conn/s | {} | | {} (crypto ceiling) | | {} | ≥ 0.6× crypto ceiling | {} |",
        fig(m, "setup.ours", 0),
        fig(m, "setup.crypto", 0),
        show(setup_r),
        verdict(setup_r.map(|r| r >= 0.6)),
    );
    let _ = writeln!(
        t,
        "| 5. resident memory per idle connection ({} open, both ends in-process) | KiB | {} | {} | | {} | | ≤ 16 KiB (8 per end) | {} |",
        sizes.idle_connections,
        fig(m, "memory.ours", 1),
        fig(m, "memory.libp2p", 1),
        show(ratio(m, "memory.ours", "memory.libp2p")),
        verdict(m.medians.get("memory.ours").map(|v| *v <= 16.0)),
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
        "| 6. {} nodes over memsocket form a full mesh | s | {} | | | | | ≤ 20 s | {} |",
        sizes.mesh_nodes_large,
        fig(m, "mesh_large.ours", 2),
        verdict(m.medians.get("mesh_large.ours").map(|v| *v <= 20.0)),
    );
    let _ = writeln!(
        t,
        "| 6. same, {} nodes, on a multi-thread runtime (default workers), as nodes run | s | {} | | | | | ≤ 20 s | {} |",
        sizes.mesh_nodes_large,
        fig(m, "mesh_large_mt.ours", 2),
        verdict(m.medians.get("mesh_large_mt.ours").map(|v| *v <= 20.0)),
    );
}

fn process_rows(t: &mut String, m: &Figures, sizes: &Sizes) {
    const SAME: &str = "7. same, two processes";
    let bulk_l = ratio(m, "procs_bulk.ours", "procs_bulk.libp2p");
    let bulk_r = ratio(m, "procs_bulk.ours", "procs_bulk.tcp");
    let _ = writeln!(
        t,
        "| 7. two processes on loopback, multi-thread runtimes (default workers): bulk, {} MiB in {} KiB writes, one stream | MiB/s | {} | {} | {} (TCP) | {} | {} | ≥ 3× libp2p, ≥ 0.5× TCP | {} |",
        Cut::new(sizes.bulk_bytes, 3, sizes.bulk_chunk as u64).measured() >> 20,
        sizes.bulk_chunk / 1024,
        fig(m, "procs_bulk.ours", 0),
        fig(m, "procs_bulk.libp2p", 0),
        fig(m, "procs_bulk.tcp", 0),
        show(bulk_l),
        show(bulk_r),
        verdict(bulk_l.zip(bulk_r).map(|(l, r)| l >= 3.0 && r >= 0.5)),
    );
    for (quantile, digits, bound) in [("p50", 1, 1.2), ("p99", 1, 1.3)] {
        let ours = format!("procs_rpc_{quantile}.ours");
        let (libp2p, tcp) = (
            format!("procs_rpc_{quantile}.libp2p"),
            format!("procs_rpc_{quantile}.tcp"),
        );
        let r = ratio(m, &ours, &tcp);
        let _ = writeln!(
            t,
            "| {SAME}: RPC 32 B, {quantile}, one in flight | µs | {} | {} | {} (TCP echo) | {} | {} | ≤ {bound}× TCP echo | {} |",
            fig(m, &ours, digits),
            fig(m, &libp2p, digits),
            fig(m, &tcp, digits),
            show(ratio(m, &ours, &libp2p)),
            show(r),
            verdict(r.map(|r| r <= bound)),
        );
    }
    let rate_l = ratio(m, "procs_rpc_rate.ours", "procs_rpc_rate.libp2p");
    let _ = writeln!(
        t,
        "| {SAME}: RPC 32 B, {IN_FLIGHT} in flight | req/s | {} | {} | | {} | | ≥ 10× libp2p | {} |",
        fig(m, "procs_rpc_rate.ours", 0),
        fig(m, "procs_rpc_rate.libp2p", 0),
        show(rate_l),
        verdict(rate_l.map(|r| r >= 10.0)),
    );
}

fn footnotes(t: &mut String, m: &Figures, runs: usize) {
    let _ = writeln!(
        t,
        "\nEach figure is the median of {runs} runs; each ratio is the median of the {runs} \
         per-run ratios. Within a run, the two sides of each ratio to a raw limit took \
         turns in rounds; each rust-libp2p figure of rows 1-5 ran whole, after ours; in \
         rows 7, bulk and RPC latency took turns between ours, rust-libp2p and the limit."
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
        ("DirectSend ÷ libp2p", "messages.ours", "messages.libp2p"),
        ("RPC p50 ÷ echo", "rpc_p50.ours", "rpc_p50.tcp"),
        ("RPC p99 ÷ echo", "rpc_p99.ours", "rpc_p99.tcp"),
        ("RPC rate ÷ libp2p", "rpc_rate.ours", "rpc_rate.libp2p"),
        ("setup ÷ libp2p", "setup.ours", "setup.libp2p"),
        ("setup ÷ crypto ceiling", "setup.ours", "setup.crypto"),
        (
            "two-process bulk ÷ libp2p",
            "procs_bulk.ours",
            "procs_bulk.libp2p",
        ),
        (
            "two-process bulk ÷ TCP",
            "procs_bulk.ours",
            "procs_bulk.tcp",
        ),
        (
            "two-process RPC p50 ÷ echo",
            "procs_rpc_p50.ours",
            "procs_rpc_p50.tcp",
        ),
        (
            "two-process RPC p99 ÷ echo",
            "procs_rpc_p99.ours",
            "procs_rpc_p99.tcp",
        ),
        (
            "two-process RPC rate ÷ libp2p",
            "procs_rpc_rate.ours",
            "procs_rpc_rate.libp2p",
        ),
    ]
    .iter()
    .filter_map(|(label, a, b)| per_run_line(m, label, a, b))
    .collect();
    if !lines.is_empty() {
        let _ = writeln!(t, "\nPer-run ratios: {}.", lines.join("; "));
    }
}

/// Writes the table `t` and the `machine` line into the file at `path`, between the
/// [`BEGIN`] and [`END`] markers if it has them, else at its end.
pub fn write_out(path: &str, t: &str, machine: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!(
        "{BEGIN}\n{t}\nMachine: {machine}. Runtime: rows 1-6, tokio current-thread, both \
         ends of every connection in one process on that one thread, not pinned to a core; \
         rows 7, two processes, each on a tokio multi-thread runtime with its default \
         workers; the same for our stack, rust-libp2p 0.57 and the raw limits.\n{END}"
    );
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &text[..b], &text[e + END.len()..])
        }
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(path, new).expect("write the table");
}

/// Marks where the generated table starts in the README.
const BEGIN: &str = "<!-- compare:begin -->";
/// Marks where it ends.
const END: &str = "<!-- compare:end -->";
