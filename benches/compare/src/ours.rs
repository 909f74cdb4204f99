//! Our stack's side of the comparison, and the machine's raw limits measured with the
//! same harness (plain loopback TCP, memsocket, the cipher alone).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use benches::layers::{self, Layers};
use benches::stack::{
    BENCH_RPC_TIMEOUT, BenchNode, DIRECT, RPC, Socket, connected_pair, echo_server,
};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{SinkExt, StreamExt};
use netcore::PeerId;
use netcore::framing::MessageCodec;
use netcore::multiplexing::{self, Control, Mode, MuxConfig};
use network::{NetworkSender, SendError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

const PAYLOAD: &[u8; 32] = &[0x5a; 32];

/// A one-way workload kept open across rounds, so that it can take turns with another
/// under the same conditions.
pub trait Pipe {
    /// Seconds to move `count` units (bytes or messages) to the receiver.
    fn round(&mut self, count: u64) -> Pin<Box<dyn Future<Output = f64> + '_>>;
}

macro_rules! pipe {
    ($($t:ty),*) => {$(
        impl Pipe for $t {
            fn round(&mut self, count: u64) -> Pin<Box<dyn Future<Output = f64> + '_>> {
                Box::pin(<$t>::round(self, count))
            }
        }
    )*};
}

pipe!(BulkPipe, DirectSendPipe, FramedPipe);

/// One stream of `layers` on `socket`, kept open across rounds: each round writes
/// `total` bytes in `chunk`-byte writes and takes the seconds until the receiver read the
/// last byte.
pub struct BulkPipe {
    client: layers::BoxIo,
    /// Tells the reader task how many bytes the next round carries.
    rounds: Rounds,
    /// `chunk` bytes to write, from `start` on (page-aligned, like the reader's buffer).
    data: Vec<u8>,
    start: usize,
    chunk: usize,
    /// The multiplexer's connection lives while the pipe does.
    _controls: Option<(Control, Control)>,
}

/// A reader task's round requests: a count, and where to send the instant it saw the
/// last of it.
type Rounds = mpsc::Sender<(u64, oneshot::Sender<Instant>)>;

impl BulkPipe {
    /// Opens the stream and starts its reader.
    pub async fn open(socket: Socket, layers: Layers, chunk: usize) -> Self {
        let pair = layers::pair(socket, layers).await;
        let (rounds, mut requests) = mpsc::channel::<(u64, oneshot::Sender<Instant>)>(1);
        let mut server = pair.server;
        let data = vec![0x5au8; chunk + PAGE];
        tokio::spawn(async move {
            let mut storage = vec![0u8; chunk + PAGE];
            let buf = page_aligned(&mut storage, chunk);
            while let Some((total, done)) = requests.recv().await {
                let mut read = 0u64;
                while read < total {
                    let n = server.read(buf).await.expect("read");
                    assert!(n > 0, "stream ended early");
                    read += n as u64;
                }
                let _ = done.send(Instant::now());
            }
        });
        Self {
            client: pair.client,
            rounds,
            start: (PAGE - data.as_ptr() as usize % PAGE) % PAGE,
            data,
            chunk,
            _controls: pair.controls,
        }
    }

    /// Seconds to move `total` bytes (a multiple of the chunk size).
    pub async fn round(&mut self, total: u64) -> f64 {
        let done = start_round(&self.rounds, total).await;
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < total {
            let data = &self.data[self.start..self.start + self.chunk];
            self.client.write_all(data).await.expect("write");
            sent += self.chunk as u64;
        }
        self.client.flush().await.expect("flush");
        let end = done.await.expect("reader runs");
        (end - start).as_secs_f64()
    }
}

/// The page size reader buffers are aligned to.
pub const PAGE: usize = 4096;

/// `len` bytes of `storage` (which has `len + PAGE`) starting on a page boundary. Every
/// bulk reader, ours, rust-libp2p's and the raw limits', reads into such a buffer: the
/// kernel's copy into a buffer a few bytes past its source modulo 4 KiB runs at a
/// fraction of its speed on this CPU, and where the heap put a buffer decided that
/// before, from one process to the next.
pub fn page_aligned(storage: &mut [u8], len: usize) -> &mut [u8] {
    let start = (PAGE - storage.as_ptr() as usize % PAGE) % PAGE;
    &mut storage[start..start + len]
}

/// Announces a round of `count` to a reader task; resolves to the instant it saw the last.
async fn start_round(rounds: &Rounds, count: u64) -> oneshot::Receiver<Instant> {
    let (done_tx, done) = oneshot::channel();
    rounds.send((count, done_tx)).await.expect("reader runs");
    done
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

/// Connections per second one core could set up doing nothing but the X25519 work of a
/// Noise IK handshake for both ends, `count` times: two ephemeral key pairs (32 bytes
/// from the handshake's RNG, ring's, and a base-point multiplication each) and eight
/// exchanges (es, ss, ee and se on each end), computed as our handshake computes them:
/// with `noise::RemoteKey`, each remote key converted once per end (four conversions),
/// and key pairs with curve25519-dalek's `MontgomeryPoint::mul_base_clamped`. Our
/// handshake keeps `ss` per remote key, so from the second connection to a peer it
/// computes six of the eight; this ceiling counts all eight, as the issue defines it.
pub fn handshake_crypto(count: u32) -> f64 {
    use curve25519_dalek::montgomery::MontgomeryPoint;
    use noise::RemoteKey;
    use snow::resolvers::{CryptoResolver, RingResolver};
    use std::hint::black_box;
    let mut rng = RingResolver.resolve_rng().expect("ring has an RNG");
    let mut secret = || {
        let mut s = [0u8; 32];
        rng.try_fill_bytes(&mut s).expect("random bytes");
        s
    };
    let (s_i, s_r) = (secret(), secret());
    let p_i = MontgomeryPoint::mul_base_clamped(s_i).to_bytes();
    let p_r = MontgomeryPoint::mul_base_clamped(s_r).to_bytes();
    let dh = |public: &RemoteKey, secret: &[u8; 32]| black_box(public.shared(black_box(secret)));
    let start = Instant::now();
    for _ in 0..count {
        let (e_i, e_r) = (secret(), secret());
        let pe_i = MontgomeryPoint::mul_base_clamped(black_box(e_i)).to_bytes();
        let pe_r = MontgomeryPoint::mul_base_clamped(black_box(e_r)).to_bytes();
        // The initiator's first message: es, ss.
        let remote_static = RemoteKey::new(black_box(&p_r));
        dh(&remote_static, &e_i);
        dh(&remote_static, &s_i);
        // The responder: es, ss, then its reply's ee, se.
        let (remote_ephemeral, remote_static) =
            (RemoteKey::new(black_box(&pe_i)), RemoteKey::new(black_box(&p_i)));
        dh(&remote_ephemeral, &s_r);
        dh(&remote_static, &s_r);
        dh(&remote_ephemeral, &e_r);
        dh(&remote_static, &e_r);
        // The initiator reads the reply: ee, se.
        let remote_ephemeral = RemoteKey::new(black_box(&pe_r));
        dh(&remote_ephemeral, &e_i);
        dh(&remote_ephemeral, &s_i);
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "  handshake crypto: {:.1} µs per handshake (2 key pairs + 8 DH)",
        secs * 1e6 / f64::from(count)
    );
    f64::from(count) / secs
}

/// Our full stack over TCP, both nodes kept across rounds; each round sends DirectSend
/// messages of 32 bytes and takes the rate until the receiving application counted the
/// last.
pub struct DirectSendPipe {
    a: BenchNode,
    /// The receiving node: it lives while the pipe does.
    _b: BenchNode,
    peer: PeerId,
    rounds: Rounds,
}

impl DirectSendPipe {
    /// Connects the two nodes and starts the receiving application's counter.
    pub async fn open() -> Self {
        let (a, mut b) = connected_pair(Socket::Tcp).await;
        // Counted here, not with `benches::stack::message_counter`: that one wakes its
        // watcher on every message (6% of this workload's profile), which rust-libp2p's
        // reader does not pay.
        let (rounds, mut requests) = mpsc::channel::<(u64, oneshot::Sender<Instant>)>(1);
        let mut events = b.events.take().expect("events");
        tokio::spawn(async move {
            while let Some((count, done)) = requests.recv().await {
                let mut seen = 0u64;
                while seen < count {
                    match events.next().await {
                        Some(network::Event::Message { .. }) => seen += 1,
                        Some(_) => {}
                        None => return,
                    }
                }
                let _ = done.send(Instant::now());
            }
        });
        let peer = b.peer_id;
        Self {
            a,
            _b: b,
            peer,
            rounds,
        }
    }

    /// Seconds to send `count` messages.
    pub async fn round(&mut self, count: u64) -> f64 {
        let done = start_round(&self.rounds, count).await;
        let payload = Bytes::from_static(PAYLOAD);
        let start = Instant::now();
        let mut sent = 0;
        while sent < count {
            match self.a.sender.send_to(self.peer, DIRECT, payload.clone()) {
                Ok(()) => sent += 1,
                Err(SendError::QueueFull) => tokio::task::yield_now().await,
                Err(e) => panic!("send failed: {e}"),
            }
        }
        let end = done.await.expect("counter runs");
        (end - start).as_secs_f64()
    }
}

/// 32-byte frames through tokio-util's `Framed` with our `MessageCodec`, one writer and
/// one reader, over `layers` on TCP, kept across rounds. Over `Layers::Noise` it is the
/// floor DirectSend is held to; over `Layers::NoiseMux`, one substream of our
/// multiplexer on TCP + Noise: the connection stack below DirectSend, which is what
/// rust-libp2p's figure (a plain yamux stream) measures.
pub struct FramedPipe {
    sink: Framed<layers::BoxIo, MessageCodec>,
    rounds: Rounds,
    /// The multiplexer's connection lives while the pipe does.
    _controls: Option<(Control, Control)>,
}

impl FramedPipe {
    /// Opens the stream and starts its reader.
    pub async fn open(layers: Layers) -> Self {
        let pair = layers::pair(Socket::Tcp, layers).await;
        let (rounds, mut requests) = mpsc::channel::<(u64, oneshot::Sender<Instant>)>(1);
        let mut source = Framed::new(pair.server, MessageCodec::new(1 << 20));
        tokio::spawn(async move {
            while let Some((count, done)) = requests.recv().await {
                for _ in 0..count {
                    source.next().await.expect("frame").expect("frame");
                }
                let _ = done.send(Instant::now());
            }
        });
        Self {
            sink: Framed::new(pair.client, MessageCodec::new(1 << 20)),
            rounds,
            _controls: pair.controls,
        }
    }

    /// Seconds to move `count` frames.
    pub async fn round(&mut self, count: u64) -> f64 {
        let done = start_round(&self.rounds, count).await;
        let payload = Bytes::from_static(PAYLOAD);
        let start = Instant::now();
        for _ in 0..count {
            self.sink.feed(payload.clone()).await.expect("feed");
        }
        SinkExt::<Bytes>::flush(&mut self.sink)
            .await
            .expect("flush");
        let end = done.await.expect("reader runs");
        (end - start).as_secs_f64()
    }
}

/// Our full stack over TCP with an echo server on the far node, kept across rounds.
pub struct RpcPipe {
    a: BenchNode,
    /// The serving node: it lives while the pipe does.
    _b: BenchNode,
    peer: PeerId,
}

impl RpcPipe {
    /// Connects the two nodes and starts the echo server.
    pub async fn open() -> Self {
        let (a, mut b) = connected_pair(Socket::Tcp).await;
        tokio::spawn(echo_server(b.events.take().expect("events")));
        let peer = b.peer_id;
        Self { a, _b: b, peer }
    }

    /// Round trips of `count` RPCs of 32 bytes, one in flight, appended to `into`.
    pub async fn latencies(&self, count: usize, into: &mut Vec<Duration>) {
        rpc_latencies(&self.a.sender, self.peer, count, into).await;
    }

    /// Requests per second over `count` requests with `in_flight` outstanding.
    pub async fn rate(&self, in_flight: usize, count: u64) -> f64 {
        rpc_rate(&self.a.sender, self.peer, in_flight, count).await
    }
}

/// Round trips of `count` RPCs of 32 bytes from `sender` to `peer`, one in flight,
/// appended to `into`.
pub async fn rpc_latencies(
    sender: &NetworkSender,
    peer: PeerId,
    count: usize,
    into: &mut Vec<Duration>,
) {
    let payload = Bytes::from_static(PAYLOAD);
    for _ in 0..count {
        let start = Instant::now();
        sender
            .rpc(peer, RPC, payload.clone(), BENCH_RPC_TIMEOUT)
            .await
            .expect("rpc");
        into.push(start.elapsed());
    }
}

/// Requests per second from `sender` to `peer` over `count` RPCs of 32 bytes with
/// `in_flight` outstanding.
pub async fn rpc_rate(sender: &NetworkSender, peer: PeerId, in_flight: usize, count: u64) -> f64 {
    let payload = Bytes::from_static(PAYLOAD);
    let call = || sender.rpc(peer, RPC, payload.clone(), BENCH_RPC_TIMEOUT);
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut issued = 0u64;
    while issued < (in_flight as u64).min(count) {
        pending.push(call());
        issued += 1;
    }
    while let Some(result) = pending.next().await {
        result.expect("rpc");
        if issued < count {
            pending.push(call());
            issued += 1;
        }
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// A 32-byte echo over plain loopback TCP, kept across rounds: the raw limit of RPC
/// latency.
pub struct EchoPipe {
    client: layers::BoxIo,
}

impl EchoPipe {
    /// Connects and starts the echoing end.
    pub async fn open() -> Self {
        let (client, mut server) = layers::sockets(Socket::Tcp).await;
        tokio::spawn(async move {
            let mut buf = [0u8; 32];
            while server.read_exact(&mut buf).await.is_ok() {
                if server.write_all(&buf).await.is_err() {
                    break;
                }
            }
        });
        Self { client }
    }

    /// Round trips of `count` echoes, appended to `into`.
    pub async fn latencies(&mut self, count: usize, into: &mut Vec<Duration>) {
        let mut buf = [0u8; 32];
        for _ in 0..count {
            let start = Instant::now();
            self.client.write_all(PAYLOAD).await.expect("write");
            self.client.read_exact(&mut buf).await.expect("read");
            into.push(start.elapsed());
        }
    }
}

/// Full-stack connections per second over TCP: dial (TCP, Noise IK, handshake,
/// multiplexer), one RPC, disconnect, `count` times in sequence, between two nodes that
/// know each other as validators.
pub async fn setup(count: u32) -> f64 {
    // Nodes that know loopback as a validator's address: a stranger's would be refused
    // for its rate after 8 dials (see `crate::nodes`).
    let (a, mut b) = crate::nodes::connected_pair().await;
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

/// How long a mesh may take to form before the run fails.
const MESH_DEADLINE: Duration = Duration::from_secs(600);

/// Seconds for `nodes` full-stack nodes over memsocket to form a full mesh (each dials
/// every node after it, in sequence, trying a failed dial again after 10 ms).
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
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for (i, sender) in senders.iter().enumerate() {
        let sender = sender.clone();
        let targets = addrs[i + 1..].to_vec();
        let failed = std::sync::Arc::clone(&failed);
        tokio::spawn(async move {
            for addr in targets {
                // A listener refuses handshakes past its limit of concurrent ones (128
                // by default, which a large mesh's start can pass): the dialer tries
                // again, as a node would, and the failures are counted.
                while sender.dial(addr.clone()).await.is_err() {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
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
            assert!(
                start.elapsed() < MESH_DEADLINE,
                "{nodes} nodes: node {done} lists {} peers after {MESH_DEADLINE:?}",
                senders[done].connected_peers().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let took = start.elapsed().as_secs_f64();
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("  mesh of {nodes}: {took:.2} s, {failed} dials failed and were tried again");
    for network in networks {
        network.shutdown().await;
    }
    took
}
