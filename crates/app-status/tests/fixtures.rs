//! app-status against fixture targets served by wiremock; the full encoded output is
//! snapshot-tested with a fixed clock and durations redacted.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tidegauge_app_status::{AppStatus, Config};
use tidegauge_core::{Collector, ProbeError, Prober};
use tidegauge_testkit::{FIXTURE_EPOCH, FakeClock, context, fixture, render};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn seed_env(server: &MockServer, metrics_path: &str) -> impl Fn(&str) -> Option<String> + use<> {
    let addr = server.address();
    let mut vars = BTreeMap::new();
    vars.insert("TARGET_HOST".to_owned(), addr.ip().to_string());
    vars.insert("TARGET_PORT".to_owned(), addr.port().to_string());
    vars.insert("TARGET_METRICS".to_owned(), metrics_path.to_owned());
    vars.insert("POLLING_INTERVAL_SECONDS".to_owned(), "0".to_owned());
    move |k: &str| vars.get(k).cloned()
}

fn json(file: &str) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_raw(fixture(&format!("app-status/{file}")), "application/json")
}

async fn serve(file: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/status"))
        .respond_with(json(file))
        .mount(&server)
        .await;
    server
}

/// One scrape of a seed-configured collector against `file`, rendered in both formats.
async fn seed_scrape(file: &str) -> String {
    let server = serve(file).await;
    let c = AppStatus::new(&Config::default(), &seed_env(&server, "status")).unwrap();
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    render(&c.collect(&ctx).await.unwrap())
}

#[tokio::test]
async fn seed_happy_path() {
    insta::assert_snapshot!(seed_scrape("healthy.json").await);
}

#[tokio::test]
async fn unhealthy() {
    insta::assert_snapshot!(seed_scrape("unhealthy.json").await);
}

#[tokio::test]
async fn missing_key() {
    insta::assert_snapshot!(seed_scrape("missing-key.json").await);
}

#[tokio::test]
async fn wrong_type() {
    insta::assert_snapshot!(seed_scrape("wrong-type.json").await);
}

#[tokio::test]
async fn unknown_state() {
    insta::assert_snapshot!(seed_scrape("unknown-state.json").await);
}

#[tokio::test]
async fn null_and_numeric_string() {
    insta::assert_snapshot!(seed_scrape("null-and-numeric-string.json").await);
}

#[tokio::test]
async fn not_json() {
    let server = MockServer::start().await;
    Mock::given(path("/status"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(fixture("app-status/not-json.html"), "text/html"),
        )
        .mount(&server)
        .await;
    let c = AppStatus::new(&Config::default(), &seed_env(&server, "status")).unwrap();
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    insta::assert_snapshot!(render(&c.collect(&ctx).await.unwrap()));
}

#[tokio::test]
async fn seed_env_path_with_leading_slash() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/status"))
        .respond_with(json("healthy.json"))
        .expect(1)
        .mount(&server)
        .await;
    let c = AppStatus::new(&Config::default(), &seed_env(&server, "/status")).unwrap();
    assert!(
        c.targets()[0]
            .1
            .ends_with(&format!(":{}/status", server.address().port()))
    );
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    let snap = c.collect(&ctx).await.unwrap();
    assert_eq!(value(&snap, "app_status_up"), 1.0);
}

fn value(snap: &tidegauge_core::Snapshot, name: &str) -> f64 {
    match snap.family(name).map(|f| &f.samples[0].value) {
        Some(tidegauge_core::Value::Number(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

fn config(toml_text: &str) -> Config {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[tokio::test]
async fn http_500_and_valid_status() {
    let server = MockServer::start().await;
    Mock::given(path("/status"))
        .respond_with(
            ResponseTemplate::new(500)
                .set_body_raw(fixture("app-status/error-500.json"), "application/json"),
        )
        .mount(&server)
        .await;
    let uri = server.uri();
    let c = AppStatus::new(
        &config(&format!(
            r#"
            min_interval = 0
            [[targets]]
            name = "strict"
            url = "{uri}/status"
            labels = {{ instance_name = "strict" }}
            [[targets]]
            name = "lenient"
            url = "{uri}/status"
            module = "lenient"
            labels = {{ instance_name = "lenient" }}
            [modules.lenient]
            valid_status = [200, 500]
            [[modules.lenient.metrics]]
            name = "app_health"
            path = "$.health"
            help = "Health"
            convert = {{ states = ["healthy", "unhealthy"] }}
            "#
        )),
        &no_env,
    )
    .unwrap()
    .with_clock(FakeClock::at(FIXTURE_EPOCH + 30));
    use tidegauge_core::Collector as _;
    use tidegauge_core::status::Health;
    assert_eq!(c.status().sections[0].rows[0].health, Health::Unknown);
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    insta::assert_snapshot!(render(&c.collect(&ctx).await.unwrap()));
    // The landing page: the strict target is down (500), the lenient one up, 30 s ago.
    let status = c.status();
    let rows: Vec<(Health, Vec<String>)> = status.sections[0]
        .rows
        .iter()
        .map(|r| (r.health, r.cells.iter().map(ToString::to_string).collect()))
        .collect();
    assert_eq!(rows[0].0, Health::Failing);
    assert_eq!(
        rows[0].1[..5],
        [
            "strict",
            &format!("{uri}/status"),
            "down",
            "30 s ago",
            "never"
        ]
    );
    assert!(!rows[0].1[5].is_empty(), "{rows:?}");
    assert_eq!(rows[1].0, Health::Ok);
    assert_eq!(rows[1].1[2..5], ["up", "30 s ago", "30 s ago"]);
}

#[tokio::test]
async fn target_down() {
    // Bind and drop: the port is then (almost certainly) refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = AppStatus::new(
        &config(&format!(
            "[[targets]]\nname = \"down\"\nurl = \"http://127.0.0.1:{port}/status\"\n"
        )),
        &no_env,
    )
    .unwrap();
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    insta::assert_snapshot!(render(&c.collect(&ctx).await.unwrap()));
}

#[tokio::test]
async fn hang_past_the_budget() {
    let server = MockServer::start().await;
    Mock::given(path("/status"))
        .respond_with(json("healthy.json").set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let c = AppStatus::new(&Config::default(), &seed_env(&server, "status")).unwrap();
    // The module allows 10 s; the scrape budget of 500 ms wins.
    let ctx = context(Duration::from_millis(500), FakeClock::at(FIXTURE_EPOCH));
    // Completing at all proves the fetch was cut (the target answers after 30 s); the snapshot
    // shows it counted as a timeout.
    let snap = c.collect(&ctx).await.unwrap();
    insta::assert_snapshot!(render(&snap));
}

#[tokio::test]
async fn min_interval_reuses_the_previous_result() {
    let server = MockServer::start().await;
    Mock::given(path("/status"))
        .respond_with(json("healthy.json"))
        .expect(1)
        .mount(&server)
        .await;
    let uri = server.uri();
    let c = AppStatus::new(
        &config(&format!(
            "min_interval = \"5s\"\n[[targets]]\nname = \"app\"\nurl = \"{uri}/status\"\n"
        )),
        &no_env,
    )
    .unwrap();
    let clock = FakeClock::at(FIXTURE_EPOCH);
    let ctx = context(Duration::from_secs(5), clock.clone());
    c.collect(&ctx).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let second = c.collect(&ctx).await.unwrap();
    assert_eq!(value(&second, "app_status_result_age_seconds"), 1.0);
    assert_eq!(value(&second, "app_requests_current"), 10.0);
    // After the interval a new fetch happens (wiremock then sees a second request).
    clock.advance(Duration::from_secs(5));
    server.verify().await;
    server.reset().await;
    Mock::given(path("/status"))
        .respond_with(json("unhealthy.json"))
        .expect(1)
        .mount(&server)
        .await;
    let third = c.collect(&ctx).await.unwrap();
    assert_eq!(value(&third, "app_requests_current"), 3.0);
    assert_eq!(value(&third, "app_status_result_age_seconds"), 0.0);
}

#[tokio::test]
async fn concurrent_scrapes_share_one_fetch() {
    let server = MockServer::start().await;
    Mock::given(path("/status"))
        .respond_with(json("healthy.json").set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    let c = Arc::new(AppStatus::new(&Config::default(), &seed_env(&server, "status")).unwrap());
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    // Spawn all ten before awaiting any.
    let scrapes: Vec<_> = (0..10)
        .map(|_| {
            let c = Arc::clone(&c);
            let ctx = ctx.clone();
            tokio::spawn(async move { c.collect(&ctx).await.unwrap() })
        })
        .collect();
    for s in futures_join(scrapes.into_iter()).await {
        assert_eq!(value(&s, "app_status_up"), 1.0);
        assert_eq!(value(&s, "app_requests_current"), 10.0);
    }
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

const QUEUES_MODULE: &str = r#"
[modules.queues]
timeout = "5s"

[[modules.queues.metrics]]
each = "$.queues"
key_label = "queue"
path = "$.depth"
name = "app_queue_depth"
help = "Messages waiting per queue"

[[modules.queues.metrics]]
each = "$.workers[*]"
labels = { worker = "$.id", site = "north" }
path = "$.state"
name = "app_worker_state"
help = "Worker state: 0 idle, 1 busy, 2 stuck"
convert = { map = { idle = 0, busy = 1, stuck = 2 } }

[[modules.queues.metrics]]
path = "$.last_backup"
name = "app_last_backup_timestamp_seconds"
help = "Time of the last backup"
convert = "timestamp"

[[modules.queues.metrics]]
path = "$.last_deploy"
name = "app_last_deploy_timestamp_seconds"
help = "Time of the last deploy"
convert = "timestamp"

[[modules.queues.metrics]]
path = "$.disk"
name = "app_disk_used_bytes"
help = "Disk used"
convert = { regex = "^([0-9.]+)G$", scale = 1e9 }

[[modules.queues.metrics]]
path = "$.latency_ms"
name = "app_latency_seconds"
help = "Latency"
convert = { scale = 0.001 }

[[modules.queues.metrics]]
path = "$.workers[0].id"
name = "app_first_worker_id"
type = "untyped"
"#;

#[tokio::test]
async fn objects_arrays_duplicates_numbers_and_dates() {
    let server = MockServer::start().await;
    Mock::given(path("/health"))
        .respond_with(json("queues.json"))
        .mount(&server)
        .await;
    let uri = server.uri();
    let c = AppStatus::new(
        &config(&format!(
            "[[targets]]\nname = \"billing\"\nurl = \"{uri}/health\"\nmodule = \"queues\"\n{QUEUES_MODULE}"
        )),
        &no_env,
    )
    .unwrap();
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    insta::assert_snapshot!(render(&c.collect(&ctx).await.unwrap()));
}

#[tokio::test]
async fn body_over_the_size_cap() {
    let server = MockServer::start().await;
    Mock::given(path("/status"))
        .respond_with(json("healthy.json"))
        .mount(&server)
        .await;
    let uri = server.uri();
    let c = AppStatus::new(
        &config(&format!(
            "[[targets]]\nname = \"app\"\nurl = \"{uri}/status\"\nmodule = \"tiny\"\n[modules.tiny]\nmax_body_size = 16\n[[modules.tiny.metrics]]\nname = \"app_uptime\"\npath = \"$.total_uptime\"\n"
        )),
        &no_env,
    )
    .unwrap();
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    let snap = c.collect(&ctx).await.unwrap();
    assert_eq!(value(&snap, "app_status_up"), 0.0);
    let errors = snap.family("app_status_errors").unwrap();
    let too_large = errors
        .samples
        .iter()
        .find(|s| {
            s.labels
                .iter()
                .any(|(k, v)| k == "reason" && v == "body_too_large")
        })
        .unwrap();
    assert_eq!(too_large.value, tidegauge_core::Value::Number(1.0));
}

#[tokio::test]
async fn probe_outcomes() {
    let server = serve("healthy.json").await;
    let c = AppStatus::new(
        &config(&format!(
            "[probe]\nallow = [\"{}\"]\n[[targets]]\nname = \"x\"\nurl = \"{}/status\"\n",
            server.uri(),
            server.uri()
        )),
        &no_env,
    )
    .unwrap();
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    let prober: &dyn Prober = c.prober().unwrap();
    assert_eq!(prober.modules(), vec!["default".to_owned()]);
    let ok = prober
        .probe("default", &format!("{}/status", server.uri()), &ctx)
        .await
        .unwrap();
    assert!(ok.success);
    assert_eq!(value(&ok.snapshot, "app_uptime"), 25.99);
    assert!(
        ok.snapshot.family("app_status_up").is_none(),
        "status metrics never appear in probes"
    );
    // Without a scheme, http:// is assumed.
    let bare = server.uri().trim_start_matches("http://").to_owned() + "/status";
    assert!(prober.probe("default", &bare, &ctx).await.unwrap().success);
    assert_eq!(
        prober.probe("nope", &bare, &ctx).await.unwrap_err(),
        ProbeError::UnknownModule("nope".into())
    );
    assert!(matches!(
        prober
            .probe("default", "http://192.0.2.1/status", &ctx)
            .await,
        Err(ProbeError::Forbidden(_))
    ));
    assert!(matches!(
        prober.probe("default", "http://[::1", &ctx).await,
        Err(ProbeError::BadTarget(_))
    ));
    // Credentials in the target would let an allowed prefix name another host.
    let sneaky = format!("{}@192.0.2.1/status", server.uri());
    assert!(matches!(
        prober.probe("default", &sneaky, &ctx).await,
        Err(ProbeError::BadTarget(_))
    ));

    // A refused target is a probe that ran and failed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let open = AppStatus::new(
        &config("[[targets]]\nname = \"x\"\nurl = \"http://127.0.0.1:1/\"\n"),
        &no_env,
    )
    .unwrap();
    let refused = open
        .prober()
        .unwrap()
        .probe("default", &format!("127.0.0.1:{port}/status"), &ctx)
        .await
        .unwrap();
    assert!(!refused.success);
    assert!(refused.snapshot.families.is_empty());
}

#[test]
fn bad_configuration_names_the_problem() {
    let cases = [
        (
            "[[targets]]\nname = \"a\"\nurl = \"not a url\"\n",
            "targets[0].url",
        ),
        (
            "[[targets]]\nname = \"a\"\nurl = \"http://x/\"\nmodule = \"m\"\n",
            "no such module",
        ),
        (
            "[[targets]]\nname = \"a\"\nurl = \"http://x/\"\n[[targets]]\nname = \"b\"\nurl = \"http://y/\"\n",
            "distinct labels",
        ),
        (
            "[[targets]]\nname = \"a\"\nurl = \"http://x/\"\nmodule = \"m\"\n[[modules.m.metrics]]\nname = \"bad-name\"\npath = \"$.x\"\n",
            "modules.m.metrics[0]",
        ),
        (
            "[[targets]]\nname = \"a\"\nurl = \"http://x/\"\nmodule = \"m\"\n[[modules.m.metrics]]\nname = \"x\"\npath = \"x\"\n",
            "must start with `$`",
        ),
        (
            "[[targets]]\nname = \"a\"\nurl = \"http://x/\"\nmodule = \"m\"\n[[modules.m.metrics]]\nname = \"x_total\"\npath = \"$.x\"\ntype = \"counter\"\n",
            "without `_total`",
        ),
        (
            "[[targets]]\nname = \"a\"\nurl = \"http://x/\"\nmodule = \"m\"\n[[modules.m.metrics]]\nname = \"app_status_up\"\npath = \"$.x\"\n",
            "reserved",
        ),
        (
            "[[targets]]\nname = \"a\"\nurl = \"http://x/\"\nmodule = \"m\"\n[modules.m]\nbearer_token_env = \"TG_TEST_UNSET_VARIABLE\"\n",
            "TG_TEST_UNSET_VARIABLE",
        ),
        (
            "[[targets]]\nname = \"a\"\nurl = \"http://x/\"\nlabels = { app_health = \"x\" }\n",
            "targets[0].labels.app_health",
        ),
        (
            "[probe]\nallow = [\"not a url\"]\n[[targets]]\nname = \"a\"\nurl = \"http://x/\"\n",
            "probe.allow[0]",
        ),
    ];
    for (text, want) in cases {
        let err = AppStatus::new(&config(text), &no_env).unwrap_err();
        assert!(
            err.to_string().contains(want),
            "{text}\n=> {err}\n(wanted {want:?})"
        );
    }
    // Unknown keys are rejected by the parser, not ignored.
    let err = toml::from_str::<Config>(
        "[[targets]]\nname = \"a\"\nurl = \"http://x/\"\nepochTimestamp = 1\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("epochTimestamp"), "{err}");
}

/// Redirects are followed only where the target may lead: within `probe.allow` for probes, never
/// to another origin with a module's credentials; without an allow list a credentialed module
/// probes only its configured targets.
#[tokio::test]
async fn redirects_are_checked_and_credentials_stay_home() {
    use wiremock::matchers::header;
    let good = MockServer::start().await;
    let evil = MockServer::start().await;
    let redirect = |to: String| ResponseTemplate::new(302).insert_header("location", to.as_str());
    Mock::given(path("/app/out"))
        .respond_with(redirect(format!("{}/admin/status", good.uri())))
        .mount(&good)
        .await;
    Mock::given(path("/app/in"))
        .respond_with(redirect("/app/status".into()))
        .mount(&good)
        .await;
    Mock::given(path("/app/status"))
        .respond_with(json("healthy.json"))
        .mount(&good)
        .await;
    Mock::given(path("/admin/status"))
        .respond_with(json("healthy.json"))
        .expect(0)
        .mount(&good)
        .await;
    Mock::given(path("/away"))
        .respond_with(redirect(format!("{}/status", evil.uri())))
        .mount(&good)
        .await;
    // The other origin must never see the token.
    Mock::given(header("authorization", "Bearer s3cret"))
        .respond_with(json("healthy.json"))
        .expect(0)
        .mount(&evil)
        .await;
    Mock::given(path("/status"))
        .respond_with(json("healthy.json"))
        .mount(&evil)
        .await;
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));

    let allowed = AppStatus::new(
        &config(&format!(
            "[probe]\nallow = [\"{g}/app/\", \"{e}/\"]\n[modules.secret]\nbearer_token = \"s3cret\"\n[[targets]]\nname = \"x\"\nurl = \"{g}/app/status\"\n",
            g = good.uri(),
            e = evil.uri()
        )),
        &no_env,
    )
    .unwrap();
    let prober = allowed.prober().unwrap();
    let probe = |module: &'static str, target: String| {
        let ctx = ctx.clone();
        async move { prober.probe(module, &target, &ctx).await }
    };
    // Inside the allowed prefix: followed. Outside it: a failed probe, nothing fetched there.
    assert!(
        probe("default", format!("{}/app/in", good.uri()))
            .await
            .unwrap()
            .success
    );
    let out = probe("default", format!("{}/app/out", good.uri()))
        .await
        .unwrap();
    assert!(!out.success);
    // Another (allowed) origin without credentials is fine; with them it is refused.
    let secret_target = format!("{}/away", good.uri());
    assert!(
        !probe("secret", secret_target.clone())
            .await
            .is_ok_and(|r| r.success)
    );

    // Without an allow list, the credentialed module probes only its configured target.
    let closed = AppStatus::new(
        &config(&format!(
            "[modules.secret]\nbearer_token = \"s3cret\"\n[[targets]]\nname = \"x\"\nurl = \"{g}/app/status\"\nmodule = \"secret\"\nlabels = {{ app = \"x\" }}\n[[targets]]\nname = \"y\"\nurl = \"{g}/away\"\nmodule = \"secret\"\nlabels = {{ app = \"y\" }}\n",
            g = good.uri(),
        )),
        &no_env,
    )
    .unwrap();
    let prober = closed.prober().unwrap();
    let own = prober
        .probe("secret", &format!("{}/app/status", good.uri()), &ctx)
        .await
        .unwrap();
    assert!(own.success);
    assert!(matches!(
        prober
            .probe("secret", &format!("{}/status", evil.uri()), &ctx)
            .await,
        Err(ProbeError::CredentialsWithheld { .. })
    ));
    // A configured target redirected to another origin with credentials: refused and counted.
    let snap = closed.collect(&ctx).await.unwrap();
    let errors = snap.family("app_status_errors").unwrap();
    let redirect = errors
        .samples
        .iter()
        .find(|s| s.labels.get("target") == Some("y") && s.labels.get("reason") == Some("redirect"))
        .unwrap();
    assert_eq!(redirect.value, tidegauge_core::Value::Number(1.0));
    // wiremock checks the `expect(0)`s when the servers drop.
}

/// The fault matrix: every fault of an upstream against one target, beside a healthy one. The
/// scrape answers by its deadline (checked with a wide margin; the measured overshoot is
/// printed), only the faulty target is down, with the reason, and nothing panics.
#[tokio::test]
async fn fault_matrix() {
    use tidegauge_testkit::faults::{Fault, FaultServer};
    let healthy = serve("healthy.json").await;
    let budget = Duration::from_secs(2);
    let mut table = vec!["fault | reason | elapsed - budget".to_owned()];
    for fault in Fault::ALL {
        let bad = FaultServer::start(fault).await.unwrap();
        let c = AppStatus::new(
            &config(&format!(
                "min_interval = 0\n[[targets]]\nname = \"ok\"\nurl = \"{}/status\"\nlabels = {{ t = \"ok\" }}\n[[targets]]\nname = \"bad\"\nurl = \"{}/status\"\nlabels = {{ t = \"bad\" }}\n",
                healthy.uri(),
                bad.url
            )),
            &no_env,
        )
        .unwrap();
        let ctx = context(budget, FakeClock::at(FIXTURE_EPOCH));
        let started = std::time::Instant::now();
        let snap = tokio::time::timeout(budget + Duration::from_secs(1), c.collect(&ctx))
            .await
            .unwrap_or_else(|_| panic!("{fault:?}: the scrape outlived its deadline by 1 s"))
            .unwrap();
        let elapsed = started.elapsed();
        let up = |target: &str| {
            snap.family("app_status_up")
                .and_then(|f| {
                    f.samples
                        .iter()
                        .find(|s| s.labels.get("target") == Some(target))
                })
                .map(|s| s.value.clone())
        };
        assert_eq!(
            up("ok"),
            Some(tidegauge_core::Value::Number(1.0)),
            "{fault:?}"
        );
        assert_eq!(
            up("bad"),
            Some(tidegauge_core::Value::Number(0.0)),
            "{fault:?}"
        );
        let reasons: Vec<String> = snap
            .family("app_status_errors")
            .unwrap()
            .samples
            .iter()
            .filter(|s| {
                s.labels.get("target") == Some("bad")
                    && s.value == tidegauge_core::Value::Number(1.0)
            })
            .filter_map(|s| s.labels.get("reason").map(str::to_owned))
            .collect();
        let want = match fault {
            Fault::NoAnswer | Fault::SlowDrip => "timeout",
            Fault::ResetMidBody | Fault::Refused | Fault::UnknownHost => "connect",
            Fault::Http500 => "http_status",
            Fault::Html | Fault::TruncatedJson => "invalid_json",
            Fault::HugeBody => "body_too_large",
            Fault::RedirectLoop => "redirect",
        };
        assert_eq!(reasons, [want], "{fault:?}");
        table.push(format!(
            "{fault:?} | {want} | {:+.0} ms",
            elapsed.as_secs_f64() * 1000.0 - budget.as_secs_f64() * 1000.0
        ));
    }
    eprintln!(
        "app-status fault matrix (budget {budget:?}):\n{}",
        table.join("\n")
    );
}
