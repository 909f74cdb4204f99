//! The handle to a simulated network: its nodes, their latencies, and its cuts.

use std::sync::Arc;
use std::time::Duration;

use netcore::NetworkAddress;
use netcore::address::Endpoint;

use crate::config::{LatencyModel, NodeConfig, NodeId, SimConfig};
use crate::core::{Core, Params};
use crate::driver;
use crate::shared::Shared;
use crate::transport::SimTransport;

/// A simulated network: nodes with links of given bandwidth, the latency between them,
/// and cuts. Cheap to clone; every clone is the same network. See the crate docs for the
/// model.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// use simnet::{LatencyMatrix, NodeConfig, SimConfig, SimNetwork, mbit};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let ms = Duration::from_millis;
/// let net = SimNetwork::new(
///     SimConfig::default(),
///     LatencyMatrix::new(ms(100)).with("eu", "us", ms(40)),
/// );
/// let eu = net.add_node(NodeConfig::new("eu", mbit(1000)));
/// let us = net.add_node(NodeConfig::new("us", mbit(1000)));
///
/// let mut listener = us.listen(80).unwrap();
/// let start = tokio::time::Instant::now();
/// let mut client = eu.connect(80).await.unwrap();
/// assert_eq!(start.elapsed(), ms(80)); // one round trip
/// client.write_all(b"hello").await.unwrap();
/// let (mut server, _from) = listener.accept().await;
/// let mut buf = [0u8; 5];
/// server.read_exact(&mut buf).await.unwrap();
/// // One way later, seen at the next tick of tokio's millisecond timers.
/// assert!(start.elapsed() > ms(120) && start.elapsed() <= ms(121));
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct SimNetwork {
    shared: Arc<Shared>,
}

impl SimNetwork {
    /// An empty network with `config`, whose regions are as far apart as `latency`
    /// says. Its wire task runs on the current tokio runtime until the network and every
    /// socket of it are dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn new(config: SimConfig, latency: impl LatencyModel) -> Self {
        let core = Core::new(Params {
            send_buffer: config.send_buffer as u64,
            window: config.receive_window as u64,
            local_latency: config.local_latency,
            backlog: config.backlog,
        });
        let shared = Arc::new(Shared::new(core, Box::new(latency)));
        tokio::spawn(driver::run(
            Arc::downgrade(&shared),
            Arc::clone(&shared.notify),
        ));
        Self { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Adds a node; its transport listens and dials as that node.
    pub fn add_node(&self, node: NodeConfig) -> SimTransport {
        let id = self.shared.with(|s| {
            let id = s.core.add_node(node.uplink, node.downlink);
            for (other, region) in s.regions.iter().enumerate() {
                if *region == node.region {
                    continue;
                }
                let other = NodeId(other as u32);
                let there = s.latency.one_way(&node.region, region);
                let back = s.latency.one_way(region, &node.region);
                s.core.set_latency(id, other, there);
                s.core.set_latency(other, id, back);
            }
            s.regions.push(node.region);
            id
        });
        SimTransport::new(self.clone(), id)
    }

    /// The transport of node `node`, if the network has it.
    pub fn transport(&self, node: NodeId) -> Option<SimTransport> {
        let known = self.shared.with(|s| node.index() < s.core.nodes());
        known.then(|| SimTransport::new(self.clone(), node))
    }

    /// The one-way latency from `from` to `to`.
    ///
    /// # Panics
    ///
    /// If either node is not in this network.
    pub fn latency(&self, from: NodeId, to: NodeId) -> Duration {
        self.shared.with(|s| s.core.latency(from, to))
    }

    /// Bytes that arrived at `node` so far over all its connections (what its downlink
    /// carried): sampled over time, the progress of a transfer.
    ///
    /// # Panics
    ///
    /// If the node is not in this network.
    pub fn received(&self, node: NodeId) -> u64 {
        self.shared.with(|s| s.core.received(node))
    }

    /// Cuts apart every two nodes of different groups (adding to the cuts already made;
    /// nodes in no group keep their links).
    pub fn partition<G: AsRef<[NodeId]>>(&self, groups: &[G]) {
        let mut pairs = Vec::new();
        for (i, a) in groups.iter().enumerate() {
            for b in &groups[i + 1..] {
                pairs.extend(pairs_between(a.as_ref(), b.as_ref()));
            }
        }
        self.shared.with(|s| s.core.set_cut(pairs, true));
    }

    /// Cuts every node of `a` apart from every node of `b`. While cut, bytes between them
    /// are held (those on the wire are sent again once healed, as TCP retransmits) and
    /// handshakes wait.
    pub fn cut(&self, a: &[NodeId], b: &[NodeId]) {
        let pairs = pairs_between(a, b);
        self.shared.with(|s| s.core.set_cut(pairs, true));
    }

    /// Heals the cuts between the nodes of `a` and those of `b`.
    pub fn heal_between(&self, a: &[NodeId], b: &[NodeId]) {
        let pairs = pairs_between(a, b);
        self.shared.with(|s| s.core.set_cut(pairs, false));
    }

    /// Heals every cut: what was held flows again.
    pub fn heal(&self) {
        self.shared.with(|s| s.core.heal_all());
    }

    /// The node behind a `/memory/<port>` address of this network: the one listening
    /// there, or dialing from it (the remote address of an inbound connection).
    pub fn node_of(&self, addr: &NetworkAddress) -> Option<NodeId> {
        let Endpoint::Memory(port) = *addr.endpoint() else {
            return None;
        };
        self.shared.with(|s| s.core.owner(port))
    }
}

/// Every pair of a node of `a` and a node of `b`.
fn pairs_between(a: &[NodeId], b: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (*x, *y)))
        .collect()
}
