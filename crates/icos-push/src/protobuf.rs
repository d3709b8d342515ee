//! Pushed bodies in the delimited protobuf format (`io.prometheus.client.MetricFamily`), what
//! the Go client's `push` package sends.

use prost::Message;
use tidegauge_core::snapshot::{is_valid_label_name, is_valid_metric_name};
use tidegauge_core::{Labels, MetricType, Value};

use crate::textformat::{MAX_LABELS, ParsedFamily, TIMESTAMP_ERROR};

/// The messages of `metrics.proto` (prometheus/client_model), fields this collector reads.
/// Unknown fields (exemplars, created timestamps) are skipped by the decoder.
pub mod wire {
    #![allow(missing_docs)]

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub value: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Single {
        #[prost(double, optional, tag = "1")]
        pub value: Option<f64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Quantile {
        #[prost(double, optional, tag = "1")]
        pub quantile: Option<f64>,
        #[prost(double, optional, tag = "2")]
        pub value: Option<f64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        #[prost(message, repeated, tag = "3")]
        pub quantile: Vec<Quantile>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Bucket {
        #[prost(uint64, optional, tag = "1")]
        pub cumulative_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub upper_bound: Option<f64>,
        #[prost(double, optional, tag = "4")]
        pub cumulative_count_float: Option<f64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BucketSpan {
        #[prost(sint32, optional, tag = "1")]
        pub offset: Option<i32>,
        #[prost(uint32, optional, tag = "2")]
        pub length: Option<u32>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Histogram {
        #[prost(uint64, optional, tag = "1")]
        pub sample_count: Option<u64>,
        #[prost(double, optional, tag = "2")]
        pub sample_sum: Option<f64>,
        #[prost(message, repeated, tag = "3")]
        pub bucket: Vec<Bucket>,
        #[prost(double, optional, tag = "4")]
        pub sample_count_float: Option<f64>,
        /// Native histograms only.
        #[prost(sint32, optional, tag = "5")]
        pub schema: Option<i32>,
        #[prost(message, repeated, tag = "9")]
        pub negative_span: Vec<BucketSpan>,
        #[prost(message, repeated, tag = "12")]
        pub positive_span: Vec<BucketSpan>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(message, repeated, tag = "1")]
        pub label: Vec<LabelPair>,
        #[prost(message, optional, tag = "2")]
        pub gauge: Option<Single>,
        #[prost(message, optional, tag = "3")]
        pub counter: Option<Single>,
        #[prost(message, optional, tag = "4")]
        pub summary: Option<Summary>,
        #[prost(message, optional, tag = "5")]
        pub untyped: Option<Single>,
        #[prost(int64, optional, tag = "6")]
        pub timestamp_ms: Option<i64>,
        #[prost(message, optional, tag = "7")]
        pub histogram: Option<Histogram>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricFamily {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub help: Option<String>,
        /// COUNTER 0, GAUGE 1, SUMMARY 2, UNTYPED 3, HISTOGRAM 4, GAUGE_HISTOGRAM 5.
        #[prost(int32, optional, tag = "3")]
        pub r#type: Option<i32>,
        #[prost(message, repeated, tag = "4")]
        pub metric: Vec<Metric>,
    }
}

/// Whether a `Content-Type` announces delimited protobuf; an error for protobuf of another kind.
/// Without `encoding=delimited` the body is read as text, as the Pushgateway reads it.
pub fn is_protobuf(content_type: &str) -> Result<bool, String> {
    let mut parts = content_type.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    if media != "application/vnd.google.protobuf" {
        return Ok(false);
    }
    let mut delimited = false;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"');
        match k.trim().to_ascii_lowercase().as_str() {
            "proto" if v != "io.prometheus.client.MetricFamily" => {
                return Err(format!(
                    "unsupported protobuf message {v:?}; push io.prometheus.client.MetricFamily"
                ));
            }
            "encoding" if !v.eq_ignore_ascii_case("delimited") => {
                return Err(format!(
                    "unsupported protobuf encoding {v:?}; push length-delimited messages"
                ));
            }
            "encoding" => delimited = true,
            _ => {}
        }
    }
    Ok(delimited)
}

/// How the sample limit's error begins (a refusal of content, met while decoding).
const LIMIT_ERROR: &str = "more than";

/// Why a protobuf body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ProtoError {
    /// What is wrong.
    pub reason: String,
    /// The bytes do not decode, as opposed to decoded content being refused (names,
    /// timestamps, limits): the Pushgateway records a failed push only for the latter.
    pub syntax: bool,
}

impl ProtoError {
    fn content(reason: String) -> Self {
        Self {
            reason,
            syntax: false,
        }
    }
}

/// Decodes a body of length-delimited `MetricFamily` messages.
pub fn parse(body: &[u8]) -> Result<Vec<ParsedFamily>, ProtoError> {
    parse_limited(body, usize::MAX)
}

/// Decodes a body holding at most `max_samples` series, buckets and quantiles. They are counted
/// on the wire before anything is decoded: an empty message is two bytes on the wire but a
/// few hundred once decoded, so a small body could otherwise claim much memory.
pub fn parse_limited(mut body: &[u8], max_samples: usize) -> Result<Vec<ParsedFamily>, ProtoError> {
    let mut out: Vec<ParsedFamily> = Vec::new();
    let mut names = std::collections::HashSet::new();
    let mut samples = 0usize;
    let mut index = 0;
    while !body.is_empty() {
        index += 1;
        let bad = |e: String| ProtoError {
            reason: format!("protobuf message {index} does not decode: {e}"),
            syntax: !e.starts_with(LIMIT_ERROR),
        };
        let len = prost::encoding::decode_varint(&mut body).map_err(|e| bad(e.to_string()))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= body.len())
            .ok_or_else(|| bad("length beyond the end of the body".into()))?;
        let (message, rest) = body.split_at(len);
        body = rest;
        let family = decode_family(message, &mut samples, max_samples).map_err(bad)?;
        let family = convert(family)
            .map_err(|e| ProtoError::content(format!("protobuf message {index}: {e}")))?;
        if !names.insert(family.name.clone()) {
            return Err(ProtoError::content(format!(
                "protobuf message {index}: second family named {:?}",
                family.name
            )));
        }
        out.push(family);
    }
    Ok(out)
}

/// One field of a message: number, wire type and, for length-delimited fields, the payload.
fn next_field<'a>(buf: &mut &'a [u8]) -> Result<(u64, u8, &'a [u8]), String> {
    let key = prost::encoding::decode_varint(buf).map_err(|e| e.to_string())?;
    let wire_type = (key & 7) as u8;
    let n = match wire_type {
        0 => {
            prost::encoding::decode_varint(buf).map_err(|e| e.to_string())?;
            0
        }
        1 => 8,
        2 => {
            let n = prost::encoding::decode_varint(buf).map_err(|e| e.to_string())?;
            usize::try_from(n).unwrap_or(usize::MAX)
        }
        5 => 4,
        other => return Err(format!("unsupported wire type {other}")),
    };
    if n > buf.len() {
        return Err("field beyond the end of the message".into());
    }
    let (payload, rest) = buf.split_at(n);
    *buf = rest;
    Ok((key >> 3, wire_type, payload))
}

/// Decodes a `MetricFamily`, counting its series, buckets and quantiles into `samples` first.
fn decode_family(
    message: &[u8],
    samples: &mut usize,
    max_samples: usize,
) -> Result<wire::MetricFamily, String> {
    let mut metrics = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let (field, wire_type, payload) = next_field(&mut rest)?;
        if field != 4 || wire_type != 2 {
            continue;
        }
        *samples += 1;
        // Buckets (histogram, field 7) and quantiles (summary, field 4) are field 3 within.
        let mut m = payload;
        while !m.is_empty() {
            let (f, wt, inner) = next_field(&mut m)?;
            if (f == 7 || f == 4) && wt == 2 {
                let mut h = inner;
                while !h.is_empty() {
                    if next_field(&mut h)?.0 == 3 {
                        *samples += 1;
                    }
                }
            }
        }
        if *samples > max_samples {
            return Err(format!(
                "{LIMIT_ERROR} {max_samples} samples; that is the limit of series per group"
            ));
        }
        metrics.push(payload);
    }
    // Everything but the metrics (name, help, type) is small: decode it without them.
    let mut head = message;
    let mut family = wire::MetricFamily::default();
    while !head.is_empty() {
        let before = head;
        let (field, _, _) = next_field(&mut head)?;
        if field != 4 {
            let taken = &before[..before.len() - head.len()];
            family.merge(taken).map_err(|e| e.to_string())?;
        }
    }
    for m in metrics {
        family
            .metric
            .push(wire::Metric::decode(m).map_err(|e| e.to_string())?);
    }
    Ok(family)
}

fn convert(f: wire::MetricFamily) -> Result<ParsedFamily, String> {
    let name = f.name.unwrap_or_default();
    if !is_valid_metric_name(&name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let kind = match f.r#type.unwrap_or(0) {
        0 => MetricType::Counter,
        1 => MetricType::Gauge,
        2 => MetricType::Summary,
        3 => MetricType::Untyped,
        4 => MetricType::Histogram,
        5 => return Err(format!("{name}: gauge histograms are not supported")),
        other => return Err(format!("{name}: unknown metric type {other}")),
    };
    let mut series: Vec<(Labels, Value)> = Vec::with_capacity(f.metric.len());
    let mut seen: std::collections::HashSet<Labels> = std::collections::HashSet::new();
    for m in f.metric {
        if m.timestamp_ms.is_some() {
            return Err(format!("{name}: {TIMESTAMP_ERROR}"));
        }
        if m.label.len() > MAX_LABELS {
            return Err(format!("{name}: more than {MAX_LABELS} labels"));
        }
        let mut labels: Labels = Vec::with_capacity(m.label.len());
        for l in m.label {
            let k = l.name.unwrap_or_default();
            if !is_valid_label_name(&k) {
                return Err(format!("{name}: invalid label name {k:?}"));
            }
            if labels.iter().any(|(o, _)| *o == k) {
                return Err(format!("{name}: label {k:?} given twice"));
            }
            labels.push((k, l.value.unwrap_or_default()));
        }
        let reserved = match kind {
            MetricType::Histogram => Some("le"),
            MetricType::Summary => Some("quantile"),
            _ => None,
        };
        if let Some(r) = reserved
            && labels.iter().any(|(k, _)| k == r)
        {
            return Err(format!("{name}: label {r:?} is reserved"));
        }
        labels.sort();
        let missing = || format!("{name}: a {kind} sample without its {kind} value");
        let value = match kind {
            MetricType::Counter => {
                Value::Number(m.counter.ok_or_else(missing)?.value.unwrap_or(0.0))
            }
            MetricType::Gauge => Value::Number(m.gauge.ok_or_else(missing)?.value.unwrap_or(0.0)),
            MetricType::Untyped => {
                Value::Number(m.untyped.ok_or_else(missing)?.value.unwrap_or(0.0))
            }
            MetricType::Summary => {
                let s = m.summary.ok_or_else(missing)?;
                let mut quantiles = Vec::with_capacity(s.quantile.len());
                for q in s.quantile {
                    let at = q.quantile.unwrap_or(0.0);
                    if !(0.0..=1.0).contains(&at) {
                        return Err(format!("{name}: quantile {at} is outside [0, 1]"));
                    }
                    quantiles.push((at, q.value.unwrap_or(0.0)));
                }
                quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                if quantiles.windows(2).any(|w| w[0].0 == w[1].0) {
                    return Err(format!("{name}: a quantile given twice"));
                }
                Value::Summary(Box::new(tidegauge_core::Summary {
                    quantiles,
                    sum: s.sample_sum.unwrap_or(0.0),
                    count: s.sample_count.unwrap_or(0),
                }))
            }
            _ => histogram(&name, m.histogram.ok_or_else(missing)?)?,
        };
        if !seen.insert(labels.clone()) {
            return Err(format!("{name}: second sample with the same labels"));
        }
        series.push((labels, value));
    }
    Ok(ParsedFamily {
        name,
        help: f.help.unwrap_or_default(),
        kind,
        series,
    })
}

fn whole(name: &str, v: f64) -> Result<u64, String> {
    if v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
        Ok(v as u64)
    } else {
        Err(format!("{name}: count {v} is not a whole number"))
    }
}

fn histogram(name: &str, h: wire::Histogram) -> Result<Value, String> {
    let native = h.schema.is_some() || !h.positive_span.is_empty() || !h.negative_span.is_empty();
    if h.bucket.is_empty() && native {
        return Err(format!(
            "{name}: native histograms are not supported; push classic buckets"
        ));
    }
    let count = match h.sample_count_float {
        Some(c) if h.sample_count.is_none() => whole(name, c)?,
        _ => h.sample_count.unwrap_or(0),
    };
    let mut buckets = Vec::with_capacity(h.bucket.len());
    for b in h.bucket {
        let le = b.upper_bound.unwrap_or(f64::NAN);
        if le.is_nan() {
            return Err(format!("{name}: a bucket without an upper bound"));
        }
        let c = match b.cumulative_count_float {
            Some(c) if b.cumulative_count.is_none() => whole(name, c)?,
            _ => b.cumulative_count.unwrap_or(0),
        };
        if le.is_finite() {
            buckets.push((le, c));
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(format!("{name}: a bucket bound given twice"));
    }
    if buckets.windows(2).any(|w| w[0].1 > w[1].1) || buckets.last().is_some_and(|b| b.1 > count) {
        return Err(format!("{name}: bucket counts must not decrease"));
    }
    Ok(Value::Histogram(Box::new(tidegauge_core::Histogram {
        buckets,
        sum: h.sample_sum.unwrap_or(0.0),
        count,
    })))
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use super::*;

    fn label(k: &str, v: &str) -> LabelPair {
        LabelPair {
            name: Some(k.into()),
            value: Some(v.into()),
        }
    }

    fn body(families: &[MetricFamily]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in families {
            f.encode_length_delimited(&mut out).unwrap();
        }
        out
    }

    fn single(v: f64) -> Option<Single> {
        Some(Single { value: Some(v) })
    }

    #[test]
    fn content_types() {
        assert_eq!(is_protobuf("text/plain; version=0.0.4"), Ok(false));
        assert_eq!(is_protobuf(""), Ok(false));
        // No encoding: text, as the Pushgateway reads it.
        assert_eq!(
            is_protobuf("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily"),
            Ok(false)
        );
        assert_eq!(
            is_protobuf(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            ),
            Ok(true)
        );
        assert!(
            is_protobuf("application/vnd.google.protobuf; proto=x.Y; encoding=delimited").is_err()
        );
        assert!(
            is_protobuf(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=text"
            )
            .is_err()
        );
    }

    /// Bytes as the Go client writes them for `requests_total{code="200"} 7`, assembled by hand
    /// from metrics.proto so the field numbers are checked independently of the structs above.
    #[test]
    fn hand_assembled_bytes() {
        let mut msg = vec![0x0a, 14];
        msg.extend_from_slice(b"requests_total");
        msg.extend_from_slice(&[0x12, 4]);
        msg.extend_from_slice(b"Reqs");
        msg.extend_from_slice(&[0x18, 0]); // type COUNTER
        // metric: label {name "code" value "200"}, counter {value 7.0}
        let mut metric = vec![0x0a, 11, 0x0a, 4];
        metric.extend_from_slice(b"code");
        metric.extend_from_slice(&[0x12, 3]);
        metric.extend_from_slice(b"200");
        metric.extend_from_slice(&[0x1a, 9, 0x09]);
        metric.extend_from_slice(&7.0f64.to_le_bytes());
        msg.push(0x22);
        msg.push(metric.len() as u8);
        msg.extend_from_slice(&metric);
        let mut framed = vec![msg.len() as u8];
        framed.extend_from_slice(&msg);
        let parsed = parse(&framed).unwrap();
        assert_eq!(
            parsed,
            vec![ParsedFamily {
                name: "requests_total".into(),
                help: "Reqs".into(),
                kind: MetricType::Counter,
                series: vec![(vec![("code".into(), "200".into())], Value::Number(7.0))],
            }]
        );
    }

    #[test]
    fn every_type() {
        let families = [
            MetricFamily {
                name: Some("g".into()),
                help: None,
                r#type: Some(1),
                metric: vec![Metric {
                    label: vec![label("b", "2"), label("a", "1")],
                    gauge: single(1.5),
                    ..Default::default()
                }],
            },
            MetricFamily {
                name: Some("s".into()),
                help: Some("S".into()),
                r#type: Some(2),
                metric: vec![Metric {
                    summary: Some(wire::Summary {
                        sample_count: Some(4),
                        sample_sum: Some(2.0),
                        quantile: vec![
                            Quantile {
                                quantile: Some(0.9),
                                value: Some(0.8),
                            },
                            Quantile {
                                quantile: Some(0.5),
                                value: Some(0.4),
                            },
                        ],
                    }),
                    ..Default::default()
                }],
            },
            MetricFamily {
                name: Some("h".into()),
                help: None,
                r#type: Some(4),
                metric: vec![Metric {
                    histogram: Some(wire::Histogram {
                        sample_count: Some(3),
                        sample_sum: Some(9.0),
                        bucket: vec![
                            Bucket {
                                cumulative_count: Some(1),
                                upper_bound: Some(1.0),
                                cumulative_count_float: None,
                            },
                            Bucket {
                                cumulative_count: Some(3),
                                upper_bound: Some(f64::INFINITY),
                                cumulative_count_float: None,
                            },
                        ],
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            },
            MetricFamily {
                name: Some("u".into()),
                help: None,
                r#type: Some(3),
                metric: vec![Metric {
                    untyped: single(f64::NAN),
                    ..Default::default()
                }],
            },
        ];
        let parsed = parse(&body(&families)).unwrap();
        assert_eq!(parsed.len(), 4);
        assert_eq!(
            parsed[0].series[0].0,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(
            parsed[1].series[0].1,
            Value::Summary(Box::new(tidegauge_core::Summary {
                quantiles: vec![(0.5, 0.4), (0.9, 0.8)],
                sum: 2.0,
                count: 4
            }))
        );
        assert_eq!(
            parsed[2].series[0].1,
            Value::Histogram(Box::new(tidegauge_core::Histogram {
                buckets: vec![(1.0, 1)],
                sum: 9.0,
                count: 3
            }))
        );
        assert!(matches!(parsed[3].series[0].1, Value::Number(v) if v.is_nan()));
    }

    #[test]
    fn sample_limit_is_checked_on_the_wire() {
        // 50,000 empty metrics: 100 KB on the wire, tens of MB once decoded.
        let mut family = vec![0x0a, 1, b'x', 0x18, 1];
        for _ in 0..50_000 {
            family.extend_from_slice(&[0x22, 0]);
        }
        let mut framed = Vec::new();
        prost::encoding::encode_varint(family.len() as u64, &mut framed);
        framed.extend_from_slice(&family);
        let e = parse_limited(&framed, 1000).unwrap_err();
        assert!(e.reason.contains("more than 1000 samples"), "{e}");
        assert!(!e.syntax);
        // Buckets count too.
        let h = MetricFamily {
            name: Some("h".into()),
            help: None,
            r#type: Some(4),
            metric: vec![Metric {
                histogram: Some(wire::Histogram {
                    sample_count: Some(10),
                    bucket: (0..10)
                        .map(|i| Bucket {
                            cumulative_count: Some(i),
                            upper_bound: Some(i as f64),
                            cumulative_count_float: None,
                        })
                        .collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        };
        parse_limited(&body(std::slice::from_ref(&h)), 11).unwrap();
        let e = parse_limited(&body(&[h]), 10).unwrap_err();
        assert!(e.reason.contains("more than 10 samples"), "{e}");
    }

    #[test]
    fn errors() {
        let gauge = |name: &str, m: Metric| MetricFamily {
            name: Some(name.into()),
            help: None,
            r#type: Some(1),
            metric: vec![m],
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x05, 0x0a], "does not decode"),
            (vec![0xff], "does not decode"),
            (
                body(&[gauge(
                    "x",
                    Metric {
                        gauge: single(1.0),
                        timestamp_ms: Some(5),
                        ..Default::default()
                    },
                )]),
                TIMESTAMP_ERROR,
            ),
            (
                body(&[gauge(
                    "1x",
                    Metric {
                        gauge: single(1.0),
                        ..Default::default()
                    },
                )]),
                "invalid metric name",
            ),
            (
                body(&[gauge(
                    "x",
                    Metric {
                        label: vec![label("__a", "1")],
                        gauge: single(1.0),
                        ..Default::default()
                    },
                )]),
                "invalid label name",
            ),
            (
                body(&[gauge(
                    "x",
                    Metric {
                        counter: single(1.0),
                        ..Default::default()
                    },
                )]),
                "without its gauge value",
            ),
            (
                body(&[
                    gauge(
                        "x",
                        Metric {
                            gauge: single(1.0),
                            ..Default::default()
                        },
                    ),
                    gauge(
                        "x",
                        Metric {
                            gauge: single(2.0),
                            ..Default::default()
                        },
                    ),
                ]),
                "second family",
            ),
            (
                body(&[MetricFamily {
                    name: Some("n".into()),
                    help: None,
                    r#type: Some(4),
                    metric: vec![Metric {
                        histogram: Some(wire::Histogram {
                            schema: Some(3),
                            positive_span: vec![BucketSpan {
                                offset: Some(0),
                                length: Some(1),
                            }],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                }]),
                "native histograms are not supported",
            ),
            (
                body(&[MetricFamily {
                    name: Some("gh".into()),
                    help: None,
                    r#type: Some(5),
                    metric: vec![],
                }]),
                "gauge histograms",
            ),
        ];
        for (bytes, want) in cases {
            let e = parse(&bytes).unwrap_err();
            assert!(e.reason.contains(want), "{want}: {e}");
        }
    }
}
