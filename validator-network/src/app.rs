//! The applications this crate types: which protocols each uses and which messages travel
//! on them.

use std::fmt;

use network::{ProtocolId, ProtocolKind};
use proto::Message;
use proto::consensus::{BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg};
use proto::mempool::{BatchAck, TransactionBatch};

/// Proposals, votes and sync info: one long-lived substream per peer. Version 2:
/// DirectSend acknowledgements travel back on the substream (docs/WIRE.md); version 1
/// had none.
pub const CONSENSUS_DIRECT_SEND: ProtocolId = ProtocolId::new("/consensus/direct-send/2");
/// Block retrieval: one substream per request.
/// Version 2: a response over the payload limit is answered with the failure code
/// `TOO_LARGE` (docs/WIRE.md).
pub const CONSENSUS_RPC: ProtocolId = ProtocolId::new("/consensus/rpc/2");
/// Transaction batches (requests) and their acks (responses).
/// Version 2, as [`CONSENSUS_RPC`].
pub const MEMPOOL_RPC: ProtocolId = ProtocolId::new("/mempool/rpc/2");

/// An application of the validator network: the message types of its protocols.
///
/// Implemented by the marker types [`Consensus`] and [`Mempool`]; it is what lets
/// [`Event`](crate::Event), [`Sender`](crate::Sender) and [`Events`](crate::Events) name one
/// generic parameter for all of an application's types.
pub trait Application: fmt::Debug + Send + Sync + 'static {
    /// The application's name, used in metric labels and logs.
    const NAME: &'static str;
    /// The protocol of one-way messages, if the application sends any.
    const DIRECT_SEND: Option<ProtocolId>;
    /// The protocol of requests and responses, if the application makes any.
    const RPC: Option<ProtocolId>;
    /// A one-way message.
    type Message: Message + Default + fmt::Debug + Send + 'static;
    /// An RPC request.
    type Request: Message + Default + fmt::Debug + Send + 'static;
    /// An RPC response.
    type Response: Message + Default + fmt::Debug + Send + 'static;

    /// The protocols to register with the network.
    fn protocols() -> Vec<(ProtocolId, ProtocolKind)> {
        let mut protocols = Vec::new();
        if let Some(p) = Self::DIRECT_SEND {
            protocols.push((p, ProtocolKind::DirectSend));
        }
        if let Some(p) = Self::RPC {
            protocols.push((p, ProtocolKind::Rpc));
        }
        protocols
    }
}

/// The consensus application: [`ConsensusMsg`] over DirectSend, block retrieval over RPC.
#[derive(Debug, Clone, Copy)]
pub enum Consensus {}

impl Application for Consensus {
    const NAME: &'static str = "consensus";
    const DIRECT_SEND: Option<ProtocolId> = Some(CONSENSUS_DIRECT_SEND);
    const RPC: Option<ProtocolId> = Some(CONSENSUS_RPC);
    type Message = ConsensusMsg;
    type Request = BlockRetrievalRequest;
    type Response = BlockRetrievalResponse;
}

/// The mempool application: a [`TransactionBatch`] is an RPC answered by a [`BatchAck`];
/// it sends no one-way messages.
#[derive(Debug, Clone, Copy)]
pub enum Mempool {}

impl Application for Mempool {
    const NAME: &'static str = "mempool";
    const DIRECT_SEND: Option<ProtocolId> = None;
    const RPC: Option<ProtocolId> = Some(MEMPOOL_RPC);
    type Message = ();
    type Request = TransactionBatch;
    type Response = BatchAck;
}
