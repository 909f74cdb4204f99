//! An application defined the way a user defines one, for the tests: consensus
//! messages one way, block retrieval by request.

// Each test file uses part of this module.
#![allow(dead_code)]

use proto::consensus::{BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg};
use validator_network::{Application, Events, ProtocolId, Sender};

/// The test application's one-way protocol.
pub(crate) const CONSENSUS_DIRECT_SEND: ProtocolId =
    ProtocolId::new("/test-consensus/direct-send/1");
/// The test application's request-response protocol.
pub(crate) const CONSENSUS_RPC: ProtocolId = ProtocolId::new("/test-consensus/rpc/1");

/// Consensus messages one way, blocks by request.
#[derive(Debug)]
pub(crate) enum Consensus {}

impl Application for Consensus {
    const NAME: &'static str = "consensus";
    const DIRECT_SEND: Option<ProtocolId> = Some(CONSENSUS_DIRECT_SEND);
    const RPC: Option<ProtocolId> = Some(CONSENSUS_RPC);
    type Message = ConsensusMsg;
    type Request = BlockRetrievalRequest;
    type Response = BlockRetrievalResponse;
}

/// The test application's sender.
pub(crate) type ConsensusSender = Sender<Consensus>;
/// The test application's events.
pub(crate) type ConsensusEvents = Events<Consensus>;
