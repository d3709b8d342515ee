//! MQTT: readings that devices publish, held in memory until they expire (spec §4, §5.5–5.6).
//! The subscription runs in [`run`], off the scrape path: a broker that is down never delays a
//! scrape, which only reads the table.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer};
use serde_json::Value as Json;
use tidegauge_core::{Labels, MetricFamily, MetricType, duration, lock};
use tokio::time::Instant;

use crate::config::ConfigError;
use crate::units::{Quantity, Unit};

/// `[collectors.sensor-bridge.mqtt]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    pub broker: String,
    /// MQTT client id.
    #[serde(default = "client_id")]
    pub client_id: String,
    /// User name, when the broker wants one.
    pub username: Option<String>,
    /// File holding the password (a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// PEM file of the CAs that sign the broker's certificate (`mqtts://`; default: the
    /// system's roots).
    pub ca_file: Option<PathBuf>,
    /// MQTT keep-alive.
    #[serde(default = "keep_alive", deserialize_with = "duration::deserialize")]
    pub keep_alive: Duration,
    /// Most series held over all subscriptions; more are dropped and counted `rejected`.
    #[serde(default = "max_series")]
    pub max_series: usize,
    /// Largest message accepted, in bytes.
    #[serde(default = "max_payload")]
    pub max_payload: usize,
    /// Topic filters and how their messages become series.
    pub subscriptions: Vec<Subscription>,
}

/// Unique per host and process: two bridges left at the default never take each other's
/// session.
fn client_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    capped(&format!("tidegauge-{host}-{}", std::process::id()))
}
fn keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn max_series() -> usize {
    2000
}
fn max_payload() -> usize {
    256 * 1024
}
fn expire_default() -> Option<Duration> {
    Some(Duration::from_secs(300))
}

/// A duration (as core reads them), or `"never"`.
fn expiry<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Duration(#[serde(deserialize_with = "duration::deserialize")] Duration),
        Word(String),
    }
    match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a duration such as \"5m\", or \"never\""))?
    {
        Raw::Duration(d) => Ok(Some(d)),
        Raw::Word(w) if w.trim().eq_ignore_ascii_case("never") => Ok(None),
        Raw::Word(w) => Err(serde::de::Error::custom(format!(
            "{w:?}: expected a duration such as \"5m\", or \"never\""
        ))),
    }
}

/// One `[[collectors.sensor-bridge.mqtt.subscriptions]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Topic filter (`+` and `#` allowed); also the `subscription` label.
    pub topic: String,
    /// A regex with a group named `device`, applied to the topic (default: the last level).
    pub device_regex: Option<String>,
    /// A JSON field (dotted path) holding the device id, instead of the topic.
    pub device_field: Option<String>,
    /// Series not updated for this long are dropped; `"never"` keeps them.
    #[serde(default = "expire_default", deserialize_with = "expiry")]
    pub expire_after: Option<Duration>,
    /// JSON field (dotted path) → what it becomes.
    #[serde(default)]
    pub fields: BTreeMap<String, Field>,
    /// Label name → JSON field (dotted path), for custom metrics.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// String values as numbers (default: ON, TRUE, ONLINE = 1; OFF, FALSE, OFFLINE = 0; any
    /// case).
    pub values: Option<BTreeMap<String, f64>>,
    /// Unmapped numeric fields as `sensor_mqtt_value{subscription,device,field}`.
    #[serde(default)]
    pub export_unmapped: bool,
}

/// What a JSON field becomes: a canonical quantity (`quantity`, `unit`, optional `chip`) or a
/// metric of its own (`metric`, optional `type` and `help`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Canonical quantity.
    pub quantity: Option<Quantity>,
    /// The unit the device publishes the quantity in.
    pub unit: Option<Unit>,
    /// `chip` label of the canonical series.
    pub chip: Option<String>,
    /// Name of a metric of its own.
    pub metric: Option<String>,
    /// `gauge` (default) or `counter`.
    #[serde(rename = "type")]
    pub kind: Option<CustomKind>,
    /// Help text of that metric.
    pub help: Option<String>,
}

/// Type of a custom MQTT metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CustomKind {
    /// Any value.
    Gauge,
    /// A monotonic total (the name gets `_total`).
    Counter,
}

/// Where a mapped field goes.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Canonical {
        quantity: Quantity,
        unit: Unit,
        chip: String,
    },
    Custom {
        name: String,
    },
}

#[derive(Debug)]
struct CompiledSubscription {
    filter: String,
    device_regex: Option<Regex>,
    device_field: Option<String>,
    expire_after: Option<Duration>,
    fields: Vec<(String, Target)>,
    labels: Vec<(String, String)>,
    values: BTreeMap<String, f64>,
    export_unmapped: bool,
}

/// The validated MQTT settings.
#[derive(Debug)]
pub struct Mqtt {
    /// The settings as written (a reload compares them).
    pub config: MqttConfig,
    subscriptions: Vec<CompiledSubscription>,
    /// Custom metrics by name: type and help.
    custom: BTreeMap<String, (CustomKind, String)>,
    host: String,
    port: u16,
    tls: bool,
    password: Option<String>,
    /// The readings, shared with the next instance on a reload.
    pub table: Arc<Table>,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && !s.starts_with("__")
}

/// Whether `filter` is a valid MQTT topic filter.
fn valid_filter(filter: &str) -> bool {
    !filter.is_empty()
        && filter.split('/').enumerate().all(|(i, level)| {
            let last = i == filter.split('/').count() - 1;
            match level {
                "#" => last,
                "+" => true,
                l => !l.contains(['+', '#']),
            }
        })
}

/// Whether `topic` matches `filter` (MQTT 3.1.1 §4.7).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut t = topic.split('/');
    let mut f = filter.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Mqtt {
    /// Checks the settings (the error names the key) and reads the password.
    pub fn new(
        config: MqttConfig,
        env: &tidegauge_core::Environment,
        own: &[&str],
        table: Option<Arc<Table>>,
    ) -> Result<Self, ConfigError> {
        let err = |key: &str, msg: String| ConfigError(format!("mqtt.{key}: {msg}"));
        let (tls, rest) = if let Some(r) = config.broker.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = config.broker.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(err(
                "broker",
                format!(
                    "{:?}: expected mqtt://host[:port] or mqtts://host[:port]",
                    config.broker
                ),
            ));
        };
        let rest = rest.trim_end_matches('/');
        let default_port = if tls { 8883 } else { 1883 };
        let bad = || {
            err(
                "broker",
                format!("{:?}: no usable host and port", config.broker),
            )
        };
        let port_of = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
        let (host, port, bracketed) = match rest.strip_prefix('[') {
            Some(after) => {
                let (h, tail) = after.split_once(']').ok_or_else(bad)?;
                let port = match tail {
                    "" => default_port,
                    t => port_of(t.strip_prefix(':').ok_or_else(bad)?)?,
                };
                (h, port, true)
            }
            None => match rest.split_once(':') {
                Some((h, p)) => (h, port_of(p)?, false),
                None => (rest, default_port, false),
            },
        };
        if host.is_empty()
            || host.contains(['/', '@', '?', '#', '[', ']'])
            || (host.contains(':') && !bracketed)
            || host.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        let host = host.to_owned();
        let password = match (&config.password_file, &config.password_env) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "password_file",
                    "give password_file or password_env, not both".into(),
                ));
            }
            (Some(f), None) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| err("password_file", format!("{}: {e}", f.display())))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            (None, Some(v)) => Some(env.get(v).ok_or_else(|| {
                err(
                    "password_env",
                    format!("the environment variable {v} is not set"),
                )
            })?),
            (None, None) => None,
        };
        if password.is_some() && config.username.is_none() {
            return Err(err("username", "a password needs a username".into()));
        }
        if config.ca_file.is_some() && !tls {
            return Err(err("ca_file", "only used with mqtts://".into()));
        }
        if config.max_series == 0 {
            return Err(err("max_series", "must be more than zero".into()));
        }
        if config.max_payload == 0 {
            return Err(err("max_payload", "must be more than zero".into()));
        }
        if config.subscriptions.is_empty() {
            return Err(err("subscriptions", "give at least one topic".into()));
        }
        let mut custom: BTreeMap<String, (CustomKind, String)> = BTreeMap::new();
        let mut subscriptions = Vec::new();
        for (i, s) in config.subscriptions.iter().enumerate() {
            let at = |key: &str, msg: String| err(&format!("subscriptions[{i}].{key}"), msg);
            if !valid_filter(&s.topic) || s.topic.chars().any(char::is_control) {
                return Err(at("topic", format!("{:?} is not a topic filter", s.topic)));
            }
            let device_regex = match &s.device_regex {
                None => None,
                Some(r) => {
                    let re = Regex::new(r).map_err(|e| at("device_regex", e.to_string()))?;
                    if !re.capture_names().any(|n| n == Some("device")) {
                        return Err(at(
                            "device_regex",
                            format!("{r:?} has no group named device"),
                        ));
                    }
                    Some(re)
                }
            };
            if s.expire_after.is_some_and(|d| d.is_zero()) {
                return Err(at(
                    "expire_after",
                    "0 would expire every reading at once; give a duration or \"never\"".into(),
                ));
            }
            let mut fields = Vec::new();
            for (path, f) in &s.fields {
                let at = |msg: String| at(&format!("fields.{path}"), msg);
                let target = match (f.quantity, &f.metric) {
                    (Some(q), None) => {
                        let unit = f
                            .unit
                            .ok_or_else(|| at("a quantity needs its unit".into()))?;
                        if unit.quantity() != q {
                            return Err(at(format!("{unit:?} does not measure {}", q.as_str())));
                        }
                        if f.kind.is_some() || f.help.is_some() {
                            return Err(at("type and help belong to a metric of its own".into()));
                        }
                        Target::Canonical {
                            quantity: q,
                            unit,
                            chip: f.chip.clone().unwrap_or_default(),
                        }
                    }
                    (None, Some(name)) => {
                        let kind = f.kind.unwrap_or(CustomKind::Gauge);
                        let exposed = match kind {
                            CustomKind::Gauge => name.clone(),
                            CustomKind::Counter => format!("{name}_total"),
                        };
                        if !is_metric_name(name)
                            || own.contains(&exposed.as_str())
                            || own.contains(&name.as_str())
                            || name.starts_with("sensor_mqtt_")
                            || name.starts_with("tidegauge_")
                        {
                            return Err(at(format!(
                                "metric {name:?} is not a valid name or is sensor-bridge's own"
                            )));
                        }
                        if f.unit.is_some() || f.chip.is_some() {
                            return Err(at("unit and chip belong to a quantity".into()));
                        }
                        let help = f
                            .help
                            .clone()
                            .unwrap_or_else(|| format!("MQTT field {path} of {}.", s.topic));
                        match custom.get(name) {
                            Some((k, _)) if *k != kind => {
                                return Err(at(format!(
                                    "metric {name:?} is declared with two types"
                                )));
                            }
                            Some(_) => {}
                            None => {
                                custom.insert(name.clone(), (kind, help));
                            }
                        }
                        Target::Custom { name: name.clone() }
                    }
                    _ => {
                        return Err(at("give either quantity (with unit) or metric".into()));
                    }
                };
                fields.push((path.clone(), target));
            }
            for name in s.labels.keys() {
                if !is_label_name(name) {
                    return Err(at(
                        &format!("labels.{name}"),
                        "not a valid label name".into(),
                    ));
                }
                if name == "device" {
                    return Err(at(
                        &format!("labels.{name}"),
                        "device is set already (use device_field)".into(),
                    ));
                }
            }
            if fields.is_empty() && !s.export_unmapped {
                return Err(at(
                    "fields",
                    "map at least one field, or set export_unmapped".into(),
                ));
            }
            let values = s.values.clone().unwrap_or_else(|| {
                [
                    ("ON", 1.0),
                    ("TRUE", 1.0),
                    ("ONLINE", 1.0),
                    ("OFF", 0.0),
                    ("FALSE", 0.0),
                    ("OFFLINE", 0.0),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect()
            });
            subscriptions.push(CompiledSubscription {
                filter: s.topic.clone(),
                device_regex,
                device_field: s.device_field.clone(),
                expire_after: s.expire_after,
                fields,
                labels: s.labels.clone().into_iter().collect(),
                values,
                export_unmapped: s.export_unmapped,
            });
        }
        // Custom metrics must not clash as exposed: a counter `x` is `x_total` and `x_created`.
        let mut exposed: BTreeMap<String, &str> = BTreeMap::new();
        for (name, (kind, _)) in &custom {
            let names = match kind {
                CustomKind::Gauge => vec![name.clone()],
                CustomKind::Counter => {
                    vec![
                        name.clone(),
                        format!("{name}_total"),
                        format!("{name}_created"),
                    ]
                }
            };
            for n in names {
                if let Some(other) = exposed.insert(n.clone(), name) {
                    return Err(err(
                        "subscriptions",
                        format!("metrics {other:?} and {name:?} both expose {n:?}"),
                    ));
                }
            }
        }
        Ok(Self {
            config,
            subscriptions,
            custom,
            host,
            port,
            tls,
            password,
            table: table.unwrap_or_default(),
        })
    }

    fn options(&self) -> Result<rumqttc::MqttOptions, String> {
        let mut o = rumqttc::MqttOptions::new(&self.config.client_id, &self.host, self.port);
        o.set_keep_alive(self.config.keep_alive.max(Duration::from_secs(1)));
        // Messages up to 16 MiB are read (and counted when over max_payload); a larger one ends
        // the connection, since MQTT 3.1.1 cannot refuse a single message.
        o.set_max_packet_size(
            (self.config.max_payload + 64 * 1024).max(16 * 1024 * 1024),
            64 * 1024,
        );
        if let Some(user) = &self.config.username {
            o.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        if self.tls {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(self.tls_config()?)),
            ));
        }
        Ok(o)
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match &self.config.ca_file {
            Some(f) => {
                for c in CertificateDer::pem_file_iter(f)
                    .map_err(|e| format!("mqtt.ca_file {}: {e}", f.display()))?
                {
                    let c = c.map_err(|e| format!("mqtt.ca_file {}: {e}", f.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("mqtt.ca_file {}: {e}", f.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "mqtt.ca_file {}: no PEM certificate in it",
                        f.display()
                    ));
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    }

    /// Whether `name` is one of the metrics the MQTT mappings declare.
    pub fn owns(&self, name: &str) -> bool {
        self.custom.keys().any(|c| {
            c == name
                || (self
                    .custom
                    .get(c)
                    .is_some_and(|(k, _)| *k == CustomKind::Counter)
                    && name.strip_suffix("_total") == Some(c.as_str()))
        })
    }

    /// Checks what [`run`] would need before connecting (the CA file).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.options().map(drop).map_err(ConfigError)
    }

    /// Reads one message; the status it is counted under.
    pub fn ingest(&self, topic: &str, payload: &[u8], now: Instant, wall: f64) -> &'static str {
        let Some((i, sub)) = self
            .subscriptions
            .iter()
            .enumerate()
            .find(|(_, s)| matches(topic, &s.filter))
        else {
            return "unmapped";
        };
        let status = self.read(sub, i, topic, payload, now, wall);
        *lock(&self.table.received)
            .entry((sub.filter.clone(), status))
            .or_default() += 1;
        status
    }

    fn read(
        &self,
        sub: &CompiledSubscription,
        index: usize,
        topic: &str,
        payload: &[u8],
        now: Instant,
        wall: f64,
    ) -> &'static str {
        if payload.len() > self.config.max_payload {
            return "decode_error";
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return "decode_error";
        };
        let doc = match serde_json::from_str::<Json>(text) {
            Ok(d) => d,
            // A bare word (`ON`) or number that is not JSON: a single value.
            Err(_) => {
                let t = text.trim();
                if t.parse::<f64>().is_ok_and(f64::is_finite)
                    || lookup_value(&sub.values, t).is_some()
                {
                    Json::String(t.to_owned())
                } else {
                    return "decode_error";
                }
            }
        };
        let topic_device = topic_device(sub, topic);
        // The elements of the message, each with the key that tells it apart.
        // No more elements than the table could hold: the rest are refused unread.
        let room = self.config.max_series;
        let mut elements: Vec<(Option<String>, &Json)> = match &doc {
            Json::Array(items) => items
                .iter()
                .take(room + 1)
                .enumerate()
                .map(|(i, v)| (Some(i.to_string()), v))
                .collect(),
            Json::Object(map) if !map.is_empty() && map.values().all(Json::is_object) => map
                .iter()
                .take(room + 1)
                .map(|(k, v)| (Some(k.clone()), v))
                .collect(),
            v => vec![(None, v)],
        };
        let too_many = elements.len() > room;
        elements.truncate(room);
        let mut updates: Vec<(Key, f64)> = Vec::new();
        for (key, element) in &elements {
            let wrapped;
            let element: &Json = if element.is_object() {
                element
            } else {
                wrapped = serde_json::json!({ "value": element });
                &wrapped
            };
            let device = sub
                .device_field
                .as_deref()
                .and_then(|f| path(element, f).or_else(|| path(&doc, f)))
                .and_then(label_text)
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| match key {
                    Some(k) => format!("{topic_device}/{}", capped(k)),
                    None => topic_device.clone(),
                });
            let device = if device.is_empty() {
                "unknown".to_owned()
            } else {
                device
            };
            let mut mapped = std::collections::HashSet::new();
            for (field, target) in &sub.fields {
                let Some(v) = path(element, field).and_then(|v| number(&sub.values, v)) else {
                    continue;
                };
                mapped.insert(field.split('.').next().unwrap_or(field));
                let key = match target {
                    Target::Canonical {
                        quantity,
                        unit,
                        chip,
                    } => {
                        updates.push((
                            Key {
                                family: Family::Canonical(*quantity),
                                labels: tidegauge_core::labels([
                                    ("source", "mqtt"),
                                    ("device", &device),
                                    ("chip", chip),
                                    ("sensor", field),
                                ]),
                                subscription: index,
                                device: device.clone(),
                            },
                            unit.to_base(v),
                        ));
                        continue;
                    }
                    Target::Custom { name } => {
                        let mut labels: Labels = vec![("device".to_owned(), device.clone())];
                        for (label, p) in &sub.labels {
                            let value = path(element, p)
                                .or_else(|| path(&doc, p))
                                .and_then(label_text)
                                .unwrap_or_default();
                            labels.push((label.clone(), value));
                        }
                        Key {
                            family: Family::Custom(name.clone()),
                            labels,
                            subscription: index,
                            device: device.clone(),
                        }
                    }
                };
                updates.push((key, v));
            }
            if sub.export_unmapped
                && let Json::Object(map) = element
            {
                for (field, v) in map {
                    let identifies = sub.device_field.as_deref() == Some(field.as_str())
                        || sub.labels.iter().any(|(_, p)| p == field);
                    if mapped.contains(field.as_str()) || identifies {
                        continue;
                    }
                    let field = &capped(field);
                    let Some(v) = number(&sub.values, v) else {
                        continue;
                    };
                    updates.push((
                        Key {
                            family: Family::Unmapped,
                            labels: tidegauge_core::labels([
                                ("subscription", &sub.filter),
                                ("device", &device),
                                ("field", field),
                            ]),
                            subscription: index,
                            device: device.clone(),
                        },
                        v,
                    ));
                }
            }
        }
        if updates.is_empty() {
            return if too_many { "rejected" } else { "unmapped" };
        }
        let mut series = lock(&self.table.series);
        let mut rejected = too_many;
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in updates {
            let held = series.len();
            match series.get_mut(&key) {
                Some(e) => {
                    e.value = value;
                    e.updated = now;
                    e.expire_after = sub.expire_after;
                }
                None if held >= self.config.max_series => {
                    rejected = true;
                    continue;
                }
                None => {
                    seen.push(key.device.clone());
                    series.insert(
                        key,
                        Entry {
                            value,
                            updated: now,
                            expire_after: sub.expire_after,
                        },
                    );
                    continue;
                }
            }
            seen.push(key.device.clone());
        }
        drop(series);
        let mut devices = lock(&self.table.devices);
        for d in seen {
            devices.insert(d, wall);
        }
        drop(devices);
        if rejected { "rejected" } else { "success" }
    }

    /// Drops the series past their subscription's `expire_after`, and devices without series.
    pub fn expire(&self, now: Instant) {
        let mut series = lock(&self.table.series);
        series.retain(|_, e| {
            e.expire_after
                .is_none_or(|after| now.saturating_duration_since(e.updated) < after)
        });
        let live: std::collections::HashSet<&String> = series.keys().map(|k| &k.device).collect();
        lock(&self.table.devices).retain(|d, _| live.contains(d));
    }

    /// The MQTT series and self-metrics: canonical series into `canonical`, the rest returned.
    pub fn families(&self, canonical: &mut dyn FnMut(Quantity, Labels, f64)) -> Vec<MetricFamily> {
        let mut custom: BTreeMap<&str, MetricFamily> = self
            .custom
            .iter()
            .map(|(name, (kind, help))| {
                let kind = match kind {
                    CustomKind::Gauge => MetricType::Gauge,
                    CustomKind::Counter => MetricType::Counter,
                };
                (
                    name.as_str(),
                    MetricFamily::new(name.clone(), help.clone(), kind),
                )
            })
            .collect();
        let mut unmapped = MetricFamily::gauge(
            "sensor_mqtt_value",
            "Numeric fields of MQTT messages that no mapping names (export_unmapped).",
        );
        let series = lock(&self.table.series);
        let mut rows: Vec<(&Key, f64)> = series.iter().map(|(k, e)| (k, e.value)).collect();
        rows.sort_by(|a, b| a.0.labels.cmp(&b.0.labels));
        for (key, value) in rows {
            match &key.family {
                Family::Canonical(q) => canonical(*q, key.labels.clone(), value),
                Family::Custom(name) => {
                    if let Some(f) = custom.get_mut(name.as_str()) {
                        f.push(key.labels.clone(), value);
                    }
                }
                Family::Unmapped => {
                    unmapped.push(key.labels.clone(), value);
                }
            }
        }
        let held = series.len();
        drop(series);
        let mut out: Vec<MetricFamily> = custom.into_values().collect();
        out.push(unmapped);
        out.push(
            MetricFamily::gauge(
                "sensor_mqtt_connected",
                "1 while connected to the MQTT broker.",
            )
            .with(
                vec![],
                if self
                    .table
                    .connected
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    1.0
                } else {
                    0.0
                },
            ),
        );
        let mut received = MetricFamily::counter(
            "sensor_mqtt_received_messages",
            "MQTT messages received, by subscription and what became of them.",
        );
        for ((sub, status), n) in lock(&self.table.received).iter() {
            received.push(
                tidegauge_core::labels([("subscription", sub), ("status", status)]),
                *n as f64,
            );
        }
        out.push(received);
        out.push(
            MetricFamily::gauge("sensor_mqtt_series", "MQTT series currently held.")
                .with(vec![], held as f64),
        );
        let mut seen = MetricFamily::gauge(
            "sensor_mqtt_last_seen_timestamp_seconds",
            "When a device's last accepted message arrived, in seconds since the epoch.",
        );
        seen.unit = Some("seconds".into());
        for (d, t) in lock(&self.table.devices).iter() {
            seen.push(tidegauge_core::labels([("device", d)]), *t);
        }
        out.push(seen);
        out
    }
}

/// The device of a topic: the `device` group of the subscription's regex, else the last level.
fn topic_device(sub: &CompiledSubscription, topic: &str) -> String {
    let device = sub
        .device_regex
        .as_ref()
        .and_then(|re| re.captures(topic))
        .and_then(|c| c.name("device"))
        .map(|m| m.as_str())
        .unwrap_or_else(|| topic.rsplit('/').next().unwrap_or(topic));
    capped(device)
}

/// The value at a dotted path (`computed.heat_index`, `readings.0.t`).
fn path<'a>(doc: &'a Json, p: &str) -> Option<&'a Json> {
    p.split('.').try_fold(doc, |v, seg| match v {
        Json::Object(m) => m.get(seg),
        Json::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn lookup_value(values: &BTreeMap<String, f64>, s: &str) -> Option<f64> {
    values
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(s))
        .map(|(_, v)| *v)
}

/// A JSON value as a number: numbers as they are, booleans 1/0, strings by the value map or
/// parsed.
fn number(values: &BTreeMap<String, f64>, v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Json::String(s) => lookup_value(values, s.trim()).or_else(|| s.trim().parse().ok()),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite())
}

/// A JSON scalar as label text (at most 128 bytes, so a payload cannot grow labels without
/// bound).
fn label_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(capped(s)),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Longest label value taken from a message (a topic level, a JSON key or value).
const MAX_LABEL: usize = 128;

/// `s`, or when longer than [`MAX_LABEL`] its start and a hash of the whole, so that a device
/// cannot grow labels without bound and two long ids stay two series.
fn capped(s: &str) -> String {
    if s.len() <= MAX_LABEL {
        return s.to_owned();
    }
    use std::hash::BuildHasher;
    let hash = foldhash::fast::FixedState::with_seed(0).hash_one(s);
    let mut end = MAX_LABEL - 17;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~{hash:016x}", &s[..end])
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Family {
    Canonical(Quantity),
    Custom(String),
    Unmapped,
}

/// One held series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    family: Family,
    labels: Labels,
    subscription: usize,
    device: String,
}

#[derive(Debug)]
struct Entry {
    value: f64,
    updated: Instant,
    expire_after: Option<Duration>,
}

/// What the subscription has read: kept across reloads.
#[derive(Debug, Default)]
pub struct Table {
    series: Mutex<HashMap<Key, Entry>>,
    /// Device → when its last accepted message arrived (Unix seconds).
    devices: Mutex<BTreeMap<String, f64>>,
    received: Mutex<BTreeMap<(String, &'static str), u64>>,
    connected: std::sync::atomic::AtomicBool,
}

impl Mqtt {
    /// The broker and each device's last message, as the landing page shows them (`now` in
    /// Unix seconds).
    pub fn status(&self, now: f64) -> Vec<tidegauge_core::status::Section> {
        use tidegauge_core::status::{Cell, Health, Row, Section};
        let connected = self
            .table
            .connected
            .load(std::sync::atomic::Ordering::Relaxed);
        let mut broker = Section::new("MQTT broker", &["broker", "connection"]);
        broker.rows.push(Row::new(
            if connected {
                Health::Ok
            } else {
                Health::Failing
            },
            vec![
                Cell::Text(format!("{}:{}", self.host, self.port)),
                Cell::Text(
                    if connected {
                        "connected"
                    } else {
                        "disconnected"
                    }
                    .into(),
                ),
            ],
        ));
        let mut devices = Section::new("MQTT devices", &["device", "last message"]);
        for (device, at) in lock(&self.table.devices).iter() {
            let age = std::time::Duration::try_from_secs_f64(now - at).unwrap_or_default();
            devices.rows.push(Row::new(
                Health::Ok,
                vec![Cell::Text(device.clone()), Cell::Ago(Some(age))],
            ));
        }
        vec![broker, devices]
    }
}

/// Keeps a subscription to the broker until `shutdown`, reconnecting with backoff.
pub async fn run(
    mqtt: Arc<Mqtt>,
    clock: Arc<dyn tidegauge_core::Clock>,
    shutdown: tidegauge_core::CancellationToken,
) {
    let options = match mqtt.options() {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "MQTT is not started");
            return;
        }
    };
    let (client, mut events) = rumqttc::AsyncClient::new(options, 64);
    let mut backoff = Duration::from_secs(1);
    let mut reported = false;
    let mut pending = 0usize;
    let mut connected_at: Option<Instant> = None;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => {
                let _ = client.try_disconnect();
                mqtt.table.connected.store(false, std::sync::atomic::Ordering::Relaxed);
                return;
            }
            e = events.poll() => e,
        };
        match event {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                // Connected counts once every subscription is acknowledged: from then on no
                // message to a subscribed topic is missed.
                connected_at = Some(Instant::now());
                reported = false;
                pending = 0;
                for s in &mqtt.subscriptions {
                    match client.try_subscribe(s.filter.clone(), rumqttc::QoS::AtMostOnce) {
                        Ok(()) => pending += 1,
                        Err(e) => {
                            tracing::warn!(topic = %s.filter, error = %e, "MQTT subscribe failed");
                        }
                    }
                }
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                pending = pending.saturating_sub(1);
                if pending == 0 {
                    mqtt.table
                        .connected
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(broker = %mqtt.config.broker, "subscribed at the MQTT broker");
                }
            }
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                let wall = tidegauge_core::unix_seconds(clock.now());
                let status = mqtt.ingest(&p.topic, &p.payload, Instant::now(), wall);
                if status == "decode_error" {
                    tracing::debug!(topic = %p.topic, "MQTT payload not readable");
                }
            }
            Ok(_) => {}
            Err(e) => {
                mqtt.table
                    .connected
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                // Only a connection that lasted resets the backoff: one that the broker ends at
                // once (a message too large, a client id taken) must not become a tight loop.
                if connected_at
                    .take()
                    .is_some_and(|t| t.elapsed() >= Duration::from_secs(30))
                {
                    backoff = Duration::from_secs(1);
                }
                if !reported {
                    tracing::warn!(broker = %mqtt.config.broker, error = %e, "MQTT connection lost; reconnecting with backoff");
                    reported = true;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters() {
        assert!(matches("devices/home/livingroom", "devices/home/+"));
        assert!(matches("devices/home/livingroom", "devices/#"));
        assert!(matches("devices", "devices/#"));
        assert!(!matches("devices/home/a/b", "devices/home/+"));
        assert!(!matches("$SYS/x", "#"));
        assert!(valid_filter("a/+/#"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a/b+"));
    }
}
