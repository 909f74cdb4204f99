//! What the multiplexer costs: single-stream throughput of length-delimited messages
//! (32 B, 4 KiB, 64 KiB) over an in-memory socket, plain versus through the
//! multiplexer, the same over loopback TCP, and the rate of opening streams.
//!
//! Messages go in batches (`feed` each, one `flush`), as the real writers coalesce, so
//! the framing layer does not flush per message. Run briefly with
//! `cargo bench -p benches --bench mux -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::unwrap_used)] // A panic in a bench is a failed run.
#![allow(missing_docs)] // criterion_main! generates an undocumented `main`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::{SinkExt, StreamExt};
use memsocket::MemorySocket;
use netcore::framing::MessageCodec;
use netcore::multiplexing::{self, Mode, MuxConfig, MuxError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_util::codec::Framed;

/// Bytes moved per measured iteration: enough that per-batch costs are amortized the
/// way a busy connection amortizes them.
const BYTES_PER_ITER: usize = 1 << 20;

/// The message sizes of the Diem measurements (32 B, 4 KiB) and a block-sized one.
const SIZES: [usize; 3] = [32, 4 * 1024, 64 * 1024];

/// Largest message the codec accepts in the bench.
const MAX_MESSAGE: usize = 1 << 20;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sends `iters` batches of `BYTES_PER_ITER` in `size`-byte messages from `tx` to `rx`;
/// returns the time taken.
async fn transfer<W, R>(
    tx: &mut Framed<W, MessageCodec>,
    rx: &mut Framed<R, MessageCodec>,
    size: usize,
    iters: u64,
) -> Duration
where
    W: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + AsyncWrite + Unpin,
{
    let msg = Bytes::from(vec![0x5a; size]);
    let per_batch = BYTES_PER_ITER / size;
    let start = Instant::now();
    for _ in 0..iters {
        let send = async {
            for _ in 0..per_batch {
                tx.feed(msg.clone()).await.unwrap();
            }
            tx.flush().await.unwrap();
        };
        let receive = async {
            for _ in 0..per_batch {
                let got = rx.next().await.unwrap().unwrap();
                assert_eq!(got.len(), size);
            }
        };
        tokio::join!(send, receive);
    }
    start.elapsed()
}

/// A connected pair of sockets of one kind.
trait Link: AsyncRead + AsyncWrite + Unpin + Send + 'static + Sized {
    /// Connects a pair.
    fn pair(rt: &Runtime) -> (Self, Self);
}

impl Link for MemorySocket {
    fn pair(_rt: &Runtime) -> (Self, Self) {
        MemorySocket::new_pair()
    }
}

impl Link for TcpStream {
    fn pair(rt: &Runtime) -> (Self, Self) {
        rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (a, z) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let (a, z) = (a.unwrap(), z.unwrap().0);
            a.set_nodelay(true).unwrap();
            z.set_nodelay(true).unwrap();
            (a, z)
        })
    }
}

/// Plain versus multiplexed throughput over links of kind `L`.
fn throughput_over<L: Link>(c: &mut Criterion, group_name: &str) {
    let rt = runtime();
    let mut group = c.benchmark_group(group_name);
    group.throughput(Throughput::Bytes(BYTES_PER_ITER as u64));
    for size in SIZES {
        group.bench_with_input(BenchmarkId::new("plain", size), &size, |b, &size| {
            let (a, z) = L::pair(&rt);
            let mut tx = Framed::new(a, MessageCodec::new(MAX_MESSAGE));
            let mut rx = Framed::new(z, MessageCodec::new(MAX_MESSAGE));
            b.iter_custom(|iters| rt.block_on(transfer(&mut tx, &mut rx, size, iters)));
        });
        group.bench_with_input(BenchmarkId::new("mux", size), &size, |b, &size| {
            let (a, z) = L::pair(&rt);
            let (mut tx, mut rx, _controls) = rt.block_on(async {
                let (client, _client_in) =
                    multiplexing::start(a, Mode::Client, MuxConfig::default());
                let (server, mut server_in) =
                    multiplexing::start(z, Mode::Server, MuxConfig::default());
                let out = client.open_stream().await.unwrap();
                let mut tx = Framed::new(out, MessageCodec::new(MAX_MESSAGE));
                tx.send(Bytes::from_static(b"hello")).await.unwrap();
                let inbound = server_in.next().await.unwrap();
                let mut rx = Framed::new(inbound, MessageCodec::new(MAX_MESSAGE));
                rx.next().await.unwrap().unwrap();
                (tx, rx, (client, server))
            });
            b.iter_custom(|iters| rt.block_on(transfer(&mut tx, &mut rx, size, iters)));
        });
    }
    group.finish();
}

/// Over the in-memory socket: the multiplexer's own cost, with nothing to hide it.
fn throughput(c: &mut Criterion) {
    throughput_over::<MemorySocket>(c, "mux_throughput");
}

/// Over loopback TCP: the cost as a real connection sees it (system calls included).
fn throughput_tcp(c: &mut Criterion) {
    throughput_over::<TcpStream>(c, "mux_throughput_tcp");
}

fn stream_open_rate(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("mux_open");
    group.throughput(Throughput::Elements(1));
    group.bench_function("open_send_close", |b| {
        let (client, mut server_in, _server) = rt.block_on(async {
            let (a, z) = MemorySocket::new_pair();
            let (client, _client_in) = multiplexing::start(a, Mode::Client, MuxConfig::default());
            let (server, server_in) = multiplexing::start(z, Mode::Server, MuxConfig::default());
            (client, server_in, server)
        });
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let open = async {
                    for _ in 0..iters {
                        let mut s = loop {
                            match client.open_stream().await {
                                Ok(s) => break s,
                                // At the stream cap: let the other side catch up.
                                Err(MuxError::TooManyStreams(_)) => tokio::task::yield_now().await,
                                Err(e) => panic!("open failed: {e}"),
                            }
                        };
                        s.write_all(&[7u8; 32]).await.unwrap();
                        s.shutdown().await.unwrap();
                    }
                };
                let accept = async {
                    for _ in 0..iters {
                        let mut s = server_in.next().await.unwrap();
                        let mut buf = Vec::new();
                        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf)
                            .await
                            .unwrap();
                        // The opener may already have dropped its end (it does not
                        // wait for our FIN), so this shutdown may see a reset.
                        let _ = s.shutdown().await;
                    }
                };
                tokio::join!(open, accept);
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(benches, throughput, throughput_tcp, stream_open_rate);
criterion_main!(benches);
