//! The fuzz targets' entry functions: one `fn(&[u8])` per decoder or state machine that
//! reads bytes from the network.
//!
//! This crate owns the harness logic only: the fuzz targets in `fuzz/targets/fuzz_targets/` are
//! one line each, calling these functions, and the corpus replay test
//! (`tests/replay.rs`) runs every committed seed under `fuzz/corpus/<target>/` through
//! the same functions, so `cargo test --workspace` covers every target. It does not own
//! the code under test: the private sans-IO cores are reached through
//! `netcore::fuzzing` (the `fuzzing` feature), everything else through public APIs.
//!
//! Every entry must return, never panic, for any input; a panic (in the entry or in a
//! task it spawned) is a bug in the code under test.

mod live_peer;
mod noise_targets;
mod pipe;

use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use netcore::NetworkAddress;
use netcore::framing::MessageCodec;
use prost::Message;
use tokio_util::codec::{Decoder, Encoder};

pub use live_peer::{LIVE_DIRECT, LIVE_RPC, live_peer};
pub use netcore::fuzzing::{mux_frames, mux_session, negotiate_dialer, negotiate_listener};
pub use noise_targets::{
    FUZZ_CLOCK_MS, INITIATOR_SECRET, RESPONDER_SECRET, fuzz_upgrader, noise_initiator,
    noise_responder, noise_stream, responder_peer_id,
};

/// A fuzz target: its name (the directory of its corpus) and its entry function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `fuzz/run.sh` runs them. The names match the files in
/// `fuzz/targets/fuzz_targets/` and the directories in `fuzz/corpus/`.
pub const TARGETS: &[Target] = &[
    ("address", address),
    ("message_codec", message_codec),
    ("proto_messages", proto_messages),
    ("noise_responder", noise_responder),
    ("noise_initiator", noise_initiator),
    ("noise_stream", noise_stream),
    ("mux_frames", mux_frames),
    ("mux_session", mux_session),
    ("negotiate_listener", negotiate_listener),
    ("negotiate_dialer", negotiate_dialer),
    ("live_peer", live_peer),
];

/// The largest message the fuzzed codec accepts: small, so the limit is reached often.
const FUZZ_MAX_MESSAGE: usize = 4096;

/// Address parsing: whatever parses prints back to an address that parses to the same
/// value.
pub fn address(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(addr) = NetworkAddress::from_str(text) else {
        return;
    };
    let printed = addr.to_string();
    match NetworkAddress::from_str(&printed) {
        Ok(again) => assert_eq!(again, addr, "{printed} parsed to another address"),
        Err(e) => panic!("the printed address {printed} does not parse: {e}"),
    }
}

/// The length-prefixed message codec, fed the stream in pieces whose sizes the first
/// byte chooses: every message it yields is within the limit and re-encodes to the bytes
/// it was decoded from.
pub fn message_codec(data: &[u8]) {
    let Some((&piece, mut rest)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1);
    let mut codec = MessageCodec::new(FUZZ_MAX_MESSAGE);
    let mut buf = BytesMut::new();
    while !rest.is_empty() {
        let (head, tail) = rest.split_at(piece.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(head);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(msg)) => check_message(&mut codec, msg),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    while let Ok(Some(msg)) = codec.decode_eof(&mut buf) {
        check_message(&mut codec, msg);
    }
}

fn check_message(codec: &mut MessageCodec, msg: Bytes) {
    assert!(msg.len() <= FUZZ_MAX_MESSAGE, "a message past the limit");
    let mut out = BytesMut::new();
    if let Err(e) = codec.encode(msg.clone(), &mut out) {
        panic!("a decoded message does not encode: {e}");
    }
    assert_eq!(&out[4..], &msg[..], "re-encoding changed the message");
}

/// Decodes `data` as `M`; what decodes survives an encode and decode unchanged.
fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(msg) = M::decode(data) else {
        return;
    };
    let encoded = msg.encode_to_vec();
    match M::decode(encoded.as_slice()) {
        Ok(again) => assert_eq!(again, msg, "an encode-decode roundtrip changed the message"),
        Err(e) => panic!("a re-encoded message does not decode: {e}"),
    }
}

/// Every protobuf message of `proto`: the first byte picks the message type, the rest
/// is decoded as it.
pub fn proto_messages(data: &[u8]) {
    use proto::{consensus, direct_send, discovery, handshake, health, mempool, rpc};
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 16 {
        0 => roundtrip::<handshake::HandshakeMsg>(body),
        1 => roundtrip::<rpc::RpcResponse>(body),
        2 => roundtrip::<rpc::RpcFailure>(body),
        3 => roundtrip::<health::Ping>(body),
        4 => roundtrip::<health::Pong>(body),
        5 => roundtrip::<discovery::Note>(body),
        6 => roundtrip::<discovery::Notes>(body),
        7 => roundtrip::<consensus::Block>(body),
        8 => roundtrip::<consensus::Proposal>(body),
        9 => roundtrip::<consensus::Vote>(body),
        10 => roundtrip::<consensus::SyncInfo>(body),
        11 => roundtrip::<consensus::ConsensusMsg>(body),
        12 => roundtrip::<consensus::BlockRetrievalRequest>(body),
        13 => roundtrip::<consensus::BlockRetrievalResponse>(body),
        14 => roundtrip::<mempool::TransactionBatch>(body),
        _ => {
            roundtrip::<mempool::Transaction>(body);
            roundtrip::<mempool::BatchAck>(body);
            roundtrip::<direct_send::DirectSendAck>(body);
        }
    }
}
