//! The contract between the tidegauge host and its collectors.
//!
//! A collector implements [`Collector`]: on every scrape the host calls
//! [`Collector::collect`] with a [`ScrapeContext`] (deadline, clock, shared HTTP client) and
//! encodes the returned [`Snapshot`]. Collectors never format exposition text themselves.

pub mod duration;
pub mod encode;
pub mod factory;
pub mod http;
pub mod names;
pub mod singleflight;
pub mod snapshot;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use async_trait::async_trait;
pub use factory::{BuildError, DynFactory, Environment, Factory, Instance};
pub use snapshot::{
    Histogram, LabelSet, Labels, MetricFamily, MetricType, Naming, Sample, Snapshot, Summary,
    Value, labels,
};
pub use tokio_util::sync::CancellationToken;

/// A source of wall-clock time, replaceable in tests.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Locks `m`, taking the data of a poisoned lock as it is: every lock in tidegauge guards data
/// that a panic cannot leave half-changed in a way that matters more than serving on.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// What the host lends collectors for their whole life.
#[derive(Debug, Clone)]
pub struct HostServices {
    /// Shared HTTP client (connection pool, rustls, gzip).
    pub http: reqwest::Client,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Directory where collectors keep durable state unless configured otherwise.
    pub data_dir: PathBuf,
    /// The process environment (secrets named by `*_env` keys, the replaced systems'
    /// variables).
    pub env: Environment,
    /// Which source exposes which metric name (kept by the host at every scrape).
    pub names: Arc<names::Names>,
}

impl HostServices {
    /// Services with the real clock and process environment.
    pub fn new(http: reqwest::Client, data_dir: PathBuf) -> Self {
        Self {
            http,
            clock: Arc::new(SystemClock),
            data_dir,
            env: Environment::process(),
            names: Arc::default(),
        }
    }
}

/// Everything one collection may use. Built by the host for every scrape.
#[derive(Debug, Clone)]
pub struct ScrapeContext {
    deadline: tokio::time::Instant,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
}

impl ScrapeContext {
    /// A context whose deadline is `budget` from now.
    pub fn new(budget: Duration, clock: Arc<dyn Clock>, http: reqwest::Client) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            // A budget too large to represent means "no practical deadline": a day.
            deadline: now
                .checked_add(budget)
                .unwrap_or_else(|| now + Duration::from_secs(86_400)),
            clock,
            http,
        }
    }

    /// The same services with another deadline.
    pub fn with_deadline(&self, deadline: tokio::time::Instant) -> Self {
        Self {
            deadline,
            ..self.clone()
        }
    }

    /// The instant at which the host drops the collection.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Time left until the deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// Time left for an upstream call that must still leave the collector room to assemble its
    /// answer: the remaining budget less a small reserve (a tenth, at most 100 ms).
    pub fn upstream_budget(&self) -> Duration {
        let left = self.remaining();
        left.saturating_sub((left / 10).min(Duration::from_millis(100)))
    }

    /// Current wall-clock time from the context's clock.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The shared HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// Why a collection failed as a whole. Partial failures belong in the collector's own `…_up`
/// series instead.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A failure described in words.
    #[error("{0}")]
    Message(String),
    /// Any other error.
    #[error(transparent)]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl CollectError {
    /// An error from a message.
    pub fn msg(m: impl Into<String>) -> Self {
        Self::Message(m.into())
    }
}

/// A collector: one named source of metrics, built once and scraped on demand.
#[async_trait]
pub trait Collector: Send + Sync + 'static {
    /// Stable name, used in configuration, flags, URL filters and self-metric labels.
    fn name(&self) -> &str;

    /// Gathers the collector's snapshot. Must be cancel-safe: the host drops the future at the
    /// deadline. A collector whose data changes rarely (a push API) may hand out the same `Arc`
    /// while nothing changed: the host then reuses the checks and the encoding it did on it.
    async fn collect(&self, ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError>;

    /// Extra HTTP routes (a push API), each with the access it needs; the host checks
    /// credentials before a request reaches them. Default: none.
    fn routes(&self) -> Routes {
        Routes::default()
    }

    /// Multi-target probing through `/probe`. Default: not supported.
    fn prober(&self) -> Option<&dyn Prober> {
        None
    }

    /// What the landing page shows of this collector beyond its last scrape: datasets, boards,
    /// groups, each with its health. Called per page view, from memory: it must not wait on
    /// upstreams. Default: nothing.
    fn status(&self) -> status::Status {
        status::Status::default()
    }

    /// Long-running work (subscriptions, loops) until `shutdown` is cancelled. Default: none.
    async fn run(&self, _shutdown: CancellationToken) {}
}

/// Who may use a route. The host checks credentials (basic auth from the web configuration,
/// bearer tokens from `[auth]`) before a request reaches the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Health, documentation, CORS preflight: open unless basic auth covers every route.
    Public,
    /// Reading metrics and status: open unless the exposition is protected.
    Read,
    /// Changing state (pushes, deletions, reloads): needs a credential whenever authentication
    /// is configured, and a JWT also the configured role.
    Write,
}

/// A collector's HTTP routes, each declared with its [`Access`].
#[derive(Default)]
pub struct Routes {
    entries: Vec<(String, Access, axum::routing::MethodRouter)>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(p, a, _)| (p, a)))
            .finish()
    }
}

impl Routes {
    /// No routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` (axum syntax: `/metrics/{*grouping}`) served by `handler`, needing `access`.
    pub fn route(
        mut self,
        path: impl Into<String>,
        access: Access,
        handler: axum::routing::MethodRouter,
    ) -> Self {
        self.entries.push((path.into(), access, handler));
        self
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The routes, in the order added.
    pub fn into_entries(self) -> Vec<(String, Access, axum::routing::MethodRouter)> {
        self.entries
    }

    /// One router of them all, without the host's access checks: for tests of the handlers.
    pub fn into_router(self) -> axum::Router {
        self.entries
            .into_iter()
            .fold(axum::Router::new(), |r, (path, _, handler)| {
                r.route(&path, handler)
            })
    }
}

/// The result of one probe.
#[derive(Debug, Clone, Default)]
pub struct ProbeResult {
    /// Whether the target answered usefully (`probe_success`).
    pub success: bool,
    /// The target's series.
    pub snapshot: Snapshot,
}

/// Why a probe request was refused before anything was fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// No module of that name.
    #[error("unknown module {0:?}")]
    UnknownModule(String),
    /// The target parameter is not usable.
    #[error("invalid target: {0}")]
    BadTarget(String),
    /// The target is outside the configured allow list.
    #[error("target {0:?} is not allowed by probe.allow")]
    Forbidden(String),
    /// The module sends credentials, and the target is not one it may send them to.
    #[error(
        "module {module:?} sends credentials: without probe.allow it probes only its configured targets, not {target:?}"
    )]
    CredentialsWithheld {
        /// The module.
        module: String,
        /// The target asked for.
        target: String,
    },
}

/// Multi-target probing, as blackbox_exporter's `/probe?module=&target=`.
#[async_trait]
pub trait Prober: Send + Sync {
    /// The module names this prober knows.
    fn modules(&self) -> Vec<String>;
    /// Probes `target` with `module` under the context's deadline.
    async fn probe(
        &self,
        module: &str,
        target: &str,
        ctx: &ScrapeContext,
    ) -> Result<ProbeResult, ProbeError>;
}
