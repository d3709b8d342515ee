//! Linux sensors under sysfs: IIO (`bus/iio/devices`) and hwmon (`class/hwmon`), read at every
//! scrape, converted to canonical quantities (spec §2–3, §5.1–5.2).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;

use crate::config::{DeviceOverride, Quirk, SysfsConfig};
use crate::units::{Quantity, Unit};

/// Largest attribute read: sysfs attributes are at most a page.
const MAX_ATTRIBUTE: u64 = 4096;

/// File access, replaceable in tests to inject the errors real drivers return.
pub trait Reader: Send + Sync + std::fmt::Debug {
    /// The content of an attribute file.
    fn read(&self, path: &Path) -> std::io::Result<String>;
    /// The entry names of a directory.
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fs;

impl Reader for Fs {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        let mut s = String::new();
        std::fs::File::open(path)?
            .take(MAX_ATTRIBUTE + 1)
            .read_to_string(&mut s)?;
        if s.len() as u64 > MAX_ATTRIBUTE {
            // Not an attribute: a value cut short would read as another number.
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("more than {MAX_ATTRIBUTE} bytes"),
            ));
        }
        Ok(s)
    }

    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(n) = entry?.file_name().to_str() {
                names.push(n.to_owned());
            }
        }
        Ok(names)
    }
}

/// Which tree a device is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// `bus/iio/devices/iio:deviceN`.
    Iio,
    /// `class/hwmon/hwmonN`.
    Hwmon,
}

impl Source {
    /// The `source` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Iio => "iio",
            Source::Hwmon => "hwmon",
        }
    }
}

/// A device found by [`scan`], not yet read.
#[derive(Debug, Clone)]
pub struct Device {
    /// Tree.
    pub source: Source,
    /// Its directory.
    pub dir: PathBuf,
    /// The directory's name (`iio:device0`, `hwmon1`).
    pub dir_name: String,
}

/// Why one attribute could not be read: the `reason` label of `sensor_read_errors_total`.
pub fn reason(e: &std::io::Error) -> &'static str {
    // Linux errno values; std names only some of them as kinds.
    match e.raw_os_error() {
        Some(2) => "enoent",
        Some(16) => "ebusy",
        Some(61) => "enodata",
        Some(110) => "etimedout",
        Some(_) => "eio",
        None if e.kind() == std::io::ErrorKind::NotFound => "enoent",
        None if e.kind() == std::io::ErrorKind::InvalidData => "parse",
        None => "eio",
    }
}

/// The devices of one tree under `root`, by directory name. A missing tree is no devices.
pub fn scan(reader: &dyn Reader, root: &Path, source: Source) -> Vec<Device> {
    let (dir, prefix) = match source {
        Source::Iio => (root.join("bus/iio/devices"), "iio:device"),
        Source::Hwmon => (root.join("class/hwmon"), "hwmon"),
    };
    let mut names = match reader.list(&dir) {
        Ok(n) => n,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list sensor devices");
            }
            return Vec::new();
        }
    };
    names.retain(|n| n.starts_with(prefix));
    names.sort_by_key(|n| natural(n));
    names
        .into_iter()
        .map(|n| Device {
            source,
            dir: dir.join(&n),
            dir_name: n,
        })
        .collect()
}

/// `hwmon10` after `hwmon9`.
fn natural(name: &str) -> (String, u64) {
    let digits = name.trim_start_matches(|c: char| !c.is_ascii_digit());
    let head = &name[..name.len() - digits.len()];
    (head.to_owned(), digits.parse().unwrap_or(u64::MAX))
}

/// One device, read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// The `device` label.
    pub device: String,
    /// The `chip` label.
    pub chip: String,
    /// The `name` file, as read.
    pub name: String,
    /// The `label` file, as read (IIO only).
    pub label: String,
    /// `(quantity, sensor label, value in base units)`.
    pub values: Vec<(Quantity, String, f64)>,
    /// `(sensor label, channel label)` from hwmon's `*_label` files.
    pub channel_labels: Vec<(String, String)>,
    /// `(sensor label, reason)` of the channels that could not be read.
    pub errors: Vec<(String, &'static str)>,
    /// A processed humidity that looks like percent from a chip without a quirk entry.
    pub looks_like_percent: bool,
    /// Left out by the configuration's filters.
    pub excluded: bool,
}

/// How the configuration applies to one tree.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The tree's table.
    pub config: SysfsConfig,
    /// Quirk entries by chip: built in, overridden by the configuration.
    pub quirks: BTreeMap<String, Quirk>,
}

fn attribute(reader: &dyn Reader, path: &Path) -> std::io::Result<Option<String>> {
    match reader.read(path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn number(reader: &dyn Reader, path: &Path) -> Result<Option<f64>, &'static str> {
    match attribute(reader, path).map_err(|e| reason(&e))? {
        None => Ok(None),
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or("parse"),
    }
}

/// A bus address such as `1-0040`: what the si70xx drivers report as their name.
fn is_bus_address(name: &str) -> bool {
    static RE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^\d+-[0-9a-fA-F]{4}$").ok());
    RE.as_ref().is_some_and(|re| re.is_match(name))
}

static IIO_CHANNEL: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^in_(temp|humidityrelative|pressure|resistance)(\d*)(_ambient|_object)?_(input|raw)$",
    )
    .ok()
});

static HWMON_CHANNEL: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^(temp|humidity)(\d+)_(input|label)$").ok());

/// Reads one device: blocking, so the caller runs it off the async runtime.
pub fn read(reader: &dyn Reader, device: &Device, rules: &Rules) -> Reading {
    let name = attribute(reader, &device.dir.join("name"))
        .ok()
        .flatten()
        .or_else(|| {
            // Older hwmon drivers keep `name` on the parent device.
            attribute(reader, &device.dir.join("device/name"))
                .ok()
                .flatten()
        })
        .unwrap_or_default();
    let label = match device.source {
        Source::Iio => attribute(reader, &device.dir.join("label"))
            .ok()
            .flatten()
            .unwrap_or_default(),
        Source::Hwmon => String::new(),
    };
    let config = &rules.config;
    let over: Option<&DeviceOverride> = [&device.dir_name, &label, &name]
        .into_iter()
        .filter(|k| !k.is_empty())
        .find_map(|k| config.devices.get(k.as_str()));
    let chip = over.and_then(|o| o.chip.clone()).unwrap_or_else(|| {
        if name.is_empty() || (device.source == Source::Iio && is_bus_address(&name)) {
            "unknown".to_owned()
        } else {
            name.clone()
        }
    });
    let device_label = if label.is_empty() {
        device.dir_name.clone()
    } else {
        label.clone()
    };
    let mut out = Reading {
        device: device_label,
        chip,
        name,
        label,
        ..Reading::default()
    };
    let matches = |list: &[String], keys: &[&str]| list.iter().any(|x| keys.contains(&x.as_str()));
    let device_keys = [device.dir_name.as_str(), out.device.as_str()];
    let chip_keys = [out.chip.as_str(), out.name.as_str()];
    if (!config.include_chips.is_empty() && !matches(&config.include_chips, &chip_keys))
        || matches(&config.exclude_chips, &chip_keys)
        || (!config.include_devices.is_empty() && !matches(&config.include_devices, &device_keys))
        || matches(&config.exclude_devices, &device_keys)
    {
        out.excluded = true;
        return out;
    }
    let quirk = over
        .and_then(|o| o.quirks.as_ref())
        .or_else(|| rules.quirks.get(&out.chip));
    let files = match reader.list(&device.dir) {
        Ok(f) => f,
        Err(e) => {
            out.errors.push((String::new(), reason(&e)));
            return out;
        }
    };
    match device.source {
        Source::Iio => read_iio(reader, device, &files, quirk, &mut out),
        Source::Hwmon => read_hwmon(reader, device, &files, quirk, &mut out),
    }
    out.values.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    out
}

fn quantity_of(kind: &str) -> Option<Quantity> {
    Some(match kind {
        "temp" => Quantity::Temperature,
        "humidityrelative" | "humidity" => Quantity::Humidity,
        "pressure" => Quantity::Pressure,
        "resistance" => Quantity::GasResistance,
        _ => return None,
    })
}

/// A processed value in the ABI's unit, corrected by the chip's quirk, in base units.
fn processed(q: Quantity, v: f64, quirk: Option<&Quirk>, out: &mut Reading) -> f64 {
    let factor = quirk.and_then(|k| k.get(&q)).copied();
    if q == Quantity::Humidity && factor.is_none() && v <= 100.0 {
        out.looks_like_percent = true;
    }
    Unit::sysfs(q).to_base(v * factor.unwrap_or(1.0))
}

fn read_iio(
    reader: &dyn Reader,
    device: &Device,
    files: &[String],
    quirk: Option<&Quirk>,
    out: &mut Reading,
) {
    let Some(re) = IIO_CHANNEL.as_ref() else {
        return;
    };
    // Channel stem → (type, quantity, has `_input`, has `_raw`).
    let mut channels: BTreeMap<String, (String, Quantity, bool, bool)> = BTreeMap::new();
    for f in files {
        let Some(c) = re.captures(f) else { continue };
        let kind = &c[1];
        let Some(q) = quantity_of(kind) else { continue };
        let stem = format!("{kind}{}{}", &c[2], c.get(3).map_or("", |m| m.as_str()));
        let e = channels
            .entry(stem)
            .or_insert_with(|| (kind.to_owned(), q, false, false));
        if &c[4] == "input" {
            e.2 = true;
        } else {
            e.3 = true;
        }
    }
    for (stem, (kind, q, input, _raw)) in channels {
        let value = if input {
            number(reader, &device.dir.join(format!("in_{stem}_input")))
                .map(|v| v.map(|v| processed(q, v, quirk, out)))
        } else {
            raw_value(reader, &device.dir, &stem, &kind)
                .map(|v| v.map(|v| Unit::sysfs(q).to_base(v)))
        };
        match value {
            Ok(Some(v)) => out.values.push((q, stem, v)),
            Ok(None) => out.errors.push((stem, "enoent")),
            Err(r) => out.errors.push((stem, r)),
        }
    }
}

/// `(raw + offset) × scale`, each of offset and scale per channel first, then per type.
fn raw_value(
    reader: &dyn Reader,
    dir: &Path,
    stem: &str,
    kind: &str,
) -> Result<Option<f64>, &'static str> {
    let Some(raw) = number(reader, &dir.join(format!("in_{stem}_raw")))? else {
        return Ok(None);
    };
    let part = |item: &str, default: f64| -> Result<f64, &'static str> {
        if let Some(v) = number(reader, &dir.join(format!("in_{stem}_{item}")))? {
            return Ok(v);
        }
        if stem != kind
            && let Some(v) = number(reader, &dir.join(format!("in_{kind}_{item}")))?
        {
            return Ok(v);
        }
        Ok(default)
    };
    let offset = part("offset", 0.0)?;
    let scale = part("scale", 1.0)?;
    Ok(Some((raw + offset) * scale))
}

fn read_hwmon(
    reader: &dyn Reader,
    device: &Device,
    files: &[String],
    quirk: Option<&Quirk>,
    out: &mut Reading,
) {
    let Some(re) = HWMON_CHANNEL.as_ref() else {
        return;
    };
    let mut names: Vec<&String> = files.iter().filter(|f| re.is_match(f)).collect();
    names.sort();
    for f in names {
        let Some(c) = re.captures(f) else { continue };
        let Some(q) = quantity_of(&c[1]) else {
            continue;
        };
        let stem = format!("{}{}", &c[1], &c[2]);
        let path = device.dir.join(f);
        if &c[3] == "label" {
            if let Ok(Some(l)) = attribute(reader, &path)
                && !l.is_empty()
            {
                out.channel_labels.push((stem, l));
            }
            continue;
        }
        match number(reader, &path) {
            Ok(Some(v)) => {
                let v = processed(q, v, quirk, out);
                out.values.push((q, stem, v));
            }
            Ok(None) => out.errors.push((stem, "enoent")),
            Err(r) => out.errors.push((stem, r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_reasons() {
        for (errno, r) in [
            (5, "eio"),
            (110, "etimedout"),
            (16, "ebusy"),
            (61, "enodata"),
            (2, "enoent"),
        ] {
            assert_eq!(reason(&std::io::Error::from_raw_os_error(errno)), r);
        }
        assert!(is_bus_address("1-0040"));
        assert!(!is_bus_address("bme680"));
        assert!(natural("hwmon10") > natural("hwmon9"));
    }
}
