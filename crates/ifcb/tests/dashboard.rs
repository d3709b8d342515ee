//! The ifcb collector against the fake dashboard (tidegauge_testkit::ifcb): the spec's fixture
//! scenarios, and a regression test named after each defect of the original exporter.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tidegauge_core::{Collector, Snapshot, Value};
use tidegauge_ifcb::{Config, DashboardConfig, Ifcb};
use tidegauge_testkit::ifcb::{CADENCE, FakeBin, FakeDashboard, FakeDataset, Gate, Model};
use tidegauge_testkit::{FakeClock, context, render};

/// 2025-06-15T00:00:00Z.
const NOW: i64 = 1_749_945_600;
const DAY: i64 = 86_400;

struct Rig {
    fake: FakeDashboard,
    ifcb: Ifcb,
    clock: Arc<FakeClock>,
}

impl Rig {
    async fn new(mut model: Model, tweak: impl FnOnce(&mut Config)) -> Rig {
        model.single_worker = false;
        let fake = FakeDashboard::start(model).await.unwrap();
        let mut cfg = Config {
            dashboards: vec![DashboardConfig::from_flag(&format!("test={}", fake.url))],
            ..Config::default()
        };
        tweak(&mut cfg);
        let ifcb = Ifcb::new(&cfg, tidegauge_testkit::http_client()).unwrap();
        Rig {
            fake,
            ifcb,
            clock: FakeClock::at(NOW as u64),
        }
    }

    async fn scrape(&self) -> std::sync::Arc<Snapshot> {
        let ctx = context(Duration::from_secs(10), self.clock.clone());
        self.ifcb.collect(&ctx).await.unwrap()
    }

    /// Moves both clocks forward.
    fn advance(&self, secs: i64) {
        self.clock.advance(Duration::from_secs(secs as u64));
        self.fake.update(|m| m.now += secs);
    }
}

fn model(datasets: Vec<(&str, FakeDataset)>) -> Model {
    let mut m = Model::new(NOW);
    for (name, d) in datasets {
        m.datasets.insert(name.to_owned(), d);
    }
    m
}

fn get(snap: &Snapshot, family: &str, dataset: &str) -> Option<f64> {
    snap.family(family)?.samples.iter().find_map(|s| {
        let hit = s.labels.iter().any(|(k, v)| k == "dataset" && v == dataset);
        match (&s.value, hit) {
            (Value::Number(v), true) => Some(*v),
            _ => None,
        }
    })
}

fn live() -> FakeDataset {
    FakeDataset::regular(960, NOW - 600)
}

#[tokio::test]
async fn live_dataset_full_output() {
    let rig = Rig::new(model(vec![("mvco", live())]), |_| {}).await;
    let snap = rig.scrape().await;
    insta::assert_snapshot!(render(&snap));
    // Cold: latest bin + nine series + bin list + one has_products.
    assert_eq!(
        rig.fake.requests().len(),
        1 + 12,
        "{:#?}",
        rig.fake.requests()
    );
}

#[tokio::test]
async fn warm_scrapes_are_served_from_memory_and_refreshes_are_cheap() {
    let rig = Rig::new(model(vec![("mvco", live())]), |_| {}).await;
    rig.scrape().await;
    rig.fake.clear_log();
    // Within the interval: nothing is asked.
    rig.advance(60);
    rig.scrape().await;
    assert!(rig.fake.requests().is_empty(), "{:#?}", rig.fake.requests());
    // After the interval with nothing new: discovery + latest bin; the series are unchanged.
    rig.advance(900);
    let snap = rig.scrape().await;
    assert_eq!(
        rig.fake.requests().len(),
        1 + 1,
        "{:#?}",
        rig.fake.requests()
    );
    assert_eq!(
        get(&snap, "ifcb_dataset_last_success_timestamp_seconds", "mvco"),
        Some((NOW + 960) as f64)
    );
    assert_eq!(
        get(&snap, "ifcb_temperature_timestamp", "mvco"),
        Some((NOW - 600) as f64)
    );
    // Past `series_refresh` (1 h) the nine series are fetched again even without a new bin.
    rig.fake.clear_log();
    rig.advance(3600);
    rig.scrape().await;
    assert_eq!(
        rig.fake.requests().len(),
        1 + 1 + 9,
        "{:#?}",
        rig.fake.requests()
    );
    // A new bin: one has_products call finds all three products on it.
    rig.fake.update(|m| {
        let d = m.datasets.get_mut("mvco").unwrap();
        d.bins.push(FakeBin::at(NOW + 700));
    });
    rig.fake.clear_log();
    rig.advance(900);
    let snap = rig.scrape().await;
    assert_eq!(rig.fake.count("has_products"), 1);
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "mvco"),
        Some((NOW + 700) as f64)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_class_scores_lag_seconds", "mvco"),
        Some(0.0)
    );
}

#[tokio::test]
async fn finished_cruise_uses_a_window_anchored_at_its_last_bin() {
    let newest = NOW - 120 * DAY;
    let rig = Rig::new(
        model(vec![("cruise", FakeDataset::regular(5000, newest))]),
        |_| {},
    )
    .await;
    let snap = rig.scrape().await;
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "cruise"),
        Some(newest as f64)
    );
    assert_eq!(
        get(&snap, "ifcb_temperature_timestamp", "cruise"),
        Some(newest as f64)
    );
    assert_eq!(
        get(&snap, "ifcb_is_dataset_up_to_date", "cruise"),
        Some(0.0)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_blobs_lag_seconds", "cruise"),
        Some(0.0)
    );
    let start =
        tidegauge_ifcb::api::encode(&tidegauge_ifcb::api::format_timestamp(newest - 14 * DAY));
    for r in rig
        .fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("time-series"))
    {
        assert!(r.contains(&format!("start={start}")), "{r}");
    }
}

#[tokio::test]
async fn empty_dataset_aborts_the_cycle() {
    let empty = FakeDataset {
        active: true,
        ..FakeDataset::default()
    };
    let rig = Rig::new(model(vec![("a-empty", empty), ("b-live", live())]), |_| {}).await;
    let snap = rig.scrape().await;
    insta::assert_snapshot!(render(&snap));
    assert_eq!(get(&snap, "ifcb_dataset_up", "a-empty"), Some(1.0));
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "a-empty"),
        Some(0.0)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_features_lag_seconds", "a-empty"),
        Some(-1.0)
    );
    assert_eq!(
        get(&snap, "ifcb_is_dataset_up_to_date", "a-empty"),
        Some(0.0)
    );
    assert_eq!(get(&snap, "ifcb_temperature_value", "a-empty"), None);
    assert_eq!(get(&snap, "ifcb_dataset_up", "b-live"), Some(1.0));
    assert_eq!(
        get(&snap, "ifcb_is_dataset_up_to_date", "b-live"),
        Some(1.0)
    );
    // A 404 for an empty dataset says nothing about the route: the next dataset still uses it.
    assert_eq!(rig.fake.count("most_recent_bin"), 2);
}

#[tokio::test]
async fn early_break() {
    // Features missing on the newest 2 bins, class scores on the newest 5.
    let mut d = live();
    let n = d.bins.len();
    for (i, b) in d.bins.iter_mut().rev().enumerate() {
        b.products[1] = i >= 2;
        b.products[2] = i >= 5;
    }
    assert_eq!(n, 960);
    let rig = Rig::new(model(vec![("mvco", d)]), |_| {}).await;
    let snap = rig.scrape().await;
    assert_eq!(
        get(&snap, "ifcb_latest_blobs_lag_seconds", "mvco"),
        Some(0.0)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_features_lag_seconds", "mvco"),
        Some(2.0 * CADENCE as f64)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_class_scores_lag_seconds", "mvco"),
        Some(5.0 * CADENCE as f64)
    );
    assert_eq!(rig.fake.count("has_products"), 6);
    // A later refresh with a new bin still lacking features: the scan goes on past the bin
    // where blobs are found until features are found again (the original stopped early).
    rig.fake.update(|m| {
        let mut b = FakeBin::at(NOW + 660);
        b.products = [true, false, true];
        m.datasets.get_mut("mvco").unwrap().bins.push(b);
    });
    rig.fake.clear_log();
    rig.advance(901);
    let snap = rig.scrape().await;
    assert_eq!(
        get(&snap, "ifcb_latest_blobs_lag_seconds", "mvco"),
        Some(0.0)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_class_scores_lag_seconds", "mvco"),
        Some(0.0)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_features_lag_seconds", "mvco"),
        Some((660 + 600 + 2 * CADENCE) as f64)
    );
    // The third call reaches the bin whose features were found before: known, so it stops.
    assert_eq!(
        rig.fake.count("has_products"),
        3,
        "{:#?}",
        rig.fake.requests()
    );
}

#[tokio::test]
async fn full_history_scans() {
    let mut d = live();
    for b in &mut d.bins {
        b.products[2] = false;
    }
    let rig = Rig::new(model(vec![("mvco", d)]), |_| {}).await;
    let snap = rig.scrape().await;
    assert_eq!(
        get(&snap, "ifcb_latest_class_scores_timestamp", "mvco"),
        Some(0.0)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_class_scores_lag_seconds", "mvco"),
        Some(-1.0)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_blobs_lag_seconds", "mvco"),
        Some(0.0)
    );
    assert_eq!(
        rig.fake.count("has_products"),
        20,
        "at most --max-scan-bins per refresh"
    );
    rig.fake.clear_log();
    rig.advance(901);
    rig.scrape().await;
    assert!(rig.fake.count("has_products") <= 20);
}

#[tokio::test]
async fn has_products_errors_skip_the_bin() {
    let mut d = live();
    for (i, b) in d.bins.iter_mut().rev().enumerate().take(4) {
        b.has_products_status = if i < 3 { 500 } else { 502 };
    }
    let rig = Rig::new(model(vec![("mvco", d)]), |_| {}).await;
    let snap = rig.scrape().await;
    for p in ["blobs", "features", "class_scores"] {
        assert_eq!(
            get(&snap, &format!("ifcb_latest_{p}_lag_seconds"), "mvco"),
            Some(4.0 * CADENCE as f64),
            "{p}"
        );
    }
    assert_eq!(get(&snap, "ifcb_dataset_up", "mvco"), Some(1.0));
}

#[tokio::test]
async fn has_products_404() {
    let mut d = live();
    if let Some(b) = d.bins.last_mut() {
        b.has_products_status = 404;
    }
    let rig = Rig::new(model(vec![("mvco", d)]), |_| {}).await;
    let snap = rig.scrape().await;
    assert_eq!(get(&snap, "ifcb_dataset_up", "mvco"), Some(1.0));
    assert_eq!(
        get(&snap, "ifcb_latest_blobs_lag_seconds", "mvco"),
        Some(CADENCE as f64)
    );
}

#[tokio::test]
async fn newest_bin_skipped() {
    let mut d = live();
    if let Some(b) = d.bins.last_mut() {
        b.skip = true;
    }
    let rig = Rig::new(model(vec![("mvco", d)]), |_| {}).await;
    let snap = rig.scrape().await;
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "mvco"),
        Some((NOW - 600) as f64)
    );
    assert_eq!(
        get(&snap, "ifcb_temperature_timestamp", "mvco"),
        Some((NOW - 600 - CADENCE) as f64)
    );
}

#[tokio::test]
async fn pid_sort() {
    // 2006-era old-style pids, then a live recent history: the scan follows time, not pids.
    let mut d = live();
    let mut old: Vec<FakeBin> = (0..50)
        .map(|i| {
            let mut b = FakeBin::at(1_149_617_639 + i * CADENCE);
            b.old_pid = true;
            b
        })
        .collect();
    old.append(&mut d.bins);
    d.bins = old;
    for b in d.bins.iter_mut().rev().take(3) {
        b.products[2] = false;
    }
    // Recent bins named old-style sort after every `D…` pid: a scan in pid order would check
    // them first (they have class scores) and report a wrong lag.
    for b in d.bins.iter_mut().rev().skip(10).take(5) {
        b.old_pid = true;
    }
    let rig = Rig::new(model(vec![("mvco", d)]), |cfg| {
        cfg.lookback = Duration::from_secs(30 * DAY as u64)
    })
    .await;
    let snap = rig.scrape().await;
    assert_eq!(
        get(&snap, "ifcb_latest_class_scores_lag_seconds", "mvco"),
        Some(3.0 * CADENCE as f64)
    );
    assert!(
        !rig.fake
            .requests()
            .iter()
            .any(|r| r.contains("has_products/IFCB1_")),
        "{:#?}",
        rig.fake.requests()
    );
}

#[tokio::test]
async fn millisecond_timestamps() {
    let mut m = model(vec![("mvco", FakeDataset::regular(10, 1_748_736_754))]);
    m.millis = true;
    m.now = 1_748_736_754 + 600;
    m.list_bins = false;
    let fake_now = m.now;
    let rig = Rig::new(m, |_| {}).await;
    rig.clock
        .set(std::time::UNIX_EPOCH + Duration::from_secs(fake_now as u64));
    let snap = rig.scrape().await;
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "mvco"),
        Some(1_748_736_754.0)
    );
    assert_eq!(
        get(&snap, "ifcb_temperature_timestamp", "mvco"),
        Some(1_748_736_754.0)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_blobs_timestamp", "mvco"),
        Some(1_748_736_754.0)
    );
}

#[tokio::test]
async fn clamped_values_are_exported_as_zero() {
    let (mut null, mut fill) = (live(), live());
    if let Some(b) = null.bins.last_mut() {
        b.temperature = None;
    }
    if let Some(b) = fill.bins.last_mut() {
        b.temperature = Some(-9_999_999.0);
    }
    let rig = Rig::new(model(vec![("fill", fill), ("null", null)]), |_| {}).await;
    let snap = rig.scrape().await;
    assert_eq!(get(&snap, "ifcb_temperature_value", "null"), Some(0.0));
    assert_eq!(get(&snap, "ifcb_temperature_value", "fill"), Some(0.0));
    assert_eq!(get(&snap, "ifcb_humidity_value", "fill"), Some(31.5));
}

#[tokio::test]
async fn list_bins_removal() {
    let mut m = model(vec![("mvco", live())]);
    m.list_bins = false;
    let rig = Rig::new(m, |_| {}).await;
    let snap = rig.scrape().await;
    assert_eq!(get(&snap, "ifcb_dataset_up", "mvco"), Some(1.0));
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "mvco"),
        Some((NOW - 600) as f64)
    );
    assert_eq!(
        get(&snap, "ifcb_latest_class_scores_lag_seconds", "mvco"),
        Some(0.0)
    );
    assert_eq!(rig.fake.count("export_metadata"), 1);
    // Remembered: the next refresh does not ask list_bins again.
    rig.fake.clear_log();
    rig.fake.update(|m| {
        m.datasets
            .get_mut("mvco")
            .unwrap()
            .bins
            .push(FakeBin::at(NOW + 700))
    });
    rig.advance(901);
    rig.scrape().await;
    assert_eq!(rig.fake.count("list_bins"), 0, "{:#?}", rig.fake.requests());
    assert_eq!(rig.fake.count("export_metadata"), 1);
}

#[tokio::test]
async fn older_dashboard_without_most_recent_bin() {
    let mut m = model(
        (0..5)
            .map(|i| (["a", "b", "c", "d", "e"][i], live()))
            .collect(),
    );
    m.most_recent_bin = false;
    let rig = Rig::new(m, |_| {}).await;
    let snap = rig.scrape().await;
    for ds in ["a", "b", "c", "d", "e"] {
        assert_eq!(
            get(&snap, "ifcb_latest_bin_timestamp", ds),
            Some((NOW - 600) as f64),
            "{ds}"
        );
        assert_eq!(get(&snap, "ifcb_dataset_up", ds), Some(1.0), "{ds}");
    }
    assert_eq!(
        rig.fake.count("most_recent_bin"),
        1,
        "only the first dataset pays for the 404"
    );
    // The bounded listing that gave the newest bin also feeds the product scan.
    assert_eq!(rig.fake.count("list_bins"), 5, "{:#?}", rig.fake.requests());
}

#[tokio::test]
async fn no_timeouts() {
    let slow = FakeDataset {
        slow: Some(Duration::from_secs(5)),
        ..live()
    };
    let broken = FakeDataset {
        time_series_status: Some(502),
        ..live()
    };
    let rig = Rig::new(
        model(vec![("broken", broken), ("mvco", live()), ("slow", slow)]),
        |cfg| {
            cfg.request_timeout = Duration::from_millis(300);
        },
    )
    .await;
    let snap = rig.scrape().await;
    assert_eq!(get(&snap, "ifcb_dataset_up", "slow"), Some(0.0));
    assert_eq!(get(&snap, "ifcb_dataset_up", "broken"), Some(0.0));
    assert_eq!(get(&snap, "ifcb_dataset_up", "mvco"), Some(1.0));
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "mvco"),
        Some((NOW - 600) as f64)
    );
    let requests = snap.family("tidegauge_ifcb_upstream_requests").unwrap();
    let errors: f64 = requests
        .samples
        .iter()
        .filter(|s| s.labels.iter().any(|(k, v)| k == "code" && v == "error"))
        .map(|s| match s.value {
            Value::Number(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(errors >= 1.0, "timeouts are counted as code=\"error\"");
}

#[tokio::test]
async fn nothing_removed() {
    let rig = Rig::new(model(vec![("gone", live()), ("mvco", live())]), |_| {}).await;
    let snap = rig.scrape().await;
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "gone"),
        Some((NOW - 600) as f64)
    );
    // A failing dataset keeps its values with dataset_up 0; a removed one disappears.
    rig.fake.update(|m| {
        m.datasets.get_mut("gone").unwrap().active = false;
        let mvco = m.datasets.get_mut("mvco").unwrap();
        mvco.time_series_status = Some(500);
        // A new bin, so the series must be fetched (and fail).
        mvco.bins.push(FakeBin::at(NOW + 700));
    });
    rig.advance(901);
    let snap = rig.scrape().await;
    assert_eq!(get(&snap, "ifcb_dataset_up", "gone"), None);
    assert_eq!(get(&snap, "ifcb_latest_bin_timestamp", "gone"), None);
    assert_eq!(get(&snap, "ifcb_dataset_up", "mvco"), Some(0.0));
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "mvco"),
        Some((NOW - 600) as f64)
    );
    assert_eq!(
        get(&snap, "ifcb_dataset_last_success_timestamp_seconds", "mvco"),
        Some(NOW as f64)
    );
}

#[tokio::test]
async fn discovery_failure_marks_every_dataset_down() {
    let rig = Rig::new(model(vec![("mvco", live())]), |_| {}).await;
    rig.scrape().await;
    rig.fake.update(|m| m.filter_options_status = Some(500));
    rig.advance(901);
    let snap = rig.scrape().await;
    assert_eq!(get(&snap, "ifcb_dataset_up", "mvco"), Some(0.0));
    assert_eq!(
        get(&snap, "ifcb_latest_bin_timestamp", "mvco"),
        Some((NOW - 600) as f64)
    );
    let up = snap.family("ifcb_dashboard_up").unwrap();
    assert_eq!(up.samples[0].value, Value::Number(0.0));
}

#[tokio::test]
async fn unbound_variable() {
    // Products remembered, then every bin disappears: no crash, no bins.
    let rig = Rig::new(model(vec![("mvco", live())]), |_| {}).await;
    rig.scrape().await;
    rig.fake
        .update(|m| m.datasets.get_mut("mvco").unwrap().bins.clear());
    rig.advance(901);
    let snap = rig.scrape().await;
    assert_eq!(get(&snap, "ifcb_dataset_up", "mvco"), Some(1.0));
    assert_eq!(get(&snap, "ifcb_latest_bin_timestamp", "mvco"), Some(0.0));
    assert_eq!(
        get(&snap, "ifcb_latest_blobs_lag_seconds", "mvco"),
        Some(-1.0)
    );
    assert_eq!(get(&snap, "ifcb_temperature_value", "mvco"), None);
}

#[tokio::test]
async fn inverted_up_to_date() {
    // Exactly at the threshold is up to date; one second older is not.
    let rig = Rig::new(
        model(vec![
            ("at-threshold", FakeDataset::regular(10, NOW - DAY)),
            ("just-over", FakeDataset::regular(10, NOW - DAY - 1)),
            ("fresh", live()),
        ]),
        |_| {},
    )
    .await;
    let snap = rig.scrape().await;
    assert_eq!(get(&snap, "ifcb_is_dataset_up_to_date", "fresh"), Some(1.0));
    assert_eq!(
        get(&snap, "ifcb_is_dataset_up_to_date", "at-threshold"),
        Some(1.0)
    );
    assert_eq!(
        get(&snap, "ifcb_is_dataset_up_to_date", "just-over"),
        Some(0.0)
    );
}

#[tokio::test]
async fn unbounded_time_series() {
    let rig = Rig::new(model(vec![("mvco", live())]), |_| {}).await;
    rig.scrape().await;
    let series: Vec<String> = rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("time-series"))
        .collect();
    assert_eq!(series.len(), 9);
    for r in series {
        assert!(
            r.contains("resolution=bin") && r.contains("&start=") && r.contains("&end="),
            "{r}"
        );
    }
}

#[tokio::test]
async fn two_dashboards_with_the_same_dataset() {
    let a = FakeDashboard::start(model(vec![("mvco", live())]))
        .await
        .unwrap();
    let mut other = model(vec![("mvco", FakeDataset::regular(10, NOW - 3 * DAY))]);
    other.single_worker = false;
    let b = FakeDashboard::start(other).await.unwrap();
    let cfg = Config {
        dashboards: vec![
            DashboardConfig::from_flag(&format!("whoi={}", a.url)),
            DashboardConfig::from_flag(&format!("caloos={}/", b.url)),
        ],
        ..Config::default()
    };
    let ifcb = Ifcb::new(&cfg, tidegauge_testkit::http_client()).unwrap();
    let ctx = context(Duration::from_secs(10), FakeClock::at(NOW as u64));
    let snap = ifcb.collect(&ctx).await.unwrap();
    insta::assert_snapshot!(render(&snap));
}

#[tokio::test]
async fn deadline_returns_what_is_finished_and_the_next_scrape_is_complete() {
    let gate = Gate::closed();
    let held = FakeDataset {
        gate: Some(Arc::clone(&gate)),
        ..live()
    };
    let rig = Rig::new(model(vec![("fast", live()), ("held", held)]), |_| {}).await;
    // A budget far above what "fast" needs on a loaded machine; "held" cannot finish in it.
    let ctx = context(Duration::from_secs(2), rig.clock.clone());
    let first = rig.ifcb.collect(&ctx).await.unwrap();
    assert_eq!(
        get(&first, "ifcb_latest_bin_timestamp", "fast"),
        Some((NOW - 600) as f64)
    );
    assert_eq!(get(&first, "ifcb_latest_bin_timestamp", "held"), None);
    // The unfinished refresh goes on in the background; the next scrape joins it.
    gate.open();
    let second = rig.scrape().await;
    assert_eq!(
        get(&second, "ifcb_latest_bin_timestamp", "held"),
        Some((NOW - 600) as f64)
    );
    // The dataset was refreshed once, not twice.
    assert_eq!(rig.fake.count("most_recent_bin?dataset=held"), 1);
}

#[tokio::test]
async fn at_the_deadline_finished_datasets_are_served_and_the_rest_complete_in_the_background() {
    let names = ["d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"];
    let gate = Gate::closed();
    let held = |n: &str| n > "d4";
    let m = model(
        names
            .iter()
            .map(|n| {
                let d = FakeDataset {
                    gate: held(n).then(|| Arc::clone(&gate)),
                    ..live()
                };
                (*n, d)
            })
            .collect(),
    );
    let rig = Rig::new(m, |_| {}).await;
    let ctx = context(Duration::from_secs(2), rig.clock.clone());
    let first = rig.ifcb.collect(&ctx).await.unwrap();
    for n in names {
        assert_eq!(
            get(&first, "ifcb_latest_bin_timestamp", n).is_some(),
            !held(n),
            "{n}: finished datasets are served at the deadline, held ones are not"
        );
    }
    gate.open();
    let second = rig.scrape().await;
    for n in names {
        assert!(
            get(&second, "ifcb_latest_bin_timestamp", n).is_some(),
            "{n}"
        );
        assert_eq!(
            rig.fake.count(&format!("most_recent_bin?dataset={n}")),
            1,
            "{n} refreshed once"
        );
    }
}

#[test]
fn bad_configuration_names_the_problem() {
    let http = tidegauge_testkit::http_client();
    let base = |f: &dyn Fn(&mut Config)| {
        let mut c = Config {
            dashboards: vec![DashboardConfig::from_flag("http://127.0.0.1:1/api")],
            ..Config::default()
        };
        f(&mut c);
        Ifcb::new(&c, http.clone())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(base(&|c| c.dashboards.clear()).contains("no dashboards"));
    assert!(base(&|c| c.max_concurrency = 9).contains("max_concurrency"));
    assert!(base(&|c| c.dashboards[0].url = "ftp://x/api".into()).contains("dashboards[0].url"));
    assert!(
        base(&|c| c
            .dashboards
            .push(DashboardConfig::from_flag("http://127.0.0.1:1/api")))
        .contains("used twice")
    );
    assert!(base(&|c| c.interval = Duration::ZERO).contains("interval"));
    assert!(base(&|c| c.lookback = Duration::from_secs(u64::MAX / 2)).contains("lookback"));
}

/// The fault matrix: every fault of an upstream as a whole dashboard, beside a healthy one. The
/// scrape answers by its deadline (a wide margin; the measured overshoot is printed), only the
/// faulty dashboard is down, and nothing panics.
#[tokio::test]
async fn fault_matrix() {
    use tidegauge_testkit::faults::{Fault, FaultServer};
    let healthy = FakeDashboard::start(model(vec![("mvco", live())]))
        .await
        .unwrap();
    let budget = Duration::from_secs(3);
    let mut table = vec!["fault | elapsed - budget".to_owned()];
    for fault in Fault::ALL {
        let bad = FaultServer::start(fault).await.unwrap();
        let cfg = Config {
            dashboards: vec![
                DashboardConfig::from_flag(&format!("good={}", healthy.url)),
                DashboardConfig::from_flag(&format!("bad={}/api", bad.url)),
            ],
            request_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let ifcb = Ifcb::new(&cfg, tidegauge_testkit::http_client()).unwrap();
        let ctx = context(budget, FakeClock::at(NOW as u64));
        let started = std::time::Instant::now();
        let snap = tokio::time::timeout(budget + Duration::from_secs(1), ifcb.collect(&ctx))
            .await
            .unwrap_or_else(|_| panic!("{fault:?}: the scrape outlived its deadline by 1 s"))
            .unwrap();
        let elapsed = started.elapsed();
        let up = |d: &str| {
            snap.family("ifcb_dashboard_up").and_then(|f| {
                f.samples
                    .iter()
                    .find(|s| s.labels.get("dashboard") == Some(d))
                    .map(|s| s.value.clone())
            })
        };
        assert_eq!(up("good"), Some(Value::Number(1.0)), "{fault:?}");
        assert_eq!(up("bad"), Some(Value::Number(0.0)), "{fault:?}");
        assert!(
            snap.family("ifcb_latest_bin_timestamp").is_some_and(|f| f
                .samples
                .iter()
                .any(|s| s.labels.get("dashboard") == Some("good"))),
            "{fault:?}: the healthy dashboard's datasets are served"
        );
        table.push(format!(
            "{fault:?} | {:+.0} ms",
            elapsed.as_secs_f64() * 1000.0 - budget.as_secs_f64() * 1000.0
        ));
    }
    eprintln!(
        "ifcb fault matrix (budget {budget:?}, request_timeout 1 s):\n{}",
        table.join("\n")
    );
}

/// The landing page's status: the live dataset is fine, the finished cruise is stale (a
/// warning, not a failure), and a dashboard that stops answering turns its datasets failing.
#[tokio::test]
async fn status_shows_newest_bin_against_the_lag_threshold() {
    use tidegauge_core::status::{Cell, Health};
    let rig = Rig::new(
        model(vec![
            ("mvco", live()),
            ("cruise", FakeDataset::regular(50, NOW - 30 * DAY)),
        ]),
        |_| {},
    )
    .await;
    let before = rig.ifcb.status_at(NOW);
    assert_eq!(before.sections[1].rows.len(), 0, "nothing discovered yet");
    assert_eq!(before.sections[0].rows[0].health, Health::Unknown);
    rig.scrape().await;
    let status = rig.ifcb.status_at(NOW);
    let datasets = &status.sections[1];
    let row = |name: &str| {
        datasets
            .rows
            .iter()
            .find(|r| r.cells[1] == Cell::Text(name.into()))
            .unwrap()
    };
    assert_eq!(row("mvco").health, Health::Ok);
    assert_eq!(row("mvco").cells[2].to_string(), "10 min ago");
    assert_eq!(row("cruise").health, Health::Warning);
    assert_eq!(row("cruise").cells[2].to_string(), "30 d ago");
    assert_eq!(status.sections[0].rows[0].health, Health::Ok);

    rig.fake.update(|m| m.filter_options_status = Some(500));
    rig.advance(3600);
    rig.scrape().await;
    let status = rig.ifcb.status_at(NOW + 3600);
    assert_eq!(status.worst(), Health::Failing);
}
