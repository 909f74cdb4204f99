//! What an application is to the stack: a name, the protocols it speaks, and the
//! message types that travel on them. Applications are defined by their users (the
//! example consensus and mempool define theirs in their own crates) and registered with
//! [`StackBuilder::register`](crate::StackBuilder::register).

use std::fmt;

use bytes::Bytes;
use network::{Priority, ProtocolId, ProtocolKind};

use crate::compression::Compression;
use proto::{DecodeError, Message};

/// A type with no values: the message type of a kind an application does not use. An
/// application without one-way messages has `type Message = Never`, so its
/// [`AppEvent::Message`](crate::AppEvent::Message) cannot be built (a `match` may leave
/// it out) and its sender's `send_to` cannot be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Never {}

/// What travels on an application's protocol: any protobuf message, or [`Never`].
pub trait Payload: Sized + Send + fmt::Debug + 'static {
    /// Whether the type has values: `false` for [`Never`] alone.
    const INHABITED: bool;

    /// The message's bytes on the wire.
    fn to_bytes(&self) -> Bytes;

    /// The message in `bytes`.
    fn from_bytes(bytes: Bytes) -> Result<Self, DecodeError>;
}

impl<T: Message + Default + fmt::Debug + 'static> Payload for T {
    const INHABITED: bool = true;

    fn to_bytes(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }

    fn from_bytes(bytes: Bytes) -> Result<Self, DecodeError> {
        T::decode(bytes)
    }
}

impl Payload for Never {
    const INHABITED: bool = false;

    fn to_bytes(&self) -> Bytes {
        match *self {}
    }

    /// Always an error. Not reached: the stack delivers only what arrives on an
    /// application's registered protocols, and a kind of type `Never` has none.
    fn from_bytes(_: Bytes) -> Result<Self, DecodeError> {
        // prost offers no public constructor of its error: a key announcing a
        // length-delimited field, with no length after it, never decodes.
        match proto::rpc::RpcResponse::decode(&[0x0a][..]) {
            Err(error) => Err(error),
            Ok(_) => unreachable!("a field key without its length does not decode"),
        }
    }
}

/// An application of the stack: its name, the protocols it speaks (each declared here
/// once) and the types that travel on them.
///
/// A one-way protocol carries [`Self::Message`]; a request-response protocol carries
/// [`Self::Request`] answered by [`Self::Response`]. A kind the application does not
/// use has no protocol and the type [`Never`]; registering an application where the
/// two disagree does not compile.
///
/// ```
/// use validator_network::proto::mempool::{BatchAck, TransactionBatch};
/// use validator_network::{Application, Never, ProtocolId};
///
/// /// Transaction batches by RPC, answered by acks; no one-way messages.
/// enum Gossip {}
///
/// impl Application for Gossip {
///     const NAME: &'static str = "gossip";
///     const DIRECT_SEND: Option<ProtocolId> = None;
///     const RPC: Option<ProtocolId> = Some(ProtocolId::new("/gossip/rpc/1"));
///     type Message = Never;
///     type Request = TransactionBatch;
///     type Response = BatchAck;
/// }
/// ```
///
/// An application whose protocols and types disagree is refused when it is registered:
///
/// ```compile_fail
/// use validator_network::proto::consensus::ConsensusMsg;
/// use validator_network::{Application, Never, ProtocolId, StackBuilder, StackConfig};
///
/// /// Declares one-way messages but no protocol to carry them.
/// enum Broken {}
///
/// impl Application for Broken {
///     const NAME: &'static str = "broken";
///     const DIRECT_SEND: Option<ProtocolId> = None;
///     const RPC: Option<ProtocolId> = None;
///     type Message = ConsensusMsg;
///     type Request = Never;
///     type Response = Never;
/// }
///
/// let mut builder = StackBuilder::new(StackConfig::default(), prometheus::Registry::new());
/// let _ = builder.register::<Broken>();
/// ```
pub trait Application: Send + Sync + 'static {
    /// The application's name, used in metric labels and logs.
    const NAME: &'static str;
    /// The protocol of one-way messages; `None` exactly when `Message` is [`Never`].
    const DIRECT_SEND: Option<ProtocolId>;
    /// The protocol of requests and responses; `None` exactly when `Request` and
    /// `Response` are [`Never`].
    const RPC: Option<ProtocolId>;
    /// A one-way message.
    type Message: Payload;
    /// An RPC request.
    type Request: Payload;
    /// An RPC response.
    type Response: Payload;
    /// How its payloads travel: as encoded (the default) or compressed. A change of it
    /// changes what travels on the application's protocols: change their ids with it.
    const COMPRESSION: Compression = Compression::None;
    /// The class its messages, requests and responses are sent in on each connection
    /// ([`Priority`]): consensus is [`Priority::Urgent`], large transfers such as state
    /// sync [`Priority::Bulk`]. Local to this node: it changes nothing on the wire.
    const PRIORITY: Priority = Priority::Normal;
    /// The largest payload of one of its messages or responses (decompressed), or
    /// `None` for the stack's `limits.max_message_size`. A protocol of large transfers
    /// (state sync: tens of MiB) raises it; one of small messages may lower it, so that
    /// a peer cannot make this node buffer more than its messages need. Its requests
    /// are held to the smaller of this and `limits.max_message_size`.
    const MAX_MESSAGE_SIZE: Option<usize> = None;
}

/// The protocols to register for `A`, checked at compile time against its types.
pub(crate) fn protocols<A: Application>() -> Vec<(ProtocolId, ProtocolKind)> {
    const {
        assert!(
            A::DIRECT_SEND.is_some() == <A::Message as Payload>::INHABITED,
            "an application has a DIRECT_SEND protocol exactly when its Message is not Never"
        );
        assert!(
            A::RPC.is_some() == <A::Request as Payload>::INHABITED
                && A::RPC.is_some() == <A::Response as Payload>::INHABITED,
            "an application has an RPC protocol exactly when its Request and Response are not Never"
        );
    }
    let mut protocols = Vec::new();
    if let Some(p) = A::DIRECT_SEND {
        protocols.push((p, ProtocolKind::DirectSend));
    }
    if let Some(p) = A::RPC {
        protocols.push((p, ProtocolKind::Rpc));
    }
    protocols
}
