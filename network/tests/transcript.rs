//! The wire transcript: one connection between two nodes with fixed keys, clock and
//! ephemeral keys, over recording sockets, from the first byte through the Noise
//! handshake, the handshake message, one RPC, one DirectSend message and its
//! acknowledgement, and the close. Its bytes must equal
//! `tests/transcript/connection.hex`, and their reading by an independent decoder
//! written from `docs/WIRE.md` must equal the annotated transcript in that document.
//! Any change of a byte of the pipeline fails here; a deliberate one is recorded with
//! `TRANSCRIPT_UPDATE=1 cargo test -p network --test transcript` and goes with a new
//! protocol id where `docs/WIRE.md` asks for one.
//!
//! Memsocket carries the bytes: a TCP connection carries the same ones. The clock is
//! paused, so each step runs until every task is idle before the next starts.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

#[path = "transcript/decode.rs"]
mod decode;
#[path = "transcript/record.rs"]
mod record;

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use netcore::transport::{MemoryTransport, TransportExt};
use network::{Event, NetworkBuilder, NetworkConfig, ProtocolId, ProtocolKind};
use noise::{FixedInputs, Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};
use prometheus::Registry;

use decode::{Decoder, Keys};
use record::{Log, Recorded, Step};

const RPC: ProtocolId = ProtocolId::new("/consensus/rpc/2");
const DIRECT: ProtocolId = ProtocolId::new("/consensus/direct-send/2");
/// 2026-01-01T00:00:00Z, in ms since the Unix epoch.
const CLOCK_MS: u64 = 1_767_225_600_000;
const DIALER_SEED: [u8; 32] = [1; 32];
const LISTENER_SEED: [u8; 32] = [2; 32];
const DIALER_EPHEMERAL_SEED: [u8; 32] = [0xd1; 32];
const LISTENER_EPHEMERAL_SEED: [u8; 32] = [0x11; 32];

const HEX_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/transcript/connection.hex"
);
const WIRE_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/WIRE.md");
const BEGIN: &str = "<!-- transcript:begin -->\n```text\n";
const END: &str = "```\n<!-- transcript:end -->";

/// The ephemeral secret of an upgrader's first handshake, as `FixedInputs` documents.
fn first_ephemeral(seed: &[u8; 32]) -> [u8; 32] {
    let mut input = seed.to_vec();
    input.extend_from_slice(&0u64.to_be_bytes());
    ring::digest::digest(&ring::digest::SHA256, &input)
        .as_ref()
        .try_into()
        .unwrap()
}

/// The Noise static secret of an identity key: the first half of SHA-512 of its seed.
fn static_secret(seed: &[u8; 32]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA512, seed).as_ref()[..32]
        .try_into()
        .unwrap()
}

struct Node {
    network: network::Network,
    sender: network::NetworkSender,
    events: network::NetworkEvents,
}

fn start(seed: [u8; 32], ephemeral_seed: [u8; 32], trusted: TrustedPeers, log: &Log) -> Node {
    let config = NetworkConfig {
        chain_id: 1,
        client_version: "transcript/1".to_owned(),
        ..NetworkConfig::default()
    };
    let inputs = FixedInputs {
        clock_ms: CLOCK_MS,
        ephemeral_seed,
    };
    let upgrader = NoiseUpgrader::with_fixed_inputs(
        Identity::from_secret_bytes(&seed),
        NoiseConfig::mutual(trusted),
        inputs,
    );
    let mut builder = NetworkBuilder::new(config, upgrader, Registry::new());
    let app = builder.register(&[(RPC, ProtocolKind::Rpc), (DIRECT, ProtocolKind::DirectSend)]);
    builder.listen_on("/memory/0".parse().unwrap());
    let log = log.clone();
    let transport =
        MemoryTransport::default().map(move |socket, origin| Recorded::new(socket, origin, log));
    let mut network = builder.start(transport).unwrap();
    let (sender, events) = network.take_app(app).unwrap();
    Node {
        network,
        sender,
        events,
    }
}

/// Lets every task run until all are idle (the paused clock moves only then).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn next_event(node: &mut Node) -> Event {
    tokio::time::timeout(Duration::from_secs(10), node.events.next())
        .await
        .unwrap()
        .unwrap()
}

/// Runs the connection and returns what each side wrote in each step.
async fn record_connection() -> Vec<Step> {
    let log = Log::default();
    let (dialer_id, listener_id) = (
        Identity::from_secret_bytes(&DIALER_SEED).peer_id(),
        Identity::from_secret_bytes(&LISTENER_SEED).peer_id(),
    );
    let trusted = TrustedPeers::from_peers([dialer_id, listener_id]).unwrap();
    let mut dialer = start(DIALER_SEED, DIALER_EPHEMERAL_SEED, trusted.clone(), &log);
    let mut listener = start(LISTENER_SEED, LISTENER_EPHEMERAL_SEED, trusted, &log);

    log.step("connect");
    let addr = listener.network.listen_addrs()[0].clone();
    dialer.sender.dial(addr).await.unwrap();
    assert!(matches!(next_event(&mut dialer).await, Event::NewPeer(_)));
    assert!(matches!(next_event(&mut listener).await, Event::NewPeer(_)));
    settle().await;

    log.step("one RPC");
    let call = dialer.sender.rpc(
        listener_id,
        RPC,
        Bytes::from_static(b"block 7?"),
        Duration::from_secs(5),
    );
    let serve = async {
        match next_event(&mut listener).await {
            Event::RpcRequest {
                data, responder, ..
            } => {
                assert_eq!(&data[..], b"block 7?");
                responder.respond(Bytes::from_static(b"block 7")).unwrap();
            }
            other => panic!("expected the request, got {other:?}"),
        }
    };
    let (answer, ()) = futures::join!(call, serve);
    assert_eq!(&answer.unwrap()[..], b"block 7");
    settle().await;

    log.step("one DirectSend message and its acknowledgement");
    dialer
        .sender
        .send_to(listener_id, DIRECT, Bytes::from_static(b"vote 7"))
        .unwrap();
    match next_event(&mut listener).await {
        Event::Message { data, .. } => assert_eq!(&data[..], b"vote 7"),
        other => panic!("expected the message, got {other:?}"),
    }
    settle().await;

    log.step("the dialer closes the connection");
    dialer.sender.disconnect(listener_id).await.unwrap();
    loop {
        if let Event::LostPeer { .. } = next_event(&mut listener).await {
            break;
        }
    }
    settle().await;
    dialer.network.shutdown().await;
    listener.network.shutdown().await;
    log.steps()
}

/// The raw bytes, one block per step and direction, 32 bytes a line.
fn hex_file(steps: &[Step]) -> String {
    let mut out = String::from(
        "# The bytes of tests/transcript.rs's connection, as each side wrote them (hex).\n",
    );
    for step in steps {
        for (who, bytes) in [("dialer", &step.dialer), ("listener", &step.listener)] {
            out.push_str(&format!(
                "\n## {}: {who}, {} bytes\n",
                step.name,
                bytes.len()
            ));
            for chunk in bytes.chunks(32) {
                out.push_str(&hex::encode(chunk));
                out.push('\n');
            }
        }
    }
    out
}

fn keys() -> Keys {
    Keys {
        protocol: "Noise_IK_25519_AESGCM_SHA256",
        dialer_static: static_secret(&DIALER_SEED),
        listener_static: static_secret(&LISTENER_SEED),
        dialer_ephemeral: first_ephemeral(&DIALER_EPHEMERAL_SEED),
        listener_ephemeral: first_ephemeral(&LISTENER_EPHEMERAL_SEED),
        rpc_protocols: vec![RPC.as_str()],
    }
}

/// The annotated transcript as `docs/WIRE.md` holds it.
fn documented() -> String {
    let text = std::fs::read_to_string(WIRE_MD).unwrap();
    let begin = text
        .find(BEGIN)
        .expect("docs/WIRE.md marks the transcript's start")
        + BEGIN.len();
    let end = text
        .find(END)
        .expect("docs/WIRE.md marks the transcript's end");
    text[begin..end].to_owned()
}

fn update_documented(annotated: &str) {
    let text = std::fs::read_to_string(WIRE_MD).unwrap();
    let begin = text.find(BEGIN).unwrap() + BEGIN.len();
    let end = text.find(END).unwrap();
    let new = format!("{}{annotated}{}", &text[..begin], &text[end..]);
    std::fs::write(WIRE_MD, new).unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_connection_on_the_wire_is_byte_for_byte_the_recorded_transcript() {
    let steps = record_connection().await;
    let raw = hex_file(&steps);
    let annotated = Decoder::new(keys()).decode(&steps);
    if std::env::var("TRANSCRIPT_UPDATE").is_ok_and(|v| v == "1") {
        std::fs::write(HEX_FILE, &raw).unwrap();
        update_documented(&annotated);
    }
    let recorded = std::fs::read_to_string(HEX_FILE).unwrap();
    assert!(
        recorded == raw,
        "the bytes on the wire differ from tests/transcript/connection.hex:\n{}",
        first_difference(&recorded, &raw)
    );
    let documented = documented();
    assert!(
        documented == annotated,
        "the decoded transcript differs from docs/WIRE.md's:\n{}",
        first_difference(&documented, &annotated)
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_inputs_give_the_same_bytes_twice() {
    let first = hex_file(&record_connection().await);
    let second = hex_file(&record_connection().await);
    assert_eq!(first, second);
}

/// The first line where `expected` and `actual` differ, for the failure message.
fn first_difference(expected: &str, actual: &str) -> String {
    for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            return format!("line {}:\n  recorded: {e}\n  now:      {a}", i + 1);
        }
    }
    format!(
        "one is a prefix of the other ({} and {} lines)",
        expected.lines().count(),
        actual.lines().count()
    )
}
