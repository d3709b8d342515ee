//! Compiled mappings and their application to a JSON document.

use std::collections::HashSet;

use regex::Regex;
use serde_json::Value;
use tidegauge_core::snapshot::{check_label_name, check_metric_name};
use tidegauge_core::{Labels, MetricFamily, MetricType};

use crate::config::{ConfigError, Convert, MappedType, MappingConfig};
use crate::path::{JsonPath, children};

/// Why a fetch or a mapping produced less than it should (`app_status_errors_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Connection, DNS or TLS failure.
    Connect,
    /// The fetch exceeded its timeout.
    Timeout,
    /// Status outside the accepted set.
    HttpStatus,
    /// Body is not JSON.
    InvalidJson,
    /// Body over the size cap.
    BodyTooLarge,
    /// A redirect to a URL the target may not lead to (outside `probe.allow`, or to another
    /// origin with the module's credentials), or too many.
    Redirect,
    /// Path absent or `null`.
    MissingKey,
    /// Value of a type the converter cannot use.
    TypeMismatch,
    /// String not among the declared states or map keys.
    UnknownState,
    /// Same name and label set twice; the first is kept.
    DuplicateSeries,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 10] = [
        Self::Connect,
        Self::Timeout,
        Self::HttpStatus,
        Self::InvalidJson,
        Self::BodyTooLarge,
        Self::Redirect,
        Self::MissingKey,
        Self::TypeMismatch,
        Self::UnknownState,
        Self::DuplicateSeries,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::HttpStatus => "http_status",
            Self::InvalidJson => "invalid_json",
            Self::BodyTooLarge => "body_too_large",
            Self::Redirect => "redirect",
            Self::MissingKey => "missing_key",
            Self::TypeMismatch => "type_mismatch",
            Self::UnknownState => "unknown_state",
            Self::DuplicateSeries => "duplicate_series",
        }
    }
}

#[derive(Debug, Clone)]
enum LabelSource {
    Static(String),
    Path(JsonPath),
}

#[derive(Debug, Clone)]
enum Conv {
    Number,
    Timestamp {
        millis: bool,
    },
    Map {
        table: Vec<(String, f64)>,
        default: Option<f64>,
    },
    States {
        states: Vec<String>,
        label: String,
    },
    Regex {
        re: Regex,
        scale: f64,
    },
    Scale(f64),
}

/// A validated mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    name: String,
    help: String,
    kind: MetricType,
    path: JsonPath,
    labels: Vec<(String, LabelSource)>,
    each: Option<JsonPath>,
    key_label: Option<String>,
    conv: Conv,
}

impl Mapping {
    /// Validates a mapping; `at` names it in errors.
    pub fn compile(c: &MappingConfig, at: &str) -> Result<Self, ConfigError> {
        let err = |m: String| ConfigError(format!("{at} ({}): {m}", c.name));
        check_metric_name(&c.name).map_err(|e| err(e.to_string()))?;
        if c.kind == MappedType::Counter && c.name.ends_with("_total") {
            return Err(err(
                "counter names are written without `_total`; tidegauge appends it".into(),
            ));
        }
        let path = JsonPath::parse(&c.path).map_err(|e| err(e.to_string()))?;
        let each = c
            .each
            .as_deref()
            .map(JsonPath::parse)
            .transpose()
            .map_err(|e| err(e.to_string()))?;
        if c.key_label.is_some() && each.is_none() {
            return Err(err("key_label needs `each`".into()));
        }
        let mut labels = Vec::new();
        let mut names = HashSet::new();
        for name in c.key_label.iter().chain(c.labels.keys()) {
            check_label_name(name).map_err(|e| err(e.to_string()))?;
            if !names.insert(name.clone()) {
                return Err(err(format!("label {name:?} given twice")));
            }
        }
        for (k, v) in &c.labels {
            let src = if v.starts_with('$') {
                LabelSource::Path(JsonPath::parse(v).map_err(|e| err(format!("label {k}: {e}")))?)
            } else {
                LabelSource::Static(v.clone())
            };
            labels.push((k.clone(), src));
        }
        let conv = match &c.convert {
            Convert::Number => Conv::Number,
            Convert::Timestamp { millis } => Conv::Timestamp { millis: *millis },
            Convert::Map { table, default } => Conv::Map {
                table: table.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                default: *default,
            },
            Convert::States { states, label } => {
                let label = label.clone().unwrap_or_else(|| c.name.clone());
                check_label_name(&label).map_err(|e| err(format!("state label: {e}")))?;
                if names.contains(&label) {
                    return Err(err(format!("state label {label:?} is also a series label")));
                }
                if c.kind == MappedType::Counter {
                    return Err(err(
                        "a states converter makes a state set; type must not be counter".into(),
                    ));
                }
                Conv::States {
                    states: states.clone(),
                    label,
                }
            }
            Convert::Regex { pattern, scale } => {
                let re = Regex::new(pattern).map_err(|e| err(format!("regex: {e}")))?;
                if re.captures_len() < 2 {
                    return Err(err("regex needs a capture group holding the number".into()));
                }
                Conv::Regex { re, scale: *scale }
            }
            Convert::Scale(f) => Conv::Scale(*f),
        };
        let kind = match (&conv, c.kind) {
            (Conv::States { .. }, _) => MetricType::StateSet,
            (_, MappedType::Gauge) => MetricType::Gauge,
            (_, MappedType::Counter) => MetricType::Counter,
            (_, MappedType::Untyped) => MetricType::Untyped,
        };
        Ok(Self {
            name: c.name.clone(),
            help: c.help.clone().unwrap_or_else(|| c.name.clone()),
            kind,
            path,
            labels,
            each,
            key_label: c.key_label.clone(),
            conv,
        })
    }

    /// Metric name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Family type.
    pub fn kind(&self) -> MetricType {
        self.kind
    }

    /// The label names this mapping writes (besides a target's own labels).
    pub fn label_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.key_label.iter().map(String::as_str).collect();
        names.extend(self.labels.iter().map(|(k, _)| k.as_str()));
        if let Conv::States { label, .. } = &self.conv {
            names.push(label);
        }
        names
    }
}

/// What a document gave under a module's mappings.
#[derive(Debug, Clone, Default)]
pub struct Mapped {
    /// Families, in mapping order (empty ones included; the snapshot drops them).
    pub families: Vec<MetricFamily>,
    /// Errors met, one entry each.
    pub errors: Vec<Reason>,
}

enum Converted {
    Number(f64),
    State(Option<String>),
}

/// Applies mappings to a document; `extra` labels (the target's) lead every series.
pub fn apply(mappings: &[Mapping], doc: &Value, extra: &[(String, String)]) -> Mapped {
    let mut out = Mapped::default();
    for m in mappings {
        let mut family = MetricFamily::new(m.name.clone(), m.help.clone(), m.kind);
        let elements: Vec<(Option<String>, &Value)> = match &m.each {
            None => vec![(None, doc)],
            Some(each) if each.has_wildcard() => each.select(doc),
            Some(each) => match each.get(doc) {
                None | Some(Value::Null) => {
                    out.errors.push(Reason::MissingKey);
                    vec![]
                }
                Some(v @ (Value::Object(_) | Value::Array(_))) => children(v),
                Some(_) => {
                    out.errors.push(Reason::TypeMismatch);
                    vec![]
                }
            },
        };
        let mut seen: HashSet<Labels> = HashSet::new();
        'elements: for (key, elem) in elements {
            let mut labels: Labels = extra.to_vec();
            if let (Some(kl), Some(key)) = (&m.key_label, key) {
                labels.push((kl.clone(), key));
            }
            for (name, src) in &m.labels {
                let value = match src {
                    LabelSource::Static(s) => s.clone(),
                    LabelSource::Path(p) => match p.get(elem) {
                        None | Some(Value::Null) => {
                            out.errors.push(Reason::MissingKey);
                            continue 'elements;
                        }
                        Some(Value::String(s)) => s.clone(),
                        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                        Some(_) => {
                            out.errors.push(Reason::TypeMismatch);
                            continue 'elements;
                        }
                    },
                };
                labels.push((name.clone(), value));
            }
            let converted = match m.path.get(elem) {
                None | Some(Value::Null) => Err(Reason::MissingKey),
                Some(v) => convert(&m.conv, v),
            };
            let converted = match converted {
                Ok(c) => c,
                Err(reason) => {
                    out.errors.push(reason);
                    // An unknown state still yields its all-zero series.
                    if reason == Reason::UnknownState
                        && let Conv::States { .. } = m.conv
                    {
                        Converted::State(None)
                    } else {
                        continue;
                    }
                }
            };
            if !seen.insert(labels.clone()) {
                out.errors.push(Reason::DuplicateSeries);
                continue;
            }
            match (converted, &m.conv) {
                (Converted::Number(v), _) => {
                    family.push(labels, v);
                }
                (Converted::State(current), Conv::States { states, label }) => {
                    family.push_states(&labels, label, states, current.as_deref());
                }
                (Converted::State(_), _) => {}
            }
        }
        out.families.push(family);
    }
    out
}

fn number(v: &Value) -> Result<f64, Reason> {
    match v {
        Value::Number(n) => n.as_f64().ok_or(Reason::TypeMismatch),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| Reason::TypeMismatch),
        _ => Err(Reason::TypeMismatch),
    }
}

fn convert(conv: &Conv, v: &Value) -> Result<Converted, Reason> {
    let n = match conv {
        Conv::Number => number(v)?,
        Conv::Scale(f) => number(v)? * f,
        Conv::Timestamp { millis } => match v {
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(n) => epoch(n, *millis),
                Err(_) => parse_datetime(s).ok_or(Reason::TypeMismatch)?,
            },
            Value::Number(n) => epoch(n.as_f64().ok_or(Reason::TypeMismatch)?, *millis),
            _ => return Err(Reason::TypeMismatch),
        },
        Conv::Map { table, default } => {
            let Value::String(s) = v else {
                return Err(Reason::TypeMismatch);
            };
            match table.iter().find(|(k, _)| k == s) {
                Some((_, n)) => *n,
                None => default.ok_or(Reason::UnknownState)?,
            }
        }
        Conv::States { states, .. } => {
            let Value::String(s) = v else {
                return Err(Reason::TypeMismatch);
            };
            if states.iter().any(|st| st == s) {
                return Ok(Converted::State(Some(s.clone())));
            }
            return Err(Reason::UnknownState);
        }
        Conv::Regex { re, scale } => match v {
            Value::String(s) => {
                let caps = re.captures(s).ok_or(Reason::TypeMismatch)?;
                let m = caps.get(1).ok_or(Reason::TypeMismatch)?;
                m.as_str()
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| Reason::TypeMismatch)?
                    * scale
            }
            Value::Number(_) => number(v)? * scale,
            _ => return Err(Reason::TypeMismatch),
        },
    };
    Ok(Converted::Number(n))
}

fn epoch(n: f64, millis: bool) -> f64 {
    if millis { n / 1000.0 } else { n }
}

/// RFC 3339, or ISO-8601 without an offset (taken as UTC), or a bare date.
fn parse_datetime(s: &str) -> Option<f64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9);
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            let t = t.and_utc();
            return Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates() {
        assert_eq!(parse_datetime("2024-05-01T12:00:00Z"), Some(1714564800.0));
        assert_eq!(
            parse_datetime("2024-05-01T14:00:00+02:00"),
            Some(1714564800.0)
        );
        assert_eq!(parse_datetime("2024-05-01T12:00:00"), Some(1714564800.0));
        assert_eq!(parse_datetime("2024-05-01"), Some(1714521600.0));
        assert_eq!(parse_datetime("yesterday"), None);
        let c = Conv::Timestamp { millis: false };
        assert!(
            matches!(convert(&c, &json!(1.757568506e+09)), Ok(Converted::Number(n)) if n == 1757568506.0)
        );
        let c = Conv::Timestamp { millis: true };
        assert!(
            matches!(convert(&c, &json!(1714564800123u64)), Ok(Converted::Number(n)) if (n - 1714564800.123).abs() < 1e-6)
        );
    }

    #[test]
    fn numbers() {
        assert!(
            matches!(convert(&Conv::Number, &json!("1e3")), Ok(Converted::Number(n)) if n == 1000.0)
        );
        assert!(
            matches!(convert(&Conv::Number, &json!(true)), Ok(Converted::Number(n)) if n == 1.0)
        );
        assert!(matches!(
            convert(&Conv::Number, &json!("ten")),
            Err(Reason::TypeMismatch)
        ));
        assert!(matches!(
            convert(&Conv::Number, &json!({"a": 1})),
            Err(Reason::TypeMismatch)
        ));
        let re = Conv::Regex {
            re: Regex::new(r"^([0-9.]+)\s*G$").unwrap(),
            scale: 1e9,
        };
        assert!(matches!(convert(&re, &json!("150G")), Ok(Converted::Number(n)) if n == 150e9));
        assert!(matches!(
            convert(&re, &json!("150M")),
            Err(Reason::TypeMismatch)
        ));
        assert!(
            matches!(convert(&Conv::Scale(0.001), &json!(250)), Ok(Converted::Number(n)) if n == 0.25)
        );
    }
}
