//! `[collectors.sensor-bridge]`: the sysfs trees, the quirk table and the boards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tidegauge_core::duration;

use crate::units::{Quantity, Unit};

/// A quirk entry: a factor applied to a chip's processed (`*_input`) readings of a quantity
/// before the ABI's unit is converted (bme680 reports humidity in percent: `humidity = 1000`).
pub type Quirk = BTreeMap<Quantity, f64>;

/// The quirk table tidegauge knows (spec §2.4); `[collectors.sensor-bridge.quirks.CHIP]` replaces
/// a chip's entry.
pub fn builtin_quirks() -> BTreeMap<String, Quirk> {
    BTreeMap::from([(
        "bme680".to_owned(),
        Quirk::from([(Quantity::Humidity, 1000.0)]),
    )])
}

/// Configuration (`[collectors.sensor-bridge]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Root of sysfs (`--path.sysfs`).
    #[serde(default = "default_sysfs")]
    pub sysfs: PathBuf,
    /// Linux IIO devices.
    #[serde(default)]
    pub iio: SysfsConfig,
    /// Linux hwmon devices.
    #[serde(default)]
    pub hwmon: SysfsConfig,
    /// Blocking sysfs reads at once. A read that never returns (a hanging driver) keeps its
    /// thread, so this bounds what hanging devices can take from the process.
    #[serde(default = "max_parallel_reads")]
    pub max_parallel_reads: usize,
    /// Quirk entries by chip, replacing the built-in ones.
    #[serde(default)]
    pub quirks: BTreeMap<String, Quirk>,
    /// Microcontroller boards serving Prometheus text.
    #[serde(default)]
    pub boards: Vec<BoardConfig>,
    /// Readings published to an MQTT broker.
    pub mqtt: Option<crate::mqtt::MqttConfig>,
}

fn max_parallel_reads() -> usize {
    64
}

fn default_sysfs() -> PathBuf {
    PathBuf::from("/sys")
}

fn yes() -> bool {
    true
}

/// `[collectors.sensor-bridge.iio]` or `.hwmon`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysfsConfig {
    /// Read this tree.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Only these chips (empty: all).
    #[serde(default)]
    pub include_chips: Vec<String>,
    /// Never these chips.
    #[serde(default)]
    pub exclude_chips: Vec<String>,
    /// Only these devices, by directory name or label (empty: all).
    #[serde(default)]
    pub include_devices: Vec<String>,
    /// Never these devices.
    #[serde(default)]
    pub exclude_devices: Vec<String>,
    /// Per-device settings keyed by directory name, `label` or `name`.
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceOverride>,
}

impl Default for SysfsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            include_chips: Vec::new(),
            exclude_chips: Vec::new(),
            include_devices: Vec::new(),
            exclude_devices: Vec::new(),
            devices: BTreeMap::new(),
        }
    }
}

/// Settings of one sysfs device.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceOverride {
    /// The `chip` label (si70xx drivers name themselves by bus address).
    pub chip: Option<String>,
    /// This device's quirk entry, instead of its chip's.
    pub quirks: Option<Quirk>,
}

/// One board (`[[collectors.sensor-bridge.boards]]`), settings as in spec §1.4.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    /// The `board` label.
    pub name: String,
    /// `http://host[:port][/path]`: port 8080 and path `/metrics` when left out.
    pub url: String,
    /// Least time between two requests to the board.
    #[serde(default = "d5", deserialize_with = "duration::deserialize")]
    pub min_interval: Duration,
    /// Time to establish the connection.
    #[serde(default = "d1", deserialize_with = "duration::deserialize")]
    pub connect_timeout: Duration,
    /// Time for the whole request, connection to last byte.
    #[serde(default = "d3", deserialize_with = "duration::deserialize")]
    pub request_timeout: Duration,
    /// Wait after the first failure; doubles with each further one.
    #[serde(default = "d5", deserialize_with = "duration::deserialize")]
    pub backoff_initial: Duration,
    /// Longest wait between failures.
    #[serde(default = "d300", deserialize_with = "duration::deserialize")]
    pub backoff_max: Duration,
    /// Samples older than this are not served.
    #[serde(default = "d60", deserialize_with = "duration::deserialize")]
    pub stale_after: Duration,
    /// Largest answer, in bytes.
    #[serde(default = "max_body")]
    pub max_body: usize,
    /// Most series read from one answer.
    #[serde(default = "max_series")]
    pub max_series: usize,
    /// Board series also published as canonical metrics.
    #[serde(default)]
    pub map: Vec<MapEntry>,
}

/// One board series published as a canonical metric.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapEntry {
    /// The board's series name (`prom_express_pressure`).
    pub series: String,
    /// The canonical quantity.
    pub quantity: Quantity,
    /// The unit the board reports it in.
    pub unit: Unit,
}

fn d1() -> Duration {
    Duration::from_secs(1)
}
fn d3() -> Duration {
    Duration::from_secs(3)
}
fn d5() -> Duration {
    Duration::from_secs(5)
}
fn d60() -> Duration {
    Duration::from_secs(60)
}
fn d300() -> Duration {
    Duration::from_secs(300)
}
fn max_body() -> usize {
    64 * 1024
}
fn max_series() -> usize {
    1000
}

/// Where a board is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardAddress {
    /// Host name or address, as written.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path, no query.
    pub path: String,
    /// `Host` header value.
    pub host_header: String,
}

/// Why the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl BoardConfig {
    /// Checks the settings; the error names the key.
    pub fn address(&self, i: usize) -> Result<BoardAddress, ConfigError> {
        let at = |key: &str, msg: String| ConfigError(format!("boards[{i}].{key}: {msg}"));
        if self.name.trim().is_empty() {
            return Err(at("name", "must not be empty".into()));
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| at("url", format!("{:?}: {e}", self.url)))?;
        if url.scheme() != "http" {
            return Err(at(
                "url",
                format!("{:?}: boards are reached over plain http://", self.url),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(at(
                "url",
                format!(
                    "{:?}: no query string or fragment (the SDK answers 404 to any query)",
                    self.url
                ),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(at(
                "url",
                format!("{:?}: boards take no credentials", self.url),
            ));
        }
        let host_str = url
            .host_str()
            .ok_or_else(|| at("url", format!("{:?}: no host", self.url)))?;
        // The URL parser drops an explicit `:80` (http's default), but a board's default is 8080.
        let explicit_80 = self
            .url
            .split("://")
            .nth(1)
            .and_then(|r| r.split(['/', '?', '#']).next())
            .is_some_and(|authority| authority.ends_with(":80"));
        let port = url.port().unwrap_or(if explicit_80 { 80 } else { 8080 });
        if port == 0 {
            return Err(at("url", format!("{:?}: port 0", self.url)));
        }
        let host_header = format!("{host_str}:{port}");
        let host = host_str
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let path = match url.path() {
            "" | "/" => "/metrics".to_owned(),
            p => p.to_owned(),
        };
        let day = Duration::from_secs(86_400);
        let hour = Duration::from_secs(3_600);
        for (key, d, most) in [
            ("min_interval", self.min_interval, day),
            ("connect_timeout", self.connect_timeout, hour),
            ("request_timeout", self.request_timeout, hour),
            ("backoff_initial", self.backoff_initial, day),
            ("backoff_max", self.backoff_max, day),
            ("stale_after", self.stale_after, day),
        ] {
            if d.is_zero() && key != "min_interval" {
                return Err(at(key, "must be more than zero".into()));
            }
            if d > most {
                return Err(at(key, format!("{d:?} is more than {most:?}")));
            }
        }
        if self.backoff_max < self.backoff_initial {
            return Err(at("backoff_max", "must be at least backoff_initial".into()));
        }
        if self.max_body == 0 || self.max_series == 0 {
            let key = if self.max_body == 0 {
                "max_body"
            } else {
                "max_series"
            };
            return Err(at(key, "must be more than zero".into()));
        }
        for (j, m) in self.map.iter().enumerate() {
            if self.map[..j].iter().any(|o| o.series == m.series) {
                return Err(at(
                    &format!("map[{j}].series"),
                    format!("{:?} is mapped twice", m.series),
                ));
            }
            if m.unit.quantity() != m.quantity {
                return Err(at(
                    &format!("map[{j}].unit"),
                    format!("{:?} does not measure {}", m.unit, m.quantity.as_str()),
                ));
            }
        }
        Ok(BoardAddress {
            host_header,
            host,
            port,
            path,
        })
    }
}

/// Checks the whole table; the error names the key.
pub fn validate(c: &Config) -> Result<Vec<BoardAddress>, ConfigError> {
    for (chip, quirk) in
        c.quirks
            .iter()
            .chain(
                [("iio", &c.iio), ("hwmon", &c.hwmon)]
                    .into_iter()
                    .flat_map(|(_, t)| {
                        t.devices
                            .iter()
                            .filter_map(|(k, d)| Some((k, d.quirks.as_ref()?)))
                    }),
            )
    {
        if let Some((q, f)) = quirk.iter().find(|(_, f)| !f.is_finite() || **f == 0.0) {
            return Err(ConfigError(format!(
                "quirks for {chip:?}: the {} factor {f} must be a finite number other than zero",
                q.as_str()
            )));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (i, b) in c.boards.iter().enumerate() {
        let address = b.address(i)?;
        // One board, one connection at a time: two entries would each open one.
        if let Some(j) = out
            .iter()
            .position(|o: &BoardAddress| (&o.host, o.port) == (&address.host, address.port))
        {
            return Err(ConfigError(format!(
                "boards[{i}].url: {:?} is the board of boards[{j}]",
                b.url
            )));
        }
        out.push(address);
        if !names.insert(b.name.as_str()) {
            return Err(ConfigError(format!(
                "boards[{i}].name: {:?} is used by another board",
                b.name
            )));
        }
    }
    Ok(out)
}
