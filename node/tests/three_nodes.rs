//! Three `node run` processes on loopback, from keys made by `node keygen`: they connect
//! to each other and commit blocks, as their `/metrics` show; when one stops, the other
//! two report it lost.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

mod common;

use common::{NODE, Running, free_port, keygen, metrics, scratch, value};

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound on every wait: connecting and the first commits take well under a second.
const WAIT: Duration = Duration::from_secs(30);

fn node(args: &[&str]) -> std::process::Output {
    Command::new(NODE).args(args).output().unwrap()
}

/// Waits until the metrics of `addr` satisfy `check`.
async fn wait_until(addr: SocketAddr, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(text) = metrics(addr).await {
            if check(&text) {
                return;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{addr}: {what} not seen within {WAIT:?}; last metrics:\n{last}");
}

#[tokio::test]
async fn three_nodes_connect_commit_and_report_a_stopped_one_lost() {
    let dir = scratch("three_nodes");
    let ids: Vec<String> = (0..3)
        .map(|i| keygen(&dir.join(format!("v{i}.key"))))
        .collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let metrics_addrs: Vec<SocketAddr> = (0..3)
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
    let mut children = Vec::new();
    for i in 0..3 {
        let config = format!(
            "metrics_address = \"{}\"\n\n[network]\nidentity_key = \"v{i}.key\"\nlisten_addresses = [\"/ip4/127.0.0.1/tcp/{}\"]\nchain_id = 3\n\n{trusted}[mempool]\ntransactions_per_second = 100\n",
            metrics_addrs[i], ports[i]
        );
        let path = dir.join(format!("node{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let child = Command::new(NODE)
            .args(["run", "--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(Running(child));
    }

    for &addr in &metrics_addrs {
        wait_until(addr, "2 connections and a commit", |m| {
            value(m, "network_connections", "") == 2.0
                && value(m, "consensus_committed_height", "") > 0.0
        })
        .await;
    }
    drop(children.pop());
    for &addr in &metrics_addrs[..2] {
        wait_until(addr, "the stopped node lost", |m| {
            value(m, "network_connections", "") == 1.0
                && value(m, "network_connection_events_total", "event=\"closed\"") >= 1.0
        })
        .await;
    }
}

#[test]
fn keygen_writes_a_private_key_and_refuses_to_overwrite_it() {
    let dir = scratch("keygen");
    let key = dir.join("node.key");

    let id = keygen(&key);
    let again = node(&["keygen", "--out", key.to_str().unwrap()]);
    let shown = node(&["peer-id", "--key", key.to_str().unwrap()]);

    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(String::from_utf8(shown.stdout).unwrap().trim(), id);
}

#[test]
fn an_invalid_config_names_the_field() {
    let dir = scratch("invalid_config");
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        "[network]\nidentity_key = \"k\"\nlisten_addresses = [\"/ip4/127.0.0.1/udp/1\"]\n",
    )
    .unwrap();

    let out = node(&["run", "--config", path.to_str().unwrap()]);

    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("network.listen_addresses[0]"),
        "{out:?}"
    );
}
