//! Four validators of `validator-network` in four regions, started from their ordinary
//! configuration over the simulated network (`StackBuilder::with_transport`): they
//! connect, and a broadcast reaches each one a one-way latency after it leaves.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use simnet::{LatencyMatrix, NodeConfig, SimConfig, SimNetwork, mbit};
use tokio::time::Instant;
use validator_network::proto::consensus::{ConsensusMsg, SyncInfo, consensus_msg};
use validator_network::{
    AppEvent, Application, Events, Identity, NetworkAddress, Never, PeerId, ProtocolId, Registry,
    Sender, ShutdownHandle, StackBuilder, StackConfig,
};

/// Consensus messages one way, nothing by request.
enum Consensus {}

impl Application for Consensus {
    const NAME: &'static str = "consensus";
    const DIRECT_SEND: Option<ProtocolId> = Some(ProtocolId::new("/simnet-test/consensus/1"));
    const RPC: Option<ProtocolId> = None;
    type Message = ConsensusMsg;
    type Request = Never;
    type Response = Never;
}

const REGIONS: [&str; 4] = ["us", "eu", "asia", "oceania"];

fn latency() -> LatencyMatrix {
    let ms = Duration::from_millis;
    LatencyMatrix::new(ms(120))
        .with("us", "eu", ms(40))
        .with("us", "asia", ms(80))
        .with("eu", "asia", ms(100))
        .with("asia", "oceania", ms(60))
}

struct Validator {
    node: simnet::NodeId,
    addr: NetworkAddress,
    sender: Sender<Consensus>,
    events: Events<Consensus>,
    /// Keeps the stack running.
    _shutdown: ShutdownHandle,
}

/// Starts a validator per region, each dialing those started before it.
fn start(net: &SimNetwork) -> Vec<Validator> {
    start_in(net, &REGIONS)
}

/// Starts a validator in each of `regions` (a region may repeat), each dialing those
/// started before it.
fn start_in(net: &SimNetwork, regions: &[&str]) -> Vec<Validator> {
    let identities: Vec<Identity> = regions.iter().map(|_| Identity::generate()).collect();
    let trusted: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
    let mut validators: Vec<Validator> = Vec::new();
    for (identity, region) in identities.into_iter().zip(regions.iter().copied()) {
        let transport = net.add_node(NodeConfig::new(region, mbit(1000)));
        let node = transport.node();
        let known: Vec<NetworkAddress> = validators.iter().map(|v| v.addr.clone()).collect();
        let config = StackConfig::for_validator_set("/memory/0", &trusted, &known);
        let mut builder = StackBuilder::new(config, Registry::new())
            .with_identity(identity)
            .with_transport(transport);
        let consensus = builder.register::<Consensus>();
        let mut running = builder.start().unwrap();
        let (sender, events) = running.take(consensus);
        validators.push(Validator {
            node,
            addr: running.listen_addrs[0].clone(),
            sender,
            events,
            _shutdown: running.shutdown,
        });
    }
    validators
}

/// Waits until `validator` has seen `n` distinct peers connect.
async fn wait_for_peers(validator: &mut Validator, n: usize) {
    let mut up = HashSet::new();
    while up.len() < n {
        if let Some(AppEvent::NewPeer(peer)) = validator.events.next().await {
            up.insert(peer);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_broadcast_reaches_each_validator_a_one_way_latency_later() {
    let net = SimNetwork::new(SimConfig::default(), latency());
    let mut validators = start(&net);
    for v in &mut validators {
        wait_for_peers(v, REGIONS.len() - 1).await;
    }
    let msg = ConsensusMsg {
        message: Some(consensus_msg::Message::SyncInfo(SyncInfo::default())),
    };

    let sent = Instant::now();
    assert!(validators[0].sender.broadcast(&msg).is_empty());

    // The others are in order of their latency from the leader: each is awaited after
    // the one before it got the message.
    let leader = validators[0].node;
    for v in &mut validators[1..] {
        loop {
            if let Some(AppEvent::Message { msg: got, .. }) = v.events.next().await {
                assert_eq!(got, msg);
                break;
            }
        }
        let took = sent.elapsed();
        let one_way = net.latency(leader, v.node);
        assert!(
            took >= one_way && took <= one_way + Duration::from_millis(2),
            "{took:?} for a one-way latency of {one_way:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_large_message_sent_nearest_first_reaches_the_nearest_before_the_rest() {
    let net = SimNetwork::new(SimConfig::default(), latency());
    // A leader in "us" and four validators in each other region: more than the copies
    // on their way at once.
    let mut regions = vec!["us"];
    for region in &REGIONS[1..] {
        regions.extend([*region; 4]);
    }
    let others = regions.len() - 1;
    assert!(others > network::IN_ORDER_WINDOW);
    let mut validators = start_in(&net, &regions);
    for v in &mut validators {
        wait_for_peers(v, others).await;
    }
    // Let each connection measure its round trip (the first probe goes at once).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let size = 4 << 20;
    let msg = ConsensusMsg {
        message: Some(consensus_msg::Message::SyncInfo(SyncInfo {
            committed_id: vec![7u8; size].into(),
            ..SyncInfo::default()
        })),
    };
    let leader = validators[0].node;
    let (first, rest) = validators.split_first_mut().unwrap();
    // Twice: the first round grows each stream's window to its path (from 256 KiB,
    // which would hold a far copy for round trips); the second is measured.
    let mut arrivals: Vec<(Duration, Duration)> = Vec::new();
    for _ in 0..2 {
        let sent = Instant::now();
        let (sender, msg) = (first.sender.clone(), msg.clone());
        let sending =
            tokio::spawn(async move { sender.broadcast_nearest_first(&msg).await.is_empty() });
        // Every validator watched at once, so each time is its own arrival.
        arrivals = futures::future::join_all(rest.iter_mut().map(|v| async {
            loop {
                if let Some(AppEvent::Message { .. }) = v.events.next().await {
                    return (sent.elapsed(), net.latency(leader, v.node));
                }
            }
        }))
        .await;
        assert!(sending.await.unwrap(), "every copy went out");
    }
    arrivals.sort();
    // The nearest (eu, 40 ms) first: they had the message before all copies could have
    // crossed the leader's uplink, which is when they would have had it sent to all at
    // once; and the arrivals come in order of distance.
    let all_copies = Duration::from_secs_f64((others * size * 8) as f64 / 1e9);
    let (eu, eu_latency) = arrivals[0];
    assert_eq!(eu_latency, Duration::from_millis(40), "{arrivals:?}");
    assert!(
        eu < all_copies + eu_latency,
        "nearest had it after {eu:?}; all at once: {:?}",
        all_copies + eu_latency
    );
    assert!(
        arrivals.windows(2).all(|w| w[0].1 <= w[1].1),
        "in order of distance: {arrivals:?}"
    );
}
