//! What the connection task commits below the multiplexer: frames it has taken from the
//! session wait in order whatever their class, so it takes few while the socket pushes
//! back, and flushes urgent data before anything of a lower class joins it.
#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use memsocket::MemorySocket;
use netcore::multiplexing::{self, Mode, MuxConfig, Priority};
use netcore::negotiate::negotiate_outbound_select;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

const KIB: usize = 1024;
const HEADER: usize = 12;
const DATA: u8 = 0;
const PING: u8 = 2;
/// The stream id of frames about the whole session (pings, GoAway).
const SESSION: u32 = 0;

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test took too long")
}

/// A frame header's stream id and length.
fn parse_header(h: &[u8]) -> (u8, u32, usize) {
    let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    (h[1], id, len)
}

#[tokio::test(start_paused = true)]
async fn an_urgent_frame_waits_behind_at_most_one_bulk_frame_the_socket_did_not_take() {
    // The task takes one frame at a time after an idle moment, growing only while the
    // socket takes each batch whole, so an urgent message written once the socket
    // pushes back goes out behind the socket's buffer and at most one batch of bulk,
    // not the bulk stream's whole window.
    const SOCKET: usize = 32 * KIB;
    const FRAME: usize = 16 * KIB;
    let (a, mut raw) = MemorySocket::new_pair_with_capacity(SOCKET);
    let (client, _incoming) = multiplexing::start(a, Mode::Client, MuxConfig::default());
    let mut bulk = client
        .open_stream_with_priority(Priority::Bulk)
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        // The whole initial window (nothing on the other end grants more).
        bulk.write_all(&vec![0u8; 256 * KIB]).await.unwrap();
        bulk
    });
    // Paused time moves on only once every task is idle: the connection task has filled
    // the socket and waits for it.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut urgent = client
        .open_stream_with_priority(Priority::Urgent)
        .await
        .unwrap();
    urgent.write_all(b"vote").await.unwrap();
    let mut bulk_before = 0;
    loop {
        let mut h = [0u8; HEADER];
        within(raw.read_exact(&mut h)).await.unwrap();
        let (ty, id, len) = parse_header(&h);
        if id == urgent.id() {
            break;
        }
        if ty == DATA {
            let mut payload = vec![0u8; len];
            within(raw.read_exact(&mut payload)).await.unwrap();
            bulk_before += len;
        }
    }
    assert!(
        bulk_before <= SOCKET + 2 * FRAME,
        "the urgent frame went out behind {bulk_before} bulk bytes"
    );
    writer.abort();
}

/// What a [`Recording`] socket saw: the bytes written, and how many had been written at
/// each flush.
#[derive(Debug, Default)]
struct Log {
    bytes: Vec<u8>,
    flushes: Vec<usize>,
}

/// A socket that takes every write whole, records it, and never has anything to read.
#[derive(Debug, Clone, Default)]
struct Recording(Arc<Mutex<Log>>);

impl AsyncRead for Recording {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap().bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut log = self.0.lock().unwrap();
        let at = log.bytes.len();
        log.flushes.push(at);
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn urgent_data_is_flushed_before_bulk_joins_it() {
    // Under Noise a flush seals a frame, and the receiver opens a frame only once it has
    // all of it: urgent data flushed together with the bulk behind it would wait for
    // that bulk to cross the link.
    let socket = Recording::default();
    let log = Arc::clone(&socket.0);
    let (client, _incoming) = multiplexing::start(socket, Mode::Client, MuxConfig::default());
    let mut bulk = client
        .open_stream_with_priority(Priority::Bulk)
        .await
        .unwrap();
    let mut urgent = client
        .open_stream_with_priority(Priority::Urgent)
        .await
        .unwrap();
    // Both are queued before the connection task runs (this runtime has one thread).
    bulk.write_all(&[0u8; 64 * KIB]).await.unwrap();
    urgent.write_all(b"vote").await.unwrap();
    within(async {
        while log.lock().unwrap().bytes.len() < 64 * KIB {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let log = log.lock().unwrap();
    // Frames in order: (stream, is data, end offset).
    let mut frames = Vec::new();
    let mut at = 0;
    while at + HEADER <= log.bytes.len() {
        let (ty, id, len) = parse_header(&log.bytes[at..at + HEADER]);
        at += HEADER + if ty == DATA { len } else { 0 };
        frames.push((id, ty == DATA, at));
    }
    let urgent_end = frames
        .iter()
        .find(|(id, data, _)| *id == urgent.id() && *data)
        .map(|f| f.2)
        .unwrap();
    assert!(
        frames
            .iter()
            .take_while(|f| f.2 <= urgent_end)
            .all(|(id, _, _)| *id == urgent.id() || *id == SESSION),
        "the urgent frames go first, after session frames (the first RTT probe)"
    );
    assert_eq!(
        log.flushes.first(),
        Some(&urgent_end),
        "flushed right after the urgent frames"
    );
    assert!(log.bytes.len() > urgent_end, "the bulk follows");
}

/// Starts a connection of `mode` on a socket that holds `upgrade` written and not
/// flushed, as an upgrade leaves its last message (a client's behind an optimistic
/// proposal of the multiplexer, as a dialer's upgrade ends), and returns what the
/// socket saw once something was flushed.
async fn first_flush_after_upgrade(mode: Mode, upgrade: &[u8]) -> Log {
    let socket = Recording::default();
    let log = Arc::clone(&socket.0);
    let mut socket = tokio::io::BufWriter::new(socket);
    socket.write_all(upgrade).await.unwrap();
    let (_control, _incoming) = match mode {
        Mode::Client => {
            let socket = negotiate_outbound_select(socket, "/yamux/1.0.0").unwrap();
            multiplexing::start(socket, mode, MuxConfig::default())
        }
        Mode::Server => multiplexing::start(socket, mode, MuxConfig::default()),
    };
    assert!(log.lock().unwrap().bytes.is_empty(), "held until flushed");
    within(async {
        while log.lock().unwrap().flushes.is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    std::mem::take(&mut *log.lock().unwrap())
}

/// The multistream header and the proposal of `/yamux/1.0.0`.
const PROPOSAL: usize = 20 + 14;

#[tokio::test]
async fn a_client_sends_its_upgrades_last_bytes_proposal_and_first_ping_in_one_flush() {
    // The proposal (and the handshake message before it) wait in the stream for the
    // multiplexer. Its task writes before it first reads: a read of the optimistic
    // negotiation would flush them alone, to wait for the answer.
    let log = first_flush_after_upgrade(Mode::Client, b"upgrade").await;
    assert_eq!(log.flushes[0], 7 + PROPOSAL + HEADER, "one flush for all");
    assert_eq!(&log.bytes[..7], b"upgrade");
    assert_eq!(&log.bytes[7 + 20..7 + PROPOSAL], b"\x0d/yamux/1.0.0\n");
    let (ty, id, _) = parse_header(&log.bytes[7 + PROPOSAL..]);
    assert_eq!((ty, id), (PING, SESSION), "then the RTT probe");
}

#[tokio::test]
async fn a_server_sends_what_its_upgrade_left_with_its_first_frames() {
    // A server's task reads first (to answer the client's first frames in the same
    // write); with nothing read, its own Ping goes out behind what the upgrade left.
    let log = first_flush_after_upgrade(Mode::Server, b"echo").await;
    assert_eq!(log.flushes[0], 4 + HEADER, "one flush for both");
    assert_eq!(&log.bytes[..4], b"echo");
    let (ty, id, _) = parse_header(&log.bytes[4..]);
    assert_eq!((ty, id), (PING, SESSION), "then the RTT probe");
}
