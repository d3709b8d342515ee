//! Forecasts per second of each embedded model on a 1,000-point series (a trend, a daily season
//! of 24 steps and noise), as a model metric's cycle runs them.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use tidegauge_icos_push::forecast::{Model, forecast};

fn series() -> Vec<f64> {
    // A fixed pseudo-random walk keeps runs comparable.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..1000)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state % 1000) as f64 / 1000.0 - 0.5;
            20.0 + 0.01 * i as f64 + 5.0 * (std::f64::consts::TAU * i as f64 / 24.0).sin() + noise
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let y = series();
    let mut g = c.benchmark_group("forecast_1000_points");
    g.sample_size(10);
    for (name, model, period) in [
        ("linear", Model::Linear, None),
        ("ets", Model::Ets, None),
        ("mstl_period_given", Model::Mstl, Some(24)),
        ("mstl_period_detected", Model::Mstl, None),
        ("auto", Model::Auto, None),
    ] {
        g.bench_function(name, |b| b.iter(|| forecast(model, &y, period)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
