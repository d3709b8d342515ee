//! The `app-status` collector: fetches applications' JSON status routes at scrape time and
//! turns selected fields into series.
//!
//! With no configuration it reproduces the seed exporter: target `default` from `TARGET_HOST`,
//! `TARGET_PORT`, `TARGET_METRICS`, and the families `app_requests_current`,
//! `app_requests_pending`, `app_uptime` and `app_health`.

pub mod config;
mod factory;
pub mod mapping;
pub mod path;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tidegauge_core::lock;

use futures_util::FutureExt;
use futures_util::future::join_all;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use tidegauge_core::http::{BodyError, read_body_limited};
use tidegauge_core::singleflight::SingleFlight;
use tidegauge_core::{
    CollectError, Collector, MetricFamily, MetricType, ProbeError, ProbeResult, Prober,
    ScrapeContext, Snapshot, async_trait, labels, unix_seconds,
};

pub use config::{Config, ConfigError, SeedEnv};
use config::{ModuleConfig, TargetConfig, seed_module};
pub use factory::Factory;
use mapping::{Mapping, Reason, apply};

/// The collector's name in configuration, flags and filters.
pub const NAME: &str = "app-status";

/// Default minimum interval between fetches of one target (the seed's polling interval).
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(5);

const STATUS_FAMILIES: [&str; 5] = [
    "app_status_up",
    "app_status_fetch_duration_seconds",
    "app_status_last_success_timestamp_seconds",
    "app_status_result_age_seconds",
    "app_status_errors",
];

/// A module ready for use: request settings and compiled mappings.
#[derive(Debug, Clone)]
struct Module {
    timeout: Duration,
    max_body: usize,
    headers: HeaderMap,
    valid_status: Vec<u16>,
    body: Option<String>,
    mappings: Vec<Mapping>,
    /// Sends an `Authorization` header or headers of its own: they go to configured origins
    /// only.
    credentials: bool,
}

impl Module {
    fn compile(
        name: &str,
        c: &ModuleConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let at = format!("modules.{name}");
        let err = |m: String| ConfigError(format!("{at}: {m}"));
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        for (k, v) in &c.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| err(format!("headers: invalid header name {k:?}")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| err(format!("headers.{k}: invalid header value")))?;
            headers.insert(name, value);
        }
        let secret = |lit: &Option<String>,
                      file: &Option<String>,
                      var: &Option<String>,
                      what: &str|
         -> Result<Option<String>, ConfigError> {
            match (lit, file, var) {
                (None, None, None) => Ok(None),
                (Some(s), None, None) => Ok(Some(s.clone())),
                (None, Some(f), None) => std::fs::read_to_string(f)
                    .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
                    .map_err(|e| err(format!("{what}_file {f:?}: {e}"))),
                (None, None, Some(v)) => env(v)
                    .map(Some)
                    .ok_or_else(|| err(format!("{what}_env: environment variable {v} is not set"))),
                _ => Err(err(format!(
                    "give only one of {what}, {what}_file, {what}_env"
                ))),
            }
        };
        let token = secret(
            &c.bearer_token,
            &c.bearer_token_file,
            &c.bearer_token_env,
            "bearer_token",
        )?;
        if let Some(token) = token {
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| err("bearer_token: not a valid header value".into()))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if let Some(b) = &c.basic_auth {
            if headers.contains_key(AUTHORIZATION) {
                return Err(err(
                    "give either bearer_token or basic_auth, not both".into()
                ));
            }
            let password = secret(
                &b.password,
                &b.password_file,
                &b.password_env,
                "basic_auth.password",
            )?
            .unwrap_or_default();
            let mut v = HeaderValue::from_str(&format!(
                "Basic {}",
                base64(&format!("{}:{password}", b.username))
            ))
            .map_err(|_| err("basic_auth: not a valid header value".into()))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        if c.timeout.is_zero() {
            return Err(err("timeout must be greater than zero".into()));
        }
        if c.max_body_size == 0 {
            return Err(err("max_body_size must be greater than zero".into()));
        }
        for s in &c.valid_status {
            if !(100..=599).contains(s) {
                return Err(err(format!("valid_status: {s} is not an HTTP status")));
            }
        }
        let mut mappings = Vec::with_capacity(c.metrics.len());
        let mut kinds: HashMap<String, MetricType> = HashMap::new();
        for (i, m) in c.metrics.iter().enumerate() {
            let mapping = Mapping::compile(m, &format!("{at}.metrics[{i}]"))?;
            if STATUS_FAMILIES.contains(&mapping.name()) {
                return Err(err(format!(
                    "metrics[{i}]: name {:?} is reserved for the collector's status metrics",
                    mapping.name()
                )));
            }
            if let Some(k) = kinds.insert(mapping.name().to_owned(), mapping.kind())
                && k != mapping.kind()
            {
                return Err(err(format!(
                    "metrics[{i}]: {:?} is mapped twice with different types",
                    mapping.name()
                )));
            }
            mappings.push(mapping);
        }
        Ok(Self {
            timeout: c.timeout,
            max_body: c.max_body_size,
            credentials: headers.contains_key(AUTHORIZATION) || !c.headers.is_empty(),
            headers,
            valid_status: c.valid_status.clone(),
            body: c.body.clone(),
            mappings,
        })
    }

    fn status_ok(&self, code: u16) -> bool {
        if self.valid_status.is_empty() {
            (200..300).contains(&code)
        } else {
            self.valid_status.contains(&code)
        }
    }
}

fn base64(input: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

/// The outcome of one fetch of one target.
#[derive(Debug, Clone)]
struct Fetched {
    up: bool,
    families: Vec<MetricFamily>,
    errors: Vec<Reason>,
    duration: Duration,
    at: SystemTime,
}

#[derive(Debug, Default)]
struct TargetState {
    last: Option<Arc<Fetched>>,
    last_success: Option<SystemTime>,
    errors: BTreeMap<Reason, u64>,
}

#[derive(Debug)]
struct Target {
    name: String,
    url: String,
    module: Arc<Module>,
    labels: Vec<(String, String)>,
    state: Mutex<TargetState>,
    flight: SingleFlight<Arc<Fetched>>,
}

/// The app-status collector.
#[derive(Debug)]
pub struct AppStatus {
    targets: Vec<Arc<Target>>,
    modules: BTreeMap<String, Arc<Module>>,
    min_interval: Duration,
    probe_allow: Vec<reqwest::Url>,
    /// Follows no redirect by itself: each hop is checked (see [`redirect_allowed`]).
    client: reqwest::Client,
    /// For the landing page, which has no scrape context.
    clock: Arc<dyn tidegauge_core::Clock>,
}

impl AppStatus {
    /// Builds the collector from its configuration; `env` supplies the seed's environment
    /// variables (used when no targets are configured) and `*_env` secrets.
    pub fn new(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut module_configs = config.modules.clone();
        module_configs
            .entry("default".into())
            .or_insert_with(seed_module);
        let mut modules = BTreeMap::new();
        for (name, m) in &module_configs {
            modules.insert(name.clone(), Arc::new(Module::compile(name, m, env)?));
        }
        let seed = if config.targets.is_empty() {
            Some(SeedEnv::read(env)?)
        } else {
            None
        };
        // The file's setting beats the seed's variable, which applies to configured targets too.
        let min_interval = match config.min_interval {
            Some(d) => d,
            None => SeedEnv::polling_interval(env)?.unwrap_or(DEFAULT_MIN_INTERVAL),
        };
        let target_configs = match seed {
            Some(seed) => vec![TargetConfig {
                name: "default".into(),
                url: seed.url,
                module: "default".into(),
                labels: BTreeMap::new(),
            }],
            None => config.targets.clone(),
        };
        let mut targets = Vec::new();
        let mut names = std::collections::HashSet::new();
        let mut label_sets = std::collections::HashSet::new();
        for (i, t) in target_configs.iter().enumerate() {
            let at = format!("targets[{i}]");
            if t.name.is_empty() {
                return Err(ConfigError(format!("{at}.name must not be empty")));
            }
            if !names.insert(t.name.clone()) {
                return Err(ConfigError(format!(
                    "{at}: target name {:?} is used twice",
                    t.name
                )));
            }
            let url = reqwest::Url::parse(&t.url)
                .map_err(|e| ConfigError(format!("{at}.url {:?}: {e}", t.url)))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(ConfigError(format!(
                    "{at}.url {:?}: scheme must be http or https",
                    t.url
                )));
            }
            let module = modules.get(&t.module).ok_or_else(|| {
                ConfigError(format!(
                    "{at}.module {:?}: no such module (known: {})",
                    t.module,
                    modules.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            for k in t.labels.keys() {
                tidegauge_core::snapshot::check_label_name(k)
                    .map_err(|e| ConfigError(format!("{at}.labels: {e}")))?;
                if let Some(m) = module
                    .mappings
                    .iter()
                    .find(|m| m.label_names().contains(&k.as_str()))
                {
                    return Err(ConfigError(format!(
                        "{at}.labels.{k}: module {:?} already writes label {k:?} on {}; choose another name",
                        t.module,
                        m.name()
                    )));
                }
            }
            if !label_sets.insert(t.labels.clone()) && target_configs.len() > 1 {
                return Err(ConfigError(format!(
                    "{at}: labels {:?} are the same as another target's; with several targets each needs distinct labels so their series do not collide",
                    t.labels
                )));
            }
            targets.push(Arc::new(Target {
                name: t.name.clone(),
                url: url.to_string(),
                module: Arc::clone(module),
                labels: t
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                state: Mutex::new(TargetState::default()),
                flight: SingleFlight::new(),
            }));
        }
        // Families of one name must agree in type across the modules in use.
        let mut kinds: HashMap<&str, MetricType> = HashMap::new();
        for t in &targets {
            for m in &t.module.mappings {
                if let Some(k) = kinds.insert(m.name(), m.kind())
                    && k != m.kind()
                {
                    return Err(ConfigError(format!(
                        "metric {:?} has different types in different modules",
                        m.name()
                    )));
                }
            }
        }
        let mut probe_allow = Vec::new();
        for (i, a) in config.probe.allow.iter().enumerate() {
            let url = reqwest::Url::parse(a).map_err(|e| ConfigError(format!("probe.allow[{i}] {a:?}: {e} (expected a URL prefix such as \"http://app-1:8000/\")")))?;
            if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
                return Err(ConfigError(format!(
                    "probe.allow[{i}] {a:?}: expected scheme://host[:port][/path] without credentials"
                )));
            }
            probe_allow.push(url);
        }
        let client = tidegauge_core::http::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError(format!("HTTP client: {e}")))?;
        Ok(Self {
            targets,
            modules,
            min_interval,
            probe_allow,
            client,
            clock: Arc::new(tidegauge_core::SystemClock),
        })
    }

    /// The same collector reading time from `clock` on the landing page (the host's).
    pub fn with_clock(mut self, clock: Arc<dyn tidegauge_core::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The targets' names and URLs.
    pub fn targets(&self) -> Vec<(String, String)> {
        self.targets
            .iter()
            .map(|t| (t.name.clone(), t.url.clone()))
            .collect()
    }

    async fn refresh(&self, target: &Arc<Target>, ctx: &ScrapeContext) -> Arc<Fetched> {
        let now = ctx.now();
        if let Some(last) = lock(&target.state).last.clone() {
            let age = now.duration_since(last.at).unwrap_or_default();
            if age < self.min_interval {
                return last;
            }
        }
        let t = Arc::clone(target);
        let ctx2 = ctx.clone();
        let hops = Hops {
            client: self.client.clone(),
            allow: self.probe_allow.clone(),
            probe: false,
        };
        let flight = target.flight.run(move || {
            async move {
                let fetched = Arc::new(fetch(&t.module, &t.url, &t.labels, &ctx2, &hops).await);
                let mut st = lock(&t.state);
                for r in &fetched.errors {
                    *st.errors.entry(*r).or_default() += 1;
                }
                if fetched.up {
                    st.last_success = Some(fetched.at);
                }
                st.last = Some(Arc::clone(&fetched));
                fetched
            }
            .boxed()
        });
        match flight.await {
            Some(f) => f,
            // The fetch task panicked: report the target down rather than nothing.
            None => Arc::new(Fetched {
                up: false,
                families: Vec::new(),
                errors: Vec::new(),
                duration: Duration::ZERO,
                at: now,
            }),
        }
    }
}

/// How a fetch follows redirects.
#[derive(Debug, Clone)]
struct Hops {
    client: reqwest::Client,
    allow: Vec<reqwest::Url>,
    /// A `/probe` (the target came from a request) rather than a configured target.
    probe: bool,
}

/// Redirects followed at most.
const MAX_REDIRECTS: usize = 10;

impl Hops {
    /// Whether a redirect from a fetch of `original` may lead to `next`: never to another
    /// origin with the module's credentials; for a probe with `probe.allow`, only within it;
    /// for a configured target, within its origin or `probe.allow`.
    fn allowed(&self, module: &Module, original: &reqwest::Url, next: &reqwest::Url) -> bool {
        let same = tidegauge_core::http::same_origin(original, next);
        let listed = self.allow.iter().any(|p| allowed(p, next));
        if !matches!(next.scheme(), "http" | "https") || (module.credentials && !same) {
            return false;
        }
        match (self.probe, self.allow.is_empty()) {
            (true, false) => listed,
            (true, true) => true,
            (false, empty) => same || empty || listed,
        }
    }
}

/// Fetches `url` and applies the module; never fails, errors become reasons.
async fn fetch(
    module: &Module,
    url: &str,
    extra: &[(String, String)],
    ctx: &ScrapeContext,
    hops: &Hops,
) -> Fetched {
    let started = std::time::Instant::now();
    let at = ctx.now();
    let timeout = module.timeout.min(ctx.upstream_budget());
    let result = tokio::time::timeout(timeout, fetch_body(module, url, hops)).await;
    let doc = match result {
        Err(_) => Err(Reason::Timeout),
        Ok(r) => r,
    };
    let mut out = Fetched {
        up: false,
        families: Vec::new(),
        errors: Vec::new(),
        duration: Duration::ZERO,
        at,
    };
    match doc {
        Ok(doc) => {
            let mapped = apply(&module.mappings, &doc, extra);
            out.up = true;
            out.families = mapped.families;
            out.errors = mapped.errors;
        }
        Err(reason) => {
            tracing::debug!(%url, reason = reason.as_str(), "status fetch failed");
            out.errors.push(reason);
        }
    }
    out.duration = started.elapsed();
    out
}

async fn fetch_body(module: &Module, url: &str, hops: &Hops) -> Result<serde_json::Value, Reason> {
    let original = reqwest::Url::parse(url).map_err(|_| Reason::Connect)?;
    let mut url = original.clone();
    let mut post = module.body.is_some();
    let mut redirects = 0;
    let resp = loop {
        let req = match (&module.body, post) {
            (Some(body), true) => hops.client.post(url.clone()).body(body.clone()),
            _ => hops.client.get(url.clone()),
        };
        let resp = req
            .headers(module.headers.clone())
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok());
        let Some(next) = location.filter(|_| status.is_redirection()) else {
            break resp;
        };
        redirects += 1;
        if redirects > MAX_REDIRECTS || !hops.allowed(module, &original, &next) {
            tracing::debug!(from = %url, to = %next, "redirect refused");
            return Err(Reason::Redirect);
        }
        // As browsers do: 303, and 301/302 after a POST, continue with a GET.
        if status == reqwest::StatusCode::SEE_OTHER
            || (post && matches!(status.as_u16(), 301 | 302))
        {
            post = false;
        }
        url = next;
    };
    if !module.status_ok(resp.status().as_u16()) {
        return Err(Reason::HttpStatus);
    }
    let body = read_body_limited(resp, module.max_body)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { .. } => Reason::BodyTooLarge,
            BodyError::Transport(e) => classify(e),
        })?;
    serde_json::from_slice(&body).map_err(|_| Reason::InvalidJson)
}

fn classify(e: reqwest::Error) -> Reason {
    if e.is_timeout() {
        Reason::Timeout
    } else {
        Reason::Connect
    }
}

/// Merges families of the same name (several targets) keeping first-seen order.
fn merge_into(
    out: &mut Vec<MetricFamily>,
    index: &mut HashMap<String, usize>,
    families: &[MetricFamily],
) {
    for f in families {
        match index.get(&f.name) {
            Some(&i) => out[i].samples.extend(f.samples.iter().cloned()),
            None => {
                index.insert(f.name.clone(), out.len());
                out.push(f.clone());
            }
        }
    }
}

#[async_trait]
impl Collector for AppStatus {
    fn name(&self) -> &str {
        NAME
    }

    /// Each target's last fetch: up or down, when, and why it failed.
    fn status(&self) -> tidegauge_core::status::Status {
        use tidegauge_core::status::{Cell, Health, Row, Section, Status};
        let now = self.clock.now();
        let ago = |t: SystemTime| Cell::Ago(Some(now.duration_since(t).unwrap_or_default()));
        let mut section = Section::new(
            "Targets",
            &[
                "target",
                "url",
                "state",
                "last fetch",
                "last success",
                "last errors",
            ],
        );
        for t in &self.targets {
            let st = lock(&t.state);
            let (health, state, fetched, errors) = match &st.last {
                None => (
                    Health::Unknown,
                    "not fetched yet",
                    Cell::Ago(None),
                    String::new(),
                ),
                Some(f) => (
                    if f.up { Health::Ok } else { Health::Failing },
                    if f.up { "up" } else { "down" },
                    ago(f.at),
                    f.errors
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            };
            // Without credentials or query, which may carry secrets.
            let url = reqwest::Url::parse(&t.url).map_or_else(
                |_| t.url.clone(),
                |mut u| {
                    let _ = u.set_username("");
                    let _ = u.set_password(None);
                    u.set_query(None);
                    u.to_string()
                },
            );
            section.rows.push(Row::new(
                health,
                vec![
                    Cell::Text(t.name.clone()),
                    Cell::Text(url),
                    Cell::Text(state.into()),
                    fetched,
                    st.last_success.map_or(Cell::Ago(None), ago),
                    Cell::Text(errors),
                ],
            ));
        }
        Status {
            sections: vec![section],
        }
    }

    async fn collect(&self, ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        let results = join_all(self.targets.iter().map(|t| self.refresh(t, ctx))).await;
        let now = ctx.now();
        let mut mapped = Vec::new();
        let mut index = HashMap::new();
        let mut up = MetricFamily::gauge(
            "app_status_up",
            "Whether the last fetch of the target's status route succeeded (accepted status and a JSON document).",
        );
        let mut duration = MetricFamily::gauge(
            "app_status_fetch_duration_seconds",
            "Duration of the last fetch of the target's status route.",
        );
        let mut last_ok = MetricFamily::gauge(
            "app_status_last_success_timestamp_seconds",
            "Time of the last successful fetch of the target's status route.",
        );
        let mut age = MetricFamily::gauge(
            "app_status_result_age_seconds",
            "Age of the result served; results are reused for the minimum interval between fetches.",
        );
        let mut errors = MetricFamily::counter(
            "app_status_errors",
            "Errors met fetching or mapping the target's status, by reason.",
        );
        for (t, r) in self.targets.iter().zip(&results) {
            merge_into(&mut mapped, &mut index, &r.families);
            let l = labels([("target", &t.name)]);
            up.push(l.clone(), if r.up { 1.0 } else { 0.0 });
            duration.push(l.clone(), r.duration.as_secs_f64());
            age.push(
                l.clone(),
                now.duration_since(r.at).unwrap_or_default().as_secs_f64(),
            );
            let st = lock(&t.state);
            if let Some(ts) = st.last_success {
                last_ok.push(l.clone(), unix_seconds(ts));
            }
            for reason in Reason::ALL {
                let n = st.errors.get(&reason).copied().unwrap_or(0);
                errors.push(
                    labels([("target", &t.name), ("reason", reason.as_str())]),
                    n as f64,
                );
            }
        }
        let mut snap = Snapshot::new();
        for f in mapped {
            snap.push(f);
        }
        for f in [up, duration, last_ok, age, errors] {
            snap.push(f);
        }
        Ok(Arc::new(snap))
    }

    fn prober(&self) -> Option<&dyn Prober> {
        Some(self)
    }
}

#[async_trait]
impl Prober for AppStatus {
    fn modules(&self) -> Vec<String> {
        self.modules.keys().cloned().collect()
    }

    async fn probe(
        &self,
        module: &str,
        target: &str,
        ctx: &ScrapeContext,
    ) -> Result<ProbeResult, ProbeError> {
        let m = self
            .modules
            .get(module)
            .ok_or_else(|| ProbeError::UnknownModule(module.to_owned()))?;
        let raw = target.trim();
        let with_scheme = if raw.contains("://") {
            raw.to_owned()
        } else {
            format!("http://{raw}")
        };
        let url = reqwest::Url::parse(&with_scheme)
            .map_err(|e| ProbeError::BadTarget(format!("{raw:?}: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ProbeError::BadTarget(format!(
                "{raw:?}: scheme must be http or https"
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ProbeError::BadTarget(format!(
                "{raw:?}: credentials in the URL are not accepted"
            )));
        }
        if !self.probe_allow.is_empty() && !self.probe_allow.iter().any(|p| allowed(p, &url)) {
            return Err(ProbeError::Forbidden(url.to_string()));
        }
        let url = url.to_string();
        // Without an allow list, a module's credentials go only to its own configured targets.
        if m.credentials
            && self.probe_allow.is_empty()
            && !self
                .targets
                .iter()
                .any(|t| Arc::ptr_eq(&t.module, m) && same_url(&t.url, &url))
        {
            return Err(ProbeError::CredentialsWithheld {
                module: module.to_owned(),
                target: url,
            });
        }
        let hops = Hops {
            client: self.client.clone(),
            allow: self.probe_allow.clone(),
            probe: true,
        };
        let fetched = fetch(m, &url, &[], ctx, &hops).await;
        let mut snapshot = Snapshot::new();
        for f in fetched.families {
            snapshot.push(f);
        }
        Ok(ProbeResult {
            success: fetched.up,
            snapshot,
        })
    }
}

/// Whether two URL strings name the same URL once normalised.
fn same_url(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Same scheme, host and port as the allowed prefix, and a path under its path.
fn allowed(prefix: &reqwest::Url, url: &reqwest::Url) -> bool {
    prefix.scheme() == url.scheme()
        && prefix.host_str() == url.host_str()
        && prefix.port_or_known_default() == url.port_or_known_default()
        && url.path().starts_with(prefix.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_compares_origins_not_strings() {
        let p = |s: &str| reqwest::Url::parse(s).unwrap();
        let prefix = p("http://app-1:8000/");
        assert!(allowed(&prefix, &p("http://app-1:8000/status")));
        assert!(!allowed(&prefix, &p("http://app-1:8000@evil.example/")));
        assert!(!allowed(&prefix, &p("http://app-1:8001/status")));
        assert!(!allowed(&prefix, &p("https://app-1:8000/status")));
        assert!(!allowed(
            &p("http://app-1/"),
            &p("http://app-1.evil.example/")
        ));
        assert!(allowed(
            &p("http://app-1/api/"),
            &p("http://app-1:80/api/status")
        ));
        assert!(!allowed(&p("http://app-1/api/"), &p("http://app-1/other")));
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(""), "");
        assert_eq!(base64("f"), "Zg==");
        assert_eq!(base64("fo"), "Zm8=");
        assert_eq!(base64("foo"), "Zm9v");
        assert_eq!(base64("user:pass"), "dXNlcjpwYXNz");
    }
}
