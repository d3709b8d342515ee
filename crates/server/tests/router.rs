//! Router and engine behaviour through `oneshot`, with in-process collectors.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tidegauge_core::{
    Access, CollectError, Collector, MetricFamily, ProbeError, ProbeResult, Prober, Routes,
    ScrapeContext, Snapshot, async_trait,
};
use tidegauge_server::{
    AccessPolicy, CollectorSettings, Engine, ReloadFn, SharedEngine, WebSettings, router,
};
use tower::ServiceExt;

/// Sleeps for `delay`, counts its calls, returns one gauge named `<name>_value`.
#[derive(Debug)]
struct Fake {
    name: String,
    delay: Duration,
    calls: Arc<AtomicUsize>,
    fail: bool,
    panic: bool,
    family: Option<String>,
    /// Extra families returned as they are.
    extra: Vec<MetricFamily>,
    /// What it says on the landing page.
    status: tidegauge_core::status::Status,
}

impl Fake {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            delay: Duration::ZERO,
            calls: Arc::new(AtomicUsize::new(0)),
            fail: false,
            panic: false,
            family: None,
            extra: Vec::new(),
            status: Default::default(),
        }
    }
    fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[async_trait]
impl Collector for Fake {
    fn name(&self) -> &str {
        &self.name
    }
    async fn collect(&self, _ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.panic {
            panic!("collector bug");
        }
        if self.fail {
            return Err(CollectError::msg("upstream exploded"));
        }
        let name = self
            .family
            .clone()
            .unwrap_or_else(|| format!("{}_value", self.name.replace('-', "_")));
        let mut s = Snapshot::new();
        s.push(MetricFamily::gauge(name, "A test value").with(vec![], 42.0));
        s.families.extend(self.extra.iter().cloned());
        Ok(Arc::new(s))
    }
    fn prober(&self) -> Option<&dyn Prober> {
        (self.name == "prober").then_some(self as &dyn Prober)
    }
    fn status(&self) -> tidegauge_core::status::Status {
        self.status.clone()
    }
    /// `/<name>/{public,read,write}` when the name says `routes`.
    fn routes(&self) -> Routes {
        if !self.name.contains("routes") {
            return Routes::new();
        }
        let answer = |level: &'static str| axum::routing::any(move || async move { level });
        Routes::new()
            .route(
                format!("/{}/public", self.name),
                Access::Public,
                answer("public"),
            )
            .route(format!("/{}/read", self.name), Access::Read, answer("read"))
            .route(
                format!("/{}/write", self.name),
                Access::Write,
                answer("write"),
            )
    }
}

#[async_trait]
impl Prober for Fake {
    fn modules(&self) -> Vec<String> {
        vec!["default".into(), "slow".into()]
    }
    async fn probe(
        &self,
        module: &str,
        target: &str,
        _ctx: &ScrapeContext,
    ) -> Result<ProbeResult, ProbeError> {
        if target.contains("forbidden") {
            return Err(ProbeError::Forbidden(target.into()));
        }
        if module == "slow" {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let ok = target.contains("good");
        let mut snapshot = Snapshot::new();
        if ok {
            snapshot.push(MetricFamily::gauge("app_uptime", "Uptime").with(vec![], 5.0));
        }
        Ok(ProbeResult {
            success: ok,
            snapshot,
        })
    }
}

fn engine(collectors: Vec<(Fake, CollectorSettings)>) -> Engine {
    let mut b = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .disabled("sleepy");
    for (c, s) in collectors {
        b = b.collector(Arc::new(c), s);
    }
    b.build().unwrap()
}

fn app(collectors: Vec<(Fake, CollectorSettings)>) -> axum::Router {
    router(
        SharedEngine::new(engine(collectors)),
        WebSettings::default(),
    )
}

fn plain(names: &[&str]) -> axum::Router {
    app(names
        .iter()
        .map(|n| (Fake::new(n), CollectorSettings::default()))
        .collect())
}

async fn get(
    app: &axum::Router,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = if headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v == "gzip")
    {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut out)
            .unwrap();
        out
    } else {
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    (status, headers, body)
}

/// The body without what changes from one scrape to the next (durations, process series).
fn stable(body: &str) -> String {
    tidegauge_testkit::drop_families(&tidegauge_testkit::redact(body), "process_")
}

fn line_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const PROMETHEUS3_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

#[tokio::test]
async fn metrics_default_is_text_004() {
    let app = plain(&["alpha", "beta"]);
    let (status, headers, body) = get(&app, "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(line_value(&body, "alpha_value"), Some(42.0));
    assert_eq!(line_value(&body, "beta_value"), Some(42.0));
    // The same exposition with a trailing slash, not a redirect.
    let (slash_status, _, slash_body) = get(&app, "/metrics/", &[]).await;
    assert_eq!(slash_status, StatusCode::OK);
    assert_eq!(line_value(&slash_body, "alpha_value"), Some(42.0));
    assert_eq!(
        line_value(
            &body,
            "tidegauge_scrape_collector_success{collector=\"alpha\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        line_value(
            &body,
            "tidegauge_scrape_collector_timeout{collector=\"beta\"}"
        ),
        Some(0.0)
    );
    assert!(body.contains("tidegauge_build_info{version=\""));
    assert!(line_value(&body, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));
    // Without exporter metrics the process series are left out.
    let engine = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .process_metrics(false)
    .build();
    let quiet = router(SharedEngine::new(engine.unwrap()), WebSettings::default());
    assert!(!get(&quiet, "/metrics", &[]).await.2.contains("process_"));
    assert!(!body.contains("# EOF"));
}

/// The exposition is sent as the parts' shared chunks: its length is still known up front, so
/// the response carries a `Content-Length`, as one buffer's would.
#[tokio::test]
async fn the_exposition_has_its_exact_length() {
    let app = plain(&["alpha", "beta"]);
    for accept in ["text/plain", "application/openmetrics-text; version=1.0.0"] {
        let req = Request::get("/metrics")
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let hint = http_body::Body::size_hint(resp.body()).exact();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body.len() > 100, "{accept}");
        assert_eq!(hint, Some(body.len() as u64), "{accept}");
    }
}

#[tokio::test]
async fn content_negotiation() {
    let app = plain(&["alpha"]);
    let cases = [
        (
            Some(PROMETHEUS3_ACCEPT),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (
            Some("application/openmetrics-text;version=1.0.0"),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (
            Some("application/openmetrics-text"),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (Some("*/*"), "text/plain; version=0.0.4; charset=utf-8"),
        (
            Some("application/json"),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (None, "text/plain; version=0.0.4; charset=utf-8"),
    ];
    for (accept, want) in cases {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (status, h, body) = get(&app, "/metrics", &headers).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_TYPE], want, "{accept:?}");
        assert_eq!(
            body.ends_with("# EOF\n"),
            want.starts_with("application/openmetrics"),
            "{accept:?}"
        );
    }
}

#[tokio::test]
async fn gzip_when_accepted() {
    let app = plain(&["alpha"]);
    let (_, plain_headers, plain_body) = get(&app, "/metrics", &[]).await;
    assert!(plain_headers.get(header::CONTENT_ENCODING).is_none());
    let (status, headers, body) = get(&app, "/metrics", &[("accept-encoding", "gzip")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_ENCODING], "gzip");
    assert!(
        headers[header::VARY]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(stable(&body), stable(&plain_body));
}

#[tokio::test]
async fn collect_and_exclude_filters() {
    let app = plain(&["alpha", "beta"]);
    let (s, _, body) = get(&app, "/metrics?collect[]=alpha", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("alpha_value") && !body.contains("beta_value"));
    assert!(!body.contains("collector=\"beta\""));
    let (_, _, body) = get(&app, "/metrics?exclude%5B%5D=alpha", &[]).await;
    assert!(!body.contains("alpha_value") && body.contains("beta_value"));
    let (_, _, body) = get(&app, "/metrics?collect[]=alpha&collect[]=beta", &[]).await;
    assert!(body.contains("alpha_value") && body.contains("beta_value"));
    for (uri, want) in [
        (
            "/metrics?collect[]=alpha&exclude[]=beta",
            "combined collect and exclude",
        ),
        ("/metrics?collect[]=nope", "unknown collector \"nope\""),
        ("/metrics?exclude[]=sleepy", "disabled"),
    ] {
        let (s, h, body) = get(&app, uri, &[]).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert!(body.contains(want), "{uri}: {body}");
    }
}

#[tokio::test]
async fn failing_and_panicking_collectors_hide_nothing_else() {
    let mut bad = Fake::new("bad");
    bad.fail = true;
    let mut buggy = Fake::new("buggy");
    buggy.panic = true;
    let app = app(vec![
        (bad, CollectorSettings::default()),
        (buggy, CollectorSettings::default()),
        (Fake::new("good"), CollectorSettings::default()),
    ]);
    let (s, _, body) = get(&app, "/metrics", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(line_value(&body, "good_value"), Some(42.0));
    assert!(!body.contains("bad_value") && !body.contains("buggy_value"));
    assert_eq!(
        line_value(
            &body,
            "tidegauge_scrape_collector_success{collector=\"bad\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        line_value(
            &body,
            "tidegauge_scrape_collector_success{collector=\"buggy\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        line_value(
            &body,
            "tidegauge_scrape_collector_timeout{collector=\"bad\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        line_value(
            &body,
            "tidegauge_scrape_collector_success{collector=\"good\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn slow_collector_times_out_at_the_budget() {
    let app = app(vec![
        (
            Fake::new("slow").delay(Duration::from_secs(3600)),
            CollectorSettings::default(),
        ),
        (Fake::new("fast"), CollectorSettings::default()),
    ]);
    // Header 3 s, offset 0.5 s: budget 2.5 s (virtual time).
    let (s, _, body) = get(
        &app,
        "/metrics",
        &[("x-prometheus-scrape-timeout-seconds", "3")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        line_value(
            &body,
            "tidegauge_scrape_collector_timeout{collector=\"slow\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        line_value(
            &body,
            "tidegauge_scrape_collector_success{collector=\"slow\"}"
        ),
        Some(0.0)
    );
    let d = line_value(
        &body,
        "tidegauge_scrape_collector_duration_seconds{collector=\"slow\"}",
    )
    .unwrap();
    assert!(
        (d - 2.5).abs() < 0.01,
        "duration measured from the real start: {d}"
    );
    assert_eq!(line_value(&body, "fast_value"), Some(42.0));
}

#[tokio::test(start_paused = true)]
async fn per_collector_timeout_cap() {
    let app = app(vec![(
        Fake::new("capped").delay(Duration::from_secs(2)),
        CollectorSettings {
            timeout: Some(Duration::from_secs(1)),
            cache_ttl: None,
        },
    )]);
    let (_, _, body) = get(
        &app,
        "/metrics",
        &[("x-prometheus-scrape-timeout-seconds", "15")],
    )
    .await;
    assert_eq!(
        line_value(
            &body,
            "tidegauge_scrape_collector_timeout{collector=\"capped\"}"
        ),
        Some(1.0)
    );
    let d = line_value(
        &body,
        "tidegauge_scrape_collector_duration_seconds{collector=\"capped\"}",
    )
    .unwrap();
    assert!((d - 1.0).abs() < 0.01, "{d}");
}

#[tokio::test]
async fn tiny_timeout_headers_still_succeed_with_fast_collectors() {
    let app = plain(&["alpha"]);
    for h in ["1", "0.6"] {
        let (s, _, body) = get(
            &app,
            "/metrics",
            &[("x-prometheus-scrape-timeout-seconds", h)],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            line_value(
                &body,
                "tidegauge_scrape_collector_success{collector=\"alpha\"}"
            ),
            Some(1.0),
            "{h}"
        );
        assert_eq!(
            line_value(
                &body,
                "tidegauge_scrape_collector_timeout{collector=\"alpha\"}"
            ),
            Some(0.0),
            "{h}"
        );
        let d = line_value(
            &body,
            "tidegauge_scrape_collector_duration_seconds{collector=\"alpha\"}",
        )
        .unwrap();
        // The windows_exporter pitfall was `timeout 1` with duration 0: the duration is real.
        assert!(d > 0.0, "{h}: {d}");
    }
}

#[tokio::test]
async fn bad_timeout_header_is_400() {
    let app = plain(&["alpha"]);
    for h in ["abc", "-5", "NaN"] {
        let (s, headers, body) = get(
            &app,
            "/metrics",
            &[("x-prometheus-scrape-timeout-seconds", h)],
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{h}");
        assert!(headers.contains_key(header::CONTENT_TYPE));
        assert!(
            body.contains("X-Prometheus-Scrape-Timeout-Seconds"),
            "{body}"
        );
    }
}

#[tokio::test]
async fn concurrent_scrapes_share_one_collection() {
    let fake = Fake::new("shared").delay(Duration::from_millis(200));
    let calls = Arc::clone(&fake.calls);
    let app = app(vec![(fake, CollectorSettings::default())]);
    let scrapes: Vec<_> = (0..5)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { get(&app, "/metrics", &[]).await })
        })
        .collect();
    for s in scrapes {
        let (status, _, body) = s.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(line_value(&body, "shared_value"), Some(42.0));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Once finished, the next scrape collects afresh.
    get(&app, "/metrics", &[]).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn cache_ttl_serves_the_last_snapshot() {
    let fake = Fake::new("cached");
    let calls = Arc::clone(&fake.calls);
    let app = app(vec![(
        fake,
        CollectorSettings {
            timeout: None,
            cache_ttl: Some(Duration::from_secs(60)),
        },
    )]);
    let (_, _, first) = get(&app, "/metrics", &[]).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    let (_, _, second) = get(&app, "/metrics", &[]).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        line_value(
            &first,
            "tidegauge_scrape_collector_cache_age_seconds{collector=\"cached\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        line_value(
            &second,
            "tidegauge_scrape_collector_cache_age_seconds{collector=\"cached\"}"
        ),
        Some(5.0)
    );
    assert_eq!(line_value(&second, "cached_value"), Some(42.0));
    assert_eq!(
        line_value(
            &second,
            "tidegauge_scrape_collector_success{collector=\"cached\"}"
        ),
        Some(1.0)
    );
    // Past the TTL the collector runs again.
    tokio::time::advance(Duration::from_secs(60)).await;
    let (_, _, third) = get(&app, "/metrics", &[]).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        line_value(
            &third,
            "tidegauge_scrape_collector_cache_age_seconds{collector=\"cached\"}"
        ),
        Some(0.0)
    );
}

/// Families of one name and type from several collectors are served as one family (the first
/// collector's HELP and sample where labels are equal, the repeat counted); the host's
/// `tidegauge_` names are its own.
#[tokio::test]
async fn same_family_from_several_collectors_is_one_family() {
    let mut a = Fake::new("aaa");
    a.family = Some("shared_metric".into());
    let mut b = Fake::new("bbb");
    b.family = Some("shared_metric".into());
    b.extra = vec![
        MetricFamily::gauge("shared_metric", "Another help")
            .with(vec![("site".into(), "b".into())], 7.0),
        MetricFamily::counter("shared_metric", "A counter under the gauge's name")
            .with(vec![], 1.0),
    ];
    let mut host = Fake::new("ccc");
    host.family = Some("tidegauge_build_info".into());
    let app = app(vec![
        (b, CollectorSettings::default()),
        (a, CollectorSettings::default()),
        (host, CollectorSettings::default()),
    ]);
    let (_, _, body) = get(&app, "/metrics", &[]).await;
    assert_eq!(
        body.matches("# TYPE shared_metric gauge").count(),
        1,
        "{body}"
    );
    assert!(
        body.contains("# HELP shared_metric A test value\n"),
        "{body}"
    );
    assert_eq!(line_value(&body, "shared_metric"), Some(42.0));
    assert_eq!(line_value(&body, "shared_metric{site=\"b\"}"), Some(7.0));
    assert_eq!(body.matches("# TYPE tidegauge_build_info gauge").count(), 1);
    assert!(!body.contains("shared_metric_total"), "{body}");
    let count = |family: &str, c: &str| {
        line_value(
            &body,
            &format!("tidegauge_duplicate_{family}_total{{collector=\"{c}\"}}"),
        )
    };
    assert_eq!(count("families", "aaa"), Some(0.0));
    assert_eq!(
        count("series", "bbb"),
        Some(1.0),
        "its unlabelled sample repeats aaa's"
    );
    assert_eq!(
        count("families", "bbb"),
        Some(1.0),
        "the counter under a gauge's name"
    );
    assert_eq!(count("families", "ccc"), Some(1.0));
}

/// Constant labels reach every series (collectors', the host's, probes'); a collector's own
/// label of the same name keeps its value. `match[]` selects series as federation does.
#[tokio::test]
async fn constant_labels_and_match_selectors() {
    let mut a = Fake::new("alpha");
    let mut h = MetricFamily::new(
        "alpha_latency_seconds",
        "Latency",
        tidegauge_core::MetricType::Histogram,
    );
    h.samples.push(tidegauge_core::Sample {
        labels: tidegauge_core::labels([("dataset", "live-pier")]).into(),
        value: tidegauge_core::Value::Histogram(Box::new(tidegauge_core::Histogram {
            buckets: vec![(0.1, 1), (1.0, 2)],
            sum: 0.7,
            count: 2,
        })),
        created: None,
    });
    a.extra = vec![
        h,
        MetricFamily::counter("alpha_bins", "Bins")
            .with(vec![("dashboard".into(), "pier-1".into())], 5.0),
        MetricFamily::gauge("alpha_site", "Own site label")
            .with(vec![("site".into(), "own".into())], 1.0),
    ];
    let engine = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .const_labels(vec![("site".into(), "north".into())])
    .collector(Arc::new(a), CollectorSettings::default())
    .collector(Arc::new(Fake::new("prober")), CollectorSettings::default())
    .build()
    .unwrap();
    let app = router(SharedEngine::new(engine), WebSettings::default());
    let (_, _, body) = get(&app, "/metrics", &[]).await;
    assert_eq!(
        line_value(&body, "alpha_value{site=\"north\"}"),
        Some(42.0),
        "{body}"
    );
    assert_eq!(
        line_value(&body, "alpha_site{site=\"own\"}"),
        Some(1.0),
        "{body}"
    );
    assert!(
        body.contains("tidegauge_scrape_collector_success{collector=\"alpha\",site=\"north\"} 1"),
        "{body}"
    );
    let (_, _, probe) = get(&app, "/probe?module=default&target=good", &[]).await;
    assert_eq!(
        line_value(&probe, "probe_success{site=\"north\"}"),
        Some(1.0),
        "{probe}"
    );

    let select = |q: &str| {
        let app = app.clone();
        let q = q.to_owned();
        async move {
            let uri = format!(
                "/metrics?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("match[]", &q)
                    .finish()
            );
            get(&app, &uri, &[]).await
        }
    };
    let (s, _, body) = select(r#"alpha_bins_total{dashboard=~"pier.*"}"#).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        line_value(
            &body,
            "alpha_bins_total{dashboard=\"pier-1\",site=\"north\"}"
        ),
        Some(5.0),
        "{body}"
    );
    assert!(!body.contains("alpha_value"), "{body}");
    assert!(!body.contains("tidegauge_"), "{body}");
    // A histogram is selected by its base name and served whole.
    let (_, _, body) = select(r#"{dataset="live-pier"}"#).await;
    assert!(
        body.contains(
            "alpha_latency_seconds_bucket{dataset=\"live-pier\",site=\"north\",le=\"0.1\"} 1"
        ),
        "{body}"
    );
    assert!(
        body.contains("alpha_latency_seconds_count{dataset=\"live-pier\",site=\"north\"} 2"),
        "{body}"
    );
    let (_, _, body) = select("alpha_latency_seconds_bucket").await;
    assert!(!body.contains("alpha_latency"), "{body}");
    // Repeated: a series selected by any.
    let uri = "/metrics?match[]=alpha_value&match[]=alpha_site";
    let (_, _, body) = get(&app, uri, &[]).await;
    assert!(
        body.contains("alpha_value{") && body.contains("alpha_site{"),
        "{body}"
    );
    let (s, _, body) = select(r#"alpha_value{site="north""#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("match[]") && body.contains("expected , or }"),
        "{body}"
    );
}

/// Pushed (guest) families join the family another source owns under the same name and type,
/// after it and with its HELP, and yield where the type differs.
#[tokio::test]
async fn guest_families_join_owners_and_never_hide_them() {
    let mut owner = Fake::new("zzz");
    owner.family = Some("zzz_up".into());
    let mut pushy = Fake::new("aaa");
    let guest = |mut f: MetricFamily| {
        f.guest = true;
        f
    };
    let job = |j: &str| {
        vec![
            ("instance".to_owned(), String::new()),
            ("job".to_owned(), j.to_owned()),
        ]
    };
    pushy.extra = vec![
        guest(MetricFamily::gauge("zzz_up", "pushed help").with(job("x"), 1.0)),
        guest(MetricFamily::gauge("process_open_fds", "pushed").with(job("py"), 9.0)),
        guest(MetricFamily::counter("zzz_up", "wrong type").with(job("y"), 3.0)),
    ];
    let app = app(vec![
        (pushy, CollectorSettings::default()),
        (owner, CollectorSettings::default()),
    ]);
    let (_, _, body) = get(&app, "/metrics", &[]).await;
    assert_eq!(body.matches("# TYPE zzz_up gauge").count(), 1, "{body}");
    assert!(body.contains("# HELP zzz_up A test value\n"), "{body}");
    assert_eq!(
        line_value(&body, "zzz_up"),
        Some(42.0),
        "the owner's series stays"
    );
    assert_eq!(
        line_value(&body, "zzz_up{instance=\"\",job=\"x\"}"),
        Some(1.0)
    );
    assert!(!body.contains("zzz_up_total"), "{body}");
    assert_eq!(body.matches("# TYPE process_open_fds gauge").count(), 1);
    assert_eq!(
        line_value(&body, "process_open_fds{instance=\"\",job=\"py\"}"),
        Some(9.0)
    );
    assert!(
        line_value(&body, "process_open_fds").is_some(),
        "the host's own series stays"
    );
    assert_eq!(
        line_value(
            &body,
            "tidegauge_duplicate_families_total{collector=\"aaa\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn max_requests_answers_503() {
    let slow = Fake::new("slow").delay(Duration::from_millis(500));
    let calls = Arc::clone(&slow.calls);
    let engine = engine(vec![(slow, CollectorSettings::default())]);
    let app = router(
        SharedEngine::new(engine),
        WebSettings {
            max_requests: 1,
            ..WebSettings::default()
        },
    );
    let first = {
        let app = app.clone();
        tokio::spawn(async move { get(&app, "/metrics", &[]).await })
    };
    // Wait until the first scrape holds the only permit (its collector has been called).
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s, h, body) = get(&app, "/metrics", &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert!(body.contains("--web.max-requests"));
    assert_eq!(first.await.unwrap().0, StatusCode::OK);
    // Health is never limited.
    assert_eq!(get(&app, "/-/healthy", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn probe_route() {
    let app = plain(&["prober", "other"]);
    let (s, h, body) = get(&app, "/probe?target=http://good/status", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(line_value(&body, "probe_success"), Some(1.0));
    assert_eq!(line_value(&body, "app_uptime"), Some(5.0));
    assert_eq!(line_value(&body, "probe_timeout_seconds"), Some(9.5));
    assert!(line_value(&body, "probe_duration_seconds").is_some());
    assert!(
        !body.contains("tidegauge_"),
        "self-metrics never appear in probes"
    );

    let (s, _, body) = get(&app, "/probe?target=http://bad/status&module=default", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(line_value(&body, "probe_success"), Some(0.0));

    let (s, _, body) = get(&app, "/probe?module=default", &[]).await;
    assert_eq!(
        (s, body.trim()),
        (StatusCode::BAD_REQUEST, "Target parameter is missing")
    );
    let (s, _, body) = get(&app, "/probe?target=x&module=nope", &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("Unknown module \"nope\""), "{body}");
    let (s, _, _) = get(&app, "/probe?target=forbidden", &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = get(
        &app,
        "/probe?target=x",
        &[("x-prometheus-scrape-timeout-seconds", "abc")],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn probe_past_the_deadline_is_a_failed_probe() {
    let app = plain(&["prober"]);
    let (s, _, body) = get(
        &app,
        "/probe?target=http://good/&module=slow",
        &[("x-prometheus-scrape-timeout-seconds", "2")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(line_value(&body, "probe_success"), Some(0.0));
    assert_eq!(line_value(&body, "probe_timeout_seconds"), Some(1.5));
}

#[tokio::test]
async fn wrong_method_answers_405_with_a_content_type() {
    let app = plain(&["alpha"]);
    let resp = app
        .clone()
        .oneshot(Request::post("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
}

#[tokio::test]
async fn huge_timeout_header_is_capped_not_a_panic() {
    let app = plain(&["alpha", "prober"]);
    let (s, _, body) = get(
        &app,
        "/metrics",
        &[("x-prometheus-scrape-timeout-seconds", "1e19")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(line_value(&body, "alpha_value"), Some(42.0));
    let (s, _, body) = get(
        &app,
        "/probe?target=http://good/",
        &[("x-prometheus-scrape-timeout-seconds", "1e19")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(line_value(&body, "probe_timeout_seconds"), Some(3599.5));
}

#[tokio::test]
async fn landing_health_ready_and_404() {
    let app = plain(&["alpha", "prober"]);
    get(&app, "/metrics", &[]).await;
    let (s, h, body) = get(&app, "/", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(body.contains("<a href=\"/metrics\">Metrics</a>"));
    assert!(body.contains("alpha</a></td><td>ok</td>"), "{body}");
    assert!(body.contains("All 2 collectors are working."), "{body}");
    assert!(body.contains("<form action=\"/probe\">"));
    assert_eq!(get(&app, "/-/healthy", &[]).await.0, StatusCode::OK);
    assert_eq!(get(&app, "/-/ready", &[]).await.0, StatusCode::OK);
    let (s, h, _) = get(&app, "/nope", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(h.contains_key(header::CONTENT_TYPE));
}

/// The landing page puts what is wrong first: collectors whose scrape failed or whose items
/// fail, and within a collector its failing items; times are relative; text is escaped.
#[tokio::test]
async fn landing_page_shows_failures_first() {
    use tidegauge_core::status::{Cell, Health, Row, Section, Status};
    let secs = Duration::from_secs;
    let mut datasets = Section::new("Datasets", &["dataset", "newest bin", "lag threshold"]);
    datasets.rows = vec![
        Row::new(
            Health::Ok,
            vec![
                Cell::Text("mvco".into()),
                Cell::Ago(Some(secs(12))),
                Cell::Span(secs(3600)),
            ],
        ),
        Row::new(
            Health::Warning,
            vec![
                Cell::Text("cruise <2025>".into()),
                Cell::Ago(Some(secs(3 * 86_400 + 7200))),
                Cell::Span(secs(3600)),
            ],
        ),
        Row::new(
            Health::Failing,
            vec![
                Cell::Text("lab".into()),
                Cell::Ago(None),
                Cell::Span(secs(3600)),
            ],
        ),
    ];
    let mut groups = Section::new("Push groups", &["group", "last push", "expires"]);
    groups.rows.push(Row::new(
        Health::Ok,
        vec![
            Cell::Text("job=batch".into()),
            Cell::Ago(Some(secs(95))),
            Cell::In(Some(secs(300))),
        ],
    ));
    let mut alpha = Fake::new("alpha");
    alpha.status = Status {
        sections: vec![groups, datasets],
    };
    let mut broken = Fake::new("zulu");
    broken.fail = true;
    let clock = tidegauge_testkit::FakeClock::at(1_764_633_600);
    let mut b = Engine::builder(clock, tidegauge_testkit::http_client());
    for c in [alpha, Fake::new("beta"), broken] {
        b = b.collector(Arc::new(c), CollectorSettings::default());
    }
    let app = router(
        SharedEngine::new(b.build().unwrap()),
        WebSettings::default(),
    );
    get(&app, "/metrics", &[]).await;
    let (_, _, body) = get(&app, "/", &[]).await;
    let at = |needle: &str| {
        body.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {body}"))
    };
    // The failing scrape first, then the collector with failing items, then the healthy one.
    assert!(at(">zulu</a>") < at(">alpha</a>") && at(">alpha</a>") < at(">beta</a>"));
    // Within alpha: the section with a failing row first, its rows worst first.
    assert!(at("<h3>Datasets") < at("<h3>Push groups"));
    assert!(
        at(">lab<") < at(">cruise &lt;2025&gt;<") && at(">cruise &lt;2025&gt;<") < at(">mvco<")
    );
    assert!(body.contains(
        "Needs attention: <a href=\"#c-zulu\">zulu</a>: last scrape failed; <a href=\"#c-alpha\">alpha</a>: 1 failing, 1 warning."
    ));
    assert!(!body.contains("<script"));
    insta::assert_snapshot!(body);
}

/// A section of thousands of rows, or a cell of megabytes, makes no page of megabytes; the page
/// says what it cannot do (no script, no framing) in its headers.
#[tokio::test]
async fn landing_page_is_bounded_and_locked_down() {
    use tidegauge_core::status::{Cell, Health, Row, Section, Status};
    let mut many = Section::new("Datasets", &["dataset"]);
    for i in 0..250 {
        many.rows
            .push(Row::new(Health::Ok, vec![Cell::Text(format!("ds{i}"))]));
    }
    many.rows.push(Row::new(
        Health::Failing,
        vec![Cell::Text("<".repeat(1_000_000))],
    ));
    let mut big = Fake::new("big");
    big.status = Status {
        sections: vec![many],
    };
    let app = app(vec![(big, CollectorSettings::default())]);
    let (s, h, body) = get(&app, "/", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.len() < 100_000, "{} bytes", body.len());
    assert!(body.contains("and 51 more"), "{body}");
    assert!(body.contains("&lt;&lt;&lt;…"));
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
}

/// A JSON client (the ICOS service's, say) gets a JSON 404 it can parse, whether or not a
/// collector serves routes; everyone else gets text.
#[tokio::test]
async fn not_found_answers_json_to_json_clients() {
    for app in [plain(&["alpha"]), plain(&["routes"])] {
        for (headers, json) in [
            (&[][..], false),
            (&[("accept", "*/*")][..], false),
            (&[("content-type", "application/json")][..], true),
            (
                &[("content-type", "Application/JSON; charset=utf-8")][..],
                true,
            ),
            (&[("accept", "text/html, application/json;q=0.9")][..], true),
            (&[("accept", "application/problem+json")][..], true),
            (&[("accept", "application/jsonx")][..], false),
        ] {
            let (s, h, body) = get(&app, "/create_metrics", headers).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{headers:?}");
            if json {
                assert_eq!(h[header::CONTENT_TYPE], "application/json", "{headers:?}");
                assert_eq!(body, r#"{"detail":"Not Found"}"#);
            } else {
                assert_eq!(h[header::CONTENT_TYPE], "text/plain; charset=utf-8");
                assert_eq!(body, "not found\n", "{headers:?}");
            }
        }
    }
}

#[tokio::test]
async fn telemetry_path_and_reload() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&calls);
    let reload: ReloadFn = Arc::new(move || {
        let n = c2.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if n == 0 {
                Ok("configuration reloaded".to_owned())
            } else {
                Err("collectors.demo: bad".to_owned())
            }
        })
    });
    let app = router(
        SharedEngine::new(engine(vec![(
            Fake::new("alpha"),
            CollectorSettings::default(),
        )])),
        WebSettings {
            telemetry_path: "/".into(),
            max_requests: 40,
            reload: Some(reload),
            web_config: None,
        },
    );
    let (s, _, body) = get(&app, "/", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        body.contains("alpha_value"),
        "metrics served at / when the telemetry path is /"
    );
    let post = |app: axum::Router| async move {
        let resp = app
            .oneshot(Request::post("/-/reload").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    };
    assert_eq!(
        post(app.clone()).await,
        (StatusCode::OK, "configuration reloaded\n".to_owned())
    );
    let (s, body) = post(app.clone()).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body.contains("running configuration stays") && body.contains("collectors.demo"),
        "{body}"
    );
}

#[tokio::test]
async fn swapping_the_engine_takes_effect_at_once() {
    let shared = SharedEngine::new(engine(vec![(
        Fake::new("alpha"),
        CollectorSettings::default(),
    )]));
    let app = router(shared.clone(), WebSettings::default());
    assert!(get(&app, "/metrics", &[]).await.2.contains("alpha_value"));
    shared.replace(engine(vec![(
        Fake::new("beta"),
        CollectorSettings::default(),
    )]));
    let body = get(&app, "/metrics", &[]).await.2;
    assert!(body.contains("beta_value") && !body.contains("alpha_value"));
}

/// Hands out the same `Arc` until told otherwise, as a push API does.
#[derive(Debug)]
struct Shared(std::sync::Mutex<Arc<Snapshot>>);

#[async_trait]
impl Collector for Shared {
    fn name(&self) -> &str {
        "shared"
    }
    async fn collect(&self, _ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        Ok(Arc::clone(&self.0.lock().unwrap()))
    }
}

fn pushed(v: f64) -> Arc<Snapshot> {
    let mut s = Snapshot::new();
    let mut f = MetricFamily::gauge("pushed_value", "A pushed value");
    f.push(vec![], v);
    // A duplicate label set: the host's clean-up must apply to reused snapshots too.
    f.push(vec![], v + 100.0);
    s.push(f);
    Arc::new(s)
}

#[tokio::test]
async fn shared_snapshots_are_reused_until_they_change() {
    let collector = Arc::new(Shared(std::sync::Mutex::new(pushed(1.0))));
    let engine = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .collector(collector.clone(), CollectorSettings::default())
    .build();
    let app = router(SharedEngine::new(engine.unwrap()), WebSettings::default());
    for accept in [None, Some(PROMETHEUS3_ACCEPT)] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (_, _, first) = get(&app, "/metrics", &headers).await;
        let (_, _, second) = get(&app, "/metrics", &headers).await;
        assert_eq!(stable(&first), stable(&second));
        assert_eq!(
            first.matches("pushed_value").count(),
            3,
            "duplicate dropped:\n{first}"
        );
        assert_eq!(line_value(&first, "pushed_value"), Some(1.0));
    }
    *collector.0.lock().unwrap() = pushed(2.0);
    for accept in [None, Some(PROMETHEUS3_ACCEPT)] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (_, _, body) = get(&app, "/metrics", &headers).await;
        assert_eq!(
            line_value(&body, "pushed_value"),
            Some(2.0),
            "a new snapshot is encoded afresh"
        );
        assert_eq!(body.ends_with("# EOF\n"), accept.is_some());
    }
}

/// Routes declared by a collector get the access their level asks for; a route declared twice,
/// or a host route declared by a collector, is a build error naming the owner.
#[tokio::test]
async fn collector_routes_by_access_level() {
    let app = plain(&["routes"]);
    for level in ["public", "read", "write"] {
        let (s, _, body) = get(&app, &format!("/routes/{level}"), &[]).await;
        assert_eq!(
            (s, body.trim()),
            (StatusCode::OK, level),
            "open without [auth]"
        );
    }
    let build = |fakes: Vec<Fake>| {
        let mut b = Engine::builder(
            Arc::new(tidegauge_core::SystemClock),
            tidegauge_testkit::http_client(),
        )
        .host_paths(tidegauge_server::router::host_paths("/metrics"));
        for f in fakes {
            b = b.collector(Arc::new(f), CollectorSettings::default());
        }
        b.build()
    };
    let mut twin = Fake::new("routes");
    twin.name = "routes".into();
    let err = build(vec![Fake::new("routes"), twin]).unwrap_err();
    assert!(
        err.contains("/routes/public is already served by collector routes"),
        "{err}"
    );
    // A collector named after a host route's path.
    #[derive(Debug)]
    struct Greedy;
    #[async_trait]
    impl Collector for Greedy {
        fn name(&self) -> &str {
            "greedy"
        }
        async fn collect(&self, _: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
            Ok(Arc::default())
        }
        fn routes(&self) -> Routes {
            Routes::new().route(
                "/-/reload",
                Access::Write,
                axum::routing::post(|| async { "" }),
            )
        }
    }
    let err = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .host_paths(tidegauge_server::router::host_paths("/metrics"))
    .collector(Arc::new(Greedy), CollectorSettings::default())
    .build()
    .unwrap_err();
    assert!(
        err.contains("/-/reload is already served by the host"),
        "{err}"
    );
}

/// Bearer tokens from `[auth]`: writes need one, reads only with `protect_reads`, public
/// routes never; the lifecycle API can be turned off.
#[tokio::test]
async fn bearer_tokens_by_access_level() {
    let dir = std::env::temp_dir().join(format!("tidegauge-levels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "t0ken\n").unwrap();
    let policy = |protect_reads: bool, lifecycle: bool| {
        let cfg = tidegauge_server::bearer::AuthConfig {
            tokens_file: Some(tokens.clone()),
            ..Default::default()
        };
        AccessPolicy {
            verifier: tidegauge_server::bearer::Verifier::new(
                &cfg,
                tidegauge_testkit::http_client(),
                None,
            )
            .unwrap()
            .map(Arc::new),
            protect_reads,
            lifecycle,
        }
    };
    let app_with = |p: AccessPolicy| {
        let engine = Engine::builder(
            Arc::new(tidegauge_core::SystemClock),
            tidegauge_testkit::http_client(),
        )
        .access(p)
        .collector(Arc::new(Fake::new("routes")), CollectorSettings::default())
        .build()
        .unwrap();
        let reload: ReloadFn = Arc::new(|| Box::pin(async { Ok("reloaded".to_owned()) }));
        router(
            SharedEngine::new(engine),
            WebSettings {
                reload: Some(reload),
                ..WebSettings::default()
            },
        )
    };
    let token = ("authorization", "Bearer t0ken");
    let wrong = ("authorization", "Bearer nope");
    let app = app_with(policy(false, true));
    assert_eq!(get(&app, "/routes/public", &[]).await.0, StatusCode::OK);
    assert_eq!(get(&app, "/routes/read", &[]).await.0, StatusCode::OK);
    assert_eq!(get(&app, "/metrics", &[]).await.0, StatusCode::OK);
    let (s, h, body) = get(&app, "/routes/write", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(h[header::WWW_AUTHENTICATE], "Bearer");
    assert!(body.contains("No authorization header"), "{body}");
    let (s, h, _) = get(&app, "/routes/write", &[wrong]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(get(&app, "/routes/write", &[token]).await.0, StatusCode::OK);
    // Two Authorization headers: ambiguous, refused whichever comes first.
    assert_eq!(
        get(&app, "/routes/write", &[wrong, token]).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&app, "/routes/write", &[token, wrong]).await.0,
        StatusCode::BAD_REQUEST
    );
    let post = |app: &axum::Router, auth: Option<(&str, &str)>| {
        let mut req = Request::post("/-/reload");
        if let Some((k, v)) = auth {
            req = req.header(k, v);
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    assert_eq!(
        post(&app, None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // A CORS preflight carries no credentials: it passes the check (here answered 405, as the
    // route has no OPTIONS handler), never 401.
    let preflight = app
        .clone()
        .oneshot(
            Request::options("/routes/write")
                .header("origin", "https://dashboard.example")
                .header("access-control-request-method", "POST")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_ne!(preflight.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        post(&app, Some(token)).await.unwrap().status(),
        StatusCode::OK
    );

    let app = app_with(policy(true, false));
    for path in ["/metrics", "/routes/read", "/"] {
        assert_eq!(
            get(&app, path, &[]).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(get(&app, path, &[token]).await.0, StatusCode::OK, "{path}");
    }
    assert_eq!(get(&app, "/-/healthy", &[]).await.0, StatusCode::OK);
    assert_eq!(get(&app, "/routes/public", &[]).await.0, StatusCode::OK);
    assert_eq!(
        post(&app, Some(token)).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The exporter-toolkit web configuration: basic auth on every route, configured headers, a
/// rate limit, changes applied without a restart, and a broken file answered with 500.
#[tokio::test]
async fn web_config_file_guards_every_route() {
    let dir = std::env::temp_dir().join(format!("tidegauge-webcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.yml");
    // Cost 4, the lowest bcrypt allows: the test checks behaviour, not hashing time.
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(
        &file,
        format!(
            "basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        ),
    )
    .unwrap();
    let loader = tidegauge_server::webconfig::Loader::open(file.clone()).unwrap();
    let app = router(
        SharedEngine::new(engine(vec![(
            Fake::new("alpha"),
            CollectorSettings::default(),
        )])),
        WebSettings {
            web_config: Some(loader.clone()),
            ..WebSettings::default()
        },
    );
    // "alice:s3cret", "alice:wrong", "bob:s3cret"
    let good = ("authorization", "Basic YWxpY2U6czNjcmV0");
    let wrong = ("authorization", "Basic YWxpY2U6d3Jvbmc=");
    let unknown = ("authorization", "Basic Ym9iOnMzY3JldA==");
    for path in ["/metrics", "/-/healthy", "/", "/nothing-here"] {
        let (s, h, _) = get(&app, path, &[]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(h[header::WWW_AUTHENTICATE], "Basic");
        assert_eq!(h["x-frame-options"], "deny", "headers on refusals too");
    }
    assert_eq!(
        get(&app, "/metrics", &[wrong]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/metrics", &[unknown]).await.0,
        StatusCode::UNAUTHORIZED
    );
    for _ in 0..2 {
        // The second time from the cache of verified credentials.
        let (s, h, body) = get(&app, "/metrics", &[good]).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["x-frame-options"], "deny");
        assert_eq!(line_value(&body, "alpha_value"), Some(42.0));
    }

    // A new hash for alice: the cached check does not outlive it.
    let other = bcrypt::hash("other", 4).unwrap();
    std::fs::write(
        &file,
        format!("basic_auth_users:\n  alice: {other}\nrate_limit:\n  interval: 1h\n  burst: 2\n"),
    )
    .unwrap();
    loader.refresh();
    loader.refresh();
    assert_eq!(
        get(&app, "/metrics", &[good]).await.0,
        StatusCode::UNAUTHORIZED
    );
    let new_good = ("authorization", "Basic YWxpY2U6b3RoZXI=");
    // The bucket started full (2 tokens) at the change: the refused request above took one.
    assert_eq!(get(&app, "/metrics", &[new_good]).await.0, StatusCode::OK);
    let (s, h, _) = get(&app, "/metrics", &[new_good]).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        !h.contains_key("x-frame-options"),
        "headers removed with the file's"
    );

    // A rotated password: a bcrypt hash has a fixed length, so the file keeps its size.
    let rotated = bcrypt::hash("rotated", 4).unwrap();
    std::fs::write(
        &file,
        format!("basic_auth_users:\n  alice: {rotated}\nrate_limit:\n  interval: 1h\n  burst: 3\n"),
    )
    .unwrap();
    loader.refresh();
    loader.refresh();
    let rotated_good = ("authorization", "Basic YWxpY2U6cm90YXRlZA==");
    assert_eq!(
        get(&app, "/metrics", &[new_good]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&app, "/metrics", &[rotated_good]).await.0,
        StatusCode::OK
    );

    // A file caught empty for a moment (rewritten in place) is not applied: it must read the
    // same twice in a row.
    let before = std::fs::read(&file).unwrap();
    std::fs::write(&file, "").unwrap();
    loader.refresh();
    assert_eq!(
        get(&app, "/metrics", &[]).await.0,
        StatusCode::UNAUTHORIZED,
        "an empty file seen once must not switch authentication off"
    );
    std::fs::write(&file, &before).unwrap();
    loader.refresh();

    // A broken file: 500 without details, until it is fixed.
    std::fs::write(&file, "basic_auth_users: [\n").unwrap();
    loader.refresh();
    loader.refresh();
    let (s, _, body) = get(&app, "/metrics", &[new_good]).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !body.contains("web.yml"),
        "the reason is logged, not sent: {body}"
    );
    std::fs::write(&file, "").unwrap();
    loader.refresh();
    loader.refresh();
    assert_eq!(get(&app, "/metrics", &[]).await.0, StatusCode::OK);
    std::fs::remove_dir_all(&dir).ok();
}

/// Basic auth and bearer tokens together: a request carrying either passes; basic auth covers
/// every route, and a refusal names both schemes.
#[tokio::test]
async fn basic_auth_beside_bearer_tokens() {
    let dir = std::env::temp_dir().join(format!("tidegauge-webcfg-bearer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.yml");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&file, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "t0ken\n").unwrap();
    let cfg = tidegauge_server::bearer::AuthConfig {
        tokens_file: Some(tokens),
        ..Default::default()
    };
    let verifier =
        tidegauge_server::bearer::Verifier::new(&cfg, tidegauge_testkit::http_client(), None)
            .unwrap()
            .map(Arc::new);
    let engine = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .access(AccessPolicy {
        verifier,
        ..AccessPolicy::default()
    })
    .collector(Arc::new(Fake::new("routes")), CollectorSettings::default())
    .build()
    .unwrap();
    let app = router(
        SharedEngine::new(engine),
        WebSettings {
            web_config: Some(tidegauge_server::webconfig::Loader::open(file.clone()).unwrap()),
            ..WebSettings::default()
        },
    );
    let basic = ("authorization", "Basic YWxpY2U6czNjcmV0");
    let bearer = ("authorization", "Bearer t0ken");
    for path in ["/metrics", "/-/healthy", "/routes/public", "/routes/write"] {
        let resp = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenges: Vec<_> = resp
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(challenges, ["Basic", "Bearer"], "{path}");
        assert_eq!(get(&app, path, &[basic]).await.0, StatusCode::OK, "{path}");
        assert_eq!(get(&app, path, &[bearer]).await.0, StatusCode::OK, "{path}");
    }
    let wrong = ("authorization", "Basic YWxpY2U6d3Jvbmc=");
    assert_eq!(
        get(&app, "/routes/write", &[wrong]).await.0,
        StatusCode::UNAUTHORIZED
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Found by attacking the release binary: a selector flood, label order and constant labels
/// hiding duplicates, and the host's names unknown before the first scrape.
#[tokio::test]
async fn review_findings_on_names_and_selectors() {
    let app = plain(&["alpha"]);
    // match[]: bounded in count and in compiled size.
    let mut many = form_urlencoded::Serializer::new(String::new());
    for i in 0..65 {
        many.append_pair("match[]", &format!("alpha_value{{a{i}=\"b\"}}"));
    }
    let many = many.finish();
    let (s, _, body) = get(&app, &format!("/metrics?{many}"), &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let huge = form_urlencoded::Serializer::new(String::new())
        .append_pair("match[]", r#"{job=~"\\w{2000}"}"#)
        .finish();
    let (s, _, body) = get(&app, &format!("/metrics?{huge}"), &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("invalid regular expression"), "{body}");

    // A guest series repeating an owner's labels in another order is the same series; so are
    // two guest series that a constant label makes equal.
    let mut owner = Fake::new("zzz");
    owner.extra = vec![MetricFamily::gauge("errors_now", "Owned").with(
        vec![("target".into(), "t".into()), ("reason".into(), "r".into())],
        1.0,
    )];
    let mut pushy = Fake::new("aaa");
    let guest = |mut f: MetricFamily| {
        f.guest = true;
        f
    };
    let mut pushed = guest(MetricFamily::gauge("errors_now", "Pushed"));
    pushed.push(
        vec![("reason".into(), "r".into()), ("target".into(), "t".into())],
        5.0,
    );
    let mut xg = guest(MetricFamily::gauge("xg", "Pushed"));
    xg.push(
        vec![("job".into(), "j".into()), ("site".into(), "north".into())],
        1.0,
    );
    xg.push(vec![("job".into(), "j".into())], 2.0);
    pushy.extra = vec![pushed, xg];
    let engine = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .const_labels(vec![("site".into(), "north".into())])
    .collector(Arc::new(pushy), CollectorSettings::default())
    .collector(Arc::new(owner), CollectorSettings::default())
    .build()
    .unwrap();
    let app = router(SharedEngine::new(engine), WebSettings::default());
    let (_, _, body) = get(&app, "/metrics", &[]).await;
    assert_eq!(body.matches("errors_now{").count(), 1, "{body}");
    assert!(
        body.contains("errors_now{target=\"t\",reason=\"r\",site=\"north\"} 1"),
        "{body}"
    );
    assert_eq!(body.matches("xg{").count(), 1, "{body}");
    assert_eq!(
        line_value(
            &body,
            "tidegauge_duplicate_series_total{collector=\"aaa\",site=\"north\"}"
        ),
        Some(2.0),
        "{body}"
    );

    // The host's names are known from the start: a push can be refused before any scrape.
    let names = Arc::new(tidegauge_core::names::Names::new());
    let _engine = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .names(Arc::clone(&names))
    .build()
    .unwrap();
    assert!(
        names
            .conflict(&tidegauge_core::MetricFamily::counter(
                "tidegauge_build_info",
                ""
            ))
            .is_some()
    );
}

/// A collection stuck in blocking work past its deadline is reported timed out at once by the
/// next scrape, without deadlocking on the slot's state (it did: the guard taken in an `if let`
/// chain lived through the block that records the outcome, which takes the same lock).
#[test]
fn a_stuck_collection_is_reported_without_a_deadlock() {
    #[derive(Debug)]
    struct Stuck;
    #[async_trait]
    impl Collector for Stuck {
        fn name(&self) -> &str {
            "stuck"
        }
        async fn collect(&self, _ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
            // Blocking work the runtime cannot cancel (a hanging driver, say).
            std::thread::sleep(Duration::from_secs(2));
            Ok(Arc::new(Snapshot::new()))
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .unwrap();
    let engine = Arc::new(
        Engine::builder(
            Arc::new(tidegauge_core::SystemClock),
            tidegauge_testkit::http_client(),
        )
        .collector(
            Arc::new(Stuck),
            CollectorSettings {
                timeout: Some(Duration::from_millis(200)),
                cache_ttl: None,
            },
        )
        .build()
        .unwrap(),
    );
    let e = Arc::clone(&engine);
    rt.block_on(async move { e.scrape(&tidegauge_server::Selection::All, None).await })
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let e = Arc::clone(&engine);
    let second = rt.spawn(async move {
        e.scrape(&tidegauge_server::Selection::All, None)
            .await
            .map(|_| ())
    });
    let done = rt.block_on(async { tokio::time::timeout(Duration::from_secs(1), second).await });
    if done.is_err() {
        // A worker is blocked for good: dropping the runtime would wait for it.
        std::mem::forget(rt);
        panic!("the second scrape deadlocked");
    }
    assert!(engine.status()[0].last_error.is_some());
}
