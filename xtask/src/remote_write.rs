//! The remote-write part of `cargo xtask e2e`: the built host remote-writing to a real
//! Prometheus started with `--web.enable-remote-write-receiver`; samples arrive with their
//! labels and values, and neither the receiver stopped for a while nor a SIGKILL of tidegauge
//! during that outage loses any.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime};

use crate::bench::{Host, free_port, start_host};
use crate::e2e::{query_at, result};

const PATIENCE: Duration = Duration::from_secs(60);
/// The gathering interval: long enough that the test acts between two gathers.
const INTERVAL: Duration = Duration::from_secs(2);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn receiver(dir: &Path, port: u16) -> Result<Host, String> {
    crate::e2e::prometheus(
        dir,
        "receiver",
        port,
        &["--web.enable-remote-write-receiver"],
    )
}

/// Stops the receiver as an operator would (SIGTERM), so what it accepted is on disk.
fn stop(mut host: Host) -> Result<(), String> {
    let child: &mut Child = &mut host.0;
    crate::run(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
    child.wait().map_err(|e| e.to_string())?;
    Ok(())
}

/// A sample of tidegauge's own `/metrics`.
async fn own(http: &reqwest::Client, tg: &str, name: &str) -> Result<f64, String> {
    let text = http
        .get(format!("http://{tg}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| format!("{name} missing from tidegauge's /metrics"))
}

/// Waits for the next gather and returns the count of samples queued since start just after it,
/// so the caller acts about `INTERVAL` before the following one.
async fn after_gather(http: &reqwest::Client, tg: &str) -> Result<f64, String> {
    let name = "tidegauge_remote_write_samples_total";
    let before = own(http, tg, name).await?;
    let started = Instant::now();
    loop {
        let now = own(http, tg, name).await?;
        if now != before {
            return Ok(now);
        }
        if started.elapsed() > PATIENCE {
            return Err("remote write stopped gathering".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until_ready(http: &reqwest::Client, url: &str) -> Result<(), String> {
    let started = Instant::now();
    while !http
        .get(format!("{url}/-/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if started.elapsed() > PATIENCE {
            return Err(format!("{url} did not become ready"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn until_drained(http: &reqwest::Client, tg: &str) -> Result<(), String> {
    let started = Instant::now();
    while own(http, tg, "tidegauge_remote_write_samples_pending").await? > 0.0 {
        if started.elapsed() > PATIENCE {
            return Err("the remote-write queue did not drain".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The number of raw samples a range-vector selector returns at `time`.
async fn raw_samples(
    http: &reqwest::Client,
    prom: &str,
    selector: &str,
    time: f64,
) -> Result<f64, String> {
    Ok(result(http, prom, selector, Some(time))
        .await?
        .iter()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum::<usize>() as f64)
}

/// Runs the scenario with the e2e's debug binary; returns the report lines.
pub fn run(rt: &tokio::runtime::Runtime, bin: &Path, dir: &Path) -> Result<Vec<String>, String> {
    let dir = dir.join("remote-write");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (tg_port, recv_port) = (free_port()?, free_port()?);
    let tg = format!("127.0.0.1:{tg_port}");
    let recv = format!("http://127.0.0.1:{recv_port}");
    std::fs::write(dir.join("receiver.yml"), "global:\n  scrape_interval: 1m\n")
        .map_err(|e| e.to_string())?;
    let cfg = dir.join("tidegauge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collectors.icos-push]\ndata_dir = {:?}\n\n[remote_write]\nurl = \"{recv}/api/v1/write\"\ninterval = \"{}s\"\nqueue_dir = {:?}\n\n[remote_write.external_labels]\nrw_e2e = \"1\"\n",
            dir.join("data").display().to_string(),
            INTERVAL.as_secs(),
            dir.join("queue").display().to_string(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let http = tidegauge_core::http::client().map_err(|e| e.to_string())?;
    let mut lines = Vec::new();

    let recv_host = receiver(&dir, recv_port)?;
    rt.block_on(until_ready(&http, &recv))?;
    let host = start_host(bin, &cfg, tg_port)?;
    rt.block_on(async {
        let r = http
            .put(format!("http://{tg}/metrics/job/rw/instance/site1"))
            .body("rw_e2e_level 3\n")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("push answered {}", r.status()));
        }
        let started = Instant::now();
        let q = "rw_e2e_level{job=\"rw\",instance=\"site1\",rw_e2e=\"1\"}";
        loop {
            if query_at(&http, &recv, q, None).await? == [3.0] {
                break;
            }
            if started.elapsed() > PATIENCE {
                return Err(format!("{q} did not arrive at the receiver"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        lines.push(format!(
            "ok   remote write: pushed series arrives with its labels   {q} = 3"
        ));
        until_drained(&http, &tg).await
    })?;

    // The receiver goes away; tidegauge is killed (SIGKILL) and restarted during the outage.
    let before_outage = rt.block_on(after_gather(&http, &tg))?;
    let outage_from = now_ms();
    stop(recv_host)?;
    std::thread::sleep(INTERVAL * 3);
    let (first_run, pending_at_kill) = rt.block_on(async {
        let n = after_gather(&http, &tg).await?;
        Ok::<_, String>((
            n,
            own(&http, &tg, "tidegauge_remote_write_samples_pending").await?,
        ))
    })?;
    drop(host); // SIGKILL
    let host = start_host(bin, &cfg, tg_port)?;
    std::thread::sleep(INTERVAL * 2);
    let second_run = rt.block_on(after_gather(&http, &tg))?;
    let outage_to = now_ms();
    let written = (first_run - before_outage) + second_run;
    let _recv_host = receiver(&dir, recv_port)?;
    let received = rt.block_on(async {
        until_ready(&http, &recv).await?;
        until_drained(&http, &tg).await?;
        // Samples stamped inside the outage, as the receiver stores them.
        let q = format!("{{rw_e2e=\"1\"}}[{}ms]", outage_to - outage_from);
        raw_samples(&http, &recv, &q, outage_to as f64 / 1000.0).await
    })?;
    let lost = rt.block_on(async {
        let mut lost = 0.0;
        for reason in ["out_of_order", "rejected", "queue_full", "corrupt"] {
            let text = format!("tidegauge_remote_write_samples_lost_total{{reason=\"{reason}\"}}");
            lost += own(&http, &tg, &text).await?;
        }
        Ok::<_, String>(lost)
    })?;
    drop(host);
    lines.push(format!(
        "ok   remote write: receiver down {:.1} s, tidegauge SIGKILLed and restarted within it: {written} samples written during the outage ({pending_at_kill} pending at the kill), {received} received after recovery, {lost} lost",
        (outage_to - outage_from) as f64 / 1000.0
    ));
    if received != written || lost != 0.0 {
        return Err(lines.join("\n")
            + &format!(
                "\nremote write lost samples: {written} written during the outage, {received} received"
            ));
    }
    Ok(lines)
}
