//! A fake IFCB dashboard (WHOIGit/ifcbdb API) on loopback, built from a small model of datasets
//! and bins. It reproduces the shapes the collector depends on: Django separators, HTML error
//! pages, 500 for unbounded empty time series, clamped values, mixed int/float `y`, routes that
//! an older or newer dashboard lacks, one sync worker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidegauge_core::lock;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// Bin cadence used by the scenarios: 21 minutes.
pub const CADENCE: i64 = 1260;

/// One bin.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeBin {
    /// `sample_time`, Unix seconds.
    pub time: i64,
    /// Hidden from time series, still listed.
    pub skip: bool,
    /// blobs, features, class scores.
    pub products: [bool; 3],
    /// Status `has_products` answers for this bin (200 normally).
    pub has_products_status: u16,
    /// Old-style pid `IFCB1_YYYY_DDD_HHMMSS` instead of `DYYYYMMDDTHHMMSS_IFCB158`.
    pub old_pid: bool,
    /// Temperature column: `None` is SQL null; the fill value is -9999999.
    pub temperature: Option<f64>,
}

impl FakeBin {
    /// A normal bin with all products.
    pub fn at(time: i64) -> Self {
        Self {
            time,
            skip: false,
            products: [true; 3],
            has_products_status: 200,
            old_pid: false,
            temperature: Some(10.0 + (time % 100) as f64 / 10.0),
        }
    }

    /// The bin's pid.
    pub fn pid(&self) -> String {
        let Some(t) = chrono::DateTime::from_timestamp(self.time, 0) else {
            return format!("INVALID_{}", self.time);
        };
        if self.old_pid {
            t.format("IFCB1_%Y_%j_%H%M%S").to_string()
        } else {
            t.format("D%Y%m%dT%H%M%S_IFCB158").to_string()
        }
    }
}

/// One dataset.
#[derive(Debug, Clone, Default)]
pub struct FakeDataset {
    /// Bins, ascending by time.
    pub bins: Vec<FakeBin>,
    /// Listed by `filter_options`.
    pub active: bool,
    /// Delay before every answer about this dataset (time series, latest bin, listings).
    pub slow: Option<Duration>,
    /// Status every `time-series` request for this dataset answers instead of 200.
    pub time_series_status: Option<u16>,
    /// Answers about this dataset wait until the gate opens (for tests that need a refresh to be
    /// unfinished at a deadline, whatever the machine's speed).
    pub gate: Option<Arc<Gate>>,
}

/// A gate that holds requests until it opens, and stays open.
#[derive(Debug, Default)]
pub struct Gate {
    open: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl Gate {
    /// A closed gate.
    pub fn closed() -> Arc<Self> {
        Arc::default()
    }

    /// Lets every held and later request through.
    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn pass(&self) {
        loop {
            let notified = self.notify.notified();
            if self.open.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

impl FakeDataset {
    /// An active dataset of `n` bins every [`CADENCE`] seconds, the newest at `newest`.
    pub fn regular(n: usize, newest: i64) -> Self {
        let bins = (0..n)
            .rev()
            .map(|i| FakeBin::at(newest - i as i64 * CADENCE))
            .collect();
        Self {
            bins,
            active: true,
            ..Self::default()
        }
    }
}

/// The dashboard model.
#[derive(Debug, Clone)]
pub struct Model {
    /// Datasets by name.
    pub datasets: BTreeMap<String, FakeDataset>,
    /// The server's clock, Unix seconds (bins after it are "future").
    pub now: i64,
    /// `most_recent_bin` exists (added upstream 2025-11).
    pub most_recent_bin: bool,
    /// `list_bins` exists (removed upstream 2026-03-08).
    pub list_bins: bool,
    /// Write JSON timestamps with milliseconds.
    pub millis: bool,
    /// Time every request takes.
    pub delay: Duration,
    /// Serve one request at a time, as the dashboard's single gunicorn worker does.
    pub single_worker: bool,
    /// Status `filter_options` answers instead of 200.
    pub filter_options_status: Option<u16>,
}

impl Model {
    /// An empty modern dashboard (both `most_recent_bin` and `list_bins`).
    pub fn new(now: i64) -> Self {
        Self {
            datasets: BTreeMap::new(),
            now,
            most_recent_bin: true,
            list_bins: true,
            millis: false,
            delay: Duration::ZERO,
            single_worker: true,
            filter_options_status: None,
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    model: Mutex<Option<Model>>,
    log: Mutex<Vec<String>>,
    /// Response body bytes served since the log was last cleared.
    bytes: std::sync::atomic::AtomicU64,
    worker: tokio::sync::Mutex<()>,
}

/// A running fake dashboard.
#[derive(Debug, Clone)]
pub struct FakeDashboard {
    shared: Arc<Shared>,
    /// API base URL, ending in `/api`.
    pub url: String,
}

impl FakeDashboard {
    /// Starts serving `model` on an ephemeral loopback port.
    pub async fn start(model: Model) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            model: Mutex::new(Some(model)),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/api/filter_options", get(filter_options))
            .route("/api/time-series/{metric}", get(time_series))
            .route("/api/most_recent_bin", get(most_recent_bin))
            .route("/api/list_bins", get(list_bins))
            .route("/api/export_metadata/{dataset}", get(export_metadata))
            .route("/api/has_products/{pid}", get(has_products))
            .fallback(|| async { html(404) })
            .layer(axum::middleware::map_response_with_state(
                Arc::clone(&shared),
                count_bytes,
            ))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            shared,
            url: format!("http://{addr}/api"),
        })
    }

    /// Changes the model (e.g. a dataset leaves, time passes).
    pub fn update(&self, f: impl FnOnce(&mut Model)) {
        if let Some(m) = lock(&self.shared.model).as_mut() {
            f(m);
        }
    }

    /// Requests received so far, as `route path?query`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }

    /// Number of requests whose logged line starts with `prefix` (a route name).
    pub fn count(&self, prefix: &str) -> usize {
        lock(&self.shared.log)
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        lock(&self.shared.log).clear();
        self.shared
            .bytes
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// Response body bytes served since the log was last cleared.
    pub fn bytes_served(&self) -> u64 {
        self.shared.bytes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Adds each response's body size (all of them are built whole) to the count.
async fn count_bytes(State(shared): State<Arc<Shared>>, response: Response) -> Response {
    use axum::body::HttpBody as _;
    let size = response.body().size_hint().exact().unwrap_or(0);
    shared
        .bytes
        .fetch_add(size, std::sync::atomic::Ordering::SeqCst);
    response
}

fn html(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!("<!doctype html>\n<html lang=\"en\">\n<head><title>Server Error ({status})</title></head>\n<body><h1>Server Error ({status})</h1><p></p></body>\n</html>\n"),
    )
        .into_response()
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn query(q: &Option<String>) -> BTreeMap<String, String> {
    q.as_deref()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), decode(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn stamp(t: i64, millis: bool) -> String {
    let base = chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S").to_string())
        .unwrap_or_default();
    if millis {
        format!("{base}.567Z")
    } else {
        format!("{base}Z")
    }
}

fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('Z');
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
        .map(|t| t.and_utc().timestamp())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp())
        })
}

/// Logs the request, waits for the (single) worker and the configured delays; returns the
/// model as it is when the request is served.
async fn serve(shared: &Shared, line: String, dataset: Option<&str>) -> Option<Model> {
    lock(&shared.log).push(line);
    let snapshot = lock(&shared.model).clone()?;
    // Held before the worker is taken, so a held dataset does not hold up the others.
    if let Some(gate) = dataset
        .and_then(|d| snapshot.datasets.get(d))
        .and_then(|d| d.gate.clone())
    {
        gate.pass().await;
    }
    let _worker = if snapshot.single_worker {
        Some(shared.worker.lock().await)
    } else {
        None
    };
    if !snapshot.delay.is_zero() {
        tokio::time::sleep(snapshot.delay).await;
    }
    if let Some(slow) = dataset
        .and_then(|d| snapshot.datasets.get(d))
        .and_then(|d| d.slow)
    {
        tokio::time::sleep(slow).await;
    }
    Some(snapshot)
}

async fn filter_options(State(s): State<Arc<Shared>>) -> Response {
    let Some(m) = serve(&s, "filter_options".into(), None).await else {
        return html(500);
    };
    if let Some(status) = m.filter_options_status {
        return html(status);
    }
    let names: Vec<String> = m
        .datasets
        .iter()
        .filter(|(_, d)| d.active)
        .map(|(n, _)| format!("\"{n}\""))
        .collect();
    json(format!(
        "{{\"instrument_options\": [104, 158], \"dataset_options\": [{}], \"tag_options\": [], \"cruise_options\": [], \"sample_type_options\": []}}",
        names.join(", ")
    ))
}

/// The nine timeline metrics the dashboard serves, in the API's order.
pub const METRICS: [&str; 9] = [
    "size",
    "temperature",
    "humidity",
    "run_time",
    "look_time",
    "ml_analyzed",
    "concentration",
    "n_triggers",
    "n_images",
];

/// The value the server returns for `metric` of `bin` (negatives and nulls clamped to 0).
pub fn metric_value(metric: &str, bin: &FakeBin) -> String {
    let n_images = 1000 + bin.time.rem_euclid(500);
    let ml = 4.93;
    match metric {
        "size" => (1_000_000 + bin.time.rem_euclid(997)).to_string(),
        "temperature" => match bin.temperature {
            Some(t) if t >= 0.0 => format!("{t}"),
            _ => "0".into(),
        },
        "humidity" => "31.5".into(),
        "run_time" => "1200.125".into(),
        "look_time" => "1100.5".into(),
        "ml_analyzed" => format!("{ml}"),
        "concentration" => format!("{}", n_images as f64 / ml),
        "n_triggers" => (n_images + 800).to_string(),
        _ => n_images.to_string(),
    }
}

async fn time_series(
    State(s): State<Arc<Shared>>,
    Path(metric): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let params = query(&q);
    let dataset = params.get("dataset").cloned().unwrap_or_default();
    let line = format!("time-series/{metric}?{}", q.clone().unwrap_or_default());
    let Some(m) = serve(&s, line, Some(&dataset)).await else {
        return html(500);
    };
    let metric = metric.replace('-', "_");
    if !METRICS.contains(&metric.as_str())
        || params.get("resolution").map(String::as_str) != Some("bin")
    {
        return html(500);
    }
    let ds = m.datasets.get(&dataset);
    if let Some(status) = ds.and_then(|d| d.time_series_status) {
        return html(status);
    }
    let start = params.get("start").and_then(|v| parse_time(v));
    let end = params.get("end").and_then(|v| parse_time(v));
    let points: Vec<&FakeBin> = ds
        .map(|d| {
            d.bins
                .iter()
                .filter(|b| {
                    !b.skip && start.is_none_or(|s| b.time >= s) && end.is_none_or(|e| b.time <= e)
                })
                .collect()
        })
        .unwrap_or_default();
    let (Some(start_s), Some(end_s)) = (start, end) else {
        if points.is_empty() {
            return html(500);
        }
        return series_json(&points, &metric, m.millis, None);
    };
    series_json(&points, &metric, m.millis, Some((start_s, end_s)))
}

fn series_json(
    points: &[&FakeBin],
    metric: &str,
    millis: bool,
    bounds: Option<(i64, i64)>,
) -> Response {
    let x: Vec<String> = points
        .iter()
        .map(|b| format!("\"{}\"", stamp(b.time, millis)))
        .collect();
    let y: Vec<String> = points.iter().map(|b| metric_value(metric, b)).collect();
    let range = match (points.first(), points.last(), bounds) {
        (Some(a), Some(b), _) if points.len() == 1 => (a.time - 1200, b.time + 1200),
        (Some(a), Some(b), _) => (a.time, b.time),
        (_, _, Some(bounds)) => bounds,
        _ => (0, 0),
    };
    let unit = match metric {
        "size" => "Bytes",
        "temperature" => "Degrees C",
        "humidity" => "Percentage",
        "run_time" | "look_time" => "Seconds",
        "ml_analyzed" => "Milliliters",
        "concentration" => "ROIs / ml",
        _ => "Count",
    };
    json(format!(
        "{{\"x\": [{}], \"x-range\": {{\"start\": \"{}\", \"end\": \"{}\"}}, \"y\": [{}], \"y-axis\": \"{unit}\", \"resolution\": \"bin\"}}",
        x.join(", "),
        stamp(range.0, false),
        stamp(range.1, false),
        y.join(", ")
    ))
}

async fn most_recent_bin(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let params = query(&q);
    let dataset = params.get("dataset").cloned().unwrap_or_default();
    let Some(m) = serve(
        &s,
        format!("most_recent_bin?{}", q.clone().unwrap_or_default()),
        Some(&dataset),
    )
    .await
    else {
        return html(500);
    };
    if !m.most_recent_bin {
        return html(404);
    }
    let newest = m.datasets.get(&dataset).and_then(|d| {
        d.bins
            .iter()
            .filter(|b| b.time <= m.now)
            .max_by_key(|b| b.time)
    });
    match newest {
        None => html(404),
        Some(b) => json(format!(
            "{{\"pid\": \"{}\", \"timestamp\": \"{}\", \"time_since\": {}, \"temperature\": {}, \"humidity\": 31.5}}",
            b.pid(),
            stamp(b.time, m.millis),
            m.now - b.time,
            b.temperature.unwrap_or(-9999999.0)
        )),
    }
}

fn listed<'a>(m: &'a Model, dataset: &str, params: &BTreeMap<String, String>) -> Vec<&'a FakeBin> {
    let start = params.get("start_date").and_then(|v| parse_time(v));
    let end = params
        .get("end_date")
        .and_then(|v| parse_time(v))
        .map(|e| e + 86_400);
    m.datasets
        .get(dataset)
        .map(|d| {
            d.bins
                .iter()
                .filter(|b| start.is_none_or(|s| b.time >= s) && end.is_none_or(|e| b.time < e))
                .collect()
        })
        .unwrap_or_default()
}

async fn list_bins(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let params = query(&q);
    let dataset = params.get("dataset").cloned().unwrap_or_default();
    let Some(m) = serve(
        &s,
        format!("list_bins?{}", q.clone().unwrap_or_default()),
        Some(&dataset),
    )
    .await
    else {
        return html(500);
    };
    if !m.list_bins {
        return html(404);
    }
    let rows: Vec<String> = listed(&m, &dataset, &params)
        .iter()
        .map(|b| {
            format!(
                "{{\"pid\": \"{}\", \"sample_time\": \"{}\", \"skip\": {}}}",
                b.pid(),
                stamp(b.time, m.millis),
                b.skip
            )
        })
        .collect();
    json(format!("{{\"data\": [{}]}}", rows.join(", ")))
}

async fn export_metadata(
    State(s): State<Arc<Shared>>,
    Path(dataset): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let params = query(&q);
    let line = format!(
        "export_metadata/{dataset}?{}",
        q.clone().unwrap_or_default()
    );
    let Some(m) = serve(&s, line, Some(&dataset)).await else {
        return html(500);
    };
    let mut bins = listed(&m, &dataset, &params);
    if bins.is_empty() {
        return html(404);
    }
    // The real route orders rows by pid, not by time.
    bins.sort_by_key(|b| b.pid());
    let mut out = String::from(
        "dataset,pid,sample_time,ifcb,ml_analyzed,latitude,longitude,depth,cruise,cast,niskin,sample_type,n_images,tag1,comment_summary,trigger_selection,skip\n",
    );
    for b in bins {
        let t = chrono::DateTime::from_timestamp(b.time, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let frac = if m.millis { ".567" } else { "" };
        out.push_str(&format!(
            "{dataset},{},{t}{frac}+00:00,158,4.93,41.325,-70.5667,4.0,,,,,1234,,\"ok, checked\",,{}\n",
            b.pid(),
            u8::from(b.skip)
        ));
    }
    ([(header::CONTENT_TYPE, "text/csv")], out).into_response()
}

fn pid_time(pid: &str) -> Option<i64> {
    if let Some(rest) = pid.strip_prefix('D') {
        let stamp = rest.split('_').next()?;
        return chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S")
            .ok()
            .map(|t| t.and_utc().timestamp());
    }
    let rest = pid.strip_prefix("IFCB1_")?;
    chrono::NaiveDateTime::parse_from_str(rest, "%Y_%j_%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

async fn has_products(State(s): State<Arc<Shared>>, Path(pid): Path<String>) -> Response {
    let Some(m) = serve(&s, format!("has_products/{pid}"), None).await else {
        return html(500);
    };
    let Some(t) = pid_time(&pid) else {
        return html(404);
    };
    let bin = m.datasets.values().find_map(|d| {
        d.bins
            .binary_search_by_key(&t, |b| b.time)
            .ok()
            .map(|i| &d.bins[i])
            .filter(|b| b.pid() == pid)
    });
    let Some(b) = bin else { return html(404) };
    if b.has_products_status != 200 {
        return html(b.has_products_status);
    }
    json(format!(
        "{{\"has_blobs\": {}, \"has_features\": {}, \"has_class_scores\": {}}}",
        b.products[0], b.products[1], b.products[2]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_round_trip() {
        let mut b = FakeBin::at(1_748_736_754);
        assert_eq!(b.pid(), "D20250601T001234_IFCB158");
        assert_eq!(pid_time(&b.pid()), Some(b.time));
        b.old_pid = true;
        b.time = 1_149_617_639;
        assert_eq!(b.pid(), "IFCB1_2006_157_181359");
        assert_eq!(pid_time(&b.pid()), Some(b.time));
    }

    #[test]
    fn query_decoding() {
        assert_eq!(decode("2025-06-01T00%3A12%3A34Z"), "2025-06-01T00:12:34Z");
        assert_eq!(decode("a%20b+c%"), "a b c%");
    }
}
