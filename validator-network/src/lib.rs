//! The application-facing stack: any application's typed API over the `network` crate,
//! and the builder that turns one configuration into a running stack.
//!
//! This crate owns:
//! - what an **application** is ([`Application`]): a name, its protocols (a one-way
//!   protocol, a request-response protocol, or both) and the protobuf types that travel
//!   on them. Applications are defined by their users, in their own crates (the
//!   example consensus and mempool define theirs), and registered with
//!   [`StackBuilder::register`];
//! - the **typed handles** of each application: a [`Sender`] (`send_to`, `broadcast`,
//!   `broadcast_nearest_first`, `request`) and an [`Events`] stream of [`AppEvent`]s
//!   (`Message`, `RpcRequest` with a typed [`Responder`], `NewPeer`, `LostPeer`). A
//!   kind an application does not use has the type [`Never`]: its event cannot occur
//!   and its method cannot be called.
//!   Inbound data that does not decode is counted and dropped, never a panic;
//! - the node's network **configuration** ([`StackConfig`], TOML), validated into typed
//!   errors that name the field;
//! - the [`StackBuilder`]: config to a running stack (TCP or memory transport, Noise,
//!   the peer manager, the applications, and the connectivity manager, health checker
//!   and discovery), with a [`ShutdownHandle`] that ends it all.
//!
//! It does not own connections, protocols or the keeping of peers (`network`), nor the
//! wire format of the messages (`proto`), nor any application (the `toy-consensus` and
//! `toy-mempool` examples define theirs).
//!
//! A user of these types writes no `poll` function and names one generic parameter at
//! most:
//!
//! ```
//! use futures::StreamExt;
//! use validator_network::proto::consensus::{BlockRetrievalRequest, BlockRetrievalResponse};
//! use validator_network::proto::consensus::ConsensusMsg;
//! use validator_network::{AppEvent, Application, Events, ProtocolId};
//!
//! /// Votes and proposals one way, blocks by request.
//! enum Consensus {}
//!
//! impl Application for Consensus {
//!     const NAME: &'static str = "consensus";
//!     const DIRECT_SEND: Option<ProtocolId> = Some(ProtocolId::new("/consensus/direct-send/2"));
//!     const RPC: Option<ProtocolId> = Some(ProtocolId::new("/consensus/rpc/2"));
//!     type Message = ConsensusMsg;
//!     type Request = BlockRetrievalRequest;
//!     type Response = BlockRetrievalResponse;
//! }
//!
//! async fn serve(mut events: Events<Consensus>) {
//!     while let Some(event) = events.next().await {
//!         match event {
//!             AppEvent::Message { peer_id, msg } => println!("{peer_id}: {msg:?}"),
//!             AppEvent::RpcRequest { request, responder, .. } => {
//!                 let _ = request;
//!                 responder.fail("no blocks here");
//!             }
//!             AppEvent::NewPeer(peer) => println!("up: {peer}"),
//!             AppEvent::LostPeer { peer_id, reason } => println!("down: {peer_id} ({reason})"),
//!         }
//!     }
//! }
//! ```

mod app;
mod builder;
mod compression;
mod config;
mod epoch;
mod event;
mod metrics;
mod sender;

pub use app::{Application, Never, Payload};
pub use builder::{Registration, RunningStack, ShutdownHandle, StackBuilder, StartError};
pub use compression::{Compression, CompressionError};
pub use config::{
    ConfigError, FieldError, Intervals, Limits, Mode, PUBLIC_NETWORK_ID, Socket, StackConfig,
    TrustedPeer,
};
pub use epoch::{EpochError, EpochHandle, ValidatorInfo};
pub use event::{AppEvent, Events, Responder};
pub use sender::{RequestError, Sender};

pub use netcore::{NetworkAddress, PeerId};
pub use network::{
    DisconnectReason, InvalidResponse, Misbehaviour, Priority, ProtocolId, RemoteFailure,
    ResponseTooLarge, RpcError, SendError,
};
pub use noise::Identity;
pub use prometheus::Registry;
pub use proto;
