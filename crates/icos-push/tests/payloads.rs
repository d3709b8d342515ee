//! The ICOS routes driven by a table of payloads: every type, every error of the spec, unicode,
//! huge numbers, NaN and infinities, empty and invalid names. The transcript (status and body
//! of each request) and the resulting exposition are snapshot-tested.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tidegauge_core::{Collector, HostServices};
use tidegauge_icos_push::{Config, IcosPush};
use tidegauge_testkit::{FIXTURE_EPOCH, FakeClock, context, render_formats};
use tower::ServiceExt;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tidegauge-icos-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn services() -> HostServices {
    tidegauge_testkit::services(FakeClock::at(FIXTURE_EPOCH), std::env::temp_dir())
}

fn open(dir: &std::path::Path) -> IcosPush {
    let cfg = Config {
        data_dir: Some(dir.to_path_buf()),
        max_series: 40,
        max_label_length: 64,
        max_body_size: 4096,
        ..Config::default()
    };
    IcosPush::open(&cfg, &services(), None).unwrap()
}

async fn post(app: &axum::Router, path: &str, body: &str) -> (u16, String) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn exposition(c: &IcosPush) -> String {
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    // Commit counters depend on timing and on the process's history, not on what was pushed.
    tidegauge_testkit::drop_families(
        &render_formats(&c.collect(&ctx).await.unwrap()),
        "tidegauge_icos_push_store_",
    )
}

/// (route, body) in order; later cases rely on what earlier ones registered.
const CASES: &[(&str, &str)] = &[
    // Gauge: create, update, labels, coercions.
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "node_cpu_forecast", "metric_info": "CPU forecast", "value": 0.42, "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "node_cpu_forecast", "value": "0.5", "labels": {"node": "n2"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "node_cpu_forecast", "value": true, "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "node_cpu_forecast", "value": "abc", "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "node_cpu_forecast", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "node_cpu_forecast", "value": 1, "labels": {"node": "n1", "zone": "a"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "node_cpu_forecast", "value": 1, "labels": {"zone": "a"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "  ", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "1bad", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "bad-name", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "g", "value": 1, "labels": {"bad-label": "x"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "g", "value": 1, "labels": {"__reserved": "x"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "tidegauge_mine", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "special_values", "value": "NaN", "labels": {"v": "nan"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "special_values", "value": "-Infinity", "labels": {"v": "neg"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "special_values", "value": 1.7976931348623157e308, "labels": {"v": "max"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "special_values", "value": 1e-300, "labels": {"v": "tiny"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "unicode_labels", "metric_info": "Température \"mesurée\"\nligne 2", "value": 3, "labels": {"site": "Ålesund \"nord\"\\x"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "numeric_labels", "value": 1, "labels": {"id": 1655371, "ratio": 1.0, "flag": true}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "long_label", "value": 1, "labels": {"x": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}"#,
    ),
    // Counter.
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "requests_total", "value": 2, "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "requests_total", "value": "3.5", "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "requests", "value": 1, "labels": {"node": "n2"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "requests", "value": -1, "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "requests", "value": "five", "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "requests_created", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "bar_total", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "bar", "value": 1}"#,
    ),
    // Info.
    (
        "create_metric",
        r#"{"metric_type": 3, "metric_name": "build", "value": {"version": "1.2", "rev": "abc"}, "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 3, "metric_name": "build", "value": {"version": "1.3", "rev": "def"}, "labels": {"node": "n2"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 3, "metric_name": "build", "value": {"version": "1.3"}, "labels": {"node": "n2"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 3, "metric_name": "build", "value": "1.3", "labels": {"node": "n2"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 3, "metric_name": "numbers", "value": {"a": 1, "b": 2.5}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 3, "metric_name": "overlap", "value": {"node": "x"}, "labels": {"node": "n1"}}"#,
    ),
    // Enum.
    (
        "create_metric",
        r#"{"metric_type": 4, "metric_name": "state", "value": "running", "labels": {"node": "n1"}, "states": ["starting", "running", "stopped"]}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 4, "metric_name": "state", "value": "stopped", "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 4, "metric_name": "state", "value": "zzz", "labels": {"node": "n1"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 4, "metric_name": "state", "value": "running", "labels": {"node": "n1"}, "states": ["a", "b"]}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 4, "metric_name": "no_states", "value": "x"}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 4, "metric_name": "mode", "value": "a", "labels": {"mode": "m"}, "states": ["a"]}"#,
    ),
    // A valid metric name, but not a valid label name: the state label could not be written.
    (
        "create_metric",
        r#"{"metric_type": 4, "metric_name": "job:phase", "value": "a", "states": ["a"]}"#,
    ),
    // Names the host or the Pushgateway routes expose.
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "push_time_seconds", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 3, "metric_name": "tidegauge", "value": {"a": "b"}}"#,
    ),
    // Schema errors (422).
    (
        "create_metric",
        r#"{"metric_type": 7, "metric_name": "x", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": "2", "metric_name": "x", "value": 1}"#,
    ),
    ("create_metric", r#"{"metric_name": "x", "value": 1}"#),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "x", "value": null}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": 5, "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "x", "value": [1]}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "x", "value": 1, "labels": ["a"]}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "x", "value": "   "}"#,
    ),
    ("create_metric", r#"not json"#),
    ("create_metric", r#"[1, 2]"#),
    // Unregister.
    (
        "unregister_metric",
        r#"{"metric_type": 1, "metric_name": "node_cpu_forecast"}"#,
    ),
    (
        "unregister_metric",
        r#"{"metric_type": 2, "metric_name": "nothing_here"}"#,
    ),
    (
        "unregister_metric",
        r#"{"metric_type": 2, "metric_name": "long_label"}"#,
    ),
    (
        "unregister_metric",
        r#"{"metric_type": 2, "metric_name": "bar_total"}"#,
    ),
    ("unregister_metric", r#"{"metric_name": "x"}"#),
    // Release 2.0.1 of the original: the type field is `type`; unregister takes the name alone.
    (
        "create_metric",
        r#"{"type": 2, "metric_name": "release_201", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"type": "2", "metric_name": "release_201", "value": 1}"#,
    ),
    ("unregister_metric", r#"{"metric_name": "release_201"}"#),
    // Limits of the Pushgateway path apply here too: label counts and label-name lengths.
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "many_labels", "value": 1, "labels": {"l0": "v", "l1": "v", "l2": "v", "l3": "v", "l4": "v", "l5": "v", "l6": "v", "l7": "v", "l8": "v", "l9": "v", "l10": "v", "l11": "v", "l12": "v", "l13": "v", "l14": "v", "l15": "v", "l16": "v", "l17": "v", "l18": "v", "l19": "v", "l20": "v", "l21": "v", "l22": "v", "l23": "v", "l24": "v", "l25": "v", "l26": "v", "l27": "v", "l28": "v", "l29": "v", "l30": "v", "l31": "v", "l32": "v", "l33": "v", "l34": "v", "l35": "v", "l36": "v", "l37": "v", "l38": "v", "l39": "v", "l40": "v", "l41": "v", "l42": "v", "l43": "v", "l44": "v", "l45": "v", "l46": "v", "l47": "v", "l48": "v", "l49": "v", "l50": "v", "l51": "v", "l52": "v", "l53": "v", "l54": "v", "l55": "v", "l56": "v", "l57": "v", "l58": "v", "l59": "v", "l60": "v", "l61": "v", "l62": "v", "l63": "v", "l64": "v"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "long_label_name", "value": 1, "labels": {"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk": "v"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 3, "metric_name": "long_info_key", "value": {"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk": "v"}}"#,
    ),
    // Counters count finite amounts: NaN or an infinity would poison the series for good.
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "poisoned", "value": "nan"}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "poisoned", "value": "Infinity"}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "poisoned", "value": 1e308}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "poisoned", "value": 1e308}"#,
    ),
    // pydantic's lax mode: an integral float or a boolean is a metric type.
    (
        "create_metric",
        r#"{"metric_type": 2.0, "metric_name": "lax_type", "value": 1}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": true, "metric_name": "lax_counter", "value": 1}"#,
    ),
    // Float labels as Python writes them, so the series are the original's.
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "python_floats", "value": 1, "labels": {"a": 1e20, "b": 1e-7, "c": 1.5e16}}"#,
    ),
    // What Python's json.dumps sends by default: bare NaN and Infinity, numbers beyond f64.
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "python_specials", "value": NaN, "labels": {"v": "nan"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "python_specials", "value": -Infinity, "labels": {"v": "neg"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 2, "metric_name": "python_specials", "value": 1e309, "labels": {"v": "big"}}"#,
    ),
    (
        "create_metric",
        r#"{"metric_type": 1, "metric_name": "python_counter", "value": Infinity}"#,
    ),
    // Enum series carry their labels in name order, the state label among them.
    (
        "create_metric",
        r#"{"metric_type": 4, "metric_name": "mode", "value": "on", "states": ["on", "off"], "labels": {"zone": "a", "area": "b"}}"#,
    ),
    // Info values that are booleans, written as the original writes them.
    (
        "create_metric",
        r#"{"metric_type": 3, "metric_name": "flags", "value": {"b": true, "c": false}}"#,
    ),
];

#[tokio::test]
async fn payload_table() {
    let dir = temp_dir("table");
    let c = open(&dir);
    let app = c.routes().into_router();
    let mut transcript = String::new();
    for (i, (route, body)) in CASES.iter().enumerate() {
        let (status, answer) = post(&app, &format!("/{route}"), body).await;
        transcript.push_str(&format!(
            "{i:02} POST /{route} {body}\n   -> {status} {answer}\n"
        ));
    }
    insta::assert_snapshot!("transcript", transcript);
    insta::assert_snapshot!("exposition", exposition(&c).await);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn limits() {
    let dir = temp_dir("limits");
    let c = open(&dir);
    let app = c.routes().into_router();
    let huge = format!(
        r#"{{"metric_type": 2, "metric_name": "x", "value": "{}"}}"#,
        "1".repeat(5000)
    );
    let (status, body) = post(&app, "/create_metric", &huge).await;
    assert_eq!(status, 413, "{body}");
    for i in 0..40 {
        let (status, body) = post(&app, "/create_metric", &format!(r#"{{"metric_type": 2, "metric_name": "many", "value": 1, "labels": {{"i": "{i}"}}}}"#)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = post(
        &app,
        "/create_metric",
        r#"{"metric_type": 2, "metric_name": "many", "value": 1, "labels": {"i": "41"}}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("series limit"), "{body}");
    // Updating an existing series is still fine at the limit.
    let (status, _) = post(
        &app,
        "/create_metric",
        r#"{"metric_type": 2, "metric_name": "many", "value": 2, "labels": {"i": "0"}}"#,
    )
    .await;
    assert_eq!(status, 200);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn acknowledged_writes_survive_a_restart() {
    let dir = temp_dir("restart");
    let before = {
        let c = open(&dir);
        let app = c.routes().into_router();
        for (route, body) in CASES {
            post(&app, &format!("/{route}"), body).await;
        }
        exposition(&c).await
    };
    let c = open(&dir);
    assert_eq!(exposition(&c).await, before);
    // Counters keep counting from the restored total.
    let app = c.routes().into_router();
    let (status, _) = post(
        &app,
        "/create_metric",
        r#"{"metric_type": 1, "metric_name": "requests", "value": 1, "labels": {"node": "n2"}}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        exposition(&c)
            .await
            .contains("requests_total{node=\"n2\"} 2\n")
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn concurrent_writes_are_all_applied() {
    let dir = temp_dir("concurrent");
    let c = open(&dir);
    let app = c.routes().into_router();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                post(
                    &app,
                    "/create_metric",
                    r#"{"metric_type": 1, "metric_name": "hits", "value": 1}"#,
                )
                .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().0, 200);
    }
    assert!(exposition(&c).await.contains("hits_total 50\n"));
    drop(c);
    drop(app);
    let c = open(&dir);
    assert!(exposition(&c).await.contains("hits_total 50\n"));
    std::fs::remove_dir_all(&dir).ok();
}

/// A wrong method on an ICOS route answers JSON, as FastAPI does.
#[tokio::test]
async fn wrong_methods_answer_json() {
    let dir = temp_dir("methods");
    let c = open(&dir);
    let app = c.routes().into_router();
    let resp = app
        .oneshot(
            axum::http::Request::get("/create_metric")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], br#"{"detail":"Method Not Allowed"}"#);
}
