//! Limits per application: one that asks for large messages gets them past the
//! stack's limit, one of small messages refuses anything larger than its own.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proto::consensus::{
    Block, BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg, Proposal,
    block_retrieval_response::Status, consensus_msg,
};
use validator_network::{
    AppEvent, Application, Identity, Limits, PeerId, Priority, ProtocolId, Registry, SendError,
    StackBuilder, StackConfig,
};

/// Large responses, sent after everything else.
enum Chunks {}

impl Application for Chunks {
    const NAME: &'static str = "chunks";
    const DIRECT_SEND: Option<ProtocolId> = None;
    const RPC: Option<ProtocolId> = Some(ProtocolId::new("/chunks/rpc/1"));
    type Message = validator_network::Never;
    type Request = BlockRetrievalRequest;
    type Response = BlockRetrievalResponse;
    const PRIORITY: Priority = Priority::Bulk;
    const MAX_MESSAGE_SIZE: Option<usize> = Some(24 << 20);
}

/// Small messages only.
enum Votes {}

impl Application for Votes {
    const NAME: &'static str = "votes";
    const DIRECT_SEND: Option<ProtocolId> = Some(ProtocolId::new("/votes/direct-send/1"));
    const RPC: Option<ProtocolId> = None;
    type Message = ConsensusMsg;
    type Request = validator_network::Never;
    type Response = validator_network::Never;
    const PRIORITY: Priority = Priority::Urgent;
    const MAX_MESSAGE_SIZE: Option<usize> = Some(1024);
}

/// A block whose id is `len` bytes: a payload of about that size.
fn block_of(len: usize) -> Block {
    Block {
        height: 1,
        id: Bytes::from(vec![7u8; len]),
        ..Block::default()
    }
}

#[tokio::test]
async fn each_application_has_its_own_message_limit() {
    let (a, b) = (Identity::generate(), Identity::generate());
    let set: Vec<PeerId> = vec![a.peer_id(), b.peer_id()];
    // The stack's limit, for applications that set none, is 1 MiB here.
    let start = |identity: Identity, known: &[validator_network::NetworkAddress]| {
        let mut config = StackConfig::for_validator_set("/memory/0", &set, known);
        config.limits = Limits {
            max_message_size: 1 << 20,
            ..Limits::default()
        };
        let mut builder = StackBuilder::new(config, Registry::new()).with_identity(identity);
        let chunks = builder.register::<Chunks>();
        let votes = builder.register::<Votes>();
        let mut running = builder.start().unwrap();
        let chunks = running.take(chunks);
        let votes = running.take(votes);
        (chunks, votes, running)
    };
    let ((a_chunks, mut a_chunk_events), (a_votes, _), a_running) = start(a, &[]);
    let ((_, mut b_chunk_events), (_, _), b_running) = start(b, &a_running.listen_addrs);
    let peer_b = b_running.peer_id;
    loop {
        if let Some(AppEvent::NewPeer(_)) = a_chunk_events.next().await {
            break;
        }
    }
    tokio::spawn(async move {
        while let Some(event) = b_chunk_events.next().await {
            if let AppEvent::RpcRequest { responder, .. } = event {
                let response = BlockRetrievalResponse {
                    status: Status::Ok.into(),
                    blocks: vec![block_of(16 << 20)],
                };
                responder.respond(response).unwrap();
            }
        }
    });

    // A 16 MiB response: over the stack's limit, within the application's.
    let response = a_chunks
        .request(
            peer_b,
            &BlockRetrievalRequest {
                from_height: 1,
                max_blocks: 1,
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(response.blocks[0].id.len(), 16 << 20);

    // A 2 KiB vote: within the stack's limit, over the application's.
    let vote = ConsensusMsg {
        message: Some(consensus_msg::Message::Proposal(Proposal {
            block: Some(block_of(2048)),
        })),
    };
    match a_votes.send_to(peer_b, &vote) {
        Err(SendError::TooLarge { max, .. }) => assert_eq!(max, 1024),
        other => panic!("a vote over its limit: {other:?}"),
    }
    a_running.shutdown.shutdown().await;
    b_running.shutdown.shutdown().await;
}
