//! `cargo xtask bench`: criterion micro-benchmarks, then the host measured end to end
//! (release build, loopback only, bounded in time).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::demo::sample_status_app;

struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let which = args.first().map(String::as_str).unwrap_or("all");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if which == "all" || which == "encode" {
        crate::run(Command::new(&cargo).args([
            "bench",
            "-p",
            "tidegauge-core",
            "--bench",
            "encode",
        ]))?;
    }
    if which == "all" || which == "host" {
        host(&cargo)?;
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn http_get(addr: &str, path: &str) -> Result<(Duration, String), String> {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok((started.elapsed(), body))
}

fn start_host(bin: &std::path::Path, cfg: &std::path::Path, port: u16) -> Result<Host, String> {
    let child = Command::new(bin)
        .args(["--config"])
        .arg(cfg)
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
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..100 {
        if http_get(&addr, "/-/ready").is_ok_and(|(_, b)| b.starts_with("HTTP/1.1 200")) {
            return Ok(host);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("tidegauge did not become ready".into())
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
    if !crate::has("wrk") {
        crate::run(
            Command::new("bash")
                .arg(crate::root().join("scripts/install-test-deps.sh"))
                .arg("wrk"),
        )?;
    }
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
