//! Full nodes over loopback TCP that know 127.0.0.1 as a validator's address, as the
//! nodes of a validator network know each other's (validator-network sets them from the
//! validator set): for the workloads that dial one listener many times or run across
//! processes. A stranger's IP may start 4 handshakes a second, 8 at once (the defaults
//! of `network::admission`), which the setup workload's 300 dials in a row would pass.

use futures::StreamExt;
use netcore::transport::TcpTransport;
use network::admission::ValidatorAddresses;
use network::{Event, NetworkBuilder, NetworkConfig, ProtocolKind};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};

use benches::stack::{BenchNode, DIRECT, RPC};

/// A node of `identity` trusting `trusted`, listening on loopback TCP, configured as
/// `benches::stack`'s nodes are (RPC and DirectSend; 1024 RPCs in flight each way),
/// with 127.0.0.1 a known validator's address.
pub fn node(identity: Identity, trusted: TrustedPeers) -> BenchNode {
    let config = NetworkConfig {
        max_concurrent_outbound_rpcs: 1024,
        max_concurrent_inbound_rpcs: 1024,
        ..NetworkConfig::default()
    };
    let upgrader = NoiseUpgrader::new(identity, NoiseConfig::mutual(trusted));
    let mut builder = NetworkBuilder::new(config, upgrader, prometheus::Registry::new());
    let app = builder.register(&[(RPC, ProtocolKind::Rpc), (DIRECT, ProtocolKind::DirectSend)]);
    let validators = ValidatorAddresses::default();
    validators.replace([std::net::Ipv4Addr::LOCALHOST.into()]);
    builder.validator_addresses(validators);
    builder.listen_on(std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into());
    let mut network = builder.start(TcpTransport::default()).expect("node starts");
    let (sender, events) = network.take_app(app).expect("registered once");
    let peer_id = network.local_peer_id();
    BenchNode {
        network,
        sender,
        events: Some(events),
        peer_id,
    }
}

/// Two such nodes, the first connected to the second (which saw the connection).
pub async fn connected_pair() -> (BenchNode, BenchNode) {
    let (a_id, b_id) = (Identity::generate(), Identity::generate());
    let trusted =
        TrustedPeers::from_peers([a_id.peer_id(), b_id.peer_id()]).expect("generated keys");
    let a = node(a_id, trusted.clone());
    let mut b = node(b_id, trusted);
    let addr = b.network.listen_addrs()[0].clone();
    a.sender.dial(addr).await.expect("dial");
    let events = b.events.as_mut().expect("events");
    while let Some(event) = events.next().await {
        if matches!(event, Event::NewPeer(_)) {
            break;
        }
    }
    (a, b)
}
