//! Why a configuration cannot be used, naming the field at fault.

use std::path::PathBuf;

use netcore::{AddressError, PeerId, PeerIdError};

/// What is wrong with one field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// It is empty and must not be.
    #[error("must not be empty")]
    Empty,
    /// It is zero and must not be.
    #[error("must be greater than zero")]
    Zero,
    /// It is not an address.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// It is not a peer id.
    #[error(transparent)]
    PeerId(#[from] PeerIdError),
    /// The peer id is not an ed25519 public key, so no Noise key derives from it.
    #[error("not a valid ed25519 public key")]
    NotAKey,
    /// The address must name its peer (`/p2p/<peer id>`).
    #[error("the address must end with /p2p/<peer id>")]
    MissingPeerId,
    /// A listen address must not name a peer.
    #[error("a listen address must not name a peer")]
    UnexpectedPeerId,
    /// The address names another peer than the one it is listed under.
    #[error("the address names peer {found}, not {expected}")]
    PeerIdMismatch {
        /// The peer it is listed under.
        expected: PeerId,
        /// The peer it names.
        found: PeerId,
    },
    /// The value appears twice.
    #[error("listed twice")]
    Duplicate,
    /// Memory and socket addresses are mixed; a node uses one transport.
    #[error("memory and network addresses cannot be mixed")]
    MixedTransports,
    /// It must not be greater than another field.
    #[error("must not be greater than {0}")]
    GreaterThan(&'static str),
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The text is not valid TOML for this configuration (the message names the key).
    #[error("invalid configuration: {0}")]
    Toml(#[from] toml::de::Error),
    /// A field holds an invalid value.
    #[error("{field}: {error}")]
    Invalid {
        /// The field's path, e.g. `trusted_peers[1].addresses[0]`.
        field: String,
        /// What is wrong with it (shown in the message, so not also a `source`).
        error: FieldError,
    },
}

impl ConfigError {
    pub(super) fn invalid(field: impl Into<String>, error: impl Into<FieldError>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            error: error.into(),
        }
    }

    /// The field at fault, for [`ConfigError::Invalid`].
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}
