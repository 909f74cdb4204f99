//! Building test nodes over memsocket or TCP.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use netcore::transport::{MemoryTransport, TcpTransport};
use netcore::{NetworkAddress, PeerId};
use network::{
    Event, Network, NetworkBuilder, NetworkConfig, NetworkEvents, NetworkSender, ProtocolId,
    ProtocolKind,
};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use prometheus::Registry;

pub const RPC: ProtocolId = ProtocolId::new("/test/rpc/1");
pub const DIRECT: ProtocolId = ProtocolId::new("/test/direct-send/1");
pub const PROTOCOLS: &[(ProtocolId, ProtocolKind)] =
    &[(RPC, ProtocolKind::Rpc), (DIRECT, ProtocolKind::DirectSend)];

/// One running node and its application handles.
pub struct Node {
    pub network: Option<Network>,
    pub sender: NetworkSender,
    pub events: NetworkEvents,
    pub addr: NetworkAddress,
    pub peer_id: PeerId,
    pub registry: Registry,
}

impl Node {
    /// Shuts the node's network down (once).
    pub async fn shutdown(&mut self) {
        if let Some(network) = self.network.take() {
            network.shutdown().await;
        }
    }

    /// Waits for the next event, at most 10 s (paused-time tests advance instantly).
    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(10), self.events.next())
            .await
            .expect("no event within 10 s")
            .expect("event stream ended")
    }

    /// Waits for a `NewPeer` event and returns the peer.
    pub async fn expect_new_peer(&mut self) -> std::sync::Arc<network::ConnectionMetadata> {
        loop {
            if let Event::NewPeer(meta) = self.next_event().await {
                return meta;
            }
        }
    }

    /// The value of a counter with the given label values, summed over other labels.
    pub fn counter(&self, name: &str, label_value: &str) -> u64 {
        counter_in(&self.registry, name, label_value)
    }
}

/// The value of counter `name` in `registry` with `label_value` among its labels,
/// summed over the other labels.
pub fn counter_in(registry: &Registry, name: &str, label_value: &str) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label_value))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// Where nodes listen.
#[derive(Clone, Copy, Debug)]
pub enum Net {
    Memory,
    Tcp,
}

/// `n` identities that all trust each other.
pub fn identities(n: usize) -> (Vec<Identity>, TrustedPeers) {
    let ids: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect();
    let trusted = TrustedPeers::from_peers(ids.iter().map(|i| i.peer_id())).unwrap();
    (ids, trusted)
}

/// Starts a node with `identity`, trusting `trusted`, with `config`.
pub fn start_node(
    net: Net,
    identity: Identity,
    trusted: TrustedPeers,
    config: NetworkConfig,
) -> Node {
    start_node_with_protocols(net, identity, trusted, config, PROTOCOLS)
}

/// Starts a node serving `protocols`.
pub fn start_node_with_protocols(
    net: Net,
    identity: Identity,
    trusted: TrustedPeers,
    config: NetworkConfig,
    protocols: &[(ProtocolId, ProtocolKind)],
) -> Node {
    let registry = Registry::new();
    let upgrader = NoiseUpgrader::new(identity, NoiseConfig::mutual(trusted));
    let mut builder = NetworkBuilder::new(config, upgrader, registry.clone());
    let app = builder.register(protocols);
    let mut network = match net {
        Net::Memory => {
            builder.listen_on("/memory/0".parse().unwrap());
            builder.start(MemoryTransport::default()).unwrap()
        }
        Net::Tcp => {
            builder.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap());
            builder.start(TcpTransport::default()).unwrap()
        }
    };
    let (sender, events) = network.take_app(app).unwrap();
    let addr = network.listen_addrs()[0].clone();
    let peer_id = network.local_peer_id();
    Node {
        network: Some(network),
        sender,
        events,
        addr,
        peer_id,
        registry,
    }
}

/// `n` nodes over `net` that trust each other, with the default config.
pub fn start_nodes(net: Net, n: usize) -> Vec<Node> {
    start_nodes_with(net, n, NetworkConfig::default())
}

/// `n` nodes over `net` that trust each other, with `config`.
pub fn start_nodes_with(net: Net, n: usize, config: NetworkConfig) -> Vec<Node> {
    let (ids, trusted) = identities(n);
    ids.into_iter()
        .map(|id| start_node(net, id, trusted.clone(), config.clone()))
        .collect()
}

/// Dials `to` from `from` and waits until both saw `NewPeer`.
pub async fn connect(from: &mut Node, to: &mut Node) {
    from.sender.dial(to.addr.clone()).await.unwrap();
    from.expect_new_peer().await;
    to.expect_new_peer().await;
}

/// Two nodes over `net` with `config`, the first connected to the second.
pub async fn connected_pair(net: Net, config: NetworkConfig) -> (Node, Node) {
    let mut nodes = start_nodes_with(net, 2, config);
    let mut b = nodes.pop().unwrap();
    let mut a = nodes.pop().unwrap();
    connect(&mut a, &mut b).await;
    (a, b)
}

/// Answers every RPC on `node` with the request echoed back, and drops other events.
pub fn spawn_echo_server(mut events: NetworkEvents) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Event::RpcRequest {
                data, responder, ..
            } = event
            {
                responder.respond(data).unwrap();
            }
        }
    })
}

pub fn bytes(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// Waits until `done` holds, checking every few milliseconds; fails after 10 s.
pub async fn eventually(done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the condition did not hold within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
