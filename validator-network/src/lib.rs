//! The validator network: typed consensus and mempool APIs over the `network` crate,
//! and the builder that turns one configuration into a running stack.
//!
//! This crate owns:
//! - the **applications** ([`Consensus`], [`Mempool`]): their protocol ids and the
//!   protobuf messages (from `proto`) that travel on them;
//! - the **typed handles**: a [`Sender`] per application ([`ConsensusNetworkSender`]:
//!   `send_to`, `broadcast`, `request_block`; [`MempoolNetworkSender`]: `send_batch`) and
//!   an [`Events`] stream of [`Event`]s (`Message`, `RpcRequest` with a typed
//!   [`Responder`], `NewPeer`, `LostPeer`). Inbound data that does not decode is counted
//!   and dropped, never a panic;
//! - the node's network **configuration** ([`NetworkConfig`], TOML), validated into typed
//!   errors that name the field;
//! - the [`NetworkBuilder`]: config to a running stack (TCP or memory transport, Noise,
//!   the peer manager, the applications, and the connectivity manager, health checker
//!   and discovery), with a [`ShutdownHandle`] that ends it all.
//!
//! It does not own connections, protocols or the keeping of peers (`network`), nor the
//! wire format of the messages (`proto`), nor what consensus or mempool do with them
//! (the `toy-consensus` and `toy-mempool` examples).
//!
//! A user of these types writes no `poll` function and names one generic parameter at
//! most:
//!
//! ```no_run
//! use futures::StreamExt;
//! use validator_network::{ConsensusNetworkEvents, Event};
//!
//! async fn serve(mut events: ConsensusNetworkEvents) {
//!     while let Some(event) = events.next().await {
//!         match event {
//!             Event::Message { peer_id, msg } => println!("{peer_id}: {msg:?}"),
//!             Event::RpcRequest { request, responder, .. } => {
//!                 let _ = request;
//!                 responder.fail("no blocks here");
//!             }
//!             Event::NewPeer(peer) => println!("up: {peer}"),
//!             Event::LostPeer { peer_id, reason } => println!("down: {peer_id} ({reason})"),
//!         }
//!     }
//! }
//! ```

mod app;
mod builder;
mod config;
mod event;
mod metrics;
mod sender;

pub use app::{Application, CONSENSUS_DIRECT_SEND, CONSENSUS_RPC, Consensus, MEMPOOL_RPC, Mempool};
pub use builder::{
    BuildError, ConsensusNetwork, MempoolNetwork, NetworkBuilder, RunningNetwork, ShutdownHandle,
};
pub use config::{ConfigError, FieldError, Intervals, Limits, Mode, NetworkConfig, TrustedPeer};
pub use event::{Event, Events, Responder};
pub use sender::{ConsensusNetworkSender, MempoolNetworkSender, RequestError, Sender};

/// The consensus application's event stream.
pub type ConsensusNetworkEvents = Events<Consensus>;
/// The mempool application's event stream.
pub type MempoolNetworkEvents = Events<Mempool>;

pub use netcore::{NetworkAddress, PeerId};
pub use network::{
    DisconnectReason, InvalidResponse, RemoteFailure, ResponseTooLarge, RpcError, SendError,
};
pub use noise::Identity;
pub use prometheus::Registry;
pub use proto;
