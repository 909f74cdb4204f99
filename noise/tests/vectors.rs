//! Our use of `snow` (protocol names, resolvers, prologue, fixed keys) replays the
//! published cacophony Noise test vectors for the IK pattern, in both suites and with
//! both crypto backends: every handshake and transport ciphertext and the handshake hash.
#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use noise::{CryptoBackend, NoiseProtocol, NoiseSuite};
use serde::Deserialize;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/noise/cacophony-25519-subset.json"
);

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    protocol_name: String,
    init_prologue: String,
    init_static: Option<String>,
    init_ephemeral: String,
    init_remote_static: Option<String>,
    resp_static: Option<String>,
    resp_ephemeral: Option<String>,
    handshake_hash: Option<String>,
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    payload: String,
    ciphertext: String,
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn load() -> Option<File> {
    match std::fs::read_to_string(VECTORS) {
        Ok(text) => Some(serde_json::from_str(&text).unwrap()),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "test vectors missing under CI at {VECTORS}: {e}"
            );
            eprintln!("\n!!! SKIPPED: Noise test vectors not found at {VECTORS}: {e} !!!\n");
            None
        }
    }
}

fn replay(vector: &Vector, suite: NoiseSuite) {
    let prologue = h(&vector.init_prologue);
    let (init_s, init_e, init_rs) = (
        h(vector.init_static.as_ref().unwrap()),
        h(&vector.init_ephemeral),
        h(vector.init_remote_static.as_ref().unwrap()),
    );
    let (resp_s, resp_e) = (
        h(vector.resp_static.as_ref().unwrap()),
        h(vector.resp_ephemeral.as_ref().unwrap()),
    );
    let mut initiator = suite
        .builder()
        .unwrap()
        .local_private_key(&init_s)
        .unwrap()
        .remote_public_key(&init_rs)
        .unwrap()
        .prologue(&prologue)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&init_e)
        .build_initiator()
        .unwrap();
    let mut responder = suite
        .builder()
        .unwrap()
        .local_private_key(&resp_s)
        .unwrap()
        .prologue(&prologue)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&resp_e)
        .build_responder()
        .unwrap();

    let mut messages = vector.messages.iter();
    let mut buf = vec![0u8; 65535];
    let mut out = vec![0u8; 65535];
    // IK is two messages: initiator, then responder.
    for (i, m) in messages.by_ref().take(2).enumerate() {
        let (writer, reader) = if i == 0 {
            (&mut initiator, &mut responder)
        } else {
            (&mut responder, &mut initiator)
        };
        let len = writer.write_message(&h(&m.payload), &mut buf).unwrap();
        assert_eq!(hex::encode(&buf[..len]), m.ciphertext, "message {i}");
        let n = reader.read_message(&buf[..len], &mut out).unwrap();
        assert_eq!(hex::encode(&out[..n]), m.payload, "message {i}");
    }
    let hash = vector.handshake_hash.as_ref().unwrap();
    assert_eq!(&hex::encode(initiator.get_handshake_hash()), hash);
    assert_eq!(&hex::encode(responder.get_handshake_hash()), hash);

    let mut initiator = initiator.into_transport_mode().unwrap();
    let mut responder = responder.into_transport_mode().unwrap();
    for (i, m) in messages.enumerate() {
        let (writer, reader) = if i % 2 == 0 {
            (&mut initiator, &mut responder)
        } else {
            (&mut responder, &mut initiator)
        };
        let len = writer.write_message(&h(&m.payload), &mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf[..len]),
            m.ciphertext,
            "transport message {i}"
        );
        let n = reader.read_message(&buf[..len], &mut out).unwrap();
        assert_eq!(hex::encode(&out[..n]), m.payload, "transport message {i}");
    }
}

#[test]
fn ik_vectors_replay_in_both_suites_with_both_backends() {
    let Some(file) = load() else { return };
    let mut checked = 0;
    for protocol in [
        NoiseProtocol::ChaChaPolyBlake2s,
        NoiseProtocol::AesGcmSha256,
    ] {
        let vectors: Vec<_> = file
            .vectors
            .iter()
            .filter(|v| v.protocol_name == protocol.name())
            .collect();
        assert!(!vectors.is_empty(), "no vector for {}", protocol.name());
        for vector in vectors {
            for backend in [CryptoBackend::RustCrypto, CryptoBackend::Ring] {
                replay(vector, NoiseSuite { protocol, backend });
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 4);
}
