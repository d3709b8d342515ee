//! The `sensor-bridge` collector: environmental sensors as one set of metrics in base units
//! (spec `sensor-bridge.md`). Sources: Linux IIO and hwmon sysfs, read at every scrape, and
//! microcontroller boards running the prometheus_express SDK, asked gently (see [`board`]).

pub mod board;
pub mod config;
mod factory;
pub mod mqtt;
pub mod parse;
pub mod sysfs;
pub mod units;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tidegauge_core::{
    CollectError, Collector, Labels, MetricFamily, MetricType, ScrapeContext, Snapshot,
    async_trait, lock,
};

pub use config::{BoardConfig, Config, ConfigError, MapEntry, SysfsConfig};
pub use factory::Factory;

use board::{Board, View};
use mqtt::Mqtt;
use sysfs::{Device, Reader, Reading, Rules, Source};
use units::Quantity;

/// The collector's name in configuration, flags and filters.
pub const NAME: &str = "sensor-bridge";

/// Names sensor-bridge exposes itself; a board family under one of them is dropped.
const OWN: [&str; 13] = [
    "sensor_device",
    "sensor_channel_label",
    "sensor_read_errors",
    "sensor_temperature_celsius",
    "sensor_relative_humidity_ratio",
    "sensor_pressure_pascals",
    "sensor_gas_resistance_ohms",
    "sensor_device_info",
    "sensor_channel_label_info",
    "sensor_board_up",
    "sensor_board_request_duration_seconds",
    "sensor_board_sample_age_seconds",
    "sensor_read_errors_total",
];

/// Longest wait for a device whose previous read still runs.
const SYSFS_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest wait for one device's read (a DHT11 read with its retries takes about 2 s).
const SYSFS_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `(source, device, sensor, reason)`.
type ErrorKey = (String, String, String, &'static str);

/// `sensor_read_errors_total` by `(source, device, sensor, reason)`.
#[derive(Debug, Default)]
pub struct Errors(Mutex<BTreeMap<ErrorKey, u64>>);

impl Errors {
    /// Counts `n` errors.
    pub fn add(&self, source: &str, device: &str, sensor: &str, reason: &'static str, n: u64) {
        *lock(&self.0)
            .entry((
                source.to_owned(),
                device.to_owned(),
                sensor.to_owned(),
                reason,
            ))
            .or_default() += n;
    }

    fn family(&self) -> MetricFamily {
        let mut f = MetricFamily::counter(
            "sensor_read_errors",
            "Readings that failed, by source, device, sensor and reason.",
        );
        for ((source, device, sensor, reason), n) in lock(&self.0).iter() {
            f.push(
                tidegauge_core::labels([
                    ("source", source),
                    ("device", device),
                    ("sensor", sensor),
                    ("reason", reason),
                ]),
                *n as f64,
            );
        }
        f
    }
}

/// The collector.
#[derive(Debug)]
pub struct SensorBridge {
    sysfs: PathBuf,
    reader: Arc<dyn Reader>,
    trees: Vec<(Source, Arc<Rules>)>,
    boards: Vec<Arc<Board>>,
    mqtt: Option<Arc<Mqtt>>,
    clock: Arc<dyn tidegauge_core::Clock>,
    errors: Arc<Errors>,
    /// One lock per device directory: reads of a device never overlap, even when a scrape gave
    /// up on an earlier one that is still running.
    device_locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Devices already warned about for percent-looking humidity.
    warned: Mutex<HashSet<PathBuf>>,
    /// Per board, the answer whose conflicts were counted.
    conflicts_counted: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Blocking sysfs reads in flight: a read that never returns (a driver that hangs) holds
    /// one permit, and the blocking pool the rest of the process needs stays free.
    readers: Arc<tokio::sync::Semaphore>,
}

impl SensorBridge {
    /// Builds the collector on the real file system.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::with_reader(config, Arc::new(sysfs::Fs), None)
    }

    /// Builds the collector reading sysfs through `reader` (tests inject driver errors). From
    /// `previous` (a reload) it keeps the error counts and every board whose settings did not
    /// change, with its last sample, interval and backoff: a reload never hurries a board.
    pub fn with_reader(
        config: Config,
        reader: Arc<dyn Reader>,
        previous: Option<&SensorBridge>,
    ) -> Result<Self, ConfigError> {
        Self::from_parts(
            config,
            reader,
            &tidegauge_core::Environment::from_pairs::<&str, &str>([]),
            Arc::new(tidegauge_core::SystemClock),
            previous,
        )
    }

    /// [`SensorBridge::with_reader`] with the environment MQTT passwords are read from and the
    /// clock of `sensor_mqtt_last_seen_timestamp_seconds`. From `previous` it also keeps the
    /// MQTT readings.
    pub fn from_parts(
        config: Config,
        reader: Arc<dyn Reader>,
        env: &tidegauge_core::Environment,
        clock: Arc<dyn tidegauge_core::Clock>,
        previous: Option<&SensorBridge>,
    ) -> Result<Self, ConfigError> {
        let addresses = config::validate(&config)?;
        let mqtt = match config.mqtt.clone() {
            None => None,
            Some(m) => {
                let table = previous
                    .and_then(|p| p.mqtt.as_ref())
                    .map(|m| Arc::clone(&m.table));
                let m = Mqtt::new(m, env, &OWN, table)?;
                m.check()?;
                Some(Arc::new(m))
            }
        };
        let mut quirks = config::builtin_quirks();
        quirks.extend(config.quirks.clone());
        let mut trees = Vec::new();
        for (source, table) in [(Source::Iio, &config.iio), (Source::Hwmon, &config.hwmon)] {
            if table.enabled {
                trees.push((
                    source,
                    Arc::new(Rules {
                        config: table.clone(),
                        quirks: quirks.clone(),
                    }),
                ));
            }
        }
        let errors = previous.map_or_else(Arc::default, |p| Arc::clone(&p.errors));
        let mut boards: Vec<Arc<Board>> = config
            .boards
            .into_iter()
            .zip(addresses)
            .map(|(b, a)| {
                // The same board: the same endpoint (a changed path or spelling of the URL), else
                // the same name (a changed host name for one device).
                let old = previous.and_then(|p| {
                    p.boards
                        .iter()
                        .find(|old| (&old.address().host, old.address().port) == (&a.host, a.port))
                        .or_else(|| p.boards.iter().find(|old| old.name() == b.name))
                });
                match old {
                    Some(old) if *old.config() == b && *old.address() == a => Arc::clone(old),
                    _ => Arc::new(Board::new(
                        b,
                        a,
                        Arc::clone(&errors),
                        old.map(|o| Arc::clone(o.gate())),
                    )),
                }
            })
            .collect();
        // The first board by name wins a family whose type boards disagree on.
        boards.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(Self {
            sysfs: config.sysfs,
            reader,
            trees,
            boards,
            mqtt,
            clock,
            errors,
            device_locks: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashSet::new()),
            conflicts_counted: Mutex::new(HashMap::new()),
            readers: Arc::new(tokio::sync::Semaphore::new(
                config.max_parallel_reads.max(1),
            )),
        })
    }

    /// The MQTT part, when configured (tests feed it messages without a broker).
    pub fn mqtt(&self) -> Option<&Mqtt> {
        self.mqtt.as_deref()
    }

    /// Reads every sysfs device, each serialised with its earlier reads, until `deadline`.
    async fn read_sysfs(&self, deadline: tokio::time::Instant) -> Vec<(Source, Reading)> {
        if self.trees.is_empty() {
            return Vec::new();
        }
        let reader = Arc::clone(&self.reader);
        let root = self.sysfs.clone();
        let sources: Vec<Source> = self.trees.iter().map(|(s, _)| *s).collect();
        let scan = tokio::task::spawn_blocking(move || {
            sources
                .into_iter()
                .flat_map(|s| sysfs::scan(&*reader, &root, s))
                .collect::<Vec<Device>>()
        });
        let devices = match tokio::time::timeout_at(deadline, scan).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "sysfs scan failed");
                return Vec::new();
            }
            Err(_) => {
                tracing::warn!(root = %self.sysfs.display(), "sysfs scan did not finish by the scrape deadline");
                return Vec::new();
            }
        };
        let reads = devices.into_iter().filter_map(|device| {
            let rules = Arc::clone(&self.trees.iter().find(|(s, _)| *s == device.source)?.1);
            let gate = Arc::clone(
                lock(&self.device_locks)
                    .entry(device.dir.clone())
                    .or_default(),
            );
            let reader = Arc::clone(&self.reader);
            let readers = Arc::clone(&self.readers);
            Some(async move {
                let source = device.source;
                let name = device.dir_name.clone();
                let started = tokio::time::Instant::now();
                let read_by = deadline.min(started + SYSFS_READ_WAIT);
                // A device whose last read still runs after a second is hanging: skipped.
                let Ok(guard) = tokio::time::timeout_at(
                    deadline.min(started + SYSFS_LOCK_WAIT),
                    gate.lock_owned(),
                )
                .await
                else {
                    self.errors.add(source.as_str(), &name, "", "timeout", 1);
                    return None;
                };
                let read = async move {
                    let permit = readers.acquire_owned().await;
                    tokio::task::spawn_blocking(move || {
                        let _serialised = (guard, permit);
                        sysfs::read(&*reader, &device, &rules)
                    })
                    .await
                };
                match tokio::time::timeout_at(read_by, read).await {
                    Ok(Ok(r)) => Some((source, r)),
                    Ok(Err(e)) => {
                        tracing::warn!(device = %name, error = %e, "sysfs read failed");
                        None
                    }
                    Err(_) => {
                        self.errors.add(source.as_str(), &name, "", "timeout", 1);
                        None
                    }
                }
            })
        });
        futures_util::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    fn add_sysfs(&self, readings: &[(Source, Reading)], out: &mut Families) {
        for (source, r) in readings {
            if r.excluded {
                continue;
            }
            let src = source.as_str();
            for (sensor, reason) in &r.errors {
                self.errors.add(src, &r.device, sensor, reason, 1);
            }
            if r.looks_like_percent
                && lock(&self.warned).insert(PathBuf::from(format!("{src}/{}", r.device)))
            {
                tracing::warn!(source = src, device = %r.device, chip = %r.chip, "humidity looks like percent, the ABI says milli-percent; add a quirk entry for this chip if it is");
            }
            out.info.push(
                tidegauge_core::labels([
                    ("source", src),
                    ("device", &r.device),
                    ("chip", &r.chip),
                    ("name", &r.name),
                    ("label", &r.label),
                ]),
                1.0,
            );
            for (sensor, label) in &r.channel_labels {
                out.channel_labels.push(
                    tidegauge_core::labels([
                        ("source", src),
                        ("device", &r.device),
                        ("sensor", sensor),
                        ("label", label),
                    ]),
                    1.0,
                );
            }
            for (q, sensor, v) in &r.values {
                out.canonical(*q).push(
                    tidegauge_core::labels([
                        ("source", src),
                        ("device", &r.device),
                        ("chip", &r.chip),
                        ("sensor", sensor),
                    ]),
                    *v,
                );
            }
        }
    }

    fn add_boards(&self, views: &[View], out: &mut Families) {
        let mut exported: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for (board, view) in self.boards.iter().zip(views) {
            let name = view.name.as_str();
            let l = tidegauge_core::labels([("board", name)]);
            out.up.push(l.clone(), if view.up { 1.0 } else { 0.0 });
            if let Some(d) = view.duration {
                out.duration.push(l.clone(), d.as_secs_f64());
            }
            let Some((parsed, age, arrived)) = &view.sample else {
                continue;
            };
            out.age.push(l, age.as_secs_f64());
            // Conflicts are counted once per answer, as parse errors are, not at every scrape
            // that serves it.
            let first_serving = {
                let mut counted = lock(&self.conflicts_counted);
                counted.insert(name.to_owned(), *arrived) != Some(*arrived)
            };
            for family in &parsed.families {
                let clash = OWN.contains(&family.name.as_str())
                    || family.name.starts_with("sensor_mqtt_")
                    || self.mqtt.as_ref().is_some_and(|m| m.owns(&family.name))
                    || exported
                        .get(&family.name)
                        .is_some_and(|f| f.kind != family.kind);
                if clash {
                    if first_serving {
                        self.errors.add("board", name, &family.name, "conflict", 1);
                    }
                    continue;
                }
                let target = exported.entry(family.name.clone()).or_insert_with(|| {
                    MetricFamily::new(family.name.clone(), family.help.clone(), family.kind)
                });
                for (labels, value) in &family.samples {
                    target.push(with_board(labels, name), *value);
                }
            }
            for m in &board.config().map {
                let Some(family) = parsed.families.iter().find(|f| f.name == m.series) else {
                    continue;
                };
                for (labels, value) in &family.samples {
                    let chip = labels
                        .iter()
                        .find(|(k, _)| k == "sensor")
                        .map_or("", |(_, v)| v.as_str());
                    out.canonical(m.quantity).push(
                        tidegauge_core::labels([
                            ("source", "board"),
                            ("device", name),
                            ("chip", chip),
                            ("sensor", m.quantity.as_str()),
                        ]),
                        m.unit.to_base(*value),
                    );
                }
            }
        }
        out.boards = exported.into_values().collect();
    }
}

/// `labels` plus `board="<name>"`; a board's own `board` label becomes `exported_board`.
fn with_board(labels: &Labels, board: &str) -> Labels {
    let mut out: Labels = Vec::with_capacity(labels.len() + 1);
    for (k, v) in labels {
        let mut key = k.clone();
        while key == "board" || labels.iter().any(|(o, _)| *o == key && o != k) {
            key = format!("exported_{key}");
        }
        out.push((key, v.clone()));
    }
    out.push(("board".to_owned(), board.to_owned()));
    out
}

/// The families of one scrape, in exposition order.
struct Families {
    canonical: Vec<MetricFamily>,
    info: MetricFamily,
    channel_labels: MetricFamily,
    up: MetricFamily,
    duration: MetricFamily,
    age: MetricFamily,
    boards: Vec<MetricFamily>,
    mqtt: Vec<MetricFamily>,
}

impl Families {
    fn new() -> Self {
        let mut duration = MetricFamily::gauge(
            "sensor_board_request_duration_seconds",
            "Duration of the last request to the board.",
        );
        duration.unit = Some("seconds".into());
        let mut age = MetricFamily::gauge(
            "sensor_board_sample_age_seconds",
            "Age of the board sample being served.",
        );
        age.unit = Some("seconds".into());
        Self {
            canonical: Quantity::ALL.iter().map(|q| q.family()).collect(),
            info: MetricFamily::new(
                "sensor_device",
                "A sensor device: where it is read and what chip it is.",
                MetricType::Info,
            ),
            channel_labels: MetricFamily::new(
                "sensor_channel_label",
                "A channel's label as the driver suggests it (hwmon *_label).",
                MetricType::Info,
            ),
            up: MetricFamily::gauge(
                "sensor_board_up",
                "1 if the last request to the board succeeded and its sample is fresh.",
            ),
            duration,
            age,
            boards: Vec::new(),
            mqtt: Vec::new(),
        }
    }

    fn canonical(&mut self, q: Quantity) -> &mut MetricFamily {
        let i = Quantity::ALL.iter().position(|x| *x == q).unwrap_or(0);
        &mut self.canonical[i]
    }

    fn into_snapshot(self, errors: MetricFamily) -> Snapshot {
        let mut snap = Snapshot::new();
        for mut f in self.canonical {
            f.samples.sort_by(|a, b| a.labels.cmp(&b.labels));
            snap.push(f);
        }
        for f in [
            self.info,
            self.channel_labels,
            self.up,
            self.duration,
            self.age,
            errors,
        ] {
            snap.push(f);
        }
        for f in self.mqtt.into_iter().chain(self.boards) {
            snap.push(f);
        }
        snap
    }
}

#[async_trait]
impl Collector for SensorBridge {
    fn name(&self) -> &str {
        NAME
    }

    fn status(&self) -> tidegauge_core::status::Status {
        use tidegauge_core::status::{Section, Status};
        let mut sections = Vec::new();
        if !self.boards.is_empty() {
            let mut boards = Section::new(
                "Boards",
                &[
                    "board",
                    "address",
                    "state",
                    "last good answer",
                    "failures in a row",
                    "retry",
                ],
            );
            boards.rows = self.boards.iter().map(|b| b.status_row()).collect();
            sections.push(boards);
        }
        if let Some(m) = &self.mqtt {
            sections.extend(m.status(tidegauge_core::unix_seconds(self.clock.now())));
        }
        Status { sections }
    }

    async fn collect(&self, ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        let deadline = tokio::time::Instant::now() + ctx.upstream_budget();
        let boards = futures_util::future::join_all(self.boards.iter().map(|b| b.scrape(deadline)));
        let (readings, views) = tokio::join!(self.read_sysfs(deadline), boards);
        let mut out = Families::new();
        self.add_sysfs(&readings, &mut out);
        self.add_boards(&views, &mut out);
        if let Some(m) = &self.mqtt {
            m.expire(tokio::time::Instant::now());
            out.mqtt = m.families(&mut |q, labels, v| {
                out.canonical[Quantity::ALL.iter().position(|x| *x == q).unwrap_or(0)]
                    .push(labels, v);
            });
        }
        Ok(Arc::new(out.into_snapshot(self.errors.family())))
    }

    async fn run(&self, shutdown: tidegauge_core::CancellationToken) {
        if let Some(m) = &self.mqtt {
            mqtt::run(Arc::clone(m), Arc::clone(&self.clock), shutdown).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_label_is_added_and_an_existing_one_kept_aside() {
        let l = tidegauge_core::labels([("board", "x"), ("exported_board", "y"), ("a", "b")]);
        assert_eq!(
            with_board(&l, "g"),
            tidegauge_core::labels([
                ("exported_exported_board", "x"),
                ("exported_board", "y"),
                ("a", "b"),
                ("board", "g"),
            ])
        );
    }
}
