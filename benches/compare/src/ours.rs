//! Our stack's side of the comparison, and the machine's raw limits measured with the
//! same harness (plain loopback TCP, memsocket, the cipher alone).

use std::time::{Duration, Instant};

use benches::layers::{self, Layers};
use benches::stack::{BENCH_RPC_TIMEOUT, DIRECT, RPC, Socket, connected_pair, echo_server};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use netcore::multiplexing::{self, Mode, MuxConfig};
use network::SendError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use netcore::framing::MessageCodec;
use tokio_util::codec::Framed;

const PAYLOAD: &[u8; 32] = &[0x5a; 32];

/// Seconds to move `total` bytes in `chunk`-byte writes over one stream of `layers` on
/// `socket`, until the receiver read the last byte.
pub async fn bulk(socket: Socket, layers: Layers, total: u64, chunk: usize) -> f64 {
    let pair = layers::pair(socket, layers).await;
    let (mut client, mut server) = (pair.client, pair.server);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; chunk];
        let mut read = 0u64;
        while read < total {
            let n = server.read(&mut buf).await.expect("read");
            assert!(n > 0, "stream ended early");
            read += n as u64;
        }
        Instant::now()
    });
    let data = vec![0x5au8; chunk];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        client.write_all(&data).await.expect("write");
        sent += chunk as u64;
    }
    client.flush().await.expect("flush");
    let end = reader.await.expect("reader");
    drop(pair.controls);
    (end - start).as_secs_f64()
}

/// Seconds for AES-256-GCM (ring, the default suite's cipher) alone to seal `total`
/// bytes in `chunk`-byte Noise messages on this thread.
pub fn cipher(total: u64, chunk: usize) -> f64 {
    use snow::params::CipherChoice;
    use snow::resolvers::{CryptoResolver, RingResolver};
    let mut cipher = RingResolver
        .resolve_cipher(&CipherChoice::AESGCM)
        .expect("ring has AES-GCM");
    cipher.set(&[7u8; 32]);
    let plain = vec![0x5au8; chunk];
    let mut out = vec![0u8; chunk + 16];
    let start = Instant::now();
    let mut done = 0u64;
    let mut nonce = 0u64;
    while done < total {
        cipher.encrypt(nonce, &[], &plain, &mut out);
        nonce += 1;
        done += chunk as u64;
    }
    std::hint::black_box(&out);
    start.elapsed().as_secs_f64()
}

/// DirectSend messages of 32 bytes per second on one full-stack TCP connection.
pub async fn direct_send(count: u64) -> f64 {
    let (a, mut b) = connected_pair(Socket::Tcp).await;
    // Counted here, not with `benches::stack::message_counter`: that one wakes its
    // watcher on every message (6% of this workload's profile), which rust-libp2p's
    // reader does not pay.
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let mut done_tx = Some(done_tx);
    let mut events = b.events.take().expect("events");
    tokio::spawn(async move {
        let mut seen = 0u64;
        while let Some(event) = events.next().await {
            if let network::Event::Message { .. } = event {
                seen += 1;
                if seen == count
                    && let Some(tx) = done_tx.take()
                {
                    let _ = tx.send(());
                }
            }
        }
    });
    let peer = b.peer_id;
    let payload = Bytes::from_static(PAYLOAD);
    let start = Instant::now();
    let mut sent = 0;
    while sent < count {
        match a.sender.send_to(peer, DIRECT, payload.clone()) {
            Ok(()) => sent += 1,
            Err(SendError::QueueFull) => tokio::task::yield_now().await,
            Err(e) => panic!("send failed: {e}"),
        }
    }
    done.await.expect("counter runs");
    let rate = count as f64 / start.elapsed().as_secs_f64();
    drop((a, b));
    rate
}

/// 32-byte length-delimited frames per second over TCP + Noise, no multiplexer: the
/// floor the full stack's DirectSend is held to.
pub async fn noise_framed(count: u64) -> f64 {
    framed(Layers::Noise, count).await
}

/// 32-byte length-delimited frames per second over one substream of our multiplexer on
/// TCP + Noise: the connection stack below DirectSend, which is what rust-libp2p's
/// figure (a plain yamux stream) measures.
pub async fn mux_framed(count: u64) -> f64 {
    framed(Layers::NoiseMux, count).await
}

/// 32-byte frames per second through tokio-util's `Framed` with our `MessageCodec`, one
/// writer and one reader, over `layers` on TCP.
async fn framed(layers: Layers, count: u64) -> f64 {
    let pair = layers::pair(Socket::Tcp, layers).await;
    let mut sink = Framed::new(pair.client, MessageCodec::new(1 << 20));
    let mut source = Framed::new(pair.server, MessageCodec::new(1 << 20));
    let reader = tokio::spawn(async move {
        for _ in 0..count {
            source.next().await.expect("frame").expect("frame");
        }
        Instant::now()
    });
    let payload = Bytes::from_static(PAYLOAD);
    let start = Instant::now();
    for _ in 0..count {
        sink.feed(payload.clone()).await.expect("feed");
    }
    SinkExt::<Bytes>::flush(&mut sink).await.expect("flush");
    let end = reader.await.expect("reader");
    // The multiplexer's connection lives until the reader is done.
    drop(pair.controls);
    count as f64 / (end - start).as_secs_f64()
}

/// Full-stack RPC over TCP: sorted latencies with one in flight, and the rate with
/// `in_flight` outstanding over `rate_count` requests.
pub async fn rpc(samples: usize, in_flight: usize, rate_count: u64) -> (Vec<Duration>, f64) {
    let (a, mut b) = connected_pair(Socket::Tcp).await;
    tokio::spawn(echo_server(b.events.take().expect("events")));
    let peer = b.peer_id;
    let payload = Bytes::from_static(PAYLOAD);
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let start = Instant::now();
        a.sender
            .rpc(peer, RPC, payload.clone(), BENCH_RPC_TIMEOUT)
            .await
            .expect("rpc");
        if i >= samples / 10 {
            latencies.push(start.elapsed());
        }
    }
    latencies.sort();
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut issued = 0u64;
    while issued < (in_flight as u64).min(rate_count) {
        pending.push(a.sender.rpc(peer, RPC, payload.clone(), BENCH_RPC_TIMEOUT));
        issued += 1;
    }
    while let Some(result) = pending.next().await {
        result.expect("rpc");
        if issued < rate_count {
            pending.push(a.sender.rpc(peer, RPC, payload.clone(), BENCH_RPC_TIMEOUT));
            issued += 1;
        }
    }
    let rate = rate_count as f64 / start.elapsed().as_secs_f64();
    drop(pending);
    drop((a, b));
    (latencies, rate)
}

/// A 32-byte echo over plain loopback TCP: sorted round-trip latencies.
pub async fn tcp_echo(samples: usize) -> Vec<Duration> {
    let (mut client, mut server) = layers::sockets(Socket::Tcp).await;
    tokio::spawn(async move {
        let mut buf = [0u8; 32];
        while server.read_exact(&mut buf).await.is_ok() {
            if server.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 32];
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let start = Instant::now();
        client.write_all(PAYLOAD).await.expect("write");
        client.read_exact(&mut buf).await.expect("read");
        if i >= samples / 10 {
            latencies.push(start.elapsed());
        }
    }
    latencies.sort();
    latencies
}

/// Full-stack connections per second over TCP: dial (TCP, Noise IK, handshake,
/// multiplexer), one RPC, disconnect, `count` times in sequence.
pub async fn setup(count: u32) -> f64 {
    let (a, mut b) = connected_pair(Socket::Tcp).await;
    tokio::spawn(echo_server(b.events.take().expect("events")));
    let peer = b.peer_id;
    let addr = b.network.listen_addrs()[0].clone();
    a.sender.disconnect(peer).await.expect("disconnect");
    wait_gone(&b, a.peer_id).await;
    let payload = Bytes::from_static(PAYLOAD);
    let start = Instant::now();
    for _ in 0..count {
        a.sender.dial(addr.clone()).await.expect("dial");
        a.sender
            .rpc(peer, RPC, payload.clone(), BENCH_RPC_TIMEOUT)
            .await
            .expect("first rpc");
        a.sender.disconnect(peer).await.expect("disconnect");
        wait_gone(&b, a.peer_id).await;
    }
    let rate = f64::from(count) / start.elapsed().as_secs_f64();
    drop((a, b));
    rate
}

/// Waits until `node` no longer lists `peer` (the listener saw the close), so the next
/// dial is not a duplicate.
async fn wait_gone(node: &benches::stack::BenchNode, peer: netcore::PeerId) {
    while node.sender.is_connected(&peer) {
        tokio::task::yield_now().await;
    }
}

/// Opens `count` authenticated, multiplexed connections (TCP + Noise IK + multiplexer,
/// both ends in this process) and leaves them idle, held by the returned value.
pub async fn idle_connections(count: u32) -> Vec<Box<dyn std::any::Any>> {
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    for _ in 0..count {
        let (client, server) = layers::sockets(Socket::Tcp).await;
        let (client, server) = layers::noise_pair(client, server).await;
        let c = multiplexing::start(client, Mode::Client, MuxConfig::default());
        let s = multiplexing::start(server, Mode::Server, MuxConfig::default());
        held.push(Box::new((c, s)));
    }
    held
}

/// Seconds for `nodes` full-stack nodes over memsocket to form a full mesh (each dials
/// every node after it).
pub async fn mesh(nodes: usize) -> f64 {
    use network::{NetworkBuilder, NetworkConfig, ProtocolKind};
    use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
    let ids: Vec<Identity> = (0..nodes).map(|_| Identity::generate()).collect();
    let trusted =
        TrustedPeers::from_peers(ids.iter().map(Identity::peer_id)).expect("generated keys");
    let start = Instant::now();
    let mut networks = Vec::new();
    let mut senders = Vec::new();
    for id in ids {
        let upgrader = NoiseUpgrader::new(id, NoiseConfig::mutual(trusted.clone()));
        let mut builder = NetworkBuilder::new(
            NetworkConfig::default(),
            upgrader,
            prometheus::Registry::new(),
        );
        let app = builder.register(&[(RPC, ProtocolKind::Rpc)]);
        builder.listen_on(netcore::NetworkAddress::memory(0));
        let mut network = builder
            .start(netcore::transport::MemoryTransport::default())
            .expect("node starts");
        let (sender, mut events) = network.take_app(app).expect("registered once");
        tokio::spawn(async move { while events.next().await.is_some() {} });
        senders.push(sender);
        networks.push(network);
    }
    let addrs: Vec<_> = networks
        .iter()
        .map(|n| n.listen_addrs()[0].clone())
        .collect();
    for (i, sender) in senders.iter().enumerate() {
        let sender = sender.clone();
        let targets = addrs[i + 1..].to_vec();
        tokio::spawn(async move {
            for addr in targets {
                sender.dial(addr).await.expect("dial");
            }
        });
    }
    // Checked every 10 ms (listing 100 nodes' peers is not free; the check must not
    // steal the single thread from the dials it waits for).
    let mut done = 0;
    while done < nodes {
        if senders[done].connected_peers().len() == nodes - 1 {
            done += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let took = start.elapsed().as_secs_f64();
    for network in networks {
        network.shutdown().await;
    }
    took
}
