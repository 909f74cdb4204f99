//! The network stack (`network` over Noise and the multiplexer) running unchanged over
//! the simulated network, under paused time: how long connecting and an RPC take
//! between validators 100 ms apart (round trip).

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use netcore::{NetworkAddress, PeerId};
use network::{
    Event, Network, NetworkBuilder, NetworkConfig, NetworkEvents, NetworkSender, ProtocolId,
    ProtocolKind,
};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use prometheus::Registry;
use simnet::{LatencyMatrix, NodeConfig, SimConfig, SimNetwork, SimTransport, mbit};
use tokio::time::Instant;

const RPC: ProtocolId = ProtocolId::new("/simnet-test/rpc/1");
const PROTOCOLS: &[(ProtocolId, ProtocolKind)] = &[(RPC, ProtocolKind::Rpc)];
const TIMEOUT: Duration = Duration::from_secs(30);

/// One round trip between the two regions.
const RTT: Duration = Duration::from_millis(100);

/// Each exchange that waits for an answer is seen at the next millisecond tick at worst;
/// a few such waits stack up.
const SLACK: Duration = Duration::from_millis(3);

struct Node {
    _network: Network,
    sender: NetworkSender,
    events: Option<NetworkEvents>,
    addr: NetworkAddress,
    peer_id: PeerId,
}

/// A node of the stack on `transport`, trusting `trusted`.
fn start(transport: SimTransport, identity: Identity, trusted: TrustedPeers) -> Node {
    let upgrader = NoiseUpgrader::new(identity, NoiseConfig::mutual(trusted));
    let mut builder = NetworkBuilder::new(NetworkConfig::default(), upgrader, Registry::new());
    let app = builder.register(PROTOCOLS);
    builder.listen_on("/memory/0".parse().unwrap());
    let mut network = builder.start(transport).unwrap();
    let (sender, events) = network.take_app(app).unwrap();
    Node {
        addr: network.listen_addrs()[0].clone(),
        peer_id: network.local_peer_id(),
        _network: network,
        sender,
        events: Some(events),
    }
}

/// Two nodes of 1 Gbit/s in two regions 50 ms apart each way.
fn two_nodes() -> (SimNetwork, Node, Node) {
    let net = SimNetwork::new(
        SimConfig::default(),
        LatencyMatrix::new(Duration::from_millis(50)),
    );
    let ids = [Identity::generate(), Identity::generate()];
    let trusted = TrustedPeers::from_peers(ids.iter().map(Identity::peer_id)).unwrap();
    let [a, b] = ids;
    let node_a = start(
        net.add_node(NodeConfig::new("eu", mbit(1000))),
        a,
        trusted.clone(),
    );
    let node_b = start(net.add_node(NodeConfig::new("us", mbit(1000))), b, trusted);
    (net, node_a, node_b)
}

/// Answers every RPC with `response`.
fn serve(mut events: NetworkEvents, response: Bytes) {
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let Event::RpcRequest { responder, .. } = event {
                responder.respond(response.clone()).unwrap();
            }
        }
    });
}

fn assert_within(actual: Duration, least: Duration, slack: Duration) {
    assert!(
        actual >= least && actual <= least + slack,
        "{actual:?} is not within {slack:?} above {least:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_rpc_between_nodes_100_ms_apart_takes_one_round_trip() {
    let (_net, a, mut b) = two_nodes();
    serve(b.events.take().unwrap(), Bytes::from_static(b"pong"));

    let start = Instant::now();
    a.sender.dial(b.addr.clone()).await.unwrap();
    let connected = start.elapsed();
    let call = Instant::now();
    let answer = a
        .sender
        .rpc(b.peer_id, RPC, Bytes::from_static(b"ping"), TIMEOUT)
        .await
        .unwrap();
    let rpc = call.elapsed();
    assert_eq!(answer, Bytes::from_static(b"pong"));

    // TCP's handshake, then Noise IK's two messages; the listener's handshake message
    // follows its last Noise message in the same flight: two round trips.
    assert_within(connected, 2 * RTT, SLACK);
    // Opening the substream, naming the protocol and sending the request go in one
    // flight: the answer is back a round trip later.
    assert_within(rpc, RTT, SLACK);

    let call = Instant::now();
    a.sender
        .rpc(b.peer_id, RPC, Bytes::from_static(b"ping"), TIMEOUT)
        .await
        .unwrap();
    assert_within(call.elapsed(), RTT, SLACK);
}

#[tokio::test(start_paused = true)]
async fn a_megabyte_response_takes_a_few_round_trips_while_the_stream_window_grows() {
    let (_net, a, mut b) = two_nodes();
    let response = Bytes::from(vec![1u8; 1024 * 1024]);
    serve(b.events.take().unwrap(), response.clone());
    a.sender.dial(b.addr.clone()).await.unwrap();

    let call = Instant::now();
    let answer = a
        .sender
        .rpc(b.peer_id, RPC, Bytes::from_static(b"get"), TIMEOUT)
        .await
        .unwrap();
    let took = call.elapsed();
    assert_eq!(answer.len(), response.len());

    // The link alone would carry it in a round trip and its transmission time. A new
    // stream's receive
    // window is the spec's 256 KiB and grows a round trip at a time, so a response
    // of several windows waits for window updates: a few round trips.
    let transmission = Duration::from_secs_f64(response.len() as f64 / mbit(1000) as f64);
    assert!(took >= RTT + transmission, "{took:?}");
    assert!(took > 2 * RTT && took <= 4 * RTT, "{took:?}");
}
