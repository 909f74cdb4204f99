//! The connection-level building blocks of the network stack.
//!
//! This crate owns:
//! - [`transport`]: the composable [`Transport`](transport::Transport) abstraction, its
//!   combinators (`and_then`, `map`, `with_timeout`, `boxed`), and the base TCP and
//!   in-memory transports;
//! - [`PeerId`] and [`NetworkAddress`], the identity and address types every layer
//!   names peers by;
//! - [`framing`]: length-delimited messages over any byte stream;
//! - [`multiplexing`]: many flow-controlled substreams over one connection (yamux wire format).
//! - [`copy`]: payload copies that stay fast on CPUs where `memcpy` has a slow case;
//! - [`negotiate`]: which protocol a substream speaks (multistream-select 1.0), with
//!   optimistic selection so a request needs no extra round trip.
//!
//! It does not own cryptography (the `noise` crate), wire messages (`proto`), or peers
//! and protocols (`network`); it knows nothing of protobuf.

pub mod address;
pub mod copy;
pub mod framing;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod multiplexing;
pub mod negotiate;
pub mod peer_id;
pub mod transport;

pub use address::{AddressError, NetworkAddress};
pub use peer_id::{PeerId, PeerIdError};
