//! `node demo`: a validator set and full nodes on loopback TCP in one process, with a
//! status line per second and a summary at the end. Each validator runs the validator
//! network and a public network; each full node runs only the public network and
//! follows the chain by state sync from the validators.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use toy_consensus::ConsensusConfig;
use toy_mempool::MempoolConfig;
use validator_network::{Identity, NetworkAddress, PeerId, Registry, StackConfig, ValidatorInfo};

use crate::full_node::{self, RunningFullNode};
use crate::metrics::{self, Snapshot, quantile};
use crate::validator::{self, Networks, PublicNetwork, RunningValidator, ScheduledEpoch};

/// Validators in the demo: the smallest set that tolerates one fault (n = 3f + 1).
pub const DEFAULT_VALIDATORS: usize = 4;
/// Full nodes in the demo: two, so that each has a peer that is not a validator too.
pub const DEFAULT_FULL_NODES: usize = 2;
/// The height at which the demo's validator set changes: about half way through the
/// default run.
pub const DEFAULT_EPOCH_CHANGE_AT: u64 = 50;
/// How long the demo runs: long enough to see the chain grow steadily.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Time between status lines.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// What the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Validators to run.
    pub validators: usize,
    /// Full nodes to run.
    pub full_nodes: usize,
    /// The height at which one more validator replaces validator 0 (epoch 1), if any.
    pub epoch_change_at: Option<u64>,
    /// How long to run.
    pub duration: Duration,
    /// Where to serve `/metrics` of every validator (each labelled `validator="<i>"`);
    /// `None`: not served.
    pub metrics_address: Option<SocketAddr>,
    /// Transactions each validator creates per second.
    pub transactions_per_second: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            validators: DEFAULT_VALIDATORS,
            full_nodes: DEFAULT_FULL_NODES,
            epoch_change_at: Some(DEFAULT_EPOCH_CHANGE_AT),
            duration: DEFAULT_DURATION,
            metrics_address: None,
            transactions_per_second: MempoolConfig::default().transactions_per_second,
        }
    }
}

/// What the demo saw.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    /// How long it ran.
    pub elapsed: Duration,
    /// The committed height of each validator at the end.
    pub heights: Vec<u64>,
    /// The height each full node had followed the chain to at the end.
    pub full_node_heights: Vec<u64>,
    /// Transactions committed (by the validator that committed most).
    pub committed_transactions: u64,
    /// Median and 99th percentile of outbound RPC latency, in seconds.
    pub rpc_p50: Option<f64>,
    /// 99th percentile of outbound RPC latency, in seconds.
    pub rpc_p99: Option<f64>,
    /// Outbound RPCs completed.
    pub rpcs: u64,
    /// Payload bytes sent and received by all validators.
    pub bytes: u64,
}

/// Starts `options.validators` validators, reports on `out` every second until
/// `options.duration` has passed or `stop` completes, prints a summary and stops them.
pub async fn run(
    options: &DemoOptions,
    out: &mut impl Write,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<DemoSummary> {
    anyhow::ensure!(options.validators >= 1, "--validators must be at least 1");
    anyhow::ensure!(
        !options.duration.is_zero(),
        "--duration must be more than 0 (e.g. 10s)"
    );
    let validators = start_validators(options)?;
    let full_nodes = start_full_nodes(options, &validators)?;

    let (stop_metrics, stop_metrics_rx) = watch::channel(false);
    print_header(out, options, &validators, &full_nodes)?;
    if let Some(addr) = options.metrics_address {
        serve_metrics(out, addr, &validators, &full_nodes, stop_metrics_rx).await?;
    }
    let summary = report(options, out, stop, &validators, &full_nodes).await?;
    print_summary(out, &summary)?;

    let _ = stop_metrics.send(true);
    for f in full_nodes {
        f.shutdown().await;
    }
    for v in validators {
        v.shutdown().await;
    }
    Ok(summary)
}

/// Serves every node's metrics on `addr` until `stop` turns true.
async fn serve_metrics(
    out: &mut impl Write,
    addr: SocketAddr,
    validators: &[RunningValidator],
    full_nodes: &[RunningFullNode],
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    match metrics::bind(addr).await {
        Ok((listener, bound)) => {
            writeln!(out, "  metrics: http://{bound}/metrics")?;
            let registries = validators
                .iter()
                .flat_map(|v| [Some(v.registry.clone()), v.public_registry.clone()])
                .flatten()
                .chain(full_nodes.iter().map(|f| f.registry.clone()))
                .collect();
            tokio::spawn(metrics::serve(listener, registries, async move {
                let _ = stop.wait_for(|s| *s).await;
            }));
            Ok(())
        }
        Err(error) => writeln!(out, "  metrics: not served, cannot bind {addr}: {error}"),
    }
}

/// Writes a status line every second until `options.duration` has passed or `stop`
/// completes; returns what the run saw.
async fn report(
    options: &DemoOptions,
    out: &mut impl Write,
    stop: impl std::future::Future<Output = ()>,
    validators: &[RunningValidator],
    full_nodes: &[RunningFullNode],
) -> anyhow::Result<DemoSummary> {
    let read = || -> Vec<Snapshot> {
        validators
            .iter()
            .map(|v| Snapshot::read(&v.registry))
            .collect()
    };
    let start = Instant::now();
    let first = read();
    let mut previous = first.clone();
    let mut ticker = tokio::time::interval_at(start + STATUS_INTERVAL, STATUS_INTERVAL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = ticker.tick() => {}
        }
        let now = read();
        let dt = STATUS_INTERVAL.as_secs_f64();
        let delta: Vec<Snapshot> = now.iter().zip(&previous).map(|(n, p)| n.since(p)).collect();
        writeln!(
            out,
            "{:>4}s  peers {}  blocks {}  full nodes {}  {:>6.0} tx/s  rpc p50 {}  {:>7}/s",
            start.elapsed().as_secs(),
            now.iter()
                .map(|s| s.connected.to_string())
                .collect::<Vec<_>>()
                .join(","),
            height_range(&now),
            full_node_heights(full_nodes),
            median_of(&delta, |s| s.committed_transactions) as f64 / dt,
            millis(quantile(&merged_buckets(&delta), 0.5)),
            human_bytes(delta.iter().map(|s| s.bytes).sum::<u64>() as f64 / dt),
        )?;
        previous = now;
        if start.elapsed() >= options.duration {
            break;
        }
    }
    let last = read();
    let total: Vec<Snapshot> = last.iter().zip(&first).map(|(l, f)| l.since(f)).collect();
    let buckets = merged_buckets(&total);
    Ok(DemoSummary {
        elapsed: start.elapsed(),
        heights: last.iter().map(|s| s.height).collect(),
        full_node_heights: full_nodes
            .iter()
            .map(|f| f.status.borrow().height)
            .collect(),
        committed_transactions: max_of(&total, |s| s.committed_transactions),
        rpc_p50: quantile(&buckets, 0.5),
        rpc_p99: quantile(&buckets, 0.99),
        rpcs: buckets.last().map_or(0, |b| b.1),
        bytes: total.iter().map(|s| s.bytes).sum(),
    })
}

/// Starts the validators, each dialing those started before it; each also serves full
/// nodes on a public network. With an epoch change scheduled, one more validator
/// starts first, outside the set: at that height it replaces validator 0.
pub fn start_validators(options: &DemoOptions) -> anyhow::Result<Vec<RunningValidator>> {
    let standby = usize::from(options.epoch_change_at.is_some());
    let identities: Vec<Identity> = (0..options.validators + standby)
        .map(|_| Identity::generate())
        .collect();
    let ids: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
    let first_set = &ids[..options.validators];
    let next_set = &ids[1..];
    let mut started: Vec<(usize, RunningValidator)> = Vec::new();
    // The newcomer first: the change needs its address.
    let order: Vec<usize> = (options.validators..ids.len())
        .chain(0..options.validators)
        .collect();
    let mut identities: Vec<Option<Identity>> = identities.into_iter().map(Some).collect();
    for i in order {
        let identity = identities[i].take().context("each identity is used once")?;
        let known: Vec<NetworkAddress> = started
            .iter()
            .filter(|(j, _)| *j < options.validators)
            .flat_map(|(_, v)| v.listen_addrs.iter().cloned())
            .collect();
        let epoch_change = options.epoch_change_at.map(|at_height| ScheduledEpoch {
            at_height,
            epoch: 1,
            validators: next_set
                .iter()
                .map(|peer| ValidatorInfo {
                    peer_id: *peer,
                    addresses: started
                        .iter()
                        .filter(|(_, v)| v.peer_id == *peer)
                        .flat_map(|(_, v)| v.listen_addrs.iter().cloned())
                        .collect(),
                })
                .collect(),
        });
        let validator_network = if i < options.validators {
            network_config(first_set, &known)
        } else {
            // The newcomer belongs to the next epoch's set from the start.
            StackConfig {
                epoch: 1,
                ..network_config(next_set, &known)
            }
        };
        let v = start_validator(
            options,
            i,
            identity,
            first_set,
            validator_network,
            epoch_change,
        )?;
        started.push((i, v));
    }
    started.sort_by_key(|(i, _)| *i);
    Ok(started.into_iter().map(|(_, v)| v).collect())
}

/// Starts demo validator `i` of the set `set` over `validator_network`.
fn start_validator(
    options: &DemoOptions,
    i: usize,
    identity: Identity,
    set: &[PeerId],
    validator_network: StackConfig,
    epoch_change: Option<ScheduledEpoch>,
) -> anyhow::Result<RunningValidator> {
    let labels = |network: &str| {
        HashMap::from([
            ("validator".to_owned(), i.to_string()),
            ("network".to_owned(), network.to_owned()),
        ])
    };
    let networks = Networks {
        validator: validator_network,
        public: Some(PublicNetwork {
            config: StackConfig::for_public_network(LOOPBACK, set, &[]),
            registry: Registry::new_custom(None, Some(labels("public")))?,
        }),
        epoch_change,
    };
    let mempool = MempoolConfig {
        transactions_per_second: options.transactions_per_second,
        ..MempoolConfig::default()
    };
    validator::start(
        identity,
        networks,
        ConsensusConfig::new(set.to_vec()),
        mempool,
        Registry::new_custom(None, Some(labels("validator")))?,
    )
    .with_context(|| format!("starting validator {i}"))
}

/// Starts the full nodes, each dialing every validator's public network.
pub fn start_full_nodes(
    options: &DemoOptions,
    validators: &[RunningValidator],
) -> anyhow::Result<Vec<RunningFullNode>> {
    let ids: Vec<PeerId> = validators.iter().map(|v| v.peer_id).collect();
    let public: Vec<NetworkAddress> = validators
        .iter()
        .flat_map(|v| v.public_addrs.iter().cloned())
        .collect();
    (0..options.full_nodes)
        .map(|i| {
            let labels = HashMap::from([("full_node".to_owned(), i.to_string())]);
            full_node::start(
                Identity::generate(),
                StackConfig::for_public_network(LOOPBACK, &ids, &public),
                Registry::new_custom(None, Some(labels))?,
            )
            .with_context(|| format!("starting full node {i}"))
        })
        .collect()
}

/// What the demo runs and where, before the status lines.
fn print_header(
    out: &mut impl Write,
    options: &DemoOptions,
    validators: &[RunningValidator],
    full_nodes: &[RunningFullNode],
) -> std::io::Result<()> {
    let first = |addrs: &[NetworkAddress]| {
        addrs
            .first()
            .map(|a| a.clone().without_peer_id().to_string())
            .unwrap_or_default()
    };
    writeln!(
        out,
        "demo: {} and {} on loopback TCP, fresh keys, for {} s",
        count(validators.len(), "validator"),
        count(full_nodes.len(), "full node"),
        options.duration.as_secs()
    )?;
    for (i, v) in validators.iter().enumerate() {
        writeln!(
            out,
            "  validator {i}: {} at {} (public network at {})",
            v.peer_id.short_str(),
            first(&v.listen_addrs),
            first(&v.public_addrs)
        )?;
    }
    if let Some(height) = options.epoch_change_at {
        writeln!(
            out,
            "  epoch 1 after height {height}: validator {} replaces validator 0",
            options.validators
        )?;
    }
    for (i, f) in full_nodes.iter().enumerate() {
        writeln!(
            out,
            "  full node {i}: {} at {} (public network only)",
            f.peer_id.short_str(),
            first(&f.listen_addrs)
        )?;
    }
    Ok(())
}

/// Each full node's height, or `-` with none.
fn full_node_heights(full_nodes: &[RunningFullNode]) -> String {
    if full_nodes.is_empty() {
        return "-".to_owned();
    }
    full_nodes
        .iter()
        .map(|f| f.status.borrow().height.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Where demo nodes listen: loopback, a port picked by the system.
const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// The network configuration of a demo validator: loopback, trusting `all`, dialing
/// those already started (`known`); the later ones dial it.
fn network_config(all: &[PeerId], known: &[NetworkAddress]) -> StackConfig {
    StackConfig::for_validator_set(LOOPBACK, all, known)
}

fn print_summary(out: &mut impl Write, s: &DemoSummary) -> std::io::Result<()> {
    let secs = s.elapsed.as_secs_f64().max(f64::EPSILON);
    let all_committed = s.heights.iter().all(|h| *h > 0);
    writeln!(
        out,
        "summary after {secs:.1} s with {}:",
        count(s.heights.len(), "validator")
    )?;
    writeln!(
        out,
        "  committed height per validator: {} ({})",
        s.heights
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        if all_committed {
            "every validator committed blocks"
        } else {
            "some validator committed nothing"
        }
    )?;
    if !s.full_node_heights.is_empty() {
        writeln!(
            out,
            "  height per full node: {} (followed by state sync over the public network)",
            s.full_node_heights
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        )?;
    }
    writeln!(
        out,
        "  transactions committed: {} ({:.0} tx/s)",
        s.committed_transactions,
        s.committed_transactions as f64 / secs
    )?;
    writeln!(
        out,
        "  rpc latency: p50 {}, p99 {} over {} requests",
        millis(s.rpc_p50),
        millis(s.rpc_p99),
        s.rpcs
    )?;
    writeln!(
        out,
        "  network payload: {} ({}/s)",
        human_bytes(s.bytes as f64),
        human_bytes(s.bytes as f64 / secs)
    )
}

fn merged_buckets(snaps: &[Snapshot]) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = Vec::new();
    for snap in snaps {
        for &(bound, count) in &snap.rpc_buckets {
            match out.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, c)) => *c += count,
                None => out.push((bound, count)),
            }
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The median over the validators: a validator catching up (committing many blocks at
/// once) or one that left the set does not move it.
fn median_of(snaps: &[Snapshot], f: impl Fn(&Snapshot) -> u64) -> u64 {
    let mut values: Vec<u64> = snaps.iter().map(f).collect();
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn max_of(snaps: &[Snapshot], f: impl Fn(&Snapshot) -> u64) -> u64 {
    snaps.iter().map(f).max().unwrap_or(0)
}

fn height_range(snaps: &[Snapshot]) -> String {
    let min = snaps.iter().map(|s| s.height).min().unwrap_or(0);
    let max = snaps.iter().map(|s| s.height).max().unwrap_or(0);
    if min == max {
        format!("{max:>5}")
    } else {
        format!("{min}..{max}")
    }
}

/// Seconds as milliseconds, or `-` without a value.
pub fn millis(secs: Option<f64>) -> String {
    match secs {
        Some(s) => format!("{:.2} ms", s * 1000.0),
        None => "-".to_owned(),
    }
}

/// A byte count in B, KB, MB or GB (powers of 1000).
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `n` and `noun`, plural when `n` is not one.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
