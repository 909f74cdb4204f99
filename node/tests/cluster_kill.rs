//! Seven `node run` processes on loopback TCP; one is killed with SIGKILL (no graceful
//! close: its peers find out from the dead sockets) and restarted from the same config
//! and key: it rejoins every validator within the backoff cap, and the chain moves on.
//!
//! The partition and latency faults run in-process in
//! `validator-network/tests/cluster.rs`.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

mod common;

use common::{NODE, Running, free_port, keygen, metrics, scratch, value};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Validators in the cluster.
const N: usize = 7;

/// The redial backoff cap configured for the cluster: short, so a rejoin is quick.
const BACKOFF_CAP_MS: u64 = 1000;

/// Bound on starting up: seven processes on a shared two-core machine.
const STARTUP: Duration = Duration::from_secs(60);

/// Slack on top of the backoff cap for a rejoin: the process start, a connectivity
/// check, the handshakes, and the metrics poll interval, on a loaded machine.
const REJOIN_SLACK: Duration = Duration::from_secs(10);

/// Waits until the metrics of every address in `addrs` satisfy `check`, at most
/// `limit`; returns how long it took.
async fn wait_all(
    addrs: &[SocketAddr],
    what: &str,
    limit: Duration,
    check: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut pending: Vec<SocketAddr> = addrs.to_vec();
    let mut last = String::new();
    while start.elapsed() < limit {
        let mut still = Vec::new();
        for &addr in &pending {
            match metrics(addr).await {
                Some(text) if check(&text) => {}
                Some(text) => {
                    last = text;
                    still.push(addr);
                }
                None => still.push(addr),
            }
        }
        pending = still;
        if pending.is_empty() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{pending:?}: {what} not seen within {limit:?}; last metrics:\n{last}");
}

fn connections(m: &str) -> f64 {
    value(m, "network_connections", "")
}

fn spawn(config: &Path) -> Running {
    Running(
        Command::new(NODE)
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test]
async fn a_validator_killed_with_sigkill_and_restarted_rejoins_all_others() {
    let dir = scratch("cluster_kill");
    let ids: Vec<String> = (0..N)
        .map(|i| keygen(&dir.join(format!("v{i}.key"))))
        .collect();
    let ports: Vec<u16> = (0..N).map(|_| free_port()).collect();
    let metrics_addrs: Vec<SocketAddr> = (0..N)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect();
    let trusted: String = ids
        .iter()
        .zip(&ports)
        .map(|(id, port)| {
            format!(
                "[[network.trusted_peers]]\npeer_id = \"{id}\"\naddresses = [\"/ip4/127.0.0.1/tcp/{port}\"]\n\n"
            )
        })
        .collect();
    let configs: Vec<PathBuf> = (0..N)
        .map(|i| {
            let config = format!(
                "metrics_address = \"{}\"\n\n[network]\nidentity_key = \"v{i}.key\"\n\
                 listen_addresses = [\"/ip4/127.0.0.1/tcp/{}\"]\nchain_id = 7\n\n{trusted}\
                 [network.intervals]\nconnectivity_check_ms = 200\nbackoff_base_ms = 100\n\
                 backoff_cap_ms = {BACKOFF_CAP_MS}\nping_interval_ms = 1000\nping_timeout_ms = 1000\n\n\
                 [mempool]\ntransactions_per_second = 20\n",
                metrics_addrs[i], ports[i]
            );
            let path = dir.join(format!("node{i}.toml"));
            std::fs::write(&path, config).unwrap();
            path
        })
        .collect();
    let mut children: Vec<Running> = configs.iter().map(|c| spawn(c)).collect();
    let all_up = |m: &str| connections(m) == (N - 1) as f64;
    wait_all(&metrics_addrs, "6 connections", STARTUP, all_up).await;

    let victim = N - 1;
    children[victim].0.kill().unwrap(); // SIGKILL on Unix.
    children[victim].0.wait().unwrap();
    let others = &metrics_addrs[..victim];
    let lost = wait_all(others, "the killed node lost", STARTUP, |m| {
        connections(m) == (N - 2) as f64
    })
    .await;
    println!("the six others lost the killed validator within {lost:?}");
    let height_before = |m: &str| value(m, "consensus_committed_height", "");
    let heights: Vec<f64> = {
        let mut h = Vec::new();
        for &addr in others {
            h.push(metrics(addr).await.map_or(0.0, |m| height_before(&m)));
        }
        h
    };

    children[victim] = spawn(&configs[victim]);
    let limit = Duration::from_millis(BACKOFF_CAP_MS) + REJOIN_SLACK;
    let rejoined = wait_all(&metrics_addrs, "6 connections again", limit, all_up).await;
    println!("the restarted validator rejoined all six within {rejoined:?}");

    // The chain goes on past where it stood when the validator died.
    let top = heights.iter().copied().fold(0.0, f64::max);
    wait_all(others, "commits after the rejoin", STARTUP, |m| {
        height_before(m) > top
    })
    .await;
}
