//! Diem's table, reproduced: single-stream throughput of length-delimited messages of
//! 32 B, 4 KiB and 64 KiB over {memsocket, TCP} × {plain, +Noise, +mux, +Noise+mux}, and
//! the substream open rate over the full connection stack.
//!
//! Messages go out in batches (`feed` each, one `flush` per batch), as a DirectSend
//! writer sends them. Both ends run on one current-thread tokio runtime, so each figure
//! includes both ends' work on one core.
//!
//! `cargo bench -p benches --bench transport -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // criterion_main! generates an undocumented `main`.
#![allow(clippy::unwrap_used)] // A panic in a bench is a failed run.

use std::time::{Duration, Instant};

use benches::layers::{Layers, noise_pair, pair, sockets};
use benches::stack::Socket;
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::{SinkExt, StreamExt};
use netcore::framing::MessageCodec;
use netcore::multiplexing::{self, Mode, MuxConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, FramedWrite};

const SIZES: [usize; 3] = [32, 4 * 1024, 64 * 1024];
const SOCKETS: [Socket; 2] = [Socket::Memory, Socket::Tcp];
/// Bytes the framed writer buffers before it writes: one full Noise frame's worth, so
/// that every layer below sees the same write sizes.
const WRITE_BUFFER: usize = 64 * 1024;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("throughput");
    for socket in SOCKETS {
        for layers in Layers::ALL {
            for size in SIZES {
                let rt = runtime();
                let conn = rt.block_on(pair(socket, layers));
                let mut writer = FramedWrite::new(conn.client, MessageCodec::new(size));
                writer.set_backpressure_boundary(WRITE_BUFFER);
                let writer = std::sync::Arc::new(tokio::sync::Mutex::new(writer));
                let (progress_tx, progress) = watch::channel(0u64);
                let mut reader = FramedRead::new(conn.server, MessageCodec::new(size));
                rt.spawn(async move {
                    let mut count = 0u64;
                    while let Some(Ok(_)) = reader.next().await {
                        count += 1;
                        progress_tx.send_replace(count);
                    }
                });
                let message = Bytes::from(vec![0xa5u8; size]);
                let id = BenchmarkId::new(format!("{}/{}", socket.label(), layers.label()), size);
                group.throughput(Throughput::Bytes(size as u64));
                group.bench_function(id, |bench| {
                    bench.to_async(&rt).iter_custom(|iters| {
                        let mut progress = progress.clone();
                        let writer = std::sync::Arc::clone(&writer);
                        let message = message.clone();
                        async move {
                            let mut writer = writer.lock().await;
                            let target = *progress.borrow() + iters;
                            let start = Instant::now();
                            for _ in 0..iters {
                                writer.feed(message.clone()).await.unwrap();
                            }
                            writer.flush().await.unwrap();
                            progress.wait_for(|n| *n >= target).await.unwrap();
                            start.elapsed()
                        }
                    })
                });
                drop(conn.controls);
            }
        }
    }
    group.finish();
}

fn stream_open(c: &mut Criterion) {
    /// Streams opened before waiting for the listener to finish them: below the
    /// default stream cap, so no open is refused.
    const BATCH: u64 = 64;
    let mut group = c.benchmark_group("stream_open");
    for socket in SOCKETS {
        let rt = runtime();
        let (client_control, progress) = rt.block_on(async {
            let (client, server) = sockets(socket).await;
            let (client, server) = noise_pair(client, server).await;
            let (client_control, _) =
                multiplexing::start(client, Mode::Client, MuxConfig::default());
            let (server_control, mut incoming) =
                multiplexing::start(server, Mode::Server, MuxConfig::default());
            let (tx, rx) = watch::channel(0u64);
            tokio::spawn(async move {
                let _keep = server_control;
                let mut done = 0u64;
                while let Some(mut stream) = incoming.next().await {
                    let mut buf = Vec::new();
                    let _ = stream.read_to_end(&mut buf).await;
                    done += 1;
                    tx.send_replace(done);
                }
            });
            (client_control, rx)
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("noise+mux", socket.label()), |bench| {
            bench.to_async(&rt).iter_custom(|iters| {
                let control = client_control.clone();
                let mut progress = progress.clone();
                async move {
                    let start = Instant::now();
                    let mut opened = 0;
                    while opened < iters {
                        let batch = BATCH.min(iters - opened);
                        let target = *progress.borrow() + batch;
                        for _ in 0..batch {
                            let mut stream = control.open_stream().await.unwrap();
                            stream.write_all(b"x").await.unwrap();
                            stream.shutdown().await.unwrap();
                        }
                        progress.wait_for(|n| *n >= target).await.unwrap();
                        opened += batch;
                    }
                    start.elapsed()
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = throughput, stream_open
}
criterion_main!(benches);
