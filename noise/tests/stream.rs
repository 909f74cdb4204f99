//! `NoiseStream`: data arrives intact in both directions over memsocket and loopback TCP
//! however the writes are split, and a bad frame is a typed error, never a panic.
#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use memsocket::MemorySocket;
use noise::{FrameError, Identity, NoiseConfig, NoiseStream, NoiseUpgrader};
use proptest::prelude::*;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn connect<IO>(a: IO, b: IO) -> (NoiseStream<IO>, NoiseStream<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let bob_id = bob.peer_id();
    let up_a = NoiseUpgrader::new(alice, NoiseConfig::open());
    let up_b = NoiseUpgrader::new(bob, NoiseConfig::open());
    let (out, inb) = tokio::join!(up_a.upgrade_outbound(a, bob_id), up_b.upgrade_inbound(b));
    (out.unwrap().0, inb.unwrap().0)
}

async fn memory_pair() -> (NoiseStream<MemorySocket>, NoiseStream<MemorySocket>) {
    let (a, b) = MemorySocket::new_pair();
    connect(a, b).await
}

async fn tcp_pair() -> (NoiseStream<TcpStream>, NoiseStream<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    connect(a.unwrap(), b.unwrap().0).await
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` from `w` in chunks of `chunks` sizes (cycled), flushing after each
/// chunk where `flush_each`, while `r` reads it all; checks it arrives intact.
async fn transfer<W, R>(w: &mut W, r: &mut R, data: &[u8], chunks: &[usize], flush_each: bool)
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let writer = async {
        let mut rest = data;
        for &size in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.clamp(1, rest.len()));
            w.write_all(chunk).await.unwrap();
            if flush_each {
                w.flush().await.unwrap();
            }
            rest = tail;
        }
        w.flush().await.unwrap();
    };
    let reader = async {
        let mut got = vec![0u8; data.len()];
        r.read_exact(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    assert!(
        got == data,
        "data corrupted in transit ({} bytes)",
        data.len()
    );
}

#[tokio::test]
async fn every_size_from_one_byte_to_ten_mib_arrives_intact_both_ways_over_memsocket() {
    let (mut a, mut b) = memory_pair().await;
    for len in [
        1,
        2,
        15,
        16,
        17,
        1000,
        65518,
        65519,
        65520,
        131_038,
        200_000,
        10 << 20,
    ] {
        let data = pattern(len, len as u8);
        transfer(&mut a, &mut b, &data, &[len], false).await;
        transfer(&mut b, &mut a, &data, &[len], false).await;
    }
}

#[tokio::test]
async fn every_size_from_one_byte_to_ten_mib_arrives_intact_both_ways_over_tcp() {
    let (mut a, mut b) = tcp_pair().await;
    for len in [1, 17, 65519, 65520, 300_000, 10 << 20] {
        let data = pattern(len, 7);
        transfer(&mut a, &mut b, &data, &[len], false).await;
        transfer(&mut b, &mut a, &data, &[len], false).await;
    }
}

#[tokio::test]
async fn many_small_writes_arrive_in_order() {
    let (mut a, mut b) = memory_pair().await;
    let data = pattern(32 * 10_000, 1);
    transfer(&mut a, &mut b, &data, &[32], false).await;
    transfer(&mut b, &mut a, &data, &[32], true).await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_split_of_writes_arrives_intact(
        len in 1usize..300_000,
        chunks in prop::collection::vec(1usize..140_000, 1..8),
        flush_each in any::<bool>(),
        over_tcp in any::<bool>(),
    ) {
        runtime().block_on(async {
            let data = pattern(len, 3);
            if over_tcp {
                let (mut a, mut b) = tcp_pair().await;
                transfer(&mut a, &mut b, &data, &chunks, flush_each).await;
                transfer(&mut b, &mut a, &data, &chunks, flush_each).await;
            } else {
                let (mut a, mut b) = memory_pair().await;
                transfer(&mut a, &mut b, &data, &chunks, flush_each).await;
                transfer(&mut b, &mut a, &data, &chunks, flush_each).await;
            }
        });
    }
}

#[tokio::test]
async fn shutdown_flushes_then_the_reader_sees_the_data_and_end_of_stream() {
    let (mut a, mut b) = memory_pair().await;
    a.write_all(b"last words").await.unwrap();
    a.shutdown().await.unwrap();
    let mut got = Vec::new();
    b.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"last words");
}

/// Alice and Bob with us in the middle: what Alice writes arrives on `from_alice`, and
/// what we write to `to_bob` reaches Bob. The handshake is relayed untouched.
struct Relayed {
    alice: NoiseStream<MemorySocket>,
    bob: NoiseStream<MemorySocket>,
    from_alice: MemorySocket,
    to_bob: MemorySocket,
}

async fn relayed() -> Relayed {
    let (alice_sock, mut from_alice) = MemorySocket::new_pair();
    let (mut to_bob, bob_sock) = MemorySocket::new_pair();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let bob_id = bob.peer_id();
    let up_a = NoiseUpgrader::new(alice, NoiseConfig::open());
    let up_b = NoiseUpgrader::new(bob, NoiseConfig::open());
    let relay = async {
        let mut first = vec![0u8; 64 + 2 + 104];
        from_alice.read_exact(&mut first).await.unwrap();
        to_bob.write_all(&first).await.unwrap();
        let mut reply = vec![0u8; 2 + 48];
        to_bob.read_exact(&mut reply).await.unwrap();
        from_alice.write_all(&reply).await.unwrap();
    };
    let (out, inb, ()) = tokio::join!(
        up_a.upgrade_outbound(alice_sock, bob_id),
        up_b.upgrade_inbound(bob_sock),
        relay
    );
    Relayed {
        alice: out.unwrap().0,
        bob: inb.unwrap().0,
        from_alice,
        to_bob,
    }
}

impl Relayed {
    /// Has Alice send `payload` as one frame, and returns the frame's wire bytes.
    async fn frame(&mut self, payload: &[u8]) -> Vec<u8> {
        self.alice.write_all(payload).await.unwrap();
        self.alice.flush().await.unwrap();
        let mut frame = vec![0u8; 2 + payload.len() + 16];
        self.from_alice.read_exact(&mut frame).await.unwrap();
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[0], frame[1]])),
            payload.len() + 16
        );
        frame
    }
}

fn frame_error(e: &std::io::Error) -> Option<&FrameError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<FrameError>())
}

#[tokio::test]
async fn a_tampered_frame_is_an_invalid_data_error_and_the_read_side_stays_failed() {
    let mut r = relayed().await;
    let mut frame = r.frame(b"pay 10 coins").await;
    frame[5] ^= 1;
    r.to_bob.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 12];
    let err = r.bob.read_exact(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(frame_error(&err), Some(&FrameError::Decrypt));
    let err = r.bob.read(&mut buf).await.unwrap_err();
    assert_eq!(frame_error(&err), Some(&FrameError::Decrypt));
}

#[tokio::test]
async fn a_frame_shorter_than_a_tag_is_an_invalid_data_error() {
    let mut r = relayed().await;
    r.to_bob.write_all(&[0, 15]).await.unwrap();
    r.to_bob.write_all(&[0; 15]).await.unwrap();
    let mut buf = [0u8; 1];
    let err = r.bob.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(frame_error(&err), Some(&FrameError::ShorterThanTag(15)));
}

#[tokio::test]
async fn a_replayed_frame_fails_to_decrypt() {
    let mut r = relayed().await;
    let frame = r.frame(b"vote").await;
    r.to_bob.write_all(&frame).await.unwrap();
    r.to_bob.write_all(&frame).await.unwrap();
    let mut buf = [0u8; 4];
    r.bob.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"vote");
    let err = r.bob.read(&mut buf).await.unwrap_err();
    assert_eq!(frame_error(&err), Some(&FrameError::Decrypt));
}

#[tokio::test]
async fn a_stream_ending_inside_a_frame_is_an_unexpected_eof() {
    let mut r = relayed().await;
    let frame = r.frame(b"half of this").await;
    r.to_bob.write_all(&frame[..10]).await.unwrap();
    drop(r.to_bob);
    let mut buf = [0u8; 12];
    let err = r.bob.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    assert_eq!(frame_error(&err), Some(&FrameError::Truncated(10)));
}

#[tokio::test]
async fn frames_split_at_every_byte_are_reassembled() {
    let mut r = relayed().await;
    let mut wire = Vec::new();
    for i in 0..3u8 {
        wire.extend_from_slice(&r.frame(&pattern(100, i)).await);
    }
    let reader = async {
        let mut got = vec![0u8; 300];
        r.bob.read_exact(&mut got).await.unwrap();
        got
    };
    let writer = async {
        for byte in &wire {
            r.to_bob
                .write_all(std::slice::from_ref(byte))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
    };
    let (got, ()) = tokio::join!(reader, writer);
    let expected: Vec<u8> = (0..3u8).flat_map(|i| pattern(100, i)).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn small_writes_are_coalesced_into_one_frame_on_flush() {
    let mut r = relayed().await;
    for _ in 0..100 {
        r.alice.write_all(&[9; 32]).await.unwrap();
    }
    r.alice.flush().await.unwrap();
    let mut frame = vec![0u8; 2 + 3200 + 16];
    r.from_alice.read_exact(&mut frame).await.unwrap();
    assert_eq!(u16::from_be_bytes([frame[0], frame[1]]), 3216);
}

/// One `poll_write` with a waker that does nothing.
fn try_write<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> Poll<std::io::Result<usize>> {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    Pin::new(w).poll_write(&mut cx, buf)
}

#[tokio::test]
async fn while_a_sealed_frame_waits_for_the_socket_no_more_bytes_are_taken() {
    // Bytes the stream takes are committed to their order. While the socket pushes back
    // it holds the one sealed frame and takes nothing more, so the caller keeps what
    // it has not written and may still put something more urgent first.
    let (a, b) = MemorySocket::new_pair_with_capacity(4096);
    let (mut alice, mut bob) = connect(a, b).await;
    let data = pattern(3 * 65_519, 7);
    let Poll::Ready(Ok(first)) = try_write(&mut alice, &data[..32 * 1024]) else {
        panic!("an empty stream takes a write");
    };
    assert_eq!(first, 32 * 1024, "taken whole into the plaintext buffer");
    let Poll::Ready(Ok(second)) = try_write(&mut alice, &data[first..]) else {
        panic!("the plaintext buffer has room");
    };
    assert_eq!(
        first + second,
        65_519,
        "filled to one frame, which is sealed"
    );
    let taken = first + second;
    // A small write would fit the free plaintext buffer, but the sealed frame is still
    // on its way: nothing more is taken.
    assert!(try_write(&mut alice, &data[taken..taken + 100]).is_pending());
    // Once Bob reads, the rest goes through, in order.
    let reader = async {
        let mut got = vec![0u8; data.len()];
        bob.read_exact(&mut got).await.unwrap();
        got
    };
    let writer = async {
        alice.write_all(&data[taken..]).await.unwrap();
        alice.flush().await.unwrap();
    };
    let (got, ()) = tokio::join!(reader, writer);
    assert!(got == data, "the bytes arrive intact and in order");
}

/// What a [`Watched`] socket saw: for each read once `on` is set, how many bytes of the
/// space offered were already initialised (zeroed, or left from before) past what was
/// filled.
#[derive(Default)]
struct Watch {
    on: std::sync::atomic::AtomicBool,
    initialised_ahead: std::sync::Mutex<Vec<usize>>,
}

struct Watched<IO> {
    io: IO,
    watch: std::sync::Arc<Watch>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.watch.on.load(std::sync::atomic::Ordering::Relaxed) {
            let ahead = buf.initialized().len() - buf.filled().len();
            self.watch.initialised_ahead.lock().unwrap().push(ahead);
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn the_socket_reads_into_space_nobody_zeroed() {
    // A connection of small messages takes a read buffer per wake-up; zeroing it each
    // time cost more than the read. The socket gets the buffer's spare capacity as it
    // is, in the small buffer and in the large one.
    let watch = std::sync::Arc::new(Watch::default());
    let (a, b) = MemorySocket::new_pair();
    let watched = |io| Watched {
        io,
        watch: watch.clone(),
    };
    let (mut alice, mut bob) = connect(watched(a), watched(b)).await;
    watch.on.store(true, std::sync::atomic::Ordering::Relaxed);
    // Small messages, each read on its own wake-up (the small buffer, let go and taken
    // again each time), then one large message (the large buffer).
    for i in 0..20u8 {
        alice.write_all(&pattern(40, i)).await.unwrap();
        alice.flush().await.unwrap();
        let mut got = vec![0u8; 40];
        bob.read_exact(&mut got).await.unwrap();
        assert_eq!(got, pattern(40, i));
    }
    let large = pattern(300_000, 9);
    let reader = async {
        let mut got = vec![0u8; large.len()];
        bob.read_exact(&mut got).await.unwrap();
        got
    };
    let writer = async {
        alice.write_all(&large).await.unwrap();
        alice.flush().await.unwrap();
    };
    let (got, ()) = tokio::join!(reader, writer);
    assert!(got == large);
    let seen = watch.initialised_ahead.lock().unwrap();
    assert!(seen.len() > 20, "{} reads watched", seen.len());
    assert!(
        seen.iter().all(|&ahead| ahead == 0),
        "reads offered initialised space: {seen:?}"
    );
}
