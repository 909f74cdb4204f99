//! Attacks on a node over TCP on loopback, one test per attack. Each shows the defence
//! holding (the attack is refused, bounded or punished, and counted) and an honest peer
//! unaffected: its RPCs to the victim keep answering within [`HONEST_BOUND`] while the
//! attack runs.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

#[path = "common/attacker.rs"]
mod attacker;
mod common;

use std::time::{Duration, Instant};

use attacker::{
    Prober, YAMUX_DATA, YAMUX_SYN, closed_by_victim, first_noise_message, handshake_msg, muxed,
    noise_connect, past_handshake, resident_bytes, socket_addr, yamux_header,
};
use bytes::Bytes;
use common::{DIRECT, PROTOCOLS, RPC, spawn_echo_server};
use futures::StreamExt;
use netcore::multiplexing::{Control, Incoming, MuxConfig, Substream};
use netcore::negotiate::{Negotiated, negotiate_inbound, negotiate_outbound_select};
use netcore::transport::TcpTransport;
use netcore::{NetworkAddress, PeerId};
use network::admission::AdmissionConfig;
use network::rate_limit::{PeerRateLimit, Rate, RateLimitConfig};
use network::reputation::ReputationConfig;
use network::{
    Event, InvalidResponse, Misbehaviour, Network, NetworkBuilder, NetworkConfig, NetworkEvents,
    NetworkSender, RpcError, SendError,
};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use prometheus::Registry;
use proto::Message;
use proto::direct_send::DirectSendAck;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The slowest an honest peer's RPC to the victim may answer during an attack. Loopback
/// RPCs take well under a millisecond; this leaves room for a debug build on two shared
/// cores running the attacker, the victim and the honest peer in one process.
const HONEST_BOUND: Duration = Duration::from_secs(1);

/// Time allowed for the victim to react to an attack (close, refuse, count).
const REACTION: Duration = Duration::from_secs(5);

/// A node under test: its network, handle, metrics and (for the victim) an echo server.
struct TestNode {
    network: Option<Network>,
    sender: NetworkSender,
    events: Option<NetworkEvents>,
    server: Option<JoinHandle<()>>,
    addr: NetworkAddress,
    peer_id: PeerId,
    registry: Registry,
}

impl TestNode {
    /// Starts a node on loopback TCP serving the test protocols, authenticating as
    /// `noise` says.
    fn start(identity: Identity, noise: NoiseConfig, config: NetworkConfig) -> Self {
        let registry = Registry::new();
        let upgrader = NoiseUpgrader::new(identity, noise);
        let mut builder = NetworkBuilder::new(config, upgrader, registry.clone());
        let app = builder.register(PROTOCOLS);
        builder.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap());
        let mut network = builder.start(TcpTransport::default()).unwrap();
        let (sender, events) = network.take_app(app).unwrap();
        Self {
            addr: network.listen_addrs()[0].clone(),
            peer_id: network.local_peer_id(),
            network: Some(network),
            sender,
            events: Some(events),
            server: None,
            registry,
        }
    }

    /// Answers every RPC with its request (and drops other events) from now on.
    fn serve_echo(&mut self) {
        let events = self.events.take().unwrap();
        self.server = Some(spawn_echo_server(events));
    }

    /// The sum of a metric's values (counter or gauge) whose labels include
    /// `label` (any labels if `None`).
    fn metric(&self, name: &str, label: Option<&str>) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| label.is_none_or(|v| m.get_label().iter().any(|l| l.value() == v)))
            .map(|m| m.get_counter().get_value() as u64 + m.get_gauge().get_value() as u64)
            .sum()
    }

    /// Waits until `name{label}` reaches `at_least`, at most [`REACTION`].
    async fn wait_metric(&self, name: &str, label: Option<&str>, at_least: u64) -> u64 {
        let deadline = Instant::now() + REACTION;
        loop {
            let value = self.metric(name, label);
            if value >= at_least || Instant::now() > deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `peer`'s ban ends, at most `bound`, and checks that it did.
    async fn wait_ban_end(&self, peer: &PeerId, bound: Duration) {
        let deadline = Instant::now() + bound;
        while self.sender.ban_remaining(peer).is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(self.sender.ban_remaining(peer), None, "the ban ended");
    }

    /// Dials `to` and waits until this node sees it connected.
    async fn connect_to(&self, to: &TestNode) {
        self.sender.dial(to.addr.clone()).await.unwrap();
        assert!(self.sender.is_connected(&to.peer_id));
    }

    async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        if let Some(network) = self.network.take() {
            network.shutdown().await;
        }
    }
}

/// A victim serving echo RPCs, an honest peer connected to it, and the identities of
/// `attackers` more peers; in mutual mode everyone is in the trusted set.
struct Scene {
    victim: TestNode,
    honest: TestNode,
    attackers: Vec<Identity>,
}

impl Scene {
    async fn mutual(config: NetworkConfig, attackers: usize) -> Self {
        Self::mutual_with(config, attackers, spawn_echo_server).await
    }

    /// [`Scene::mutual`] with the victim's application given by `app`.
    async fn mutual_with(
        config: NetworkConfig,
        attackers: usize,
        app: impl FnOnce(NetworkEvents) -> JoinHandle<()>,
    ) -> Self {
        let ids: Vec<Identity> = (0..attackers + 2).map(|_| Identity::generate()).collect();
        let trusted = TrustedPeers::from_peers(ids.iter().map(Identity::peer_id)).unwrap();
        let mut ids = ids.into_iter();
        let mut victim = TestNode::start(
            ids.next().unwrap(),
            NoiseConfig::mutual(trusted.clone()),
            config,
        );
        victim.server = Some(app(victim.events.take().unwrap()));
        let honest = TestNode::start(
            ids.next().unwrap(),
            NoiseConfig::mutual(trusted),
            NetworkConfig::default(),
        );
        honest.connect_to(&victim).await;
        Self {
            victim,
            honest,
            attackers: ids.collect(),
        }
    }

    /// Open mode: anyone may connect, and nobody is trusted.
    async fn open(config: NetworkConfig, attackers: usize) -> Self {
        let mut victim = TestNode::start(Identity::generate(), NoiseConfig::open(), config);
        victim.serve_echo();
        let honest = TestNode::start(
            Identity::generate(),
            NoiseConfig::open(),
            NetworkConfig::default(),
        );
        honest.connect_to(&victim).await;
        Self {
            victim,
            honest,
            attackers: (0..attackers).map(|_| Identity::generate()).collect(),
        }
    }

    /// Connects attacker `index` to the victim with a multiplexer of its own, and waits
    /// (at most [`REACTION`]) until the victim lists it.
    async fn connect_attacker(&self, index: usize) -> (Control, Incoming, PeerId) {
        let attacker = &self.attackers[index];
        let (control, incoming) = muxed(
            attacker.clone(),
            self.victim.peer_id,
            &self.victim.addr,
            MuxConfig::default(),
        )
        .await;
        let attacker_id = attacker.peer_id();
        let deadline = Instant::now() + REACTION;
        while !self.victim.sender.is_connected(&attacker_id) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (control, incoming, attacker_id)
    }

    fn probe(&self) -> Prober {
        Prober::start(
            self.honest.sender.clone(),
            self.victim.peer_id,
            RPC,
            HONEST_BOUND,
        )
    }

    /// Stops `prober` and asserts the honest peer was served throughout, within
    /// [`HONEST_BOUND`].
    async fn assert_honest_unaffected(&self, prober: Prober) {
        let report = prober.finish().await;
        // The figure each attack cost the honest peer (see with --nocapture).
        let attack = std::thread::current().name().unwrap_or("?").to_owned();
        eprintln!("{attack}: honest {report:?}");
        assert_eq!(report.failed, 0, "honest RPCs failed: {report:?}");
        assert!(report.answered > 0, "{report:?}");
        assert!(report.max_latency < HONEST_BOUND, "{report:?}");
        assert!(self.honest.sender.is_connected(&self.victim.peer_id));
    }

    async fn shutdown(self) {
        self.honest.shutdown().await;
        self.victim.shutdown().await;
    }
}

/// Admission off in effect (limits no loopback test reaches): these tests check the
/// eviction of upgrades in flight, the layer behind it, with every socket from
/// 127.0.0.1 (admission has its own tests in `admission.rs`).
fn without_admission() -> NetworkConfig {
    let open = Rate {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    NetworkConfig {
        admission: AdmissionConfig {
            max_pending_per_ip: 100_000,
            max_pending_per_subnet: 100_000,
            rate_per_ip: open,
            rate_per_subnet: open,
            reserved_for_validators: 0,
        },
        ..NetworkConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_500_are_bounded_and_honest_peers_still_connect() {
    let scene = Scene::mutual(without_admission(), 1).await;
    let prober = scene.probe();
    let target = socket_addr(&scene.victim.addr);
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(TcpStream::connect(target).await.unwrap());
    }
    // 500 sockets against 128 upgrade slots: the oldest are evicted (closed) as newer
    // ones arrive; every slot is then held by an idle socket.
    let evicted = scene
        .victim
        .wait_metric("network_upgrades_evicted_total", None, 372)
        .await;
    assert!(evicted >= 372, "evicted {evicted}");

    // A new honest peer still connects, evicting an idle socket in turn.
    let newcomer = TestNode::start(
        scene.attackers[0].clone(),
        NoiseConfig::open(),
        NetworkConfig::default(),
    );
    let start = Instant::now();
    newcomer.connect_to(&scene.victim).await;
    assert!(start.elapsed() < HONEST_BOUND, "{:?}", start.elapsed());
    let answer = newcomer
        .sender
        .rpc(
            scene.victim.peer_id,
            RPC,
            Bytes::from_static(b"hi"),
            HONEST_BOUND,
        )
        .await;
    assert_eq!(answer.unwrap(), Bytes::from_static(b"hi"));
    scene.assert_honest_unaffected(prober).await;
    drop(idle);
    newcomer.shutdown().await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_handshakes_500_are_bounded_and_honest_peers_still_connect() {
    let scene = Scene::mutual(without_admission(), 2).await;
    let prober = scene.probe();
    let first = first_noise_message(scene.attackers[0].clone(), scene.victim.peer_id).await;
    let half = &first[..first.len() / 2];
    let target = socket_addr(&scene.victim.addr);
    let mut stalled = Vec::new();
    for _ in 0..500 {
        let mut socket = TcpStream::connect(target).await.unwrap();
        socket.write_all(half).await.unwrap();
        stalled.push(socket);
    }
    let evicted = scene
        .victim
        .wait_metric("network_upgrades_evicted_total", None, 372)
        .await;
    assert!(evicted >= 372, "evicted {evicted}");

    let newcomer = TestNode::start(
        scene.attackers[1].clone(),
        NoiseConfig::open(),
        NetworkConfig::default(),
    );
    let start = Instant::now();
    newcomer.connect_to(&scene.victim).await;
    assert!(start.elapsed() < HONEST_BOUND, "{:?}", start.elapsed());
    scene.assert_honest_unaffected(prober).await;
    drop(stalled);
    newcomer.shutdown().await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_length_prefixes_at_each_layer_end_only_the_offender() {
    let scene = Scene::mutual(NetworkConfig::default(), 2).await;
    let prober = scene.probe();
    let (victim, attacker) = (&scene.victim, &scene.attackers[0]);

    // Noise transport frame: the longest a u16 prefix allows, filled with bytes that
    // do not decrypt. The victim reads at most 65535 bytes and closes.
    let before = victim.metric("network_handshake_failures_total", Some("handshake_io"));
    let stream = noise_connect(attacker.clone(), victim.peer_id, &victim.addr)
        .await
        .unwrap();
    let socket = stream.get_ref();
    let mut frame = vec![0xff, 0xff];
    frame.extend(std::iter::repeat_n(0xa5, 65535));
    let mut written = 0;
    while written < frame.len() {
        socket.writable().await.unwrap();
        if let Ok(n) = socket.try_write(&frame[written..]) {
            written += n;
        }
    }
    assert_eq!(
        victim
            .wait_metric(
                "network_handshake_failures_total",
                Some("handshake_io"),
                before + 1,
            )
            .await,
        before + 1
    );
    drop(stream);

    // Handshake message: a u32 length of 4 GiB. Refused before any allocation.
    let mut stream = noise_connect(attacker.clone(), victim.peer_id, &victim.addr)
        .await
        .unwrap();
    stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    assert!(closed_by_victim(&mut stream, REACTION).await);
    let after = victim
        .wait_metric(
            "network_handshake_failures_total",
            Some("handshake_io"),
            before + 2,
        )
        .await;
    assert_eq!(after, before + 2);

    // Multiplexer negotiation line: a varint length far over 1 KiB.
    let stream = noise_connect(attacker.clone(), victim.peer_id, &victim.addr)
        .await
        .unwrap();
    let (mut stream, _) = network::handshake::exchange(stream, &handshake_msg(0, &[]))
        .await
        .unwrap();
    stream.write_all(&[0xff, 0xff, 0x7f]).await.unwrap();
    stream.flush().await.unwrap();
    assert!(closed_by_victim(&mut stream, REACTION).await);
    assert!(
        victim
            .wait_metric(
                "network_handshake_failures_total",
                Some("mux_negotiation"),
                1
            )
            .await
            >= 1
    );

    // Multiplexer frame: a data frame announcing 4 GiB on a new stream, far past its
    // 256 KiB window: a protocol error that closes the connection and is penalized.
    // (A second attacker, so that the penalties of each stay under the ban threshold.)
    let second = &scene.attackers[1];
    let mut stream = past_handshake(second.clone(), victim.peer_id, &victim.addr).await;
    stream
        .write_all(&yamux_header(YAMUX_DATA, YAMUX_SYN, 1, u32::MAX))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    assert!(closed_by_victim(&mut stream, REACTION).await);
    assert!(
        victim
            .wait_metric("network_penalties_total", Some("protocol_violation"), 1)
            .await
            >= 1
    );
    assert_eq!(victim.sender.reputation_score(&second.peer_id()), 50);

    // Substream negotiation line and application message, over a well-behaved
    // multiplexer: each ends only its substream; the connection stays up.
    let (control, _incoming) = muxed(
        attacker.clone(),
        victim.peer_id,
        &victim.addr,
        MuxConfig::default(),
    )
    .await;
    let mut substream = control.open_stream().await.unwrap();
    substream.write_all(&[0xff, 0xff, 0x7f]).await.unwrap();
    substream.flush().await.unwrap();
    assert!(
        victim
            .wait_metric(
                "network_substreams_refused_total",
                Some("negotiation_failed"),
                1
            )
            .await
            >= 1
    );
    let substream = control.open_stream().await.unwrap();
    let mut rpc = negotiate_outbound_select(substream, RPC.as_str()).unwrap();
    rpc.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    rpc.flush().await.unwrap();
    assert!(
        victim
            .wait_metric("network_decode_failures_total", Some(RPC.as_str()), 1)
            .await
            >= 1
    );
    assert!(
        victim
            .wait_metric("network_penalties_total", Some("oversized_message"), 1)
            .await
            >= 1
    );
    assert!(!control.is_closed(), "only the substreams ended");
    // 20 for the negotiation garbage, 50 for the oversized message.
    assert_eq!(victim.sender.reputation_score(&attacker.peer_id()), 70);
    scene.assert_honest_unaffected(prober).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_handshake_closes_only_that_connection() {
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let mut stream = past_handshake(scene.attackers[0].clone(), victim.peer_id, &victim.addr).await;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i * 7919 % 251) as u8 | 0x80)
        .collect();
    stream.write_all(&garbage).await.unwrap();
    stream.flush().await.unwrap();
    assert!(closed_by_victim(&mut stream, REACTION).await);
    assert!(
        victim
            .wait_metric("network_mux_protocol_errors_total", None, 1)
            .await
            >= 1
    );
    assert!(
        victim
            .wait_metric("network_penalties_total", Some("protocol_violation"), 1)
            .await
            >= 1
    );
    scene.assert_honest_unaffected(prober).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_past_the_multiplexer_window_closes_the_connection_and_is_penalized() {
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let mut stream = past_handshake(scene.attackers[0].clone(), victim.peer_id, &victim.addr).await;
    // A new stream's window is 256 KiB; send 256 KiB + 1 in one frame, for real.
    let len = 256 * 1024 + 1;
    stream
        .write_all(&yamux_header(YAMUX_DATA, YAMUX_SYN, 1, len))
        .await
        .unwrap();
    let _ = stream.write_all(&vec![0u8; len as usize]).await;
    let _ = stream.flush().await;
    assert!(closed_by_victim(&mut stream, REACTION).await);
    assert!(
        victim
            .wait_metric("network_mux_protocol_errors_total", None, 1)
            .await
            >= 1
    );
    assert_eq!(
        victim.metric("network_penalties_total", Some("protocol_violation")),
        1
    );
    scene.assert_honest_unaffected(prober).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_handshakes_are_refused() {
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let first = first_noise_message(scene.attackers[0].clone(), victim.peer_id).await;
    let target = socket_addr(&victim.addr);
    // The original is answered (the attacker cannot finish it without the key, and
    // does not try); each replay is refused.
    let mut original = TcpStream::connect(target).await.unwrap();
    original.write_all(&first).await.unwrap();
    for _ in 0..3 {
        let mut replay = TcpStream::connect(target).await.unwrap();
        replay.write_all(&first).await.unwrap();
        assert!(closed_by_victim(&mut replay, REACTION).await);
    }
    assert_eq!(
        victim
            .wait_metric("network_handshake_failures_total", Some("replay"), 3)
            .await,
        3
    );
    scene.assert_honest_unaffected(prober).await;
    drop(original);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_key_is_refused() {
    let scene = Scene::mutual(NetworkConfig::default(), 0).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let stranger = Identity::generate();
    let result = noise_connect(stranger.clone(), victim.peer_id, &victim.addr).await;
    assert!(result.is_err(), "the handshake must fail");
    assert_eq!(
        victim
            .wait_metric(
                "network_handshake_failures_total",
                Some("untrusted_peer"),
                1
            )
            .await,
        1
    );
    assert!(!victim.sender.is_connected(&stranger.peer_id()));
    scene.assert_honest_unaffected(prober).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_chain_id_is_refused() {
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let attacker = &scene.attackers[0];
    let stream = noise_connect(attacker.clone(), victim.peer_id, &victim.addr)
        .await
        .unwrap();
    let result = network::handshake::exchange(stream, &handshake_msg(999, &[RPC])).await;
    assert!(matches!(
        result,
        Err(network::handshake::HandshakeError::ChainMismatch {
            ours: 999,
            theirs: 0
        })
    ));
    assert_eq!(
        victim
            .wait_metric(
                "network_handshake_failures_total",
                Some("chain_mismatch"),
                1
            )
            .await,
        1
    );
    assert!(!victim.sender.is_connected(&attacker.peer_id()));
    scene.assert_honest_unaffected(prober).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_dial_through_a_forged_address_is_refused() {
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let own = victim.addr.clone().without_peer_id();
    // An address naming the victim itself, and one pointing at the victim's socket
    // but naming another peer (as a forged discovery note would).
    for forged in [
        own.clone().with_peer_id(victim.peer_id),
        own.with_peer_id(scene.attackers[0].peer_id()),
    ] {
        let result = victim.sender.dial(forged.clone()).await;
        assert!(result.is_err(), "{forged}: {result:?}");
    }
    assert!(!victim.sender.is_connected(&victim.peer_id));
    assert!(victim.metric("network_handshake_failures_total", Some("self_dial")) >= 1);
    assert_eq!(
        victim.sender.connected_peers().len(),
        1,
        "only the honest peer"
    );
    scene.assert_honest_unaffected(prober).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_flood_is_refused_past_the_cap() {
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let flood = MuxConfig {
        max_streams: 4096,
        ..MuxConfig::default()
    };
    let (control, _incoming) = muxed(
        scene.attackers[0].clone(),
        victim.peer_id,
        &victim.addr,
        flood,
    )
    .await;
    // 2000 streams opened and left idle, against a cap of 256: the victim answers the
    // excess with RST, and the idle ones time out of negotiation.
    let mut streams = Vec::new();
    for _ in 0..2000 {
        let mut s = control.open_stream().await.unwrap();
        let _ = s.flush().await;
        streams.push(s);
    }
    let refused = victim
        .wait_metric(
            "network_substreams_refused_total",
            Some("mux_refused"),
            1000,
        )
        .await;
    assert!(refused >= 1000, "refused {refused}");
    scene.assert_honest_unaffected(prober).await;
    drop(streams);
    scene.shutdown().await;
}

/// Has `victim` send `message` (3 bytes) to the attacker `to`, and returns the
/// attacker's end of the DirectSend substream it arrived on, past the message.
async fn receive_direct_send(
    victim: &TestNode,
    to: PeerId,
    incoming: &mut Incoming,
    message: &[u8; 3],
) -> Negotiated<Substream> {
    victim
        .sender
        .send_to(to, DIRECT, Bytes::copy_from_slice(message))
        .unwrap();
    let substream = tokio::time::timeout(REACTION, incoming.next())
        .await
        .unwrap()
        .unwrap();
    let (mut io, _) = negotiate_inbound(substream, &[DIRECT.as_str()])
        .await
        .unwrap();
    let mut frame = [0u8; 7];
    io.read_exact(&mut frame).await.unwrap();
    assert_eq!(&frame[..4], &[0, 0, 0, 3]);
    assert_eq!(&frame[4..], message);
    io
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_direct_send_acknowledgement_closes_only_that_substream() {
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let (_control, mut incoming, attacker_id) = scene.connect_attacker(0).await;
    // The victim sends the attacker one message; the attacker acknowledges a million.
    let mut io = receive_direct_send(victim, attacker_id, &mut incoming, b"one").await;
    let lie = DirectSendAck {
        delivered: 1_000_000,
    }
    .encode_to_vec();
    io.write_all(&(lie.len() as u32).to_be_bytes())
        .await
        .unwrap();
    io.write_all(&lie).await.unwrap();
    io.flush().await.unwrap();
    // The victim refuses the acknowledgement, counts it, and counts its one message as
    // unconfirmed: it cannot tell whether it arrived.
    let failures = victim
        .wait_metric("network_decode_failures_total", Some(DIRECT.as_str()), 1)
        .await;
    assert_eq!(failures, 1);
    assert_eq!(
        victim.metric("network_queue_drops_total", Some("unconfirmed")),
        1
    );
    // And holds it against the attacker.
    let penalties = victim
        .wait_metric("network_penalties_total", Some("protocol_violation"), 1)
        .await;
    assert_eq!(penalties, 1);
    // The connection stays: the next message opens a new substream.
    let mut io = receive_direct_send(victim, attacker_id, &mut incoming, b"two").await;
    assert!(victim.sender.is_connected(&attacker_id));
    // An acknowledgement declared longer than any acknowledgement is refused too.
    io.write_all(&1000u32.to_be_bytes()).await.unwrap();
    io.flush().await.unwrap();
    let oversized = victim
        .wait_metric("network_penalties_total", Some("oversized_message"), 1)
        .await;
    assert_eq!(oversized, 1);
    assert_eq!(
        victim.metric("network_decode_failures_total", Some(DIRECT.as_str())),
        2
    );
    scene.assert_honest_unaffected(prober).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_direct_send_substreams_of_one_peer_share_its_queue_and_both_get_through() {
    // Two readers of the victim push under one key (the peer and the protocol) into a
    // queue of 8 that the application does not read yet: each waits for room for its
    // whole batch while the other takes room (the channel's unit tests check that the
    // wait is a wait). Once the application reads, everything arrives, in order per
    // substream.
    let config = NetworkConfig {
        inbound_queue_size: 8,
        ..NetworkConfig::default()
    };
    let (go, ready) = tokio::sync::oneshot::channel::<()>();
    let (events_tx, mut events) = tokio::sync::mpsc::channel::<Event>(1024);
    let scene = Scene::mutual_with(config, 1, move |mut source| {
        tokio::spawn(async move {
            if ready.await.is_err() {
                return;
            }
            while let Some(event) = source.next().await {
                if events_tx.send(event).await.is_err() {
                    return;
                }
            }
        })
    })
    .await;
    let (control, _incoming, attacker_id) = scene.connect_attacker(0).await;
    const EACH: u32 = 200;
    let mut streams = Vec::new();
    for stream in 0..2u32 {
        let substream = control.open_stream().await.unwrap();
        let mut io = negotiate_outbound_select(substream, DIRECT.as_str()).unwrap();
        let mut wire = Vec::new();
        for n in 0..EACH {
            wire.extend_from_slice(&8u32.to_be_bytes());
            wire.extend_from_slice(&stream.to_be_bytes());
            wire.extend_from_slice(&n.to_be_bytes());
        }
        io.write_all(&wire).await.unwrap();
        io.flush().await.unwrap();
        streams.push(io);
    }
    // The readers fill the queue (and then wait for room).
    let depth = scene
        .victim
        .wait_metric("network_queue_depth", Some("inbound_events"), 8)
        .await;
    assert!(depth >= 8, "the application's queue filled: {depth}");
    go.send(()).unwrap();
    let mut next = [0u32; 2];
    while next != [EACH, EACH] {
        let event = tokio::time::timeout(REACTION, events.recv())
            .await
            .expect("every message arrives")
            .unwrap();
        if let Event::Message { peer_id, data, .. } = event {
            assert_eq!(peer_id, attacker_id);
            let stream = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
            let n = u32::from_be_bytes(data[4..8].try_into().unwrap());
            assert_eq!(n, next[stream], "in order on substream {stream}");
            next[stream] += 1;
        }
    }
    drop(streams);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_responses_fail_the_rpc_with_a_typed_error() {
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let victim = &scene.victim;
    let (_control, mut incoming, attacker_id) = scene.connect_attacker(0).await;
    // The victim asks; the attacker answers with a message that is not an RpcResponse,
    // with an empty one, with none before its FIN, and with garbage for a negotiation.
    let answers: [(Option<&[u8]>, InvalidResponse); 3] = [
        (Some(&[0xff, 0xff]), InvalidResponse::Undecodable),
        (Some(&[]), InvalidResponse::Empty),
        (None, InvalidResponse::Missing),
    ];
    for (answer, expected) in answers {
        let rpc = victim
            .sender
            .rpc(attacker_id, RPC, Bytes::from_static(b"q"), REACTION);
        let serve = async {
            let substream = incoming.next().await.unwrap();
            let (mut io, _) = negotiate_inbound(substream, &[RPC.as_str()]).await.unwrap();
            let mut request = [0u8; 5];
            io.read_exact(&mut request).await.unwrap();
            assert_eq!(request, [0, 0, 0, 1, b'q']);
            if let Some(answer) = answer {
                io.write_all(&(answer.len() as u32).to_be_bytes())
                    .await
                    .unwrap();
                io.write_all(answer).await.unwrap();
            }
            io.shutdown().await.unwrap();
            // Held until the caller is done with it.
            io
        };
        let (result, _io) = tokio::join!(rpc, serve);
        assert_eq!(result, Err(RpcError::InvalidResponse(expected)));
    }
    // An answer to the protocol proposal that is not multistream-select.
    let rpc = victim
        .sender
        .rpc(attacker_id, RPC, Bytes::from_static(b"q"), REACTION);
    let serve = async {
        let mut substream = incoming.next().await.unwrap();
        substream.write_all(b"\x03abc").await.unwrap();
        substream.shutdown().await.unwrap();
        substream
    };
    let (result, _substream) = tokio::join!(rpc, serve);
    assert_eq!(
        result,
        Err(RpcError::InvalidResponse(InvalidResponse::Negotiation))
    );
    assert_eq!(
        victim.metric("network_rpc_outcomes_total", Some("invalid_response")),
        4
    );
    assert!(victim.sender.is_connected(&attacker_id));
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_finishes_sending_after_the_answer_still_gets_it() {
    // Our callers send their FIN with the request, and the answer is written where the
    // application gives it. A caller that keeps its side open is served by the
    // substream's task instead, which waits for the FIN after the answer.
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let (control, _incoming, _) = scene.connect_attacker(0).await;
    // A large answer too: its payload goes out behind the frame's head. A pattern, so
    // that a byte out of place shows.
    let large: Bytes = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    for request in [Bytes::from_static(b"hi"), large, Bytes::from_static(b"hi")] {
        let substream = control.open_stream().await.unwrap();
        let mut io = negotiate_outbound_select(substream, RPC.as_str()).unwrap();
        io.write_all(&(request.len() as u32).to_be_bytes())
            .await
            .unwrap();
        io.write_all(&request).await.unwrap();
        io.flush().await.unwrap();
        let answer = proto::rpc::RpcResponse {
            result: Some(proto::rpc::rpc_response::Result::Ok(request)),
        }
        .encode_to_vec();
        let mut got = vec![0u8; 4 + answer.len()];
        tokio::time::timeout(REACTION, io.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got[..4], (answer.len() as u32).to_be_bytes());
        assert_eq!(&got[4..], answer);
        io.shutdown().await.unwrap();
        // Then the victim's FIN: the substream closes cleanly both ways.
        let mut rest = Vec::new();
        tokio::time::timeout(REACTION, io.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    }
    // Counted as served (with any RPC the honest node's checks made meanwhile).
    let served = scene
        .victim
        .wait_metric("network_rpc_outcomes_total", Some("ok"), 3)
        .await;
    assert!(served >= 3, "{served}");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_reading_an_answer_gets_it_cut_not_mixed_with_a_timeout() {
    let config = NetworkConfig {
        // Long enough for a debug build on two busy cores to start the answer.
        inbound_rpc_timeout: Duration::from_secs(1),
        ..NetworkConfig::default()
    };
    let scene = Scene::mutual(config, 1).await;
    let (control, _incoming, _) = scene.connect_attacker(0).await;
    // A 1 MiB request, echoed: an answer far past the substream's window, which the
    // attacker does not read until the victim's inbound timeout has passed.
    let request = vec![3u8; 1 << 20];
    let substream = control.open_stream().await.unwrap();
    let mut io = negotiate_outbound_select(substream, RPC.as_str()).unwrap();
    io.write_all(&(request.len() as u32).to_be_bytes())
        .await
        .unwrap();
    io.write_all(&request).await.unwrap();
    io.shutdown().await.unwrap();
    // The victim's inbound timeout passes while the answer waits on our window.
    let timed_out = scene
        .victim
        .wait_metric("network_rpc_outcomes_total", Some("timeout"), 1)
        .await;
    assert_eq!(timed_out, 1, "the victim gave up on the unread answer");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let ended = loop {
        match tokio::time::timeout(REACTION, io.read(&mut buf))
            .await
            .unwrap()
        {
            Ok(0) => break Ok(()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    // What arrived is the start of the echo's frame and nothing else: the substream was
    // reset under it, not closed after a second frame.
    let answer = proto::rpc::RpcResponse {
        result: Some(proto::rpc::rpc_response::Result::Ok(request.into())),
    }
    .encode_to_vec();
    let mut whole = (answer.len() as u32).to_be_bytes().to_vec();
    whole.extend_from_slice(&answer);
    assert!(ended.is_err(), "the substream was reset");
    assert!(got.len() < whole.len(), "{} of {}", got.len(), whole.len());
    assert!(
        whole.starts_with(&got),
        "only the answer's own bytes arrived"
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_misbehaviour_leads_to_a_growing_ban() {
    let config = NetworkConfig {
        reputation: ReputationConfig {
            base_ban: Duration::from_millis(400),
            ..ReputationConfig::default()
        },
        ..NetworkConfig::default()
    };
    let scene = Scene::open(config, 1).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let attacker = &scene.attackers[0];

    let mut bans = Vec::new();
    for round in 1..=2u64 {
        // Two oversized messages: 2 × 50 reaches the threshold of 100.
        let (control, _incoming) = muxed(
            attacker.clone(),
            victim.peer_id,
            &victim.addr,
            MuxConfig::default(),
        )
        .await;
        for _ in 0..2 {
            let substream = control.open_stream().await.unwrap();
            let mut rpc = negotiate_outbound_select(substream, RPC.as_str()).unwrap();
            rpc.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
            rpc.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        victim
            .wait_metric("network_bans_total", Some("untrusted"), round)
            .await;
        let remaining = victim.sender.ban_remaining(&attacker.peer_id()).unwrap();
        bans.push(remaining);
        tokio::time::timeout(REACTION, control.closed())
            .await
            .expect("the banned peer is disconnected")
            .ok();

        // While banned, reconnections are refused right after Noise.
        let refusals = victim.metric("network_ban_refusals_total", Some("inbound"));
        let stream = noise_connect(attacker.clone(), victim.peer_id, &victim.addr).await;
        if let Ok(stream) = stream {
            let refused = network::handshake::exchange(stream, &handshake_msg(0, &[])).await;
            assert!(refused.is_err());
        }
        assert_eq!(
            victim
                .wait_metric("network_ban_refusals_total", Some("inbound"), refusals + 1)
                .await,
            refusals + 1
        );
        victim
            .wait_ban_end(&attacker.peer_id(), remaining + REACTION)
            .await;
    }
    // The second ban is twice the first (less the few ms spent measuring it).
    assert!(bans[0] <= Duration::from_millis(400), "{bans:?}");
    assert!(bans[1] > Duration::from_millis(700), "{bans:?}");
    assert!(bans[1] <= Duration::from_millis(800), "{bans:?}");
    scene.assert_honest_unaffected(prober).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_validators_ban_stays_capped() {
    let cap = Duration::from_millis(300);
    let config = NetworkConfig {
        reputation: ReputationConfig {
            base_ban: Duration::from_millis(200),
            trusted_max_ban: cap,
            ..ReputationConfig::default()
        },
        ..NetworkConfig::default()
    };
    let scene = Scene::mutual(config, 1).await;
    let prober = scene.probe();
    let victim = &scene.victim;
    let validator = TestNode::start(
        scene.attackers[0].clone(),
        NoiseConfig::mutual(TrustedPeers::from_peers([victim.peer_id]).unwrap()),
        NetworkConfig::default(),
    );
    for round in 1..=4u64 {
        validator.connect_to(victim).await;
        // The application finds the validator's messages undecodable, many times.
        for _ in 0..10 {
            victim
                .sender
                .report(validator.peer_id, Misbehaviour::UndecodableMessage);
        }
        assert_eq!(victim.metric("network_bans_total", Some("trusted")), round);
        let remaining = victim.sender.ban_remaining(&validator.peer_id).unwrap();
        assert!(remaining <= cap, "round {round}: {remaining:?}");
        // Disconnected, refused while banned, welcome back after.
        let deadline = Instant::now() + REACTION;
        while victim.sender.is_connected(&validator.peer_id) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!victim.sender.is_connected(&validator.peer_id));
        victim
            .wait_ban_end(&validator.peer_id, remaining + REACTION)
            .await;
    }
    validator.connect_to(victim).await;
    scene.assert_honest_unaffected(prober).await;
    validator.shutdown().await;
    scene.shutdown().await;
}

/// The victim's application for the flood tests: answers RPCs at once, and consumes
/// DirectSend messages at about `per_second`, counting them.
fn slow_consumer(
    mut events: NetworkEvents,
    per_second: u64,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let batch = (per_second / 100).max(1);
        let mut in_batch = 0;
        while let Some(event) = events.next().await {
            match event {
                Event::RpcRequest {
                    data, responder, ..
                } => responder.respond(data).unwrap(),
                Event::Message { .. } => {
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    in_batch += 1;
                    if in_batch == batch {
                        in_batch = 0;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                _ => {}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_flood_gets_refusals_and_honest_rpcs_stay_fast() {
    let scene = Scene::mutual(NetworkConfig::default(), 1).await;
    let victim_id = scene.victim.peer_id;
    // The attacker is a full node with its own limits lifted.
    let attacker = TestNode::start(
        scene.attackers[0].clone(),
        NoiseConfig::mutual(TrustedPeers::from_peers([victim_id]).unwrap()),
        NetworkConfig {
            max_concurrent_outbound_rpcs: 100_000,
            mux: MuxConfig {
                max_streams: 100_000,
                ..MuxConfig::default()
            },
            ..NetworkConfig::default()
        },
    );
    attacker.connect_to(&scene.victim).await;
    let prober = scene.probe();
    let (mut ok, mut refused, mut other) = (0u32, 0u32, 0u32);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let wave = (0..1000).map(|_| {
            attacker
                .sender
                .rpc(victim_id, RPC, Bytes::from_static(b"flood"), REACTION)
        });
        for result in futures::future::join_all(wave).await {
            match result {
                Ok(_) => ok += 1,
                Err(RpcError::TooManyRequests) => refused += 1,
                Err(_) => other += 1,
            }
        }
    }
    // Past 100 requests in flight the victim answers TooManyRequests; past 256 streams
    // its multiplexer refuses the substream. Some requests still get through.
    assert!(
        ok > 0 && refused > 0,
        "ok {ok}, refused {refused}, other {other}"
    );
    assert!(
        scene
            .victim
            .metric("network_rpc_outcomes_total", Some("too_many_requests"))
            > 0
    );
    scene.assert_honest_unaffected(prober).await;
    attacker.shutdown().await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_send_flood_keeps_memory_bounded_and_drops_nothing() {
    // Messages of 16 KiB. What the flood can make the victim hold: its inbound queue
    // for the attacker (1024 × 16 KiB = 16 MiB) and the substream's receive window (at
    // most 64 MiB, and only while the victim's reader keeps up); the attacker's
    // outbound queue in this process holds clones of one buffer. The stated bound on
    // the process's growth leaves room for allocator slack on top of those 80 MiB.
    const MESSAGE: usize = 16 * 1024;
    const MEMORY_BOUND: u64 = 112 * 1024 * 1024;
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&received);
    // A victim that consumes about 20 000 messages per second.
    let scene = Scene::mutual_with(NetworkConfig::default(), 1, move |events| {
        slow_consumer(events, 20_000, counter)
    })
    .await;
    let victim = &scene.victim;
    let attacker = TestNode::start(
        scene.attackers[0].clone(),
        NoiseConfig::mutual(TrustedPeers::from_peers([victim.peer_id]).unwrap()),
        NetworkConfig::default(),
    );
    attacker.connect_to(victim).await;
    let prober = scene.probe();
    let rss_before = resident_bytes();
    let payload = Bytes::from(vec![0x5a; MESSAGE]);
    let (mut accepted, mut full) = (0u64, 0u64);
    let (mut max_depth, mut max_rss) = (0u64, rss_before);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        match attacker
            .sender
            .send_to(victim.peer_id, DIRECT, payload.clone())
        {
            Ok(()) => accepted += 1,
            Err(SendError::QueueFull) => {
                // The victim reads no faster than it consumes: the attacker's queue
                // fills and it must wait.
                full += 1;
                max_depth =
                    max_depth.max(victim.metric("network_queue_depth", Some("inbound_events")));
                max_rss = max_rss.max(resident_bytes());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        full > 0,
        "the flood outran the victim (backpressure reached the attacker)"
    );
    // The gauge sums every peer's queued events: the attacker's key holds at most the
    // inbound queue size, plus the batch the consumer took and has not handed out; the
    // honest prober has at most one request queued.
    let inbound_queue = NetworkConfig::default().inbound_queue_size as u64;
    let bound = inbound_queue + network::channel::CONSUMER_BATCH as u64 + 1;
    assert!(max_depth <= bound, "queue depth {max_depth}");
    let growth = max_rss.saturating_sub(rss_before);
    eprintln!(
        "DirectSend flood: {accepted} accepted, {full} refused at the attacker (queue full), \
         max victim queue depth {max_depth}, process grew {} MiB",
        growth >> 20
    );
    assert!(growth < MEMORY_BOUND, "grew {} MiB", growth >> 20);
    // Slowed, not dropped: every accepted message arrives.
    let deadline = Instant::now() + REACTION * 2;
    while received.load(std::sync::atomic::Ordering::Relaxed) < accepted
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        received.load(std::sync::atomic::Ordering::Relaxed),
        accepted
    );
    assert_eq!(
        victim.metric("network_queue_drops_total", Some(DIRECT.as_str())),
        0
    );
    scene.assert_honest_unaffected(prober).await;
    attacker.shutdown().await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_message_rate_is_slowed_not_dropped() {
    let config = NetworkConfig {
        rate_limit: RateLimitConfig {
            limit: Some(PeerRateLimit {
                bytes: None,
                messages: Some(Rate {
                    per_second: 500,
                    burst: 100,
                }),
            }),
            limit_trusted: true,
        },
        ..NetworkConfig::default()
    };
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&received);
    let scene = Scene::mutual_with(config, 1, move |events| {
        slow_consumer(events, 1_000_000, counter)
    })
    .await;
    let victim = &scene.victim;
    let attacker = TestNode::start(
        scene.attackers[0].clone(),
        NoiseConfig::mutual(TrustedPeers::from_peers([victim.peer_id]).unwrap()),
        NetworkConfig::default(),
    );
    attacker.connect_to(victim).await;
    let prober = scene.probe();
    let start = Instant::now();
    for i in 0..1000u32 {
        attacker
            .sender
            .send_to(
                victim.peer_id,
                DIRECT,
                Bytes::from(i.to_be_bytes().to_vec()),
            )
            .unwrap();
    }
    let deadline = start + REACTION;
    while received.load(std::sync::atomic::Ordering::Relaxed) < 1000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    // All 1000 arrive, none dropped, but no faster than 100 at once then 500/s.
    assert_eq!(received.load(std::sync::atomic::Ordering::Relaxed), 1000);
    assert!(elapsed >= Duration::from_millis(1750), "{elapsed:?}");
    assert!(victim.metric("network_rate_limited_total", Some("messages")) > 0);
    assert_eq!(
        victim.metric("network_queue_drops_total", Some(DIRECT.as_str())),
        0
    );
    scene.assert_honest_unaffected(prober).await;
    attacker.shutdown().await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_byte_rate_is_slowed_by_reading_less() {
    let config = NetworkConfig {
        rate_limit: RateLimitConfig {
            limit: Some(PeerRateLimit {
                bytes: Some(Rate {
                    per_second: 2 * 1024 * 1024,
                    burst: 512 * 1024,
                }),
                messages: None,
            }),
            limit_trusted: true,
        },
        ..NetworkConfig::default()
    };
    let scene = Scene::mutual(config, 1).await;
    let victim = &scene.victim;
    let attacker = TestNode::start(
        scene.attackers[0].clone(),
        NoiseConfig::mutual(TrustedPeers::from_peers([victim.peer_id]).unwrap()),
        NetworkConfig::default(),
    );
    attacker.connect_to(victim).await;
    let prober = scene.probe();
    // 2 MiB at 2 MiB/s after a 512 KiB burst: at least 0.75 s to read, then echoed.
    let big = Bytes::from(vec![1u8; 2 * 1024 * 1024]);
    let start = Instant::now();
    let answer = attacker
        .sender
        .rpc(victim.peer_id, RPC, big.clone(), REACTION)
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(answer, big, "slowed, not cut");
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
    assert!(victim.metric("network_rate_limited_total", Some("bytes")) > 0);
    scene.assert_honest_unaffected(prober).await;
    attacker.shutdown().await;
    scene.shutdown().await;
}
