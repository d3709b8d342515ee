//! Throughput of the tolerant board parser: the SDK's answer as a board sends it (spec §1.5,
//! with a raw quote and a summary), and a worst case of 64 KiB (a board's `max_body`) made of
//! distinct families.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tidegauge_sensor_bridge::parse::parse;

fn block(i: usize) -> String {
    format!(
        "# HELP prom_express_humidity_{i} humidity from both sensors\n# TYPE prom_express_humidity_{i} gauge\n\
         prom_express_humidity_{i}{{sensor=\"None\"}} 0\nprom_express_humidity_{i}{{sensor=\"bme680\"}} 49.4062\n\
         prom_express_humidity_{i}{{sensor=\"si7021\"}} 49.7976\nprom_express_gas_{i} 1060948\n\
         prom_express_site_{i}{{place=\"shed \"north\"\"}} 1\n"
    )
}

const SDK: &str = "# HELP prom_express_gas gas from the bme680 sensor\n# TYPE prom_express_gas gauge\nprom_express_gas 1060948\n\
# HELP prom_express_humidity humidity from both sensors\n# TYPE prom_express_humidity gauge\nprom_express_humidity{sensor=\"None\"} 0\n\
prom_express_humidity{sensor=\"bme680\"} 49.4062\nprom_express_humidity{sensor=\"si7021\"} 49.7976\n\
# HELP prom_express_pressure pressure from the bme680 sensor\n# TYPE prom_express_pressure gauge\nprom_express_pressure 983.25\n\
# HELP prom_express_temperature temperature from both sensors\n# TYPE prom_express_temperature gauge\n\
prom_express_temperature{sensor=\"None\"} 0\nprom_express_temperature{sensor=\"bme680\"} 24.7359\n\
prom_express_temperature{sensor=\"si7021\"} 24.3325\n# HELP prom_express_loop main loop\n# TYPE prom_express_loop summary\n\
prom_express_loop_count 12\nprom_express_loop_total 3.25\n# HELP prom_express_site where\n# TYPE prom_express_site gauge\n\
prom_express_site{place=\"shed \"north\"\"} 1";

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("board_parser");
    g.throughput(Throughput::Bytes(SDK.len() as u64));
    g.bench_function("sdk_answer", |b| b.iter(|| parse(SDK)));
    let mut big = String::new();
    while big.len() < 64 * 1024 {
        big.push_str(&block(big.len()));
    }
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("64KiB_distinct_families", |b| b.iter(|| parse(&big)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
