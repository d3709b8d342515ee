//! The IFCB dashboard API: bounded, counted requests and the parsers of its answers.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tidegauge_core::lock;

use serde::Deserialize;
use tidegauge_core::http::{BodyError, read_body_limited};
use tokio::sync::Semaphore;

/// Route names, as in `tidegauge_ifcb_upstream_requests_total{route}`.
pub mod route {
    /// `filter_options`.
    pub const FILTER_OPTIONS: &str = "filter_options";
    /// `time-series/<metric>`.
    pub const TIME_SERIES: &str = "time-series";
    /// `most_recent_bin`.
    pub const MOST_RECENT_BIN: &str = "most_recent_bin";
    /// `list_bins`.
    pub const LIST_BINS: &str = "list_bins";
    /// `export_metadata/<dataset>`.
    pub const EXPORT_METADATA: &str = "export_metadata";
    /// `has_products/<pid>`.
    pub const HAS_PRODUCTS: &str = "has_products";
}

/// Upper bounds of the request-duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 9] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Why a request gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Connection failure, timeout, or a body over the size limit.
    #[error("{route}: {reason}")]
    Transport {
        /// Route name.
        route: &'static str,
        /// What happened.
        reason: String,
    },
    /// A status the caller does not handle.
    #[error("{route}: HTTP {status}")]
    Status {
        /// Route name.
        route: &'static str,
        /// The status.
        status: u16,
    },
    /// A 200 whose body does not have the documented shape.
    #[error("{route}: unexpected response: {reason}")]
    Parse {
        /// Route name.
        route: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// An answer: status and body (bodies of error statuses are HTML and never parsed).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct RouteStats {
    /// (route, code) → count.
    counts: BTreeMap<(&'static str, String), u64>,
    /// route → (cumulative bucket counts, sum, count).
    durations: BTreeMap<&'static str, (Vec<u64>, f64, u64)>,
}

/// HTTP access to one dashboard: a concurrency limit, a timeout and a size limit on every
/// request, and counters of what was asked.
#[derive(Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    permits: Semaphore,
    timeout: Duration,
    max_body: usize,
    stats: Mutex<RouteStats>,
}

/// Request counts and duration histograms of one dashboard, for the self-metrics.
#[derive(Debug, Clone, Default)]
pub struct StatsView {
    /// (route, code) → count.
    pub counts: Vec<(&'static str, String, u64)>,
    /// route → (cumulative bucket counts aligned with [`DURATION_BUCKETS`], sum, count).
    pub durations: Vec<(&'static str, Vec<u64>, f64, u64)>,
}

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

impl Client {
    /// A client for the API at `base` (ending in `/api`; a trailing `/` is dropped).
    pub fn new(
        base: &str,
        http: reqwest::Client,
        max_concurrency: usize,
        timeout: Duration,
        max_body: usize,
    ) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            permits: Semaphore::new(max_concurrency.max(1)),
            timeout,
            max_body,
            stats: Mutex::new(RouteStats::default()),
        }
    }

    /// GETs `{base}/{path_and_query}`; `route` names it in the counters.
    pub async fn get(
        &self,
        route: &'static str,
        path_and_query: &str,
    ) -> Result<Answer, RequestError> {
        let url = format!("{}/{path_and_query}", self.base);
        // The semaphore is never closed; a failure here would only mean "no limit".
        let _permit = self.permits.acquire().await.ok();
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, async {
            let resp = self.http.get(&url).send().await?;
            let status = resp.status().as_u16();
            if status != 200 {
                // Error pages are HTML; only the status matters. Don't read them.
                return Ok(Answer {
                    status,
                    body: Vec::new(),
                });
            }
            let body = read_body_limited(resp, self.max_body).await?;
            Ok::<_, FetchError>(Answer { status, body })
        })
        .await;
        let elapsed = started.elapsed();
        let (code, out) = match result {
            Err(_) => (
                "error".to_owned(),
                Err(RequestError::Transport {
                    route,
                    reason: format!("no answer within {:?}", self.timeout),
                }),
            ),
            Ok(Err(e)) => (
                "error".to_owned(),
                Err(RequestError::Transport {
                    route,
                    reason: e.to_string(),
                }),
            ),
            Ok(Ok(a)) => (a.status.to_string(), Ok(a)),
        };
        self.record(route, code, elapsed);
        out
    }

    fn record(&self, route: &'static str, code: String, elapsed: Duration) {
        let mut stats = lock(&self.stats);
        *stats.counts.entry((route, code)).or_default() += 1;
        let d = stats
            .durations
            .entry(route)
            .or_insert_with(|| (vec![0; DURATION_BUCKETS.len()], 0.0, 0));
        let secs = elapsed.as_secs_f64();
        for (i, le) in DURATION_BUCKETS.iter().enumerate() {
            if secs <= *le {
                d.0[i] += 1;
            }
        }
        d.1 += secs;
        d.2 += 1;
    }

    /// The counters so far.
    pub fn stats(&self) -> StatsView {
        let stats = lock(&self.stats);
        StatsView {
            counts: stats
                .counts
                .iter()
                .map(|((r, c), n)| (*r, c.clone(), *n))
                .collect(),
            durations: stats
                .durations
                .iter()
                .map(|(r, (b, s, c))| (*r, b.clone(), *s, *c))
                .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Body(#[from] BodyError),
}

fn parse_json<'a, T: Deserialize<'a>>(
    route: &'static str,
    body: &'a [u8],
) -> Result<T, RequestError> {
    serde_json::from_slice(body).map_err(|e| RequestError::Parse {
        route,
        reason: e.to_string(),
    })
}

/// Active datasets from `filter_options`.
pub fn parse_filter_options(body: &[u8]) -> Result<Vec<String>, RequestError> {
    #[derive(Deserialize)]
    struct F {
        dataset_options: Vec<String>,
    }
    Ok(parse_json::<F>(route::FILTER_OPTIONS, body)?.dataset_options)
}

/// The newest point of a `time-series` answer: (timestamp, value), `None` when empty.
pub fn parse_time_series(body: &[u8]) -> Result<Option<(i64, f64)>, RequestError> {
    #[derive(Deserialize)]
    struct T {
        x: Vec<String>,
        y: Vec<Option<f64>>,
    }
    let t: T = parse_json(route::TIME_SERIES, body)?;
    if t.x.len() != t.y.len() {
        return Err(RequestError::Parse {
            route: route::TIME_SERIES,
            reason: format!("x has {} points but y has {}", t.x.len(), t.y.len()),
        });
    }
    let (Some(x), Some(y)) = (t.x.last(), t.y.last()) else {
        return Ok(None);
    };
    let ts = parse_timestamp(x).ok_or_else(|| RequestError::Parse {
        route: route::TIME_SERIES,
        reason: format!("timestamp {x:?}"),
    })?;
    // The server clamps missing values to 0; mirror that for a literal null.
    Ok(Some((ts, y.unwrap_or(0.0))))
}

/// The newest bin from `most_recent_bin`: (pid, timestamp).
pub fn parse_most_recent_bin(body: &[u8]) -> Result<(String, i64), RequestError> {
    #[derive(Deserialize)]
    struct M {
        pid: String,
        timestamp: String,
    }
    let m: M = parse_json(route::MOST_RECENT_BIN, body)?;
    let ts = parse_timestamp(&m.timestamp).ok_or_else(|| RequestError::Parse {
        route: route::MOST_RECENT_BIN,
        reason: format!("timestamp {:?}", m.timestamp),
    })?;
    Ok((m.pid, ts))
}

/// One bin of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    /// Bin id.
    pub pid: String,
    /// `sample_time`, Unix seconds.
    pub time: i64,
}

/// Bins of a `list_bins` answer (skipped ones included).
pub fn parse_list_bins(body: &[u8]) -> Result<Vec<Bin>, RequestError> {
    #[derive(Deserialize)]
    struct L {
        data: Vec<B>,
    }
    #[derive(Deserialize)]
    struct B {
        pid: String,
        sample_time: String,
    }
    let l: L = parse_json(route::LIST_BINS, body)?;
    l.data
        .into_iter()
        .map(|b| {
            let time = parse_timestamp(&b.sample_time).ok_or_else(|| RequestError::Parse {
                route: route::LIST_BINS,
                reason: format!("sample_time {:?} of {}", b.sample_time, b.pid),
            })?;
            Ok(Bin { pid: b.pid, time })
        })
        .collect()
}

/// Bins of an `export_metadata` CSV answer; columns are found by header name.
pub fn parse_export_metadata(body: &[u8]) -> Result<Vec<Bin>, RequestError> {
    let mut bins = Vec::new();
    export_rows(body, |pid, time| {
        bins.push(Bin {
            pid: pid.to_owned(),
            time,
        })
    })?;
    Ok(bins)
}

/// The newest `sample_time` not after `limit` in an `export_metadata` answer, without keeping
/// the rows (an unbounded export can hold hundreds of thousands).
pub fn latest_in_export_metadata(body: &[u8], limit: i64) -> Result<Option<i64>, RequestError> {
    let mut latest = None;
    export_rows(body, |_, t| {
        if t <= limit && latest.is_none_or(|l| t > l) {
            latest = Some(t);
        }
    })?;
    Ok(latest)
}

/// Calls `f(pid, time)` for every data row, one row in memory at a time.
fn export_rows(body: &[u8], mut f: impl FnMut(&str, i64)) -> Result<(), RequestError> {
    let err = |reason: String| RequestError::Parse {
        route: route::EXPORT_METADATA,
        reason,
    };
    let text = std::str::from_utf8(body).map_err(|_| err("not UTF-8".into()))?;
    let mut columns: Option<(usize, usize)> = None;
    let mut n = 0usize;
    let mut failure = None;
    csv_rows(text, |row| {
        n += 1;
        match columns {
            None => {
                let col = |name: &str| row.iter().position(|h| h.trim() == name);
                match (col("pid"), col("sample_time")) {
                    (Some(p), Some(t)) => columns = Some((p, t)),
                    _ => {
                        failure = Some(err("no pid or sample_time column in the header".into()));
                        return false;
                    }
                }
            }
            Some(_) if row.len() == 1 && row[0].is_empty() => {}
            Some((pid_i, time_i)) => {
                let (Some(pid), Some(time)) = (row.get(pid_i), row.get(time_i)) else {
                    failure = Some(err(format!("row {n} has {} fields", row.len())));
                    return false;
                };
                match parse_timestamp(time) {
                    Some(t) => f(pid, t),
                    None => {
                        failure = Some(err(format!("sample_time {time:?} of {pid}")));
                        return false;
                    }
                }
            }
        }
        true
    });
    match (failure, columns) {
        (Some(e), _) => Err(e),
        (None, None) => Err(err("no header".into())),
        (None, Some(_)) => Ok(()),
    }
}

/// RFC 4180 rows, handed to `row` one at a time (quoted fields may hold commas, doubled
/// quotes and newlines); `row` returns false to stop.
fn csv_rows(text: &str, mut row: impl FnMut(&[String]) -> bool) {
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                fields.push(std::mem::take(&mut field));
                if !row(&fields) {
                    return;
                }
                fields.clear();
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        row(&fields);
    }
}

/// The newest `sample_time` not after `limit` in a `list_bins` answer, folded while parsing so
/// that an unbounded listing is never held as a list.
pub fn latest_in_list_bins(body: &[u8], limit: i64) -> Result<Option<i64>, RequestError> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use std::fmt;

    #[derive(Deserialize)]
    struct B {
        sample_time: String,
    }
    struct Data(i64);
    impl<'de> DeserializeSeed<'de> for Data {
        type Value = Option<i64>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Data {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of bins")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<i64>, A::Error> {
            let mut latest: Option<i64> = None;
            while let Some(b) = seq.next_element::<B>()? {
                let t = parse_timestamp(&b.sample_time).ok_or_else(|| {
                    serde::de::Error::custom(format!("sample_time {:?}", b.sample_time))
                })?;
                if t <= self.0 && latest.is_none_or(|l| t > l) {
                    latest = Some(t);
                }
            }
            Ok(latest)
        }
    }
    struct Top(i64);
    impl<'de> Visitor<'de> for Top {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object with `data`")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<i64>, A::Error> {
            let mut out = None;
            let mut seen = false;
            while let Some(k) = map.next_key::<String>()? {
                if k == "data" {
                    out = map.next_value_seed(Data(self.0))?;
                    seen = true;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            if !seen {
                return Err(serde::de::Error::missing_field("data"));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(Top(limit))
        .map_err(|e| RequestError::Parse {
            route: route::LIST_BINS,
            reason: e.to_string(),
        })
}

/// Which products a bin has, from `has_products`: blobs, features, class scores.
pub fn parse_has_products(body: &[u8]) -> Result<[bool; 3], RequestError> {
    #[derive(Deserialize)]
    struct H {
        has_blobs: bool,
        has_features: bool,
        has_class_scores: bool,
    }
    let h: H = parse_json(route::HAS_PRODUCTS, body)?;
    Ok([h.has_blobs, h.has_features, h.has_class_scores])
}

/// Parses the dashboard's timestamps to whole Unix seconds (fraction truncated): `Z` or
/// `+00:00`, `T` or space, with or without fractional seconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDateTime};
    let s = s.trim();
    let normalized = if s.len() > 10 && s.as_bytes()[10] == b' ' {
        let mut t = s.to_owned();
        t.replace_range(10..11, "T");
        t
    } else {
        s.to_owned()
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&normalized) {
        return Some(t.timestamp());
    }
    NaiveDateTime::parse_from_str(&normalized, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_timestamp(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Formats Unix seconds as `YYYY-MM-DD`.
pub fn format_date(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        for s in [
            "2025-06-01T00:12:34Z",
            "2025-06-01T00:12:34.567Z",
            "2025-06-01 00:12:34+00:00",
            "2025-06-01T00:12:34+00:00",
            "2025-06-01 00:12:34.999+00:00",
            "2025-06-01T00:12:34",
        ] {
            assert_eq!(parse_timestamp(s), Some(1_748_736_754), "{s}");
        }
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp(""), None);
        assert_eq!(format_timestamp(1_748_736_754), "2025-06-01T00:12:34Z");
        assert_eq!(format_date(1_748_736_754), "2025-06-01");
    }

    #[test]
    fn time_series_shapes() {
        let body = br#"{"x": ["2025-06-01T00:12:34Z", "2025-06-01T00:35:10.250Z"], "x-range": {"start": "2025-06-01T00:12:34Z", "end": "2025-06-01T00:35:10Z"}, "y": [18.25, 0], "y-axis": "Degrees C", "resolution": "bin"}"#;
        assert_eq!(parse_time_series(body), Ok(Some((1_748_738_110, 0.0))));
        let empty = br#"{"x": [], "x-range": {"start": "2025-06-01T00:00:00Z", "end": "2025-06-02T00:00:00Z"}, "y": [], "y-axis": "Count", "resolution": "bin"}"#;
        assert_eq!(parse_time_series(empty), Ok(None));
        assert!(parse_time_series(br#"{"x": ["2025-06-01T00:12:34Z"], "y": []}"#).is_err());
        assert!(parse_time_series(br#"{"y": [1]}"#).is_err());
        assert!(parse_time_series(b"<html>").is_err());
        assert_eq!(
            parse_time_series(br#"{"x": ["2025-06-01T00:12:34Z"], "y": [null]}"#),
            Ok(Some((1_748_736_754, 0.0)))
        );
    }

    #[test]
    fn csv_by_header_name() {
        let body = b"dataset,pid,sample_time,ifcb,ml_analyzed,latitude,longitude,depth,cruise,cast,niskin,sample_type,n_images,tag1,tag2,comment_summary,trigger_selection,skip\n\
mvco,D20250601T003510_IFCB158,2025-06-01 00:35:10+00:00,158,4.93,41.3,-70.5,4.0,,,,,1234,a,b,\"said \"\"hi\"\", then, left\",,1\n\
mvco,D20250601T001234_IFCB158,2025-06-01 00:12:34.567+00:00,158,4.93,41.3,-70.5,4.0,,,,,1234,,,,,0\n";
        let bins = parse_export_metadata(body).unwrap();
        assert_eq!(
            bins,
            vec![
                Bin {
                    pid: "D20250601T003510_IFCB158".into(),
                    time: 1_748_738_110
                },
                Bin {
                    pid: "D20250601T001234_IFCB158".into(),
                    time: 1_748_736_754
                },
            ]
        );
        assert!(parse_export_metadata(b"pid,x\nA,1\n").is_err());
        assert_eq!(
            latest_in_export_metadata(body, i64::MAX),
            Ok(Some(1_748_738_110))
        );
        assert_eq!(
            latest_in_export_metadata(body, 1_748_738_000),
            Ok(Some(1_748_736_754))
        );
        let list = br#"{"data": [{"pid": "a", "sample_time": "2025-06-01T00:35:10Z", "skip": true}, {"pid": "b", "sample_time": "2025-06-01T00:12:34.5Z"}], "extra": [1]}"#;
        assert_eq!(latest_in_list_bins(list, i64::MAX), Ok(Some(1_748_738_110)));
        assert_eq!(
            latest_in_list_bins(list, 1_748_738_000),
            Ok(Some(1_748_736_754))
        );
        assert_eq!(latest_in_list_bins(br#"{"data": []}"#, i64::MAX), Ok(None));
        assert!(latest_in_list_bins(br#"{"nodata": []}"#, i64::MAX).is_err());
        assert!(
            latest_in_list_bins(
                br#"{"data": [{"pid": "a", "sample_time": "never"}]}"#,
                i64::MAX
            )
            .is_err()
        );
    }

    #[test]
    fn other_routes() {
        assert_eq!(
            parse_filter_options(br#"{"instrument_options": [104, 158], "dataset_options": ["a", "b"], "tag_options": []}"#),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            parse_most_recent_bin(br#"{"pid": "D20250601T005748_IFCB158", "timestamp": "2025-06-01T00:57:48Z", "time_since": 132, "temperature": 14.2}"#),
            Ok(("D20250601T005748_IFCB158".to_owned(), 1_748_739_468))
        );
        assert_eq!(
            parse_list_bins(br#"{"data": [{"pid": "p1", "sample_time": "2025-06-01T00:12:34Z", "skip": true}]}"#),
            Ok(vec![Bin { pid: "p1".into(), time: 1_748_736_754 }])
        );
        assert_eq!(
            parse_has_products(
                br#"{"has_blobs": true, "has_features": false, "has_class_scores": true}"#
            ),
            Ok([true, false, true])
        );
        assert!(parse_has_products(br#"{"has_blobs": true}"#).is_err());
    }
}
