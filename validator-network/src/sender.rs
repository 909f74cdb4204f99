//! What an application sends with: a typed [`Sender`].

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netcore::PeerId;
use network::{NetworkSender, ProtocolId, RpcError, SendError};
use proto::consensus::{BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg};
use proto::mempool::{BatchAck, TransactionBatch};
use proto::{DecodeError, Message};

use crate::app::{
    Application, CONSENSUS_DIRECT_SEND, CONSENSUS_RPC, Consensus, MEMPOOL_RPC, Mempool,
};
use crate::metrics::Metrics;

/// Why a typed request got no typed response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The RPC itself failed (timeout, disconnection, refusal, remote failure...).
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The remote answered with bytes that are not a response; counted and dropped.
    #[error("undecodable response: {0}")]
    Decode(#[from] DecodeError),
}

/// Application `A`'s handle to the network: cheap to clone, usable from any task.
///
/// The application-specific operations are methods of [`ConsensusNetworkSender`] and
/// [`MempoolNetworkSender`].
pub struct Sender<A: Application> {
    inner: NetworkSender,
    metrics: Metrics,
    /// The validators (the configured trusted peers), or `None` when none are
    /// configured: then every connected peer counts as one.
    validators: Option<Arc<HashSet<PeerId>>>,
    _app: PhantomData<fn() -> A>,
}

/// The consensus application's sender: [`send_to`](Sender::send_to),
/// [`broadcast`](Sender::broadcast), [`request_block`](Sender::request_block).
pub type ConsensusNetworkSender = Sender<Consensus>;
/// The mempool application's sender: [`send_batch`](Sender::send_batch).
pub type MempoolNetworkSender = Sender<Mempool>;

impl<A: Application> Clone for Sender<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            metrics: self.metrics.clone(),
            validators: self.validators.clone(),
            _app: PhantomData,
        }
    }
}

impl<A: Application> fmt::Debug for Sender<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("app", &A::NAME)
            .field("local_peer_id", &self.inner.local_peer_id())
            .finish_non_exhaustive()
    }
}

impl<A: Application> Sender<A> {
    pub(crate) fn new(
        inner: NetworkSender,
        metrics: Metrics,
        validators: Option<Arc<HashSet<PeerId>>>,
    ) -> Self {
        Self {
            inner,
            metrics,
            validators,
            _app: PhantomData,
        }
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.local_peer_id()
    }

    /// The peers connected now, in no particular order.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.inner
            .connected_peers()
            .into_iter()
            .map(|meta| meta.peer_id)
            .collect()
    }

    /// Whether `peer` is connected.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.inner.is_connected(peer)
    }

    fn send(
        &self,
        protocol: ProtocolId,
        peer: PeerId,
        msg: &impl Message,
    ) -> Result<(), SendError> {
        self.inner
            .send_to(peer, protocol, Bytes::from(msg.encode_to_vec()))
    }

    fn broadcast_on(&self, protocol: ProtocolId, msg: &impl Message) -> Vec<(PeerId, SendError)> {
        let bytes = Bytes::from(msg.encode_to_vec());
        let peers = self
            .connected_peers()
            .into_iter()
            .filter(|peer| self.validators.as_ref().is_none_or(|v| v.contains(peer)));
        self.inner.send_to_many(peers, protocol, bytes)
    }

    async fn request<R: Message + Default>(
        &self,
        protocol: ProtocolId,
        peer: PeerId,
        request: &impl Message,
        timeout: Duration,
    ) -> Result<R, RequestError> {
        let response = self
            .inner
            .rpc(
                peer,
                protocol,
                Bytes::from(request.encode_to_vec()),
                timeout,
            )
            .await?;
        R::decode(response).map_err(|e| {
            self.metrics.decode_failure(A::NAME, "response");
            RequestError::Decode(e)
        })
    }
}

impl Sender<Consensus> {
    /// Queues `msg` for `peer`. Messages to one peer arrive in order; when that peer's
    /// queue is full the message is dropped, counted, and [`SendError::QueueFull`]
    /// returned.
    pub fn send_to(&self, peer: PeerId, msg: &ConsensusMsg) -> Result<(), SendError> {
        self.send(CONSENSUS_DIRECT_SEND, peer, msg)
    }

    /// Queues `msg` for every connected validator (encoding it once); returns those it
    /// could not be queued for. The validators are the configured trusted peers (in
    /// open mode other peers may be connected too; they get nothing); with none
    /// configured, every connected peer.
    pub fn broadcast(&self, msg: &ConsensusMsg) -> Vec<(PeerId, SendError)> {
        self.broadcast_on(CONSENSUS_DIRECT_SEND, msg)
    }

    /// Asks `peer` for committed blocks and waits for its answer, at most `timeout`.
    /// Dropping the future cancels the request.
    pub async fn request_block(
        &self,
        peer: PeerId,
        request: BlockRetrievalRequest,
        timeout: Duration,
    ) -> Result<BlockRetrievalResponse, RequestError> {
        self.request(CONSENSUS_RPC, peer, &request, timeout).await
    }
}

impl Sender<Mempool> {
    /// Sends `batch` to `peer` and waits for its ack, at most `timeout`. The number of
    /// batches in flight to one peer is bounded by the network's outbound RPC limit
    /// (past it this fails at once with [`RpcError::TooManyRequests`]).
    pub async fn send_batch(
        &self,
        peer: PeerId,
        batch: TransactionBatch,
        timeout: Duration,
    ) -> Result<BatchAck, RequestError> {
        self.request(MEMPOOL_RPC, peer, &batch, timeout).await
    }
}
