//! Interop of our yamux multiplexer with rust-yamux (the `yamux` crate), an independent
//! implementation of the same wire format, in both roles: 100 concurrent streams, a
//! 64 MiB transfer, half-close and reset.
#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt};
use memsocket::MemorySocket;
use netcore::multiplexing::{self, Control, Incoming, Mode, MuxConfig, Substream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Generous bound for a whole test; nothing here should take more than a few seconds.
const DEADLINE: Duration = Duration::from_secs(60);

/// rust-yamux's end of a connection: its `Connection` polled by a task.
struct TheirSide {
    open: mpsc::Sender<oneshot::Sender<yamux::Stream>>,
    inbound: mpsc::Receiver<yamux::Stream>,
}

impl TheirSide {
    fn start(socket: MemorySocket, mode: yamux::Mode) -> Self {
        let (open_tx, mut open_rx) = mpsc::channel::<oneshot::Sender<yamux::Stream>>(16);
        let (in_tx, in_rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut conn = yamux::Connection::new(socket.compat(), yamux::Config::default(), mode);
            let mut waiting: Option<oneshot::Sender<yamux::Stream>> = None;
            std::future::poll_fn(|cx| {
                loop {
                    if waiting.is_none()
                        && let Poll::Ready(Some(tx)) = open_rx.poll_recv(cx)
                    {
                        waiting = Some(tx);
                    }
                    if waiting.is_some() {
                        match conn.poll_new_outbound(cx) {
                            Poll::Ready(Ok(s)) => {
                                let _ = waiting.take().unwrap().send(s);
                                continue;
                            }
                            Poll::Ready(Err(_)) => return Poll::Ready(()),
                            Poll::Pending => {}
                        }
                    }
                    match conn.poll_next_inbound(cx) {
                        Poll::Ready(Some(Ok(s))) => {
                            in_tx.try_send(s).unwrap();
                        }
                        Poll::Ready(_) => return Poll::Ready(()),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await;
        });
        Self {
            open: open_tx,
            inbound: in_rx,
        }
    }

    async fn open(&self) -> yamux::Stream {
        let (tx, rx) = oneshot::channel();
        self.open.send(tx).await.unwrap();
        rx.await.unwrap()
    }
}

/// Our end as `mode` and theirs as the other role.
fn connect(our_mode: Mode) -> ((Control, Incoming), TheirSide) {
    let (a, b) = MemorySocket::new_pair();
    let their_mode = match our_mode {
        Mode::Client => yamux::Mode::Server,
        Mode::Server => yamux::Mode::Client,
    };
    (
        multiplexing::start(a, our_mode, MuxConfig::default()),
        TheirSide::start(b, their_mode),
    )
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("test took too long")
}

fn payload(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
        .collect()
}

/// Echoes each of their inbound streams: read to EOF, write it back, close.
fn their_echo_server(mut side: TheirSide) {
    tokio::spawn(async move {
        while let Some(mut s) = side.inbound.recv().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
                s.close().await.unwrap();
            });
        }
    });
}

/// Echoes each of our inbound streams.
fn our_echo_server(mut incoming: Incoming) {
    tokio::spawn(async move {
        while let Some(mut s) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).await.unwrap();
                s.write_all(&buf).await.unwrap();
                s.shutdown().await.unwrap();
            });
        }
    });
}

async fn our_echo_round_trip(mut s: Substream, data: Vec<u8>) {
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, data);
}

#[tokio::test]
async fn hundred_concurrent_streams_ours_client_theirs_server() {
    let ((control, _incoming), theirs) = connect(Mode::Client);
    their_echo_server(theirs);
    within(async {
        let mut tasks = Vec::new();
        for i in 0..100 {
            let s = control.open_stream().await.unwrap();
            tasks.push(tokio::spawn(our_echo_round_trip(s, payload(i, 10_000 + i))));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn hundred_concurrent_streams_theirs_client_ours_server() {
    let ((_control, incoming), theirs) = connect(Mode::Server);
    our_echo_server(incoming);
    within(async {
        let mut tasks = Vec::new();
        for i in 0..100 {
            let mut s = theirs.open().await;
            tasks.push(tokio::spawn(async move {
                let data = payload(i, 10_000 + i);
                s.write_all(&data).await.unwrap();
                s.close().await.unwrap();
                let mut back = Vec::new();
                s.read_to_end(&mut back).await.unwrap();
                assert_eq!(back, data);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
}

const BIG: usize = 64 * 1024 * 1024;

/// A cheap checksum so 64 MiB need not be kept twice.
fn fold(sum: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(sum, |acc, &b| {
        acc.wrapping_mul(1_099_511_628_211)
            .wrapping_add(u64::from(b))
    })
}

#[tokio::test]
async fn a_64_mib_transfer_from_ours_to_theirs_arrives_intact() {
    let ((control, _incoming), mut theirs) = connect(Mode::Client);
    let chunk = payload(7, 1 << 20);
    let expected = (0..BIG / chunk.len()).fold(0, |acc, _| fold(acc, &chunk));
    within(async {
        let mut s = control.open_stream().await.unwrap();
        let writer = tokio::spawn(async move {
            for _ in 0..BIG / chunk.len() {
                s.write_all(&chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
            s
        });
        let mut r = theirs.inbound.recv().await.unwrap();
        let (mut sum, mut total, mut buf) = (0u64, 0usize, vec![0u8; 1 << 16]);
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            sum = fold(sum, &buf[..n]);
            total += n;
        }
        assert_eq!(total, BIG);
        assert_eq!(sum, expected);
        drop(writer.await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn a_64_mib_transfer_from_theirs_to_ours_arrives_intact() {
    let ((_control, mut incoming), theirs) = connect(Mode::Server);
    let chunk = payload(9, 1 << 20);
    let expected = (0..BIG / chunk.len()).fold(0, |acc, _| fold(acc, &chunk));
    within(async {
        let mut s = theirs.open().await;
        tokio::spawn(async move {
            for _ in 0..BIG / chunk.len() {
                s.write_all(&chunk).await.unwrap();
            }
            s.close().await.unwrap();
        });
        let mut r = incoming.next().await.unwrap();
        let (mut sum, mut total, mut buf) = (0u64, 0usize, vec![0u8; 1 << 16]);
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            sum = fold(sum, &buf[..n]);
            total += n;
        }
        assert_eq!(total, BIG);
        assert_eq!(sum, expected);
    })
    .await;
}

#[tokio::test]
async fn half_close_request_then_response_ours_client_theirs_server() {
    let ((control, _incoming), mut theirs) = connect(Mode::Client);
    within(async {
        let mut s = control.open_stream().await.unwrap();
        s.write_all(b"request").await.unwrap();
        s.shutdown().await.unwrap();
        let mut r = theirs.inbound.recv().await.unwrap();
        let mut req = Vec::new();
        r.read_to_end(&mut req).await.unwrap();
        assert_eq!(req, b"request", "their side saw our FIN as EOF");
        r.write_all(b"response").await.unwrap();
        r.close().await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        assert_eq!(
            resp, b"response",
            "our write side was closed, our read side was not"
        );
    })
    .await;
}

#[tokio::test]
async fn half_close_request_then_response_theirs_client_ours_server() {
    let ((_control, mut incoming), theirs) = connect(Mode::Server);
    within(async {
        let mut s = theirs.open().await;
        s.write_all(b"request").await.unwrap();
        s.close().await.unwrap();
        let mut r = incoming.next().await.unwrap();
        let mut req = Vec::new();
        r.read_to_end(&mut req).await.unwrap();
        assert_eq!(req, b"request");
        r.write_all(b"response").await.unwrap();
        r.shutdown().await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        assert_eq!(resp, b"response");
    })
    .await;
}

#[tokio::test]
async fn our_reset_makes_their_writes_fail() {
    let ((control, _incoming), mut theirs) = connect(Mode::Client);
    within(async {
        let mut s = control.open_stream().await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut r = theirs.inbound.recv().await.unwrap();
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).await.unwrap();
        s.reset();
        let chunk = [0u8; 1024];
        loop {
            if r.write_all(&chunk).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn their_reset_makes_our_reads_fail_with_connection_reset() {
    let ((_control, mut incoming), theirs) = connect(Mode::Server);
    within(async {
        let mut s = theirs.open().await;
        s.write_all(b"hello").await.unwrap();
        s.flush().await.unwrap();
        let mut r = incoming.next().await.unwrap();
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).await.unwrap();
        drop(s); // rust-yamux resets a stream dropped while open
        let err = r.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    })
    .await;
}
