//! Our use of `snow` (protocol names, resolvers, prologue, fixed keys) replays the
//! published cacophony Noise test vectors for the IK pattern, in both suites and with
//! both crypto backends: every handshake and transport ciphertext and the handshake hash.
//!
//! The vectors are read where the `snow` crate's own package puts them
//! (`tests/vectors/cacophony.txt` in the registry source of the `snow` version that
//! `Cargo.lock` names, found through `cargo metadata`): every build downloads that
//! package, so a clone of this repository with nothing beside it checks them. The test
//! fails, never skips, when the file cannot be found.
#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::path::PathBuf;
use std::process::Command;

use noise::{CryptoBackend, NoiseProtocol, NoiseSuite};
use serde::Deserialize;

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

/// The part of `cargo metadata`'s output that locates a package's source.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
    manifest_path: PathBuf,
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The path of `cacophony.txt` in the source of the `snow` package this workspace locks.
fn vectors_path() -> PathBuf {
    // Only this host's dependencies: the packages of other platforms may not have been
    // downloaded. Offline first, as the build has downloaded every package the look-up
    // needs; with the registry only if that fails.
    let metadata = |offline: bool| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--locked"])
            .args(["--filter-platform", &host_triple()])
            .args(offline.then_some("--offline"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata runs")
    };
    let mut output = metadata(true);
    if !output.status.success() {
        output = metadata(false);
    }
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Metadata = serde_json::from_slice(&output.stdout).unwrap();
    let snow: Vec<&Package> = metadata
        .packages
        .iter()
        .filter(|p| p.name == "snow")
        .collect();
    assert_eq!(snow.len(), 1, "exactly one snow package in the lock file");
    let dir = snow[0].manifest_path.parent().unwrap();
    eprintln!(
        "noise vectors: snow {} at {}",
        snow[0].version,
        dir.display()
    );
    dir.join("tests/vectors/cacophony.txt")
}

/// The host's target triple, as `rustc -vV` names it.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("rustc -vV runs");
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

fn load() -> File {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("Noise test vectors missing at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
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
    let file = load();
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
    // cacophony has one IK vector per suite: two suites, two backends each.
    assert_eq!(checked, 4);
    eprintln!("noise vectors: replayed {checked} IK handshakes and their transport messages");
}
