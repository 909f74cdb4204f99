//! An application that compresses its payloads, over memsocket: messages, requests and
//! responses arrive as sent, and what travels is the compressed size.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proto::consensus::{
    Block, BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg, Proposal,
    block_retrieval_response::Status, consensus_msg,
};
use validator_network::{
    AppEvent, Application, Compression, Identity, PeerId, ProtocolId, Registry, StackBuilder,
    StackConfig,
};

/// Blocks one way and by request, compressed.
enum Blocks {}

const DIRECT: ProtocolId = ProtocolId::new("/blocks-lz4/direct-send/1");
const RPC: ProtocolId = ProtocolId::new("/blocks-lz4/rpc/1");

impl Application for Blocks {
    const NAME: &'static str = "blocks";
    const DIRECT_SEND: Option<ProtocolId> = Some(DIRECT);
    const RPC: Option<ProtocolId> = Some(RPC);
    type Message = ConsensusMsg;
    type Request = BlockRetrievalRequest;
    type Response = BlockRetrievalResponse;
    const COMPRESSION: Compression = Compression::Lz4;
}

/// A block of 10,000 transactions of a few kinds: repetitive, as blocks often are.
fn big_block(height: u64) -> Block {
    Block {
        height,
        id: Bytes::from(vec![7u8; 32]),
        transactions: (0..10_000).map(|i| 1_000_000 + i % 4).collect(),
        ..Block::default()
    }
}

fn bytes_out(registry: &Registry, protocol: ProtocolId) -> u64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "network_bytes_out_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == protocol.as_str()))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[tokio::test]
async fn compressed_payloads_arrive_as_sent_and_travel_smaller() {
    let (a, b) = (Identity::generate(), Identity::generate());
    let set: Vec<PeerId> = vec![a.peer_id(), b.peer_id()];
    let start = |identity: Identity, known: &[validator_network::NetworkAddress]| {
        let registry = Registry::new();
        let mut builder = StackBuilder::new(
            StackConfig::for_validator_set("/memory/0", &set, known),
            registry.clone(),
        )
        .with_identity(identity);
        let app = builder.register::<Blocks>();
        let mut running = builder.start().unwrap();
        let (sender, events) = running.take(app);
        (sender, events, registry, running)
    };
    let (a_tx, mut a_events, a_registry, a_running) = start(a, &[]);
    let (b_tx, mut b_events, _b_registry, b_running) = start(b, &a_running.listen_addrs);
    let peer_a = a_running.peer_id;
    let peer_b = b_running.peer_id;
    loop {
        if let Some(AppEvent::NewPeer(_)) = a_events.next().await {
            break;
        }
    }

    // B serves blocks; A sends one block and asks for another.
    tokio::spawn(async move {
        while let Some(event) = b_events.next().await {
            match event {
                AppEvent::RpcRequest {
                    request, responder, ..
                } => {
                    let response = BlockRetrievalResponse {
                        status: Status::Ok.into(),
                        blocks: vec![big_block(request.from_height)],
                    };
                    responder.respond(response).unwrap();
                }
                AppEvent::Message { msg, .. } => {
                    // Echo it back, as it came.
                    b_tx.send_to(peer_a, &msg).unwrap();
                }
                _ => {}
            }
        }
    });
    let proposal = ConsensusMsg {
        message: Some(consensus_msg::Message::Proposal(Proposal {
            block: Some(big_block(3)),
        })),
    };
    a_tx.send_to(peer_b, &proposal).unwrap();
    let echoed = loop {
        if let Some(AppEvent::Message { msg, .. }) = a_events.next().await {
            break msg;
        }
    };
    assert_eq!(echoed, proposal);
    let response = a_tx
        .request(
            peer_b,
            &BlockRetrievalRequest {
                from_height: 9,
                max_blocks: 1,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(response.blocks, vec![big_block(9)]);

    // The proposal travelled compressed: far fewer bytes than its encoding.
    let encoded = proto::Message::encoded_len(&proposal) as u64;
    let sent = bytes_out(&a_registry, DIRECT);
    assert!(
        sent * 4 < encoded,
        "{sent} bytes sent for {encoded} encoded"
    );
    a_running.shutdown.shutdown().await;
    b_running.shutdown.shutdown().await;
}

#[tokio::test]
async fn the_message_limit_is_on_the_payload_before_compression() {
    let (a, b) = (Identity::generate(), Identity::generate());
    let set: Vec<PeerId> = vec![a.peer_id(), b.peer_id()];
    let mut config = StackConfig::for_validator_set("/memory/0", &set, &[]);
    config.limits.max_message_size = 4096;
    let mut builder = StackBuilder::new(config, Registry::new()).with_identity(a);
    let app = builder.register::<Blocks>();
    let mut running = builder.start().unwrap();
    let (sender, _events) = running.take(app);
    // It would compress far below the limit, but the application's message is over it.
    let proposal = ConsensusMsg {
        message: Some(consensus_msg::Message::Proposal(Proposal {
            block: Some(big_block(1)),
        })),
    };
    let len = proto::Message::encoded_len(&proposal);
    assert!(matches!(
        sender.send_to(b.peer_id(), &proposal),
        Err(validator_network::SendError::TooLarge { len: l, max: 4096 }) if l == len
    ));
    running.shutdown.shutdown().await;
}
