//! Four validators over memsocket through the typed API: broadcast, block retrieval,
//! lost peers, and undecodable input.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use netcore::transport::MemoryTransport;
use network::ProtocolKind;
use noise::{NoiseConfig, NoiseUpgrader, TrustedPeers};
use proto::consensus::{
    Block, BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg, Proposal,
    block_retrieval_response::Status, consensus_msg,
};
use validator_network::{
    AppEvent, DisconnectReason, Identity, NetworkAddress, PeerId, Registry, RemoteFailure,
    RpcError, ShutdownHandle, StackBuilder, StackConfig,
};

mod common;
use common::{CONSENSUS_DIRECT_SEND, CONSENSUS_RPC, Consensus, ConsensusEvents, ConsensusSender};

/// Generous: paused time only advances when every task is idle.
const WAIT: Duration = Duration::from_secs(30);

struct Validator {
    peer_id: PeerId,
    addr: NetworkAddress,
    sender: ConsensusSender,
    events: ConsensusEvents,
    registry: Registry,
    shutdown: Option<ShutdownHandle>,
}

impl Validator {
    async fn next_event(&mut self) -> AppEvent<Consensus> {
        tokio::time::timeout(WAIT, self.events.next())
            .await
            .expect("no event in time")
            .expect("event stream ended")
    }

    /// Waits until `n` distinct peers are up.
    async fn wait_for_peers(&mut self, n: usize) {
        let mut up = HashSet::new();
        while up.len() < n {
            if let AppEvent::NewPeer(peer) = self.next_event().await {
                up.insert(peer);
            }
        }
    }

    fn decode_failures(&self, kind: &str) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == "validator_network_decode_failures_total")
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| m.get_label().iter().any(|l| l.value() == kind))
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }
}

/// A config over memsocket trusting `trusted`, dialing `known` (already listening).
fn config(trusted: &[PeerId], known: &[NetworkAddress]) -> StackConfig {
    StackConfig::for_validator_set("/memory/0", trusted, known)
}

/// Starts `n` validators that trust each other; each dials those started before it, so
/// they end fully connected.
fn start_validators(n: usize, extra_trusted: &[PeerId]) -> Vec<Validator> {
    let identities: Vec<Identity> = (0..n).map(|_| Identity::generate()).collect();
    let mut trusted: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
    trusted.extend_from_slice(extra_trusted);
    let mut validators: Vec<Validator> = Vec::new();
    for identity in identities {
        let known: Vec<NetworkAddress> = validators.iter().map(|v| v.addr.clone()).collect();
        let registry = Registry::new();
        let mut builder =
            StackBuilder::new(config(&trusted, &known), registry.clone()).with_identity(identity);
        let consensus = builder.register::<Consensus>();
        let mut running = builder.start().unwrap();
        let (sender, events) = running.take(consensus);
        validators.push(Validator {
            peer_id: running.peer_id,
            addr: running.listen_addrs[0].clone(),
            sender,
            events,
            registry,
            shutdown: Some(running.shutdown),
        });
    }
    validators
}

async fn start_connected(n: usize) -> Vec<Validator> {
    let mut validators = start_validators(n, &[]);
    for v in &mut validators {
        v.wait_for_peers(n - 1).await;
    }
    validators
}

fn proposal(height: u64) -> ConsensusMsg {
    ConsensusMsg {
        message: Some(consensus_msg::Message::Proposal(Proposal {
            block: Some(block(height)),
        })),
    }
}

fn block(height: u64) -> Block {
    Block {
        height,
        round: height,
        id: Bytes::from(height.to_be_bytes().to_vec()),
        transactions: vec![height, height + 1],
        ..Block::default()
    }
}

#[tokio::test(start_paused = true)]
async fn broadcast_reaches_every_other_validator() {
    let mut validators = start_connected(4).await;
    let msg = proposal(7);

    let failures = validators[0].sender.broadcast(&msg);

    assert!(failures.is_empty(), "{failures:?}");
    let leader = validators[0].peer_id;
    for v in &mut validators[1..] {
        match v.next_event().await {
            AppEvent::Message { peer_id, msg: got } => {
                assert_eq!(peer_id, leader);
                assert_eq!(got, msg);
            }
            other => panic!("expected the proposal, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn request_block_returns_the_typed_response() {
    let mut validators = start_connected(4).await;
    let mut server = validators.pop().unwrap();
    let server_id = server.peer_id;
    tokio::spawn(async move {
        while let Some(event) = server.events.next().await {
            if let AppEvent::RpcRequest {
                request, responder, ..
            } = event
            {
                let blocks = (request.from_height..)
                    .take(request.max_blocks as usize)
                    .map(block)
                    .collect();
                responder
                    .respond(BlockRetrievalResponse {
                        status: Status::Ok.into(),
                        blocks,
                    })
                    .unwrap();
            }
        }
    });

    let response = validators[0]
        .sender
        .request(
            server_id,
            &BlockRetrievalRequest {
                from_height: 5,
                max_blocks: 3,
            },
            WAIT,
        )
        .await
        .unwrap();

    assert_eq!(response.status(), Status::Ok);
    assert_eq!(response.blocks, vec![block(5), block(6), block(7)]);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_validator_is_reported_lost_to_the_others() {
    let mut validators = start_connected(4).await;
    let mut stopped = validators.pop().unwrap();

    stopped.shutdown.take().unwrap().shutdown().await;

    for v in &mut validators {
        loop {
            if let AppEvent::LostPeer { peer_id, reason } = v.next_event().await {
                assert_eq!(peer_id, stopped.peer_id);
                assert_eq!(reason, DisconnectReason::ConnectionLost);
                break;
            }
        }
        assert!(!v.sender.connected_peers().contains(&stopped.peer_id));
    }
}

#[tokio::test(start_paused = true)]
async fn undecodable_input_is_counted_and_dropped() {
    // A raw node of the untyped network speaks the consensus protocols with garbage.
    let raw_identity = Identity::generate();
    let raw_id = raw_identity.peer_id();
    let mut validators = start_validators(1, &[raw_id]);
    let validator = &mut validators[0];
    let trusted = TrustedPeers::from_peers([validator.peer_id]).unwrap();
    let mut builder = network::NetworkBuilder::new(
        network::NetworkConfig::default(),
        NoiseUpgrader::new(raw_identity, NoiseConfig::mutual(trusted)),
        Registry::new(),
    );
    let app = builder.register(&[
        (CONSENSUS_DIRECT_SEND, ProtocolKind::DirectSend),
        (CONSENSUS_RPC, ProtocolKind::Rpc),
    ]);
    let mut raw = builder.start(MemoryTransport::default()).unwrap();
    let (raw_sender, _raw_events) = raw.take_app(app).unwrap();
    raw_sender.dial(validator.addr.clone()).await.unwrap();
    validator.wait_for_peers(1).await;
    // A varint field header with no value: not a ConsensusMsg.
    let garbage = Bytes::from_static(&[0x08]);

    raw_sender
        .send_to(validator.peer_id, CONSENSUS_DIRECT_SEND, garbage.clone())
        .unwrap();
    let good = proposal(1);
    raw_sender
        .send_to(
            validator.peer_id,
            CONSENSUS_DIRECT_SEND,
            Bytes::from(proto::Message::encode_to_vec(&good)),
        )
        .unwrap();
    let rpc = raw_sender.rpc(validator.peer_id, CONSENSUS_RPC, garbage, WAIT);
    // The validator's events must be served for the request to be answered.
    tokio::pin!(rpc);
    let mut messages = Vec::new();
    let rpc = loop {
        tokio::select! {
            result = &mut rpc => break result,
            event = validator.next_event() => messages.push(event),
        }
    };

    assert!(
        matches!(
            rpc,
            Err(RpcError::Remote {
                failure: RemoteFailure::Application,
                ..
            })
        ),
        "{rpc:?}"
    );
    if messages.is_empty() {
        messages.push(validator.next_event().await);
    }
    assert_eq!(messages.len(), 1, "{messages:?}");
    match messages.pop().unwrap() {
        AppEvent::Message { peer_id, msg } => {
            assert_eq!(peer_id, raw_id);
            assert_eq!(msg, good);
        }
        other => panic!("expected the valid message, got {other:?}"),
    }
    assert_eq!(validator.decode_failures("message"), 1);
    assert_eq!(validator.decode_failures("request"), 1);
}
