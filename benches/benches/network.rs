//! The full stack (socket, Noise, handshake, multiplexer, network): RPC round-trip
//! latency with one request in flight, RPC rate with 64 in flight, and DirectSend
//! messages per second, over memsocket and loopback TCP. 32-byte payloads.
//!
//! Both nodes run in one process on one current-thread tokio runtime, so the figures
//! include both ends' work on one core.
//!
//! `cargo bench -p benches --bench network -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // criterion_main! generates an undocumented `main`.
#![allow(clippy::unwrap_used)] // A panic in a bench is a failed run.

use std::time::{Duration, Instant};

use benches::stack::{
    BENCH_RPC_TIMEOUT, DIRECT, RPC, Socket, connected_pair, echo_server, message_counter,
};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use network::SendError;
use tokio::runtime::Runtime;

const PAYLOAD: &[u8; 32] = &[0x5a; 32];
const SOCKETS: [Socket; 2] = [Socket::Memory, Socket::Tcp];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn rpc(c: &mut Criterion) {
    let mut group = c.benchmark_group("rpc");
    for socket in SOCKETS {
        let rt = runtime();
        let (a, mut b) = rt.block_on(connected_pair(socket));
        rt.spawn(echo_server(b.events.take().unwrap()));
        let peer = b.peer_id;
        let payload = Bytes::from_static(PAYLOAD);

        group.throughput(Throughput::Elements(1));
        group.bench_function(
            BenchmarkId::new("latency_1_in_flight", socket.label()),
            |bench| {
                bench.to_async(&rt).iter(|| async {
                    a.sender
                        .rpc(peer, RPC, payload.clone(), BENCH_RPC_TIMEOUT)
                        .await
                        .unwrap()
                })
            },
        );

        group.bench_function(
            BenchmarkId::new("rate_64_in_flight", socket.label()),
            |bench| {
                bench.to_async(&rt).iter_custom(|iters| {
                    let sender = a.sender.clone();
                    let payload = payload.clone();
                    async move {
                        let start = Instant::now();
                        let mut in_flight = FuturesUnordered::new();
                        let mut issued = 0u64;
                        while issued < iters.min(64) {
                            in_flight.push(sender.rpc(
                                peer,
                                RPC,
                                payload.clone(),
                                BENCH_RPC_TIMEOUT,
                            ));
                            issued += 1;
                        }
                        while let Some(result) = in_flight.next().await {
                            result.unwrap();
                            if issued < iters {
                                in_flight.push(sender.rpc(
                                    peer,
                                    RPC,
                                    payload.clone(),
                                    BENCH_RPC_TIMEOUT,
                                ));
                                issued += 1;
                            }
                        }
                        start.elapsed()
                    }
                })
            },
        );
        drop((a, b));
    }
    group.finish();
}

fn direct_send(c: &mut Criterion) {
    let mut group = c.benchmark_group("direct_send");
    for socket in SOCKETS {
        let rt = runtime();
        let (a, mut b) = rt.block_on(connected_pair(socket));
        let (progress_tx, progress) = tokio::sync::watch::channel(0u64);
        rt.spawn(message_counter(b.events.take().unwrap(), progress_tx));
        let peer = b.peer_id;
        let payload = Bytes::from_static(PAYLOAD);

        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("32B_messages", socket.label()), |bench| {
            bench.to_async(&rt).iter_custom(|iters| {
                let sender = a.sender.clone();
                let payload = payload.clone();
                let mut progress = progress.clone();
                async move {
                    let target = *progress.borrow() + iters;
                    let start = Instant::now();
                    let mut sent = 0;
                    while sent < iters {
                        match sender.send_to(peer, DIRECT, payload.clone()) {
                            Ok(()) => sent += 1,
                            // The queue is full: let the writer drain it.
                            Err(SendError::QueueFull) => tokio::task::yield_now().await,
                            Err(e) => panic!("send failed: {e}"),
                        }
                    }
                    progress.wait_for(|count| *count >= target).await.unwrap();
                    start.elapsed()
                }
            })
        });
        drop((a, b));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = rpc, direct_send
}
criterion_main!(benches);
