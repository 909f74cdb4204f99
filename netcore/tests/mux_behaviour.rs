//! Behaviour of our multiplexer against itself and against hand-written frames:
//! fairness, window growth, the stream cap, GoAway, writers that do not read, and
//! protocol violations.
#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use memsocket::MemorySocket;
use netcore::multiplexing::{self, Control, Incoming, Mode, MuxConfig, MuxError, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(30);
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn pair(client: MuxConfig, server: MuxConfig) -> ((Control, Incoming), (Control, Incoming)) {
    let (a, b) = MemorySocket::new_pair();
    (
        multiplexing::start(a, Mode::Client, client),
        multiplexing::start(b, Mode::Server, server),
    )
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("test took too long")
}

fn header(ty: u8, flags: u16, id: u32, len: u32) -> Vec<u8> {
    let mut v = vec![0, ty];
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

#[tokio::test]
async fn a_small_message_is_not_delayed_behind_a_bulk_transfer() {
    // Bound: once the bulk flow is under way, a 4 KiB message on another stream arrives
    // before the bulk reader gets 2 MiB more: the frames already queued (one write batch,
    // the 256 KiB socket buffer and at most the bulk stream's 1 MiB window), not the
    // 60+ MiB the bulk writer still has to send.
    let config = MuxConfig {
        max_window: MIB as u32,
        ..MuxConfig::default()
    };
    let ((client, _ci), (_server, mut incoming)) = pair(config.clone(), config);
    within(async {
        let mut bulk = client.open_stream().await.unwrap();
        let writer = tokio::spawn(async move {
            let chunk = vec![0u8; 64 * KIB];
            for _ in 0..(64 * MIB) / chunk.len() {
                bulk.write_all(&chunk).await.unwrap();
            }
            bulk.shutdown().await.unwrap();
            bulk
        });
        let mut bulk_in = incoming.next().await.unwrap();
        let bulk_read = Arc::new(AtomicUsize::new(0));
        let counter = bulk_read.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * KIB];
            loop {
                let n = bulk_in.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                counter.fetch_add(n, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        });
        while bulk_read.load(Ordering::Relaxed) < 4 * MIB {
            tokio::task::yield_now().await;
        }
        let before = bulk_read.load(Ordering::Relaxed);
        let mut small = client.open_stream().await.unwrap();
        small.write_all(&[1u8; 4 * KIB]).await.unwrap();
        let mut small_in = incoming.next().await.unwrap();
        let mut got = vec![0u8; 4 * KIB];
        small_in.read_exact(&mut got).await.unwrap();
        let during = bulk_read.load(Ordering::Relaxed) - before;
        assert!(
            during < 2 * MIB,
            "the 4 KiB message waited for {during} bulk bytes"
        );
        reader.await.unwrap();
        assert_eq!(bulk_read.load(Ordering::Relaxed), 64 * MIB);
        drop(writer.await.unwrap());
    })
    .await;
}

/// Copies `r` to `w`, each chunk delivered `delay` after it was read (a link with
/// latency but no bandwidth limit).
async fn delay_line<R, W>(mut r: R, mut w: W, delay: Duration)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * KIB];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let due = tokio::time::Instant::now() + delay;
                if tx.send((due, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A connected pair whose link delays each direction by `delay`.
fn delayed_pair(delay: Duration) -> (MemorySocket, MemorySocket) {
    let (a, a_far) = MemorySocket::new_pair();
    let (b, b_far) = MemorySocket::new_pair();
    let (ar, aw) = tokio::io::split(a_far);
    let (br, bw) = tokio::io::split(b_far);
    tokio::spawn(delay_line(ar, bw, delay));
    tokio::spawn(delay_line(br, aw, delay));
    (a, b)
}

#[tokio::test(start_paused = true)]
async fn the_receive_window_grows_when_read_faster_than_two_rtts() {
    // 5 ms each way: RTT 10 ms. The reader drains each window as soon as it arrives,
    // so windows are consumed well within two RTTs and must grow.
    let (a, b) = delayed_pair(Duration::from_millis(5));
    let (client, _ci) = multiplexing::start(a, Mode::Client, MuxConfig::default());
    let (server, mut incoming) = multiplexing::start(b, Mode::Server, MuxConfig::default());
    within(async {
        while server.rtt().is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(server.rtt(), Some(Duration::from_millis(10)));
        let start = tokio::time::Instant::now();
        let mut s = client.open_stream().await.unwrap();
        let writer = tokio::spawn(async move {
            let chunk = vec![0u8; 64 * KIB];
            for _ in 0..(8 * MIB) / chunk.len() {
                s.write_all(&chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
            s
        });
        let mut r = incoming.next().await.unwrap();
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).await.unwrap();
        assert_eq!(sink.len(), 8 * MIB);
        // A fixed 256 KiB window would need 32 round trips (320 ms) for 8 MiB.
        let took = start.elapsed();
        assert!(took < Duration::from_millis(160), "8 MiB took {took:?}");
        drop(writer.await.unwrap());
    })
    .await;
    assert!(server.stats().window_grows.load(Ordering::Relaxed) > 0);
}

#[tokio::test(start_paused = true)]
async fn a_syn_past_the_stream_cap_is_reset_and_counted() {
    let server_config = MuxConfig {
        max_streams: 2,
        ..MuxConfig::default()
    };
    let ((client, _ci), (server, mut incoming)) = pair(MuxConfig::default(), server_config);
    within(async {
        let mut kept = Vec::new();
        for _ in 0..2 {
            let mut s = client.open_stream().await.unwrap();
            s.write_all(b"x").await.unwrap();
            kept.push((s, incoming.next().await.unwrap()));
        }
        let mut third = client.open_stream().await.unwrap();
        third.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        let err = third.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        assert_eq!(server.stats().streams_refused.load(Ordering::Relaxed), 1);
        // The kept streams still work.
        let (mut out, mut inb) = kept.pop().unwrap();
        out.write_all(b"y").await.unwrap();
        let mut two = [0u8; 2];
        inb.read_exact(&mut two).await.unwrap();
        assert_eq!(&two, b"xy");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn close_sends_go_away_and_the_remote_stops_accepting_and_opening() {
    let ((client, _ci), (server, mut incoming)) = pair(MuxConfig::default(), MuxConfig::default());
    within(async {
        client.close().await.unwrap();
        assert!(client.is_closed());
        assert!(incoming.next().await.is_none(), "Incoming ends on GoAway");
        assert!(server.open_stream().await.is_err());
        assert!(
            server.closed().await.is_ok(),
            "a GoAway(normal) close is clean"
        );
        assert!(client.open_stream().await.is_err());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn writers_that_do_not_read_block_only_their_own_streams() {
    let ((client, mut client_in), (server, mut server_in)) =
        pair(MuxConfig::default(), MuxConfig::default());
    within(async {
        // Each side writes 1 MiB on its own stream that nobody reads yet: both block
        // at the 256 KiB window.
        let mut a = client.open_stream().await.unwrap();
        let a_writer = tokio::spawn(async move {
            a.write_all(&vec![1u8; MIB]).await.unwrap();
            a.shutdown().await.unwrap();
            a
        });
        let mut b = server.open_stream().await.unwrap();
        let b_writer = tokio::spawn(async move {
            b.write_all(&vec![2u8; MIB]).await.unwrap();
            b.shutdown().await.unwrap();
            b
        });
        let mut a_in = server_in.next().await.unwrap();
        let mut b_in = client_in.next().await.unwrap();
        // A third stream still carries a request and its response both ways.
        let mut c = client.open_stream().await.unwrap();
        c.write_all(b"ping").await.unwrap();
        c.shutdown().await.unwrap();
        let mut c_in = server_in.next().await.unwrap();
        let mut req = Vec::new();
        c_in.read_to_end(&mut req).await.unwrap();
        c_in.write_all(b"pong").await.unwrap();
        c_in.shutdown().await.unwrap();
        let mut resp = Vec::new();
        c.read_to_end(&mut resp).await.unwrap();
        assert_eq!(
            (req.as_slice(), resp.as_slice()),
            (&b"ping"[..], &b"pong"[..])
        );
        // Reading drains both blocked writers.
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        a_in.read_to_end(&mut got_a).await.unwrap();
        b_in.read_to_end(&mut got_b).await.unwrap();
        assert_eq!((got_a.len(), got_b.len()), (MIB, MIB));
        drop((a_writer.await.unwrap(), b_writer.await.unwrap()));
    })
    .await;
}

/// Sends `frames` raw to our server and returns how its connection ended and what it
/// wrote back.
async fn violate(frames: Vec<u8>) -> (Result<(), MuxError>, Vec<u8>) {
    let (mut raw, ours) = MemorySocket::new_pair();
    let (control, _incoming) = multiplexing::start(ours, Mode::Server, MuxConfig::default());
    raw.write_all(&frames).await.unwrap();
    let ended = within(control.closed()).await;
    let mut back = Vec::new();
    within(raw.read_to_end(&mut back)).await.unwrap();
    (ended, back)
}

/// Whether `wire` ends with GoAway(protocol error).
fn ends_with_protocol_go_away(wire: &[u8]) -> bool {
    wire.ends_with(&header(3, 0, 0, 1))
}

#[tokio::test(start_paused = true)]
async fn a_bad_version_ends_the_connection_with_a_typed_error_and_go_away() {
    let mut frame = header(0, 1, 1, 0);
    frame[0] = 7;
    let (ended, back) = violate(frame).await;
    assert!(matches!(
        ended,
        Err(MuxError::Protocol(ProtocolError::BadVersion(7)))
    ));
    assert!(ends_with_protocol_go_away(&back));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_frame_type_ends_the_connection_with_a_typed_error_and_go_away() {
    let (ended, back) = violate(header(9, 0, 1, 0)).await;
    assert!(matches!(
        ended,
        Err(MuxError::Protocol(ProtocolError::UnknownFrameType(9)))
    ));
    assert!(ends_with_protocol_go_away(&back));
}

#[tokio::test(start_paused = true)]
async fn sending_past_the_window_ends_the_connection_with_a_typed_error_and_go_away() {
    let mut frames = header(0, 1, 1, 256 * KIB as u32);
    frames.extend(vec![0u8; 256 * KIB]);
    frames.extend(header(0, 0, 1, 1));
    frames.push(0);
    let (ended, back) = violate(frames).await;
    assert!(matches!(
        ended,
        Err(MuxError::Protocol(ProtocolError::WindowExceeded {
            stream: 1,
            len: 1,
            credit: 0
        }))
    ));
    assert!(ends_with_protocol_go_away(&back));
}

#[tokio::test(start_paused = true)]
async fn a_data_frame_longer_than_the_window_is_refused_from_its_header() {
    // Only the header of a 1 GiB frame: refused before any payload is buffered.
    let (ended, back) = violate(header(0, 1, 1, 1 << 30)).await;
    assert!(matches!(
        ended,
        Err(MuxError::Protocol(ProtocolError::WindowExceeded { .. }))
    ));
    assert!(ends_with_protocol_go_away(&back));
}

#[tokio::test(start_paused = true)]
async fn dropping_an_open_stream_resets_it_at_the_remote() {
    let ((client, _ci), (_server, mut incoming)) = pair(MuxConfig::default(), MuxConfig::default());
    within(async {
        let mut s = client.open_stream().await.unwrap();
        s.write_all(b"x").await.unwrap();
        let mut r = incoming.next().await.unwrap();
        let mut one = [0u8; 1];
        r.read_exact(&mut one).await.unwrap();
        drop(s);
        let err = r.read(&mut one).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    })
    .await;
}

#[tokio::test]
async fn an_acceptor_takes_inbound_streams_in_order_and_is_dropped_with_the_connection() {
    let ((client, _ci), (_server, mut incoming)) = pair(MuxConfig::default(), MuxConfig::default());
    within(async {
        // One stream arrives before the acceptor is set: it goes to the acceptor too.
        let mut early = client.open_stream().await.unwrap();
        early.write_all(b"0").await.unwrap();
        early.flush().await.unwrap();
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;

        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        // Dropped with the acceptor: proves the connection lets go of it.
        let alive = Arc::new(());
        let held = Arc::clone(&alive);
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepted = Arc::clone(&order);
        incoming.accept_with(move |mut stream| {
            let _held = &held;
            accepted.lock().unwrap().push(stream.id());
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                tx.send(byte[0]).await.unwrap();
            });
        });
        let mut streams = vec![early];
        for i in 1..5u8 {
            let mut s = client.open_stream().await.unwrap();
            s.write_all(&[b'0' + i]).await.unwrap();
            s.flush().await.unwrap();
            streams.push(s);
        }
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(rx.recv().await.unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, b"01234");
        let order = order.lock().unwrap().clone();
        let opened: Vec<u32> = streams.iter().map(|s| s.id()).collect();
        assert_eq!(order, opened, "accepted in the order they were opened");
        // `Incoming` yields none of them, and ends when the connection does.
        assert!(futures::poll!(incoming.next()).is_pending());
        client.close().await.unwrap();
        assert!(incoming.next().await.is_none());
        while Arc::strong_count(&alive) > 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// Our client on a socket of `capacity` bytes each way whose remote end, returned raw,
/// never reads: with 64 KiB written on a stream, the connection's writes block.
async fn stuck_writer(capacity: usize, close_timeout: Duration) -> (Control, MemorySocket) {
    let (ours, raw) = MemorySocket::new_pair_with_capacity(capacity);
    let config = MuxConfig {
        close_timeout,
        ..MuxConfig::default()
    };
    let (control, _incoming) = multiplexing::start(ours, Mode::Client, config);
    let mut stream = control.open_stream().await.unwrap();
    // Within the stream's window and send buffer: the write completes, the socket does not
    // take it all.
    stream.write_all(&vec![7u8; 64 * KIB]).await.unwrap();
    tokio::spawn(async move {
        // Held open: the data is still queued when the connection closes.
        let _stream = stream;
        std::future::pending::<()>().await;
    });
    // Time stands still until every task waits: the connection's task has filled the
    // socket and waits for room.
    tokio::time::sleep(Duration::from_millis(1)).await;
    (control, raw)
}

#[tokio::test(start_paused = true)]
async fn a_close_the_remote_does_not_read_ends_at_the_close_timeout() {
    let close_timeout = Duration::from_secs(3);
    let (control, mut raw) = stuck_writer(4 * KIB, close_timeout).await;
    let start = tokio::time::Instant::now();
    let ended = within(control.close()).await;
    assert!(matches!(ended, Err(MuxError::CloseTimedOut)), "{ended:?}");
    assert_eq!(start.elapsed(), close_timeout);
    // The socket was dropped: the remote reads what got through, then the end.
    let mut got = Vec::new();
    within(raw.read_to_end(&mut got)).await.unwrap();
    assert!(!got.is_empty() && got.len() < 64 * KIB);
}

#[tokio::test(start_paused = true)]
async fn a_close_after_more_writes_to_a_stuck_connection_still_ends_at_the_close_timeout() {
    let close_timeout = Duration::from_secs(3);
    let (control, _raw) = stuck_writer(4 * KIB, close_timeout).await;
    // Another stream writes while the socket is full: that wakes the connection's task,
    // which cannot write; the close after it must still reach the task.
    let mut more = control.open_stream().await.unwrap();
    more.write_all(b"more").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    let start = tokio::time::Instant::now();
    let ended = within(control.close()).await;
    assert!(matches!(ended, Err(MuxError::CloseTimedOut)), "{ended:?}");
    assert_eq!(start.elapsed(), close_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_close_timeout_too_large_for_the_clock_means_none() {
    let (control, _raw) = stuck_writer(4 * KIB, Duration::MAX).await;
    let closed = tokio::time::timeout(Duration::from_secs(3600), control.close()).await;
    assert!(closed.is_err(), "still closing after an hour: {closed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_protocol_error_of_a_remote_that_does_not_read_ends_at_the_close_timeout() {
    let close_timeout = Duration::from_secs(3);
    let (control, mut raw) = stuck_writer(4 * KIB, close_timeout).await;
    // A frame of an unknown type: GoAway(protocol error) is due but cannot be sent.
    raw.write_all(&header(9, 0, 1, 0)).await.unwrap();
    let start = tokio::time::Instant::now();
    let ended = within(control.closed()).await;
    // The protocol error stays the reason.
    assert!(matches!(ended, Err(MuxError::Protocol(_))), "{ended:?}");
    assert_eq!(start.elapsed(), close_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_close_the_remote_reads_is_clean_and_does_not_wait_for_the_timeout() {
    let (control, mut raw) = stuck_writer(4 * KIB, Duration::from_secs(3)).await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        raw.read_to_end(&mut got).await.unwrap();
        got
    });
    let start = tokio::time::Instant::now();
    // The stream is still open, so its data goes out before the GoAway.
    within(control.close()).await.unwrap();
    assert!(start.elapsed() < Duration::from_secs(3));
    let got = reader.await.unwrap();
    assert!(got.len() > 64 * KIB, "the data, then the GoAway");
}

#[tokio::test(start_paused = true)]
async fn a_remote_that_pings_without_reading_is_no_longer_read() {
    // Every ping owes a pong the remote never reads: once the pongs owed pass the
    // control backlog's limit, the connection stops reading, so the remote's writes
    // block instead of growing what we owe without bound.
    let (ours, mut raw) = MemorySocket::new_pair_with_capacity(4 * KIB);
    let (_control, _incoming) = multiplexing::start(ours, Mode::Server, MuxConfig::default());
    let ping: Vec<u8> = (0..1024u32)
        .flat_map(|i| header(2, 1, 0, i))
        .collect::<Vec<u8>>();
    let mut written = 0usize;
    let flood = async {
        while written < 4 * MIB {
            raw.write_all(&ping).await.unwrap();
            written += ping.len();
        }
    };
    // Time only advances once every task waits: the remote's write is then stuck.
    let stuck = tokio::time::timeout(Duration::from_secs(1), flood).await;
    assert!(
        stuck.is_err(),
        "{written} bytes of pings were read from a remote that reads nothing"
    );
}
