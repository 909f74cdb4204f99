//! Peers, connections and messaging over authenticated, multiplexed connections.
//!
//! This crate owns:
//! - the **PeerManager** ([`peer_manager`]): listens, dials, upgrades each connection
//!   (Noise IK, the handshake message, the multiplexer), keeps at most one connection
//!   per peer, and tells applications `NewPeer` / `LostPeer`;
//! - the **connection handshake** ([`handshake`]): chain id, network id, protocols,
//!   client version, checked by both sides;
//! - **RPC** and **DirectSend** over per-protocol substreams, with per-peer limits;
//! - **fair inbound delivery** ([`channel`]): bounded per-(peer, protocol) queues served
//!   round-robin, so one flooding peer cannot delay another;
//! - the application interface ([`NetworkSender`], [`NetworkEvents`], [`Event`]) and the
//!   [`NetworkBuilder`] that starts it all;
//! - **defences against hostile peers**: [`reputation`] (graded penalties, growing bans,
//!   a short cap for trusted validators; banned peers are refused right after Noise)
//!   and [`rate_limit`] (per-peer byte and message token buckets enforced by reading
//!   less);
//! - the node's network **metrics** ([`counters`]) in a per-node prometheus registry;
//! - three applications on top of the interface, each one task with its own protocols
//!   and metrics: the **HealthChecker** ([`health_checker`]: pings, disconnects the
//!   dead), **Discovery** ([`discovery`]: gossips signed address notes) and the
//!   **ConnectivityManager** ([`connectivity_manager`]: dials every eligible peer with
//!   backoff, drops the ineligible).
//!
//! It does not own sockets, framing, multiplexing or negotiation (`netcore`),
//! cryptography (`noise`), the wire messages (`proto`), nor typed application messages
//! (`validator-network`).
//!
//! Tasks: one peer manager per node; per connection, the multiplexer's driver and one
//! task that times out directly answered RPCs, exports the connection's counters and
//! reports its end. The driver polls each substream the remote opens once as it
//! arrives: an RPC whose request and FIN came together is handed to the application
//! there, without a task, and answered where the application gives its answer; serving
//! that must wait goes on in a substream task of the connection. DirectSend runs one
//! writer task per (peer, protocol) we send on and one reader task per substream the
//! peer opened. docs/ARCHITECTURE.md draws the whole model.

pub mod admission;
pub mod builder;
pub mod channel;
pub mod config;
pub mod connection;
pub mod connectivity_manager;
pub mod counters;
pub mod discovery;
pub mod error;
pub mod handshake;
pub mod health_checker;
pub mod interface;
pub mod peer_manager;
pub mod protocol_id;
pub mod rate_limit;
pub mod refusal_log;
pub mod reputation;
pub mod transport;

mod peer;
mod protocols;
mod reporter;
mod requests;
mod routes;
mod shared;

pub use builder::{AppId, BuildError, Network, NetworkBuilder};
pub use config::NetworkConfig;
pub use error::{
    DialError, DisconnectError, InvalidResponse, RemoteFailure, ResponseTooLarge, RpcError,
    SendError,
};
pub use interface::{
    Event, IN_ORDER_PATIENCE, IN_ORDER_WINDOW, NetworkEvents, NetworkSender, RpcResponder, Sent,
};
pub use netcore::multiplexing::Priority;
pub use peer_manager::{ConnectionId, ConnectionMetadata, DisconnectReason};
pub use protocol_id::{ProtocolId, ProtocolKind};
pub use reputation::Misbehaviour;
