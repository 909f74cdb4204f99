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

    /// The key of `RpcResponse.ok`: field 1, length-delimited.
    const OK_KEY: u8 = (1 << 3) | 2;

    /// The most bytes of [`RpcResponse::ok_head`]: the key and a varint of 10 bytes.
    pub const OK_HEAD_MAX: usize = 11;

    impl RpcResponse {
        /// Encodes the message into `buf` as [`prost::Message::encode`] does, byte for
        /// byte, but copies an answer's payload without cloning it first: prost appends a
        /// `bytes::Bytes` field by cloning it, and cloning a `Bytes` made from a `Vec`
        /// (what most answers are) allocates. A server encodes one per request.
        ///
        /// # Errors
        /// [`prost::EncodeError`] if `buf` has less room than the encoded length.
        pub fn encode_into(&self, buf: &mut impl bytes::BufMut) -> Result<(), prost::EncodeError> {
            let Some(rpc_response::Result::Ok(data)) = &self.result else {
                return prost::Message::encode(self, buf);
            };
            if buf.remaining_mut() < prost::Message::encoded_len(self) {
                // prost refuses it the same way, before writing anything.
                return prost::Message::encode(self, buf);
            }
            let (head, len) = Self::ok_head(data.len());
            buf.put_slice(&head[..len]);
            buf.put_slice(data);
            Ok(())
        }

        /// What goes in front of an answer's payload of `payload_len` bytes: `ok`'s key
        /// and length, the first `len` bytes of the array returned as `(array, len)`.
        /// Followed by the payload, it is the message's encoding, so a large payload
        /// can be written from where it is, without a copy.
        pub fn ok_head(payload_len: usize) -> ([u8; OK_HEAD_MAX], usize) {
            let mut head = [0u8; OK_HEAD_MAX];
            head[0] = OK_KEY;
            let room = {
                let mut rest = &mut head[1..];
                // Ten bytes hold any varint, so this cannot fail.
                let _ = prost::encode_length_delimiter(payload_len, &mut rest);
                rest.len()
            };
            (head, OK_HEAD_MAX - room)
        }
    }
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

    #[test]
    fn an_answer_is_encoded_as_prost_encodes_it() {
        use super::rpc::{RpcFailure, RpcResponse, rpc_response};
        // Lengths on each side of the varint's one-, two- and three-byte forms.
        for len in [0, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let response = RpcResponse {
                result: Some(rpc_response::Result::Ok(vec![7u8; len].into())),
            };
            let mut ours = Vec::new();
            response.encode_into(&mut ours).unwrap();
            assert_eq!(ours, response.encode_to_vec(), "a payload of {len} bytes");
            // The head alone, then the payload: the same bytes.
            let (head, n) = RpcResponse::ok_head(len);
            let mut split = head[..n].to_vec();
            split.extend(vec![7u8; len]);
            assert_eq!(split, ours, "a head and a payload of {len} bytes");
        }
        let failure = RpcResponse {
            result: Some(rpc_response::Result::Failure(RpcFailure {
                code: 4,
                message: "too large".into(),
                size: 9_000_000,
                limit: 8_388_608,
            })),
        };
        let mut ours = Vec::new();
        failure.encode_into(&mut ours).unwrap();
        assert_eq!(ours, failure.encode_to_vec());
        let empty = RpcResponse { result: None };
        let mut ours = Vec::new();
        empty.encode_into(&mut ours).unwrap();
        assert_eq!(ours, empty.encode_to_vec());
    }

    #[test]
    fn an_answer_that_does_not_fit_is_refused_untouched() {
        use super::rpc::{RpcResponse, rpc_response};
        let response = RpcResponse {
            result: Some(rpc_response::Result::Ok(vec![1u8; 100].into())),
        };
        let mut room = [0u8; 101];
        let mut dst = &mut room[..];
        assert!(response.encode_into(&mut dst).is_err());
        assert_eq!(room, [0u8; 101], "nothing was written");
    }

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
        fn any_response_is_encoded_as_prost_encodes_it(
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
            code in any::<i32>(),
            message in ".{0,40}",
            size in any::<u64>(),
            limit in any::<u64>(),
            which in 0u8..3,
        ) {
            use super::rpc::{RpcFailure, RpcResponse, rpc_response};
            let result = match which {
                0 => Some(rpc_response::Result::Ok(payload.into())),
                1 => Some(rpc_response::Result::Failure(RpcFailure { code, message, size, limit })),
                _ => None,
            };
            let response = RpcResponse { result };
            let mut ours = Vec::new();
            response.encode_into(&mut ours).unwrap();
            prop_assert_eq!(ours, response.encode_to_vec());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = HandshakeMsg::decode(&bytes[..]);
        }
    }
}
