//! `cargo xtask bench models`, end to end: the release binary with 1,000 model metrics on a
//! 60 s step against a local Prometheus-compatible API: the first cycle as a request runs it,
//! resident memory, and the CPU a round of background cycles takes.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::bench::{free_port, rss_kib, start_host};

const METRICS: usize = 1_000;

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A query_range answer: 60 points of a noisy ramp, whatever the query.
async fn query_range() -> axum::response::Response {
    use axum::response::IntoResponse;
    let values: Vec<serde_json::Value> = (0..60)
        .map(|i| {
            let v = 100.0 + 0.5 * i as f64 + ((i * 7919) % 13) as f64 / 13.0;
            serde_json::json!([1_700_000_000 + 60 * i, v.to_string()])
        })
        .collect();
    axum::Json(
        serde_json::json!({"status": "success", "data": {"resultType": "matrix",
        "result": [{"metric": {"__name__": "bench"}, "values": values}]}}),
    )
    .into_response()
}

pub fn run(cargo: &str) -> Result<(), String> {
    crate::run(Command::new(cargo).args(["build", "--release", "-p", "tidegauge"]))?;
    let bin = crate::root().join("target/release/tidegauge");
    let dir = crate::root().join("target/bench/models");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let prom = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| e.to_string())?;
    let prom_addr = prom.local_addr().map_err(|e| e.to_string())?;
    rt.spawn(async move {
        let app = axum::Router::new().route("/api/v1/query_range", axum::routing::get(query_range));
        let _ = axum::serve(prom, app).await;
    });
    let cfg = dir.join("tidegauge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collectors.app-status]\nenabled = false\n[collectors.icos-push]\ndata_dir = \"{}\"\n[collectors.icos-push.models]\nprometheus_url = \"http://{prom_addr}\"\n",
            dir.join("data").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let port = free_port()?;
    let host = start_host(&bin, &cfg, port)?;
    let pid = host.0.id();
    let base = format!("http://127.0.0.1:{port}");
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_kib(pid).unwrap_or(0);
    let http = tidegauge_core::http::client().map_err(|e| e.to_string())?;
    let mut latencies = Vec::with_capacity(METRICS);
    let started = Instant::now();
    rt.block_on(async {
        for i in 0..METRICS {
            let body = serde_json::json!({"metric_type": 2, "metric_name": format!("bench_forecast_{i}"),
                "labels": {"node": format!("n{i}")}, "telemetry_metrics": ["bench"],
                "model_tag": "embedded:linear", "steps_back": 60, "step_in_seconds": 60});
            let t = Instant::now();
            let r = http
                .post(format!("{base}/create_model_metric"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("create_model_metric answered {}", r.status()));
            }
            latencies.push(t.elapsed());
        }
        Ok::<(), String>(())
    })?;
    let created = started.elapsed();
    let after = rss_kib(pid).unwrap_or(0);
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    // One round of background cycles: every metric's step passes once.
    let cpu_before = cpu_seconds(pid).unwrap_or(0.0);
    std::thread::sleep(Duration::from_secs(65));
    let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let cycled = rss_kib(pid).unwrap_or(0);
    let (_, body) = rt.block_on(async {
        let r = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((r.status(), r.text().await.map_err(|e| e.to_string())?))
    })?;
    let errors = body
        .lines()
        .filter(|l| l.starts_with("tidegauge_icos_push_model_errors_total{"))
        .count();
    drop(host);
    println!(
        "\n== model metrics: {METRICS} embedded:linear metrics, 60 points each, 60 s step, local query_range"
    );
    println!(
        "first cycle inside create_model_metric (query, forecast, value and definition committed): median {:.2} ms, p99 {:.2} ms; {METRICS} created in {:.1} s",
        median.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        created.as_secs_f64()
    );
    println!(
        "resident memory: idle {idle} KiB, with {METRICS} model metrics {after} KiB ({:.1} KiB each), after a round of background cycles {cycled} KiB",
        (after.saturating_sub(idle)) as f64 / METRICS as f64
    );
    println!(
        "background: {cpu:.2} CPU seconds over 65 s ({:.2} ms per cycle); series with failed cycles: {errors}",
        cpu * 1e3 / METRICS as f64
    );
    Ok(())
}
