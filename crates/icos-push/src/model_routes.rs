//! Model metrics at run time: the routes that define, train, list and remove models, one cycle
//! (telemetry, prediction, write), and the background task per metric.

use super::*;
use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use crate::forecast;
use crate::grafana::GrafanaSource;
use crate::intelligence::Intelligence;
use crate::models::{
    Definition, LOCAL_TYPES, MAX_POINTS, ModelsConfig, Outcome, REMOTE_TYPES, TrainRequest,
    TrainedModel,
};
use crate::telemetry::{PrometheusSource, TelemetryError};

/// Where model input comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Prometheus(PrometheusSource),
    Grafana(GrafanaSource),
}

impl Source {
    /// The newest `steps_back` values of each expression, padded at the start (spec §4.4).
    async fn inputs(
        &self,
        http: &reqwest::Client,
        exprs: &[String],
        end: f64,
        step: Duration,
        steps_back: usize,
    ) -> Result<Vec<Vec<f64>>, TelemetryError> {
        match self {
            Self::Prometheus(p) => {
                let mut out = Vec::with_capacity(exprs.len());
                for expr in exprs {
                    out.push(p.input(http, expr, end, step, steps_back).await?);
                }
                Ok(out)
            }
            Self::Grafana(g) => Ok(g
                .series(http, exprs, end, steps_back)
                .await?
                .into_iter()
                .map(|v| telemetry::pad(v, steps_back))
                .collect()),
        }
    }

    /// Up to `points` values of `expr` up to `end`, oldest first, unpadded (a training's
    /// history).
    async fn history(
        &self,
        http: &reqwest::Client,
        expr: &str,
        end: f64,
        step: Duration,
        points: usize,
    ) -> Result<Vec<f64>, TelemetryError> {
        match self {
            Self::Prometheus(p) => p.series(http, expr, end, step, points).await,
            Self::Grafana(g) => {
                let mut all = g.series(http, &[expr.to_owned()], end, points).await?;
                Ok(all.pop().unwrap_or_default())
            }
        }
    }

    /// The distance between two input values for a metric running at `step`.
    fn step(&self, step: Duration) -> Duration {
        match self {
            Self::Prometheus(_) => step,
            Self::Grafana(g) => g.step(),
        }
    }
}

/// The models table, checked: what every cycle of this instance uses.
#[derive(Debug)]
pub(crate) struct ModelSettings {
    pub(crate) source: Option<Source>,
    pub(crate) intelligence: Option<Intelligence>,
    pub(crate) interval: Duration,
    pub(crate) max_model_metrics: usize,
}

fn read_secret(
    literal: &Option<String>,
    file: &Option<std::path::PathBuf>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match (literal, file) {
        (Some(_), Some(_)) => Err(ConfigError(format!(
            "models: give {key} or {key}_file, not both"
        ))),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| ConfigError(format!("models: {key}_file {}: {e}", f.display()))),
        (None, None) => Ok(None),
    }
}

fn url(key: &str, raw: &str) -> Result<reqwest::Url, ConfigError> {
    let u = reqwest::Url::parse(raw.trim())
        .map_err(|e| ConfigError(format!("models: {key} {raw:?}: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(ConfigError(format!(
            "models: {key} {raw:?}: only http and https are supported"
        )));
    }
    Ok(u)
}

impl ModelSettings {
    pub(crate) fn new(
        c: &ModelsConfig,
        env: &tidegauge_core::factory::Environment,
    ) -> Result<Self, ConfigError> {
        let c = &c
            .resolve(env)
            .map_err(|e| ConfigError(format!("models: {e}")))?;
        let interval = c.interval.unwrap_or(Duration::from_secs(60));
        if interval.is_zero() || c.timeout.is_zero() || c.train_timeout.is_zero() {
            return Err(ConfigError(
                "models: interval, timeout and train_timeout must be greater than zero".into(),
            ));
        }
        let source = match (&c.prometheus_url, &c.grafana_url) {
            (Some(p), Some(g)) => {
                return Err(ConfigError(format!(
                    "models: both prometheus_url ({p}) and grafana_url ({g}) are set (PROMETHEUS_API_BASE_URL and GRAFANA_API_BASE_URL); configure one telemetry source"
                )));
            }
            (Some(p), None) => {
                let token = read_secret(
                    &c.prometheus_bearer_token,
                    &c.prometheus_bearer_token_file,
                    "prometheus_bearer_token",
                )?;
                let auth = match (token, &c.prometheus_basic_auth) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError(
                            "models: give prometheus_bearer_token or prometheus_basic_auth, not both"
                                .into(),
                        ));
                    }
                    (Some(t), None) => Some(telemetry::Auth::Bearer(t)),
                    (None, Some(b)) => Some(telemetry::Auth::Basic {
                        username: b.username.clone(),
                        password: read_secret(
                            &b.password,
                            &b.password_file,
                            "prometheus_basic_auth.password",
                        )?
                        .unwrap_or_default(),
                    }),
                    (None, None) => None,
                };
                Some(Source::Prometheus(PrometheusSource::new(
                    &url("prometheus_url", p)?,
                    auth,
                    c.timeout,
                )))
            }
            (None, Some(g)) => {
                let token = read_secret(&c.grafana_token, &c.grafana_token_file, "grafana_token")?
                    .ok_or_else(|| ConfigError("models: grafana_url is set but grafana_token is not (GRAFANA_SERVICE_ACCOUNT_BEARER_TOKEN)".into()))?;
                let uid = c.grafana_datasource_uid.clone().ok_or_else(|| {
                    ConfigError("models: grafana_url is set but grafana_datasource_uid is not (GRAFANA_DATASOURCE_UID)".into())
                })?;
                let interval_ms = c.grafana_interval_ms.unwrap_or(60_000);
                if interval_ms == 0 {
                    return Err(ConfigError(
                        "models: grafana_interval_ms must be greater than zero".into(),
                    ));
                }
                Some(Source::Grafana(GrafanaSource::new(
                    &url("grafana_url", g)?,
                    token,
                    uid,
                    interval_ms,
                    c.grafana_utc_offset_sec.unwrap_or(7200),
                    c.timeout,
                )))
            }
            (None, None) => None,
        };
        let intelligence = c
            .intelligence_url
            .as_deref()
            .map(|u| {
                url("intelligence_url", u)
                    .map(|u| Intelligence::new(&u, c.timeout, c.train_timeout))
            })
            .transpose()?;
        Ok(Self {
            source,
            intelligence,
            interval,
            max_model_metrics: c.max_model_metrics,
        })
    }
}

/// Model-metric state that outlives a reload: definitions, trained models, tasks, errors.
pub(crate) struct ModelState {
    pub(crate) definitions: Mutex<BTreeMap<String, Arc<Definition>>>,
    pub(crate) trained: Mutex<BTreeMap<String, TrainedModel>>,
    tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    pub(crate) errors: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// The instances built on this state, newest last: a task runs its cycles with the newest
    /// one alive (its settings are the configuration in force).
    instances: Mutex<Vec<Weak<Inner>>>,
    /// Orders definition changes with their commits.
    changes: tokio::sync::Mutex<()>,
    /// Fits running at once (ETS, MSTL, auto: up to seconds on 11,000 points), one core fewer
    /// than the machine has (at least one): a burst of definitions or trainings must not take
    /// the CPU that scrapes and cheap cycles need. Linear forecasts take microseconds and
    /// never wait.
    forecasts: tokio::sync::Semaphore,
    /// Names whose first cycle runs now, with the names they will expose and the model tag
    /// they use: they count toward the limit, against collisions and against removing that
    /// model before they are defined.
    reserved: Mutex<HashMap<String, Reserved>>,
    /// Every name a defined model metric writes, and which metric writes it: pushes may not
    /// write them.
    written: Mutex<HashMap<String, String>>,
    /// Per metric, when its last cycle ended (Unix seconds) and why it failed, if it did.
    last: Mutex<HashMap<String, (f64, Option<String>)>>,
}

/// What a reservation holds: the names the metric will write, and the model tag it uses.
type Reserved = (Vec<String>, Option<String>);

/// A name reserved while its definition's first cycle runs; released when dropped.
struct Reservation<'a> {
    models: &'a ModelState,
    name: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.models.reserved).remove(&self.name);
    }
}

impl Drop for ModelState {
    fn drop(&mut self) {
        for (_, t) in lock(&self.tasks).drain() {
            t.abort();
        }
    }
}

impl ModelState {
    pub(crate) fn restored(defs: Vec<Definition>, trained: Vec<TrainedModel>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let s = Self {
            definitions: Mutex::new(
                defs.into_iter()
                    .map(|d| (d.name.clone(), Arc::new(d)))
                    .collect(),
            ),
            trained: Mutex::new(trained.into_iter().map(|t| (t.tag(), t)).collect()),
            tasks: Mutex::default(),
            errors: Mutex::default(),
            instances: Mutex::default(),
            changes: tokio::sync::Mutex::new(()),
            forecasts: tokio::sync::Semaphore::new(cores.saturating_sub(1).max(1)),
            reserved: Mutex::default(),
            written: Mutex::default(),
            last: Mutex::default(),
        };
        let defs: Vec<Arc<Definition>> = lock(&s.definitions).values().cloned().collect();
        for d in defs {
            s.index(&d, None);
        }
        s
    }

    /// Records the names `def` writes (after forgetting those of `old`, the definition it
    /// replaces or removes); `def` none: removal.
    fn index(&self, def: &Definition, old: Option<&Definition>) {
        let mut written = lock(&self.written);
        if let Some(old) = old {
            for n in old.exposed_names() {
                written.remove(&n);
            }
        }
        for n in def.exposed_names() {
            written.insert(n, def.name.clone());
        }
    }

    /// The model metrics as the landing page shows them (`now` in Unix seconds): model, step,
    /// the last cycle and its error.
    pub(crate) fn status(&self, now: f64, interval: Duration) -> tidegauge_core::status::Section {
        use tidegauge_core::status::{Cell, Health, Row, Section};
        let mut section = Section::new(
            "Model metrics",
            &["metric", "model", "step", "last cycle", "last error"],
        );
        let last = lock(&self.last);
        for (name, def) in lock(&self.definitions).iter() {
            let (health, age, error) = match last.get(name) {
                None => (Health::Unknown, None, String::new()),
                Some((at, err)) => (
                    if err.is_some() {
                        Health::Failing
                    } else {
                        Health::Ok
                    },
                    Some(Duration::try_from_secs_f64(now - at).unwrap_or_default()),
                    err.clone().unwrap_or_default(),
                ),
            };
            section.rows.push(Row::new(
                health,
                vec![
                    Cell::Text(name.clone()),
                    Cell::Text(def.model_tag.clone()),
                    Cell::Span(def.step(interval)),
                    Cell::Ago(age),
                    Cell::Text(error),
                ],
            ));
        }
        section
    }

    /// Forgets a definition and the names it writes.
    fn forget(&self, name: &str) -> Option<Arc<Definition>> {
        lock(&self.last).remove(name);
        let removed = lock(&self.definitions).remove(name);
        if let Some(d) = &removed {
            let mut written = lock(&self.written);
            for n in d.exposed_names() {
                written.remove(&n);
            }
        }
        removed
    }

    /// The model metric that writes `name`, if one does.
    pub(crate) fn writer_of(&self, name: &str) -> Option<String> {
        lock(&self.written).get(name).cloned()
    }

    /// Runs a forecast on the blocking pool; unless `cheap`, when a fit may start.
    async fn forecast<T: Send + 'static>(
        &self,
        cheap: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let _permit = if cheap {
            None
        } else {
            Some(self.forecasts.acquire().await.map_err(|e| e.to_string())?)
        };
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| format!("the forecast failed: {e}"))
    }

    /// Reserves `def`'s name for its first cycle: refused when another request is defining it,
    /// when the limit is reached, or when another model metric exposes one of its names.
    fn reserve(&self, def: &Definition, max: usize) -> Result<Reservation<'_>, String> {
        let defs = lock(&self.definitions);
        let mut reserved = lock(&self.reserved);
        if reserved.contains_key(&def.name) {
            return Err(format!(
                "model metric {} is being defined by another request; try again when it is answered",
                def.name
            ));
        }
        // A re-post being defined replaces a metric, it does not add one.
        let count = defs.len() + reserved.keys().filter(|n| !defs.contains_key(*n)).count();
        if !defs.contains_key(&def.name) && count >= max {
            return Err(format!(
                "{count} model metrics are defined, the limit (max_model_metrics); stop one first"
            ));
        }
        let names = def.exposed_names();
        let written = lock(&self.written);
        let defined = names.iter().find_map(|n| {
            written
                .get(n)
                .filter(|w| **w != def.name)
                .map(|w| (w.clone(), n))
        });
        let pending = reserved.iter().find_map(|(other, (exposed, _))| {
            names
                .iter()
                .find(|n| exposed.contains(n))
                .map(|n| (other.clone(), n))
        });
        if let Some((other, n)) = defined.or(pending) {
            return Err(format!(
                "model metric {other} already writes {n}; two model metrics cannot share a series"
            ));
        }
        drop(written);
        reserved.insert(def.name.clone(), (names, Some(def.model_tag.clone())));
        Ok(Reservation {
            models: self,
            name: def.name.clone(),
        })
    }

    pub(crate) fn attach(&self, inner: &Arc<Inner>) {
        let mut v = lock(&self.instances);
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(inner));
    }

    fn current(&self) -> Option<Arc<Inner>> {
        lock(&self.instances).iter().rev().find_map(Weak::upgrade)
    }

    fn count_error(&self, metric: &str, reason: &'static str) {
        *lock(&self.errors)
            .entry((metric.to_owned(), reason))
            .or_default() += 1;
    }

    /// The exposition of the errors counter and the number of model metrics.
    pub(crate) fn families(&self) -> Vec<tidegauge_core::MetricFamily> {
        let mut errors = tidegauge_core::MetricFamily::counter(
            "tidegauge_icos_push_model_errors",
            "Model-metric cycles that failed after the first, by metric and reason (telemetry, no_data, model, write, config).",
        );
        for ((metric, reason), n) in lock(&self.errors).iter() {
            errors.push(
                tidegauge_core::labels([("metric", metric.as_str()), ("reason", reason)]),
                *n as f64,
            );
        }
        let defined = tidegauge_core::MetricFamily::gauge(
            "tidegauge_icos_push_model_metrics",
            "Model metrics defined (each runs a cycle per step).",
        )
        .with(vec![], lock(&self.definitions).len() as f64);
        vec![errors, defined]
    }
}

/// Why a cycle failed: a bounded reason for the errors counter, and the message.
#[derive(Debug)]
pub(crate) struct CycleError {
    reason: &'static str,
    message: String,
}

impl CycleError {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            // Bounded: it goes to the log, the answer and the landing page.
            message: tidegauge_core::status::clip(&message.into(), 1000),
        }
    }
}

/// What answers a model tag.
enum Backend {
    Local(Local),
    Remote(Intelligence),
}

/// A model run here.
enum Local {
    Embedded(forecast::Model),
    Trained(TrainedModel),
}

impl Local {
    /// Linear fits take microseconds: they never wait for a core.
    fn cheap(&self) -> bool {
        match self {
            Self::Embedded(m) => *m == forecast::Model::Linear,
            Self::Trained(t) => t.fitted.model == forecast::Model::Linear,
        }
    }

    fn forecast(
        self,
        series: &[f64],
        period: Option<usize>,
    ) -> Result<forecast::Forecast, forecast::ForecastError> {
        match self {
            Self::Embedded(m) => forecast::forecast(m, series, period),
            Self::Trained(t) => forecast::forecast_trained(&t.fitted, series),
        }
    }
}

/// The backend of `tag`: an embedded model, a model trained here (`<name>:<version>`, or
/// `<name>:latest` for its newest version), else the remote API when one is configured.
fn resolve(inner: &Inner, tag: &str) -> Result<Backend, String> {
    if let Some(m) = forecast::Model::from_tag(tag) {
        return Ok(Backend::Local(Local::Embedded(m)));
    }
    let trained = lock(&inner.durable.models.trained);
    let local = match tag.rsplit_once(':') {
        Some((name, "latest")) => trained
            .values()
            .filter(|t| t.name == name)
            .max_by_key(|t| t.version),
        _ => trained.get(tag),
    };
    if let Some(t) = local {
        return Ok(Backend::Local(Local::Trained(t.clone())));
    }
    if !tag.starts_with("embedded:")
        && let Some(i) = &inner.models.intelligence
    {
        return Ok(Backend::Remote(i.clone()));
    }
    let mut known: Vec<String> = forecast::Model::TAGS
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    known.extend(trained.keys().take(50).cloned());
    Err(format!(
        "model_tag {tag:?} is not known. Known tags: {}{}.",
        known.join(", "),
        if inner.models.intelligence.is_none() {
            "; other tags need the Intelligence API (INTELLIGENCE_API_BASE_URL)"
        } else {
            ""
        }
    ))
}

/// The name rules a model metric's name must pass before anything runs: those of
/// `create_metric`, for the metric and its three gauges.
fn check_name(
    inner: &Inner,
    name: &str,
    kind: model::Kind,
    labels: &BTreeMap<String, String>,
) -> Result<(), String> {
    let probe = |n: &str, k: model::Kind| model::CreateRequest {
        kind: k,
        name: n.to_owned(),
        info: None,
        value: json!(0.0),
        labels: BTreeMap::new(),
        states: Vec::new(),
    };
    let state = lock(&inner.durable.state);
    let mut names = vec![probe(name, kind)];
    for suffix in ["confidence", "lower", "upper"] {
        names.push(probe(&format!("{name}_{suffix}"), model::Kind::Gauge));
    }
    for p in &names {
        // The metric itself may be running already: a training replaces it.
        reserved_by_others(inner, &state.groups, p, Some(name)).map_err(|r| match r {
            Rejection::Bad(m) => m,
            Rejection::Schema(e) => Json::from(e).to_string(),
        })?;
        if !tidegauge_core::snapshot::is_valid_metric_name(&p.name)
            || p.name.starts_with("tidegauge_")
        {
            return Err(format!(
                "metric name {:?} is not valid for a model metric (a Prometheus metric name, not starting with tidegauge_)",
                p.name
            ));
        }
        if let Some(m) = state
            .registry
            .base_of(&p.name)
            .and_then(|b| state.registry.get(&b).cloned())
        {
            if m.kind != p.kind {
                return Err(format!(
                    "{} is already a metric of another type; a model metric cannot take it",
                    p.name
                ));
            }
            if !m.label_names.iter().eq(labels.keys()) {
                return Err(format!(
                    "{} is already a metric with the labels {:?}; the model metric would write {:?}",
                    p.name,
                    m.label_names,
                    labels.keys().collect::<Vec<_>>()
                ));
            }
        }
    }
    Ok(())
}

/// Checks a definition against what this instance can run (400 detail on failure).
fn check_definition(inner: &Inner, def: &Definition) -> Result<(), String> {
    if inner.models.source.is_none() {
        return Err(no_source());
    }
    match resolve(inner, &def.model_tag)? {
        Backend::Local(_) if def.telemetry_metrics.len() > 1 => Err(format!(
            "model {} forecasts one series, and telemetry_metrics has {} expressions; give one",
            def.model_tag,
            def.telemetry_metrics.len()
        )),
        _ => Ok(()),
    }
}

fn no_source() -> String {
    "no telemetry source is configured: set prometheus_url (PROMETHEUS_API_BASE_URL) or grafana_url (GRAFANA_API_BASE_URL) in [collectors.icos-push.models]".into()
}

/// One cycle: read the telemetry, predict, write the prediction and its bounds.
pub(crate) async fn cycle(inner: &Inner, def: &Definition) -> Result<Outcome, CycleError> {
    let result = run_cycle(inner, def).await;
    let at = unix_seconds(inner.services.clock.now());
    let error = result.as_ref().err().map(|e| e.message.clone());
    let models = &inner.durable.models;
    let mut last = lock(&models.last);
    // A first cycle that fails defines nothing: remembering it would let requests grow the map.
    if error.is_none() || lock(&models.definitions).contains_key(&def.name) {
        last.insert(def.name.clone(), (at, error));
    }
    result
}

async fn run_cycle(inner: &Inner, def: &Definition) -> Result<Outcome, CycleError> {
    let source = inner
        .models
        .source
        .as_ref()
        .ok_or_else(|| CycleError::new("config", no_source()))?;
    let backend = resolve(inner, &def.model_tag).map_err(|m| CycleError::new("config", m))?;
    let http = &inner.services.http;
    let end = unix_seconds(inner.services.clock.now());
    let step = source.step(def.step(inner.models.interval));
    let inputs = source
        .inputs(http, &def.telemetry_metrics, end, step, def.steps_back)
        .await
        .map_err(|e| {
            let reason = if e.reason.starts_with("no data") {
                "no_data"
            } else {
                "telemetry"
            };
            CycleError::new(reason, e.to_string())
        })?;
    let model_err = |m: String| CycleError::new("model", m);
    let outcome = match backend {
        Backend::Remote(api) => {
            let p = api
                .predict(
                    http,
                    &def.model_tag,
                    def.steps_back,
                    def.data_interruption,
                    &def.history_data,
                    &inputs,
                    def.history_sample_size,
                    kind_number(def.kind),
                )
                .await
                .map_err(|e| model_err(e.0))?;
            Outcome {
                value: p.value,
                confidence: p.confidence,
                interval: p.interval,
            }
        }
        Backend::Local(local) => {
            let series = inputs.into_iter().next().unwrap_or_default();
            let period = def.period;
            let f = inner
                .durable
                .models
                .forecast(local.cheap(), move || local.forecast(&series, period))
                .await
                .map_err(model_err)?
                .map_err(|e| model_err(e.to_string()))?;
            Outcome {
                value: f.value,
                confidence: f.confidence,
                interval: Some((f.lower, f.upper)),
            }
        }
    };
    if !outcome.value.is_finite() {
        return Err(model_err(format!(
            "the prediction is {}, not a number a metric can hold",
            outcome.value
        )));
    }
    let writes = def.writes(&outcome).map_err(model_err)?;
    create_all(inner, &writes, Some(&def.name))
        .await
        .map_err(|e| CycleError::new("write", e.message()))?;
    Ok(outcome)
}

fn kind_number(kind: model::Kind) -> u8 {
    match kind {
        model::Kind::Counter => 1,
        model::Kind::Gauge => 2,
        model::Kind::Info => 3,
        model::Kind::Enum => 4,
    }
}

/// Starts (or replaces) the task of `def`: a cycle every step, the first one after a step
/// unless `now`.
fn start(durable: &Arc<Durable>, def: Arc<Definition>, now: bool) {
    let weak = Arc::downgrade(durable);
    let name = def.name.clone();
    let task = tokio::spawn(async move {
        let mut next = tokio::time::Instant::now();
        let mut first = now;
        loop {
            let Some(inner) = weak.upgrade().and_then(|d| d.models.current()) else {
                return;
            };
            let step = def.step(inner.models.interval);
            drop(inner);
            if first {
                first = false;
            } else {
                let now = tokio::time::Instant::now();
                // A step too long for the clock to add means never.
                let Some(at) = next.checked_add(step) else {
                    return;
                };
                next = at.max(now);
                tokio::time::sleep_until(next).await;
            }
            let Some(inner) = weak.upgrade().and_then(|d| d.models.current()) else {
                return;
            };
            if let Err(e) = cycle(&inner, &def).await {
                inner.durable.models.count_error(&def.name, e.reason);
                // The value written last stays: the exposition marks the failure in the counter.
                lock(&inner.durable.state).generation += 1;
                tracing::warn!(metric = %def.name, reason = e.reason, error = %e.message, "model-metric cycle failed");
            }
        }
    })
    .abort_handle();
    if let Some(old) = lock(&durable.models.tasks).insert(name, task) {
        old.abort();
    }
}

/// Starts the task of every stored definition that has none (at start-up; after a reload the
/// running tasks go on with the new settings).
pub(crate) fn resume(inner: &Arc<Inner>) {
    inner.durable.models.attach(inner);
    let defs: Vec<Arc<Definition>> = lock(&inner.durable.models.definitions)
        .values()
        .cloned()
        .collect();
    for def in defs {
        let running = lock(&inner.durable.models.tasks)
            .get(&def.name)
            .is_some_and(|t| !t.is_finished());
        if !running {
            start(&inner.durable, def, true);
        }
    }
}

fn bad_request(detail: impl Into<String>) -> Response {
    json_response(StatusCode::BAD_REQUEST, json!({"detail": detail.into()}))
}

/// A refused change: its status and detail.
type Refusal = (StatusCode, String);

fn refused((status, detail): Refusal) -> Response {
    json_response(status, json!({"detail": detail}))
}

fn unstored(e: impl std::fmt::Display) -> Refusal {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the change could not be stored and was not applied: {e}"),
    )
}

fn bad(detail: impl Into<String>) -> Refusal {
    (StatusCode::BAD_REQUEST, detail.into())
}

/// Runs the first cycle of `def`; on success stores it and starts (or replaces) its task.
async fn define(
    inner: &Arc<Inner>,
    def: Definition,
    reserved: Option<Reservation<'_>>,
) -> Result<(), Refusal> {
    let _reserved = match reserved {
        Some(r) => r,
        None => inner
            .durable
            .models
            .reserve(&def, inner.models.max_model_metrics)
            .map_err(bad)?,
    };
    // Resolved once the name is reserved: a model removed from now on sees the reservation.
    check_definition(inner, &def).map_err(bad)?;
    cycle(inner, &def).await.map_err(|e| bad(e.message))?;
    let bytes = records::encode(&def).map_err(unstored)?;
    let _order = inner.durable.models.changes.lock().await;
    inner
        .durable
        .store
        .write(vec![Write::Put(def.store_key(), bytes)])
        .await
        .map_err(unstored)?;
    let def = Arc::new(def);
    let old = lock(&inner.durable.models.definitions).insert(def.name.clone(), Arc::clone(&def));
    inner.durable.models.index(&def, old.as_deref());
    inner.durable.models.attach(inner);
    start(&inner.durable, def, false);
    Ok(())
}

pub(crate) async fn create_model_metric(State(inner): State<Arc<Inner>>, body: Body) -> Response {
    let body = match json_body(&inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let def = match models::parse_create_model(&body) {
        Ok(d) => d,
        Err(r) => return rejection(r),
    };
    match define(&inner, def, None).await {
        Ok(()) => json_response(
            StatusCode::OK,
            json!({"message": "First cycle completed successfully. Metric creation started."}),
        ),
        Err(r) => refused(r),
    }
}

pub(crate) async fn stop_model_metrics(State(inner): State<Arc<Inner>>, body: Body) -> Response {
    let body = match json_body(&inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let names = match body.get("metric_names") {
        Some(Json::Array(items)) => {
            let mut names = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Json::String(s) => names.push(s.trim().to_owned()),
                    v => {
                        return rejection(Rejection::Schema(vec![json!({"type": "string_type",
                        "loc": ["body", "metric_names", i], "msg": "Input should be a valid string", "input": v})]));
                    }
                }
            }
            names
        }
        Some(v) => {
            return rejection(Rejection::Schema(vec![json!({"type": "list_type",
            "loc": ["body", "metric_names"], "msg": "Input should be a valid list", "input": v})]));
        }
        None => {
            return rejection(Rejection::Schema(vec![json!({"type": "missing",
            "loc": ["body", "metric_names"], "msg": "Field required", "input": body})]));
        }
    };
    if names.iter().any(String::is_empty) {
        return bad_request("metric_name is required.");
    }
    let models = &inner.durable.models;
    let _order = models.changes.lock().await;
    let known: Vec<String> = {
        let defs = lock(&models.definitions);
        names.into_iter().filter(|n| defs.contains_key(n)).collect()
    };
    if !known.is_empty() {
        let deletes = known
            .iter()
            .map(|n| Write::Delete(format!("{}{n}", models::DEFINITION_PREFIX)))
            .collect();
        if let Err(e) = inner.durable.store.write(deletes).await {
            return refused(unstored(e));
        }
        for n in &known {
            models.forget(n);
            if let Some(t) = lock(&models.tasks).remove(n) {
                t.abort();
            }
        }
    }
    json_response(
        StatusCode::OK,
        json!({"message": "Metric creation(s) stopped successfully."}),
    )
}

pub(crate) async fn train_model_metric(State(inner): State<Arc<Inner>>, body: Body) -> Response {
    let body = match json_body(&inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match models::parse_train(&body) {
        Ok(r) => r,
        Err(r) => return rejection(r),
    };
    if req.dataclay {
        return bad_request("DATACLAY does not exist");
    }
    let ok = || {
        json_response(
            StatusCode::OK,
            json!({"message": "Dataset created, model training started successfully."}),
        )
    };
    if LOCAL_TYPES.contains(&req.model_type.as_str()) {
        return match train_locally(&inner, &req).await {
            Ok(()) => ok(),
            Err(r) => refused(r),
        };
    }
    if !REMOTE_TYPES.contains(&req.model_type.as_str()) {
        return bad_request(format!(
            "model_type {:?} is not known: {} are trained here, {} by the Intelligence API",
            req.model_type,
            LOCAL_TYPES.join(", "),
            REMOTE_TYPES.join(", ")
        ));
    }
    let Some(api) = inner.models.intelligence.clone() else {
        return bad_request(format!(
            "model_type {} is trained by the Intelligence API, and INTELLIGENCE_API_BASE_URL (intelligence_url in [collectors.icos-push.models]) is not set; {} are trained here",
            req.model_type,
            LOCAL_TYPES.join(", ")
        ));
    };
    if inner.models.source.is_none() {
        return bad_request(no_source());
    }
    // As the original: the answer comes at once, the training runs in the background and
    // starts the model metric when it succeeds.
    let inner = Arc::clone(&inner);
    tokio::spawn(async move {
        let fail = |reason: &'static str, message: String| {
            inner.durable.models.count_error(&req.model_name, reason);
            lock(&inner.durable.state).generation += 1;
            tracing::warn!(model = %req.model_name, error = %message, "remote training failed");
        };
        let answer = match api
            .call(&inner.services.http, "train", &req.remote_body())
            .await
        {
            Ok(a) => a,
            Err(e) => return fail("model", e.0),
        };
        let Some(tag) = answer.get("Trained Model").and_then(Json::as_str) else {
            return fail(
                "model",
                format!("the train answer has no \"Trained Model\": {answer}"),
            );
        };
        let def = req.metric(tag.to_owned(), inner.models.interval);
        if let Err((_, detail)) = define(&inner, def, None).await {
            fail(
                "model",
                format!("the trained model's metric did not start: {detail}"),
            );
        }
    });
    ok()
}

/// Fits `req` here on the first expression's history, stores the model as
/// `<model_name>:<version>` and starts its metric.
async fn train_locally(inner: &Arc<Inner>, req: &TrainRequest) -> Result<(), Refusal> {
    let Some(source) = &inner.models.source else {
        return Err(bad(no_source()));
    };
    if req.telemetry_metrics.len() > 1 {
        return Err(bad(format!(
            "model_type {} is fitted to one series, and telemetry_metrics has {} expressions; give one",
            req.model_type,
            req.telemetry_metrics.len()
        )));
    }
    let model = match req.model_type.as_str() {
        "ETS" => forecast::Model::Ets,
        "MSTL" => forecast::Model::Mstl,
        _ => forecast::Model::Linear,
    };
    // The metric the training starts is checked and its names reserved first: a name it
    // cannot take is refused before a model is fitted and stored.
    let provisional = req.metric(
        format!("{}:training", req.model_name),
        inner.models.interval,
    );
    check_name(
        inner,
        &provisional.name,
        provisional.kind,
        &provisional.labels,
    )
    .map_err(bad)?;
    let reservation = inner
        .durable
        .models
        .reserve(&provisional, inner.models.max_model_metrics)
        .map_err(bad)?;
    let step = source.step(
        req.step_in_seconds
            .map(Duration::from_secs)
            .unwrap_or(inner.models.interval)
            .max(inner.models.interval),
    );
    let end = unix_seconds(inner.services.clock.now());
    let history = source
        .history(
            &inner.services.http,
            &req.telemetry_metrics[0],
            end,
            step,
            MAX_POINTS,
        )
        .await
        .map_err(|e| bad(e.to_string()))?;
    let (test_size, period) = (req.test_size, req.period);
    let models = &inner.durable.models;
    let fitted = models
        .forecast(model == forecast::Model::Linear, move || {
            forecast::train(model, &history, test_size, period)
        })
        .await
        .map_err(bad)?
        .map_err(|e| bad(e.to_string()))?;
    let trained = {
        let _order = models.changes.lock().await;
        let version = lock(&models.trained)
            .values()
            .filter(|t| t.name == req.model_name)
            .map(|t| t.version)
            .max()
            .unwrap_or(0)
            + 1;
        let trained = TrainedModel {
            name: req.model_name.clone(),
            version,
            model_type: req.model_type.clone(),
            fitted,
            steps_back: req.steps_back,
            trained_at: end,
        };
        let bytes = records::encode(&trained).map_err(unstored)?;
        inner
            .durable
            .store
            .write(vec![Write::Put(trained.store_key(), bytes)])
            .await
            .map_err(unstored)?;
        lock(&models.trained).insert(trained.tag(), trained.clone());
        trained
    };
    tracing::info!(tag = %trained.tag(), model = ?trained.fitted, "model trained");
    let def = req.metric(trained.tag(), inner.models.interval);
    define(inner, def, Some(reservation))
        .await
        .map_err(|(status, detail)| {
            (
                status,
                format!(
                    "model {} was trained and stored, but its model metric did not start: {detail}",
                    trained.tag()
                ),
            )
        })
}

pub(crate) async fn show_models(State(inner): State<Arc<Inner>>, body: Body) -> Response {
    let body = match json_body_or_empty(&inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let model = match body.get("model") {
        None | Some(Json::Null) => "all".to_owned(),
        Some(Json::String(s)) => s.trim().to_owned(),
        Some(v) => {
            return rejection(Rejection::Schema(vec![json!({"type": "string_type",
            "loc": ["body", "model"], "msg": "Input should be a valid string", "input": v})]));
        }
    };
    let mut list = serde_json::Map::new();
    if let Some(api) = &inner.models.intelligence {
        match api
            .call(
                &inner.services.http,
                "show_models",
                &json!({"model": model}),
            )
            .await
        {
            Ok(answer) => {
                if let Some(Json::Object(remote)) = answer.get("models_list") {
                    list.extend(remote.clone());
                }
            }
            Err(e) => return bad_request(e.0),
        }
    }
    for t in lock(&inner.durable.models.trained).values() {
        if model == "all" || model == t.name {
            list.insert(t.tag(), json!(t.name));
        }
    }
    json_response(
        StatusCode::OK,
        json!({"models_count": list.len(), "models_list": list}),
    )
}

pub(crate) async fn remove_model(State(inner): State<Arc<Inner>>, body: Body) -> Response {
    let body = match json_body(&inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let tag = match body.get("model_tag") {
        Some(Json::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Json::String(_)) => return bad_request("model_tag is required."),
        Some(v) => {
            return rejection(Rejection::Schema(vec![json!({"type": "string_type",
            "loc": ["body", "model_tag"], "msg": "Input should be a valid string", "input": v})]));
        }
        None => {
            return rejection(Rejection::Schema(vec![json!({"type": "missing",
            "loc": ["body", "model_tag"], "msg": "Field required", "input": body})]));
        }
    };
    let models = &inner.durable.models;
    let local = lock(&models.trained).get(&tag).cloned();
    if let Some(t) = local {
        let _order = models.changes.lock().await;
        {
            // Checked and taken out of the models in one step: a definition reserving its name
            // from now on resolves without it, one reserved before is seen here.
            let mut trained = lock(&models.trained);
            let only_version = !trained
                .values()
                .any(|o| o.name == t.name && o.version != t.version);
            let latest = format!("{}:latest", t.name);
            let uses = |used: &str| used == tag || (only_version && used == latest);
            let mut users: Vec<String> = lock(&models.definitions)
                .values()
                .filter(|d| uses(&d.model_tag))
                .map(|d| d.name.clone())
                .collect();
            users.extend(
                lock(&models.reserved)
                    .iter()
                    .filter(|(_, (_, used))| used.as_deref().is_some_and(uses))
                    .map(|(n, _)| n.clone()),
            );
            if !users.is_empty() {
                users.sort();
                users.dedup();
                return bad_request(format!(
                    "model {tag} is used by the model metrics {}; stop them first (stop_model_metrics)",
                    users.join(", ")
                ));
            }
            trained.remove(&tag);
        }
        if let Err(e) = inner
            .durable
            .store
            .write(vec![Write::Delete(t.store_key())])
            .await
        {
            lock(&models.trained).insert(tag, t);
            return refused(unstored(e));
        }
        return json_response(
            StatusCode::OK,
            json!({"Removed_model": {"name": t.name, "version": t.version.to_string()}}),
        );
    }
    match &inner.models.intelligence {
        Some(api) => match api
            .call(
                &inner.services.http,
                "remove_model",
                &json!({"model_tag": tag}),
            )
            .await
        {
            Ok(answer) => json_response(StatusCode::OK, answer),
            Err(e) => bad_request(e.0),
        },
        None => bad_request(format!(
            "model {tag:?} is not a model trained here, and no Intelligence API is configured (INTELLIGENCE_API_BASE_URL)"
        )),
    }
}
