//! Noise benchmarks: `NoiseStream` throughput over memsocket and loopback TCP (64 KiB and
//! 32 B writes), handshakes per second, raw `snow` encryption of full frames per suite
//! and backend (the figures behind `noise::DEFAULT_SUITE`), and one X25519 by the
//! Montgomery ladder against `noise::x25519_shared`.
//!
//! `cargo bench -p benches --bench noise -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // criterion_main! generates an undocumented `main`.
#![allow(clippy::unwrap_used)] // A panic in a bench is a failed run.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use memsocket::MemorySocket;
use noise::{
    CryptoBackend, Identity, MAX_FRAME_PAYLOAD_LEN, NoiseConfig, NoiseProtocol, NoiseStream,
    NoiseSuite, NoiseUpgrader,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const SUITES: [NoiseSuite; 4] = [
    NoiseSuite {
        protocol: NoiseProtocol::ChaChaPolyBlake2s,
        backend: CryptoBackend::RustCrypto,
    },
    NoiseSuite {
        protocol: NoiseProtocol::ChaChaPolyBlake2s,
        backend: CryptoBackend::Ring,
    },
    NoiseSuite {
        protocol: NoiseProtocol::AesGcmSha256,
        backend: CryptoBackend::RustCrypto,
    },
    NoiseSuite {
        protocol: NoiseProtocol::AesGcmSha256,
        backend: CryptoBackend::Ring,
    },
];

fn suite_label(suite: NoiseSuite) -> String {
    format!("{:?}/{:?}", suite.protocol, suite.backend)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two transport states after an IK handshake in `suite`.
fn snow_pair(suite: NoiseSuite) -> (snow::TransportState, snow::TransportState) {
    let builder = suite.builder().unwrap();
    let (i_key, r_key) = (
        builder.generate_keypair().unwrap(),
        builder.generate_keypair().unwrap(),
    );
    let mut initiator = suite
        .builder()
        .unwrap()
        .local_private_key(&i_key.private)
        .unwrap()
        .remote_public_key(&r_key.public)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut responder = suite
        .builder()
        .unwrap()
        .local_private_key(&r_key.private)
        .unwrap()
        .build_responder()
        .unwrap();
    let (mut buf, mut out) = ([0u8; 1024], [0u8; 1024]);
    let len = initiator.write_message(&[], &mut buf).unwrap();
    responder.read_message(&buf[..len], &mut out).unwrap();
    let len = responder.write_message(&[], &mut buf).unwrap();
    initiator.read_message(&buf[..len], &mut out).unwrap();
    (
        initiator.into_transport_mode().unwrap(),
        responder.into_transport_mode().unwrap(),
    )
}

fn raw_snow(c: &mut Criterion) {
    let mut group = c.benchmark_group("noise/raw_snow_encrypt_64KiB");
    group.throughput(Throughput::Bytes(MAX_FRAME_PAYLOAD_LEN as u64));
    let plain = vec![7u8; MAX_FRAME_PAYLOAD_LEN];
    let mut frame = vec![0u8; 65535];
    for suite in SUITES {
        let (mut sender, _) = snow_pair(suite);
        group.bench_function(BenchmarkId::from_parameter(suite_label(suite)), |b| {
            b.iter(|| sender.write_message(&plain, &mut frame).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("noise/raw_snow_decrypt_64KiB");
    group.throughput(Throughput::Bytes(MAX_FRAME_PAYLOAD_LEN as u64));
    for suite in SUITES {
        let (mut sender, mut receiver) = snow_pair(suite);
        // Decrypting needs fresh frames in nonce order: encrypt a batch ahead, untimed.
        group.bench_function(BenchmarkId::from_parameter(suite_label(suite)), |b| {
            b.iter_custom(|iters| {
                let frames: Vec<Vec<u8>> = (0..iters)
                    .map(|_| {
                        let mut f = vec![0u8; 65535];
                        let n = sender.write_message(&plain, &mut f).unwrap();
                        f.truncate(n);
                        f
                    })
                    .collect();
                let mut out = vec![0u8; 65535];
                let start = Instant::now();
                for f in &frames {
                    receiver.read_message(f, &mut out).unwrap();
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

async fn upgrade<IO>(a: IO, b: IO) -> (NoiseStream<IO>, NoiseStream<IO>)
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

/// Sends `total` bytes in writes of `write_size`, flushing once at the end, while the
/// other side reads them all; returns the time taken.
async fn transfer<IO>(
    a: &mut NoiseStream<IO>,
    b: &mut NoiseStream<IO>,
    write_size: usize,
    total: usize,
    data: &[u8],
    sink: &mut [u8],
) -> Duration
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let writer = async {
        let mut sent = 0;
        while sent < total {
            a.write_all(&data[..write_size]).await.unwrap();
            sent += write_size;
        }
        a.flush().await.unwrap();
    };
    let reader = async {
        let mut got = 0;
        while got < total {
            got += b.read(sink).await.unwrap();
        }
    };
    tokio::join!(writer, reader);
    start.elapsed()
}

fn stream_throughput(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("noise/stream");
    let data = vec![5u8; 64 * 1024];
    let mut sink = vec![0u8; 256 * 1024];
    for (write_size, total) in [(64 * 1024, 8 << 20), (32, 1 << 20)] {
        group.throughput(Throughput::Bytes(total as u64));
        let (mut a, mut b) = rt.block_on(async {
            let (a, b) = MemorySocket::new_pair();
            upgrade(a, b).await
        });
        group.bench_function(BenchmarkId::new("memsocket", write_size), |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        t += transfer(&mut a, &mut b, write_size, total, &data, &mut sink).await;
                    }
                    t
                })
            })
        });
        let (mut a, mut b) = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let (a, b) = (a.unwrap(), b.unwrap().0);
            a.set_nodelay(true).unwrap();
            b.set_nodelay(true).unwrap();
            upgrade(a, b).await
        });
        group.bench_function(BenchmarkId::new("tcp", write_size), |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        t += transfer(&mut a, &mut b, write_size, total, &data, &mut sink).await;
                    }
                    t
                })
            })
        });
    }
    group.finish();
}

fn handshakes(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("noise/handshake");
    group.throughput(Throughput::Elements(1));
    for suite in SUITES {
        let (alice, bob) = (Identity::generate(), Identity::generate());
        let bob_id = bob.peer_id();
        let mut config = NoiseConfig::open();
        config.suite = suite;
        let up_a = NoiseUpgrader::new(alice, config.clone());
        let up_b = NoiseUpgrader::new(bob, config);
        group.bench_function(BenchmarkId::new("memsocket", suite_label(suite)), |bench| {
            bench.iter(|| {
                rt.block_on(async {
                    let (a, b) = MemorySocket::new_pair();
                    let (out, inb) =
                        tokio::join!(up_a.upgrade_outbound(a, bob_id), up_b.upgrade_inbound(b));
                    out.unwrap();
                    inb.unwrap();
                })
            })
        });
    }
    group.finish();
}

/// One X25519 with an honest (on-curve) key: curve25519-dalek's Montgomery ladder, and
/// the handshake's `x25519_shared` (the Edwards form, vectorised where the CPU allows).
fn x25519(c: &mut Criterion) {
    use curve25519_dalek::montgomery::MontgomeryPoint;
    let mut group = c.benchmark_group("x25519");
    let secret = [0x5au8; 32];
    let public = MontgomeryPoint::mul_base_clamped([0x33u8; 32]).to_bytes();
    group.bench_function("montgomery_ladder", |b| {
        b.iter(|| {
            MontgomeryPoint(std::hint::black_box(public)).mul_clamped(std::hint::black_box(secret))
        })
    });
    group.bench_function("x25519_shared", |b| {
        b.iter(|| {
            noise::x25519_shared(&std::hint::black_box(secret), &std::hint::black_box(public))
        })
    });
    group.finish();
}

criterion_group!(benches, raw_snow, stream_throughput, handshakes, x25519);
criterion_main!(benches);
