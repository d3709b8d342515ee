//! `cargo xtask bench sensors`: 200 emulated boards answering in 20 ms each, behind one
//! tidegauge, against the same boards scraped directly by an HA pair of Prometheus servers.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tidegauge_testkit::board::BoardEmulator;

use crate::bench::{Host, free_port, start_host};

const BOARDS: usize = 200;

fn board_tables(boards: &[BoardEmulator], extra: &str) -> String {
    boards
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "[[collectors.sensor-bridge.boards]]\nname = \"b{i:03}\"\nurl = \"{}\"\n{extra}\n",
                b.url
            )
        })
        .collect()
}

/// tidegauge reading only `boards` (each with `extra` settings), from `<dir>/<name>.toml`.
fn start_bridge(
    bin: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    boards: &[BoardEmulator],
    extra: &str,
) -> Result<(Host, u16), String> {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[collectors.app-status]\nenabled = false\n[collectors.sensor-bridge]\n{}",
            board_tables(boards, extra)
        ),
    )
    .map_err(|e| e.to_string())?;
    let port = free_port()?;
    Ok((start_host(bin, &cfg, port)?, port))
}

fn requests(boards: &[BoardEmulator]) -> usize {
    boards.iter().map(BoardEmulator::requests).sum()
}

/// Requests each board received in `window` (max over boards, and the mean).
fn per_board(boards: &[BoardEmulator], since: Instant) -> (usize, f64) {
    let counts: Vec<usize> = boards
        .iter()
        .map(|b| b.received().iter().filter(|(t, _)| *t >= since).count())
        .collect();
    let max = counts.iter().copied().max().unwrap_or(0);
    (
        max,
        counts.iter().sum::<usize>() as f64 / counts.len() as f64,
    )
}

fn get(url: &str) -> Result<(Duration, String), String> {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sf", "-H", "X-Prometheus-Scrape-Timeout-Seconds: 10", url])
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("curl {url} failed"));
    }
    Ok((
        started.elapsed(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Two Prometheus servers scraping `targets` every second.
fn ha_pair(
    dir: &std::path::Path,
    name: &str,
    targets: &[String],
    path: &str,
) -> Result<Vec<Host>, String> {
    let mut servers = Vec::new();
    for replica in 0..2 {
        let d = dir.join(format!("{name}-{replica}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let cfg = d.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global: {{ scrape_interval: 1s, scrape_timeout: 1s }}\nscrape_configs:\n  - job_name: {name}\n    metrics_path: {path}\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .map_err(|e| e.to_string())?;
        let port = free_port()?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", d.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("prometheus: {e}"))?;
        servers.push(Host(child));
    }
    Ok(servers)
}

pub fn run(cargo: &str) -> Result<(), String> {
    crate::bench::criterion(cargo, "tidegauge-sensor-bridge", "parse")?;
    crate::run(Command::new(cargo).args(["build", "--release", "-p", "tidegauge"]))?;
    crate::ensure_tools(&["prometheus", "curl"])?;
    let bin = crate::root().join("target/release/tidegauge");
    let dir = crate::root().join("target/bench/sensors");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let boards: Vec<BoardEmulator> = (0..BOARDS)
        .map(|_| {
            let b = rt.block_on(BoardEmulator::start());
            b.set_delay(Duration::from_millis(20));
            b
        })
        .collect();
    println!(
        "bench sensors: {BOARDS} emulated boards, each answering after 20 ms, one connection at a time"
    );

    // 1. Every scrape asks every board (min_interval 1 s, scrapes 1.2 s apart).
    let (host, port) = start_bridge(&bin, &dir, "fresh", &boards, "min_interval = \"1s\"")?;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut times = Vec::new();
    for _ in 0..6 {
        let before = requests(&boards);
        let (t, body) = get(&url)?;
        let up = body
            .lines()
            .filter(|l| l.starts_with("sensor_board_up{") && l.ends_with(" 1"))
            .count();
        if up != BOARDS || requests(&boards) - before != BOARDS {
            return Err(format!(
                "a scrape saw {up} boards up and made {} requests",
                requests(&boards) - before
            ));
        }
        times.push(t);
        std::thread::sleep(Duration::from_millis(1200));
    }
    times.sort();
    println!(
        "  one scrape asking all {BOARDS} boards (curl, 6 scrapes): median {:.0} ms, slowest {:.0} ms (target: under 20 ms + 100 ms)",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
    // 2. Ten scrapes at once, twice, 1.2 s apart.
    let mut per_scrape = Vec::new();
    for _ in 0..2 {
        let before = requests(&boards);
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || get(&url))
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "scrape thread panicked")??;
        }
        per_scrape.push((requests(&boards) - before) as f64 / (BOARDS * 10) as f64);
        std::thread::sleep(Duration::from_millis(1200));
    }
    let max_open = boards
        .iter()
        .map(BoardEmulator::max_open)
        .max()
        .unwrap_or(0);
    println!(
        "  ten simultaneous scrapes: {:.2} and {:.2} requests per board per scrape; most connections a board ever had open at once: {max_open}",
        per_scrape[0], per_scrape[1]
    );
    drop(host);

    // 3. An HA pair of Prometheus servers (1 s interval) for 20 s: through tidegauge with the
    // default min_interval (5 s), then scraping the boards directly.
    let window = Duration::from_secs(20);
    let (host, port) = start_bridge(&bin, &dir, "ha", &boards, "")?;
    let since = Instant::now();
    let pair = ha_pair(
        &dir,
        "tidegauge",
        &[format!("127.0.0.1:{port}")],
        "/metrics",
    )?;
    std::thread::sleep(window);
    let (via_max, via_mean) = per_board(&boards, since);
    drop(pair);
    drop(host);
    let targets: Vec<String> = boards
        .iter()
        .map(|b| {
            b.url
                .trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .to_owned()
        })
        .collect();
    let since = Instant::now();
    let pair = ha_pair(&dir, "boards", &targets, "/metrics")?;
    std::thread::sleep(window);
    let (direct_max, direct_mean) = per_board(&boards, since);
    drop(pair);
    println!(
        "  requests per board in 20 s from an HA pair of Prometheus 1 s scrapers: through tidegauge mean {via_mean:.1} (max {via_max}); scraping the boards directly mean {direct_mean:.1} (max {direct_max})"
    );
    Ok(())
}
