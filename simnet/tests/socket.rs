//! Simulated connections through their sockets, under paused time: the instants a
//! transfer, a handshake or a close takes, fair shares, cuts and backpressure.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::io;
use std::time::Duration;

use simnet::{LatencyMatrix, NodeConfig, SimConfig, SimNetwork, SimSocket, SimTransport, mbit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const MIB: usize = 1024 * 1024;
const KIB: usize = 1024;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Tokio's timers fire on whole milliseconds: a reader learns of its last byte at the
/// first tick after it arrives.
const TICK: Duration = Duration::from_millis(1);

fn assert_near(actual: Duration, expected: Duration, tolerance: Duration) {
    let diff = actual.abs_diff(expected);
    assert!(
        diff <= tolerance,
        "{actual:?} is not within {tolerance:?} of {expected:?}"
    );
}

/// `bytes` at `bytes_per_second`.
fn transmission(bytes: usize, bytes_per_second: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / bytes_per_second as f64)
}

/// A network of regions "a", "b", "c", 50 ms apart each way.
fn network() -> SimNetwork {
    SimNetwork::new(SimConfig::default(), LatencyMatrix::new(ms(50)))
}

/// A connected pair of sockets from `from` to `to`: (dialer's, listener's).
async fn connect(from: &SimTransport, to: &SimTransport) -> (SimSocket, SimSocket) {
    let mut listener = to.listen(0).unwrap();
    let client = from.connect(listener.local_port()).await.unwrap();
    let (server, _) = listener.accept().await;
    (client, server)
}

/// Writes `bytes` bytes of a counting pattern and returns when all were read at the
/// other end (checking them), with the instant the reader finished.
async fn transfer(mut writer: SimSocket, mut reader: SimSocket, bytes: usize) -> Instant {
    let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let expected = data.clone();
    let write = tokio::spawn(async move {
        writer.write_all(&data).await.unwrap();
        writer
    });
    let mut got = vec![0u8; bytes];
    reader.read_exact(&mut got).await.unwrap();
    let done = Instant::now();
    assert!(got == expected, "the bytes arrived altered");
    drop(write.await.unwrap());
    done
}

#[tokio::test(start_paused = true)]
async fn connect_takes_a_round_trip_and_accept_one_and_a_half() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let mut listener = b.listen(0).unwrap();
    let start = Instant::now();

    let _client = a.connect(listener.local_port()).await.unwrap();
    assert_eq!(start.elapsed(), ms(100));
    let (server, _) = listener.accept().await;
    assert_eq!(start.elapsed(), ms(150));
    assert_eq!(server.peer_node(), a.node());
}

#[tokio::test(start_paused = true)]
async fn a_port_nobody_listens_on_refuses_after_a_round_trip() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let port = b.listen(0).unwrap().local_port(); // dropped: nobody listens any more
    let start = Instant::now();

    let error = a.connect(port).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_megabyte_over_100_mbit_and_50_ms_takes_the_latency_plus_its_size_over_the_rate() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let (client, server) = connect(&a, &b).await;
    let start = Instant::now();

    let done = transfer(client, server, MIB).await;

    let expected = ms(50) + transmission(MIB, mbit(100));
    assert_near(done - start, expected, TICK);
}

#[tokio::test(start_paused = true)]
async fn a_nodes_received_bytes_follow_a_transfer_and_outlive_its_connection() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let (client, server) = connect(&a, &b).await;
    let start = Instant::now();
    let transfer = tokio::spawn(transfer(client, server, MIB));
    // A latency and half the transmission in, about half has arrived.
    tokio::time::sleep_until(start + ms(50) + transmission(MIB / 2, mbit(100))).await;
    let halfway = net.received(b.node()) as f64 / MIB as f64;
    assert!((0.45..0.55).contains(&halfway), "{halfway}");
    transfer.await.unwrap();
    assert_eq!(net.received(b.node()), MIB as u64);
    assert_eq!(net.received(a.node()), 0);
    // The sockets are gone: the count stays.
    tokio::time::sleep(ms(200)).await;
    assert_eq!(net.received(b.node()), MIB as u64);
}

#[tokio::test(start_paused = true)]
async fn two_flows_from_one_node_share_its_uplink_equally() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let c = net.add_node(NodeConfig::new("c", mbit(100)));
    let (to_b, at_b) = connect(&a, &b).await;
    let (to_c, at_c) = connect(&a, &c).await;
    let start = Instant::now();

    let (done_b, done_c) = tokio::join!(transfer(to_b, at_b, MIB), transfer(to_c, at_c, MIB));

    let expected = ms(50) + transmission(2 * MIB, mbit(100));
    assert_near(done_b - start, expected, TICK);
    assert_near(done_c - start, expected, TICK);
}

#[tokio::test(start_paused = true)]
async fn a_partition_holds_the_bytes_and_the_heal_delivers_them() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let (mut client, mut server) = connect(&a, &b).await;
    net.partition(&[[a.node()], [b.node()]]);

    client.write_all(b"held").await.unwrap();
    let mut buf = [0u8; 4];
    let read = tokio::time::timeout(ms(10_000), server.read_exact(&mut buf)).await;
    assert!(read.is_err(), "bytes crossed a partition");

    let healed = Instant::now();
    net.heal();
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"held");
    assert_near(healed.elapsed(), ms(50), TICK);
}

#[tokio::test(start_paused = true)]
async fn a_connect_across_a_partition_completes_after_the_heal() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let mut listener = b.listen(0).unwrap();
    net.cut(&[a.node()], &[b.node()]);

    let connecting = a.connect(listener.local_port());
    let healer = {
        let net = net.clone();
        tokio::spawn(async move {
            tokio::time::sleep(ms(5_000)).await;
            net.heal();
        })
    };
    let start = Instant::now();
    let _client = connecting.await.unwrap();
    assert_eq!(start.elapsed(), ms(5_100));
    listener.accept().await;
    healer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_writer_without_a_reader_stops_within_the_send_buffer_and_the_window() {
    let config = SimConfig {
        receive_window: MIB,
        ..SimConfig::default()
    };
    let net = SimNetwork::new(config, LatencyMatrix::new(ms(50)));
    let a = net.add_node(NodeConfig::new("a", mbit(1000)));
    let b = net.add_node(NodeConfig::new("b", mbit(1000)));
    let (mut client, _server) = connect(&a, &b).await;

    let chunk = vec![0u8; 16 * KIB];
    let mut written = 0;
    while let Ok(n) = tokio::time::timeout(ms(10_000), client.write(&chunk)).await {
        written += n.unwrap();
    }

    assert!(written <= MIB + 256 * KIB, "{written} bytes taken");
    assert!(written >= MIB, "{written} bytes taken");
    assert_eq!(client.unsent(), written - MIB);
}

#[tokio::test(start_paused = true)]
async fn a_notsent_lowat_bounds_the_unsent_bytes() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let (mut client, _server) = connect(&a, &b).await;
    client.set_notsent_lowat(Some(16 * KIB));

    let n = client.write(&vec![0u8; 64 * KIB]).await.unwrap();
    assert_eq!(n, 16 * KIB);
    assert_eq!(client.unsent(), 16 * KIB);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_gives_eof_after_the_data_and_the_other_way_stays_open() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let (mut client, mut server) = connect(&a, &b).await;

    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request");

    server.write_all(b"response").await.unwrap();
    drop(server);
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"response");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_end_gives_eof_and_broken_pipe_a_latency_later() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let (mut client, server) = connect(&a, &b).await;
    let start = Instant::now();
    drop(server);

    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    assert_eq!(start.elapsed(), ms(50));
    let error = client.write_all(b"x").await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
}

#[tokio::test(start_paused = true)]
async fn a_writer_keeps_a_gigabit_link_busy_with_the_default_send_buffer() {
    let net = network();
    let a = net.add_node(NodeConfig::new("a", mbit(1000)));
    let b = net.add_node(NodeConfig::new("b", mbit(1000)));
    let (client, server) = connect(&a, &b).await;
    let start = Instant::now();

    let done = transfer(client, server, 16 * MIB).await;

    let expected = ms(50) + transmission(16 * MIB, mbit(1000));
    assert_near(done - start, expected, TICK);
}

#[tokio::test]
async fn in_real_time_an_exchange_takes_its_latencies() {
    let net = SimNetwork::new(SimConfig::default(), LatencyMatrix::new(ms(10)));
    let a = net.add_node(NodeConfig::new("a", mbit(100)));
    let b = net.add_node(NodeConfig::new("b", mbit(100)));
    let start = Instant::now();
    let (mut client, mut server) = connect(&a, &b).await;

    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    server.write_all(b"pong").await.unwrap();
    client.read_exact(&mut buf).await.unwrap();

    // Connect, accept (the request goes with the ACK), and the answer back.
    assert_eq!(&buf, b"pong");
    assert!(start.elapsed() >= ms(40), "{:?}", start.elapsed());
}

/// What the stack asks of a socket type, as of `memsocket::MemorySocket`.
#[test]
fn a_socket_is_what_the_stack_needs() {
    fn stack_socket<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static>() {}
    stack_socket::<SimSocket>();
}
