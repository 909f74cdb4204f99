//! A cluster of nodes over a simulated WAN ([`simnet`]), for the WAN benchmark: five
//! regions with measured round-trip times ([`simnet::five_regions`]), 1 Gbit/s links,
//! the full stack on each node.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use netcore::transport::{DEFAULT_NOTSENT_LOWAT, TransportExt};
use netcore::{NetworkAddress, PeerId};
use network::{
    Event, Network, NetworkBuilder, NetworkConfig, NetworkSender, Priority, ProtocolId,
    ProtocolKind,
};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use parking_lot::Mutex;
use simnet::{NodeConfig, NodeId, REGIONS, SimConfig, SimNetwork, five_regions};
use tokio::time::Instant;

/// One-way latency within a region: half of a 2 ms round trip between data centers of
/// one region (`simnet::RTT_MS`'s table gives none).
pub const LOCAL_ONE_WAY: Duration = Duration::from_millis(1);

/// Every node's uplink and downlink.
pub const LINK: u64 = simnet::mbit(1000);

/// The simulated network's settings: a send buffer as large as Linux autotunes one on
/// a long fast path (`TCP_NOTSENT_LOWAT`, set on every socket as on TCP, keeps what
/// waits in it small), the default receive window of a tuned host.
pub fn sim_config() -> SimConfig {
    SimConfig {
        send_buffer: 4 << 20,
        local_latency: LOCAL_ONE_WAY,
        ..SimConfig::default()
    }
}

/// Proposals, sent one way: the consensus class.
pub const PROPOSAL: ProtocolId = ProtocolId::new("/wan/proposal/1");
/// Proposals sent as requests, acknowledged by an empty response.
pub const PROPOSAL_RPC: ProtocolId = ProtocolId::new("/wan/proposal-rpc/1");
/// Votes, sent one way: the consensus class.
pub const VOTE: ProtocolId = ProtocolId::new("/wan/vote/1");
/// Blocks sent one way, in the bulk class.
pub const BLOCKS: ProtocolId = ProtocolId::new("/wan/blocks/1");
/// Requests for bulk data: the request is the size wanted (8 bytes, little-endian).
pub const BULK: ProtocolId = ProtocolId::new("/wan/bulk/1");

/// The largest message of any protocol here: a 64 MiB response and its tag.
const MAX_MESSAGE: usize = 65 << 20;

/// A message that reached a node: which node, its tag (first 8 bytes), when.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// The receiving node's index.
    pub node: usize,
    /// The message's tag.
    pub tag: u64,
    /// When it was delivered to the application.
    pub at: Instant,
}

/// One node of the cluster.
pub struct Node {
    /// Its place in the simulated network.
    pub id: NodeId,
    /// Its peer id.
    pub peer: PeerId,
    /// Its sender.
    pub sender: NetworkSender,
    /// Where it listens.
    pub addr: NetworkAddress,
    network: Network,
}

/// Nodes over one simulated network, full mesh, each recording what it receives.
pub struct Cluster {
    /// The simulated network.
    pub net: SimNetwork,
    /// The nodes; node `i` is in region `REGIONS[i % 5]`.
    pub nodes: Vec<Node>,
    /// Messages delivered, in order.
    pub arrivals: Arc<Mutex<Vec<Arrival>>>,
    index: HashMap<PeerId, usize>,
}

/// A payload of `len` bytes (at least 8) starting with `tag`.
pub fn tagged(tag: u64, len: usize) -> Bytes {
    let mut payload = vec![0u8; len.max(8)];
    payload[..8].copy_from_slice(&tag.to_le_bytes());
    Bytes::from(payload)
}

fn tag_of(data: &[u8]) -> u64 {
    data.get(..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

impl Cluster {
    /// Starts `n` nodes, node `i` in region `REGIONS[i % 5]`, and connects every pair.
    /// Must run on a runtime with paused time.
    pub async fn start(n: usize, config: SimConfig) -> Self {
        let net = SimNetwork::new(config, five_regions());
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        // A validator set: every node trusts every other (mutual authentication, no
        // limits for untrusted peers).
        let identities: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect();
        let trusted = TrustedPeers::from_peers(identities.iter().map(Identity::peer_id))
            .expect("generated identities have keys");
        let mut nodes = Vec::new();
        for (i, identity) in identities.into_iter().enumerate() {
            let transport = net.add_node(NodeConfig::new(REGIONS[i % REGIONS.len()], LINK));
            nodes.push(start_node(i, identity, &trusted, transport, &arrivals));
        }
        let index = nodes.iter().enumerate().map(|(i, n)| (n.peer, i)).collect();
        let cluster = Self {
            net,
            nodes,
            arrivals,
            index,
        };
        cluster.connect_all().await;
        cluster
    }

    async fn connect_all(&self) {
        let dials = self.nodes.iter().enumerate().flat_map(|(i, from)| {
            self.nodes[i + 1..].iter().map(move |to| {
                let addr = to.addr.clone().with_peer_id(to.peer);
                let sender = from.sender.clone();
                async move { sender.dial(addr).await }
            })
        });
        let results = futures::future::join_all(dials).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        assert_eq!(failed, 0, "dials failed");
        let want = self.nodes.len() - 1;
        while self
            .nodes
            .iter()
            .any(|n| n.sender.connected_peers().len() < want)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The index of the node with peer id `peer`.
    pub fn index_of(&self, peer: &PeerId) -> usize {
        self.index[peer]
    }

    /// One-way latency from node `a` to node `b`.
    pub fn one_way(&self, a: usize, b: usize) -> Duration {
        self.net.latency(self.nodes[a].id, self.nodes[b].id)
    }

    /// Arrivals of messages tagged `tag`, in order.
    pub fn arrivals_of(&self, tag: u64) -> Vec<Arrival> {
        self.arrivals
            .lock()
            .iter()
            .filter(|a| a.tag == tag)
            .copied()
            .collect()
    }

    /// Shuts every node down.
    pub async fn shutdown(self) {
        for node in self.nodes {
            node.network.shutdown().await;
        }
    }
}

fn start_node(
    index: usize,
    identity: Identity,
    trusted: &TrustedPeers,
    transport: simnet::SimTransport,
    arrivals: &Arc<Mutex<Vec<Arrival>>>,
) -> Node {
    let peer = identity.peer_id();
    let config = NetworkConfig {
        max_message_size: MAX_MESSAGE,
        ..NetworkConfig::default()
    };
    let upgrader = NoiseUpgrader::new(identity, NoiseConfig::mutual(trusted.clone()));
    let mut builder = NetworkBuilder::new(config, upgrader, prometheus::Registry::new());
    builder.trusted_peers(trusted.clone());
    builder.listen_on(NetworkAddress::memory(0));
    let app = builder.register(&[
        (PROPOSAL, ProtocolKind::DirectSend),
        (PROPOSAL_RPC, ProtocolKind::Rpc),
        (VOTE, ProtocolKind::DirectSend),
        (BLOCKS, ProtocolKind::DirectSend),
        (BULK, ProtocolKind::Rpc),
    ]);
    builder
        .set_priority(PROPOSAL, Priority::Urgent)
        .set_priority(PROPOSAL_RPC, Priority::Urgent)
        .set_priority(VOTE, Priority::Urgent)
        .set_priority(BLOCKS, Priority::Bulk)
        .set_priority(BULK, Priority::Bulk);
    let id = transport.node();
    // As the TCP transport does by default: at most this much waits unsent in the
    // "kernel" in front of the next frame.
    let transport = transport.map(|socket: simnet::SimSocket, _| {
        socket.set_notsent_lowat(Some(DEFAULT_NOTSENT_LOWAT as usize));
        socket
    });
    let mut network = builder.start(transport).expect("a node starts");
    let (sender, mut events) = network.take_app(app).expect("the application's handles");
    let arrivals = Arc::clone(arrivals);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                Event::Message { data, .. } => arrivals.lock().push(Arrival {
                    node: index,
                    tag: tag_of(&data),
                    at: Instant::now(),
                }),
                Event::RpcRequest {
                    protocol,
                    data,
                    responder,
                    ..
                } => {
                    if protocol == BULK {
                        let len = tag_of(&data) as usize;
                        let _ = responder.respond(tagged(len as u64, len));
                    } else {
                        arrivals.lock().push(Arrival {
                            node: index,
                            tag: tag_of(&data),
                            at: Instant::now(),
                        });
                        let _ = responder.respond(Bytes::new());
                    }
                }
                _ => {}
            }
        }
    });
    Node {
        id,
        peer,
        addr: network.listen_addrs()[0].clone(),
        sender,
        network,
    }
}

/// A commit seen by a validator of [`start_consensus`]: its index, the height, when.
#[derive(Clone, Copy, Debug)]
pub struct Commit {
    /// The validator's index.
    pub node: usize,
    /// The committed height.
    pub height: u64,
    /// When it committed.
    pub at: Instant,
}

/// Starts `n` validators of the example consensus (`toy-consensus`) over a simulated
/// network of its own, validator `i` in region `REGIONS[i % 5]`, each proposing as soon
/// as the previous block committed; returns the network, the commits as they happen,
/// and the handles that keep the validators running.
pub fn start_consensus(
    n: usize,
) -> (
    SimNetwork,
    Arc<Mutex<Vec<Commit>>>,
    Vec<validator_network::ShutdownHandle>,
) {
    use toy_consensus::{ConsensusApp, ConsensusConfig, NoTransactions, ToyConsensus};
    use validator_network::{StackBuilder, StackConfig};

    let net = SimNetwork::new(sim_config(), five_regions());
    let commits = Arc::new(Mutex::new(Vec::new()));
    let identities: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect();
    let all: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
    let mut known: Vec<NetworkAddress> = Vec::new();
    let mut handles = Vec::new();
    for (i, identity) in identities.into_iter().enumerate() {
        let transport = net.add_node(NodeConfig::new(REGIONS[i % REGIONS.len()], LINK));
        let transport = transport.map(|socket: simnet::SimSocket, _| {
            socket.set_notsent_lowat(Some(DEFAULT_NOTSENT_LOWAT as usize));
            socket
        });
        let config = StackConfig::for_validator_set("/memory/0", &all, &known);
        let registry = prometheus::Registry::new();
        let mut builder = StackBuilder::new(config, registry.clone())
            .with_identity(identity)
            .with_transport(transport);
        let app = builder.register::<ConsensusApp>();
        let mut running = builder.start().expect("a validator starts");
        let (sender, events) = running.take(app);
        let mut consensus = ConsensusConfig::new(all.clone());
        consensus.min_block_interval = Duration::ZERO;
        // A round crosses the widest round trip (324 ms) about twice.
        consensus.round_timeout = Duration::from_secs(3);
        let (consensus, _status) = ToyConsensus::new(
            consensus,
            sender,
            events,
            Arc::new(NoTransactions),
            &registry,
        )
        .expect("metrics register");
        let seen = Arc::clone(&commits);
        let consensus = consensus.on_commit(move |block| {
            seen.lock().push(Commit {
                node: i,
                height: block.height,
                at: Instant::now(),
            });
        });
        consensus.spawn(std::future::pending());
        known.push(running.listen_addrs[0].clone());
        handles.push(running.shutdown);
    }
    (net, commits, handles)
}
