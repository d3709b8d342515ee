//! `cargo xtask e2e`: the built host under a real Prometheus (Debian's package) scraping it every
//! second, with the sample upstreams of every collector, `/probe` jobs with relabelling, pushes
//! scraped with `honor_labels`, and a model metric whose telemetry is that Prometheus itself.
//! Every check goes through Prometheus's HTTP API.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::{Host, free_port};

/// How long the stored series may take to show up (first IFCB refresh, first MQTT message).
const PATIENCE: Duration = Duration::from_secs(90);

/// One check: a PromQL expression and the value its single result must have.
struct Expect {
    what: &'static str,
    query: String,
    value: f64,
}

fn expect(what: &'static str, query: impl Into<String>, value: f64) -> Expect {
    Expect {
        what,
        query: query.into(),
        value,
    }
}

async fn query(http: &reqwest::Client, prom: &str, q: &str) -> Result<Vec<f64>, String> {
    query_at(http, prom, q, None).await
}

/// An instant query's values, at `time` (seconds) or now.
pub(crate) async fn query_at(
    http: &reqwest::Client,
    prom: &str,
    q: &str,
    time: Option<f64>,
) -> Result<Vec<f64>, String> {
    Ok(result(http, prom, q, time)
        .await?
        .iter()
        .filter_map(|s| s["value"][1].as_str().and_then(|x| x.parse().ok()))
        .collect())
}

/// The `data.result` of an instant query (vectors or, for a range selector, matrices), at
/// `time` (seconds) or now.
pub(crate) async fn result(
    http: &reqwest::Client,
    prom: &str,
    q: &str,
    time: Option<f64>,
) -> Result<Vec<serde_json::Value>, String> {
    let mut url =
        reqwest::Url::parse(&format!("{prom}/api/v1/query")).map_err(|e| e.to_string())?;
    url.query_pairs_mut().append_pair("query", q);
    if let Some(t) = time {
        url.query_pairs_mut()
            .append_pair("time", &format!("{t:.3}"));
    }
    let body = http
        .get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let mut v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{q}: {body}"));
    }
    Ok(match v["data"]["result"].take() {
        serde_json::Value::Array(a) => a,
        _ => Vec::new(),
    })
}

async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> Result<(), String> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{url} answered {status}: {text}"))
    }
}

/// Polls every check until all hold or `PATIENCE` passes; returns the lines to print.
async fn settle(
    http: &reqwest::Client,
    prom: &str,
    checks: &[Expect],
) -> Result<Vec<String>, String> {
    let started = Instant::now();
    loop {
        let mut failing = Vec::new();
        let mut lines = Vec::new();
        for c in checks {
            let got = query(http, prom, &c.query).await?;
            let ok = got.len() == 1 && (got[0] - c.value).abs() <= 1e-9 * c.value.abs().max(1.0);
            lines.push(format!(
                "{} {:<44} {} = {got:?}",
                if ok { "ok  " } else { "FAIL" },
                c.what,
                c.query
            ));
            if !ok {
                failing.push(format!(
                    "{}: {} gave {got:?}, expected [{}]",
                    c.what, c.query, c.value
                ));
            }
        }
        if failing.is_empty() {
            return Ok(lines);
        }
        if started.elapsed() > PATIENCE {
            return Err(format!(
                "after {PATIENCE:?}, through Prometheus's API:\n{}",
                lines.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Debian's Prometheus with `<name>.yml` from `dir`, its data in `dir/<name>`, logging
/// (appended) to `dir/<name>.log`, listening on a loopback `port`.
pub(crate) fn prometheus(
    dir: &std::path::Path,
    name: &str,
    port: u16,
    extra: &[&str],
) -> Result<Host, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .map_err(|e| e.to_string())?;
    Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join(format!("{name}.yml")).display()
        ))
        .arg(format!("--storage.tsdb.path={}", dir.join(name).display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .map(Host)
        .map_err(|e| format!("prometheus: {e}"))
}

pub fn run(cargo: &str) -> Result<(), String> {
    crate::ensure_tools(&["prometheus", "chromium"])?;
    crate::run(Command::new(cargo).args(["build", "-p", "tidegauge"]))?;
    let bin = crate::root().join("target/debug/tidegauge");
    let dir = crate::root().join("target/e2e");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let up = crate::demo::start_upstreams(&rt, &dir)?;
    let (tg_port, prom_port) = (free_port()?, free_port()?);
    let tg = format!("127.0.0.1:{tg_port}");
    let prom = format!("http://127.0.0.1:{prom_port}");
    let cfg = dir.join("tidegauge.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[collectors.icos-push]\ndata_dir = {:?}\n\n[collectors.icos-push.models]\nprometheus_url = \"{prom}\"\ninterval = \"1s\"\n",
            up.tables,
            dir.join("data").display().to_string()
        ),
    )
    .map_err(|e| e.to_string())?;
    let _host = crate::bench::start_host(&bin, &cfg, tg_port)?;

    let app = format!("http://{}/status", up.app_addr);
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             scrape_configs:\n\
             \x20 - job_name: tidegauge\n    honor_labels: true\n    static_configs:\n      - targets: [\"{tg}\"]\n\
             \x20 - job_name: probe\n    metrics_path: /probe\n    static_configs:\n      - targets: [\"{app}\"]\n\
             \x20   relabel_configs:\n\
             \x20     - source_labels: [__address__]\n        target_label: __param_target\n\
             \x20     - source_labels: [__param_target]\n        target_label: instance\n\
             \x20     - target_label: __address__\n        replacement: \"{tg}\"\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let _prometheus = prometheus(&dir, "prometheus", prom_port, &[])?;

    let http = tidegauge_core::http::client().map_err(|e| e.to_string())?;
    let base = format!("http://{tg}");
    let mut checks = vec![
        expect("tidegauge scraped", "up{job=\"tidegauge\"}", 1.0),
        expect(
            "probe scraped",
            format!("up{{job=\"probe\",instance=\"{app}\"}}"),
            1.0,
        ),
        expect(
            "app-status target up",
            "app_status_up{job=\"tidegauge\",target=\"sample\"}",
            1.0,
        ),
        expect(
            "app-status health",
            "app_health{job=\"tidegauge\",app_health=\"healthy\"}",
            1.0,
        ),
        expect(
            "probe through relabelling",
            format!("app_requests_pending{{job=\"probe\",instance=\"{app}\"}}"),
            0.0,
        ),
        expect(
            "IFCB dashboard up",
            "ifcb_dashboard_up{dashboard=\"sample\"}",
            1.0,
        ),
        expect(
            "IFCB live dataset up to date",
            "ifcb_is_dataset_up_to_date{dataset=\"mvco\"}",
            1.0,
        ),
        expect(
            "IFCB finished cruise stale",
            "ifcb_is_dataset_up_to_date{dataset=\"cruise-2025\"}",
            0.0,
        ),
        expect("board up", "sensor_board_up{board=\"greenhouse\"}", 1.0),
        expect(
            "failing board down",
            "sensor_board_up{board=\"flaky\"}",
            0.0,
        ),
        expect(
            "sysfs temperature (base units)",
            "sensor_temperature_celsius{chip=\"bme280\"}",
            21.45,
        ),
        expect(
            "sysfs pressure in pascals",
            "sensor_pressure_pascals{chip=\"bme280\"}",
            101_325.0,
        ),
        expect(
            "pushed group, honor_labels",
            "e2e_pushed{job=\"e2e-batch\",instance=\"run1\"}",
            42.0,
        ),
        expect("ICOS metric", "e2e_icos_level{site=\"pier\"}", 7.5),
        expect(
            "model metric on Prometheus's own telemetry",
            "e2e_up_forecast",
            1.0,
        ),
    ];
    if up.mqtt_port.is_some() {
        checks.push(expect("MQTT connected", "sensor_mqtt_connected", 1.0));
        checks.push(expect(
            "MQTT humidity reading",
            "sensor_relative_humidity_ratio{source=\"mqtt\",device=\"livingroom\"}",
            0.485,
        ));
    } else {
        eprintln!("xtask: e2e without MQTT: mosquitto is not installed");
    }
    let lines = rt.block_on(async {
        let started = Instant::now();
        while !http
            .get(format!("{prom}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if started.elapsed() > PATIENCE {
                return Err(format!(
                    "Prometheus did not become ready; see {}",
                    dir.join("prometheus.log").display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let r = http
            .put(format!("{base}/metrics/job/e2e-batch/instance/run1"))
            .body("# TYPE e2e_pushed gauge\ne2e_pushed 42\n")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("push answered {}", r.status()));
        }
        post_json(
            &http,
            &format!("{base}/create_metric"),
            serde_json::json!({"metric_type": 2,
            "metric_name": "e2e_icos_level", "value": 7.5, "labels": {"site": "pier"}}),
        )
        .await?;
        // The model metric needs a few seconds of `up` in Prometheus first.
        let started = Instant::now();
        loop {
            let have = query(&http, &prom, "count_over_time(up{job=\"tidegauge\"}[1m])").await?;
            if have.first().is_some_and(|n| *n >= 5.0) {
                break;
            }
            if started.elapsed() > PATIENCE {
                return Err("Prometheus stored fewer than 5 scrapes of tidegauge".into());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        post_json(
            &http,
            &format!("{base}/create_model_metric"),
            serde_json::json!({
            "metric_type": 2, "metric_name": "e2e_up_forecast",
            "telemetry_metrics": ["up{job=\"tidegauge\"}"], "model_tag": "embedded:linear",
            "steps_back": 5, "step_in_seconds": 1}),
        )
        .await?;
        let mut lines = settle(&http, &prom, &checks).await?;
        // Every expression of the operations kit's dashboard parses and finds data.
        let text = std::fs::read_to_string(crate::root().join("ops/grafana-dashboard.json"))
            .map_err(|e| e.to_string())?;
        let dash: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let exprs: Vec<String> = dash["panels"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["targets"].as_array().into_iter().flatten())
            .filter_map(|t| t["expr"].as_str().map(str::to_owned))
            .collect();
        for e in &exprs {
            let got = query(&http, &prom, e).await?;
            if got.is_empty() {
                return Err(format!("the dashboard's {e:?} finds no data in Prometheus"));
            }
            lines.push(format!(
                "ok   dashboard query                              {e} ({} series)",
                got.len()
            ));
        }
        Ok(lines)
    })?;
    let mut lines = lines;
    // The landing page, now that every collector has something to show: the failing board
    // first, the stale cruise before the live dataset, relative times.
    let mut expected = vec![
        "Needs attention",
        "Targets",
        "sensor-bridge",
        "Boards",
        "greenhouse",
        "Datasets",
        "mvco",
        "cruise-2025",
        " ago",
        "Push groups",
        "job=\"e2e-batch\"",
        "Model metrics",
        "e2e_up_forecast",
    ];
    if up.mqtt_port.is_some() {
        expected.extend(["MQTT broker", "connected", "livingroom"]);
    }
    lines.extend(crate::browser::check(
        &dir,
        &base,
        &expected,
        &[
            ("Needs attention: sensor-bridge : 1 failing", "Collectors"),
            ("failing flaky", "ok greenhouse"),
            ("warning sample cruise-2025", "ok sample mvco"),
        ],
    )?);
    lines.extend(crate::remote_write::run(&rt, &bin, &dir)?);
    for l in &lines {
        println!("{l}");
    }
    println!(
        "xtask: e2e passed: {} checks through a real Prometheus scraping tidegauge every second",
        checks.len()
    );
    Ok(())
}
