//! Remote write against a scripted receiver on loopback: arrival, retries, refusals, the queue
//! across a restart.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use prost::Message as _;
use tidegauge_core::{CancellationToken, MetricFamily, Snapshot};
use tidegauge_remote_write::proto::WriteRequest;
use tidegauge_remote_write::{Loss, RemoteWrite, RemoteWriteConfig, Stats};
use tidegauge_server::{Engine, SharedEngine};

#[derive(Default)]
struct Receiver {
    /// Answers to give, in order; 204 when empty.
    script: Mutex<VecDeque<(u16, &'static str)>>,
    /// Requests accepted, decoded.
    got: Mutex<Vec<WriteRequest>>,
    /// Every request's headers.
    headers: Mutex<Vec<HeaderMap>>,
    up: std::sync::atomic::AtomicBool,
}

async fn receiver(r: Arc<Receiver>) -> String {
    let app = axum::Router::new().route(
        "/api/v1/write",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
            r.headers.lock().unwrap().push(headers);
            if !r.up.load(std::sync::atomic::Ordering::SeqCst) {
                return (StatusCode::SERVICE_UNAVAILABLE, "down");
            }
            if let Some((code, text)) = r.script.lock().unwrap().pop_front() {
                return (StatusCode::from_u16(code).unwrap(), text);
            }
            let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
            r.got
                .lock()
                .unwrap()
                .push(WriteRequest::decode(raw.as_slice()).unwrap());
            (StatusCode::NO_CONTENT, "")
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}/api/v1/write")
}

#[derive(Debug)]
struct Fixed;

#[tidegauge_core::async_trait]
impl tidegauge_core::Collector for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    async fn collect(
        &self,
        _ctx: &tidegauge_core::ScrapeContext,
    ) -> Result<Arc<Snapshot>, tidegauge_core::CollectError> {
        let mut s = Snapshot::new();
        s.push(MetricFamily::gauge("rw_test_level", "A level.").with(vec![], 7.5));
        Ok(Arc::new(s))
    }
}

fn engine() -> SharedEngine {
    let e = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .collector(Arc::new(Fixed), Default::default())
    .build()
    .unwrap();
    SharedEngine::new(e)
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tg-rw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(url: &str, dir: &std::path::Path) -> RemoteWriteConfig {
    let text = format!(
        "url = {url:?}\ninterval = \"100ms\"\nqueue_dir = {:?}\n[external_labels]\nsite = \"pier\"\n[basic_auth]\nusername = \"u\"\npassword = \"p\"\n",
        dir.display().to_string()
    );
    toml::from_str(&text).unwrap()
}

/// Samples of `rw_test_level` received, with their timestamps.
fn levels(r: &Receiver) -> Vec<i64> {
    r.got
        .lock()
        .unwrap()
        .iter()
        .flat_map(|w| &w.timeseries)
        .filter(|t| t.labels.iter().any(|l| l.value == "rw_test_level"))
        .map(|t| t.samples[0].timestamp)
        .collect()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn samples_arrive_labelled_and_authenticated() {
    let r = Arc::new(Receiver::default());
    r.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let url = receiver(Arc::clone(&r)).await;
    let d = dir("arrive");
    let stats = Arc::new(Stats::default());
    let rw = Arc::new(RemoteWrite::build(&config(&url, &d), &d, Arc::clone(&stats), None).unwrap());
    let token = CancellationToken::new();
    rw.start(engine(), token.clone());
    until("a sample", || !levels(&r).is_empty()).await;
    token.cancel();
    let got = r.got.lock().unwrap();
    let series = got
        .iter()
        .flat_map(|w| &w.timeseries)
        .find(|t| t.labels.iter().any(|l| l.value == "rw_test_level"))
        .unwrap();
    let labels: Vec<(&str, &str)> = series
        .labels
        .iter()
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    assert_eq!(labels, [("__name__", "rw_test_level"), ("site", "pier")]);
    assert_eq!(series.samples[0].value, 7.5);
    // The host's own series go too.
    assert!(
        got.iter()
            .flat_map(|w| &w.timeseries)
            .any(|t| t.labels.iter().any(|l| l.value == "tidegauge_build_info"))
    );
    let h = &r.headers.lock().unwrap()[0];
    assert_eq!(h["content-encoding"], "snappy");
    assert_eq!(h["content-type"], "application/x-protobuf");
    assert_eq!(h["x-prometheus-remote-write-version"], "0.1.0");
    assert_eq!(h["authorization"], "Basic dTpw");
}

#[tokio::test]
async fn an_outage_and_a_restart_lose_nothing_and_keep_order() {
    let r = Arc::new(Receiver::default());
    let url = receiver(Arc::clone(&r)).await;
    let d = dir("outage");
    let cfg = config(&url, &d);
    // The receiver is down (503) while the first process gathers, then that process stops.
    let stats = Arc::new(Stats::default());
    let first = Arc::new(RemoteWrite::build(&cfg, &d, Arc::clone(&stats), None).unwrap());
    let token = CancellationToken::new();
    first.start(engine(), token.clone());
    let queued_files = || {
        std::fs::read_dir(&d)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "req")
            })
            .count()
    };
    until("three queued gathers", || queued_files() >= 3).await;
    token.cancel();
    // The landing page says why nothing is delivered.
    let shown = tidegauge_server::HostMetrics::status(&*stats);
    assert_eq!(shown.worst(), tidegauge_core::status::Health::Failing);
    let cells = &shown.sections[0].rows[0].cells;
    assert!(cells[5].to_string().contains("503"), "{cells:?}");
    assert_eq!(cells[0].to_string(), url);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(first);
    let queued = queued_files();
    assert_eq!(stats.sent(), 0);

    // A new process on the same queue, the receiver back: everything arrives, oldest first.
    r.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let stats = Arc::new(Stats::default());
    let second = Arc::new(RemoteWrite::build(&cfg, &d, Arc::clone(&stats), None).unwrap());
    let restarted = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let token = CancellationToken::new();
    second.start(engine(), token.clone());
    until("the backlog and new gathers", || {
        levels(&r).len() >= queued + 2
    })
    .await;
    token.cancel();
    let ts = levels(&r);
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "out of order: {ts:?}");
    // Every request the first process queued arrived, once.
    assert_eq!(ts.iter().filter(|t| **t < restarted).count(), queued);
    assert_eq!(stats.lost(Loss::QueueFull), 0);
}

#[tokio::test]
async fn refusals_are_counted_not_retried_and_5xx_is_retried() {
    let r = Arc::new(Receiver::default());
    r.up.store(true, std::sync::atomic::Ordering::SeqCst);
    r.script.lock().unwrap().extend([
        (500, "try later"),
        (400, "out of order sample"),
        (401, "bad credentials"),
        (429, "slow down"),
    ]);
    let url = receiver(Arc::clone(&r)).await;
    let d = dir("refusals");
    let stats = Arc::new(Stats::default());
    let rw = Arc::new(RemoteWrite::build(&config(&url, &d), &d, Arc::clone(&stats), None).unwrap());
    let token = CancellationToken::new();
    rw.start(engine(), token.clone());
    until("three delivered requests", || {
        r.got.lock().unwrap().len() >= 3
    })
    .await;
    token.cancel();
    // The 500 and the 429 were retried (the same request then went through); the 400 and the
    // 401 each cost one request, counted by reason.
    assert!(stats.lost(Loss::OutOfOrder) > 0);
    assert!(stats.lost(Loss::Rejected) > 0);
    assert_eq!(stats.lost(Loss::OutOfOrder), stats.lost(Loss::Rejected));
    let families = tidegauge_server::HostMetrics::families(&*stats);
    let text = tidegauge_core::encode::encode_text(&[Arc::new(Snapshot { families })]);
    assert!(
        text.contains("tidegauge_remote_write_samples_lost_total{reason=\"out_of_order\"}"),
        "{text}"
    );
    assert!(
        text.contains("tidegauge_remote_write_samples_retried_total"),
        "{text}"
    );
}

#[test]
fn bad_settings_name_their_key() {
    let cases = [
        ("url = \"ftp://x/\"", "remote_write.url"),
        ("url = \"http://u:p@x/\"", "remote_write.url"),
        (
            "url = \"http://x/\"\ninterval = \"10ms\"",
            "remote_write.interval",
        ),
        (
            "url = \"http://x/\"\nqueue_max_bytes = 10",
            "remote_write.queue_max_bytes",
        ),
        (
            "url = \"http://x/\"\nbearer_token = \"a\"\n[basic_auth]\nusername = \"u\"\npassword = \"p\"",
            "remote_write.basic_auth",
        ),
        (
            "url = \"http://x/\"\n[external_labels]\n__x = \"1\"",
            "remote_write.external_labels",
        ),
        (
            "url = \"http://x/\"\nbearer_token_file = \"/nonexistent/token\"",
            "remote_write.bearer_token_file",
        ),
        (
            "url = \"http://x/\"\n[tls]\ncert_file = \"/a\"",
            "remote_write.tls",
        ),
    ];
    for (text, key) in cases {
        let cfg: RemoteWriteConfig = toml::from_str(text).unwrap();
        let e = RemoteWrite::check(&cfg).unwrap_err().to_string();
        assert!(e.starts_with(key), "{text}: {e}");
    }
}

/// A 301/302/303 would turn the write into a bodiless GET; its 200 must not count the samples
/// as sent. They stay queued and the redirect is retried.
#[tokio::test]
async fn a_redirect_that_drops_the_body_is_not_a_delivery() {
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&gets);
    let app = axum::Router::new()
        .route(
            "/api/v1/write",
            axum::routing::post(|| async { (StatusCode::FOUND, [("location", "/login")], "") }),
        )
        .route(
            "/login",
            axum::routing::any(move || async move {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                "a login page"
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/write", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    let d = dir("redirect");
    let stats = Arc::new(Stats::default());
    let rw = Arc::new(RemoteWrite::build(&config(&url, &d), &d, Arc::clone(&stats), None).unwrap());
    let token = CancellationToken::new();
    rw.start(engine(), token.clone());
    until("retries", || {
        let text = tidegauge_core::encode::encode_text(&[Arc::new(Snapshot {
            families: tidegauge_server::HostMetrics::families(&*stats),
        })]);
        text.contains("tidegauge_remote_write_requests_failed_total 3")
    })
    .await;
    token.cancel();
    assert_eq!(stats.sent(), 0);
    assert_eq!(
        gets.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

/// Samples the queue cannot take (disk full, directory gone) are counted as lost.
#[tokio::test]
async fn samples_the_queue_cannot_write_are_counted() {
    let d = dir("unwritable");
    let stats = Arc::new(Stats::default());
    let rw = Arc::new(
        RemoteWrite::build(
            &config("http://127.0.0.1:9/w", &d),
            &d,
            Arc::clone(&stats),
            None,
        )
        .unwrap(),
    );
    std::fs::remove_dir_all(&d).unwrap();
    let token = CancellationToken::new();
    rw.start(engine(), token.clone());
    until("a lost gather", || stats.lost(Loss::WriteError) > 0).await;
    token.cancel();
}

/// A reload naming the same queue directory another way takes the queue over instead of
/// finding it locked by itself.
#[test]
fn the_same_directory_spelled_otherwise_is_handed_over() {
    let d = dir("spelling");
    let stats = Arc::new(Stats::default());
    let first = RemoteWrite::build(
        &config("http://127.0.0.1:9/w", &d),
        &d,
        Arc::clone(&stats),
        None,
    )
    .unwrap();
    let name = d.file_name().unwrap().to_str().unwrap();
    let other = d.join("..").join(name);
    let second = RemoteWrite::build(
        &config("http://127.0.0.1:9/w", &other),
        &other,
        stats,
        Some(&first),
    );
    assert!(second.is_ok(), "{second:?}");
}
