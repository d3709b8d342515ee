//! Linux sensors from the fake sysfs tree of spec §5.7 (`fixtures/sensor-bridge/sysfs`).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidegauge_core::{Collector, Snapshot, Value};
use tidegauge_sensor_bridge::sysfs::{Fs, Reader};
use tidegauge_sensor_bridge::{Config, SensorBridge};
use tidegauge_testkit::{FIXTURE_EPOCH, FakeClock, context, fixtures_dir, render};

/// The real file system, except that a file holding `!EIO` (or another errno name) fails with
/// that errno, as a flaky driver's read does.
#[derive(Debug)]
struct Faulty;

impl Reader for Faulty {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        let s = Fs.read(path)?;
        let errno = match s.trim() {
            "!EIO" => 5,
            "!ETIMEDOUT" => 110,
            "!EBUSY" => 16,
            "!ENODATA" => 61,
            _ => return Ok(s),
        };
        Err(std::io::Error::from_raw_os_error(errno))
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        Fs.list(dir)
    }
}

fn config(extra: &str) -> Config {
    let root = fixtures_dir().join("sensor-bridge/sysfs");
    toml::from_str(&format!(
        "sysfs = {:?}\n[iio.devices.\"1-0040\"]\nchip = \"si7021\"\n{extra}",
        root.display().to_string()
    ))
    .unwrap()
}

async fn collect(c: &SensorBridge) -> Arc<Snapshot> {
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    c.collect(&ctx).await.unwrap()
}

fn value(snap: &Snapshot, family: &str, device: &str) -> f64 {
    let f = snap.family(family).unwrap();
    let s = f
        .samples
        .iter()
        .find(|s| s.labels.iter().any(|(k, v)| k == "device" && v == device))
        .unwrap_or_else(|| panic!("no {family} for {device}"));
    match s.value {
        Value::Number(v) => v,
        _ => panic!("not a number"),
    }
}

#[tokio::test]
async fn the_fixture_tree_in_base_units() {
    let c = SensorBridge::with_reader(config(""), Arc::new(Faulty), None).unwrap();
    let snap = collect(&c).await;
    insta::assert_snapshot!(render(&snap));
    // si7021: (6500 - 4368) × 10.725097656 m°C and (7340 - 786) × 7.629394531 pcm.
    let t = value(&snap, "sensor_temperature_celsius", "iio:device2");
    let h = value(&snap, "sensor_relative_humidity_ratio", "iio:device2");
    assert!((t - 22.865908).abs() < 1e-6, "{t}");
    assert!((h - 0.500031).abs() < 1e-6, "{h}");
}

#[tokio::test]
async fn failing_reads_are_counted_by_reason_and_the_rest_served() {
    let c = SensorBridge::with_reader(config(""), Arc::new(Faulty), None).unwrap();
    collect(&c).await;
    let out = render(&*collect(&c).await);
    assert!(!out.contains("chip=\"dht11\",sensor"), "{out}");
    for reason in ["eio", "etimedout"] {
        let sensor = if reason == "eio" {
            "temp"
        } else {
            "humidityrelative"
        };
        let line = format!(
            "sensor_read_errors_total{{source=\"iio\",device=\"iio:device3\",sensor=\"{sensor}\",reason=\"{reason}\"}} 2"
        );
        assert!(out.contains(&line), "{line} missing from\n{out}");
    }
}

#[tokio::test]
async fn excluded_chips_and_devices_are_left_out() {
    let c = SensorBridge::with_reader(
        config(
            "[hwmon]\nexclude_chips = [\"coretemp\"]\n[iio]\nexclude_devices = [\"iio:device1\"]",
        ),
        Arc::new(Faulty),
        None,
    )
    .unwrap();
    let out = render(&*collect(&c).await);
    assert!(!out.contains("coretemp"), "{out}");
    assert!(!out.contains("Core 0"), "{out}");
    assert!(!out.contains("iio:device1"), "{out}");
    assert!(out.contains("sht3x"), "{out}");
    let c = SensorBridge::with_reader(
        config("[hwmon]\nenabled = false\n[iio]\ninclude_chips = [\"si7021\"]"),
        Arc::new(Faulty),
        None,
    )
    .unwrap();
    let out = render(&*collect(&c).await);
    assert!(!out.contains("hwmon"), "{out}");
    assert!(!out.contains("bme"), "{out}");
    assert!(out.contains("si7021"), "{out}");
}

#[tokio::test]
async fn quirk_entries_can_be_replaced() {
    // A deployment whose bme680 driver gives milli-percent after all, and pressure in hPa.
    let c = SensorBridge::with_reader(
        config("[quirks.bme680]\npressure = 0.1"),
        Arc::new(Faulty),
        None,
    )
    .unwrap();
    let snap = collect(&c).await;
    let p = value(&snap, "sensor_pressure_pascals", "iio:device0");
    assert!((p - 9832.5).abs() < 1e-9, "{p}");
    let h = value(&snap, "sensor_relative_humidity_ratio", "iio:device0");
    assert!((h - 0.00049406).abs() < 1e-12, "{h}");
}

#[tokio::test]
async fn this_machines_sysfs_gives_a_valid_result() {
    let c = SensorBridge::new(toml::from_str("").unwrap()).unwrap();
    let snap = collect(&c).await;
    for f in &snap.families {
        f.validate().unwrap();
    }
}

#[test]
fn bad_settings_are_named() {
    for (toml, want) in [
        ("[quirks.bme680]\nhumidity = 0", "quirks for \"bme680\""),
        ("[quirks.bme680]\nlight = 2", "unknown variant `light`"),
        ("[iio]\nenable = true", "unknown field `enable`"),
    ] {
        let err = match toml::from_str::<Config>(toml) {
            Err(e) => e.to_string(),
            Ok(c) => SensorBridge::new(c).unwrap_err().to_string(),
        };
        assert!(err.contains(want), "{toml}: {err}");
    }
}

/// Blocks reads of `in_temp_input` until the test ends, as a hanging driver (or a FIFO) does;
/// counts how many reads block at once.
#[derive(Debug, Default)]
struct Hanging {
    blocked: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    gate: std::sync::Mutex<()>,
}

impl Reader for Hanging {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        if path.file_name().is_some_and(|n| n == "in_temp_input") {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.blocked.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            // Every blocked reader waits on the same gate, opened when the test drops it.
            let _g = self.gate.lock();
            if let Some(rx) = self.release.lock().unwrap().as_ref() {
                let _ = rx.recv();
            }
        }
        Fs.read(path)
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        Fs.list(dir)
    }
}

fn temp_tree(name: &str, devices: usize) -> std::path::PathBuf {
    let root = std::env::temp_dir().join(format!("tidegauge-sysfs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for i in 0..devices {
        let d = root.join(format!("bus/iio/devices/iio:device{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), "bme280\n").unwrap();
        std::fs::write(d.join("in_temp_input"), "21450\n").unwrap();
        std::fs::write(d.join("in_pressure_input"), "101.325\n").unwrap();
    }
    let h = root.join("class/hwmon/hwmon0");
    std::fs::create_dir_all(&h).unwrap();
    std::fs::write(h.join("name"), "sht3x\n").unwrap();
    std::fs::write(h.join("temp1_input"), "31500\n").unwrap();
    root
}

fn hanging_bridge(
    root: &Path,
    extra: &str,
) -> (SensorBridge, Arc<Hanging>, std::sync::mpsc::Sender<()>) {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = Arc::new(Hanging {
        release: std::sync::Mutex::new(Some(rx)),
        ..Hanging::default()
    });
    let c = SensorBridge::with_reader(
        toml::from_str(&format!(
            "sysfs = {:?}\n{extra}",
            root.display().to_string()
        ))
        .unwrap(),
        Arc::clone(&reader) as Arc<dyn Reader>,
        None,
    )
    .unwrap();
    (c, reader, tx)
}

async fn scrape_with_margin(c: &SensorBridge) -> String {
    // A minute of budget: the scrape still ends once the reads it waits for are given up (the
    // bound here is a margin against hanging, not a speed check).
    let ctx = context(Duration::from_secs(60), FakeClock::at(FIXTURE_EPOCH));
    let snap = tokio::time::timeout(Duration::from_secs(30), c.collect(&ctx))
        .await
        .expect("a scrape waited for a hanging read")
        .unwrap();
    render(&snap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_reads_do_not_hold_scrapes() {
    let root = temp_tree("hang", 3);
    let (c, _reader, release) = hanging_bridge(&root, "");
    for _ in 0..2 {
        let out = scrape_with_margin(&c).await;
        // hwmon is unaffected; the hanging IIO devices are counted.
        assert!(
            out.contains("chip=\"sht3x\",sensor=\"temp1\"} 31.5"),
            "{out}"
        );
        assert!(
            out.contains("device=\"iio:device2\",sensor=\"\",reason=\"timeout\"}"),
            "{out}"
        );
    }
    drop(release);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_reads_hold_at_most_max_parallel_reads_threads() {
    let root = temp_tree("many", 10);
    let (c, reader, release) = hanging_bridge(&root, "max_parallel_reads = 4");
    for _ in 0..2 {
        scrape_with_margin(&c).await;
    }
    let most = reader.most.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=4).contains(&most), "{most} reads blocked at once");
    drop(release);
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn an_attribute_too_large_to_be_one_is_a_parse_error() {
    let root = temp_tree("large", 1);
    let d = root.join("bus/iio/devices/iio:device0");
    // Cut at 4 KiB this would read as 1 (m°C).
    std::fs::write(
        d.join("in_temp_input"),
        format!("1{}garbage", " ".repeat(5000)),
    )
    .unwrap();
    std::fs::write(d.join("in_pressure_input"), "1".repeat(5000)).unwrap();
    let c = SensorBridge::new(
        toml::from_str(&format!("sysfs = {:?}", root.display().to_string())).unwrap(),
    )
    .unwrap();
    let out = render(&*collect(&c).await);
    assert!(!out.contains("_celsius{source=\"iio\""), "{out}");
    assert!(!out.contains("_pascals{source=\"iio\""), "{out}");
    assert!(out.contains("sensor=\"temp\",reason=\"parse\"} 1"), "{out}");
    assert!(
        out.contains("sensor=\"pressure\",reason=\"parse\"} 1"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
