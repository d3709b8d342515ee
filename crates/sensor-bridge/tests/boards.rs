//! Boards through the SDK emulator of the testkit (spec §1.4, §5.3–5.4, §5.7).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tidegauge_core::{Collector, Snapshot};
use tidegauge_sensor_bridge::{Config, SensorBridge};
use tidegauge_testkit::board::{BoardEmulator, Mode};
use tidegauge_testkit::{FIXTURE_EPOCH, FakeClock, context, drop_families, render};

/// A bridge without sysfs, reading `boards` (TOML array-of-tables bodies, one per board).
fn bridge(boards: &[String]) -> SensorBridge {
    let mut toml = String::from("[iio]\nenabled = false\n[hwmon]\nenabled = false\n");
    for b in boards {
        toml.push_str("[[boards]]\n");
        toml.push_str(b);
        toml.push('\n');
    }
    SensorBridge::new(toml::from_str::<Config>(&toml).unwrap()).unwrap()
}

fn board(name: &str, url: &str, extra: &str) -> String {
    format!("name = {name:?}\nurl = {url:?}\n{extra}")
}

async fn scrape_within(c: &SensorBridge, budget: Duration) -> Arc<Snapshot> {
    c.collect(&context(budget, FakeClock::at(FIXTURE_EPOCH)))
        .await
        .unwrap()
}

async fn scrape(c: &SensorBridge) -> String {
    render(&*scrape_within(c, Duration::from_secs(5)).await)
}

fn up(out: &str, board: &str) -> bool {
    out.contains(&format!("sensor_board_up{{board=\"{board}\"}} 1"))
}

#[tokio::test]
async fn the_sdk_answer_re_exported() {
    let e = BoardEmulator::start().await;
    let c = bridge(&[board("greenhouse", &e.url, "")]);
    let out = scrape(&c).await;
    assert!(
        out.contains("sensor_board_sample_age_seconds{board=\"greenhouse\"}"),
        "{out}"
    );
    insta::assert_snapshot!(drop_families(&out, "sensor_board_sample_age_seconds"));
}

#[tokio::test]
async fn ten_simultaneous_scrapes_cause_one_request_on_one_connection() {
    let e = BoardEmulator::start().await;
    e.set_delay(Duration::from_millis(200));
    let c = Arc::new(bridge(&[board("b", &e.url, "")]));
    let scrapes: Vec<_> = (0..10)
        .map(|_| {
            let c = Arc::clone(&c);
            tokio::spawn(async move { scrape(&c).await })
        })
        .collect();
    for s in scrapes {
        let out = s.await.unwrap();
        assert!(up(&out, "b"), "{out}");
    }
    assert_eq!(e.requests(), 1);
    assert_eq!(e.max_open(), 1);
    // Inside min_interval (5 s by default) the sample held is served without a request.
    let out = scrape(&c).await;
    assert!(
        up(&out, "b") && out.contains("prom_express_gas{board=\"b\"}"),
        "{out}"
    );
    assert_eq!(e.requests(), 1);
}

#[tokio::test]
async fn requests_are_small_well_formed_and_without_query() {
    let e = BoardEmulator::start().await;
    let c = bridge(&[board("b", &e.url, "min_interval = 0")]);
    scrape(&c).await;
    scrape(&c).await;
    let received = e.received();
    assert_eq!(received.len(), 2);
    let port = e
        .url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/metrics");
    for (_, raw) in received {
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(raw.len() < 1024, "{text}");
        assert_eq!(
            text.to_ascii_lowercase(),
            format!("get /metrics http/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n")
        );
    }
}

#[tokio::test]
async fn min_interval_spaces_requests() {
    let e = BoardEmulator::start().await;
    let c = bridge(&[board("b", &e.url, "min_interval = \"150ms\"")]);
    let mut out = String::new();
    for _ in 0..20 {
        out = scrape(&c).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up(&out, "b"), "{out}");
    let times: Vec<_> = e.received().into_iter().map(|(t, _)| t).collect();
    assert!(times.len() >= 2, "{} requests", times.len());
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(150),
            "{:?}",
            w[1] - w[0]
        );
    }
}

#[tokio::test]
async fn failures_back_off_exponentially_and_up_follows_recovery() {
    let e = BoardEmulator::start().await;
    e.set_mode(Mode::Reset);
    let c = bridge(&[board(
        "b",
        &e.url,
        "min_interval = 0\nbackoff_initial = \"100ms\"\nbackoff_max = \"400ms\"",
    )]);
    let started = std::time::Instant::now();
    let mut out = String::new();
    while started.elapsed() < Duration::from_millis(1800) {
        out = scrape(&c).await;
        assert!(!up(&out, "b"), "{out}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let times: Vec<_> = e.received().into_iter().map(|(t, _)| t).collect();
    assert!(times.len() >= 4, "{} requests", times.len());
    // Each wait at least the backoff less its 20 % jitter: 100, 200, 400, 400 ms ...
    for (i, w) in times.windows(2).enumerate() {
        let least = Duration::from_millis((100u64 << i.min(2)) * 8 / 10);
        assert!(
            w[1] - w[0] >= least,
            "wait {i}: {:?} < {least:?}",
            w[1] - w[0]
        );
    }
    assert!(
        out.contains(
            "sensor_read_errors_total{source=\"board\",device=\"b\",sensor=\"\",reason=\"http\"}"
        ),
        "{out}"
    );
    e.set_mode(Mode::Serve);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = scrape(&c).await;
    assert!(up(&out, "b"), "{out}");
}

#[tokio::test]
async fn a_request_outlives_the_scrape_that_started_it() {
    let e = BoardEmulator::start().await;
    e.set_delay(Duration::from_millis(400));
    let c = bridge(&[board("b", &e.url, "")]);
    let out = render(&*scrape_within(&c, Duration::from_millis(100)).await);
    assert!(out.contains("sensor_board_up{board=\"b\"} 0"), "{out}");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let out = scrape(&c).await;
    assert!(up(&out, "b"), "{out}");
    assert_eq!(e.requests(), 1);
}

#[tokio::test]
async fn hangs_time_out_and_are_counted() {
    let e = BoardEmulator::start().await;
    e.set_mode(Mode::Hang);
    let c = bridge(&[board("b", &e.url, "request_timeout = \"200ms\"")]);
    let out = scrape(&c).await;
    assert!(out.contains("sensor_board_up{board=\"b\"} 0"), "{out}");
    assert!(out.contains("reason=\"timeout\"} 1"), "{out}");
}

#[tokio::test]
async fn empty_replies_and_refusals_are_failures() {
    let e = BoardEmulator::start().await;
    e.set_mode(Mode::Empty);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/metrics", l.local_addr().unwrap())
    };
    let c = bridge(&[board("a", &e.url, ""), board("z", &closed, "")]);
    let out = scrape(&c).await;
    assert!(out.contains("sensor_board_up{board=\"a\"} 0"), "{out}");
    assert!(out.contains("sensor_board_up{board=\"z\"} 0"), "{out}");
    assert!(
        out.contains("device=\"a\",sensor=\"\",reason=\"http\"} 1"),
        "{out}"
    );
    assert!(
        out.contains("device=\"z\",sensor=\"\",reason=\"refused\"} 1"),
        "{out}"
    );
}

#[tokio::test]
async fn stale_samples_are_not_served() {
    let e = BoardEmulator::start().await;
    let c = bridge(&[board(
        "b",
        &e.url,
        "min_interval = \"1h\"\nstale_after = \"200ms\"",
    )]);
    assert!(up(&scrape(&c).await, "b"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = scrape(&c).await;
    assert!(out.contains("sensor_board_up{board=\"b\"} 0"), "{out}");
    assert!(!out.contains("prom_express"), "{out}");
    assert_eq!(e.requests(), 1);
}

#[tokio::test]
async fn limits_turn_an_answer_into_a_failure() {
    let big = BoardEmulator::start().await;
    let many = BoardEmulator::start().await;
    let c = bridge(&[
        board("big", &big.url, "max_body = 100"),
        board("many", &many.url, "max_series = 3"),
    ]);
    let out = scrape(&c).await;
    assert!(out.contains("sensor_board_up{board=\"big\"} 0"), "{out}");
    assert!(out.contains("sensor_board_up{board=\"many\"} 0"), "{out}");
    assert!(
        out.contains("device=\"big\",sensor=\"\",reason=\"http\"} 1"),
        "{out}"
    );
    assert!(
        out.contains("device=\"many\",sensor=\"\",reason=\"parse\"} 1"),
        "{out}"
    );
}

#[tokio::test]
async fn type_conflicts_keep_the_first_board_by_name() {
    let a = BoardEmulator::start().await;
    let b = BoardEmulator::start().await;
    a.set_body(Some("# TYPE x gauge\nx 1\nsensor_board_up 5".into()));
    b.set_body(Some("x{k=\"v\"} 2\ny 3".into()));
    // Listed out of order: the order of the configuration does not decide.
    let c = bridge(&[board("beta", &b.url, ""), board("alpha", &a.url, "")]);
    // Counted once per answer, not at every scrape that serves it.
    scrape(&c).await;
    let out = scrape(&c).await;
    assert!(out.contains("x{board=\"alpha\"} 1"), "{out}");
    assert!(!out.contains("x{k=\"v\",board=\"beta\"}"), "{out}");
    assert!(out.contains("y{board=\"beta\"} 3"), "{out}");
    assert!(!out.contains("sensor_board_up{board=\"alpha\"} 5"), "{out}");
    assert!(
        out.contains("device=\"beta\",sensor=\"x\",reason=\"conflict\"} 1"),
        "{out}"
    );
    assert!(
        out.contains("device=\"alpha\",sensor=\"sensor_board_up\",reason=\"conflict\"} 1"),
        "{out}"
    );
}

#[tokio::test]
async fn mapped_series_join_the_canonical_metrics() {
    let e = BoardEmulator::start().await;
    let c = bridge(&[board(
        "g",
        &e.url,
        "map = [\n{ series = \"prom_express_pressure\", quantity = \"pressure\", unit = \"hectopascals\" },\n{ series = \"prom_express_humidity\", quantity = \"humidity\", unit = \"percent\" },\n]",
    )]);
    let out = scrape(&c).await;
    for line in [
        "sensor_pressure_pascals{source=\"board\",device=\"g\",chip=\"\",sensor=\"pressure\"} 98325.0",
        "sensor_relative_humidity_ratio{source=\"board\",device=\"g\",chip=\"bme680\",sensor=\"humidity\"} 0.494062",
        "sensor_relative_humidity_ratio{source=\"board\",device=\"g\",chip=\"si7021\",sensor=\"humidity\"} 0.497976",
    ] {
        assert!(out.contains(line), "{line} missing from\n{out}");
    }
}

#[test]
fn bad_board_settings_are_named() {
    for (extra, want) in [
        ("url = \"https://b/metrics\"", "boards[0].url"),
        ("url = \"http://b/metrics?x=1\"", "no query string"),
        (
            "url = \"http://b\"\nrequest_timeout = 0",
            "boards[0].request_timeout",
        ),
        (
            "url = \"http://b\"\nbackoff_max = \"1s\"",
            "boards[0].backoff_max",
        ),
        (
            "url = \"http://b\"\nmap = [{ series = \"p\", quantity = \"pressure\", unit = \"celsius\" }]",
            "boards[0].map[0].unit",
        ),
    ] {
        let toml = format!("[[boards]]\nname = \"b\"\n{extra}");
        let err = SensorBridge::new(toml::from_str::<Config>(&toml).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{extra}: {err}");
    }
    for (twice, want) in [
        (
            "[[boards]]\nname = \"b\"\nurl = \"http://a\"\n[[boards]]\nname = \"b\"\nurl = \"http://c\"",
            "boards[1].name",
        ),
        (
            "[[boards]]\nname = \"a\"\nurl = \"http://h:8080/metrics\"\n[[boards]]\nname = \"b\"\nurl = \"http://h/other\"",
            "is the board of boards[0]",
        ),
    ] {
        let err = SensorBridge::new(toml::from_str::<Config>(twice).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
}

/// The fault matrix: every fault of an upstream against one board, beside a healthy one. The
/// scrape answers by its deadline (checked with a wide margin; the measured overshoot is
/// printed), only the faulty board is down, with the reason, and nothing panics.
#[tokio::test]
async fn fault_matrix() {
    use tidegauge_testkit::faults::{Fault, FaultServer};
    let healthy = BoardEmulator::start().await;
    let budget = Duration::from_secs(2);
    let mut table = vec!["fault | reason | elapsed - budget".to_owned()];
    for fault in Fault::ALL {
        let bad = FaultServer::start(fault).await.unwrap();
        let c = bridge(&[
            board("ok", &healthy.url, "min_interval = 0"),
            board("bad", &bad.url, "request_timeout = \"1s\""),
        ]);
        let started = std::time::Instant::now();
        let snap = tokio::time::timeout(budget + Duration::from_secs(1), scrape_within(&c, budget))
            .await
            .unwrap_or_else(|_| panic!("{fault:?}: the scrape outlived its deadline by 1 s"));
        let elapsed = started.elapsed();
        let out = render(&snap);
        assert!(up(&out, "ok"), "{fault:?}: {out}");
        assert!(
            out.contains("sensor_board_up{board=\"bad\"} 0"),
            "{fault:?}: {out}"
        );
        let want = match fault {
            Fault::NoAnswer | Fault::SlowDrip => "timeout",
            Fault::Refused => "refused",
            Fault::Html | Fault::TruncatedJson => "parse",
            Fault::ResetMidBody
            | Fault::Http500
            | Fault::HugeBody
            | Fault::RedirectLoop
            | Fault::UnknownHost => "http",
        };
        let line = format!("device=\"bad\",sensor=\"\",reason=\"{want}\"}} 1");
        assert!(out.contains(&line), "{fault:?}: {line} missing from\n{out}");
        assert!(!out.contains("device=\"ok\""), "{fault:?}: {out}");
        table.push(format!(
            "{fault:?} | {want} | {:+.0} ms",
            elapsed.as_secs_f64() * 1000.0 - budget.as_secs_f64() * 1000.0
        ));
    }
    println!("{}", table.join("\n"));
}

#[tokio::test]
async fn a_reload_that_changes_a_board_keeps_its_one_connection() {
    let e = BoardEmulator::start().await;
    e.set_delay(Duration::from_millis(500));
    let before = toml::from_str::<Config>(&format!(
        "[iio]\nenabled = false\n[hwmon]\nenabled = false\n[[boards]]\n{}",
        board("b", &e.url, "request_timeout = \"5s\"")
    ))
    .unwrap();
    let old = SensorBridge::new(before).unwrap();
    // A scrape that gives up leaves its request running.
    scrape_within(&old, Duration::from_millis(100)).await;
    let after = toml::from_str::<Config>(&format!(
        "[iio]\nenabled = false\n[hwmon]\nenabled = false\n[[boards]]\n{}",
        board(
            "renamed",
            &e.url,
            "request_timeout = \"4s\"\nmin_interval = \"10s\""
        )
    ))
    .unwrap();
    let new = SensorBridge::with_reader(
        after,
        Arc::new(tidegauge_sensor_bridge::sysfs::Fs),
        Some(&old),
    )
    .unwrap();
    let out = scrape(&new).await;
    assert!(up(&out, "renamed"), "{out}");
    assert_eq!(e.requests(), 1);
    assert_eq!(e.max_open(), 1);
}

/// The landing page's status: a board not asked yet is unknown, an answering one is up with the
/// age of its sample, a failing one is down with its failures in a row and its retry.
#[tokio::test]
async fn status_shows_each_board_up_or_down_with_its_sample_age() {
    use tidegauge_core::status::{Cell, Health};
    let good = BoardEmulator::start().await;
    let bad = BoardEmulator::start().await;
    bad.set_mode(Mode::Reset);
    let c = bridge(&[
        board("greenhouse", &good.url, ""),
        board("flaky", &bad.url, "backoff_initial = \"30s\""),
    ]);
    let before = c.status();
    assert!(
        before.sections[0]
            .rows
            .iter()
            .all(|r| r.health == Health::Unknown)
    );
    scrape(&c).await;
    let status = c.status();
    let boards = &status.sections[0];
    assert_eq!(boards.title, "Boards");
    let row = |name: &str| {
        boards
            .rows
            .iter()
            .find(|r| r.cells[0] == Cell::Text(name.into()))
            .unwrap()
    };
    assert_eq!(row("greenhouse").health, Health::Ok);
    assert_eq!(row("greenhouse").cells[2], Cell::Text("up".into()));
    assert!(matches!(row("greenhouse").cells[3], Cell::Ago(Some(_))));
    assert_eq!(row("flaky").health, Health::Failing);
    assert_eq!(row("flaky").cells[2], Cell::Text("down".into()));
    assert_eq!(row("flaky").cells[4], Cell::Text("1".into()));
    assert!(
        row("flaky").cells[5].to_string().starts_with("in "),
        "{:?}",
        row("flaky").cells[5]
    );
}
