//! Model metrics: the five routes against a recorded Prometheus, Grafana and Intelligence API
//! (wiremock), their answers and the exposition they leave (snapshots), later failures, and
//! what a restart keeps.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use tidegauge_core::{Collector, HostServices};
use tidegauge_icos_push::models::ModelsConfig;
use tidegauge_icos_push::{Config, IcosPush};
use tidegauge_testkit::{FIXTURE_EPOCH, FakeClock, context, render};
use tower::ServiceExt;
use wiremock::matchers::{body_json, body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, Request as Seen, ResponseTemplate};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tidegauge-models-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn services() -> HostServices {
    tidegauge_testkit::services(FakeClock::at(FIXTURE_EPOCH), std::env::temp_dir())
}

fn open(dir: &std::path::Path, models: ModelsConfig) -> IcosPush {
    let cfg = Config {
        data_dir: Some(dir.to_path_buf()),
        models,
        ..Config::default()
    };
    IcosPush::open(&cfg, &services(), None).unwrap()
}

async fn post(app: &axum::Router, route: &str, body: &str) -> (u16, Json) {
    let req = Request::post(route)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Json::Null))
}

async fn exposition(c: &IcosPush) -> String {
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    let text = render(&c.collect(&ctx).await.unwrap());
    let text = tidegauge_testkit::drop_families(&text, "tidegauge_icos_push_store_");
    tidegauge_testkit::drop_families(&text, "tidegauge_icos_push_expired_")
}

/// `[[t, "v"], ...]` for a query_range answer.
fn matrix(values: &[f64]) -> Json {
    let points: Vec<Json> = values
        .iter()
        .enumerate()
        .map(|(i, v)| json!([1_700_000_000 + 60 * i as i64, v.to_string()]))
        .collect();
    json!({"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"__name__": "x"}, "values": points}]}})
}

fn ramp(n: usize) -> Vec<f64> {
    (0..n).map(|i| 100.0 + 2.0 * i as f64).collect()
}

/// A Prometheus API serving recorded series by expression.
async fn prometheus() -> MockServer {
    let server = MockServer::start().await;
    for (expr, values) in [
        ("ramp", ramp(400)),
        ("constant", vec![7.5; 50]),
        ("short", vec![1.0, 2.0]),
        ("gappy", vec![1.0, f64::NAN, 3.0, 4.0, f64::NAN, 6.0, 7.0]),
    ] {
        Mock::given(method("GET"))
            .and(path("/api/v1/query_range"))
            .and(query_param("query", expr))
            .respond_with(ResponseTemplate::new(200).set_body_json(matrix(&values)))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/api/v1/query_range"))
        .and(query_param("query", "nothing"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"status": "success", "data": {"resultType": "matrix", "result": []}}),
        ))
        .mount(&server)
        .await;
    server
}

fn prometheus_config(server: &MockServer) -> ModelsConfig {
    ModelsConfig {
        prometheus_url: Some(server.uri()),
        ..ModelsConfig::default()
    }
}

fn model_metric(name: &str, expr: &str, tag: &str, steps_back: usize) -> String {
    json!({"metric_type": 2, "metric_name": name, "metric_info": format!("{name} forecast"),
        "labels": {"node": "n1"}, "telemetry_metrics": [expr], "model_tag": tag,
        "steps_back": steps_back})
    .to_string()
}

/// Every route's answers, in order (later cases rely on earlier ones), and the exposition.
#[tokio::test]
async fn model_routes_answer_as_the_original() {
    let prom = prometheus().await;
    let dir = temp_dir("routes");
    let c = open(&dir, prometheus_config(&prom));
    let app = c.routes().into_router();
    let cases: Vec<(&str, String)> = vec![
        ("create_model_metric", String::new()),
        ("create_model_metric", "{}".into()),
        ("create_model_metric", model_metric("ramp_forecast", "ramp", "embedded:linear", 60)),
        ("create_model_metric", model_metric("constant_forecast", "constant", "embedded:auto", 30)),
        ("create_model_metric", model_metric("gappy_forecast", "gappy", "embedded:linear", 7)),
        ("create_model_metric", model_metric("x", "ramp", "embedded:nope", 10)),
        ("create_model_metric", model_metric("x", "ramp", "metrics_utilization_model_xgb:latest", 10)),
        ("create_model_metric", model_metric("x", "nothing", "embedded:linear", 10)),
        ("create_model_metric", model_metric("x", "short", "embedded:ets", 2)),
        ("create_model_metric", model_metric("x", "ramp", "embedded:linear", 0)),
        (
            "create_model_metric",
            json!({"metric_type": 2, "metric_name": "x", "telemetry_metrics": ["ramp", "constant"],
                "model_tag": "embedded:ets", "steps_back": 10}).to_string(),
        ),
        (
            "create_model_metric",
            json!({"metric_type": 3, "metric_name": "x", "telemetry_metrics": ["ramp"],
                "model_tag": "embedded:ets", "steps_back": 10}).to_string(),
        ),
        (
            "create_model_metric",
            json!({"metric_type": 4, "metric_name": "ramp_level", "telemetry_metrics": ["constant"],
                "model_tag": "embedded:linear", "steps_back": 10,
                "model_states": ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"]}).to_string(),
        ),
        // A name a metric of another type holds.
        ("create_model_metric", model_metric("ramp_level", "ramp", "embedded:linear", 10)),
        // A name another model metric's gauges hold: the two would overwrite each other.
        (
            "create_model_metric",
            model_metric("ramp_forecast_confidence", "constant", "embedded:linear", 10),
        ),
        (
            "create_model_metric",
            json!({"metric_type": 2, "metric_name": "x", "telemetry_metrics": ["ramp"],
                "model_tag": "embedded:linear", "steps_back": 10,
                "step_in_seconds": 9_223_372_036_854_775_807_u64}).to_string(),
        ),
        ("stop_model_metrics", String::new()),
        ("stop_model_metrics", r#"{"metric_names": [" "]}"#.into()),
        ("stop_model_metrics", r#"{"metric_names": ["gappy_forecast", "unknown"]}"#.into()),
        ("show_models", String::new()),
        ("remove_model", String::new()),
        ("remove_model", r#"{"model_tag": "ramp_model:1"}"#.into()),
        (
            "train_model_metric",
            json!({"model_name": "ramp_model", "model_type": "linear", "test_size": 0.2,
                "steps_back": 20, "telemetry_metrics": ["ramp"], "model_parameters": {}}).to_string(),
        ),
        (
            "train_model_metric",
            json!({"model_name": "ramp_model", "model_type": "ETS", "test_size": 0.2,
                "steps_back": 20, "telemetry_metrics": ["ramp"], "model_parameters": {},
                "labels": {"site": "pier"}}).to_string(),
        ),
        // Retrained with the labels it has: version 2 replaces the running metric's model.
        (
            "train_model_metric",
            json!({"model_name": "ramp_model", "model_type": "ETS", "test_size": 0.2,
                "steps_back": 20, "telemetry_metrics": ["ramp"], "model_parameters": {}}).to_string(),
        ),
        (
            "train_model_metric",
            json!({"model_name": "xgb_model", "model_type": "XGB", "test_size": 0.2,
                "steps_back": 20, "telemetry_metrics": ["ramp"],
                "model_parameters": {"xgboost_model_parameters": {"n_estimators": 10}}}).to_string(),
        ),
        (
            "train_model_metric",
            json!({"model_name": "m", "model_type": "LSTM", "test_size": 0.2, "steps_back": 20,
                "telemetry_metrics": ["ramp"], "model_parameters": {}}).to_string(),
        ),
        (
            "train_model_metric",
            json!({"model_name": "m", "model_type": "ETS", "test_size": 0.2, "steps_back": 20,
                "telemetry_metrics": ["ramp"], "model_parameters": {}, "dataclay": true}).to_string(),
        ),
        (
            "train_model_metric",
            json!({"model_name": "m", "model_type": "MSTL", "test_size": 0.2, "steps_back": 20,
                "telemetry_metrics": ["short"], "model_parameters": {}}).to_string(),
        ),
        ("show_models", r#"{"model": "all"}"#.into()),
        ("show_models", r#"{"model": "nobody"}"#.into()),
        ("create_model_metric", model_metric("latest_forecast", "ramp", "ramp_model:latest", 20)),
        ("remove_model", r#"{"model_tag": "ramp_model:1"}"#.into()),
        // Version 2 runs the metric ramp_model that its training restarted.
        ("remove_model", r#"{"model_tag": "ramp_model:2"}"#.into()),
        ("stop_model_metrics", r#"{"metric_names": ["ramp_model"]}"#.into()),
        // Still used: by latest_forecast, whose `ramp_model:latest` names the only version.
        ("remove_model", r#"{"model_tag": "ramp_model:2"}"#.into()),
        ("show_models", String::new()),
    ];
    let mut transcript = String::new();
    for (route, body) in &cases {
        let (status, answer) = post(&app, &format!("/{route}"), body).await;
        transcript.push_str(&format!("POST /{route} {body}\n  {status} {answer}\n"));
    }
    insta::assert_snapshot!("model_routes", transcript);
    insta::assert_snapshot!("model_exposition", exposition(&c).await);
    drop(app);
    drop(c);
    std::fs::remove_dir_all(&dir).ok();
}

/// The embedded linear model continues the ramp within 1 %, on the newest `steps_back` values.
#[tokio::test]
async fn a_ramp_is_continued_within_one_percent() {
    let prom = prometheus().await;
    let dir = temp_dir("ramp");
    let c = open(&dir, prometheus_config(&prom));
    let app = c.routes().into_router();
    let (status, answer) = post(
        &app,
        "/create_model_metric",
        &model_metric("next", "ramp", "embedded:linear", 50),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let text = exposition(&c).await;
    let got = value(&text, "next{node=\"n1\"}");
    let want = ramp(401)[400];
    assert!((got - want).abs() <= 0.01 * want, "{got} vs {want}\n{text}");
    std::fs::remove_dir_all(&dir).ok();
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Remote tags go to the Intelligence API with the original's request bodies; its answers
/// become the value and the bounds; remote listings and removals pass through.
#[tokio::test]
async fn the_intelligence_api_gets_the_original_requests() {
    let prom = prometheus().await;
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/predict"))
        .and(body_json(
            json!({"model_tag": "metrics_utilization_model_xgb:latest",
            "steps_back": 3, "data_interruption": false, "history_data": [[]],
            "input_series": {"input_1": [894.0, 896.0, 898.0], "input_2": [7.5, 7.5, 7.5]},
            "history_sample_size": 500, "metric_type": 2}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "model_prediction": [[0.512]], "model_confidence": 97.5,
            "95%_confidence_interval": "0.47 to 0.55", "metric_type": 1})))
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path("/train"))
        .and(body_json(json!({"model_name": "arima_model", "model_type": "ARIMA",
            "test_size": 0.25, "dataset_name": "ds", "steps_back": 12, "max_models_count": null,
            "max_mlruns_count": null, "shap_samples": 5,
            "model_parameters": {"xgboost_model_parameters": {"p": 1, "d": 0, "q": 1}}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "Trained Model": "arima_model:3", "Dataset Splits": {}, "Results with test dataset": []})))
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path("/predict"))
        .and(body_partial_json(
            json!({"model_tag": "arima_model:3", "steps_back": 12}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"model_prediction": 42})))
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path("/show_models"))
        .and(body_json(json!({"model": "all"})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"models_count": 1, "models_list": {"3": "arima_model"}})),
        )
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path("/remove_model"))
        .and(body_json(json!({"model_tag": "arima_model:3"})))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"Removed_model": {"name": "arima_model", "version": "3"}})),
        )
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path("/remove_model"))
        .respond_with(ResponseTemplate::new(500).set_body_string("Internal Server Error"))
        .mount(&api)
        .await;
    let dir = temp_dir("remote");
    let c = open(
        &dir,
        ModelsConfig {
            intelligence_url: Some(format!("{}/", api.uri())),
            ..prometheus_config(&prom)
        },
    );
    let app = c.routes().into_router();
    let create = json!({"metric_type": 2, "metric_name": "cpu_forecast", "labels": {"node": "n1"},
        "telemetry_metrics": ["ramp", "constant"], "model_tag": "metrics_utilization_model_xgb:latest",
        "steps_back": 3, "history_sample_size": 500});
    let (status, answer) = post(&app, "/create_model_metric", &create.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let train = json!({"model_name": "arima_model", "model_type": "Arima", "test_size": 0.25,
        "dataset_name": "ds", "steps_back": 12, "telemetry_metrics": ["ramp"], "shap_samples": 5,
        "model_parameters": {"xgboost_model_parameters": {"p": 1, "d": 0, "q": 1}}});
    let (status, answer) = post(&app, "/train_model_metric", &train.to_string()).await;
    assert_eq!(
        (status, answer),
        (
            200,
            json!({"message": "Dataset created, model training started successfully."})
        )
    );
    // The training runs in the background and then starts the metric `arima_model`.
    let mut text = String::new();
    for _ in 0..200 {
        text = exposition(&c).await;
        if text.contains("arima_model{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        text.contains("arima_model{model_name=\"arima_model\",model_type=\"ARIMA\",sequence_size=\"12\",step_in_seconds=\"60\"} 42"),
        "{text}"
    );
    // An answer without confidence or interval leaves none standing from before: NaN.
    assert!(
        text.contains("arima_model_lower{model_name=\"arima_model\",model_type=\"ARIMA\",sequence_size=\"12\",step_in_seconds=\"60\"} NaN"),
        "{text}"
    );
    assert!(text.contains("cpu_forecast{node=\"n1\"} 0.512"), "{text}");
    assert!(
        text.contains("cpu_forecast_confidence{node=\"n1\"} 97.5"),
        "{text}"
    );
    assert!(
        text.contains("cpu_forecast_lower{node=\"n1\"} 0.47"),
        "{text}"
    );
    assert!(
        text.contains("cpu_forecast_upper{node=\"n1\"} 0.55"),
        "{text}"
    );
    let (status, answer) = post(&app, "/show_models", "").await;
    assert_eq!(
        (status, answer),
        (
            200,
            json!({"models_count": 1, "models_list": {"3": "arima_model"}})
        )
    );
    let (status, answer) = post(&app, "/remove_model", r#"{"model_tag": "arima_model:3"}"#).await;
    assert_eq!(
        (status, answer),
        (
            200,
            json!({"Removed_model": {"name": "arima_model", "version": "3"}})
        )
    );
    let (status, answer) = post(&app, "/remove_model", r#"{"model_tag": "other:1"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("HTTP 500"),
        "{answer}"
    );
    // Embedded tags stay local with a remote API configured.
    let (status, answer) = post(
        &app,
        "/create_model_metric",
        &model_metric("local", "ramp", "embedded:linear", 10),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    drop(app);
    drop(c);
    std::fs::remove_dir_all(&dir).ok();
}

/// Grafana's `api/ds/query` as the original sent it: one request for every expression.
#[tokio::test]
async fn grafana_is_queried_as_the_original_did() {
    let grafana = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/ds/query"))
        .and(wiremock::matchers::header("authorization", "Bearer glsa_token"))
        .and(body_partial_json(json!({"queries": [{"refId": "q0", "expr": "ramp",
            "maxDataPoints": 5, "intervalMs": 30000, "utcOffsetSec": 3600,
            "datasource": {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}}]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": {"q0": {
            "status": 200, "frames": [{"data": {"values": [[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]]}}]}}})))
        .expect(1)
        .mount(&grafana)
        .await;
    let dir = temp_dir("grafana");
    let c = open(
        &dir,
        ModelsConfig {
            grafana_url: Some(grafana.uri()),
            grafana_token: Some("glsa_token".into()),
            grafana_datasource_uid: Some("P1809F7CD0C75ACF3".into()),
            grafana_interval_ms: Some(30_000),
            grafana_utc_offset_sec: Some(3600),
            ..ModelsConfig::default()
        },
    );
    let app = c.routes().into_router();
    let (status, answer) = post(
        &app,
        "/create_model_metric",
        &model_metric("g", "ramp", "embedded:linear", 5),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // The newest five of six points: 2..6, so the trend's next value is 7.
    let got = value(&exposition(&c).await, "g{node=\"n1\"}");
    assert!((got - 7.0).abs() < 1e-6, "{got}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Configuration errors name what is wrong.
#[test]
fn both_telemetry_sources_are_a_configuration_error() {
    let cfg = Config {
        models: ModelsConfig {
            prometheus_url: Some("http://127.0.0.1:9090".into()),
            grafana_url: Some("http://127.0.0.1:3000".into()),
            ..ModelsConfig::default()
        },
        ..Config::default()
    };
    let err = IcosPush::check(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("prometheus_url") && err.contains("grafana_url"),
        "{err}"
    );
    let cfg = Config {
        models: ModelsConfig {
            grafana_url: Some("http://127.0.0.1:3000".into()),
            ..ModelsConfig::default()
        },
        ..Config::default()
    };
    let err = IcosPush::check(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("GRAFANA_SERVICE_ACCOUNT_BEARER_TOKEN"),
        "{err}"
    );
}

/// Later cycles that fail keep the last value and are counted by reason; a slow source does not
/// hold a scrape; definitions and trained models are still there after the store is reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_failures_are_counted_and_definitions_survive_a_restart() {
    let prom = MockServer::start().await;
    let offset = Arc::new(AtomicU64::new(0));
    let served = Arc::clone(&offset);
    Mock::given(path("/api/v1/query_range"))
        .respond_with(move |_: &Seen| {
            let o = served.load(Ordering::SeqCst);
            if o == u64::MAX {
                return ResponseTemplate::new(503).set_body_string("overloaded");
            }
            let values: Vec<f64> = ramp(40).iter().map(|v| v + o as f64).collect();
            ResponseTemplate::new(200).set_body_json(matrix(&values))
        })
        .mount(&prom)
        .await;
    let dir = temp_dir("restart");
    let config = ModelsConfig {
        interval: Some(Duration::from_secs(1)),
        ..prometheus_config(&prom)
    };
    let c = open(&dir, config.clone());
    let app = c.routes().into_router();
    let (status, answer) = post(
        &app,
        "/create_model_metric",
        &json!({"metric_type": 2, "metric_name": "f", "telemetry_metrics": ["q"],
            "model_tag": "embedded:linear", "steps_back": 40, "step_in_seconds": 1})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let first = value(&exposition(&c).await, "f ");
    assert!((first - 180.0).abs() < 1e-6, "{first}");
    // The landing page shows the metric's last cycle.
    let shown = |c: &IcosPush| {
        let status = c.status();
        let row = status.sections[1].rows[0].clone();
        let cells: Vec<String> = row.cells.iter().map(ToString::to_string).collect();
        (row.health, cells)
    };
    let (health, cells) = shown(&c);
    assert_eq!(health, tidegauge_core::status::Health::Ok);
    assert_eq!(cells[..4], ["f", "embedded:linear", "1 s", "just now"]);
    let (status, answer) = post(
        &app,
        "/train_model_metric",
        &json!({"model_name": "trained", "model_type": "ets", "test_size": 0.25,
            "steps_back": 20, "telemetry_metrics": ["q"], "model_parameters": {}, "step_in_seconds": 1})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    offset.store(u64::MAX, Ordering::SeqCst);
    let mut text = String::new();
    for _ in 0..100 {
        text = exposition(&c).await;
        if text
            .contains("tidegauge_icos_push_model_errors_total{metric=\"f\",reason=\"telemetry\"}")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("tidegauge_icos_push_model_errors_total{metric=\"f\",reason=\"telemetry\"}"),
        "{text}"
    );
    assert_eq!(value(&text, "f "), first, "the last value stays");
    let (health, cells) = shown(&c);
    assert_eq!(health, tidegauge_core::status::Health::Failing);
    assert!(cells[4].contains("503"), "{cells:?}");
    // A re-post whose first cycle fails is refused and changes nothing.
    let (status, answer) = post(
        &app,
        "/create_model_metric",
        &json!({"metric_type": 2, "metric_name": "f", "telemetry_metrics": ["q"],
            "model_tag": "embedded:linear", "steps_back": 40})
        .to_string(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("503"),
        "{answer}"
    );
    drop(app);
    drop(c);

    // Reopened: definitions and the trained model are back; run() resumes the tasks.
    offset.store(1000, Ordering::SeqCst);
    // A cycle in flight holds the store open a moment longer.
    let cfg = Config {
        data_dir: Some(dir.clone()),
        models: config,
        ..Config::default()
    };
    let mut reopened = IcosPush::open(&cfg, &services(), None);
    for _ in 0..100 {
        if reopened.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        reopened = IcosPush::open(&cfg, &services(), None);
    }
    let c = reopened.unwrap();
    let app = c.routes().into_router();
    let (_, listed) = post(&app, "/show_models", "").await;
    assert_eq!(
        listed,
        json!({"models_count": 1, "models_list": {"trained:1": "trained"}})
    );
    let text = exposition(&c).await;
    assert!(
        text.contains("tidegauge_icos_push_model_metrics 2"),
        "{text}"
    );
    let token = tidegauge_core::CancellationToken::new();
    let running = {
        let (c, token) = (c.clone(), token.clone());
        tokio::spawn(async move { c.run(token).await })
    };
    let mut resumed = 0.0;
    for _ in 0..100 {
        resumed = value(&exposition(&c).await, "f ");
        if resumed > 1000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!((resumed - 1180.0).abs() < 1e-6, "{resumed}");
    token.cancel();
    running.await.unwrap();
    drop(app);
    drop(c);
    std::fs::remove_dir_all(&dir).ok();
}

/// A write whose request is dropped while its commit runs (a client that hangs up, a model task
/// stopped mid-cycle) is served once it is committed, not hidden behind the value before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_while_committing_is_served_once_committed() {
    let dir = temp_dir("dropped");
    let c = open(&dir, ModelsConfig::default());
    let app = c.routes().into_router();
    let (status, _) = post(
        &app,
        "/create_metric",
        r#"{"metric_type": 2, "metric_name": "g", "value": 1}"#,
    )
    .await;
    assert_eq!(status, 200);
    let req = Request::post("/create_metric")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"metric_type": 2, "metric_name": "g", "value": 2}"#,
        ))
        .unwrap();
    // Polled once: the write is decided and submitted, then the request is dropped while it
    // waits for the commit.
    let mut request = Box::pin(app.clone().oneshot(req));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(request.as_mut().poll(&mut cx).is_pending());
    drop(request);
    let mut text = String::new();
    for _ in 0..100 {
        text = exposition(&c).await;
        if text.contains("g 2.0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(text.contains("g 2.0\n"), "{text}");
    drop(app);
    drop(c);
    std::fs::remove_dir_all(&dir).ok();
}

/// `max_model_metrics` holds however many definitions arrive at once: a name counts from the
/// moment its first cycle starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_metric_limit_holds_under_concurrent_definitions() {
    let prom = MockServer::start().await;
    Mock::given(path("/api/v1/query_range"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(matrix(&ramp(20)))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&prom)
        .await;
    let dir = temp_dir("limit");
    let c = open(
        &dir,
        ModelsConfig {
            max_model_metrics: 3,
            ..prometheus_config(&prom)
        },
    );
    let app = c.routes().into_router();
    let answers = futures_util::future::join_all((0..12).map(|i| {
        let app = app.clone();
        async move {
            post(
                &app,
                "/create_model_metric",
                &model_metric(&format!("m{i}"), "q", "embedded:linear", 10),
            )
            .await
        }
    }))
    .await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 3, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == 400)
            .all(|(_, a)| a["detail"].as_str().unwrap().contains("max_model_metrics")),
        "{answers:?}"
    );
    drop(app);
    drop(c);
    std::fs::remove_dir_all(&dir).ok();
}

/// What a second attack found: a model in use removed during its metric's first cycle, names
/// another source or a model metric owns, a training stored before its metric was refused, and
/// re-posts counted against the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_models_in_use_stay_consistent_under_races() {
    let prom = MockServer::start().await;
    Mock::given(path("/api/v1/query_range"))
        .and(query_param("query", "slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(matrix(&ramp(30)))
                .set_delay(Duration::from_millis(600)),
        )
        .mount(&prom)
        .await;
    Mock::given(path("/api/v1/query_range"))
        .respond_with(ResponseTemplate::new(200).set_body_json(matrix(&ramp(30))))
        .mount(&prom)
        .await;
    let dir = temp_dir("races");
    let services = services();
    // The host exposes process_open_fds (recorded at every scrape).
    services.names.record(
        "the host",
        [&tidegauge_core::MetricFamily::gauge("process_open_fds", "")],
    );
    let cfg = Config {
        data_dir: Some(dir.clone()),
        models: ModelsConfig {
            max_model_metrics: 3,
            ..prometheus_config(&prom)
        },
        ..Config::default()
    };
    let c = IcosPush::open(&cfg, &services, None).unwrap();
    let app = c.routes().into_router();
    let train = |name: &str| {
        json!({"model_name": name, "model_type": "linear", "test_size": 0.2, "steps_back": 10,
            "telemetry_metrics": ["q"], "model_parameters": {}})
        .to_string()
    };
    let (status, answer) = post(&app, "/train_model_metric", &train("lin")).await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = post(&app, "/stop_model_metrics", r#"{"metric_names": ["lin"]}"#).await;
    assert_eq!(status, 200);
    // A removal while a definition using the model runs its first cycle: one of them fails.
    let creating = {
        let app = app.clone();
        tokio::spawn(async move {
            post(
                &app,
                "/create_model_metric",
                &model_metric("uses_lin", "slow", "lin:1", 10),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let removed = post(&app, "/remove_model", r#"{"model_tag": "lin:1"}"#).await;
    let created = creating.await.unwrap();
    assert_eq!(removed.0, 400, "{removed:?} / {created:?}");
    assert!(
        removed.1["detail"].as_str().unwrap().contains("uses_lin"),
        "{removed:?}"
    );
    assert_eq!(created.0, 200, "{created:?}");
    // A name the host exposes, for a model metric or an ICOS metric.
    let (status, answer) = post(
        &app,
        "/create_model_metric",
        &model_metric("process_open_fds", "q", "embedded:linear", 10),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["detail"].as_str().unwrap().contains("the host"),
        "{answer}"
    );
    let (status, answer) = post(
        &app,
        "/create_metric",
        r#"{"metric_type": 2, "metric_name": "process_open_fds", "value": 3}"#,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    // A push to a series a model metric writes.
    for name in ["uses_lin", "uses_lin_lower"] {
        let (status, answer) = post(
            &app,
            "/create_metric",
            &json!({"metric_type": 2, "metric_name": name, "value": 5, "labels": {"node": "n1"}})
                .to_string(),
        )
        .await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert!(
            answer["detail"]
                .as_str()
                .unwrap()
                .contains("model metric uses_lin"),
            "{answer}"
        );
    }
    // A training whose metric could not start stores nothing.
    let (status, answer) = post(&app, "/train_model_metric", &train("uses_lin_confidence")).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post(&app, "/train_model_metric", &train("tidegauge_model")).await;
    assert_eq!(status, 400, "{answer}");
    let (_, listed) = post(&app, "/show_models", "").await;
    assert_eq!(
        listed,
        json!({"models_count": 1, "models_list": {"lin:1": "lin"}})
    );
    // Two metrics of three allowed: re-posting both while a third is defined adds one, not three.
    let (status, answer) = post(
        &app,
        "/create_model_metric",
        &model_metric("second", "q", "embedded:linear", 10),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let reposts: Vec<_> = ["uses_lin", "second"]
        .into_iter()
        .map(|name| {
            let app = app.clone();
            let tag = if name == "second" {
                "embedded:linear"
            } else {
                "lin:1"
            };
            tokio::spawn(async move {
                post(
                    &app,
                    "/create_model_metric",
                    &model_metric(name, "slow", tag, 10),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, answer) = post(
        &app,
        "/create_model_metric",
        &model_metric("third", "q", "embedded:linear", 10),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    for r in reposts {
        let (status, answer) = r.await.unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    drop(app);
    drop(c);
    std::fs::remove_dir_all(&dir).ok();
}
