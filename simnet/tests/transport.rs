//! `SimTransport` as netcore's `Transport`: `/memory/<port>` addresses, the remote
//! address of an inbound connection, refusal, and the same figures from the same run.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::io;
use std::time::Duration;

use futures::StreamExt;
use netcore::NetworkAddress;
use netcore::transport::{Transport, TransportError};
use simnet::{LatencyMatrix, NodeConfig, SimConfig, SimNetwork, mbit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn network() -> SimNetwork {
    let latency = LatencyMatrix::new(ms(100))
        .with("eu", "us", ms(40))
        .with("us", "asia", ms(90));
    SimNetwork::new(SimConfig::default(), latency)
}

#[tokio::test(start_paused = true)]
async fn the_listener_sees_which_node_dialed_it() {
    let net = network();
    let eu = net.add_node(NodeConfig::new("eu", mbit(1000)));
    let us = net.add_node(NodeConfig::new("us", mbit(1000)));
    let asia = net.add_node(NodeConfig::new("asia", mbit(1000)));
    let (mut listener, addr) = us.listen_on("/memory/0".parse().unwrap()).unwrap();
    assert_eq!(net.node_of(&addr), Some(us.node()));

    let from_eu = eu.dial(addr.clone()).unwrap().await.unwrap();
    let from_asia = asia.dial(addr).unwrap().await.unwrap();
    let (first, first_addr) = listener.next().await.unwrap().unwrap();
    let (second, second_addr) = listener.next().await.unwrap().unwrap();

    assert_ne!(first_addr, second_addr);
    assert_eq!(net.node_of(&first_addr), Some(eu.node()));
    assert_eq!(net.node_of(&second_addr), Some(asia.node()));
    assert_eq!(first.await.unwrap().peer_node(), eu.node());
    assert_eq!(second.await.unwrap().peer_node(), asia.node());
    drop((from_eu, from_asia));
}

#[tokio::test(start_paused = true)]
async fn latency_comes_from_the_model_and_the_local_latency_within_a_region() {
    let net = network();
    let eu = net.add_node(NodeConfig::new("eu", mbit(1000)));
    let eu2 = net.add_node(NodeConfig::new("eu", mbit(1000)));
    let us = net.add_node(NodeConfig::new("us", mbit(1000)));
    let asia = net.add_node(NodeConfig::new("asia", mbit(1000)));

    assert_eq!(net.latency(eu.node(), us.node()), ms(40));
    assert_eq!(net.latency(asia.node(), us.node()), ms(90));
    assert_eq!(net.latency(eu.node(), asia.node()), ms(100));
    assert_eq!(
        net.latency(eu.node(), eu2.node()),
        simnet::DEFAULT_LOCAL_LATENCY
    );
    assert_eq!(
        net.latency(eu.node(), eu.node()),
        simnet::DEFAULT_LOCAL_LATENCY
    );
}

#[tokio::test(start_paused = true)]
async fn dialing_a_closed_port_is_refused_and_a_tcp_address_unsupported() {
    let net = network();
    let eu = net.add_node(NodeConfig::new("eu", mbit(1000)));
    let us = net.add_node(NodeConfig::new("us", mbit(1000)));
    let (listener, addr) = us.listen_on("/memory/4000".parse().unwrap()).unwrap();
    assert_eq!(addr, "/memory/4000".parse::<NetworkAddress>().unwrap());
    drop(listener);

    let start = Instant::now();
    let result = eu.dial(addr).unwrap().await;
    assert!(
        matches!(&result, Err(TransportError::Io(e)) if e.kind() == io::ErrorKind::ConnectionRefused),
        "{result:?}"
    );
    assert_eq!(start.elapsed(), ms(80));

    let tcp: NetworkAddress = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    assert!(matches!(
        eu.dial(tcp),
        Err(TransportError::UnsupportedAddress(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_port_is_taken_once_per_network() {
    let net = network();
    let eu = net.add_node(NodeConfig::new("eu", mbit(1000)));
    let _listener = eu.listen(4000).unwrap();
    assert_eq!(
        eu.listen(4000).unwrap_err().kind(),
        io::ErrorKind::AddrInUse
    );
    // Another network has ports of its own.
    let other = network().add_node(NodeConfig::new("eu", mbit(1000)));
    assert!(other.listen(4000).is_ok());
}

/// Several transfers between three regions at once, on a fresh current-thread runtime
/// with paused time: the instant each ends, from the start.
fn run_once() -> Vec<Duration> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let net = network();
        let nodes = ["eu", "us", "asia"].map(|r| net.add_node(NodeConfig::new(r, mbit(200))));
        let mut listeners: Vec<_> = nodes.iter().map(|n| n.listen(0).unwrap()).collect();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_port()).collect();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, from) in nodes.iter().enumerate() {
            for (j, port) in ports.iter().enumerate() {
                if i == j {
                    continue;
                }
                let connect = from.connect(*port);
                let size = 100_000 * (1 + i + 2 * j);
                tasks.push(tokio::spawn(async move {
                    let mut socket = connect.await.unwrap();
                    socket.write_all(&vec![7u8; size]).await.unwrap();
                    socket.shutdown().await.unwrap();
                }));
            }
        }
        let mut readers = Vec::new();
        for listener in &mut listeners {
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().await;
                readers.push(tokio::spawn(async move {
                    let mut sink = Vec::new();
                    socket.read_to_end(&mut sink).await.unwrap();
                    start.elapsed()
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
        let mut ends = Vec::new();
        for reader in readers {
            ends.push(reader.await.unwrap());
        }
        ends
    })
}

#[test]
fn the_same_run_gives_the_same_figures() {
    let first = run_once();
    assert_eq!(first, run_once());
    assert_eq!(first.len(), 6);
}
