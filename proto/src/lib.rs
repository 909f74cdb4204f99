//! The protobuf wire messages of the network stack, compiled from `protos/*.proto` by
//! prost-build (with a vendored protoc, so nothing has to be installed).
//!
//! This crate owns the message types only. It does not own framing (each message travels
//! inside a length-delimited frame from `netcore::framing`, which bounds its size before
//! it is decoded), nor the rules about the messages (the `network` crate checks a
//! handshake's chain and network ids). `bytes` fields are `bytes::Bytes`.

/// The connection handshake exchanged right after the Noise handshake.
pub mod handshake {
    #![allow(missing_docs, unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/netstack.handshake.rs"));
}

/// RPC responses: an answer or a failure reported by the remote.
pub mod rpc {
    #![allow(missing_docs, unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/netstack.rpc.rs"));
}

/// DirectSend acknowledgements: how many of a substream's messages the receiver has
/// handed to its application.
pub mod direct_send {
    #![allow(missing_docs, unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/netstack.direct_send.rs"));
}

/// Health checker ping and pong: the pong echoes the ping's nonce.
pub mod health {
    #![allow(missing_docs, unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/netstack.health.rs"));
}

/// Discovery: signed notes of a peer's addresses, newest epoch wins.
pub mod discovery {
    #![allow(missing_docs, unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/netstack.discovery.rs"));
}

/// The example consensus: blocks, proposals, votes, sync info and block retrieval.
pub mod consensus {
    #![allow(missing_docs, unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/netstack.consensus.rs"));
}

/// The example mempool: transaction batches and their acks.
pub mod mempool {
    #![allow(missing_docs, unreachable_pub)]
    include!(concat!(env!("OUT_DIR"), "/netstack.mempool.rs"));
}

pub use prost::{DecodeError, Message};

#[cfg(test)]
mod tests {
    use super::Message;
    use super::handshake::HandshakeMsg;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn handshake_round_trips(
            chain_id in any::<u32>(),
            network_id in ".{0,20}",
            supported_protocols in proptest::collection::vec(".{0,30}", 0..8),
            client_version in ".{0,20}",
        ) {
            let msg = HandshakeMsg { chain_id, network_id, supported_protocols, client_version };
            let bytes = msg.encode_to_vec();
            prop_assert_eq!(HandshakeMsg::decode(&bytes[..]).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = HandshakeMsg::decode(&bytes[..]);
        }
    }
}
