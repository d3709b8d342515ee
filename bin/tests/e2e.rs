//! End-to-end: the built binary on an ephemeral loopback port, scraped over HTTP, checked by
//! `promtool check metrics`, reloaded, and stopped.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::*;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn write_config(path: &Path, status_url: &str, extra: &str) {
    std::fs::write(
        path,
        format!(
            "[collectors.app-status]\nmin_interval = 0\n[[collectors.app-status.targets]]\nname = \"app\"\nurl = \"{status_url}\"\n{extra}"
        ),
    )
    .unwrap();
}

async fn status_app() -> MockServer {
    let server = MockServer::start().await;
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/app-status/healthy.json"
    ))
    .unwrap();
    Mock::given(path("/status"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_app_status_that_promtool_accepts() {
    let app = status_app().await;
    let dir = temp_dir("serve");
    let cfg = dir.join("tidegauge.toml");
    write_config(&cfg, &format!("{}/status", app.uri()), "");
    let host = Host::with_config(&cfg);
    let http = client();

    let resp = http.get(host.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = resp.text().await.unwrap();
    assert_eq!(value(&body, "app_requests_current"), Some(10.0));
    assert_eq!(
        value(&body, "app_health{app_health=\"healthy\"}"),
        Some(1.0)
    );
    assert_eq!(value(&body, "app_status_up{target=\"app\"}"), Some(1.0));
    assert_eq!(
        value(
            &body,
            "tidegauge_scrape_collector_success{collector=\"app-status\"}"
        ),
        Some(1.0)
    );
    promtool_check(&body);

    // What Prometheus 3 asks for.
    let om = http
        .get(host.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3",
        )
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        om.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));

    let probe = http
        .get(host.url(&format!(
            "/probe?module=default&target={}/status",
            app.uri()
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(value(&probe, "probe_success"), Some(1.0));
    assert_eq!(value(&probe, "app_uptime"), Some(25.99));
    promtool_check(&probe);

    let landing = get_text(&http, &host.url("/")).await;
    assert!(landing.contains("app-status"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_the_running_configuration_when_the_file_is_bad() {
    let app = status_app().await;
    let dir = temp_dir("reload");
    let cfg = dir.join("tidegauge.toml");
    let url = format!("{}/status", app.uri());
    write_config(&cfg, &url, "");
    let host = Host::with_config(&cfg);
    let http = client();

    // A broken file: SIGHUP logs why and keeps serving the old configuration.
    std::fs::write(
        &cfg,
        "[collectors.app-status]\nmin_interval = \"whenever\"\n",
    )
    .unwrap();
    let pid = host.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let line = host.wait_for_log("reload failed");
    assert!(line.contains("min_interval"), "{line}");
    let body = get_text(&http, &host.url("/metrics")).await;
    assert_eq!(value(&body, "app_status_up{target=\"app\"}"), Some(1.0));

    // A good file through POST /-/reload: a second target appears.
    write_config(
        &cfg,
        &url,
        &format!(
            "labels = {{ site = \"a\" }}\n[[collectors.app-status.targets]]\nname = \"second\"\nurl = \"{url}\"\nlabels = {{ site = \"b\" }}\n"
        ),
    );
    let resp = http.post(host.url("/-/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = get_text(&http, &host.url("/metrics")).await;
    assert_eq!(value(&body, "app_status_up{target=\"second\"}"), Some(1.0));
    assert_eq!(value(&body, "app_requests_current{site=\"b\"}"), Some(10.0));

    // Bad again, through the route: 500 with the reason, still serving.
    std::fs::write(&cfg, "[collectors.app-status]\nbogus = 1\n").unwrap();
    let resp = http.post(host.url("/-/reload")).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.text().await.unwrap().contains("bogus"));
    let body = get_text(&http, &host.url("/metrics")).await;
    assert_eq!(value(&body, "app_status_up{target=\"second\"}"), Some(1.0));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn invalid_configuration_exits_2_naming_the_key() {
    let dir = temp_dir("invalid");
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[web]\nmax_requests = \"lots\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("web.max_requests"), "{err}");

    let out = Command::new(BIN)
        .env("TARGET_PORT", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TARGET_PORT"));

    // The web configuration file is checked at start-up too.
    let web = dir.join("web.yml");
    std::fs::write(&web, "http_server_config:\n  headers:\n    Server: me\n").unwrap();
    let out = Command::new(BIN)
        .args(["--web.config.file", web.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("web.yml") && err.contains("\"Server\" can not be configured"),
        "{err}"
    );

    // The host's [auth] given twice: under its name and under icos-push's old one.
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "t0ken\n").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "[auth]\ntokens_file = {tokens:?}\n[collectors.icos-push]\ndata_dir = {:?}\n[collectors.icos-push.auth]\ntokens_file = {tokens:?}\n",
            dir.join("data"),
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("collectors.icos-push.auth and auth both given"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigterm_stops_gracefully() {
    let host = Host::start(
        &["--web.listen-address", "127.0.0.1:0"],
        &[("TARGET_PORT", "1")],
    );
    sigterm(&host);
    let mut host = host;
    let status = host.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// A sysfs attribute whose read never returns (a FIFO nobody writes, as a hanging driver):
/// scrapes still answer, and SIGTERM still ends the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_sysfs_read_neither_holds_scrapes_nor_the_exit() {
    let dir = temp_dir("fifo");
    let dev = dir.join("bus/iio/devices/iio:device0");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("name"), "bme280\n").unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(dev.join("in_temp_input"))
            .status()
            .unwrap()
            .success()
    );
    let host = Host::start(
        &[
            "--web.listen-address",
            "127.0.0.1:0",
            "--collector.sensor-bridge",
            "--path.sysfs",
            dir.to_str().unwrap(),
        ],
        &[("TARGET_PORT", "1")],
    );
    let http = client();
    for _ in 0..2 {
        let body = tokio::time::timeout(
            Duration::from_secs(30),
            http.get(host.url("/metrics"))
                .header("X-Prometheus-Scrape-Timeout-Seconds", "3600")
                .send(),
        )
        .await
        .expect("a scrape waited for the hanging read")
        .unwrap()
        .text()
        .await
        .unwrap();
        assert!(
            body.contains("sensor_read_errors_total{source=\"iio\",device=\"iio:device0\",sensor=\"\",reason=\"timeout\"}"),
            "{body}"
        );
    }
    sigterm(&host);
    let mut host = host;
    let mut exited = None;
    for _ in 0..300 {
        if let Some(status) = host.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = exited.expect("still running 30 s after SIGTERM");
    assert!(status.success(), "{status:?}");
    std::fs::remove_dir_all(&dir).ok();
}

fn sigterm(host: &Host) {
    let pid = host.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Seconds since the Unix epoch, for the fake dashboards' timelines.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ifcb_exporter_command_line_serves_a_dashboard() {
    use tidegauge_testkit::ifcb::{FakeDashboard, FakeDataset, Model};
    let now = unix_now();
    let mut model = Model::new(now);
    model
        .datasets
        .insert("mvco".into(), FakeDataset::regular(100, now - 600));
    model.datasets.insert(
        "empty".into(),
        FakeDataset {
            active: true,
            ..FakeDataset::default()
        },
    );
    let fake = FakeDashboard::start(model).await.unwrap();
    let host = Host::start(
        &[
            "--base-url",
            &format!("whoi={}", fake.url),
            "--lag-threshold-seconds",
            "3600",
            "--web.listen-address",
            "127.0.0.1:0",
        ],
        &[],
    );
    let body = get_text(&client(), &host.url("/metrics")).await;
    assert_eq!(
        value(
            &body,
            "ifcb_is_dataset_up_to_date{dashboard=\"whoi\",dataset=\"mvco\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &body,
            "ifcb_latest_bin_timestamp{dashboard=\"empty\",dataset=\"empty\"}"
        ),
        None
    );
    assert_eq!(
        value(
            &body,
            "ifcb_latest_bin_timestamp{dashboard=\"whoi\",dataset=\"empty\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &body,
            "tidegauge_scrape_collector_success{collector=\"ifcb\"}"
        ),
        Some(1.0)
    );
    assert!(
        !body.contains("app_status_up"),
        "only the IFCB collector runs"
    );
    promtool_check(&body);
}

/// Pushes counter increments from several clients, SIGKILLs the host mid-stream, restarts it on
/// the same data directory: every acknowledged increment is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn icos_push_survives_sigkill() {
    let dir = temp_dir("crash");
    let cfg = push_config(&dir);
    let host = Host::with_config(&cfg);
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pushers = Vec::new();
    for _ in 0..4 {
        let (url, acked, stop) = (host.url("/create_metric"), acked.clone(), stop.clone());
        pushers.push(tokio::spawn(async move {
            let http = client();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let sent = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(r#"{"metric_type": 1, "metric_name": "pushes", "value": 1}"#)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => break,
                }
            }
        }));
    }
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut host = host;
    host.child.kill().unwrap(); // SIGKILL
    host.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for p in pushers {
        p.await.unwrap();
    }
    let acked = acked.load(std::sync::atomic::Ordering::SeqCst) as f64;
    drop(host);

    let host = Host::with_config(&cfg);
    let body = get_text(&client(), &host.url("/metrics")).await;
    let total = value(&body, "pushes_total")
        .unwrap_or_else(|| panic!("no pushes_total after restart:\n{body}"));
    // Every acknowledged push is present; at most the four in flight at the kill may also be.
    assert!(
        total >= acked && total <= acked + 4.0,
        "acked {acked}, restored {total}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Model metrics and a locally trained model survive SIGKILL: after the restart the trained
/// model is listed and both metrics' tasks run again on fresh telemetry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metrics_resume_after_sigkill() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let prom = MockServer::start().await;
    let offset = std::sync::Arc::new(AtomicU64::new(0));
    let served = offset.clone();
    Mock::given(path("/api/v1/query_range"))
        .respond_with(move |_: &wiremock::Request| {
            let o = served.load(Ordering::SeqCst) as f64;
            let values: Vec<serde_json::Value> = (0..30)
                .map(|i| {
                    serde_json::json!([1_700_000_000 + 60 * i, (o + 10.0 + i as f64).to_string()])
                })
                .collect();
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"status": "success",
                "data": {"resultType": "matrix", "result": [{"metric": {}, "values": values}]}}))
        })
        .mount(&prom)
        .await;
    let dir = temp_dir("models-kill");
    let cfg = push_config(&dir);
    let base = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{base}[collectors.icos-push.models]\nprometheus_url = \"{}\"\ninterval = \"1s\"\n",
            prom.uri()
        ),
    )
    .unwrap();
    let http = client();
    let post = |host: &Host, route: &str, body: serde_json::Value| {
        http.post(host.url(route))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let mut host = Host::with_config(&cfg);
    let r = post(
        &host,
        "/create_model_metric",
        serde_json::json!({"metric_type": 2,
        "metric_name": "level_forecast", "telemetry_metrics": ["level"],
        "model_tag": "embedded:linear", "steps_back": 30, "step_in_seconds": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = post(
        &host,
        "/train_model_metric",
        serde_json::json!({"model_name": "level_model",
        "model_type": "linear", "test_size": 0.2, "steps_back": 30,
        "telemetry_metrics": ["level"], "model_parameters": {}, "step_in_seconds": 1}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let body = get_text(&http, &host.url("/metrics")).await;
    assert_eq!(value(&body, "level_forecast"), Some(40.0), "{body}");
    host.child.kill().unwrap(); // SIGKILL
    host.child.wait().unwrap();
    drop(host);

    offset.store(1000, Ordering::SeqCst);
    let host = Host::with_config(&cfg);
    let r = post(&host, "/show_models", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r.text().await.unwrap()).unwrap(),
        serde_json::json!({"models_count": 1, "models_list": {"level_model:1": "level_model"}})
    );
    let mut body = String::new();
    for _ in 0..100 {
        body = get_text(&http, &host.url("/metrics")).await;
        if value(&body, "level_forecast") == Some(1040.0)
            && body.contains("level_model{model_name=\"level_model\",model_type=\"LINEAR\",sequence_size=\"30\",step_in_seconds=\"1\"} 1040")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(value(&body, "level_forecast"), Some(1040.0), "{body}");
    assert!(
        body.contains("tidegauge_icos_push_model_metrics 2"),
        "{body}"
    );
    assert!(
        body.contains("level_model{model_name=\"level_model\",model_type=\"LINEAR\",sequence_size=\"30\",step_in_seconds=\"1\"} 1040"),
        "{body}"
    );
    drop(host);
    std::fs::remove_dir_all(&dir).ok();
}

/// A reload hands the open store to the new icos-push instance: pushed series stay, new limits
/// apply, and switching the collector off and on again finds the same store (a database file
/// can be opened once per process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_hands_the_push_store_over() {
    let dir = temp_dir("reload-push");
    let cfg = push_config(&dir);
    let base = std::fs::read_to_string(&cfg).unwrap();
    let host = Host::with_config(&cfg);
    let http = client();
    let push = |body: &'static str| http.put(host.url("/metrics/job/a")).body(body).send();
    let reload = || async {
        let r = http.post(host.url("/-/reload")).send().await.unwrap();
        let status = r.status();
        assert_eq!(status, 200, "{}", r.text().await.unwrap());
    };
    assert_eq!(push("kept 1\n").await.unwrap().status(), 200);

    std::fs::write(&cfg, format!("{base}max_body_size = 16\n")).unwrap();
    reload().await;
    assert_eq!(
        push("a_body_longer_than_sixteen_bytes 1\n")
            .await
            .unwrap()
            .status(),
        413
    );
    let body = get_text(&http, &host.url("/metrics")).await;
    assert!(body.contains("kept{instance=\"\",job=\"a\"} 1"), "{body}");

    std::fs::write(&cfg, format!("{base}enabled = false\n")).unwrap();
    reload().await;
    let body = get_text(&http, &host.url("/metrics")).await;
    assert!(!body.contains("kept{"), "{body}");
    std::fs::write(&cfg, &base).unwrap();
    reload().await;
    let body = get_text(&http, &host.url("/metrics")).await;
    assert!(body.contains("kept{instance=\"\",job=\"a\"} 1"), "{body}");
    drop(host);
    std::fs::remove_dir_all(&dir).ok();
}

/// A push cannot hide or change a collector's series: a family of the same name and type joins
/// the collector's (told apart by `job` and `instance`), another type is a 400 naming the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_join_collector_families_and_never_hide_them() {
    use tidegauge_testkit::ifcb::{FakeDashboard, FakeDataset, Model};
    let now = unix_now();
    let mut model = Model::new(now);
    model
        .datasets
        .insert("mvco".into(), FakeDataset::regular(10, now - 600));
    let fake = FakeDashboard::start(model).await.unwrap();
    let dir = temp_dir("names");
    let cfg = dir.join("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collectors.app-status]\nenabled = false\n[collectors.icos-push]\ndata_dir = {:?}\n[[collectors.ifcb.dashboards]]\nname = \"d1\"\nurl = \"{}\"\n",
            dir.join("data"),
            fake.url
        ),
    )
    .unwrap();
    let host = Host::with_config(&cfg);
    let http = client();
    let body = get_text(&http, &host.url("/metrics")).await;
    assert_eq!(
        value(&body, "ifcb_dashboard_up{dashboard=\"d1\"}"),
        Some(1.0),
        "{body}"
    );

    let push = |body: &'static str| http.put(host.url("/metrics/job/x")).body(body).send();
    let resp = push("# TYPE ifcb_dashboard_up counter\nifcb_dashboard_up{dashboard=\"d1\"} 1\n")
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let reason = resp.text().await.unwrap();
    assert!(reason.contains("collector ifcb"), "{reason}");
    // The same type joins: both series served, once each, under ifcb's HELP. A client's own
    // process_* series join the host's the same way.
    let resp = push("# TYPE ifcb_dashboard_up gauge\nifcb_dashboard_up{dashboard=\"d1\"} 0\n# TYPE process_open_fds gauge\nprocess_open_fds 3\n")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let body = get_text(&http, &host.url("/metrics")).await;
    assert_eq!(
        value(&body, "ifcb_dashboard_up{dashboard=\"d1\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        value(
            &body,
            "ifcb_dashboard_up{dashboard=\"d1\",instance=\"\",job=\"x\"}"
        ),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        body.matches("# TYPE ifcb_dashboard_up gauge").count(),
        1,
        "{body}"
    );
    assert_eq!(
        body.matches("# TYPE process_open_fds gauge").count(),
        1,
        "{body}"
    );
    assert_eq!(
        value(&body, "process_open_fds{instance=\"\",job=\"x\"}"),
        Some(3.0)
    );
    promtool_check(&body);
    drop(host);
    std::fs::remove_dir_all(&dir).ok();
}

/// Python's prometheus_client, unchanged, pushing to the Pushgateway routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_push_to_gateway_works_unchanged() {
    let dir = temp_dir("python");
    let cfg = push_config(&dir);
    let host = Host::with_config(&cfg);
    let script = r#"
import os
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, delete_from_gateway, push_to_gateway, pushadd_to_gateway
addr = os.environ["PUSHGATEWAY"]
reg = CollectorRegistry()
Gauge("job_last_success_unixtime", "Last time a batch job successfully finished", registry=reg).set(1234.5)
Counter("batch_runs", "Runs", ["kind"], registry=reg).labels("nightly").inc(3)
Summary("batch_step_seconds", "Step durations", registry=reg).observe(0.25)
Histogram("batch_rows", "Rows per step", buckets=[10, 100], registry=reg).observe(42)
push_to_gateway(addr, job="batch", registry=reg, grouping_key={"path": "/var/tmp"})
more = CollectorRegistry()
Gauge("other_value", "Other", registry=more).set(2)
pushadd_to_gateway(addr, job="batch", registry=more, grouping_key={"path": "/var/tmp"})
push_to_gateway(addr, job="gone", registry=more)
delete_from_gateway(addr, job="gone")
# The default registry: process_* (as the host's own), python_info, python_gc_*.
from prometheus_client import REGISTRY
push_to_gateway(addr, job="default", registry=REGISTRY)
# A Counter and a Gauge of one base name, pushed to two jobs (shared_total and shared).
counters = CollectorRegistry()
Counter("shared", "A counter", registry=counters).inc()
push_to_gateway(addr, job="c1", registry=counters)
gauges = CollectorRegistry()
Gauge("shared", "A gauge", registry=gauges).set(5)
push_to_gateway(addr, job="c2", registry=gauges)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .env("PUSHGATEWAY", &host.addr)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e} (run scripts/install-test-deps.sh)"));
    assert!(
        out.status.success(),
        "the Python client failed (scripts/install-test-deps.sh installs prometheus_client):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = get_text(&client(), &host.url("/metrics")).await;
    let key = "instance=\"\",job=\"batch\",path=\"/var/tmp\"";
    assert_eq!(
        value(&body, &format!("job_last_success_unixtime{{{key}}}")),
        Some(1234.5),
        "{body}"
    );
    // Labels are sorted: the counter's own label sits between the grouping labels.
    let runs = "batch_runs_total{instance=\"\",job=\"batch\",kind=\"nightly\",path=\"/var/tmp\"}";
    assert_eq!(value(&body, runs), Some(3.0), "{body}");
    assert_eq!(
        value(&body, &format!("other_value{{{key}}}")),
        Some(2.0),
        "pushadd keeps the other families"
    );
    assert!(
        body.contains("# TYPE batch_step_seconds summary\n"),
        "{body}"
    );
    assert_eq!(
        value(&body, &format!("batch_step_seconds_sum{{{key}}}")),
        Some(0.25)
    );
    assert_eq!(
        value(&body, &format!("batch_step_seconds_count{{{key}}}")),
        Some(1.0)
    );
    assert!(body.contains("# TYPE batch_rows histogram\n"), "{body}");
    assert_eq!(
        value(
            &body,
            "batch_rows_bucket{instance=\"\",job=\"batch\",path=\"/var/tmp\",le=\"100\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert!(
        !body.contains("job=\"gone\""),
        "deleted group still exposed:\n{body}"
    );
    // The client's process_* series join the host's families; nothing is hidden.
    assert!(value(&body, "process_open_fds").is_some(), "{body}");
    assert!(
        value(&body, "process_open_fds{instance=\"\",job=\"default\"}").is_some(),
        "{body}"
    );
    assert_eq!(body.matches("# TYPE process_open_fds gauge").count(), 1);
    assert!(body.contains("python_info{"), "{body}");
    // Served under the names pushed, in both formats: OpenMetrics writes the counter as
    // `unknown`, since its family name `shared` is the gauge's.
    assert!(body.contains("# TYPE shared_total counter\n"), "{body}");
    assert_eq!(
        value(&body, "shared_total{instance=\"\",job=\"c1\"}"),
        Some(1.0)
    );
    assert_eq!(value(&body, "shared{instance=\"\",job=\"c2\"}"), Some(5.0));
    promtool_check(&body);
    // A counter without `_total`, as Go's client_golang pushes it: a delimited protobuf
    // MetricFamily {name: "go_ops", type: COUNTER, metric: [{counter: {value: 9}}]}.
    let mut family = vec![0x0a, 6];
    family.extend_from_slice(b"go_ops");
    family.extend_from_slice(&[0x18, 0, 0x22, 11, 0x1a, 9, 0x09]);
    family.extend_from_slice(&9f64.to_le_bytes());
    let mut delimited = vec![u8::try_from(family.len()).unwrap()];
    delimited.extend(family);
    let resp = client()
        .put(host.url("/metrics/job/go"))
        .header(
            "content-type",
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
        )
        .body(delimited)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let body = get_text(&client(), &host.url("/metrics")).await;
    assert!(body.contains("# TYPE go_ops counter\n"), "{body}");
    assert_eq!(value(&body, "go_ops{instance=\"\",job=\"go\"}"), Some(9.0));
    let om = get_openmetrics(&client(), &host.url("/metrics")).await;
    for want in [
        "# TYPE shared gauge\nshared{instance=\"\",job=\"c2\"} 5.0\n",
        "# TYPE shared_total unknown\nshared_total{instance=\"\",job=\"c1\"} 1.0\n",
        "# TYPE go_ops unknown\ngo_ops{instance=\"\",job=\"go\"} 9.0\n",
        "# TYPE batch_runs counter\nbatch_runs_total{",
    ] {
        assert!(om.contains(want), "{want:?} in\n{om}");
    }
    strict_openmetrics_check(&om);
    std::fs::remove_dir_all(&dir).ok();
}

/// TLS and basic auth from `--web.config.file`, through the built binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_config_file_serves_tls_with_basic_auth() {
    let dir = temp_dir("tls");
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls");
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  alice: {}\n",
            fixtures.join("server.pem").display(),
            fixtures.join("server-key.pem").display(),
            bcrypt_hash_of_s3cret()
        ),
    )
    .unwrap();
    let host = Host::start(
        &[
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.config.file",
            web.to_str().unwrap(),
            "--no-collector.icos-push",
        ],
        &[("TARGET_PORT", "1")],
    );
    let port = host.addr.rsplit(':').next().unwrap().to_owned();
    tidegauge_testkit::http_client();
    let ca = std::fs::read(fixtures.join("ca.pem")).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/metrics");
    let r = https.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic");
    let r = https
        .get(&url)
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("tidegauge_build_info"));
    // Plain HTTP on the TLS port gets no answer.
    assert!(
        client()
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .is_err()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A bcrypt hash (cost 4) of "s3cret", made once here rather than stored.
fn bcrypt_hash_of_s3cret() -> String {
    bcrypt::hash("s3cret", 4).unwrap()
}

/// `--check-config` validates without side effects: it neither creates, upgrades nor locks a
/// store, so it can run beside the service on the same data directory.
#[test]
fn check_config_touches_no_store() {
    let dir = temp_dir("check");
    let data = dir.join("data");
    let cfg = dir.join("t.toml");
    std::fs::write(
        &cfg,
        format!("[collectors.icos-push]\ndata_dir = {data:?}\nmax_series = 10\n"),
    )
    .unwrap();
    let check = || {
        Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "--check-config"])
            .env_remove("PORT")
            .env_remove("EXPORTER_PORT")
            .output()
            .unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!data.exists(), "no data directory made");
    // A store of an earlier release stays as it is (no upgrade).
    std::fs::create_dir_all(&data).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/icos-push/store-0.1.0.redb");
    std::fs::copy(&fixture, data.join("icos-push.redb")).unwrap();
    assert!(check().status.success());
    assert_eq!(
        std::fs::read(data.join("icos-push.redb")).unwrap(),
        std::fs::read(&fixture).unwrap()
    );
    // And it still validates what the collector checks.
    std::fs::write(
        &cfg,
        format!("[collectors.icos-push]\ndata_dir = {data:?}\nmax_series = 0\n"),
    )
    .unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_series"));
    std::fs::remove_dir_all(&dir).ok();
}

/// Slow clients: headers and bodies have deadlines, connections are capped, and what is closed
/// is counted. (Time bounds here are liveness margins, several times the configured limits.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_counted() {
    use std::io::Read as _;
    let dir = temp_dir("slow");
    let cfg = push_config(&dir);
    let host = Host::start(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--web.listen-address",
            "127.0.0.1:0",
            "--web.read-header-timeout",
            "1s",
            "--web.read-timeout",
            "1s",
            "--web.max-connections",
            "4",
        ],
        &[],
    );
    let addr = host.addr.clone();
    let closed_within = |mut s: std::net::TcpStream, secs: u64| {
        s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
        let mut buf = Vec::new();
        // Ok(_) at end of stream, or a reset: either way the host closed it.
        match s.read_to_end(&mut buf) {
            Ok(_) => Ok(String::from_utf8_lossy(&buf).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(String::new()),
            Err(e) => Err(e),
        }
    };
    // Headers that never end.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(closed_within(s, 5).is_ok(), "a slow header must be cut off");
    // A body that never arrives: 408.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(
        b"PUT /metrics/job/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\nabc",
    )
    .unwrap();
    let answer = closed_within(s, 5).expect("a slow body must be answered");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // More connections than allowed: the extra one is closed at once.
    let held: Vec<_> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let extra = std::net::TcpStream::connect(&addr).unwrap();
    assert!(closed_within(extra, 5).is_ok());
    drop(held);
    std::thread::sleep(Duration::from_millis(1500));
    let body = get_text(&client(), &host.url("/metrics")).await;
    for reason in ["header_timeout", "read_timeout", "max_connections"] {
        let n = value(
            &body,
            &format!("tidegauge_http_connections_closed_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0);
        assert!(n >= 1.0, "{reason}: {body}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The soft open-file limit is raised to the hard one at start-up, as Go programs do.
#[test]
fn the_open_file_limit_is_raised() {
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "ulimit -Sn 256 && exec {BIN} --web.listen-address 127.0.0.1:0 --no-collector.app-status"
            ),
        ])
        .env_remove("PORT")
        .env_remove("EXPORTER_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains("listening"))),
        "no listening line"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = row.split_whitespace().collect();
    // "Max open files  SOFT  HARD  files"
    assert_eq!(fields[3], fields[4], "{row}");
    assert_ne!(fields[3], "256", "{row}");
}

/// Names that collide only through OpenMetrics suffixes (`_created`, `_total`), pushed as a
/// reviewer did: every push is answered, and the OpenMetrics exposition stays valid for the
/// Python client's strict parser (a family `x_created` beside a counter, histogram or summary
/// `x` made it refuse the whole scrape).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_stays_valid_whatever_the_pushed_names() {
    let dir = temp_dir("om-names");
    let host = Host::with_config(&push_config(&dir));
    let http = client();
    let pushes: &[(&str, &str)] = &[
        (
            "a",
            "# TYPE x_total counter\nx_total 1\n# TYPE x_created_total counter\nx_created_total 2\n",
        ),
        (
            "b",
            "# TYPE h histogram\nh_bucket{a=\"1\",le=\"+Inf\"} 1\nh_sum{a=\"1\"} 1\nh_count{a=\"1\"} 1\n# TYPE h_created gauge\nh_created{a=\"2\"} 5\n",
        ),
        (
            "c",
            "# TYPE s summary\ns_sum{a=\"1\"} 1\ns_count{a=\"1\"} 1\n",
        ),
        (
            "d",
            "# TYPE s_created untyped\ns_created{a=\"1\"} 7\ns_created{a=\"9\"} 8\n",
        ),
        (
            "e",
            "# TYPE y_total counter\ny_total 1\n# TYPE y_created histogram\ny_created_bucket{le=\"+Inf\"} 1\ny_created_sum 1\ny_created_count 1\n",
        ),
        (
            "f",
            "# TYPE z_total counter\nz_total{k=\"1\"} 1\n# TYPE z_created gauge\nz_created{k=\"2\"} 3\n",
        ),
        (
            "g",
            "# TYPE w_total counter\nw_total{k=\"1\"} 1\n# TYPE w_created gauge\nw_created{k=\"1\"} 1.7e9\n",
        ),
        ("k", "# TYPE neg_total counter\nneg_total -1\n"),
    ];
    for (job, body) in pushes {
        let resp = http
            .put(host.url(&format!("/metrics/job/{job}")))
            .body(*body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status() == 200 || resp.status() == 400,
            "{job}: {}",
            resp.status()
        );
    }
    // The ICOS routes against pushed names, both ways round.
    for body in [
        r#"{"metric_type": 2, "metric_name": "h_created", "value": 1}"#,
        r#"{"metric_type": 1, "metric_name": "x_created", "value": 1}"#,
        r#"{"metric_type": 2, "metric_name": "v_created", "value": 1}"#,
    ] {
        http.post(host.url("/create_metric"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
    }
    for (job, body) in [
        ("i", "# TYPE v summary\nv_sum 1\nv_count 1\n"),
        ("j", "# TYPE v_total counter\nv_total 1\n"),
    ] {
        http.put(host.url(&format!("/metrics/job/{job}")))
            .body(body)
            .send()
            .await
            .unwrap();
    }
    let om = get_openmetrics(&http, &host.url("/metrics")).await;
    strict_openmetrics_check(&om);
    // The folded w_created is w's `_created` sample; the unmatched z_created stays a gauge.
    assert!(om.contains("# TYPE w counter\nw_total{instance=\"\",job=\"g\",k=\"1\"} 1\nw_created{instance=\"\",job=\"g\",k=\"1\"} 1700000000\n"), "{om}");
    assert!(om.contains("# TYPE z_total unknown\n"), "{om}");
    assert!(om.contains("# TYPE neg_total unknown\n"), "{om}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A `[remote_write]` table that cannot work is refused at start-up, naming the key.
#[test]
fn bad_remote_write_settings_are_refused_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("tg-rw-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("t.toml");
    for (table, want) in [
        (
            "[remote_write]\nurl = \"http://127.0.0.1:9/w\"\ncollectors = [\"nonesuch\"]\n",
            "remote_write.collectors: \"nonesuch\"",
        ),
        (
            "[remote_write]\ninterval = \"15s\"\n",
            "missing field `url`",
        ),
        (
            "[remote_write]\nurl = \"http://127.0.0.1:9/w\"\nqueue_max_bytes = 5\n",
            "remote_write.queue_max_bytes",
        ),
    ] {
        std::fs::write(&cfg, table).unwrap();
        let out = Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "--check-config"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{table}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{table}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A syntax error in the configuration file is reported by position, without the line: a
/// secret written there must not reach the log or the reload's answer.
#[test]
fn a_syntax_error_does_not_echo_the_line() {
    let dir = std::env::temp_dir().join(format!("tg-syntax-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("t.toml");
    std::fs::write(
        &cfg,
        "[remote_write]\nurl = \"http://127.0.0.1:9/w\"\n[remote_write.basic_auth]\nusername = \"u\"\npassword = \"s3cr3t-\"pw\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOML syntax error at line 5, column"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
