//! The backup pipeline's stages in MB/s: chunk, hash, compress, encrypt, erasure-code.
//! Run: `cargo bench -p swarmbak-format --bench stages`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rayon::prelude::*;
use swarmbak_format::{chunker, crypto, erasure};

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn text(n: usize) -> Vec<u8> {
    let words = [
        "backup ",
        "swarm ",
        "piece ",
        "shard ",
        "tracker ",
        "invoice ",
        "meeting\n",
        "report ",
    ];
    let mut v = Vec::with_capacity(n);
    let mut i = 7usize;
    while v.len() < n {
        i = i.wrapping_mul(2_654_435_761) % 1_000_003;
        v.extend_from_slice(words[i % words.len()].as_bytes());
    }
    v.truncate(n);
    v
}

fn stages(c: &mut Criterion) {
    let data = random(64 << 20, 1);
    let txt = text(16 << 20);
    let mut g = c.benchmark_group("stages");
    g.sample_size(10);

    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("chunk (FastCDC, 1 MiB avg)", |b| {
        b.iter(|| chunker::chunk_lengths(&data).len())
    });
    g.bench_function("hash (keyed BLAKE3, 1 thread)", |b| {
        b.iter(|| blake3::keyed_hash(&[7u8; 32], &data))
    });
    g.bench_function("hash (SHA-1 pieces)", |b| {
        use sha1::Digest;
        b.iter(|| sha1::Sha1::digest(&data))
    });
    g.bench_function("hash (Merkle roots, 1 MiB shards)", |b| {
        b.iter(|| {
            data.chunks(swarmbak_core::MAX_SHARD)
                .map(swarmbak_core::merkle::root)
                .count()
        })
    });

    let one = &data[..16 << 20];
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_function("compress (zstd 3, random)", |b| {
        b.iter(|| zstd::bulk::compress(one, 3).map(|v| v.len()))
    });
    g.throughput(Throughput::Bytes(txt.len() as u64));
    g.bench_function("compress (zstd 3, text)", |b| {
        b.iter(|| zstd::bulk::compress(&txt, 3).map(|v| v.len()))
    });

    let id = crypto::Identity::generate();
    let rec = vec![id.to_public(), crypto::Identity::generate().to_public()];
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_function("encrypt (age, one 16 MiB pack, 1 thread)", |b| {
        b.iter(|| crypto::encrypt(&rec, one).map(|v| v.len()))
    });
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("encrypt (age, 4 packs in parallel)", |b| {
        b.iter(|| {
            data.par_chunks(16 << 20)
                .map(|p| crypto::encrypt(&rec, p).map(|v| v.len()).unwrap_or(0))
                .sum::<usize>()
        })
    });
    let ids = crypto::Identities::from_identity(id);
    let ct = crypto::encrypt(&rec, one).expect("encrypts");
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_function("decrypt (age, 16 MiB, 1 thread)", |b| {
        b.iter(|| crypto::decrypt(&ids, &ct).map(|v| v.len()))
    });

    for (k, m) in [(8usize, 4usize), (8, 8)] {
        let stripe = &data[..k << 20];
        g.throughput(Throughput::Bytes(stripe.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("erasure-code (1 MiB shards)", format!("{k}+{m}")),
            &stripe,
            |b, s| b.iter(|| erasure::encode(k, m, s).map(|p| p.len())),
        );
    }
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
