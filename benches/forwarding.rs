//! The forwarding path of one media worker: one SRTP packet from a publisher
//! in, SRTP-decrypted once, re-encrypted and queued once per subscriber.
//! No sockets: the datagrams go in and come out of the worker's `Shard`
//! in memory, so this is the cost a worker thread pays per packet.
//!
//!     cargo bench --bench forwarding

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use callgate_sfu::bench_support::ForwardingBench;

fn fan_out(c: &mut Criterion) {
    fan_out_as(c, "forward_video_1200B", ForwardingBench::new);
    // What send-side estimation adds per subscriber: the transport-wide
    // number on each packet and its record in the send history.
    fan_out_as(
        c,
        "forward_video_1200B_without_send_side",
        ForwardingBench::without_send_side_estimation,
    );
}

fn fan_out_as(c: &mut Criterion, name: &str, make: fn(usize, usize) -> ForwardingBench) {
    let mut group = c.benchmark_group(name);
    for subscribers in [1usize, 10, 50, 200] {
        let mut bench = make(subscribers, 1200);
        // Settle payload types and DTLS before timing.
        for _ in 0..10 {
            let d = bench.next_datagrams();
            bench.deliver(&d);
        }
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                // Only `deliver` is timed: making the publisher's packet is
                // the client's work, not the server's.
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let datagrams = bench.next_datagrams();
                        let start = Instant::now();
                        let sent = bench.deliver(&datagrams);
                        spent += start.elapsed();
                        assert_eq!(sent, bench.subscribers());
                    }
                    spent
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
