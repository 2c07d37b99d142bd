//! The send-side estimate's cost per subscriber: recording each packet
//! forwarded to it (its transport-wide number, send time and size) and
//! reading its transport-wide feedback, every 100 ms, into the estimate.
//! One iteration is 100 ms of one subscriber's traffic at the rate named
//! (1,200-byte packets), so the time per iteration × 10 is the CPU time a
//! worker spends per second per subscriber on estimation.
//!
//!     cargo bench --bench estimator

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use callgate_sfu::bench_support::EstimatorBench;

fn per_subscriber(c: &mut Criterion) {
    let mut group = c.benchmark_group("send_side_estimate_100ms");
    // 500 kbit/s (h), 1.5 Mbit/s (f), 5 Mbit/s: packets per 100 ms.
    for (kbps, packets) in [(500u32, 5u16), (1_500, 16), (5_000, 52)] {
        let mut bench = EstimatorBench::new(packets);
        group.throughput(Throughput::Elements(u64::from(packets)));
        group.bench_with_input(BenchmarkId::new("kbps", kbps), &kbps, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let feedback = bench.next_feedback();
                    let start = Instant::now();
                    let estimate = bench.round(&feedback);
                    spent += start.elapsed();
                    assert!(estimate >= 50_000, "{estimate}");
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(benches, per_subscriber);
criterion_main!(benches);
