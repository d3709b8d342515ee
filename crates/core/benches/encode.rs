//! Encoding throughput of both exposition formats for a large snapshot.
#![allow(missing_docs)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tidegauge_core::encode::{encode_openmetrics, encode_text};
use tidegauge_core::{MetricFamily, Snapshot, labels};

fn snapshot(series: usize) -> Arc<Snapshot> {
    let mut s = Snapshot::new();
    let per_family = 100;
    for f in 0..series / per_family {
        let mut fam =
            MetricFamily::gauge(format!("bench_family_{f}_seconds"), "A benchmark family");
        for i in 0..per_family {
            fam.push(
                labels([
                    ("dataset", &format!("dataset-{i}")),
                    ("dashboard", "caloos"),
                ]),
                i as f64 * 1.5,
            );
        }
        s.push(fam);
    }
    Arc::new(s)
}

fn bench(c: &mut Criterion) {
    let parts = [snapshot(10_000)];
    c.bench_function("encode_text_10k_series", |b| b.iter(|| encode_text(&parts)));
    c.bench_function("encode_openmetrics_10k_series", |b| {
        b.iter(|| encode_openmetrics(&parts))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
