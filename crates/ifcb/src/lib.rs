//! The `ifcb` collector: freshness and instrument metrics of Imaging FlowCytobot dashboards
//! (WHOIGit/ifcbdb), per dataset, for several dashboards at once.
//!
//! Refreshes are driven by scrapes: a scrape refreshes every dataset whose values are older than
//! the interval, waits until its deadline, and serves the newest completed values; a refresh still
//! running then goes on in the background, so the next scrape is complete.

pub mod api;
pub mod config;
mod factory;
pub mod refresh;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tidegauge_core::{
    CollectError, Collector, Labels, MetricFamily, MetricType, Sample, ScrapeContext, Snapshot,
    Value, async_trait, labels, unix_seconds,
};

pub use config::{Config, DashboardConfig};
pub use factory::{Factory, ORIGINAL_PORT};
use refresh::{Dashboard, PRODUCTS, Settings, TIMELINE};
use tidegauge_core::status::{Cell, Health, Row, Section, Status};

/// The collector's name in configuration, flags and filters.
pub const NAME: &str = "ifcb";

/// Hard ceiling of `max_concurrency`: the dashboards run one worker.
pub const MAX_CONCURRENCY: usize = 4;

/// A configuration error, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The ifcb collector.
#[derive(Debug)]
pub struct Ifcb {
    dashboards: Vec<Arc<Dashboard>>,
    lag_threshold: i64,
    refresh_at_start: bool,
    /// For the landing page, which has no scrape context.
    clock: Arc<dyn tidegauge_core::Clock>,
}

impl Ifcb {
    /// Validates the configuration; `http` is the host's shared client.
    pub fn new(config: &Config, http: reqwest::Client) -> Result<Self, ConfigError> {
        if config.dashboards.is_empty() {
            return Err(ConfigError(
                "no dashboards configured: give --base-url URL or [[collectors.ifcb.dashboards]] url = \"...\"".into(),
            ));
        }
        if config.max_concurrency == 0 || config.max_concurrency > MAX_CONCURRENCY {
            return Err(ConfigError(format!(
                "max_concurrency = {}: must be between 1 and {MAX_CONCURRENCY} (a dashboard serves one request at a time)",
                config.max_concurrency
            )));
        }
        // Bounded above so that time arithmetic on Unix seconds cannot overflow.
        const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
        for (key, d) in [
            ("interval", config.interval),
            ("lookback", config.lookback),
            ("request_timeout", config.request_timeout),
            ("lag_threshold", config.lag_threshold),
            ("series_refresh", config.series_refresh),
        ] {
            if (d.is_zero() && key != "series_refresh") || d > CENTURY {
                return Err(ConfigError(format!(
                    "{key} must be greater than zero and at most 100 years"
                )));
            }
        }
        if config.max_body_size == 0 {
            return Err(ConfigError(
                "max_body_size must be greater than zero".into(),
            ));
        }
        let settings = Settings {
            interval: config.interval,
            lookback: config.lookback.as_secs() as i64,
            max_scan_bins: config.max_scan_bins,
            series_refresh: config.series_refresh.as_secs() as i64,
            max_concurrency: config.max_concurrency,
        };
        let mut dashboards = Vec::new();
        for (i, d) in config.dashboards.iter().enumerate() {
            let at = format!("dashboards[{i}]");
            let url = reqwest::Url::parse(&d.url)
                .map_err(|e| ConfigError(format!("{at}.url {:?}: {e}", d.url)))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(ConfigError(format!(
                    "{at}.url {:?}: scheme must be http or https",
                    d.url
                )));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(ConfigError(format!(
                    "{at}.url {:?}: give the API base without a query",
                    d.url
                )));
            }
            let label = match &d.name {
                Some(n) if !n.is_empty() => n.clone(),
                Some(_) => return Err(ConfigError(format!("{at}.name must not be empty"))),
                None => url.host_str().unwrap_or_default().to_owned(),
            };
            if dashboards.iter().any(|x: &Arc<Dashboard>| x.label == label) {
                return Err(ConfigError(format!(
                    "{at}: dashboard label {label:?} is used twice; give each a distinct name (NAME=URL on the command line)"
                )));
            }
            if !url.path().trim_end_matches('/').ends_with("/api") {
                tracing::warn!(dashboard = %label, url = %d.url, "dashboard URL does not end in /api; routes are appended to it as given");
            }
            let client = api::Client::new(
                d.url.as_str(),
                http.clone(),
                config.max_concurrency,
                config.request_timeout,
                config.max_body_size,
            );
            dashboards.push(Arc::new(Dashboard::new(
                label,
                client,
                settings.clone(),
                d.datasets.clone(),
                d.exclude.clone(),
            )));
        }
        Ok(Self {
            dashboards,
            lag_threshold: config.lag_threshold.as_secs() as i64,
            refresh_at_start: config.refresh_at_start,
            clock: Arc::new(tidegauge_core::SystemClock),
        })
    }

    /// The same collector reading time from `clock` on the landing page (the host's).
    pub fn with_clock(mut self, clock: Arc<dyn tidegauge_core::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// What the landing page shows at `now` (Unix seconds): each dashboard's discovery, and
    /// each dataset's newest bin against the lag threshold.
    pub fn status_at(&self, now: i64) -> Status {
        let ago = |t: i64| Cell::Ago((t > 0).then(|| Duration::from_secs((now - t).max(0) as u64)));
        let threshold = Duration::from_secs(self.lag_threshold as u64);
        let mut dashboards = Section::new(
            "Dashboards",
            &["dashboard", "discovery", "datasets", "last refresh took"],
        );
        let mut rows = Section::new(
            "Datasets",
            &[
                "dashboard",
                "dataset",
                "newest bin",
                "lag threshold",
                "last refresh",
            ],
        );
        for dash in &self.dashboards {
            let (up, datasets, last) = dash.view();
            let health = match (up, last) {
                (true, _) => Health::Ok,
                (false, None) => Health::Unknown,
                (false, Some(_)) => Health::Failing,
            };
            dashboards.rows.push(Row::new(
                health,
                vec![
                    Cell::Text(dash.label.clone()),
                    Cell::Text(if up { "ok" } else { "failing" }.into()),
                    Cell::Text(datasets.len().to_string()),
                    last.map_or(Cell::Text("-".into()), Cell::Span),
                ],
            ));
            for (name, view) in &datasets {
                let latest = view.values.as_ref().map_or(0, |v| v.latest_bin);
                let fresh = latest > 0 && now - latest <= self.lag_threshold;
                let health = match (&view.values, view.up) {
                    (None, _) if view.last_success.is_none() && last.is_none() => Health::Unknown,
                    (_, false) => Health::Failing,
                    (Some(_), true) if fresh => Health::Ok,
                    _ => Health::Warning,
                };
                rows.rows.push(Row::new(
                    health,
                    vec![
                        Cell::Text(dash.label.clone()),
                        Cell::Text(name.clone()),
                        ago(latest),
                        Cell::Span(threshold),
                        ago(view.last_success.unwrap_or(0)),
                    ],
                ));
            }
        }
        Status {
            sections: vec![dashboards, rows],
        }
    }

    /// Builds the exposition from what the dashboards have published.
    pub fn snapshot(&self, now: i64) -> Snapshot {
        let ds_labels = |dash: &str, ds: &str| labels([("dashboard", dash), ("dataset", ds)]);
        let mut latest_bin = MetricFamily::gauge(
            "ifcb_latest_bin_timestamp",
            "Last bin date for dataset (Unix timestamp), or 0 if none exist",
        );
        let mut up_to_date = MetricFamily::gauge(
            "ifcb_is_dataset_up_to_date",
            "Indicates if the dataset is lagging (0) or up-to-date (1)",
        );
        let mut product_ts: Vec<MetricFamily> = PRODUCTS
            .iter()
            .map(|p| {
                let words = p.replace('_', " ");
                MetricFamily::gauge(
                    format!("ifcb_latest_{p}_timestamp"),
                    format!(
                        "Last date {words} exist for dataset (Unix timestamp), or 0 if none exist"
                    ),
                )
            })
            .collect();
        let mut product_lag: Vec<MetricFamily> = PRODUCTS
            .iter()
            .map(|p| {
                let words = p.replace('_', " ");
                MetricFamily::gauge(
                    format!("ifcb_latest_{p}_lag_seconds"),
                    format!(
                        "Lag time for the latest {words} for dataset (seconds), or -1 if none exist"
                    ),
                )
            })
            .collect();
        let mut values: Vec<MetricFamily> = TIMELINE
            .iter()
            .map(|(m, unit)| {
                MetricFamily::gauge(format!("ifcb_{m}_value"), format!("Latest {m} in {unit}"))
            })
            .collect();
        let mut stamps: Vec<MetricFamily> = TIMELINE
            .iter()
            .map(|(m, _)| {
                MetricFamily::gauge(
                    format!("ifcb_{m}_timestamp"),
                    format!("Timestamp of latest {m} value"),
                )
            })
            .collect();
        let mut dashboard_up = MetricFamily::gauge(
            "ifcb_dashboard_up",
            "Whether dataset discovery (filter_options) succeeded at the dashboard's last refresh.",
        );
        let mut dataset_up = MetricFamily::gauge(
            "ifcb_dataset_up",
            "Whether the dataset's last refresh succeeded (latest bin, time series and bin list).",
        );
        let mut last_success = MetricFamily::gauge(
            "ifcb_dataset_last_success_timestamp_seconds",
            "When the dataset was last refreshed successfully; values are refreshed at most once per interval, on scrape.",
        );
        let mut refresh = MetricFamily::gauge(
            "tidegauge_ifcb_refresh_duration_seconds",
            "Wall time of the dashboard's last completed batch of dataset refreshes.",
        );
        let mut requests = MetricFamily::counter(
            "tidegauge_ifcb_upstream_requests",
            "Requests to the dashboard by route and status (code=\"error\" for transport failures and timeouts).",
        );
        let mut durations = MetricFamily::new(
            "tidegauge_ifcb_upstream_request_duration_seconds",
            "Duration of requests to the dashboard by route.",
            MetricType::Histogram,
        );

        for dash in &self.dashboards {
            let (disc_up, datasets, last) = dash.view();
            let dl = labels([("dashboard", &dash.label)]);
            dashboard_up.push(dl.clone(), if disc_up { 1.0 } else { 0.0 });
            if let Some(d) = last {
                refresh.push(dl.clone(), d.as_secs_f64());
            }
            for (name, view) in &datasets {
                let l = ds_labels(&dash.label, name);
                dataset_up.push(l.clone(), if view.up { 1.0 } else { 0.0 });
                if let Some(t) = view.last_success {
                    last_success.push(l.clone(), t as f64);
                }
                let Some(v) = &view.values else { continue };
                latest_bin.push(l.clone(), v.latest_bin as f64);
                let fresh = v.latest_bin > 0 && now - v.latest_bin <= self.lag_threshold;
                up_to_date.push(l.clone(), if fresh { 1.0 } else { 0.0 });
                for i in 0..3 {
                    let ts = v.products[i];
                    product_ts[i].push(l.clone(), ts as f64);
                    let lag = if ts > 0 && v.latest_bin > 0 {
                        (v.latest_bin - ts).max(0)
                    } else {
                        -1
                    };
                    product_lag[i].push(l.clone(), lag as f64);
                }
                for (i, point) in v.series.iter().enumerate() {
                    if let Some((ts, value)) = point {
                        values[i].push(l.clone(), *value);
                        stamps[i].push(l.clone(), *ts as f64);
                    }
                }
            }
            let stats = dash.client().stats();
            for (route, code, n) in &stats.counts {
                requests.push(
                    labels([("dashboard", &dash.label), ("route", route), ("code", code)]),
                    *n as f64,
                );
            }
            for (route, buckets, sum, count) in stats.durations {
                let l: Labels = labels([("dashboard", &dash.label), ("route", route)]);
                durations.samples.push(Sample {
                    labels: l.into(),
                    value: Value::Histogram(Box::new(tidegauge_core::Histogram {
                        buckets: api::DURATION_BUCKETS.iter().copied().zip(buckets).collect(),
                        sum,
                        count,
                    })),
                    created: None,
                });
            }
        }

        let mut s = Snapshot::new();
        // The seed's per-dataset order: timeline pairs, latest bin, products, up-to-date.
        for (v, t) in values.into_iter().zip(stamps) {
            s.push(v);
            s.push(t);
        }
        s.push(latest_bin);
        for (t, l) in product_ts.into_iter().zip(product_lag) {
            s.push(t);
            s.push(l);
        }
        s.push(up_to_date);
        for f in [
            dashboard_up,
            dataset_up,
            last_success,
            refresh,
            requests,
            durations,
        ] {
            s.push(f);
        }
        s
    }
}

fn now_secs(ctx: &ScrapeContext) -> i64 {
    unix_seconds(ctx.now()).floor() as i64
}

#[async_trait]
impl Collector for Ifcb {
    fn name(&self) -> &str {
        NAME
    }

    fn status(&self) -> Status {
        self.status_at(tidegauge_core::unix_seconds(self.clock.now()) as i64)
    }

    async fn collect(&self, ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        let now = now_secs(ctx);
        // Leave room to assemble the answer; refreshes still running go on in the background.
        let reserve = (ctx.remaining() / 20).min(Duration::from_millis(250));
        let wait_until = ctx.deadline() - reserve;
        let refreshes = self.dashboards.iter().map(|d| {
            let d = Arc::clone(d);
            tokio::spawn(async move { d.refresh(now).await })
        });
        let _ = tokio::time::timeout_at(wait_until, join_all(refreshes)).await;
        Ok(Arc::new(self.snapshot(now_secs(ctx))))
    }

    async fn run(&self, _shutdown: tidegauge_core::CancellationToken) {
        if self.refresh_at_start {
            let now = unix_seconds(std::time::SystemTime::now()).floor() as i64;
            join_all(self.dashboards.iter().map(|d| d.refresh(now))).await;
        }
    }
}
