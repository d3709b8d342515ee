//! Gathered snapshots as remote-write requests.

use std::sync::Arc;

use prost::Message as _;
use tidegauge_core::Snapshot;
use tidegauge_core::encode::for_each_series;

use crate::proto::{Label, Sample, TimeSeries, WriteRequest};
use crate::queue::Batch;

/// The series of `parts` at `timestamp` (ms), named as a scrape of text 0.0.4 names them, with
/// `external` labels added where a series lacks them, as requests of at most `max_samples`
/// samples each, snappy-compressed.
pub fn batches(
    parts: &[Arc<Snapshot>],
    timestamp: i64,
    external: &[(String, String)],
    max_samples: usize,
) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut current: Vec<TimeSeries> = Vec::new();
    let mut flush = |series: &mut Vec<TimeSeries>| {
        if series.is_empty() {
            return;
        }
        let samples = series.len() as u64;
        let req = WriteRequest {
            timeseries: std::mem::take(series),
        };
        let raw = req.encode_to_vec();
        // Compressing a buffer cannot fail but for inputs over 4 GiB, which a request of
        // `max_samples` samples never is.
        match snap::raw::Encoder::new().compress_vec(&raw) {
            Ok(body) => out.push(Batch {
                body,
                samples,
                max_ts: timestamp,
            }),
            Err(e) => tracing::error!(error = %e, "remote write: cannot compress a request"),
        }
    };
    for family in parts.iter().flat_map(|p| p.families.iter()) {
        for_each_series(family, |name, set, extra, value| {
            let mut labels: Vec<Label> = Vec::with_capacity(set.len() + 2 + external.len());
            labels.push(Label {
                name: "__name__".into(),
                value: name.into(),
            });
            for (k, v) in set.iter().chain(extra) {
                labels.push(Label {
                    name: k.into(),
                    value: v.into(),
                });
            }
            for (k, v) in external {
                if !labels.iter().any(|l| l.name == *k) {
                    labels.push(Label {
                        name: k.clone(),
                        value: v.clone(),
                    });
                }
            }
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            current.push(TimeSeries {
                labels,
                samples: vec![Sample { value, timestamp }],
            });
            if current.len() >= max_samples {
                flush(&mut current);
            }
        });
    }
    flush(&mut current);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tidegauge_core::snapshot::{Histogram, Sample as Point, Value, labels};
    use tidegauge_core::{MetricFamily, MetricType};

    fn decode(b: &Batch) -> WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(&b.body).unwrap();
        WriteRequest::decode(raw.as_slice()).unwrap()
    }

    fn render(ts: &TimeSeries) -> String {
        let l: Vec<String> = ts
            .labels
            .iter()
            .map(|l| format!("{}={}", l.name, l.value))
            .collect();
        format!(
            "{} {}@{}",
            l.join(","),
            ts.samples[0].value,
            ts.samples[0].timestamp
        )
    }

    #[test]
    fn series_are_named_as_scraped_with_external_labels_and_split() {
        let mut s = Snapshot::new();
        s.push(
            MetricFamily::counter("fetch_errors", "e")
                .with(labels([("target", "a"), ("site", "own")]), 3.0),
        );
        let mut h = MetricFamily::new("req_seconds", "h", MetricType::Histogram);
        h.samples.push(Point {
            labels: labels([("Zone", "x")]).into(),
            value: Value::Histogram(Box::new(Histogram {
                buckets: vec![(0.5, 1)],
                sum: 0.25,
                count: 2,
            })),
            created: None,
        });
        s.push(h);
        let ext = vec![("site".to_owned(), "pier".to_owned())];
        let b = batches(&[Arc::new(s)], 1_700_000_000_000, &ext, 3);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].samples, b[1].samples), (3, 2));
        let all: Vec<String> = b
            .iter()
            .flat_map(|b| decode(b).timeseries)
            .map(|t| render(&t))
            .collect();
        assert_eq!(
            all,
            [
                // A series's own label wins over an external one; names sort byte-wise.
                "__name__=fetch_errors_total,site=own,target=a 3@1700000000000",
                "Zone=x,__name__=req_seconds_bucket,le=0.5,site=pier 1@1700000000000",
                "Zone=x,__name__=req_seconds_bucket,le=+Inf,site=pier 2@1700000000000",
                "Zone=x,__name__=req_seconds_sum,site=pier 0.25@1700000000000",
                "Zone=x,__name__=req_seconds_count,site=pier 2@1700000000000",
            ]
        );
    }
}
