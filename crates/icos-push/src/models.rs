//! Model metrics (spec §1.4, §4): their configuration, the requests that define them, and what
//! the store keeps of them (definitions and locally trained models).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::forecast;
use crate::model::{CreateRequest, Kind, Rejection};

/// Prefix of model-metric definitions in the store (metric names cannot contain NUL).
pub const DEFINITION_PREFIX: &str = "\u{0}model:";
/// Prefix of locally trained models in the store.
pub const TRAINED_PREFIX: &str = "\u{0}trained:";

/// Most points one query may return (Prometheus refuses more than 11,000 per series), and so
/// the longest `steps_back` and training history.
pub const MAX_POINTS: usize = 11_000;

/// Longest step of a model metric, in seconds (30 days).
pub const MAX_STEP: u64 = 30 * 24 * 3600;

/// `[collectors.icos-push.models]`: where telemetry and remote predictions come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// A Prometheus-compatible query API (`PROMETHEUS_API_BASE_URL`).
    pub prometheus_url: Option<String>,
    /// Bearer token sent to it.
    pub prometheus_bearer_token: Option<String>,
    /// Bearer token read from this file at start-up.
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// Basic authentication sent to it.
    pub prometheus_basic_auth: Option<BasicAuth>,
    /// Grafana's base URL (`GRAFANA_API_BASE_URL`); `api/ds/query` is appended.
    pub grafana_url: Option<String>,
    /// Grafana service account token (`GRAFANA_SERVICE_ACCOUNT_BEARER_TOKEN`).
    pub grafana_token: Option<String>,
    /// The token read from this file at start-up.
    pub grafana_token_file: Option<PathBuf>,
    /// The Prometheus data source's uid in Grafana (`GRAFANA_DATASOURCE_UID`).
    pub grafana_datasource_uid: Option<String>,
    /// Distance between points Grafana returns, ms (`GRAFANA_INTERVAL_MS`; default 60000).
    pub grafana_interval_ms: Option<u64>,
    /// `utcOffsetSec` sent to Grafana (`GRAFANA_UTC_OFFSET_SEC`, `GRAFANA_UTC_OFFSET`; default
    /// 7200, the original's).
    pub grafana_utc_offset_sec: Option<i64>,
    /// The remote Intelligence API (`INTELLIGENCE_API_BASE_URL`); unset: embedded models and
    /// locally trained ones only.
    pub intelligence_url: Option<String>,
    /// Shortest step of a model metric (`INTERVAL_IN_SECONDS_FOR_METRICS_EXPORT`; default 60 s).
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize_opt")]
    pub interval: Option<Duration>,
    /// Limit of each telemetry query and remote prediction.
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub timeout: Duration,
    /// Limit of a remote training.
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub train_timeout: Duration,
    /// Most model metrics running at once.
    pub max_model_metrics: usize,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            prometheus_url: None,
            prometheus_bearer_token: None,
            prometheus_bearer_token_file: None,
            prometheus_basic_auth: None,
            grafana_url: None,
            grafana_token: None,
            grafana_token_file: None,
            grafana_datasource_uid: None,
            grafana_interval_ms: None,
            grafana_utc_offset_sec: None,
            intelligence_url: None,
            interval: None,
            timeout: Duration::from_secs(30),
            train_timeout: Duration::from_secs(3600),
            max_model_metrics: 10_000,
        }
    }
}

impl ModelsConfig {
    /// The table with what it leaves open taken from the original's environment variables
    /// (`PROMETHEUS_API_BASE_URL`, `GRAFANA_*`, `INTELLIGENCE_API_BASE_URL`,
    /// `INTERVAL_IN_SECONDS_FOR_METRICS_EXPORT`), then the defaults. They are read here rather
    /// than as host settings so that they configure icos-push without switching it on.
    pub fn resolve(&self, env: &tidegauge_core::factory::Environment) -> Result<Self, String> {
        let get = |k: &str| {
            env.get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let int = |var: &str| -> Result<Option<i64>, String> {
            get(var)
                .map(|v| {
                    v.parse::<i64>()
                        .map_err(|_| format!("{var}={v:?}: expected a whole number"))
                })
                .transpose()
        };
        let positive = |var: &str| -> Result<Option<u64>, String> {
            match int(var)? {
                Some(n) if n <= 0 => Err(format!("{var}={n}: must be greater than zero")),
                n => Ok(n.map(|n| n as u64)),
            }
        };
        let mut c = self.clone();
        let fill = |slot: &mut Option<String>, var: &str| {
            if slot.is_none() {
                *slot = get(var);
            }
        };
        fill(&mut c.prometheus_url, "PROMETHEUS_API_BASE_URL");
        fill(&mut c.grafana_url, "GRAFANA_API_BASE_URL");
        fill(&mut c.grafana_datasource_uid, "GRAFANA_DATASOURCE_UID");
        fill(&mut c.intelligence_url, "INTELLIGENCE_API_BASE_URL");
        if c.grafana_token.is_none() && c.grafana_token_file.is_none() {
            c.grafana_token = get("GRAFANA_SERVICE_ACCOUNT_BEARER_TOKEN");
            c.grafana_token_file =
                get("GRAFANA_SERVICE_ACCOUNT_BEARER_TOKEN_FILE").map(PathBuf::from);
        }
        if c.grafana_interval_ms.is_none() {
            c.grafana_interval_ms = Some(positive("GRAFANA_INTERVAL_MS")?.unwrap_or(60_000));
        }
        if c.grafana_utc_offset_sec.is_none() {
            // The original's documentation says GRAFANA_UTC_OFFSET_SEC, its code read
            // GRAFANA_UTC_OFFSET: both are read, the documented one wins.
            let sec = int("GRAFANA_UTC_OFFSET_SEC")?;
            let misspelt = int("GRAFANA_UTC_OFFSET")?;
            c.grafana_utc_offset_sec = Some(sec.or(misspelt).unwrap_or(7200));
        }
        if c.interval.is_none() {
            let s = positive("INTERVAL_IN_SECONDS_FOR_METRICS_EXPORT")?.unwrap_or(60);
            c.interval = Some(Duration::from_secs(s));
        }
        Ok(c)
    }
}

/// Basic authentication: the password literally or from a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// Password read from this file at start-up.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// A model metric as defined by `create_model_metric` (or started by a training), as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// The metric's type.
    pub kind: Kind,
    /// Its name (trimmed).
    pub name: String,
    /// HELP text, when given.
    pub info: Option<String>,
    /// Labels of every series it writes.
    pub labels: BTreeMap<String, String>,
    /// PromQL expressions read each cycle, in order (`input_1`, `input_2`, ...).
    pub telemetry_metrics: Vec<String>,
    /// The model: `embedded:*`, a local trained model `<name>:<version>`, or a remote tag.
    pub model_tag: String,
    /// Values per expression given to the model.
    pub steps_back: usize,
    /// Enum states: the prediction, rounded, indexes them.
    pub model_states: Vec<String>,
    /// Step as requested (raised to the configured interval when run).
    pub step_in_seconds: Option<u64>,
    /// Sent to the remote API when set.
    pub history_sample_size: Option<u64>,
    /// Sent to the remote API.
    pub data_interruption: bool,
    /// Sent to the remote API.
    pub history_data: Json,
    /// MSTL's season in steps (embedded models).
    pub period: Option<usize>,
}

impl Definition {
    /// Its store key.
    pub fn store_key(&self) -> String {
        format!("{DEFINITION_PREFIX}{}", self.name)
    }

    /// The step it runs at: as requested, never below `interval`.
    pub fn step(&self, interval: Duration) -> Duration {
        self.step_in_seconds
            .map(|s| Duration::from_secs(s.min(MAX_STEP)))
            .unwrap_or(interval)
            .max(interval)
            .max(Duration::from_secs(1))
    }

    /// The names its writes expose: the metric (a counter as `<base>_total`, its base name
    /// reserved too) and its three gauges. Two model metrics sharing one would overwrite
    /// each other's series.
    pub fn exposed_names(&self) -> Vec<String> {
        let base = match self.kind {
            Kind::Counter => self.name.strip_suffix("_total").unwrap_or(&self.name),
            _ => &self.name,
        };
        let mut names = vec![base.to_owned()];
        if self.kind == Kind::Counter {
            names.push(format!("{base}_total"));
        }
        for suffix in ["confidence", "lower", "upper"] {
            names.push(format!("{}_{suffix}", self.name));
        }
        names
    }

    /// The `create_metric` requests that write one prediction: the metric itself, then its
    /// `_confidence`, `_lower` and `_upper` gauges (those known).
    pub fn writes(&self, p: &Outcome) -> Result<Vec<CreateRequest>, String> {
        let value = match self.kind {
            Kind::Gauge | Kind::Counter => json!(p.value),
            Kind::Enum => {
                let i = p.value.round();
                match (i >= 0.0 && i.is_finite())
                    .then(|| self.model_states.get(i as usize))
                    .flatten()
                {
                    Some(s) => json!(s),
                    None => {
                        return Err(format!(
                            "the prediction {} is not the index of one of the {} model_states",
                            p.value,
                            self.model_states.len()
                        ));
                    }
                }
            }
            Kind::Info => return Err("an Info metric cannot hold a prediction".into()),
        };
        let help = self
            .info
            .clone()
            .unwrap_or_else(|| format!("{} info", self.name));
        let mut out = vec![CreateRequest {
            kind: self.kind,
            name: self.name.clone(),
            info: self.info.clone(),
            value,
            labels: self.labels.clone(),
            states: self.model_states.clone(),
        }];
        let bound = |suffix: &str, what: &str, v: f64| CreateRequest {
            kind: Kind::Gauge,
            name: format!("{}_{suffix}", self.name),
            info: Some(format!("{help} ({what})")),
            value: number(v),
            labels: self.labels.clone(),
            states: Vec::new(),
        };
        // Always all three, NaN when the model gives none: a bound left from an earlier model
        // must not stand beside a new value.
        let (lower, upper) = p.interval.unwrap_or((f64::NAN, f64::NAN));
        let confidence = p.confidence.unwrap_or(f64::NAN);
        out.push(bound("confidence", "model confidence, percent", confidence));
        out.push(bound(
            "lower",
            "lower bound of the 95 % prediction interval",
            lower,
        ));
        out.push(bound(
            "upper",
            "upper bound of the 95 % prediction interval",
            upper,
        ));
        Ok(out)
    }
}

/// A value as the original's clients send one: JSON has no NaN or infinities (serde_json would
/// write null), Python sends them as these strings.
fn number(v: f64) -> Json {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("NaN")
    } else if v > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

/// One cycle's prediction, whichever backend made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The value.
    pub value: f64,
    /// Confidence in percent.
    pub confidence: Option<f64>,
    /// Prediction interval.
    pub interval: Option<(f64, f64)>,
}

/// A model trained here, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainedModel {
    /// `model_name` of the training.
    pub name: String,
    /// 1, 2, ... per name.
    pub version: u64,
    /// `ETS`, `MSTL` or `LINEAR`.
    pub model_type: String,
    /// What forecasts with it reuse.
    pub fitted: forecast::Trained,
    /// Values per forecast (`steps_back` of the training).
    pub steps_back: usize,
    /// When it was trained, Unix seconds.
    pub trained_at: f64,
}

impl TrainedModel {
    /// Its tag, `<name>:<version>`.
    pub fn tag(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// Its store key.
    pub fn store_key(&self) -> String {
        format!("{TRAINED_PREFIX}{}", self.tag())
    }
}

/// A `train_model_metric` request after schema validation.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRequest {
    /// `model_name`.
    pub model_name: String,
    /// `model_type`, upper-cased (`Arima` → `ARIMA`, `PyTorch` → `PYTORCH`).
    pub model_type: String,
    /// Fraction of the history held out to test.
    pub test_size: f64,
    /// Values per forecast.
    pub steps_back: usize,
    /// Expressions.
    pub telemetry_metrics: Vec<String>,
    /// `model_parameters`.
    pub model_parameters: serde_json::Map<String, Json>,
    /// Labels of the model metric started afterwards.
    pub labels: BTreeMap<String, String>,
    /// `dataclay`.
    pub dataclay: bool,
    /// Remote only.
    pub dataset_name: Option<String>,
    /// Step of the model metric started afterwards.
    pub step_in_seconds: Option<u64>,
    /// Remote only.
    pub max_models_count: Option<u64>,
    /// Remote only.
    pub max_mlruns_count: Option<u64>,
    /// Remote only.
    pub shap_samples: Option<u64>,
    /// MSTL's season in steps.
    pub period: Option<usize>,
}

/// Reads fields as pydantic does, collecting FastAPI-shaped errors.
struct Fields<'a> {
    obj: &'a serde_json::Map<String, Json>,
    body: &'a Json,
    errors: Vec<Json>,
}

impl<'a> Fields<'a> {
    fn of(body: &'a Json) -> Result<Self, Rejection> {
        match body {
            Json::Object(obj) => Ok(Self {
                obj,
                body,
                errors: Vec::new(),
            }),
            _ => Err(Rejection::Schema(vec![json!({
                "type": "model_attributes_type", "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from", "input": body})])),
        }
    }

    fn error(&mut self, kind: &str, loc: Json, msg: &str, input: &Json) {
        self.errors
            .push(json!({"type": kind, "loc": loc, "msg": msg, "input": input}));
    }

    /// The value of a field; `None` when absent or null (an error if `required`).
    fn get(&mut self, name: &str, required: bool) -> Option<&'a Json> {
        match self.obj.get(name) {
            None | Some(Json::Null) if required => {
                let input = self.obj.get(name).unwrap_or(self.body);
                self.error("missing", json!(["body", name]), "Field required", input);
                None
            }
            None | Some(Json::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, name: &str, required: bool) -> Option<String> {
        match self.get(name, required)? {
            Json::String(s) => Some(s.clone()),
            v => {
                self.error(
                    "string_type",
                    json!(["body", name]),
                    "Input should be a valid string",
                    v,
                );
                None
            }
        }
    }

    /// pydantic's lax integer: integral floats and booleans pass, strings of digits too.
    fn int(&mut self, name: &str, required: bool) -> Option<i64> {
        let v = self.get(name, required)?;
        let n = match v {
            Json::Number(n) => n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                    .map(|f| f as i64)
            }),
            Json::Bool(b) => Some(i64::from(*b)),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if n.is_none() {
            self.error(
                "int_parsing",
                json!(["body", name]),
                "Input should be a valid integer",
                v,
            );
        }
        n
    }

    fn count(&mut self, name: &str, required: bool) -> Option<u64> {
        let n = self.int(name, required)?;
        match u64::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    "greater_than_equal",
                    json!(["body", name]),
                    "Input should be greater than or equal to 0",
                    &json!(n),
                );
                None
            }
        }
    }

    fn float(&mut self, name: &str, required: bool) -> Option<f64> {
        let v = self.get(name, required)?;
        let f = match v {
            Json::Number(n) => n.as_f64(),
            Json::Bool(b) => Some(f64::from(u8::from(*b))),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        if f.is_none() {
            self.error(
                "float_parsing",
                json!(["body", name]),
                "Input should be a valid number",
                v,
            );
        }
        f
    }

    fn boolean(&mut self, name: &str) -> bool {
        let Some(v) = self.get(name, false) else {
            return false;
        };
        match v {
            Json::Bool(b) => *b,
            Json::Number(n) if n.as_f64() == Some(0.0) || n.as_f64() == Some(1.0) => {
                n.as_f64() == Some(1.0)
            }
            Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" | "t" | "y" => true,
                "false" | "0" | "no" | "off" | "f" | "n" => false,
                _ => {
                    self.error(
                        "bool_parsing",
                        json!(["body", name]),
                        "Input should be a valid boolean",
                        v,
                    );
                    false
                }
            },
            _ => {
                self.error(
                    "bool_type",
                    json!(["body", name]),
                    "Input should be a valid boolean",
                    v,
                );
                false
            }
        }
    }

    fn strings(&mut self, name: &str, required: bool) -> Option<Vec<String>> {
        match self.get(name, required)? {
            Json::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Json::String(s) => out.push(s.clone()),
                        v => self.error(
                            "string_type",
                            json!(["body", name, i]),
                            "Input should be a valid string",
                            v,
                        ),
                    }
                }
                Some(out)
            }
            v => {
                self.error(
                    "list_type",
                    json!(["body", name]),
                    "Input should be a valid list",
                    v,
                );
                None
            }
        }
    }

    fn object(&mut self, name: &str, required: bool) -> Option<serde_json::Map<String, Json>> {
        match self.get(name, required)? {
            Json::Object(m) => Some(m.clone()),
            v => {
                self.error(
                    "dict_type",
                    json!(["body", name]),
                    "Input should be a valid dictionary",
                    v,
                );
                None
            }
        }
    }

    fn finish<T>(self, value: Option<T>) -> Result<T, Rejection> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(Rejection::Schema(self.errors)),
        }
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection::Bad(msg.into()))
}

/// A season of 2 steps up to half the longest series.
fn check_period(period: Option<usize>) -> Result<(), Rejection> {
    match period {
        Some(p) if !(2..=MAX_POINTS / 2).contains(&p) => bad(format!(
            "period must be between 2 and {} steps, got {p}.",
            MAX_POINTS / 2
        )),
        _ => Ok(()),
    }
}

/// A step of at most [`MAX_STEP`].
fn check_step(step: Option<u64>) -> Result<(), Rejection> {
    match step {
        Some(s) if s > MAX_STEP => bad(format!(
            "step_in_seconds must be at most {MAX_STEP} (30 days), got {s}."
        )),
        _ => Ok(()),
    }
}

/// Expressions: at least one, none blank.
fn check_expressions(exprs: &[String]) -> Result<(), Rejection> {
    if exprs.is_empty() {
        return bad("telemetry_metrics must name at least one PromQL expression.");
    }
    if exprs.iter().any(|e| e.trim().is_empty()) {
        return bad("telemetry_metrics must not hold an empty expression.");
    }
    Ok(())
}

/// A period in steps, as an optional field.
fn period(fields: &mut Fields<'_>) -> Option<usize> {
    let p = fields.count("period", false)?;
    usize::try_from(p).ok()
}

/// Validates the body of `create_model_metric` (422 on a schema error, 400 on a bad value).
pub fn parse_create_model(body: &Json) -> Result<Definition, Rejection> {
    // The fields it shares with `create_metric` are checked by the same rules; a prediction
    // stands in for `value`.
    let mut shared = body.clone();
    let mut shared_errors = Vec::new();
    let base = if let Json::Object(m) = &mut shared {
        m.insert("value".into(), json!(0.0));
        m.remove("states");
        match crate::model::parse_create(&shared) {
            Ok(r) => Some(r),
            Err(Rejection::Schema(e)) => {
                // Errors quote the body as sent, not with the stand-in value.
                shared_errors = e
                    .into_iter()
                    .map(|mut e| {
                        if e.get("input") == Some(&shared) {
                            e["input"] = body.clone();
                        }
                        e
                    })
                    .collect();
                None
            }
            Err(bad) => return Err(bad),
        }
    } else {
        None
    };
    let mut f = Fields::of(body)?;
    f.errors = shared_errors;
    let telemetry = f.strings("telemetry_metrics", true);
    let model_tag = f.string("model_tag", true);
    let steps_back = f.count("steps_back", true);
    let model_states = f.strings("model_states", false).unwrap_or_default();
    let step = f.count("step_in_seconds", false);
    let history_sample_size = f.count("history_sample_size", false);
    let data_interruption = f.boolean("data_interruption");
    let history_data = match f.get("history_data", false) {
        None => json!([[]]),
        Some(v @ Json::Array(rows)) if rows.iter().all(Json::is_array) => v.clone(),
        Some(v) => {
            f.error(
                "list_type",
                json!(["body", "history_data"]),
                "Input should be a valid list of lists",
                v,
            );
            json!([[]])
        }
    };
    let period = period(&mut f);
    let parsed = match (base, telemetry, model_tag, steps_back) {
        (Some(base), Some(t), Some(tag), Some(s)) => Some((base, t, tag, s)),
        _ => None,
    };
    let (base, telemetry_metrics, model_tag, steps_back) = f.finish(parsed)?;
    let name = base.name.trim().to_owned();
    if name.is_empty() {
        return bad("metric_name is required.");
    }
    check_expressions(&telemetry_metrics)?;
    check_period(period)?;
    check_step(step)?;
    if model_tag.trim().is_empty() {
        return bad("model_tag is required.");
    }
    if steps_back == 0 || steps_back > MAX_POINTS as u64 {
        return bad(format!(
            "steps_back must be between 1 and {MAX_POINTS}, got {steps_back}."
        ));
    }
    if base.kind == Kind::Info {
        return bad("metric_type 3 (Info) cannot hold a prediction; use 1, 2 or 4.");
    }
    if base.kind == Kind::Enum && model_states.is_empty() {
        return bad(
            "metric_type 4 (Enum) needs model_states: the prediction, rounded, indexes them.",
        );
    }
    Ok(Definition {
        kind: base.kind,
        name,
        info: base.info,
        labels: base.labels,
        telemetry_metrics,
        model_tag: model_tag.trim().to_owned(),
        steps_back: steps_back as usize,
        model_states,
        step_in_seconds: step,
        history_sample_size,
        data_interruption,
        history_data,
        period,
    })
}

/// Validates the body of `train_model_metric`.
pub fn parse_train(body: &Json) -> Result<TrainRequest, Rejection> {
    let mut f = Fields::of(body)?;
    let model_name = f.string("model_name", true);
    let model_type = f.string("model_type", true);
    let test_size = f.float("test_size", true);
    let steps_back = f.count("steps_back", true);
    let telemetry = f.strings("telemetry_metrics", true);
    let model_parameters = f.object("model_parameters", true);
    let mut labels = BTreeMap::new();
    if let Some(m) = f.object("labels", false) {
        for (k, v) in m {
            match v {
                Json::String(s) => {
                    labels.insert(k, s);
                }
                Json::Number(n) => {
                    labels.insert(k, n.to_string());
                }
                Json::Bool(b) => {
                    labels.insert(k, if b { "1" } else { "0" }.into());
                }
                v => f.error(
                    "string_type",
                    json!(["body", "labels", k]),
                    "Input should be a valid string, integer or number",
                    &v,
                ),
            }
        }
    }
    let dataclay = f.boolean("dataclay");
    let dataset_name = f.string("dataset_name", false);
    let step = f.count("step_in_seconds", false);
    let max_models_count = f.count("max_models_count", false);
    let max_mlruns_count = f.count("max_mlruns_count", false);
    let shap_samples = f.count("shap_samples", false);
    let period = period(&mut f);
    let parsed = match (
        model_name,
        model_type,
        test_size,
        steps_back,
        telemetry,
        model_parameters,
    ) {
        (Some(a), Some(b), Some(c), Some(d), Some(e), Some(g)) => Some((a, b, c, d, e, g)),
        _ => None,
    };
    let (model_name, model_type, test_size, steps_back, telemetry_metrics, model_parameters) =
        f.finish(parsed)?;
    let model_name = model_name.trim().to_owned();
    if model_name.is_empty() {
        return bad("model_name is required.");
    }
    if !tidegauge_core::snapshot::is_valid_metric_name(&model_name) || model_name.contains(':') {
        return bad(format!(
            "model_name {model_name:?} must be a valid metric name without ':' (the model metric started after training takes it)."
        ));
    }
    check_expressions(&telemetry_metrics)?;
    check_period(period)?;
    check_step(step)?;
    // The metric started after the training takes these labels: refused now rather than
    // after a training whose metric could not start.
    if let Some(l) = labels.keys().find(|l| {
        !tidegauge_core::snapshot::is_valid_label_name(l)
            || l.starts_with("__")
            || [
                "model_name",
                "model_type",
                "sequence_size",
                "step_in_seconds",
            ]
            .contains(&l.as_str())
    }) {
        return bad(format!(
            "label name {l:?} is not valid here (a Prometheus label name, not starting with __, and not one of model_name, model_type, sequence_size, step_in_seconds, which the started metric sets)."
        ));
    }
    if !(test_size > 0.0 && test_size < 1.0) {
        return bad(format!(
            "test_size must be between 0 and 1, got {test_size}."
        ));
    }
    if steps_back == 0 || steps_back > MAX_POINTS as u64 {
        return bad(format!(
            "steps_back must be between 1 and {MAX_POINTS}, got {steps_back}."
        ));
    }
    Ok(TrainRequest {
        model_name,
        model_type: model_type.trim().to_ascii_uppercase(),
        test_size,
        steps_back: steps_back as usize,
        telemetry_metrics,
        model_parameters,
        labels,
        dataclay,
        dataset_name,
        step_in_seconds: step,
        max_models_count,
        max_mlruns_count,
        shap_samples,
        period,
    })
}

/// Model types trained here.
pub const LOCAL_TYPES: [&str; 3] = ["ETS", "MSTL", "LINEAR"];
/// Model types only the remote Intelligence API trains.
pub const REMOTE_TYPES: [&str; 3] = ["XGB", "ARIMA", "PYTORCH"];

impl TrainRequest {
    /// The body of the remote `train` call (spec §4.5): the upper-case type, and the parameter
    /// object chosen by type.
    pub fn remote_body(&self) -> Json {
        let key = if self.model_type == "PYTORCH" {
            "pytorch_model_parameters"
        } else {
            "xgboost_model_parameters"
        };
        let params = self
            .model_parameters
            .get(key)
            .cloned()
            .map(|p| json!({key: p}))
            .unwrap_or_else(|| json!({}));
        json!({"model_name": self.model_name, "model_type": self.model_type,
            "test_size": self.test_size, "dataset_name": self.dataset_name,
            "steps_back": self.steps_back, "max_models_count": self.max_models_count,
            "max_mlruns_count": self.max_mlruns_count, "shap_samples": self.shap_samples,
            "model_parameters": params})
    }

    /// The model metric the original starts after a training: a Gauge named `model_name`
    /// with the trained tag and the labels `model_name`, `model_type`, `sequence_size` and
    /// `step_in_seconds`.
    pub fn metric(&self, tag: String, step: Duration) -> Definition {
        let mut labels = self.labels.clone();
        labels.insert("model_name".into(), self.model_name.clone());
        labels.insert("model_type".into(), self.model_type.clone());
        labels.insert("sequence_size".into(), self.steps_back.to_string());
        labels.insert("step_in_seconds".into(), step.as_secs().to_string());
        Definition {
            kind: Kind::Gauge,
            name: self.model_name.clone(),
            info: None,
            labels,
            telemetry_metrics: self.telemetry_metrics.clone(),
            model_tag: tag,
            steps_back: self.steps_back,
            model_states: Vec::new(),
            step_in_seconds: self.step_in_seconds,
            history_sample_size: None,
            data_interruption: false,
            history_data: json!([[]]),
            period: self.period,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(extra: Json) -> Result<Definition, Rejection> {
        let mut body = json!({"metric_type": 2, "metric_name": " cpu_forecast ",
            "telemetry_metrics": ["cpu"], "model_tag": "embedded:linear", "steps_back": 12});
        if let (Json::Object(b), Json::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        parse_create_model(&body)
    }

    #[test]
    fn create_model_metric_requests() {
        let d = create(json!({"labels": {"node": "n1", "n": 1}, "step_in_seconds": 5})).unwrap();
        assert_eq!(d.name, "cpu_forecast");
        assert_eq!(d.labels["n"], "1");
        assert_eq!(d.step(Duration::from_secs(60)), Duration::from_secs(60));
        assert_eq!(d.history_data, json!([[]]));
        // Missing fields are 422 in FastAPI's shape, one entry per field.
        let Err(Rejection::Schema(errors)) = parse_create_model(&json!({"metric_type": 2})) else {
            panic!("422 expected")
        };
        let missing: Vec<&str> = errors.iter().filter_map(|e| e["loc"][1].as_str()).collect();
        assert_eq!(
            missing,
            [
                "metric_name",
                "telemetry_metrics",
                "model_tag",
                "steps_back"
            ]
        );
        assert!(matches!(
            create(json!({"steps_back": 0})),
            Err(Rejection::Bad(m)) if m.contains("steps_back")
        ));
        assert!(matches!(
            create(json!({"telemetry_metrics": []})),
            Err(Rejection::Bad(_))
        ));
        // A step the clock cannot add panicked the metric's task (found by attack).
        for s in [MAX_STEP + 1, i64::MAX as u64] {
            assert!(
                matches!(create(json!({"step_in_seconds": s})), Err(Rejection::Bad(m)) if m.contains("step_in_seconds")),
                "{s}"
            );
        }
        assert_eq!(
            create(json!({"step_in_seconds": MAX_STEP}))
                .unwrap()
                .step(Duration::from_secs(60)),
            Duration::from_secs(MAX_STEP)
        );
        for p in [0_i64, 1, 5501, 1_000_000_000_000] {
            assert!(
                matches!(create(json!({"period": p})), Err(Rejection::Bad(m)) if m.contains("period")),
                "{p}"
            );
        }
        assert!(
            matches!(create(json!({"metric_type": 3})), Err(Rejection::Bad(m)) if m.contains("Info"))
        );
        assert!(
            matches!(create(json!({"metric_type": 4})), Err(Rejection::Bad(m)) if m.contains("model_states"))
        );
        assert!(matches!(
            create(json!({"steps_back": "x"})),
            Err(Rejection::Schema(e)) if e[0]["loc"] == json!(["body", "steps_back"])
        ));
        assert!(matches!(
            parse_create_model(&json!([])),
            Err(Rejection::Schema(_))
        ));
    }

    #[test]
    fn writes_cover_the_value_and_its_bounds() {
        let mut d = create(json!({})).unwrap();
        let p = Outcome {
            value: 1.4,
            confidence: Some(90.0),
            interval: Some((1.0, 2.0)),
        };
        let names: Vec<String> = d.writes(&p).unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            [
                "cpu_forecast",
                "cpu_forecast_confidence",
                "cpu_forecast_lower",
                "cpu_forecast_upper"
            ]
        );
        assert_eq!(d.exposed_names(), names);
        // Without confidence or interval the gauges are still written, as NaN.
        let bare = d
            .writes(&Outcome {
                value: 1.0,
                confidence: None,
                interval: None,
            })
            .unwrap();
        assert_eq!(bare.len(), 4);
        assert!(
            bare[1..].iter().all(|r| r.value == json!("NaN")),
            "{bare:?}"
        );
        d.kind = Kind::Enum;
        d.model_states = vec!["low".into(), "high".into()];
        assert_eq!(
            d.writes(&p).unwrap()[0].value,
            json!("high"),
            "1.4 rounds to state 1"
        );
        assert!(
            d.writes(&Outcome {
                value: 2.6,
                ..p.clone()
            })
            .is_err()
        );
        assert!(
            d.writes(&Outcome {
                value: f64::NAN,
                ..p
            })
            .is_err()
        );
    }

    #[test]
    fn the_original_variables_fill_what_the_table_leaves_open() {
        use tidegauge_core::factory::Environment;
        let env = Environment::from_pairs([
            ("GRAFANA_API_BASE_URL", "http://grafana:3000"),
            ("GRAFANA_SERVICE_ACCOUNT_BEARER_TOKEN", "glsa"),
            ("GRAFANA_DATASOURCE_UID", "uid1"),
            ("GRAFANA_INTERVAL_MS", "30000"),
            ("GRAFANA_UTC_OFFSET", "3600"),
            ("INTELLIGENCE_API_BASE_URL", "http://intelligence:3000/"),
            ("INTERVAL_IN_SECONDS_FOR_METRICS_EXPORT", "15"),
        ]);
        let c = ModelsConfig::default().resolve(&env).unwrap();
        assert_eq!(c.grafana_url.as_deref(), Some("http://grafana:3000"));
        assert_eq!(c.grafana_token.as_deref(), Some("glsa"));
        assert_eq!(c.grafana_datasource_uid.as_deref(), Some("uid1"));
        assert_eq!(c.grafana_interval_ms, Some(30_000));
        assert_eq!(
            c.grafana_utc_offset_sec,
            Some(3600),
            "the misspelt variable is read"
        );
        assert_eq!(
            c.intelligence_url.as_deref(),
            Some("http://intelligence:3000/")
        );
        assert_eq!(c.interval, Some(Duration::from_secs(15)));
        // The documented spelling wins; the table wins over both.
        let env = Environment::from_pairs([
            ("GRAFANA_UTC_OFFSET_SEC", "0"),
            ("GRAFANA_UTC_OFFSET", "3600"),
            ("PROMETHEUS_API_BASE_URL", "http://env:9090"),
        ]);
        let table = ModelsConfig {
            prometheus_url: Some("http://table:9090".into()),
            ..ModelsConfig::default()
        };
        let c = table.resolve(&env).unwrap();
        assert_eq!(c.grafana_utc_offset_sec, Some(0));
        assert_eq!(c.prometheus_url.as_deref(), Some("http://table:9090"));
        // Defaults, and bad values named.
        let c = ModelsConfig::default()
            .resolve(&Environment::from_pairs::<&str, &str>([]))
            .unwrap();
        assert_eq!(
            (c.grafana_interval_ms, c.grafana_utc_offset_sec, c.interval),
            (Some(60_000), Some(7200), Some(Duration::from_secs(60)))
        );
        for (var, value) in [
            ("INTERVAL_IN_SECONDS_FOR_METRICS_EXPORT", "0"),
            ("GRAFANA_INTERVAL_MS", "soon"),
        ] {
            let err = ModelsConfig::default()
                .resolve(&Environment::from_pairs([(var, value)]))
                .unwrap_err();
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn train_requests() {
        let body = json!({"model_name": "cpu_model", "model_type": "Arima", "test_size": 0.2,
            "steps_back": 12, "telemetry_metrics": ["cpu"],
            "model_parameters": {"xgboost_model_parameters": {"p": 1, "d": 0, "q": 1}}});
        let t = parse_train(&body).unwrap();
        assert_eq!(t.model_type, "ARIMA");
        assert_eq!(
            t.remote_body()["model_parameters"],
            json!({"xgboost_model_parameters": {"p": 1, "d": 0, "q": 1}})
        );
        let m = t.metric("cpu_model:1".into(), Duration::from_secs(60));
        assert_eq!(m.labels["sequence_size"], "12");
        assert_eq!(m.labels["model_type"], "ARIMA");
        assert!(matches!(parse_train(&json!({})), Err(Rejection::Schema(e)) if e.len() == 6));
        let mut bad_size = body.clone();
        bad_size["test_size"] = json!(1.5);
        assert!(matches!(parse_train(&bad_size), Err(Rejection::Bad(_))));
        let mut bad_name = body.clone();
        bad_name["model_name"] = json!("a:b");
        assert!(matches!(parse_train(&bad_name), Err(Rejection::Bad(_))));
        // Labels the started metric could not take are refused before training.
        for label in ["__name__", "model_type", "bad-name"] {
            let mut b = body.clone();
            b["labels"] = json!({label: "x"});
            assert!(
                matches!(parse_train(&b), Err(Rejection::Bad(m)) if m.contains("label name")),
                "{label}"
            );
        }
    }
}
