//! The scrape engine: runs the selected collectors concurrently under their budgets, shares
//! in-flight collections between concurrent scrapes, serves optional caches, checks family
//! names, and adds the host's self-metrics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tidegauge_core::lock;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::join_all;
use tidegauge_core::encode::{EOF, Format, encode_part};
use tidegauge_core::names::Names;
use tidegauge_core::singleflight::SingleFlight;
use tidegauge_core::{
    Clock, Collector, LabelSet, Labels, MetricFamily, ScrapeContext, Snapshot, labels,
};
use tokio::time::Instant;

use crate::access::AccessPolicy;
use crate::deadline::{BadTimeoutHeader, TimeoutSettings, collector_budget, scrape_budget};

/// Per-collector host settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CollectorSettings {
    /// Cap on the collector's budget (`--collector.<name>.timeout`).
    pub timeout: Option<Duration>,
    /// Serve the last successful snapshot while it is younger than this. Off when `None`.
    pub cache_ttl: Option<Duration>,
}

/// Which collectors a scrape runs (`collect[]` / `exclude[]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selection {
    /// Every enabled collector.
    #[default]
    All,
    /// Only these.
    Only(Vec<String>),
    /// All but these.
    Exclude(Vec<String>),
}

/// A request the engine refuses (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeError {
    /// Bad `X-Prometheus-Scrape-Timeout-Seconds`.
    #[error(transparent)]
    BadTimeout(#[from] BadTimeoutHeader),
    /// Both `collect[]` and `exclude[]` given.
    #[error("combined collect and exclude queries are not allowed")]
    CombinedFilters,
    /// A filter names a collector this binary does not have.
    #[error("unknown collector {0:?} (known: {1})")]
    UnknownCollector(String, String),
    /// A filter names a collector that is compiled in but not enabled.
    #[error("collector {0:?} is disabled")]
    DisabledCollector(String),
}

/// How one collection ended.
#[derive(Debug, Clone)]
enum Failure {
    Error(String),
    Timeout,
    Panic,
}

#[derive(Debug, Clone)]
struct Outcome {
    result: Result<Arc<Snapshot>, Failure>,
    duration: Duration,
}

/// What the landing page shows of a collector.
#[derive(Debug, Clone, Default)]
pub struct CollectorStatus {
    /// Collector name.
    pub name: String,
    /// Whether the last scrape of it succeeded (`None` before the first).
    pub last_success: Option<bool>,
    /// Duration of the last collection.
    pub last_duration: Option<Duration>,
    /// Wall-clock time of the last successful collection.
    pub last_success_time: Option<SystemTime>,
    /// Error of the last failed collection.
    pub last_error: Option<String>,
    /// What the collector says of its parts ([`Collector::status`]).
    pub detail: tidegauge_core::status::Status,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Last successful snapshot, when it was taken (monotonic) and how long it took.
    cached: Option<(Instant, Arc<Snapshot>, Duration)>,
    /// When the flight in progress started, and the deadline it runs under.
    flight_started: Option<(Instant, Instant)>,
    status: CollectorStatus,
    duplicates: u64,
    duplicate_series: u64,
}

struct Slot {
    name: String,
    collector: Arc<dyn Collector>,
    settings: CollectorSettings,
    flight: SingleFlight<Outcome>,
    state: Mutex<SlotState>,
    memo: Mutex<Memo>,
}

/// A part's encodings: text 0.0.4, OpenMetrics.
type Encodings = [Option<Bytes>; 2];

/// Work done on the last snapshot a collector returned, reused while it returns the same `Arc`
/// (collectors handing out unchanged snapshots from [`Collector::collect`]).
#[derive(Debug, Default)]
struct Memo {
    /// The snapshot as returned, and its cleaned form.
    cleaned: Option<(Arc<Snapshot>, Arc<Snapshot>)>,
    /// The last part this collector contributed, and its encodings (text, OpenMetrics).
    encoded: Option<(Arc<Snapshot>, Encodings)>,
    /// The last cleaned snapshot with families removed by name resolution: input, removed
    /// families, output.
    reduced: Option<(Arc<Snapshot>, Vec<usize>, Arc<Snapshot>)>,
}

impl Slot {
    fn cleaned(&self, snapshot: &Arc<Snapshot>, consts: &ConstLabels) -> Arc<Snapshot> {
        let mut memo = lock(&self.memo);
        if let Some((input, output)) = &memo.cleaned
            && Arc::ptr_eq(input, snapshot)
        {
            return Arc::clone(output);
        }
        let (output, dropped) = consts.apply_counted(
            &format!("collector {}", self.name),
            &clean(&self.name, snapshot),
        );
        if dropped > 0 {
            lock(&self.state).duplicate_series += dropped;
        }
        memo.cleaned = Some((Arc::clone(snapshot), Arc::clone(&output)));
        output
    }

    fn reduced(
        &self,
        input: &Arc<Snapshot>,
        removed: &[usize],
        next: Arc<Snapshot>,
    ) -> Arc<Snapshot> {
        let mut memo = lock(&self.memo);
        if let Some((i, r, out)) = &memo.reduced
            && Arc::ptr_eq(i, input)
            && r == removed
        {
            return Arc::clone(out);
        }
        memo.reduced = Some((Arc::clone(input), removed.to_vec(), Arc::clone(&next)));
        next
    }

    fn encoded(&self, format: Format, part: &Arc<Snapshot>) -> Bytes {
        let i = match format {
            Format::Text => 0,
            Format::OpenMetrics => 1,
        };
        let mut memo = lock(&self.memo);
        if let Some((p, texts)) = &memo.encoded
            && Arc::ptr_eq(p, part)
            && let Some(t) = &texts[i]
        {
            return t.clone();
        }
        let text = encoded_bytes(format, part);
        match &mut memo.encoded {
            Some((p, texts)) if Arc::ptr_eq(p, part) => texts[i] = Some(text.clone()),
            slot => {
                let mut texts = [None, None];
                texts[i] = Some(text.clone());
                *slot = Some((Arc::clone(part), texts));
            }
        }
        text
    }
}

/// A part encoded, in an allocation of its own size, shared by the responses that send it.
fn encoded_bytes(format: Format, part: &Arc<Snapshot>) -> Bytes {
    let mut text = encode_part(format, part);
    text.shrink_to_fit();
    Bytes::from(text)
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One result of [`Engine::scrape`]: the parts to encode, in order.
#[derive(Debug, Clone)]
pub struct Gathered {
    /// Collector snapshots (sorted by collector name), then the self-metrics.
    pub parts: Vec<Arc<Snapshot>>,
    /// For each part, the index of the collector that produced it (none for self-metrics).
    owners: Vec<Option<usize>>,
}

impl Gathered {
    /// Only the series that at least one selector matches (`match[]`); a histogram's or
    /// summary's series is served with all its samples.
    pub fn select(&self, selectors: &[crate::selector::Selector]) -> Gathered {
        let parts: Vec<Arc<Snapshot>> = self
            .parts
            .iter()
            .map(|part| {
                let families = part
                    .families
                    .iter()
                    .filter_map(|f| {
                        let name = f.text_name();
                        let mut f = f.clone();
                        f.samples
                            .retain(|s| selectors.iter().any(|sel| sel.matches(&name, &s.labels)));
                        (!f.samples.is_empty()).then_some(f)
                    })
                    .collect();
                Arc::new(Snapshot { families })
            })
            .collect();
        Gathered {
            owners: vec![None; parts.len()],
            parts,
        }
    }
}

/// Static facts for `tidegauge_build_info`.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    /// Crate version.
    pub version: String,
}

impl Default for BuildInfo {
    fn default() -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The scrape engine.
#[derive(Debug)]
pub struct Engine {
    slots: Vec<Slot>,
    disabled: Vec<String>,
    timeouts: TimeoutSettings,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    build: BuildInfo,
    routes: Option<axum::Router>,
    process_metrics: bool,
    access: Arc<AccessPolicy>,
    has_write_routes: bool,
    names: Arc<Names>,
    consts: ConstLabels,
    conn_stats: Arc<crate::conn::ConnStats>,
    host_metrics: Vec<Arc<dyn HostMetrics>>,
}

/// Self-metrics of a part of the host outside the engine (remote write), served with the
/// host's own families.
pub trait HostMetrics: Send + Sync + std::fmt::Debug {
    /// The families, as they are now; names start with `tidegauge_`.
    fn families(&self) -> Vec<MetricFamily>;

    /// What the landing page shows of it. Default: nothing.
    fn status(&self) -> tidegauge_core::status::Status {
        tidegauge_core::status::Status::default()
    }
}

/// Builder for [`Engine`].
#[derive(Debug)]
pub struct EngineBuilder {
    engine: Engine,
    host_paths: Vec<String>,
}

impl EngineBuilder {
    /// Adds an enabled collector.
    pub fn collector(mut self, collector: Arc<dyn Collector>, settings: CollectorSettings) -> Self {
        let name = collector.name().to_owned();
        self.engine.slots.push(Slot {
            name: name.clone(),
            collector,
            settings,
            flight: SingleFlight::new(),
            state: Mutex::new(SlotState {
                status: CollectorStatus {
                    name,
                    ..CollectorStatus::default()
                },
                ..SlotState::default()
            }),
            memo: Mutex::new(Memo::default()),
        });
        self
    }

    /// Names a collector compiled in but not enabled, so filters naming it get a clear 400.
    pub fn disabled(mut self, name: impl Into<String>) -> Self {
        self.engine.disabled.push(name.into());
        self
    }

    /// Budget derivation settings.
    pub fn timeouts(mut self, t: TimeoutSettings) -> Self {
        self.engine.timeouts = t;
        self
    }

    /// Whether `/metrics` carries the host's `process_*` series (`--web.disable-exporter-metrics`
    /// turns them off).
    pub fn process_metrics(mut self, on: bool) -> Self {
        self.engine.process_metrics = on;
        self
    }

    /// Build facts.
    pub fn build_info(mut self, b: BuildInfo) -> Self {
        self.engine.build = b;
        self
    }

    /// Who may use which route: bearer credentials and whether reads need one.
    pub fn access(mut self, policy: AccessPolicy) -> Self {
        self.engine.access = Arc::new(policy);
        self
    }

    /// Where the engine records which source exposes which name (shared with the collectors
    /// through their host services).
    pub fn names(mut self, names: Arc<Names>) -> Self {
        self.engine.names = names;
        self
    }

    /// Labels added to every series (`[labels]`, `--label`); a collector's own label of the
    /// same name keeps its value.
    pub fn const_labels(mut self, labels: Labels) -> Self {
        self.engine.consts = ConstLabels {
            labels: Arc::new(labels),
            warned: Arc::default(),
        };
        self
    }

    /// Where the listeners count the connections they close.
    pub fn conn_stats(mut self, stats: Arc<crate::conn::ConnStats>) -> Self {
        self.engine.conn_stats = stats;
        self
    }

    /// Adds self-metrics of a host part outside the engine.
    pub fn host_metrics(mut self, metrics: Arc<dyn HostMetrics>) -> Self {
        self.engine.host_metrics.push(metrics);
        self
    }

    /// Paths the host serves itself; a collector declaring one is an error.
    pub fn host_paths(mut self, paths: Vec<String>) -> Self {
        self.host_paths = paths;
        self
    }

    /// Finishes the engine; collectors are ordered by name. Two collectors declaring the same
    /// route, or a collector declaring a host route, is an error naming both.
    pub fn build(mut self) -> Result<Engine, String> {
        self.engine.slots.sort_by(|a, b| a.name.cmp(&b.name));
        self.engine.disabled.sort();
        // The host's names are known before any scrape: a push cannot take one meanwhile.
        let (mut host, (duplicates, series)) = SelfMetrics::new().finish(&self.engine.build);
        host.families
            .extend([duplicates, series, self.engine.conn_stats.family()]);
        for m in &self.engine.host_metrics {
            host.families.extend(m.families());
        }
        if self.engine.process_metrics {
            host.families.extend(crate::process::families());
        }
        self.engine.names.record("the host", host.families.iter());
        let sources: Vec<String> = std::iter::once("the host".to_owned())
            .chain(
                self.engine
                    .slots
                    .iter()
                    .map(|s| format!("collector {}", s.name)),
            )
            .collect();
        self.engine.names.retain(&sources);
        let mut owners: std::collections::BTreeMap<String, String> = self
            .host_paths
            .iter()
            .map(|p| (p.clone(), "the host".to_owned()))
            .collect();
        let mut router: Option<axum::Router> = None;
        for slot in &self.engine.slots {
            for (path, level, handler) in slot.collector.routes().into_entries() {
                if let Some(owner) = owners.get(&path) {
                    return Err(format!(
                        "collectors.{}: route {path} is already served by {owner}",
                        slot.name
                    ));
                }
                owners.insert(path.clone(), format!("collector {}", slot.name));
                self.engine.has_write_routes |= level == tidegauge_core::Access::Write;
                let guarded = handler.layer(axum::middleware::from_fn_with_state(
                    (Arc::clone(&self.engine.access), level),
                    crate::access::enforce_fixed,
                ));
                router = Some(router.unwrap_or_default().route(&path, guarded));
            }
        }
        self.engine.routes = router.map(|r| {
            r.fallback(|headers: axum::http::HeaderMap| async move {
                crate::router::not_found(&headers)
            })
        });
        Ok(self.engine)
    }
}

impl Engine {
    /// Starts building an engine with these host services.
    pub fn builder(clock: Arc<dyn Clock>, http: reqwest::Client) -> EngineBuilder {
        EngineBuilder {
            engine: Engine {
                slots: Vec::new(),
                disabled: Vec::new(),
                timeouts: TimeoutSettings::default(),
                clock,
                http,
                build: BuildInfo::default(),
                routes: None,
                process_metrics: true,
                access: Arc::new(AccessPolicy::default()),
                has_write_routes: false,
                names: Arc::default(),
                consts: ConstLabels::default(),
                conn_stats: Arc::default(),
                host_metrics: Vec::new(),
            },
            host_paths: Vec::new(),
        }
    }

    /// Whether a collector declares a route that changes state.
    pub fn has_write_routes(&self) -> bool {
        self.has_write_routes
    }

    /// Adds the constant labels to a snapshot produced outside a scrape (a probe's).
    pub fn with_const_labels(&self, source: &str, snapshot: Snapshot) -> Snapshot {
        if self.consts.labels.is_empty() {
            return snapshot;
        }
        (*self.consts.apply(source, &Arc::new(snapshot))).clone()
    }

    /// The access rules this engine was built with.
    pub fn access(&self) -> &Arc<AccessPolicy> {
        &self.access
    }

    /// The enabled collectors.
    pub fn collectors(&self) -> impl Iterator<Item = &Arc<dyn Collector>> {
        self.slots.iter().map(|s| &s.collector)
    }

    /// The collectors' own routes, merged; `None` when no collector has any.
    pub fn routes(&self) -> Option<&axum::Router> {
        self.routes.as_ref()
    }

    /// Budget derivation settings.
    pub fn timeouts(&self) -> &TimeoutSettings {
        &self.timeouts
    }

    /// A scrape context with the given budget, for probes.
    pub fn context(&self, budget: Duration) -> ScrapeContext {
        ScrapeContext::new(budget, Arc::clone(&self.clock), self.http.clone())
    }

    /// What the landing page shows of each collector.
    pub fn status(&self) -> Vec<CollectorStatus> {
        self.slots
            .iter()
            .map(|s| CollectorStatus {
                detail: s.collector.status(),
                ..lock(&s.state).status.clone()
            })
            .collect()
    }

    /// What the landing page shows of the host's parts outside the engine (remote write).
    pub fn host_status(&self) -> tidegauge_core::status::Status {
        let mut all = tidegauge_core::status::Status::default();
        for m in &self.host_metrics {
            all.sections.extend(m.status().sections);
        }
        all
    }

    /// The engine's wall clock now.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Resolves `collect[]` / `exclude[]` parameters into a selection.
    pub fn select(
        &self,
        collect: Vec<String>,
        exclude: Vec<String>,
    ) -> Result<Selection, ScrapeError> {
        if !collect.is_empty() && !exclude.is_empty() {
            return Err(ScrapeError::CombinedFilters);
        }
        for name in collect.iter().chain(&exclude) {
            if self.slots.iter().any(|s| &s.name == name) {
                continue;
            }
            if self.disabled.iter().any(|d| d == name) {
                return Err(ScrapeError::DisabledCollector(name.clone()));
            }
            let known: Vec<&str> = self
                .slots
                .iter()
                .map(|s| s.name.as_str())
                .chain(self.disabled.iter().map(String::as_str))
                .collect();
            return Err(ScrapeError::UnknownCollector(
                name.clone(),
                known.join(", "),
            ));
        }
        Ok(if !collect.is_empty() {
            Selection::Only(collect)
        } else if !exclude.is_empty() {
            Selection::Exclude(exclude)
        } else {
            Selection::All
        })
    }

    /// Runs one scrape: the selected collectors concurrently, each under its budget.
    pub async fn scrape(
        &self,
        selection: &Selection,
        timeout_header: Option<&str>,
    ) -> Result<Gathered, ScrapeError> {
        let budget = scrape_budget(timeout_header, &self.timeouts)?;
        let selected: Vec<(usize, &Slot)> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| match selection {
                Selection::All => true,
                Selection::Only(names) => names.contains(&s.name),
                Selection::Exclude(names) => !names.contains(&s.name),
            })
            .collect();
        let outcomes = join_all(selected.iter().map(|(_, slot)| self.run_slot(slot, budget))).await;

        let mut meta = SelfMetrics::new();
        let mut parts = Vec::with_capacity(selected.len() + 1);
        let mut owners = Vec::with_capacity(selected.len() + 1);
        for ((index, slot), (outcome, cache_age)) in selected.iter().zip(outcomes) {
            meta.record(slot, &outcome, cache_age);
            if let Ok(snapshot) = &outcome.result {
                parts.push(slot.cleaned(snapshot, &self.consts));
                owners.push(Some(*index));
            }
        }
        let (mut own, duplicates) = meta.finish(&self.build);
        own.push(self.conn_stats.family());
        for m in &self.host_metrics {
            for f in m.families() {
                own.push(f);
            }
        }
        if self.process_metrics {
            for f in crate::process::families() {
                own.push(f);
            }
        }
        parts.push(self.consts.apply("the host", &Arc::new(own)));
        owners.push(None);
        let resolved = self.resolve(parts, &owners);
        let mut duplicates = duplicates;
        for (_, slot) in &selected {
            let st = lock(&slot.state);
            let l = labels([("collector", &slot.name)]);
            duplicates.0.push(l.clone(), st.duplicates as f64);
            duplicates.1.push(l, st.duplicate_series as f64);
        }
        let mut parts = resolved;
        if let Some(host) = parts.last_mut() {
            let extra = Snapshot {
                families: vec![duplicates.0, duplicates.1],
            };
            let extra = self.consts.apply("the host", &Arc::new(extra));
            Arc::make_mut(host)
                .families
                .extend(extra.families.iter().cloned());
        }
        Ok(Gathered { parts, owners })
    }

    /// One exposition from the parts (collectors' in name order, the host's last): a family
    /// belongs to the first source exposing its name, the host first, then collectors' own
    /// families, then guest (pushed) families. A later family of the same name and type joins
    /// the owner's (its series appended, the owner's HELP kept, a series with the owner's exact
    /// labels dropped and counted); one of another type is dropped and counted. A collector's
    /// `tidegauge_*` family must be named `tidegauge_<collector>_*`.
    fn resolve(
        &self,
        mut parts: Vec<Arc<Snapshot>>,
        owners: &[Option<usize>],
    ) -> Vec<Arc<Snapshot>> {
        let host = parts.len() - 1;
        let mut order: Vec<(usize, usize)> =
            (0..parts[host].families.len()).map(|f| (host, f)).collect();
        for guest in [false, true] {
            for (p, part) in parts.iter().enumerate().take(host) {
                for (f, family) in part.families.iter().enumerate() {
                    if family.guest == guest {
                        order.push((p, f));
                    }
                }
            }
        }
        let mut index: HashMap<String, (usize, usize)> = HashMap::new();
        // Per part: families removed, and samples joining a family.
        let mut removed: Vec<Vec<usize>> = vec![Vec::new(); parts.len()];
        let mut joins: HashMap<(usize, usize), Vec<(usize, usize)>> = HashMap::new();
        for (p, f) in order {
            let family = &parts[p].families[f];
            let slot = owners[p].and_then(|i| self.slots.get(i));
            if let Some(slot) = slot
                && family.name.starts_with("tidegauge_")
                && !family.guest
                && !family
                    .name
                    .starts_with(&format!("tidegauge_{}_", slot.name.replace('-', "_")))
            {
                tracing::warn!(collector = %slot.name, family = %family.name, "dropping family: tidegauge_ names other than tidegauge_<collector>_ are the host's");
                lock(&slot.state).duplicates += 1;
                removed[p].push(f);
                continue;
            }
            let names = family.exposed_names();
            // Guest families of one part are kept apart by their collector (a folded
            // `x_created` shares its name with the `_created` samples of its `x`).
            let same_part_guests = |&(op, of): &(usize, usize)| {
                op == p && family.guest && parts[op].families[of].guest
            };
            match names
                .iter()
                .find_map(|n| index.get(n).filter(|o| !same_part_guests(o)))
                .copied()
            {
                None => {
                    for n in names {
                        index.insert(n, (p, f));
                    }
                }
                Some((op, of)) => {
                    let owner = &parts[op].families[of];
                    // The same family as exposed: a counter pushed as `x_total` joins the
                    // counter `x`.
                    if owner.text_name() == family.text_name() && owner.kind == family.kind {
                        joins.entry((op, of)).or_default().push((p, f));
                    } else if let Some(slot) = slot {
                        tracing::warn!(collector = %slot.name, family = %family.name, "dropping family: its name is already exposed by another source under another type");
                        lock(&slot.state).duplicates += 1;
                    }
                    removed[p].push(f);
                }
            }
        }
        // Record what each source owns, for push APIs to check against.
        for (p, part) in parts.iter().enumerate() {
            let owner = match owners[p].and_then(|i| self.slots.get(i)) {
                Some(slot) => format!("collector {}", slot.name),
                None => "the host".to_owned(),
            };
            self.names
                .record(&owner, part.families.iter().filter(|f| !f.guest));
        }
        if joins.is_empty() && removed.iter().all(Vec::is_empty) {
            return parts;
        }
        let mut joined: HashMap<(usize, usize), MetricFamily> = HashMap::new();
        for (&(op, of), sources) in &joins {
            let mut family = parts[op].families[of].clone();
            let mut label_sets: HashSet<Labels> =
                family.samples.iter().map(|s| sorted(&s.labels)).collect();
            for &(p, f) in sources {
                let mut dropped = 0u64;
                for sample in &parts[p].families[f].samples {
                    if label_sets.insert(sorted(&sample.labels)) {
                        family.samples.push(sample.clone());
                    } else {
                        dropped += 1;
                    }
                }
                if dropped > 0
                    && let Some(slot) = owners[p].and_then(|i| self.slots.get(i))
                {
                    lock(&slot.state).duplicate_series += dropped;
                }
            }
            joined.insert((op, of), family);
        }
        for (p, part) in parts.iter_mut().enumerate() {
            let touched = !removed[p].is_empty() || joined.keys().any(|(op, _)| *op == p);
            if !touched {
                continue;
            }
            let families = part
                .families
                .iter()
                .enumerate()
                .filter(|(f, _)| !removed[p].contains(f))
                .map(|(f, family)| joined.remove(&(p, f)).unwrap_or_else(|| family.clone()))
                .collect();
            let next = Arc::new(Snapshot { families });
            *part = match owners[p].and_then(|i| self.slots.get(i)) {
                // The same input and the same changes give the same part: reuse it, so the
                // part's encoding is reused too.
                Some(slot) if !joined.keys().any(|(op, _)| *op == p) => {
                    slot.reduced(part, &removed[p], next)
                }
                _ => next,
            };
        }
        parts
    }

    /// Encodes a scrape as the chunks of one exposition, reusing a collector's encoded part
    /// while it returns the same snapshot: a response sends the shared chunks, never a copy.
    pub fn encode(&self, format: Format, gathered: &Gathered) -> Vec<Bytes> {
        let mut chunks: Vec<Bytes> = gathered
            .parts
            .iter()
            .zip(&gathered.owners)
            .map(
                |(part, owner)| match owner.and_then(|i| self.slots.get(i)) {
                    Some(slot) => slot.encoded(format, part),
                    None => encoded_bytes(format, part),
                },
            )
            .collect();
        if format == Format::OpenMetrics {
            chunks.push(Bytes::from_static(EOF.as_bytes()));
        }
        chunks
    }

    async fn run_slot(&self, slot: &Slot, budget: Duration) -> (Outcome, Option<Duration>) {
        let budget = collector_budget(budget, slot.settings.timeout);
        // Each lock below is taken in a statement of its own: in an `if let` chain the guard
        // would live through the block, and `remember` takes the same lock.
        let cached = slot
            .settings
            .cache_ttl
            .and_then(|ttl| Some((ttl, lock(&slot.state).cached.clone()?)));
        if let Some((ttl, (at, snap, duration))) = cached {
            let age = at.elapsed();
            if age < ttl {
                let outcome = Outcome {
                    result: Ok(snap),
                    duration,
                };
                return (outcome, Some(age));
            }
        }
        let now = Instant::now();
        let deadline = now + budget;
        // A collection still running past its own deadline is stuck (blocking work the runtime
        // cannot cancel): report it timed out at once rather than wait on it again.
        let running = if slot.flight.in_flight() {
            lock(&slot.state).flight_started
        } else {
            None
        };
        if let Some((started, flight_deadline)) = running
            && flight_deadline < now
        {
            let outcome = Outcome {
                result: Err(Failure::Timeout),
                duration: started.elapsed(),
            };
            self.remember(slot, &outcome);
            return (outcome, None);
        }
        let flight = slot.flight.run(|| {
            let collector = Arc::clone(&slot.collector);
            let ctx = ScrapeContext::new(budget, Arc::clone(&self.clock), self.http.clone());
            let started = Instant::now();
            lock(&slot.state).flight_started = Some((started, ctx.deadline()));
            async move {
                let result = tokio::time::timeout_at(ctx.deadline(), collector.collect(&ctx)).await;
                let result = match result {
                    Ok(Ok(snapshot)) => Ok(snapshot),
                    Ok(Err(e)) => Err(Failure::Error(e.to_string())),
                    Err(_) => Err(Failure::Timeout),
                };
                Outcome {
                    result,
                    duration: started.elapsed(),
                }
            }
            .boxed()
        });
        let outcome = match tokio::time::timeout_at(deadline, flight).await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => Outcome {
                result: Err(Failure::Panic),
                duration: self.flight_elapsed(slot),
            },
            Err(_) => Outcome {
                result: Err(Failure::Timeout),
                duration: self.flight_elapsed(slot),
            },
        };
        self.remember(slot, &outcome);
        // A fresh snapshot is zero seconds old; a failed collection serves none.
        let cache_age = slot
            .settings
            .cache_ttl
            .filter(|_| outcome.result.is_ok())
            .map(|_| Duration::ZERO);
        (outcome, cache_age)
    }

    fn flight_elapsed(&self, slot: &Slot) -> Duration {
        lock(&slot.state)
            .flight_started
            .map(|(s, _)| s.elapsed())
            .unwrap_or_default()
    }

    fn remember(&self, slot: &Slot, outcome: &Outcome) {
        let mut st = lock(&slot.state);
        st.status.last_duration = Some(outcome.duration);
        match &outcome.result {
            Ok(snap) => {
                st.status.last_success = Some(true);
                st.status.last_success_time = Some(self.clock.now());
                st.status.last_error = None;
                if slot.settings.cache_ttl.is_some() {
                    st.cached = Some((Instant::now(), Arc::clone(snap), outcome.duration));
                }
            }
            Err(failure) => {
                let msg = match failure {
                    Failure::Error(e) => e.clone(),
                    Failure::Timeout => {
                        format!("timed out after {:.3}s", outcome.duration.as_secs_f64())
                    }
                    Failure::Panic => "panicked".to_owned(),
                };
                tracing::warn!(collector = %slot.name, error = %msg, "collector failed");
                st.status.last_success = Some(false);
                st.status.last_error = Some(msg);
            }
        }
    }

    /// Starts every collector's long-running work; cancel the token to stop it.
    pub fn start_background(&self, token: &tidegauge_core::CancellationToken) {
        for slot in &self.slots {
            let collector = Arc::clone(&slot.collector);
            let token = token.child_token();
            tokio::spawn(async move { collector.run(token).await });
        }
    }
}

/// A hash of a label set's pairs in name order, whatever order they are written in; copies
/// nothing when they are in order already (pushed series are).
fn series_hash(hasher: &impl std::hash::BuildHasher, labels: &LabelSet) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = hasher.build_hasher();
    if labels.iter().is_sorted() {
        labels.iter().for_each(|pair| pair.hash(&mut h));
    } else {
        let mut v: Vec<(&str, &str)> = labels.iter().collect();
        v.sort_unstable();
        v.iter().for_each(|pair| pair.hash(&mut h));
    }
    h.finish()
}

/// A label set in name order: the same series whatever order its labels were written in.
fn sorted(labels: &LabelSet) -> Labels {
    let mut l = labels.to_vec();
    l.sort();
    l
}

/// The host's constant labels, and the clashes already logged.
#[derive(Debug, Clone, Default)]
struct ConstLabels {
    labels: Arc<Labels>,
    warned: Arc<Mutex<HashSet<(String, String)>>>,
}

impl ConstLabels {
    /// `snapshot` with the labels added to every sample; a sample's own label of the same name
    /// keeps its value (logged once per source and label).
    fn apply(&self, source: &str, snapshot: &Arc<Snapshot>) -> Arc<Snapshot> {
        self.apply_counted(source, snapshot).0
    }

    /// [`ConstLabels::apply`], and how many series it dropped: two series that differ only by
    /// a constant label's value being their own become one (the first is kept).
    fn apply_counted(&self, source: &str, snapshot: &Arc<Snapshot>) -> (Arc<Snapshot>, u64) {
        if self.labels.is_empty() {
            return (Arc::clone(snapshot), 0);
        }
        let mut out = (**snapshot).clone();
        let mut dropped = 0u64;
        for family in &mut out.families {
            for sample in &mut family.samples {
                let mut labels = sample.labels.to_vec();
                for (k, v) in self.labels.iter() {
                    if sample.labels.get(k).is_some() {
                        if lock(&self.warned).insert((source.to_owned(), k.clone())) {
                            tracing::warn!(source, family = %family.name, label = %k, "a series has its own label of a constant label's name; its own value is kept");
                        }
                    } else {
                        labels.push((k.clone(), v.clone()));
                    }
                }
                sample.labels = labels.into();
            }
        }
        for family in &mut out.families {
            let before = family.samples.len();
            let mut seen = HashSet::with_capacity(before);
            family.samples.retain(|s| seen.insert(sorted(&s.labels)));
            dropped += (before - family.samples.len()) as u64;
        }
        (Arc::new(out), dropped)
    }
}

/// Drops families with invalid names and duplicate label sets within a family (first kept).
/// Clones the snapshot only when something is dropped.
fn clean(collector: &str, snapshot: &Arc<Snapshot>) -> Arc<Snapshot> {
    let mut out: Option<Vec<MetricFamily>> = None;
    for (i, family) in snapshot.families.iter().enumerate() {
        let valid = match family.validate() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(collector, family = %family.name, error = %e, "dropping an invalid family");
                false
            }
        };
        // By hash, and exactly only when two hashes meet: a copy of every label set of a large
        // part (pushed groups) would be garbage the size of the part at every new snapshot.
        let hasher = std::hash::RandomState::new();
        let mut hashes = HashSet::with_capacity(family.samples.len());
        let unique = valid
            && family
                .samples
                .iter()
                .all(|s| hashes.insert(series_hash(&hasher, &s.labels)));
        if valid && unique {
            if let Some(out) = out.as_mut() {
                out.push(family.clone());
            }
            continue;
        }
        let out = out.get_or_insert_with(|| snapshot.families[..i].to_vec());
        if valid {
            tracing::debug!(collector, family = %family.name, "dropping duplicate label sets");
            let mut seen_sets = HashSet::new();
            let mut f = family.clone();
            f.samples.retain(|s| seen_sets.insert(sorted(&s.labels)));
            out.push(f);
        }
    }
    match out {
        None => Arc::clone(snapshot),
        Some(families) => Arc::new(Snapshot { families }),
    }
}

struct SelfMetrics {
    success: MetricFamily,
    duration: MetricFamily,
    timeout: MetricFamily,
    cache_age: MetricFamily,
    duplicates: MetricFamily,
}

impl SelfMetrics {
    fn new() -> Self {
        Self {
            success: MetricFamily::gauge(
                "tidegauge_scrape_collector_success",
                "Whether a collector succeeded.",
            ),
            duration: MetricFamily::gauge(
                "tidegauge_scrape_collector_duration_seconds",
                "Duration of a collector scrape.",
            ),
            timeout: MetricFamily::gauge(
                "tidegauge_scrape_collector_timeout",
                "Whether the collector timed out.",
            ),
            cache_age: MetricFamily::gauge(
                "tidegauge_scrape_collector_cache_age_seconds",
                "Age of the snapshot served for a collector with a cache TTL (0 when fresh).",
            ),
            duplicates: MetricFamily::counter(
                "tidegauge_duplicate_families",
                "Families dropped because another collector or the host already exposed the name.",
            ),
        }
    }

    fn record(&mut self, slot: &Slot, outcome: &Outcome, cache_age: Option<Duration>) {
        let l = labels([("collector", &slot.name)]);
        let ok = outcome.result.is_ok();
        let timed_out = matches!(outcome.result, Err(Failure::Timeout));
        self.success.push(l.clone(), if ok { 1.0 } else { 0.0 });
        self.duration
            .push(l.clone(), outcome.duration.as_secs_f64());
        self.timeout
            .push(l.clone(), if timed_out { 1.0 } else { 0.0 });
        if let Some(age) = cache_age {
            self.cache_age.push(l, age.as_secs_f64());
        }
    }

    /// The self-metrics, and apart the duplicate counters (families, series), filled once the
    /// exposition's names are resolved.
    fn finish(self, build: &BuildInfo) -> (Snapshot, (MetricFamily, MetricFamily)) {
        let mut s = Snapshot::new();
        s.push(MetricFamily::gauge(
            "tidegauge_build_info",
            "A metric with a constant '1' value labelled by version from which tidegauge was built.",
        )
        .with(labels([("version", &build.version)]), 1.0));
        s.push(self.success);
        s.push(self.duration);
        s.push(self.timeout);
        s.push(self.cache_age);
        let series = MetricFamily::counter(
            "tidegauge_duplicate_series",
            "Series dropped because another source already exposed the same family with the same labels.",
        );
        (s, (self.duplicates, series))
    }
}
