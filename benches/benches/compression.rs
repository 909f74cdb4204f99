//! Compression of application payloads (`validator_network::Compression::Lz4`): bytes a
//! second, compressing and decompressing, on one core, for a block-like payload of
//! repeated transaction kinds and for a payload of random bytes (what does not
//! compress), at 64 KiB and 1 MiB.
//!
//! `cargo bench -p benches --bench compression -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)] // criterion_main! generates an undocumented `main`.
#![allow(clippy::unwrap_used)] // A panic in a bench is a failed run.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use proto::Message;
use proto::consensus::Block;
use validator_network::Compression;

/// An encoded block of about `size` bytes: transactions of four kinds.
fn block_like(size: usize) -> Bytes {
    let mut transactions = Vec::new();
    let mut block = Block::default();
    while block.encoded_len() < size {
        transactions.extend((0..1024).map(|i| 1_000_000 + i % 4));
        block.transactions = transactions.clone();
    }
    Bytes::from(block.encode_to_vec())
}

/// `size` bytes that do not compress.
fn random(size: usize) -> Bytes {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

fn compression(c: &mut Criterion) {
    let mut group = c.benchmark_group("lz4");
    for size in [64 << 10, 1 << 20] {
        for (kind, payload) in [("block", block_like(size)), ("random", random(size))] {
            let label = format!("{kind} {} KiB", payload.len() >> 10);
            group.throughput(Throughput::Bytes(payload.len() as u64));
            group.bench_with_input(BenchmarkId::new("compress", &label), &payload, |b, p| {
                b.iter(|| Compression::Lz4.compress(p.clone()));
            });
            let wire = Compression::Lz4.compress(payload.clone());
            println!(
                "{label}: {} bytes compress to {} ({:.1}%)",
                payload.len(),
                wire.len(),
                100.0 * wire.len() as f64 / payload.len() as f64
            );
            group.bench_with_input(BenchmarkId::new("decompress", &label), &wire, |b, w| {
                b.iter(|| Compression::Lz4.decompress(w.clone(), 8 << 20).unwrap());
            });
        }
    }
    group.finish();
}

criterion_group!(benches, compression);
criterion_main!(benches);
