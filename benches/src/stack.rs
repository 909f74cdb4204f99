//! Two connected nodes of the full stack (TCP or memsocket, Noise, handshake,
//! multiplexer, network), for RPC and DirectSend benchmarks.

use std::time::Duration;

use futures::StreamExt;
use netcore::PeerId;
use netcore::transport::{MemoryTransport, TcpTransport};
use network::{
    Event, Network, NetworkBuilder, NetworkConfig, NetworkEvents, NetworkSender, ProtocolId,
    ProtocolKind,
};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use prometheus::Registry;

/// The RPC protocol of the benchmark nodes.
pub const RPC: ProtocolId = ProtocolId::new("/bench/rpc/1");
/// The DirectSend protocol of the benchmark nodes.
pub const DIRECT: ProtocolId = ProtocolId::new("/bench/direct-send/1");

/// Which socket the nodes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socket {
    /// `memsocket`.
    Memory,
    /// TCP on 127.0.0.1.
    Tcp,
}

impl Socket {
    /// `"memory"` or `"tcp"`, for benchmark ids.
    pub fn label(self) -> &'static str {
        match self {
            Socket::Memory => "memory",
            Socket::Tcp => "tcp",
        }
    }
}

/// A running node: its network and the handles of its one application.
pub struct BenchNode {
    /// Keeps the network running.
    pub network: Network,
    /// The application's sender.
    pub sender: NetworkSender,
    /// The application's events (`None` once given to a server task).
    pub events: Option<NetworkEvents>,
    /// The node's peer id.
    pub peer_id: PeerId,
}

fn node(
    socket: Socket,
    identity: Identity,
    trusted: TrustedPeers,
) -> Result<BenchNode, network::BuildError> {
    let upgrader = NoiseUpgrader::new(identity, NoiseConfig::mutual(trusted));
    // Benchmarks send far past the default per-peer queue sizes on purpose: the
    // bounds stay, the drops would only measure the queue size.
    let config = NetworkConfig {
        max_concurrent_outbound_rpcs: 1024,
        max_concurrent_inbound_rpcs: 1024,
        ..NetworkConfig::default()
    };
    let mut builder = NetworkBuilder::new(config, upgrader, Registry::new());
    let app = builder.register(&[(RPC, ProtocolKind::Rpc), (DIRECT, ProtocolKind::DirectSend)]);
    let mut network = match socket {
        Socket::Memory => {
            builder.listen_on(netcore::NetworkAddress::memory(0));
            builder.start(MemoryTransport::default())?
        }
        Socket::Tcp => {
            builder.listen_on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into());
            builder.start(TcpTransport::default())?
        }
    };
    let (sender, events) = network
        .take_app(app)
        .expect("the application was registered once");
    let peer_id = network.local_peer_id();
    Ok(BenchNode {
        network,
        sender,
        events: Some(events),
        peer_id,
    })
}

/// Starts two nodes over `socket` and connects the first to the second. Must run inside
/// a tokio runtime.
pub async fn connected_pair(socket: Socket) -> (BenchNode, BenchNode) {
    let (a_id, b_id) = (Identity::generate(), Identity::generate());
    let trusted = TrustedPeers::from_peers([a_id.peer_id(), b_id.peer_id()])
        .expect("generated ids are valid keys");
    let a = node(socket, a_id, trusted.clone()).expect("node starts");
    let mut b = node(socket, b_id, trusted).expect("node starts");
    let addr = b.network.listen_addrs()[0].clone();
    a.sender.dial(addr).await.expect("dial succeeds");
    // Wait until the listener registered the connection too.
    if let Some(events) = b.events.as_mut() {
        while let Some(event) = events.next().await {
            if matches!(event, Event::NewPeer(_)) {
                break;
            }
        }
    }
    (a, b)
}

/// Answers every RPC with its request, until the stream ends.
pub async fn echo_server(mut events: NetworkEvents) {
    while let Some(event) = events.next().await {
        if let Event::RpcRequest {
            data, responder, ..
        } = event
        {
            let _ = responder.respond(data);
        }
    }
}

/// Counts DirectSend messages, publishing the count on `progress` each time the queue
/// runs dry (not per message: a wake-up per message would be the harness's cost, not
/// the stack's).
pub async fn message_counter(mut events: NetworkEvents, progress: tokio::sync::watch::Sender<u64>) {
    use futures::FutureExt;
    let mut count = 0u64;
    loop {
        let event = match events.next().now_or_never() {
            Some(event) => event,
            None => {
                progress.send_replace(count);
                events.next().await
            }
        };
        match event {
            Some(Event::Message { .. }) => count += 1,
            Some(_) => {}
            None => break,
        }
    }
    progress.send_replace(count);
}

/// The timeout benchmarks give each RPC: long enough never to fire.
pub const BENCH_RPC_TIMEOUT: Duration = Duration::from_secs(30);
