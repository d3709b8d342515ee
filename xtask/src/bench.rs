//! `cargo xtask bench`: criterion micro-benchmarks, then the host measured end to end
//! (release build, loopback only, bounded in time).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::demo::sample_status_app;
use crate::table::{Better, Row};

pub(crate) struct Host(pub(crate) Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let which = args.first().map(String::as_str).unwrap_or("all");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut rows = Vec::new();
    if which == "all" || which == "encode" {
        criterion(&cargo, "tidegauge-core", "encode")?;
    }
    if which == "all" || which == "models" {
        criterion(&cargo, "tidegauge-icos-push", "forecast")?;
        crate::models::run(&cargo)?;
    }
    if which == "all" || which == "host" {
        host(&cargo)?;
    }
    // `peers`: only the side-by-side comparisons, and the table.
    let peers = which == "peers";
    if which == "all" || peers || which == "ifcb" {
        ifcb(&cargo, &mut rows)?;
    }
    if which == "all" || peers || which == "push" {
        push(&cargo, &mut rows)?;
    }
    if which == "all" || peers || which == "node" {
        node(&cargo, &mut rows)?;
    }
    if which == "all" || which == "sensors" {
        crate::sensors::run(&cargo)?;
    }
    if which == "all" || peers {
        crate::table::publish(&rows)?;
    } else if !rows.is_empty() {
        println!("\n{}", crate::table::markdown(&rows));
    }
    Ok(())
}

/// tidegauge on the README's defaults against Debian's prometheus-node-exporter on its own:
/// `/metrics` rate and resident memory after that load.
fn node(cargo: &str, rows: &mut Vec<Row>) -> Result<(), String> {
    crate::run(Command::new(cargo).args(["build", "--release", "-p", "tidegauge"]))?;
    crate::ensure_tools(&["prometheus-node-exporter", "wrk"])?;
    let bin = crate::root().join("target/release/tidegauge");
    let dir = crate::root().join("target/bench/node");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let tg_port = free_port()?;
    // The README's first command: no configuration file, default collectors.
    let child = Command::new(&bin)
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{tg_port}"),
            "--log.level",
            "error",
        ])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let tg = Host(child);
    wait_ready(&format!("127.0.0.1:{tg_port}"))?;
    let ne_port = free_port()?;
    let child = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
        .arg("--log.level=error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("prometheus-node-exporter: {e}"))?;
    let ne = Host(child);
    wait_ready_path(&format!("127.0.0.1:{ne_port}"), "/metrics")?;
    let size = |port: u16| {
        http_get(&format!("127.0.0.1:{port}"), "/metrics").map(|(_, b)| {
            let body = b
                .split_once("\r\n\r\n")
                .map_or(b.as_str(), |(_, body)| body);
            body.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count()
        })
    };
    let (tg_series, ne_series) = (size(tg_port)?, size(ne_port)?);
    let tg_rps: f64 = wrk_rps(&format!("http://127.0.0.1:{tg_port}/metrics"))?
        .parse()
        .map_err(|_| "wrk printed no rate for tidegauge".to_owned())?;
    let ne_rps: f64 = wrk_rps(&format!("http://127.0.0.1:{ne_port}/metrics"))?
        .parse()
        .map_err(|_| "wrk printed no rate for node-exporter".to_owned())?;
    let tg_mem = rss_kib(tg.0.id()).unwrap_or(0) as f64;
    let ne_mem = rss_kib(ne.0.id()).unwrap_or(0) as f64;
    println!(
        "bench node: tidegauge with its defaults ({tg_series} series) and prometheus-node-exporter ({ne_series} series): {tg_rps:.0} and {ne_rps:.0} /metrics per second; {tg_mem:.0} and {ne_mem:.0} KiB resident after the load"
    );
    rows.push(Row::new(
        format!("`/metrics` per second, each on its defaults (tidegauge {tg_series} series, node-exporter {ne_series})"),
        "prometheus-node-exporter",
        (tg_rps, ne_rps),
        "req/s",
        Better::Higher,
    ));
    rows.push(Row::new(
        "resident memory after that load",
        "prometheus-node-exporter",
        (tg_mem, ne_mem),
        "KiB",
        Better::Lower,
    ));
    Ok(())
}

/// Like [`wait_ready`], on any path answering 200.
fn wait_ready_path(addr: &str, path: &str) -> Result<(), String> {
    for _ in 0..100 {
        if http_get(addr, path)
            .is_ok_and(|(_, b)| b.starts_with("HTTP/1.1 200") || b.contains("# TYPE"))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{addr}{path} did not answer"))
}

/// Runs one criterion benchmark of a workspace package.
pub(crate) fn criterion(cargo: &str, package: &str, bench: &str) -> Result<(), String> {
    crate::run(Command::new(cargo).args(["bench", "-p", package, "--bench", bench]))
}

pub(crate) fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A `/proc/<pid>/status` memory field (`VmRSS`, `VmHWM`) in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

fn http_get(addr: &str, path: &str) -> Result<(Duration, String), String> {
    http_get_with(addr, path, "")
}

/// Waits until `GET /-/ready` answers 200.
fn wait_ready(addr: &str) -> Result<(), String> {
    for _ in 0..100 {
        if http_get(addr, "/-/ready").is_ok_and(|(_, b)| b.starts_with("HTTP/1.1 200")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{addr} did not become ready"))
}

/// Starts `bin` with `args` (plus a loopback listen address and warn logging), ready.
fn start_with(bin: &std::path::Path, args: &[&str], port: u16) -> Result<Host, String> {
    let child = Command::new(bin)
        .args(args)
        .args([
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
            "--log.level",
            "warn",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let host = Host(child);
    wait_ready(&format!("127.0.0.1:{port}"))?;
    Ok(host)
}

pub(crate) fn start_host(
    bin: &std::path::Path,
    cfg: &std::path::Path,
    port: u16,
) -> Result<Host, String> {
    let cfg = cfg.to_string_lossy();
    start_with(bin, &["--config", &cfg], port)
}

fn host(cargo: &str) -> Result<(), String> {
    crate::run(Command::new(cargo).args(["build", "--release", "-p", "tidegauge"]))?;
    let bin = crate::root().join("target/release/tidegauge");
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let mut targets = String::new();
    for i in 0..4 {
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| e.to_string())?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        rt.spawn(sample_status_app(l, Duration::from_millis(200)));
        targets.push_str(&format!(
            "[[collectors.app-status.targets]]\nname = \"app{i}\"\nurl = \"http://{addr}/status\"\nlabels = {{ app = \"app{i}\" }}\n"
        ));
    }
    let dir = crate::root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    // 1. Four targets answering in 200 ms each, fetched on every scrape.
    let cfg = dir.join("uncached.toml");
    std::fs::write(
        &cfg,
        format!("[collectors.app-status]\nmin_interval = 0\n{targets}"),
    )
    .map_err(|e| e.to_string())?;
    let port = free_port()?;
    let h = start_host(&bin, &cfg, port)?;
    std::thread::sleep(Duration::from_secs(1));
    let idle = rss_kib(h.0.id());
    let addr = format!("127.0.0.1:{port}");
    let mut times = Vec::new();
    for _ in 0..20 {
        let (d, body) = http_get(&addr, "/metrics")?;
        if !body.contains("app_status_up{target=\"app3\"} 1") {
            return Err(format!("unexpected scrape:\n{body}"));
        }
        times.push(d);
    }
    times.sort();
    let after = rss_kib(h.0.id());
    drop(h);
    println!(
        "bench host: /metrics with 4 status targets answering in 200 ms each (20 sequential scrapes)"
    );
    println!(
        "  min {:.1} ms, median {:.1} ms, max {:.1} ms",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1])
    );
    println!(
        "  resident memory: idle {} KiB, after the scrapes {} KiB",
        idle.map_or("?".into(), |v| v.to_string()),
        after.map_or("?".into(), |v| v.to_string())
    );

    // 2. The same collector with a cache TTL, under wrk.
    let cfg = dir.join("cached.toml");
    std::fs::write(
        &cfg,
        format!("[collectors.app-status]\nmin_interval = 0\ncache_ttl = \"1h\"\n{targets}"),
    )
    .map_err(|e| e.to_string())?;
    let port = free_port()?;
    let h = start_host(&bin, &cfg, port)?;
    let addr = format!("127.0.0.1:{port}");
    http_get(&addr, "/metrics")?;
    crate::ensure_tools(&["wrk"])?;
    let out = Command::new("wrk")
        .args(["-t2", "-c32", "-d10s", &format!("http://{addr}/metrics")])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .unwrap_or("Requests/sec: ?");
    let peak = rss_kib(h.0.id());
    drop(h);
    println!("bench host: /metrics with the cached collector, wrk -t2 -c32 -d10s");
    println!("  {rps}");
    println!(
        "  resident memory after the load: {} KiB",
        peak.map_or("?".into(), |v| v.to_string())
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn http_get_with(addr: &str, path: &str, headers: &str) -> Result<(Duration, String), String> {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok((started.elapsed(), body))
}

/// Datasets whose newest-bin series is in the exposition.
fn complete(body: &str) -> usize {
    body.lines()
        .filter(|l| l.starts_with("ifcb_latest_bin_timestamp{"))
        .count()
}

/// The original exporter's cycle (issue 3's comparison): discovery, nine unbounded time series
/// and the unbounded bin list per dataset, then `has_products` newest first until every
/// product is found. Returns (requests, response bytes).
async fn original_cycle(base: &str, first: bool) -> Result<(usize, usize), String> {
    let http = tidegauge_core::http::client().map_err(|e| e.to_string())?;
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}/{path}");
        async move {
            let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body = r.bytes().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body))
        }
    };
    let (mut n, mut bytes) = (0usize, 0usize);
    let (_, body) = get("filter_options".into()).await?;
    n += 1;
    bytes += body.len();
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let names: Vec<String> = v["dataset_options"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for ds in names {
        for m in tidegauge_testkit::ifcb::METRICS {
            let (_, b) = get(format!("time-series/{m}?resolution=bin&dataset={ds}")).await?;
            n += 1;
            bytes += b.len();
        }
        let (_, b) = get(format!("list_bins?dataset={ds}")).await?;
        n += 1;
        bytes += b.len();
        if first {
            // Newest bin first; every product is on it in this dashboard, and the early break
            // ends the scan at the next bin.
            let v: serde_json::Value = serde_json::from_slice(&b).map_err(|e| e.to_string())?;
            if let Some(pid) = v["data"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|b| b["pid"].as_str())
            {
                let (_, b) = get(format!("has_products/{pid}")).await?;
                n += 1;
                bytes += b.len();
            }
        }
    }
    Ok((n, bytes))
}

fn ifcb(cargo: &str, rows: &mut Vec<Row>) -> Result<(), String> {
    use tidegauge_testkit::ifcb::{FakeDashboard, FakeDataset, Model};
    crate::run(Command::new(cargo).args(["build", "--release", "-p", "tidegauge"]))?;
    let bin = crate::root().join("target/release/tidegauge");
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let mut model = Model::new(now);
    model.delay = Duration::from_millis(50);
    for i in 0..29 {
        model.datasets.insert(
            format!("dataset-{i:02}"),
            FakeDataset::regular(1_000, now - 600 - i * 60),
        );
    }
    model
        .datasets
        .insert("mvco".into(), FakeDataset::regular(300_000, now - 300));
    let fake = rt
        .block_on(FakeDashboard::start(model))
        .map_err(|e| e.to_string())?;
    let datasets = 30;

    let port = free_port()?;
    let base_url = format!("bench={}", fake.url);
    let h = start_with(&bin, &["--base-url", &base_url, "--interval", "30"], port)?;
    let addr = format!("127.0.0.1:{port}");
    let header = "X-Prometheus-Scrape-Timeout-Seconds: 10.5\r\n";
    let (cold, body) = http_get_with(&addr, "/metrics", header)?;
    let cold_complete = complete(&body);
    // Let the refreshes that outlived the deadline finish in the background.
    let mut settled = fake.requests().len();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let n = fake.requests().len();
        if n == settled {
            break;
        }
        settled = n;
    }
    let cold_requests = fake.requests().len();
    let cold_bytes = fake.bytes_served();
    let mut warm = Vec::new();
    let mut warm_complete = 0;
    for _ in 0..20 {
        let (d, body) = http_get_with(&addr, "/metrics", header)?;
        warm_complete = complete(&body);
        warm.push(d);
    }
    warm.sort();
    let after_warm = fake.requests().len();
    // One refresh cycle later, nothing new on the dashboard.
    std::thread::sleep(Duration::from_secs(31));
    fake.clear_log();
    let (cycle, body) = http_get_with(&addr, "/metrics", header)?;
    let mut cycle_requests = fake.requests().len();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let n = fake.requests().len();
        if n == cycle_requests {
            break;
        }
        cycle_requests = n;
    }
    let cycle_bytes = fake.bytes_served();
    let cycle_complete = complete(&body);
    let peak = peak_rss_kib(h.0.id());
    drop(h);

    println!(
        "bench ifcb: 30 datasets (one of 300,000 bins), every request answered in 50 ms by one worker, client concurrency 2"
    );
    println!(
        "  cold scrape (10 s budget): {:.0} ms, {cold_complete}/{datasets} datasets complete; requests once the background refresh settled: {cold_requests} ({:.1} per dataset)",
        ms(cold),
        cold_requests as f64 / datasets as f64
    );
    println!(
        "  warm scrapes (within the interval): median {:.2} ms, max {:.2} ms, {warm_complete}/{datasets} complete, {} upstream requests",
        ms(warm[warm.len() / 2]),
        ms(warm[warm.len() - 1]),
        after_warm - cold_requests
    );
    println!(
        "  next cycle (interval passed, nothing new): scrape {:.0} ms, {cycle_complete}/{datasets} complete, {cycle_requests} requests ({:.2} per dataset)",
        ms(cycle),
        cycle_requests as f64 / datasets as f64
    );
    println!(
        "  peak resident memory (VmHWM): {} KiB",
        peak.map_or("?".into(), |v| v.to_string())
    );

    // The original exporter's request pattern against the same dashboard (no delay: only
    // requests and bytes are compared).
    fake.update(|m| m.delay = Duration::ZERO);
    let (first_n, first_bytes) = rt.block_on(original_cycle(&fake.url, true))?;
    let (next_n, next_bytes) = rt.block_on(original_cycle(&fake.url, false))?;
    println!(
        "  original exporter on the same dashboard: first cycle {first_n} requests ({:.1} MB), later cycles {next_n} requests ({:.1} MB)",
        first_bytes as f64 / 1e6,
        next_bytes as f64 / 1e6
    );
    let peer = "the IFCB exporter's request pattern";
    let work = "30 datasets (one of 300,000 bins) on the fake dashboard";
    rows.push(Row::new(
        format!("IFCB: requests in the first cycle, {work}"),
        peer,
        (cold_requests as f64, first_n as f64),
        "requests",
        Better::Lower,
    ));
    rows.push(Row::new(
        "IFCB: bytes downloaded in the first cycle",
        peer,
        (cold_bytes as f64 / 1e3, first_bytes as f64 / 1e3),
        "kB",
        Better::Lower,
    ));
    rows.push(Row::new(
        "IFCB: requests per later cycle (nothing new)",
        peer,
        (cycle_requests as f64, next_n as f64),
        "requests",
        Better::Lower,
    ));
    rows.push(Row::new(
        "IFCB: bytes per later cycle",
        peer,
        (cycle_bytes as f64 / 1e3, next_bytes as f64 / 1e3),
        "kB",
        Better::Lower,
    ));
    Ok(())
}

/// One push body: `series` gauges.
fn push_body(series: usize, seed: usize) -> String {
    let mut b = String::from("# TYPE bench_value gauge\n");
    for i in 0..series {
        b.push_str(&format!("bench_value{{series=\"{i}\"}} {}\n", seed + i));
    }
    b
}

/// A wrk script: each request a PUT of `series` gauges (values changing with every push) into
/// one of `groups` groups.
fn push_script(series: usize, groups: usize, job: &str) -> String {
    format!(
        r##"local n = 0
request = function()
  n = n + 1
  local lines = {{"# TYPE bench_value gauge\n"}}
  for i = 0, {last} do
    lines[#lines + 1] = string.format('bench_value{{series="%d"}} %d\n', i, n + i)
  end
  return wrk.format("PUT", "/metrics/job/{job}/instance/i" .. (n % {groups}), nil, table.concat(lines))
end
"##,
        last = series - 1,
    )
}

/// Pushes with wrk (`script` from [`push_script`]) for 10 s over 16 connections; pushes per
/// second, or an error when any push was refused.
fn push_rate(base: &str, script: &std::path::Path) -> Result<f64, String> {
    let out = Command::new("wrk")
        .args(["-t2", "-c16", "-d10s", "-s"])
        .arg(script)
        .arg(base)
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(l) = text.lines().find(|l| l.contains("Non-2xx")) {
        return Err(format!("pushes to {base} were refused: {}", l.trim()));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("wrk printed no rate:\n{text}"))
}

/// Fills groups `i<from>` to `i<to - 1>` of job `bench` with 100 series each.
async fn fill(base: &str, groups: std::ops::Range<usize>) -> Result<(), String> {
    let http = tidegauge_core::http::client().map_err(|e| e.to_string())?;
    for g in groups {
        let r = http
            .put(format!("{base}/metrics/job/bench/instance/i{g}"))
            .body(push_body(100, g))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("fill answered {}", r.status()));
        }
    }
    Ok(())
}

fn wrk_rps(url: &str) -> Result<String, String> {
    let out = Command::new("wrk")
        .args(["-t2", "-c16", "-d10s", url])
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok(text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .map(|l| l.trim_start_matches("Requests/sec:").trim().to_owned())
        .unwrap_or_else(|| "?".into()))
}

fn push(cargo: &str, rows: &mut Vec<Row>) -> Result<(), String> {
    crate::run(Command::new(cargo).args(["build", "--release", "-p", "tidegauge"]))?;
    crate::ensure_tools(&["prometheus-pushgateway", "wrk"])?;
    let bin = crate::root().join("target/release/tidegauge");
    let dir = crate::root().join("target/bench/push");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cfg = dir.join("tidegauge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collectors.app-status]\nenabled = false\n[collectors.icos-push]\ndata_dir = \"{}\"\nmax_series = 200000\n",
            dir.join("data").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;

    let tg_port = free_port()?;
    let tg = start_host(&bin, &cfg, tg_port)?;
    let pg_port = free_port()?;
    let pg_child = Command::new("prometheus-pushgateway")
        .args([
            format!("--web.listen-address=127.0.0.1:{pg_port}"),
            "--log.level=warn".into(),
            // Debian's build persists to /var/lib/prometheus by default.
            "--persistence.file=".into(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("prometheus-pushgateway: {e}"))?;
    let pg = Host(pg_child);
    let pg_addr = format!("127.0.0.1:{pg_port}");
    wait_ready(&pg_addr)?;
    let tg_base = format!("http://127.0.0.1:{tg_port}");
    let pg_base = format!("http://{pg_addr}");
    println!(
        "bench push: tidegauge icos-push (every push fsynced before the answer) and Debian's prometheus-pushgateway (memory only), same machine"
    );
    let script = dir.join("push.lua");
    std::fs::write(&script, push_script(10, 100, "bench")).map_err(|e| e.to_string())?;
    let tg_rate = push_rate(&tg_base, &script)?;
    let pg_rate = push_rate(&pg_base, &script)?;
    println!(
        "  durable pushes/s, wrk -t2 -c16 -d10s, PUT of 10 series into 100 groups: tidegauge {tg_rate:.0}, pushgateway {pg_rate:.0} (ratio {:.1})",
        tg_rate / pg_rate
    );
    rows.push(Row::new(
        "pushes per second (PUT of 10 series into 100 groups; tidegauge fsyncs each before answering, the Pushgateway keeps memory only)",
        "prometheus-pushgateway",
        (tg_rate, pg_rate),
        "req/s",
        Better::Higher,
    ));
    let (_, body) = http_get(&format!("127.0.0.1:{tg_port}"), "/metrics")?;
    let stat = |name: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let commits = stat("tidegauge_icos_push_store_commits_total");
    let requests = stat("tidegauge_icos_push_store_committed_requests_total");
    let seconds = stat("tidegauge_icos_push_store_commit_seconds_total");
    if commits > 0.0 {
        println!(
            "  tidegauge store: {commits:.0} commits carrying {requests:.0} writes ({:.1} per commit), {:.2} ms per commit",
            requests / commits,
            seconds / commits * 1000.0
        );
    }
    rt.block_on(fill(&tg_base, 0..100))?;
    rt.block_on(fill(&pg_base, 0..100))?;
    let tg_rps = wrk_rps(&format!("{tg_base}/metrics"))?;
    let pg_rps = wrk_rps(&format!("{pg_base}/metrics"))?;
    let ratio = match (tg_rps.parse::<f64>(), pg_rps.parse::<f64>()) {
        (Ok(a), Ok(b)) if b > 0.0 => format!("{:.1}", a / b),
        _ => "?".into(),
    };
    println!(
        "  /metrics requests/s holding 10,000 pushed series, wrk -t2 -c16 -d10s: tidegauge {tg_rps}, pushgateway {pg_rps} (ratio {ratio})"
    );
    let tg_rps: f64 = tg_rps.parse().unwrap_or(0.0);
    rows.push(Row::new(
        "`/metrics` per second holding 10,000 pushed series",
        "prometheus-pushgateway",
        (tg_rps, pg_rps.parse().unwrap_or(0.0)),
        "req/s",
        Better::Higher,
    ));
    let py = python_rps(&dir)?;
    println!(
        "  Python prometheus_client serving 10,000 gauge series (start_http_server): {py:.0} /metrics per second"
    );
    rows.push(Row::new(
        "`/metrics` per second serving 10,000 series (tidegauge: pushed; Python: one labelled Gauge, `start_http_server`)",
        "Python prometheus_client",
        (tg_rps, py),
        "req/s",
        Better::Higher,
    ));
    // The same pushes into other groups while the 10,000 series are held: the Pushgateway
    // checks each push against everything it holds, tidegauge against an index.
    let held = dir.join("push-held.lua");
    std::fs::write(&held, push_script(10, 100, "other")).map_err(|e| e.to_string())?;
    let tg_held = push_rate(&tg_base, &held)?;
    let pg_held = push_rate(&pg_base, &held)?;
    println!(
        "  durable pushes/s as above, into 100 other groups while holding those 10,000 series: tidegauge {tg_held:.0}, pushgateway {pg_held:.0} (ratio {:.1})",
        tg_held / pg_held
    );
    let memory = |held: &str| {
        println!(
            "  resident memory holding {held} series: tidegauge {} KiB (peak {} KiB), pushgateway {} KiB (peak {} KiB)",
            rss_kib(tg.0.id()).map_or("?".into(), |v| v.to_string()),
            peak_rss_kib(tg.0.id()).map_or("?".into(), |v| v.to_string()),
            rss_kib(pg.0.id()).map_or("?".into(), |v| v.to_string()),
            peak_rss_kib(pg.0.id()).map_or("?".into(), |v| v.to_string()),
        );
    };
    memory("11,000");
    rows.push(Row::new(
        "resident memory holding 11,000 pushed series",
        "prometheus-pushgateway",
        (
            rss_kib(tg.0.id()).unwrap_or(0) as f64,
            rss_kib(pg.0.id()).unwrap_or(0) as f64,
        ),
        "KiB",
        Better::Lower,
    ));
    // 100,000 series more: 1,000 groups of 100.
    let started = std::time::Instant::now();
    rt.block_on(fill(&tg_base, 100..1100))?;
    let tg_fill = started.elapsed();
    let started = std::time::Instant::now();
    rt.block_on(fill(&pg_base, 100..1100))?;
    let pg_fill = started.elapsed();
    println!(
        "  1,000 pushes of 100 series one after another, up to 111,000 series: tidegauge {:.1} s, pushgateway {:.1} s",
        tg_fill.as_secs_f64(),
        pg_fill.as_secs_f64()
    );
    for (name, base) in [("tidegauge", &tg_base), ("pushgateway", &pg_base)] {
        // One scrape each, so both have built their exposition once.
        let started = std::time::Instant::now();
        let (_, body) = http_get(base.trim_start_matches("http://"), "/metrics")?;
        println!(
            "  {name}: one /metrics of {} bytes in {:.0} ms",
            body.len(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    memory("111,000");
    rows.push(Row::new(
        "resident memory holding 111,000 pushed series",
        "prometheus-pushgateway",
        (
            rss_kib(tg.0.id()).unwrap_or(0) as f64,
            rss_kib(pg.0.id()).unwrap_or(0) as f64,
        ),
        "KiB",
        Better::Lower,
    ));
    Ok(())
}

/// `/metrics` per second of Python's prometheus_client serving 10,000 gauge series with its
/// own `start_http_server`, under the same wrk load.
fn python_rps(dir: &std::path::Path) -> Result<f64, String> {
    let script = dir.join("py_exporter.py");
    std::fs::write(
        &script,
        [
            "import sys, time",
            "from prometheus_client import Gauge, start_http_server",
            "g = Gauge('bench_value', 'Bench value', ['series', 'job', 'instance'])",
            "for i in range(10000):",
            "    g.labels(str(i % 100), 'bench', 'i%d' % (i // 100)).set(i)",
            "start_http_server(int(sys.argv[1]), addr='127.0.0.1')",
            "while True:",
            "    time.sleep(3600)",
            "",
        ]
        .join("\n"),
    )
    .map_err(|e| e.to_string())?;
    let port = free_port()?;
    let child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    let _py = Host(child);
    wait_ready_path(&format!("127.0.0.1:{port}"), "/metrics")?;
    wrk_rps(&format!("http://127.0.0.1:{port}/metrics"))?
        .parse()
        .map_err(|_| "wrk printed no rate for the Python client".to_owned())
}
