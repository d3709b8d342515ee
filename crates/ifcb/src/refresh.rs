//! One dashboard: discovery, per-dataset refreshes, and what they remember.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidegauge_core::lock;

use futures_util::FutureExt;
use futures_util::future::join_all;
use tidegauge_core::singleflight::SingleFlight;

use crate::api::{self, Bin, Client, RequestError, encode, format_date, format_timestamp, route};

/// The nine timeline metrics, in the seed's order, with their unit strings.
pub const TIMELINE: [(&str, &str); 9] = [
    ("size", "Bytes"),
    ("temperature", "Degrees C"),
    ("humidity", "Percentage"),
    ("run_time", "Seconds"),
    ("look_time", "Seconds"),
    ("ml_analyzed", "Milliliters"),
    ("concentration", "ROIs / ml"),
    ("n_triggers", "Count"),
    ("n_images", "Count"),
];

/// The three products, in the seed's order.
pub const PRODUCTS: [&str; 3] = ["blobs", "features", "class_scores"];

/// Bins dated further in the future than this are ignored (clock-skew allowance).
const FUTURE_SLACK: i64 = 300;
/// Longest wait before a failed dataset is refreshed again.
const RETRY: i64 = 300;
/// How long a route that answered 404 is skipped before it is tried again.
const REPROBE: i64 = 86_400;

/// Settings shared by every dataset of a dashboard.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Refresh age.
    pub interval: Duration,
    /// Lookback window, seconds.
    pub lookback: i64,
    /// `has_products` calls per dataset per refresh.
    pub max_scan_bins: usize,
    /// Seconds after which unchanged time series are fetched again.
    pub series_refresh: i64,
    /// Requests (and datasets) in flight per dashboard.
    pub max_concurrency: usize,
}

/// Per timeline metric: (timestamp, value) of the newest point, if any.
pub type Series = [Option<(i64, f64)>; 9];

/// What one successful refresh of a dataset found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Values {
    /// Newest bin's time (skipped bins included), 0 when the dataset has none.
    pub latest_bin: i64,
    /// Per timeline metric: (timestamp, value) of the newest non-skipped bin in the window.
    pub series: [Option<(i64, f64)>; 9],
    /// Per product: time of the newest bin known to have it, 0 when none is known.
    pub products: [i64; 3],
}

/// A dataset's published state.
#[derive(Debug, Clone, Default)]
pub struct DatasetView {
    /// Values of the last successful refresh.
    pub values: Option<Values>,
    /// Whether the last refresh succeeded.
    pub up: bool,
    /// Unix time of the last successful refresh.
    pub last_success: Option<i64>,
}

#[derive(Debug, Default)]
struct DatasetState {
    view: DatasetView,
    /// Unix time of the last finished attempt and whether it succeeded.
    attempted: Option<(i64, bool)>,
    /// Product times remembered across refreshes.
    products: [i64; 3],
    /// Cached answer of the unbounded "empty or dormant?" question: (asked at, latest bin).
    dormant: Option<(i64, Option<i64>)>,
    /// The last fetched time series: when, for which newest bin, and the points.
    series_cache: Option<(i64, i64, Series)>,
}

#[derive(Debug, Default)]
struct Dataset {
    state: Mutex<DatasetState>,
    flight: SingleFlight<()>,
}

#[derive(Debug, Default)]
struct Routes {
    /// Unix time at which a route was found missing (404 for a dataset that has bins).
    most_recent_bin_missing: Option<i64>,
    /// `most_recent_bin` answered 200 once: no need to probe it one dataset at a time.
    most_recent_bin_confirmed: bool,
    list_bins_missing: Option<i64>,
}

#[derive(Debug, Default)]
struct Discovery {
    /// Datasets to refresh, in order.
    names: Vec<String>,
    up: bool,
    at: Option<i64>,
}

/// A dashboard and everything remembered about it.
#[derive(Debug)]
pub struct Dashboard {
    /// The `dashboard` label.
    pub label: String,
    client: Client,
    settings: Settings,
    fixed: Vec<String>,
    exclude: Vec<String>,
    routes: Mutex<Routes>,
    discovery: Mutex<Discovery>,
    discovery_flight: SingleFlight<()>,
    /// Held while `most_recent_bin` is probed before it is known to exist, so that on an older
    /// dashboard only the first dataset pays for the 404.
    probe: tokio::sync::Mutex<()>,
    /// Datasets refreshed at once (FIFO, so in name order): each finishes, and is published,
    /// early instead of all of them finishing together at the end of the batch.
    in_progress: tokio::sync::Semaphore,
    datasets: Mutex<BTreeMap<String, Arc<Dataset>>>,
    /// Wall time of the last completed batch of refreshes.
    last_refresh: Mutex<Option<Duration>>,
}

/// Why a dataset's refresh failed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DatasetError(#[from] RequestError);

impl Dashboard {
    /// A dashboard; `fixed` non-empty skips discovery.
    pub fn new(
        label: String,
        client: Client,
        settings: Settings,
        fixed: Vec<String>,
        exclude: Vec<String>,
    ) -> Self {
        let in_progress = tokio::sync::Semaphore::new(settings.max_concurrency.max(1));
        Self {
            label,
            client,
            settings,
            fixed,
            exclude,
            routes: Mutex::new(Routes::default()),
            discovery: Mutex::new(Discovery::default()),
            discovery_flight: SingleFlight::new(),
            probe: tokio::sync::Mutex::new(()),
            in_progress,
            datasets: Mutex::new(BTreeMap::new()),
            last_refresh: Mutex::new(None),
        }
    }

    /// Request counters.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether discovery succeeded last time, the datasets in order, and the last batch's wall time.
    pub fn view(&self) -> (bool, Vec<(String, DatasetView)>, Option<Duration>) {
        let (up, names) = {
            let d = lock(&self.discovery);
            (d.up, d.names.clone())
        };
        let datasets = lock(&self.datasets);
        let views = names
            .iter()
            .filter_map(|n| {
                datasets
                    .get(n)
                    .map(|d| (n.clone(), lock(&d.state).view.clone()))
            })
            .collect();
        (up, views, *lock(&self.last_refresh))
    }

    /// Refreshes discovery and every dataset whose values are older than the interval; the
    /// returned future completes when all of them have (they go on if it is dropped).
    pub async fn refresh(self: &Arc<Self>, now: i64) {
        let started = Instant::now();
        self.discover(now).await;
        let (up, names) = {
            let d = lock(&self.discovery);
            (d.up, d.names.clone())
        };
        if !up {
            // Nothing can be refreshed: every known dataset is down, values stay.
            for ds in lock(&self.datasets).values() {
                lock(&ds.state).view.up = false;
            }
            return;
        }
        let interval = self.settings.interval.as_secs() as i64;
        // A failed dataset is tried again sooner than the interval, but not so often that a
        // struggling dashboard is hammered.
        let retry = interval.min(RETRY);
        let mut flights = Vec::new();
        for name in names {
            let ds = Arc::clone(lock(&self.datasets).entry(name.clone()).or_default());
            let due = match lock(&ds.state).attempted {
                None => true,
                Some((at, ok)) => now - at >= if ok { interval } else { retry },
            };
            if !due && !ds.flight.in_flight() {
                continue;
            }
            let this = Arc::clone(self);
            let ds2 = Arc::clone(&ds);
            flights.push(ds.flight.run(move || {
                async move {
                    let result = this.refresh_dataset(&name, &ds2, now).await;
                    let mut st = lock(&ds2.state);
                    st.attempted = Some((now, result.is_ok()));
                    match result {
                        Ok(values) => {
                            st.products = values.products;
                            st.view = DatasetView {
                                values: Some(values),
                                up: true,
                                last_success: Some(now),
                            };
                        }
                        Err(e) => {
                            tracing::warn!(dashboard = %this.label, dataset = %name, error = %e, "dataset refresh failed");
                            st.view.up = false;
                        }
                    }
                }
                .boxed()
            }));
        }
        if flights.is_empty() {
            return;
        }
        let this = Arc::clone(self);
        // Record the batch's wall time even when the scrape stops waiting for it.
        let batch = tokio::spawn(async move {
            join_all(flights).await;
            *lock(&this.last_refresh) = Some(started.elapsed());
        });
        let _ = batch.await;
    }

    async fn discover(self: &Arc<Self>, now: i64) {
        let fresh = {
            let d = lock(&self.discovery);
            d.at.is_some_and(|at| d.up && now - at < self.settings.interval.as_secs() as i64)
        };
        if fresh {
            return;
        }
        let this = Arc::clone(self);
        let flight = self.discovery_flight.run(move || {
            async move {
                let result = if this.fixed.is_empty() {
                    match this.client.get(route::FILTER_OPTIONS, "filter_options").await {
                        Ok(a) if a.status == 200 => api::parse_filter_options(&a.body),
                        Ok(a) => Err(RequestError::Status { route: route::FILTER_OPTIONS, status: a.status }),
                        Err(e) => Err(e),
                    }
                } else {
                    Ok(this.fixed.clone())
                };
                let mut d = lock(&this.discovery);
                d.at = Some(now);
                match result {
                    Ok(mut names) => {
                                                let mut seen = std::collections::HashSet::new();
                        names.retain(|n| !this.exclude.contains(n) && seen.insert(n.clone()));
                        // Datasets that left the list lose their series and their memory.
                        lock(&this.datasets).retain(|k, _| names.contains(k));
                        d.names = names;
                        d.up = true;
                    }
                    Err(e) => {
                        tracing::warn!(dashboard = %this.label, error = %e, "dataset discovery failed");
                        d.up = false;
                    }
                }
            }
            .boxed()
        });
        flight.await;
    }

    fn route_missing(&self, which: &str, now: i64) -> bool {
        let r = lock(&self.routes);
        let at = if which == route::MOST_RECENT_BIN {
            r.most_recent_bin_missing
        } else {
            r.list_bins_missing
        };
        at.is_some_and(|at| now - at < REPROBE)
    }

    fn mark_missing(&self, which: &str, now: i64) {
        let mut r = lock(&self.routes);
        let slot = if which == route::MOST_RECENT_BIN {
            &mut r.most_recent_bin_missing
        } else {
            &mut r.list_bins_missing
        };
        if slot.is_none() {
            tracing::info!(dashboard = %self.label, route = which, "route answers 404 for a dataset with bins; using the fallback for 24 h");
        }
        *slot = Some(now);
    }

    /// Bins of `dataset` from `start` on: `list_bins` unless missing, else `export_metadata`.
    /// `None` means the routes say "no bins" (404 from `export_metadata`).
    async fn bins_since(
        &self,
        dataset: &str,
        start: Option<i64>,
        now: i64,
    ) -> Result<Option<Vec<Bin>>, RequestError> {
        self.listing(
            dataset,
            start,
            now,
            api::parse_list_bins,
            api::parse_export_metadata,
            |b| !b.is_empty(),
        )
        .await
    }

    /// One listing request (with fallback), parsed by `from_json` (`list_bins`) or `from_csv`
    /// (`export_metadata`). Marks `list_bins` missing when it 404s but `export_metadata` shows
    /// bins (`has_bins`).
    async fn listing<T>(
        &self,
        dataset: &str,
        start: Option<i64>,
        now: i64,
        from_json: impl Fn(&[u8]) -> Result<T, RequestError>,
        from_csv: impl Fn(&[u8]) -> Result<T, RequestError>,
        has_bins: impl Fn(&T) -> bool,
    ) -> Result<Option<T>, RequestError> {
        let ds = encode(dataset);
        let start_q = start.map(|s| format!("start_date={}", format_date(s)));
        let mut list_bins_404 = false;
        if !self.route_missing(route::LIST_BINS, now) {
            let q = match &start_q {
                Some(s) => format!("list_bins?dataset={ds}&{s}"),
                None => format!("list_bins?dataset={ds}"),
            };
            let a = self.client.get(route::LIST_BINS, &q).await?;
            match a.status {
                200 => return from_json(&a.body).map(Some),
                404 => list_bins_404 = true,
                s => {
                    return Err(RequestError::Status {
                        route: route::LIST_BINS,
                        status: s,
                    });
                }
            }
        }
        let q = match &start_q {
            Some(s) => format!("export_metadata/{ds}?{s}"),
            None => format!("export_metadata/{ds}"),
        };
        let a = self.client.get(route::EXPORT_METADATA, &q).await?;
        match a.status {
            200 => {
                let parsed = from_csv(&a.body)?;
                if list_bins_404 && has_bins(&parsed) {
                    self.mark_missing(route::LIST_BINS, now);
                }
                Ok(Some(parsed))
            }
            404 => Ok(None),
            s => Err(RequestError::Status {
                route: route::EXPORT_METADATA,
                status: s,
            }),
        }
    }

    async fn refresh_dataset(
        &self,
        name: &str,
        ds: &Dataset,
        now: i64,
    ) -> Result<Values, DatasetError> {
        let _slot = self.in_progress.acquire().await.ok();
        let lookback = self.settings.lookback;
        let limit = now + FUTURE_SLACK;
        let newest = |bins: &[Bin]| bins.iter().map(|b| b.time).filter(|t| *t <= limit).max();

        // 1. The newest bin. Until `most_recent_bin` is known to exist, datasets probe it one
        // at a time.
        let unknown = {
            let r = lock(&self.routes);
            !r.most_recent_bin_confirmed
                && r.most_recent_bin_missing
                    .is_none_or(|at| now - at >= REPROBE)
        };
        let probe_guard = if unknown {
            Some(self.probe.lock().await)
        } else {
            None
        };
        let mut listing: Option<(i64, Vec<Bin>)> = None;
        let mut latest: Option<i64> = None;
        let mut mrb_404 = false;
        if !self.route_missing(route::MOST_RECENT_BIN, now) {
            let a = self
                .client
                .get(
                    route::MOST_RECENT_BIN,
                    &format!("most_recent_bin?dataset={}", encode(name)),
                )
                .await?;
            match a.status {
                200 => {
                    lock(&self.routes).most_recent_bin_confirmed = true;
                    latest = Some(api::parse_most_recent_bin(&a.body)?.1).filter(|t| *t <= limit);
                }
                404 => mrb_404 = true,
                s => {
                    return Err(RequestError::Status {
                        route: route::MOST_RECENT_BIN,
                        status: s,
                    }
                    .into());
                }
            }
        }
        if latest.is_none() {
            let start = now - lookback;
            let bins = self
                .bins_since(name, Some(start), now)
                .await?
                .unwrap_or_default();
            latest = newest(&bins);
            if latest.is_none() {
                latest = self.dormant_latest(name, ds, now).await?;
            }
            if latest.is_some() && mrb_404 {
                self.mark_missing(route::MOST_RECENT_BIN, now);
            }
            listing = Some((start, bins));
        }
        drop(probe_guard);

        // 2. The nine time series, bounded by the window anchored at the newest bin; reused
        // while the newest bin is unchanged and they are younger than `series_refresh`.
        let for_bin = latest.unwrap_or(0);
        let cached = lock(&ds.state)
            .series_cache
            .filter(|(at, bin, _)| *bin == for_bin && now - at < self.settings.series_refresh)
            .map(|(_, _, series)| series);
        let series = match cached {
            Some(series) => series,
            None => {
                let series = self.fetch_series(name, latest, now).await?;
                lock(&ds.state).series_cache = Some((now, for_bin, series));
                series
            }
        };

        // 3. Products: scan only when one is older than the newest bin.
        let mut products = lock(&ds.state).products;
        if let Some(latest) = latest
            && products.iter().any(|p| *p < latest)
        {
            let window_start = latest - lookback;
            // The listing that gave the newest bin serves the scan too when it reaches back far
            // enough, or holds at least as many candidates as a scan may check.
            let bins = match listing {
                Some((start, bins))
                    if start <= window_start
                        || bins
                            .iter()
                            .filter(|b| b.time >= window_start && b.time <= latest)
                            .count()
                            >= self.settings.max_scan_bins =>
                {
                    bins
                }
                _ => self
                    .bins_since(name, Some(window_start), now)
                    .await?
                    .unwrap_or_default(),
            };
            self.scan(name, bins, window_start, latest, limit, &mut products)
                .await;
        }
        Ok(Values {
            latest_bin: latest.unwrap_or(0),
            series,
            products,
        })
    }

    /// The newest point of each timeline metric within `[anchor - lookback, now + slack]`.
    async fn fetch_series(
        &self,
        name: &str,
        latest: Option<i64>,
        now: i64,
    ) -> Result<[Option<(i64, f64)>; 9], RequestError> {
        let lookback = self.settings.lookback;
        let anchor = latest.map_or(now, |l| l.min(now));
        let (start, end) = (
            format_timestamp(anchor - lookback),
            format_timestamp(now + FUTURE_SLACK),
        );
        let requests = TIMELINE.iter().map(|(metric, _)| {
            let q = format!(
                "time-series/{metric}?resolution=bin&dataset={}&start={}&end={}",
                encode(name),
                encode(&start),
                encode(&end)
            );
            async move {
                let a = self.client.get(route::TIME_SERIES, &q).await?;
                if a.status != 200 {
                    return Err(RequestError::Status {
                        route: route::TIME_SERIES,
                        status: a.status,
                    });
                }
                api::parse_time_series(&a.body)
            }
        });
        let mut series: [Option<(i64, f64)>; 9] = [None; 9];
        for (slot, r) in series.iter_mut().zip(join_all(requests).await) {
            *slot = r?;
        }
        Ok(series)
    }

    /// Unbounded question "empty or dormant?", asked at most once per 24 h per dataset.
    async fn dormant_latest(
        &self,
        name: &str,
        ds: &Dataset,
        now: i64,
    ) -> Result<Option<i64>, RequestError> {
        if let Some((at, latest)) = lock(&ds.state).dormant
            && now - at < REPROBE
        {
            return Ok(latest);
        }
        let limit = now + FUTURE_SLACK;
        let latest = self
            .listing(
                name,
                None,
                now,
                |b| api::latest_in_list_bins(b, limit),
                |b| api::latest_in_export_metadata(b, limit),
                Option::is_some,
            )
            .await?
            .flatten();
        lock(&ds.state).dormant = Some((now, latest));
        Ok(latest)
    }

    /// Newest first within `[window_start, latest]`, at most `max_scan_bins` calls; stops once
    /// every product is found here or already known at least as new as the bin at hand.
    async fn scan(
        &self,
        dataset: &str,
        mut bins: Vec<Bin>,
        window_start: i64,
        latest: i64,
        limit: i64,
        products: &mut [i64; 3],
    ) {
        bins.retain(|b| b.time >= window_start && b.time <= latest.min(limit));
        bins.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.pid.cmp(&a.pid)));
        bins.dedup_by(|a, b| a.pid == b.pid);
        let mut found = [false; 3];
        for bin in bins.iter().take(self.settings.max_scan_bins) {
            let done = (0..3).all(|i| found[i] || products[i] >= bin.time);
            if done {
                break;
            }
            let answer = self
                .client
                .get(
                    route::HAS_PRODUCTS,
                    &format!("has_products/{}", encode(&bin.pid)),
                )
                .await;
            let flags = match answer {
                Ok(a) if a.status == 200 => match api::parse_has_products(&a.body) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::debug!(dashboard = %self.label, dataset, pid = %bin.pid, error = %e, "skipping bin");
                        continue;
                    }
                },
                // Vanished bin, missing product directory, or a scan past the worker timeout.
                Ok(a) if matches!(a.status, 404 | 500 | 502) => continue,
                Ok(a) => {
                    tracing::warn!(dashboard = %self.label, dataset, status = a.status, "has_products failed; product scan ends for this refresh");
                    break;
                }
                Err(e) => {
                    tracing::warn!(dashboard = %self.label, dataset, error = %e, "has_products failed; product scan ends for this refresh");
                    break;
                }
            };
            for i in 0..3 {
                if flags[i] && !found[i] {
                    found[i] = true;
                    // A newer time remembered from an earlier refresh stays.
                    products[i] = products[i].max(bin.time);
                }
            }
        }
    }
}
