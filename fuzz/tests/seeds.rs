//! Writes the committed seed corpora under `fuzz/corpus/`: a handful of valid inputs per
//! target, so the fuzzer starts from messages that get deep into each decoder. Run it only
//! to regenerate them; the replay test checks them.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::path::Path;

use fuzz_entries::{INITIATOR_SECRET, LIVE_DIRECT, LIVE_RPC, fuzz_upgrader, responder_peer_id};
use prost::Message;
use tokio::io::AsyncReadExt;

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// A yamux frame: header and payload.
fn frame(kind: u8, flags: u16, stream: u32, length: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0, kind];
    f.extend_from_slice(&flags.to_be_bytes());
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(&length.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A multistream-select message: varint length, bytes, newline.
fn line(text: &str) -> Vec<u8> {
    let mut m = vec![u8::try_from(text.len() + 1).unwrap()];
    m.extend_from_slice(text.as_bytes());
    m.push(b'\n');
    m
}

fn length_prefixed(body: &[u8]) -> Vec<u8> {
    let mut m = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    m.extend_from_slice(body);
    m
}

/// What a dialer sends first on a substream for `protocol`, then one framed message.
fn substream_request(protocol: &str, body: &[u8]) -> Vec<u8> {
    let mut s = line("/multistream/1.0.0");
    s.extend(line(protocol));
    s.extend(length_prefixed(body));
    s
}

fn with_selector(selector: u8, body: Vec<u8>) -> Vec<u8> {
    let mut v = vec![selector];
    v.extend(body);
    v
}

async fn first_noise_message() -> Vec<u8> {
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    let upgrader = fuzz_upgrader(&INITIATOR_SECRET);
    let dial = tokio::spawn(async move {
        let _ = upgrader.upgrade_outbound(ours, responder_peer_id()).await;
    });
    let mut head = [0u8; 66];
    theirs.read_exact(&mut head).await.unwrap();
    let len = usize::from(u16::from_be_bytes([head[64], head[65]]));
    let mut message = vec![0u8; len];
    theirs.read_exact(&mut message).await.unwrap();
    dial.abort();
    let mut wire = head.to_vec();
    wire.extend_from_slice(&message);
    wire
}

#[tokio::test]
#[ignore = "rewrites the committed seeds; run: cargo test -p fuzz-entries --test seeds -- --ignored"]
async fn write_seed_corpora() {
    let peer = responder_peer_id();
    for (i, a) in [
        "/ip4/127.0.0.1/tcp/6180".to_owned(),
        "/ip6/::1/tcp/1".to_owned(),
        "/dns/example.com/tcp/80".to_owned(),
        "/dns4/a.b/tcp/65535".to_owned(),
        format!("/dns6/node.example/tcp/6180/p2p/{peer}"),
        format!("/memory/7/p2p/{peer}"),
    ]
    .iter()
    .enumerate()
    {
        write("address", &format!("seed-{i}"), a.as_bytes());
    }

    let mut two = vec![3];
    two.extend(length_prefixed(b"hello"));
    two.extend(length_prefixed(&[7u8; 300]));
    write("message_codec", "two-messages", &two);
    let mut over = vec![255];
    over.extend_from_slice(&5000u32.to_be_bytes());
    write("message_codec", "over-limit", &over);
    write("message_codec", "truncated", &[1, 0, 0, 0, 9, 1, 2]);

    use proto::{consensus, discovery, handshake, health, mempool, rpc};
    let hello = handshake::HandshakeMsg {
        chain_id: 1,
        network_id: "validator".to_owned(),
        supported_protocols: vec![LIVE_RPC.as_str().to_owned()],
        client_version: "seed".to_owned(),
    };
    write(
        "proto_messages",
        "handshake",
        &with_selector(0, hello.encode_to_vec()),
    );
    let seeds: Vec<(u8, Vec<u8>)> = vec![
        (1, rpc::RpcResponse::default().encode_to_vec()),
        (3, health::Ping::default().encode_to_vec()),
        (6, discovery::Notes::default().encode_to_vec()),
        (11, consensus::ConsensusMsg::default().encode_to_vec()),
        (14, mempool::TransactionBatch::default().encode_to_vec()),
        // A field with a huge declared length, and a nested message left open.
        (5, vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        (7, vec![0x12, 0x05, 0x0a, 0x03, 1, 2]),
    ];
    for (selector, body) in seeds {
        write(
            "proto_messages",
            &format!("type-{selector}"),
            &with_selector(selector, body),
        );
    }

    let first = first_noise_message().await;
    write("noise_responder", "first-message", &first);
    let mut trailing = first.clone();
    trailing.extend_from_slice(&[0, 40]);
    trailing.extend_from_slice(&[0xAB; 40]);
    write("noise_responder", "first-message-then-frame", &trailing);
    write("noise_responder", "short-prologue", &first[..30]);
    write("noise_initiator", "short-reply", &[0, 48, 1, 2, 3]);
    let mut reply = vec![0, 48];
    reply.extend_from_slice(&[0x5A; 48]);
    write("noise_initiator", "bad-reply", &reply);
    write("noise_initiator", "huge-length", &[0xff, 0xff, 0]);

    write("noise_stream", "write-read", &[0, 3, 4, 0]);
    write("noise_stream", "corrupt", &[0, 250, 2, 17, 0x40, 4, 0]);
    write("noise_stream", "raw-frame", &[1, 4, 0, 2, 9, 9, 4, 0]);
    write(
        "noise_stream",
        "drop-then-read",
        &[0, 10, 3, 5, 4, 0, 0, 1, 4, 0],
    );

    let syn = frame(1, 1, 2, 0, &[]);
    let data = frame(0, 0, 2, 5, b"hello");
    let ping = frame(2, 1, 0, 7, &[]);
    let fin = frame(1, 4, 2, 0, &[]);
    let go_away = frame(3, 0, 0, 0, &[]);
    let mut frames = vec![16];
    for f in [&syn, &data, &ping, &fin, &go_away] {
        frames.extend_from_slice(f);
    }
    write("mux_frames", "stream-life", &frames);
    let mut bad = vec![255];
    bad.extend(frame(0, 0, 2, 300_000, &[0; 16]));
    write("mux_frames", "window-overrun", &bad);
    let mut unknown = vec![1];
    unknown.extend(frame(9, 0, 0, 0, &[]));
    write("mux_frames", "unknown-type", &unknown);

    let mut session = vec![1];
    let feed = |s: &mut Vec<u8>, f: &[u8]| {
        s.push(0);
        s.extend_from_slice(&u16::try_from(f.len()).unwrap().to_be_bytes());
        s.extend_from_slice(f);
    };
    feed(&mut session, &syn);
    session.extend_from_slice(&[2, 3, 0, 0, 16]);
    feed(&mut session, &data);
    session.extend_from_slice(&[3, 0, 0, 16, 4, 0, 0, 200, 9, 1, 8, 255, 9, 6, 0, 7, 0]);
    write("mux_session", "inbound-stream", &session);
    write(
        "mux_session",
        "outbound-stream",
        &[0, 1, 4, 0, 15, 255, 9, 5, 0, 9, 10, 9, 11, 9],
    );

    let mut listener = vec![7];
    listener.extend(line("/multistream/1.0.0"));
    listener.extend(line("ls"));
    listener.extend(line("/other/1"));
    listener.extend(line(LIVE_DIRECT.as_str()));
    write("negotiate_listener", "na-then-accept", &listener);
    let mut accepted = vec![255];
    accepted.extend(line("/multistream/1.0.0"));
    accepted.extend(line("/fuzz/rpc/1"));
    write("negotiate_listener", "accept", &accepted);
    let mut dialer = vec![5];
    dialer.extend(line("/multistream/1.0.0"));
    dialer.extend(line("na"));
    dialer.extend(line("/fuzz/direct-send/1"));
    write("negotiate_dialer", "refused-then-accepted", &dialer);
    let mut echo = vec![255];
    echo.extend(line("/multistream/1.0.0"));
    echo.extend(line("/fuzz/rpc/1"));
    write("negotiate_dialer", "accepted", &echo);

    let rpc_request = substream_request(LIVE_RPC.as_str(), b"ping");
    let mut live = frame(1, 1, 1, 0, &[]);
    live.extend(frame(
        0,
        0,
        1,
        u32::try_from(rpc_request.len()).unwrap(),
        &rpc_request,
    ));
    write("live_peer", "rpc-request", &live);
    let direct = substream_request(LIVE_DIRECT.as_str(), b"note");
    let mut live = frame(1, 1, 3, 0, &[]);
    live.extend(frame(
        0,
        0,
        3,
        u32::try_from(direct.len()).unwrap(),
        &direct,
    ));
    live.extend(frame(1, 4, 3, 0, &[]));
    write("live_peer", "direct-send", &live);
    write(
        "live_peer",
        "ping-and-go-away",
        &[ping.clone(), go_away.clone()].concat(),
    );
}
