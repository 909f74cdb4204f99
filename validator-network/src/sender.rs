//! What an application sends with: a typed [`Sender`].

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use netcore::PeerId;
use network::{Misbehaviour, NetworkSender, ProtocolId, RpcError, SendError};
use noise::TrustedPeers;
use proto::DecodeError;

use crate::app::{Application, Payload};
use crate::compression::CompressionError;
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
    /// The remote's compressed response did not decompress within the message limit.
    #[error("response: {0}")]
    Decompress(#[from] CompressionError),
}

/// Application `A`'s handle to the network: cheap to clone, usable from any task.
///
/// [`send_to`](Sender::send_to) and [`broadcast`](Sender::broadcast) take `A`'s
/// one-way message and [`request`](Sender::request) its request: for a kind `A` does
/// not use, the type is [`Never`](crate::Never) and the method cannot be called.
pub struct Sender<A: Application> {
    inner: NetworkSender,
    metrics: Metrics,
    /// The validators: the trusted set, which follows epoch changes; `None` when none
    /// were configured: then every connected peer counts as one.
    validators: Option<TrustedPeers>,
    /// The largest payload, decompressed.
    max_message_size: usize,
    _app: PhantomData<fn() -> A>,
}

impl<A: Application> Clone for Sender<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            metrics: self.metrics.clone(),
            validators: self.validators.clone(),
            max_message_size: self.max_message_size,
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
        validators: Option<TrustedPeers>,
        max_message_size: usize,
    ) -> Self {
        Self {
            inner,
            metrics,
            validators,
            max_message_size,
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

    /// Reports that `peer` misbehaved at `A`'s level (e.g. answered blocks that do not
    /// chain): its reputation drops, and past the ban threshold it is disconnected and
    /// refused for a while. Never waits.
    pub fn report(&self, peer: PeerId, misbehaviour: Misbehaviour) {
        self.inner.report(peer, misbehaviour);
    }

    /// Queues `msg` for `peer` on `A`'s one-way protocol. Messages to one peer arrive
    /// in order; when that peer's queue is full the message is dropped, counted, and
    /// [`SendError::QueueFull`] returned.
    pub fn send_to(&self, peer: PeerId, msg: &A::Message) -> Result<(), SendError> {
        let bytes = self.encode(msg.to_bytes())?;
        self.inner.send_to(peer, direct_send_protocol::<A>(), bytes)
    }

    /// Queues `msg` for every connected validator (encoding it once); returns those it
    /// could not be queued for. The validators are the trusted set of the current
    /// epoch (in open mode other peers may be connected too; they get nothing); with
    /// none configured, every connected peer.
    pub fn broadcast(&self, msg: &A::Message) -> Vec<(PeerId, SendError)> {
        let protocol = direct_send_protocol::<A>();
        let bytes = match self.encode(msg.to_bytes()) {
            Ok(bytes) => bytes,
            Err(TooLarge { len, max }) => {
                return vec![(self.local_peer_id(), SendError::TooLarge { len, max })];
            }
        };
        let peers = self
            .connected_peers()
            .into_iter()
            .filter(|peer| self.validators.as_ref().is_none_or(|v| v.contains(peer)));
        self.inner.send_to_many(peers, protocol, bytes)
    }

    /// Sends `msg` to every connected validator as [`broadcast`](Self::broadcast)
    /// does, but nearest first and a few copies at a time
    /// (`NetworkSender::send_nearest_first`): for a large message, such as a block
    /// proposal, so that the nearest validators (a quorum sooner) have it after about
    /// their share of the uplink's time rather than all at the end. Done once every
    /// copy went to its socket; returns those it was not sent to.
    pub async fn broadcast_nearest_first(&self, msg: &A::Message) -> Vec<(PeerId, SendError)> {
        let protocol = direct_send_protocol::<A>();
        let bytes = match self.encode(msg.to_bytes()) {
            Ok(bytes) => bytes,
            Err(TooLarge { len, max }) => {
                return vec![(self.local_peer_id(), SendError::TooLarge { len, max })];
            }
        };
        let peers: Vec<PeerId> = self
            .connected_peers()
            .into_iter()
            .filter(|peer| self.validators.as_ref().is_none_or(|v| v.contains(peer)))
            .collect();
        self.inner.send_nearest_first(&peers, protocol, bytes).await
    }

    /// Sends `request` to `peer` on `A`'s request-response protocol and waits for the
    /// typed response, at most `timeout`. Dropping the future cancels the request. The
    /// requests in flight to one peer are bounded by the network's outbound RPC limit
    /// (past it this fails at once with [`RpcError::TooManyRequests`]).
    pub async fn request(
        &self,
        peer: PeerId,
        request: &A::Request,
        timeout: Duration,
    ) -> Result<A::Response, RequestError> {
        let Some(protocol) = A::RPC else {
            unreachable!(
                "a request of {} exists only if it has an RPC protocol",
                A::NAME
            )
        };
        let request = self
            .encode(request.to_bytes())
            .map_err(|TooLarge { len, max }| RpcError::TooLarge { len, max })?;
        let response = self.inner.rpc(peer, protocol, request, timeout).await?;
        let response = A::COMPRESSION
            .decompress(response, self.max_message_size)
            .inspect_err(|_| self.metrics.decode_failure(A::NAME, "response"))?;
        A::Response::from_bytes(response).map_err(|e| {
            self.metrics.decode_failure(A::NAME, "response");
            RequestError::Decode(e)
        })
    }
}

/// A payload over the message limit, before compression.
struct TooLarge {
    len: usize,
    max: usize,
}

impl From<TooLarge> for SendError {
    fn from(TooLarge { len, max }: TooLarge) -> Self {
        SendError::TooLarge { len, max }
    }
}

impl<A: Application> Sender<A> {
    /// `encoded` as it travels: checked against the message limit as the application
    /// sees it (before compression), then compressed if `A` compresses.
    fn encode(&self, encoded: Bytes) -> Result<Bytes, TooLarge> {
        if encoded.len() > self.max_message_size {
            return Err(TooLarge {
                len: encoded.len(),
                max: self.max_message_size,
            });
        }
        Ok(A::COMPRESSION.compress(encoded))
    }
}

/// `A`'s one-way protocol, called with one of its messages in hand. Registration checks
/// at compile time that `A::Message` is [`Never`](crate::Never) exactly when
/// `A::DIRECT_SEND` is `None`, and no `Never` exists: the protocol is always there.
fn direct_send_protocol<A: Application>() -> ProtocolId {
    let Some(protocol) = A::DIRECT_SEND else {
        unreachable!(
            "a message of {} exists only if it has a one-way protocol",
            A::NAME
        )
    };
    protocol
}
