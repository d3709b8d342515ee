//! ICOS metrics: the registry of pushed metrics, the rules of `create_metric` and
//! `unregister_metric`, and their exposition.

use crate::textformat::MAX_LABELS;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tidegauge_core::snapshot::{is_valid_label_name, is_valid_metric_name};
use tidegauge_core::{MetricFamily, MetricType, Sample, Snapshot, Value};

/// The four ICOS metric types (`metric_type` 1..4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// 1
    Counter,
    /// 2
    Gauge,
    /// 3
    Info,
    /// 4
    Enum,
}

impl Kind {
    /// The family type an ICOS metric of this kind is exposed as.
    pub fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Info => MetricType::Info,
            Kind::Enum => MetricType::StateSet,
        }
    }
}

impl Kind {
    /// From the wire number.
    pub fn from_number(n: i64) -> Option<Self> {
        match n {
            1 => Some(Self::Counter),
            2 => Some(Self::Gauge),
            3 => Some(Self::Info),
            4 => Some(Self::Enum),
            _ => None,
        }
    }

    /// Names a metric of this kind occupies.
    fn reserved(self, base: &str) -> Vec<String> {
        match self {
            Self::Counter => vec![
                base.to_owned(),
                format!("{base}_total"),
                format!("{base}_created"),
            ],
            Self::Info => vec![base.to_owned(), format!("{base}_info")],
            Self::Gauge | Self::Enum => vec![base.to_owned()],
        }
    }
}

/// A float as this release writes it (a number) or as release 0.1.0 wrote it (text, so that
/// NaN and infinities survived JSON).
fn number_or_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(f64),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(n),
        Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

/// One series' value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesValue {
    /// Counter total or gauge value.
    Number(#[serde(deserialize_with = "number_or_text")] f64),
    /// Index of the current Enum state.
    State(usize),
    /// Info values, aligned with the metric's info keys.
    Info(Vec<String>),
}

/// One series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Label values, aligned with the metric's label names.
    pub labels: Vec<String>,
    /// Value.
    pub value: SeriesValue,
    /// Creation time, Unix seconds.
    #[serde(deserialize_with = "number_or_text")]
    pub created: f64,
}

/// A registered metric with its series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Creation order.
    pub order: u64,
    /// Type.
    pub kind: Kind,
    /// Exposed base name (counters without `_total`).
    pub name: String,
    /// HELP text.
    pub help: String,
    /// Label names, sorted.
    pub label_names: Vec<String>,
    /// Enum states.
    #[serde(default)]
    pub states: Vec<String>,
    /// Info keys, sorted.
    #[serde(default)]
    pub info_keys: Vec<String>,
    /// Series in first-seen order.
    pub series: Vec<Series>,
}

/// A `create_metric` request after schema validation.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// Type.
    pub kind: Kind,
    /// Name as sent (untrimmed).
    pub name: String,
    /// HELP text, when given.
    pub info: Option<String>,
    /// The value.
    pub value: Json,
    /// Label values as strings.
    pub labels: BTreeMap<String, String>,
    /// Enum states.
    pub states: Vec<String>,
}

/// A rejected request: status 400 or 422, and the `detail`.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// 400 `{"detail": "<text>"}`.
    Bad(String),
    /// 422 `{"detail": [...]}`, FastAPI's shape.
    Schema(Vec<Json>),
}

fn bad<T>(msg: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection::Bad(msg.into()))
}

fn schema_error(kind: &str, field: &str, msg: &str, input: &Json) -> Json {
    serde_json::json!({"type": kind, "loc": ["body", field], "msg": msg, "input": input})
}

/// Label value text the way the original's client rendered it: `1` → `"1"`, `1.0` → `"1.0"`,
/// `true` → `"1"`.
fn label_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Bool(b) => Some(if *b { "1" } else { "0" }.to_owned()),
        Json::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Json::Number(n) => n.as_f64().map(python_float),
        _ => None,
    }
}

/// Python's `repr(float)` (what the original's `str(value)` wrote): the shortest digits,
/// fixed between 1e-4 and 1e16 (integral values keep a `.0`), else an exponent of at least two
/// digits with its sign (`1e+20`, `1e-07`, `1.5e+16`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let fixed = f.to_string();
        if fixed.contains('.') {
            fixed
        } else {
            format!("{fixed}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// Validates the body of `create_metric` against the schema (422 on failure).
pub fn parse_create(body: &Json) -> Result<CreateRequest, Rejection> {
    let Json::Object(obj) = body else {
        return Err(Rejection::Schema(vec![serde_json::json!({
            "type": "model_attributes_type", "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from", "input": body})]));
    };
    let mut errors = Vec::new();
    // Release 2.0.1 of the original names the field `type`; its README and the clients written
    // from it send `metric_type`. Both are read, `metric_type` first.
    let (type_field, type_value) = match obj.get("metric_type") {
        Some(v) => ("metric_type", Some(v)),
        None => ("type", obj.get("type")),
    };
    let kind = match type_value {
        None => {
            errors.push(schema_error(
                "missing",
                "metric_type",
                "Field required",
                body,
            ));
            None
        }
        // pydantic's lax mode: integral floats (2.0) and booleans pass; strings ("2") do not
        // (measured against the original).
        Some(v) => match v
            .as_i64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e9)
                    .map(|f| f as i64)
            })
            .or_else(|| v.as_bool().map(i64::from))
            .and_then(Kind::from_number)
        {
            Some(k) => Some(k),
            _ => {
                errors.push(schema_error(
                    "enum",
                    type_field,
                    "Input should be 1, 2, 3 or 4",
                    v,
                ));
                None
            }
        },
    };
    let name = match obj.get("metric_name") {
        None => {
            errors.push(schema_error(
                "missing",
                "metric_name",
                "Field required",
                body,
            ));
            None
        }
        Some(Json::String(s)) => Some(s.clone()),
        Some(v) => {
            errors.push(schema_error(
                "string_type",
                "metric_name",
                "Input should be a valid string",
                v,
            ));
            None
        }
    };
    let info = match obj.get("metric_info") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(v) => {
            errors.push(schema_error(
                "string_type",
                "metric_info",
                "Input should be a valid string",
                v,
            ));
            None
        }
    };
    let value = match obj.get("value") {
        None => {
            errors.push(schema_error("missing", "value", "Field required", body));
            None
        }
        Some(v @ (Json::Number(_) | Json::String(_) | Json::Bool(_))) => Some(v.clone()),
        // pydantic's lax mode takes a boolean for a float too.
        Some(Json::Object(m))
            if m.values()
                .all(|x| matches!(x, Json::String(_) | Json::Number(_) | Json::Bool(_))) =>
        {
            Some(Json::Object(m.clone()))
        }
        Some(v) => {
            // As pydantic reports a union: one error per member.
            for (kind, member, msg) in [
                ("float_type", "float", "Input should be a valid number"),
                ("string_type", "str", "Input should be a valid string"),
                (
                    "dict_type",
                    "dict[str,union[str,float]]",
                    "Input should be a valid dictionary",
                ),
            ] {
                errors.push(serde_json::json!({
                    "type": kind, "loc": ["body", "value", member], "msg": msg, "input": v}));
            }
            None
        }
    };
    let mut labels = BTreeMap::new();
    match obj.get("labels") {
        None | Some(Json::Null) => {}
        Some(Json::Object(m)) => {
            for (k, v) in m {
                match label_text(v) {
                    Some(t) => {
                        labels.insert(k.clone(), t);
                    }
                    None => errors.push(
                        serde_json::json!({"type": "string_type", "loc": ["body", "labels", k],
                        "msg": "Input should be a valid string, integer or number", "input": v}),
                    ),
                }
            }
        }
        Some(v) => errors.push(schema_error(
            "dict_type",
            "labels",
            "Input should be a valid dictionary",
            v,
        )),
    }
    let mut states = Vec::new();
    match obj.get("states") {
        None | Some(Json::Null) => {}
        Some(Json::Array(a)) => {
            for (i, s) in a.iter().enumerate() {
                match s {
                    Json::String(s) => states.push(s.clone()),
                    v => errors.push(
                        serde_json::json!({"type": "string_type", "loc": ["body", "states", i],
                        "msg": "Input should be a valid string", "input": v}),
                    ),
                }
            }
        }
        Some(v) => errors.push(schema_error(
            "list_type",
            "states",
            "Input should be a valid list",
            v,
        )),
    }
    match (kind, name, value) {
        (Some(kind), Some(name), Some(value)) if errors.is_empty() => Ok(CreateRequest {
            kind,
            name,
            info,
            value,
            labels,
            states,
        }),
        _ => Err(Rejection::Schema(errors)),
    }
}

/// Validates the body of `unregister_metric`: `(type, name)`; release 2.0.1 of the original
/// sends the name alone, which unregisters the metric of that name whatever its type.
pub fn parse_unregister(body: &Json) -> Result<(Option<Kind>, String), Rejection> {
    let Json::Object(obj) = body else {
        return Err(Rejection::Schema(vec![serde_json::json!({
            "type": "model_attributes_type", "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from", "input": body})]));
    };
    // The two fields are validated as `create_metric` validates them; errors for the fields
    // `unregister_metric` does not have are dropped.
    let mut probe = obj.clone();
    probe.insert("value".into(), Json::from(0));
    probe.retain(|k, _| matches!(k.as_str(), "metric_type" | "type" | "metric_name" | "value"));
    let typed = probe.contains_key("metric_type") || probe.contains_key("type");
    if !typed {
        // Any valid type stands in, so the name is validated alone.
        probe.insert("metric_type".into(), Json::from(2));
    }
    match parse_create(&Json::Object(probe)) {
        Ok(r) => Ok((typed.then_some(r.kind), r.name)),
        Err(Rejection::Schema(errors)) => Err(Rejection::Schema(
            errors
                .into_iter()
                .map(|mut e| {
                    if e["type"] == "missing" {
                        e["input"] = body.clone();
                    }
                    e
                })
                .collect(),
        )),
        Err(other) => Err(other),
    }
}

/// Most states an Enum may declare: each is a series of every label set.
pub const MAX_STATES: usize = 256;

/// Limits on what the registry accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Series over all metrics.
    pub max_series: usize,
    /// Length of a label value, metric name or HELP text, in bytes.
    pub max_label_length: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series: 100_000,
            max_label_length: 4096,
        }
    }
}

/// The outcome of a successful write: which metric to persist (or delete).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Store this metric under its name.
    Put(Metric),
    /// Remove the metric of this name.
    Delete(String),
    /// Nothing to store (unregistering an unknown metric).
    None,
}

/// All ICOS metrics.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    metrics: BTreeMap<String, Metric>,
    next_order: u64,
    series: usize,
}

impl Registry {
    /// A registry holding `metrics` (restored from the store).
    pub fn restore(metrics: Vec<Metric>) -> Self {
        let mut r = Self::default();
        for m in metrics {
            r.next_order = r.next_order.max(m.order + 1);
            r.series += m.series.len();
            r.metrics.insert(m.name.clone(), m);
        }
        r
    }

    /// Every name occupied, and which metric (base name) holds it.
    fn owner_of(&self, name: &str) -> Option<&Metric> {
        // Reserved names are the base name or the base plus one of these suffixes, so only
        // these bases can hold `name`: a lookup, not a scan (pushes ask for every name).
        std::iter::once(name)
            .chain(
                ["_total", "_created", "_info"]
                    .iter()
                    .filter_map(|s| name.strip_suffix(s)),
            )
            .filter_map(|base| self.metrics.get(base))
            .find(|m| m.kind.reserved(&m.name).iter().any(|n| n == name))
    }

    /// Whether `name` is exposed by some metric (for clashes with pushed groups).
    pub fn occupies(&self, name: &str) -> bool {
        self.owner_of(name).is_some()
    }

    /// Number of series.
    pub fn series_count(&self) -> usize {
        self.series
    }

    /// Applies `create_metric`; nothing changes unless it succeeds.
    pub fn create(
        &mut self,
        req: &CreateRequest,
        now: f64,
        limits: &Limits,
    ) -> Result<Change, Rejection> {
        let sent = req.name.trim().to_owned();
        if sent.is_empty() {
            return bad("metric_name is required.");
        }
        if matches!(&req.value, Json::String(s) if s.trim().is_empty()) {
            return bad("value as str is required and cannot be empty or just whitespace.");
        }
        if !is_valid_metric_name(&sent) {
            return bad(format!("Invalid metric name: {sent}"));
        }
        if sent.starts_with("tidegauge_") {
            return bad(format!(
                "Metric names starting with tidegauge_ are reserved for the host's own metrics: {sent}"
            ));
        }
        let info_keys = match &req.value {
            Json::Object(map) => map.len(),
            _ => 0,
        };
        if req.labels.len() > MAX_LABELS || info_keys > MAX_LABELS {
            return bad(format!(
                "At most {MAX_LABELS} labels (and info keys) per metric."
            ));
        }
        let info_key_names = match &req.value {
            Json::Object(map) => map.keys().collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        for text in std::iter::once(&sent)
            .chain(req.labels.keys())
            .chain(req.labels.values())
            .chain(info_key_names)
            .chain(req.info.iter())
            .chain(req.states.iter())
        {
            if text.len() > limits.max_label_length {
                return bad(format!(
                    "Names, label names and values and help texts are limited to {} bytes.",
                    limits.max_label_length
                ));
            }
        }
        for l in req.labels.keys() {
            if l.starts_with("__") {
                return bad(format!("Reserved label metric name: {l}"));
            }
            if !is_valid_label_name(l) {
                return bad(format!("Invalid label metric name: {l}"));
            }
        }
        let (existing, base) = match self.owner_of(&sent) {
            Some(m) if m.kind != req.kind => {
                return bad(
                    "Metric name matches an already registered metric with different type.",
                );
            }
            Some(m) => (Some(m.clone()), m.name.clone()),
            None => {
                let base = match req.kind {
                    Kind::Counter => sent.strip_suffix("_total").unwrap_or(&sent).to_owned(),
                    _ => sent.clone(),
                };
                if base.is_empty() || !is_valid_metric_name(&base) {
                    return bad(format!("Invalid metric name: {sent}"));
                }
                if req
                    .kind
                    .reserved(&base)
                    .iter()
                    .any(|n| n.starts_with("tidegauge_"))
                {
                    return bad(format!(
                        "Metric names starting with tidegauge_ are reserved for the host's own metrics: {sent}"
                    ));
                }
                let clashes: Vec<String> = req
                    .kind
                    .reserved(&base)
                    .into_iter()
                    .filter(|n| self.occupies(n))
                    .collect();
                if !clashes.is_empty() {
                    let set: Vec<String> = clashes.iter().map(|c| format!("'{c}'")).collect();
                    return bad(format!(
                        "Duplicated timeseries in CollectorRegistry: {{{}}}",
                        set.join(", ")
                    ));
                }
                (None, base)
            }
        };
        let mut metric = match existing {
            Some(m) => m,
            None => self.new_metric(req, &sent, &base)?,
        };
        // Label set must match the registered one exactly.
        let sent_names: Vec<&String> = req.labels.keys().collect();
        if sent_names.iter().any(|n| !metric.label_names.contains(n)) {
            return bad("Request contains more or different labels than the registered metric.");
        }
        let missing: Vec<&str> = metric
            .label_names
            .iter()
            .filter(|n| !req.labels.contains_key(*n))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return bad(format!(
                "Request is missing labels of the registered metric: {}",
                missing.join(", ")
            ));
        }
        let values: Vec<String> = metric
            .label_names
            .iter()
            .map(|n| req.labels[n].clone())
            .collect();
        let pos = metric.series.iter().position(|s| s.labels == values);
        let new_value = match metric.kind {
            Kind::Counter => {
                let inc = number(&req.value)?;
                if !inc.is_finite() {
                    return bad("Counters can only be incremented by finite amounts.");
                }
                if inc < 0.0 {
                    return bad("Counters can only be incremented by non-negative amounts.");
                }
                let old = match pos.map(|i| &metric.series[i].value) {
                    Some(SeriesValue::Number(v)) => *v,
                    _ => 0.0,
                };
                if !(old + inc).is_finite() {
                    return bad("The counter would overflow to infinity.");
                }
                SeriesValue::Number(old + inc)
            }
            Kind::Gauge => SeriesValue::Number(number(&req.value)?),
            Kind::Info => {
                let Json::Object(map) = &req.value else {
                    return bad("value at info metric must be a dictionary.");
                };
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                if keys
                    .iter()
                    .map(|k| k.as_str())
                    .ne(metric.info_keys.iter().map(String::as_str))
                {
                    return bad(format!(
                        "Incorrect label names: the registered info keys are {:?}",
                        metric.info_keys
                    ));
                }
                let vals: Vec<String> = metric
                    .info_keys
                    .iter()
                    .map(|k| match &map[k] {
                        Json::String(s) => s.clone(),
                        Json::Number(n) => n.as_f64().map(python_float).unwrap_or_default(),
                        // As the original: a boolean is the float 1.0 or 0.0.
                        Json::Bool(b) => python_float(if *b { 1.0 } else { 0.0 }),
                        other => other.to_string(),
                    })
                    .collect();
                if let Some(v) = vals.iter().find(|v| v.len() > limits.max_label_length) {
                    return bad(format!(
                        "Info value of {} bytes exceeds the limit of {} bytes.",
                        v.len(),
                        limits.max_label_length
                    ));
                }
                SeriesValue::Info(vals)
            }
            Kind::Enum => {
                if !req.states.is_empty() && req.states != metric.states {
                    return bad(format!(
                        "states differ from the registered states {:?}",
                        metric.states
                    ));
                }
                let Json::String(state) = &req.value else {
                    return bad("value at enum metric must be the name of a state.");
                };
                match metric.states.iter().position(|s| s == state) {
                    Some(i) => SeriesValue::State(i),
                    None => {
                        return bad(format!(
                            "'{state}' is not one of the states {:?}",
                            metric.states
                        ));
                    }
                }
            }
        };
        match pos {
            Some(i) => metric.series[i].value = new_value,
            None => {
                if self.series >= limits.max_series {
                    return bad(format!(
                        "The series limit ({}) is reached; unregister metrics first.",
                        limits.max_series
                    ));
                }
                metric.series.push(Series {
                    labels: values,
                    value: new_value,
                    created: now,
                });
                self.series += 1;
            }
        }
        if metric.order >= self.next_order {
            self.next_order = metric.order + 1;
        }
        self.metrics.insert(metric.name.clone(), metric.clone());
        Ok(Change::Put(metric))
    }

    fn new_metric(&self, req: &CreateRequest, sent: &str, base: &str) -> Result<Metric, Rejection> {
        let mut label_names: Vec<String> = req.labels.keys().cloned().collect();
        label_names.sort();
        let mut info_keys = Vec::new();
        match req.kind {
            Kind::Enum => {
                if req.states.is_empty() {
                    return bad("states are required when an enum metric is created.");
                }
                if req.states.len() > MAX_STATES {
                    return bad(format!("an enum metric has at most {MAX_STATES} states"));
                }
                if label_names.iter().any(|l| l == base) {
                    return bad(format!("Overlapping labels for Enum metric: {base}"));
                }
                // The state label is named like the metric, and label names cannot hold `:`
                // or start with `__` (the original wrote such names and broke the scrape).
                if !tidegauge_core::snapshot::is_valid_label_name(base) {
                    return bad(format!(
                        "Invalid enum metric name: {base} (an enum's name is also its state label's name, so it must be a valid label name)"
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(d) = req.states.iter().find(|s| !seen.insert(*s)) {
                    return bad(format!("state {d:?} is listed twice"));
                }
            }
            Kind::Info => {
                let Json::Object(map) = &req.value else {
                    return bad("value at info metric must be a dictionary.");
                };
                for k in map.keys() {
                    if !is_valid_label_name(k) {
                        return bad(format!("Invalid label metric name: {k}"));
                    }
                    if label_names.contains(k) {
                        return bad(format!(
                            "Overlapping labels for Info metric, metric: {label_names:?} child: {k}"
                        ));
                    }
                }
                info_keys = map.keys().cloned().collect();
                info_keys.sort();
            }
            _ => {}
        }
        Ok(Metric {
            order: self.next_order,
            kind: req.kind,
            name: base.to_owned(),
            help: req.info.clone().unwrap_or_else(|| format!("{sent} info")),
            label_names,
            states: req.states.clone(),
            info_keys,
            series: Vec::new(),
        })
    }

    /// Applies `unregister_metric`.
    pub fn unregister(&mut self, kind: Option<Kind>, name: &str) -> Result<Change, Rejection> {
        let name = name.trim();
        match self.owner_of(name) {
            None => Ok(Change::None),
            Some(m) if kind.is_some_and(|k| k != m.kind) => {
                bad("Metric name matches an already registered metric with different type.")
            }
            Some(m) => {
                let base = m.name.clone();
                if let Some(removed) = self.metrics.remove(&base) {
                    self.series -= removed.series.len();
                }
                Ok(Change::Delete(base))
            }
        }
    }

    /// Undoes a change whose commit failed: `previous` is what the metric was before.
    pub fn revert(&mut self, name: &str, previous: Option<Metric>) {
        if let Some(old) = self.metrics.remove(name) {
            self.series -= old.series.len();
        }
        if let Some(p) = previous {
            self.series += p.series.len();
            self.metrics.insert(name.to_owned(), p);
        }
    }

    /// The metric stored under its base name.
    pub fn get(&self, base: &str) -> Option<&Metric> {
        self.metrics.get(base)
    }

    /// Base name of the metric a request names (for reverting).
    pub fn base_of(&self, sent: &str) -> Option<String> {
        self.owner_of(sent.trim()).map(|m| m.name.clone())
    }

    /// The exposition: families in creation order, series in first-seen order.
    pub fn snapshot(&self) -> Snapshot {
        let mut metrics: Vec<&Metric> = self.metrics.values().collect();
        metrics.sort_by_key(|m| m.order);
        let mut snap = Snapshot::new();
        for m in metrics {
            let mut f = MetricFamily::new(m.name.clone(), m.help.clone(), m.kind.metric_type());
            f.guest = true;
            for s in &m.series {
                let labels: Vec<(String, String)> = m
                    .label_names
                    .iter()
                    .cloned()
                    .zip(s.labels.iter().cloned())
                    .collect();
                match &s.value {
                    SeriesValue::Number(v) => f.samples.push(Sample {
                        labels: labels.into(),
                        value: Value::Number(*v),
                        created: Some(s.created),
                    }),
                    SeriesValue::State(i) => {
                        let from = f.samples.len();
                        f.push_states(
                            &labels,
                            &m.name,
                            &m.states,
                            m.states.get(*i).map(String::as_str),
                        );
                        // Labels in name order, the state's label among them, as the spec says.
                        for sample in &mut f.samples[from..] {
                            let mut sorted = sample.labels.to_vec();
                            sorted.sort();
                            sample.labels = sorted.into();
                        }
                    }
                    SeriesValue::Info(vals) => {
                        let mut all = labels;
                        all.extend(m.info_keys.iter().cloned().zip(vals.iter().cloned()));
                        all.sort();
                        f.push(all, 1.0);
                    }
                }
            }
            // Unlike the Python client, a labelled metric without series is left out entirely:
            // an empty family carries no data.
            snap.push(f);
        }
        snap
    }
}

/// A number from a JSON value: numbers, booleans (1/0) and numeric strings.
fn number(v: &Json) -> Result<f64, Rejection> {
    match v {
        Json::Number(n) => n
            .as_f64()
            .ok_or_else(|| Rejection::Bad(format!("could not convert {n} to float"))),
        Json::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Json::String(s) if s.trim().is_empty() => {
            bad("value as str is required and cannot be empty or just whitespace.")
        }
        Json::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| Rejection::Bad(format!("could not convert string to float: '{s}'"))),
        _ => bad("value must be a number for counter and gauge metrics."),
    }
}

#[cfg(test)]
mod tests {
    use super::python_float;

    /// As CPython's `repr(float)` writes them.
    #[test]
    fn floats_as_python_writes_them() {
        for (f, want) in [
            (1e20, "1e+20"),
            (1e-7, "1e-07"),
            (1.5e16, "1.5e+16"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123_456_789_012_345.0, "123456789012345.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
            (0.0, "0.0"),
        ] {
            assert_eq!(python_float(f), want, "{f:e}");
        }
    }
}
