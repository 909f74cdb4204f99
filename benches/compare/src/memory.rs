//! Resident memory per idle connection, each side measured in a fresh child process.

use std::time::Duration;

use crate::rounds::runtime;
use crate::{libp2p_side, ours};

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
pub fn memory_child(which: &str, count: u32) {
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

/// Resident bytes per idle connection of `which` (`ours` or `libp2p`), with `count`
/// open, measured in a fresh child process.
pub fn memory(which: &str, count: u32) -> f64 {
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
