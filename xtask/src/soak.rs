//! `cargo xtask soak`: the release binary under a long mixed load: 100,000 scrapes and 100,000
//! durable pushes, with probes and reloads among them. It passes when resident memory after the
//! run is within 10 % of after the warm-up, no file descriptors leak, and every acknowledged
//! push is there at the end. Loopback only, bounded in count.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bench::{free_port, rss_kib, start_host};
use crate::demo::sample_status_app;

/// Requests in flight at once (each of scrapes and pushes).
const CONCURRENCY: usize = 8;

fn open_fds(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(Iterator::count)
}

/// What one phase did.
#[derive(Debug, Default)]
struct Tally {
    scrapes: AtomicU64,
    pushes_acked: AtomicU64,
    failures: AtomicU64,
}

/// Runs `scrapes` scrapes and `pushes` counter increments (each acknowledged one counted),
/// with a probe every 100 scrapes and a reload every 10,000 pushes.
async fn phase(base: &str, app: &str, scrapes: u64, pushes: u64, tally: &Arc<Tally>) {
    let Ok(http) = tidegauge_core::http::builder().build() else {
        tally.failures.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let next_scrape = Arc::new(AtomicU64::new(0));
    let next_push = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, root, app) = (http.clone(), base.to_owned(), app.to_owned());
        let (next, counts) = (Arc::clone(&next_scrape), Arc::clone(tally));
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < scrapes {
                let n = counts.scrapes.fetch_add(1, Ordering::Relaxed);
                let url = if n % 100 == 0 {
                    format!("{root}/probe?target={app}/status")
                } else {
                    format!("{root}/metrics")
                };
                let ok = match client.get(&url).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    counts.failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
        let (http, base) = (http.clone(), base.to_owned());
        let (next, counts) = (Arc::clone(&next_push), Arc::clone(tally));
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= pushes {
                    break;
                }
                if n % 10_000 == 0 && n > 0 {
                    let _ = http.post(format!("{base}/-/reload")).send().await;
                }
                let sent = http
                    .post(format!("{base}/create_metric"))
                    .header("content-type", "application/json")
                    .body(r#"{"metric_type": 1, "metric_name": "soak_pushes", "value": 1}"#)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        counts.pushes_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counts.failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The value of an unlabelled series in a text exposition.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.strip_prefix(series).is_some_and(|r| r.starts_with(' ')))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub fn run() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    crate::run(Command::new(&cargo).args(["build", "--release", "-p", "tidegauge"]))?;
    let bin = crate::root().join("target/release/tidegauge");
    let dir = crate::root().join("target/soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let app_listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| e.to_string())?;
    let app = format!(
        "http://{}",
        app_listener.local_addr().map_err(|e| e.to_string())?
    );
    rt.spawn(sample_status_app(app_listener, Duration::ZERO));
    let cfg = dir.join("tidegauge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collectors.app-status]\nmin_interval = 0\nprobe.allow = [\"{app}/\"]\n[[collectors.app-status.targets]]\nname = \"sample\"\nurl = \"{app}/status\"\n[collectors.icos-push]\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let port = free_port()?;
    let host = start_host(&bin, &cfg, port)?;
    let pid = host.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let tally = Arc::new(Tally::default());

    let started = Instant::now();
    rt.block_on(phase(&base, &app, 5_000, 5_000, &tally));
    let (rss_warm, fds_warm) = (rss_kib(pid), open_fds(pid));
    println!(
        "soak: warm-up (5,000 scrapes, 5,000 pushes) in {:.1} s: resident {} KiB, {} open files",
        started.elapsed().as_secs_f64(),
        rss_warm.unwrap_or(0),
        fds_warm.unwrap_or(0)
    );
    let started = Instant::now();
    rt.block_on(phase(&base, &app, 100_000, 100_000, &tally));
    // Idle connections of the load's client close before the files are counted.
    std::thread::sleep(Duration::from_secs(2));
    let (rss_end, fds_end) = (rss_kib(pid), open_fds(pid));
    let body = rt
        .block_on(async { reqwest::get(format!("{base}/metrics")).await?.text().await })
        .map_err(|e| e.to_string())?;
    let stored = value(&body, "soak_pushes_total").unwrap_or(0.0);
    let acked = tally.pushes_acked.load(Ordering::Relaxed) as f64;
    println!(
        "soak: 100,000 scrapes (a probe every 100) and 100,000 pushes (a reload every 10,000) in {:.1} s; {} requests failed",
        started.elapsed().as_secs_f64(),
        tally.failures.load(Ordering::Relaxed)
    );
    let (rss_warm, rss_end) = (rss_warm.unwrap_or(0), rss_end.unwrap_or(0));
    let growth = (rss_end as f64 / rss_warm.max(1) as f64 - 1.0) * 100.0;
    println!(
        "soak: resident {rss_warm} KiB after warm-up, {rss_end} KiB after the run ({growth:+.1} %); open files {} -> {}",
        fds_warm.unwrap_or(0),
        fds_end.unwrap_or(0)
    );
    println!("soak: {acked} pushes acknowledged, soak_pushes_total {stored}");
    drop(host);
    let mut failed = Vec::new();
    if growth > 10.0 {
        failed.push(format!("resident memory grew {growth:.1} % (limit 10 %)"));
    }
    if fds_end.unwrap_or(0) > fds_warm.unwrap_or(0) + 4 {
        failed.push("file descriptors grew".to_owned());
    }
    if stored < acked {
        failed.push(format!(
            "{acked} pushes acknowledged, only {stored} counted"
        ));
    }
    if failed.is_empty() {
        println!("soak: passed");
        Ok(())
    } else {
        Err(format!("soak failed: {}", failed.join("; ")))
    }
}
