//! The demo: four validators on loopback TCP commit blocks, every one of them, and two
//! full nodes follow the chain.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use node::demo::{self, DemoOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_commits_blocks_on_every_validator() {
    let options = DemoOptions {
        validators: 4,
        full_nodes: 2,
        epoch_change_at: None,
        duration: Duration::from_secs(3),
        metrics_address: None,
        transactions_per_second: 200,
    };
    let mut out = Vec::new();

    let summary = demo::run(&options, &mut out, std::future::pending())
        .await
        .unwrap();

    let text = String::from_utf8(out).unwrap();
    assert_eq!(summary.heights.len(), 4);
    assert!(summary.heights.iter().all(|h| *h > 0), "{text}");
    assert!(summary.committed_transactions > 0, "{text}");
    assert!(text.contains("peers 3,3,3,3"), "{text}");
    assert!(text.contains("every validator committed blocks"), "{text}");
    assert_eq!(summary.full_node_heights.len(), 2);
    assert!(summary.full_node_heights.iter().all(|h| *h > 0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_scripted_epoch_a_new_validator_replaces_the_first() {
    let options = DemoOptions {
        validators: 4,
        full_nodes: 0,
        epoch_change_at: Some(10),
        duration: Duration::from_secs(4),
        metrics_address: None,
        transactions_per_second: 200,
    };
    let mut out = Vec::new();

    let summary = demo::run(&options, &mut out, std::future::pending())
        .await
        .unwrap();

    let text = String::from_utf8(out).unwrap();
    let heights = &summary.heights;
    assert_eq!(heights.len(), 5, "{text}");
    // Validator 0 left the set after height 10: it commits nothing past it.
    assert!(heights[0] <= 10, "{text}");
    // The newcomer caught up and validates with the others, past the change.
    let top = heights[1..].iter().copied().max().unwrap();
    assert!(top > 15, "{text}");
    assert!(heights[4] + 5 >= top, "{text}");
    // On the validator network, validator 0 ends with no peer and the others with
    // three each.
    let last = text.lines().rev().find(|l| l.contains("peers")).unwrap();
    assert!(last.contains("peers 0,3,3,3,3"), "{text}");
}
