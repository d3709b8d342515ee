//! A store written by an earlier release opens and serves what that release served.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tidegauge_core::Collector;
use tidegauge_core::encode::{Format, encode};
use tidegauge_icos_push::{Config, IcosPush};
use tidegauge_testkit::{context, fixtures_dir};

fn series(exposition: &str) -> Vec<String> {
    let mut lines: Vec<String> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("tidegauge_") && !l.is_empty())
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn a_store_of_release_0_1_0_opens_with_every_series() {
    let dir = std::env::temp_dir().join(format!("tidegauge-upgrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixtures_dir().join("icos-push/store-0.1.0.redb"),
        dir.join("icos-push.redb"),
    )
    .unwrap();
    let cfg = Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    let clock = Arc::new(tidegauge_core::SystemClock);
    let push = IcosPush::open(
        &cfg,
        &tidegauge_testkit::services(clock.clone(), dir.clone()),
        None,
    )
    .unwrap();
    let snap = push
        .collect(&context(std::time::Duration::from_secs(5), clock.clone()))
        .await
        .unwrap();
    let text = encode(Format::Text, std::slice::from_ref(&snap));
    // Release 0.1.0 stored the pushed counter `some_metric` and served it as
    // `some_metric_total`: that stays its name, now as pushed (store format 2).
    assert!(
        text.contains("# TYPE some_metric_total counter\n"),
        "{text}"
    );
    let om = encode(Format::OpenMetrics, std::slice::from_ref(&snap));
    assert!(
        om.contains("# TYPE some_metric counter\nsome_metric_total{"),
        "{om}"
    );
    let served = series(&text);
    let want = series(
        &std::fs::read_to_string(fixtures_dir().join("icos-push/store-0.1.0.exposition.txt"))
            .unwrap(),
    );
    assert_eq!(served, want);
    // The upgraded counter is the family a client pushing it again names: POST replaces it.
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/metrics/job/some_job/instance/some_instance")
        .body(axum::body::Body::from(
            "# TYPE some_metric_total counter\nsome_metric_total{label=\"val1\"} 43\n",
        ))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(push.routes().into_router(), request)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let snap = push
        .collect(&context(std::time::Duration::from_secs(5), clock))
        .await
        .unwrap();
    let text = encode(Format::Text, &[snap]);
    assert_eq!(text.matches("some_metric_total{").count(), 1, "{text}");
    assert!(text.contains("label=\"val1\"} 43\n"), "{text}");
    drop(push);
    std::fs::remove_dir_all(&dir).ok();
}

/// A damaged store is an error naming the file, never a panic (the database library panics on
/// some damage).
#[tokio::test]
async fn a_damaged_store_is_an_error_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("tidegauge-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("icos-push.redb");
    std::fs::copy(fixtures_dir().join("icos-push/store-0.1.0.redb"), &file).unwrap();
    let cfg = Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    let services =
        || tidegauge_testkit::services(Arc::new(tidegauge_core::SystemClock), dir.clone());
    drop(IcosPush::open(&cfg, &services(), None).unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[8192..8192 + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&file, bytes).unwrap();
    // A repair that succeeds is fine too; what must not happen is a panic.
    if let Err(e) = IcosPush::open(&cfg, &services(), None) {
        assert!(e.to_string().contains("icos-push.redb"), "{e}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A store of format 2 (the release before model metrics) opens with its metrics and is
/// upgraded to format 3, which a release reading format 2 refuses rather than misreading model
/// records as metrics.
#[tokio::test]
async fn a_format_2_store_opens_and_is_upgraded() {
    use tidegauge_icos_push::model::{Kind, Metric, Series, SeriesValue};
    use tidegauge_icos_push::{records, store};
    let dir = std::env::temp_dir().join(format!("tidegauge-format2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("icos-push.redb");
    let metric = Metric {
        order: 0,
        kind: Kind::Gauge,
        name: "level".into(),
        help: "level info".into(),
        label_names: vec!["site".into()],
        states: Vec::new(),
        info_keys: Vec::new(),
        series: vec![Series {
            labels: vec!["pier".into()],
            value: SeriesValue::Number(2.5),
            created: 1.0,
        }],
    };
    {
        let s = store::Store::open(&file, 2, &records::upgrade).unwrap();
        s.write(vec![store::Write::Put(
            "level".into(),
            records::encode(&metric).unwrap(),
        )])
        .await
        .unwrap();
    }
    let cfg = Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    let clock = Arc::new(tidegauge_core::SystemClock);
    let push = IcosPush::open(
        &cfg,
        &tidegauge_testkit::services(clock.clone(), dir.clone()),
        None,
    )
    .unwrap();
    let snap = push
        .collect(&context(std::time::Duration::from_secs(5), clock))
        .await
        .unwrap();
    let text = encode(Format::Text, &[snap]);
    assert!(text.contains("level{site=\"pier\"} 2.5\n"), "{text}");
    assert!(
        text.contains("tidegauge_icos_push_model_metrics 0\n"),
        "{text}"
    );
    drop(push);
    let err = store::Store::open(&file, 2, &records::upgrade).unwrap_err();
    assert!(err.to_string().contains("newer release"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
