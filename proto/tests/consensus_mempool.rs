//! The consensus and mempool messages: they round-trip, and arbitrary bytes never panic
//! the decoder.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use bytes::Bytes;
use proptest::prelude::*;
use proto::Message;
use proto::consensus::{
    Block, BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg, Proposal, SyncInfo, Vote,
    consensus_msg,
};
use proto::mempool::{BatchAck, Transaction, TransactionBatch};

fn block() -> impl Strategy<Value = Block> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..48),
        proptest::collection::vec(any::<u64>(), 0..16),
    )
        .prop_map(|(height, round, id, transactions)| Block {
            height,
            round,
            id: Bytes::from(id.clone()),
            parent_id: Bytes::from(id),
            proposer: Bytes::from_static(&[7; 32]),
            transactions,
        })
}

fn consensus_msg() -> impl Strategy<Value = ConsensusMsg> {
    prop_oneof![
        block().prop_map(|b| consensus_msg::Message::Proposal(Proposal { block: Some(b) })),
        (any::<u64>(), any::<u64>()).prop_map(|(height, round)| {
            consensus_msg::Message::Vote(Vote {
                block_id: Bytes::from_static(b"id"),
                height,
                round,
            })
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(committed_height, round)| {
            consensus_msg::Message::SyncInfo(SyncInfo {
                committed_height,
                committed_id: Bytes::new(),
                round,
            })
        }),
    ]
    .prop_map(|m| ConsensusMsg { message: Some(m) })
}

proptest! {
    #[test]
    fn consensus_messages_round_trip(msg in consensus_msg()) {
        prop_assert_eq!(ConsensusMsg::decode(msg.encode_to_vec().as_slice()).unwrap(), msg);
    }

    #[test]
    fn block_retrieval_round_trips(blocks in proptest::collection::vec(block(), 0..4), from in any::<u64>()) {
        let request = BlockRetrievalRequest { from_height: from, max_blocks: 4 };
        let response = BlockRetrievalResponse { status: 0, blocks };
        prop_assert_eq!(BlockRetrievalRequest::decode(request.encode_to_vec().as_slice()).unwrap(), request);
        prop_assert_eq!(BlockRetrievalResponse::decode(response.encode_to_vec().as_slice()).unwrap(), response);
    }

    #[test]
    fn transaction_batches_round_trip(ids in proptest::collection::vec(any::<u64>(), 0..32), batch_id in any::<u64>()) {
        let batch = TransactionBatch {
            batch_id,
            transactions: ids.into_iter().map(|id| Transaction { id, payload: Bytes::from_static(b"tx") }).collect(),
        };
        let ack = BatchAck { batch_id, accepted: 1, duplicates: 2, dropped: 3 };
        prop_assert_eq!(TransactionBatch::decode(batch.encode_to_vec().as_slice()).unwrap(), batch);
        prop_assert_eq!(BatchAck::decode(ack.encode_to_vec().as_slice()).unwrap(), ack);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = ConsensusMsg::decode(bytes.as_slice());
        let _ = BlockRetrievalRequest::decode(bytes.as_slice());
        let _ = BlockRetrievalResponse::decode(bytes.as_slice());
        let _ = TransactionBatch::decode(bytes.as_slice());
        let _ = BatchAck::decode(bytes.as_slice());
    }
}
