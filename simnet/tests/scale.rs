//! A hundred nodes in five regions exchanging messages for a simulated minute, under
//! paused time: every byte arrives, and the minute passes on the simulated clock only
//! (the run prints the wall time it took).

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use simnet::{LatencyMatrix, NodeConfig, SimConfig, SimNetwork, SimSocket, mbit};
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::time::Instant;

const NODES: usize = 100;
/// Each node dials this many next nodes (and is dialed by as many previous ones).
const NEIGHBOURS: usize = 4;
const MESSAGE: usize = 4096;
const INTERVAL: Duration = Duration::from_millis(500);
/// A minute of messages.
const MESSAGES: usize = 120;

const REGIONS: [&str; 5] = ["us-east", "us-west", "eu", "asia", "oceania"];

fn latency() -> LatencyMatrix {
    let ms = Duration::from_millis;
    LatencyMatrix::new(ms(120))
        .with("us-east", "us-west", ms(35))
        .with("us-east", "eu", ms(40))
        .with("us-west", "asia", ms(60))
        .with("eu", "asia", ms(90))
        .with("asia", "oceania", ms(60))
        .with("eu", "oceania", ms(140))
}

/// Sends a message each interval, then shuts down.
async fn send(mut writer: WriteHalf<SimSocket>) -> WriteHalf<SimSocket> {
    let message = vec![0u8; MESSAGE];
    for _ in 0..MESSAGES {
        writer.write_all(&message).await.unwrap();
        tokio::time::sleep(INTERVAL).await;
    }
    writer.shutdown().await.unwrap();
    writer
}

/// Sends over `socket` and counts the bytes that arrive until EOF.
async fn exchange(socket: SimSocket) -> usize {
    let (mut reader, writer) = tokio::io::split(socket);
    let sending = tokio::spawn(send(writer));
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match reader.read(&mut buf).await.unwrap() {
            0 => break,
            n => total += n,
        }
    }
    drop(sending.await.unwrap());
    total
}

#[tokio::test(start_paused = true)]
async fn a_hundred_nodes_exchange_messages_for_a_simulated_minute() {
    let wall = std::time::Instant::now();
    let net = SimNetwork::new(SimConfig::default(), latency());
    let nodes: Vec<_> = (0..NODES)
        .map(|i| net.add_node(NodeConfig::new(REGIONS[i % REGIONS.len()], mbit(1000))))
        .collect();
    let mut listeners: Vec<_> = nodes.iter().map(|n| n.listen(0).unwrap()).collect();
    let start = Instant::now();

    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for k in 1..=NEIGHBOURS {
            let connect = node.connect(listeners[(i + k) % NODES].local_port());
            tasks.push(tokio::spawn(async move {
                exchange(connect.await.unwrap()).await
            }));
        }
    }
    for listener in &mut listeners {
        for _ in 0..NEIGHBOURS {
            let (socket, _) = listener.accept().await;
            tasks.push(tokio::spawn(exchange(socket)));
        }
    }
    let mut received = 0;
    for task in tasks {
        received += task.await.unwrap();
    }

    assert_eq!(received, 2 * NODES * NEIGHBOURS * MESSAGES * MESSAGE);
    let simulated = start.elapsed();
    let sending = INTERVAL * MESSAGES as u32;
    assert!(simulated >= sending, "{simulated:?}");
    assert!(
        simulated < sending + Duration::from_secs(1),
        "{simulated:?}"
    );
    eprintln!(
        "simulated {simulated:?} in {:?} of wall time",
        wall.elapsed()
    );
}
