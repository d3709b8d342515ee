//! A parser for pushed bodies in the Prometheus text format 0.0.4.

use std::collections::BTreeMap;

use tidegauge_core::snapshot::{is_valid_label_name, is_valid_metric_name};
use tidegauge_core::{Labels, MetricType, Value};

/// One parsed family.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFamily {
    /// Family name as the body gives it (counters keep a `_total` they were sent with).
    pub name: String,
    /// HELP text (unescaped), empty when none.
    pub help: String,
    /// Type.
    pub kind: MetricType,
    /// Series: labels (sorted) and value.
    pub series: Vec<(Labels, Value)>,
}

/// Why a body does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ParseError {
    /// 1-based line number; 0 for what is found after reading the whole body.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
    /// The body is not the text format at all, as opposed to refused content (timestamps,
    /// repeated series, reserved names, limits): the Pushgateway records a failed push only for
    /// the latter.
    pub syntax: bool,
}

/// Most labels one sample may carry.
pub const MAX_LABELS: usize = 64;

/// Thrown for samples with timestamps.
pub const TIMESTAMP_ERROR: &str = "pushed metrics must not have timestamps";

impl ParseError {
    fn describe(&self) -> String {
        match self.line {
            0 => format!("text format parsing error: {}", self.reason),
            n => format!("text format parsing error in line {n}: {}", self.reason),
        }
    }
}

fn err<T>(line: usize, reason: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        reason: reason.into(),
        syntax: true,
    })
}

/// Refused content of a well-formed body.
fn refuse<T>(line: usize, reason: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        reason: reason.into(),
        syntax: false,
    })
}

fn unescape(s: &str, quote: bool) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                '\\' => out.push('\\'),
                '"' if quote => out.push('"'),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses `{a="1",b="2"}` starting after the `{`; returns labels and the rest after `}`.
fn parse_labels(s: &str, line: usize) -> Result<(Labels, &str), ParseError> {
    let mut labels = Vec::new();
    let mut rest = s.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or_else(|| ParseError {
            line,
            reason: "expected label name".into(),
            syntax: true,
        })?;
        let name = rest[..eq].trim();
        if !is_valid_label_name(name) && name != "le" && name != "quantile" {
            // `__x` is well-formed but reserved.
            let reserved = name.starts_with("__") && is_valid_label_name(&name[1..]);
            let reason = format!("invalid label name {name:?}");
            return if reserved {
                refuse(line, reason)
            } else {
                err(line, reason)
            };
        }
        rest = rest[eq + 1..].trim_start();
        let Some(body) = rest.strip_prefix('"') else {
            return err(line, format!("expected '\"' after {name}="));
        };
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| ParseError {
            line,
            reason: "unterminated label value".into(),
            syntax: true,
        })?;
        let value = unescape(&body[..end], true).ok_or_else(|| ParseError {
            line,
            reason: "bad escape".into(),
            syntax: true,
        })?;
        if labels.len() >= MAX_LABELS {
            return refuse(line, format!("more than {MAX_LABELS} labels on one sample"));
        }
        if labels.iter().any(|(k, _): &(String, String)| k == name) {
            return err(line, format!("label {name:?} given twice"));
        }
        labels.push((name.to_owned(), value));
        rest = body[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.starts_with('}') {
            return err(line, "expected ',' or '}' after a label value");
        }
    }
}

/// A histogram's buckets (or a summary's quantiles), sum and count as they arrive.
type HistParts = (Vec<(f64, f64)>, Option<f64>, Option<u64>);

#[derive(Default)]
struct Building {
    help: Option<String>,
    kind: Option<MetricType>,
    /// Plain samples.
    plain: Vec<(Labels, f64)>,
    /// Histogram or summary parts by label set: buckets or quantiles, sum, count.
    hist: BTreeMap<Labels, HistParts>,
    seen: std::collections::HashSet<Labels>,
    order: usize,
}

/// Parses a pushed body.
pub fn parse(body: &str) -> Result<Vec<ParsedFamily>, ParseError> {
    parse_limited(body, usize::MAX)
}

/// Parses a pushed body of at most `max_samples` sample lines: a push over the series limit is
/// refused while parsing, before it takes memory in proportion to its size.
pub fn parse_limited(body: &str, max_samples: usize) -> Result<Vec<ParsedFamily>, ParseError> {
    let mut samples = 0usize;
    let mut families: BTreeMap<String, Building> = BTreeMap::new();
    let mut next = 0;
    let mut family_of = |families: &mut BTreeMap<String, Building>, name: &str| -> String {
        if !families.contains_key(name) {
            families.insert(
                name.to_owned(),
                Building {
                    order: next,
                    ..Building::default()
                },
            );
            next += 1;
        }
        name.to_owned()
    };
    for (i, raw) in body.split('\n').enumerate() {
        let line = i + 1;
        if raw.contains('\r') {
            return err(line, "carriage return in the body; lines must end in \\n");
        }
        let text = raw.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(comment) = text.strip_prefix('#') {
            let comment = comment.trim_start();
            let (word, rest) = comment
                .split_once(char::is_whitespace)
                .unwrap_or((comment, ""));
            match word {
                "HELP" | "TYPE" => {
                    let rest = rest.trim_start();
                    let (name, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                    if !is_valid_metric_name(name) {
                        return err(line, format!("invalid metric name {name:?}"));
                    }
                    // As the Pushgateway's parser: the samples of a histogram's or summary's
                    // parts belong to it, so a TYPE of their own is refused.
                    if word == "TYPE"
                        && let Some((base, kind)) =
                            ["_bucket", "_sum", "_count"].iter().find_map(|sfx| {
                                let base = name.strip_suffix(sfx)?;
                                match families.get(base)?.kind? {
                                    MetricType::Histogram => Some((base, "histogram")),
                                    MetricType::Summary if *sfx != "_bucket" => {
                                        Some((base, "summary"))
                                    }
                                    _ => None,
                                }
                            })
                    {
                        return err(
                            line,
                            format!("TYPE line for {name:?}, a part of the {kind} {base:?}"),
                        );
                    }
                    let key = family_of(&mut families, name);
                    let f = families.get_mut(&key).ok_or_else(|| ParseError {
                        line,
                        reason: "internal".into(),
                        syntax: true,
                    })?;
                    if word == "HELP" {
                        if f.help.is_some() {
                            return err(line, format!("second HELP line for metric name {name:?}"));
                        }
                        f.help = Some(unescape(arg, false).ok_or_else(|| ParseError {
                            line,
                            reason: "bad escape in HELP".into(),
                            syntax: true,
                        })?);
                    } else {
                        if f.kind.is_some() {
                            return err(line, format!("second TYPE line for metric name {name:?}"));
                        }
                        if !f.plain.is_empty() || !f.hist.is_empty() {
                            return err(line, format!("TYPE line for {name:?} after its samples"));
                        }
                        f.kind = Some(match arg.trim() {
                            "counter" => MetricType::Counter,
                            "gauge" => MetricType::Gauge,
                            "untyped" => MetricType::Untyped,
                            "histogram" => MetricType::Histogram,
                            "summary" => MetricType::Summary,
                            other => return err(line, format!("unknown metric type {other:?}")),
                        });
                    }
                }
                _ => {}
            }
            continue;
        }
        // A sample: name[{labels}] value [timestamp]
        samples += 1;
        if samples > max_samples {
            return refuse(
                line,
                format!("more than {max_samples} samples; that is the limit of series per group"),
            );
        }
        let name_end = text
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(text.len());
        let name = &text[..name_end];
        if !is_valid_metric_name(name) {
            return err(line, format!("invalid metric name {name:?}"));
        }
        let mut rest = &text[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.trim_start().strip_prefix('{') {
            let (l, r) = parse_labels(r, line)?;
            labels = l;
            rest = r;
        }
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| ParseError {
            line,
            reason: "expected a value".into(),
            syntax: true,
        })?;
        let value = parse_value(value).ok_or_else(|| ParseError {
            line,
            reason: format!("invalid value {value:?}"),
            syntax: true,
        })?;
        if fields.next().is_some() {
            return refuse(line, TIMESTAMP_ERROR);
        }
        // Which family: the parts of a histogram or summary belong to the family its TYPE line
        // named.
        let (family, part) = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                families
                    .get(base)
                    .filter(|f| match f.kind {
                        Some(MetricType::Histogram) => true,
                        Some(MetricType::Summary) => *suffix != "_bucket",
                        _ => false,
                    })
                    .map(|_| (base.to_owned(), *suffix))
            })
            .unwrap_or_else(|| (name.to_owned(), ""));
        let key = family_of(&mut families, &family);
        let f = families.get_mut(&key).ok_or_else(|| ParseError {
            line,
            reason: "internal".into(),
            syntax: true,
        })?;
        if let Some(kind @ (MetricType::Histogram | MetricType::Summary)) = f.kind {
            let (label, part_name) = if kind == MetricType::Histogram {
                ("le", "_bucket")
            } else {
                ("quantile", "")
            };
            let mut bound = None;
            labels.retain(|(k, v)| {
                if k == label {
                    bound = Some(v.clone());
                    false
                } else {
                    true
                }
            });
            labels.sort();
            let h = f.hist.entry(labels).or_default();
            match part {
                p if p == part_name => {
                    let bound = bound.ok_or_else(|| ParseError {
                        line,
                        reason: format!("{name} without {label}"),
                        syntax: true,
                    })?;
                    let parsed = parse_value(&bound).ok_or_else(|| ParseError {
                        line,
                        reason: format!("invalid {label} {bound:?}"),
                        syntax: true,
                    })?;
                    if kind == MetricType::Histogram {
                        if value < 0.0 || value.fract() != 0.0 {
                            return refuse(
                                line,
                                format!("bucket count {value} is not a whole number"),
                            );
                        }
                    } else if !(0.0..=1.0).contains(&parsed) {
                        return refuse(line, format!("quantile {bound:?} is outside [0, 1]"));
                    }
                    // Repeated bounds are found after sorting: a scan here would be quadratic.
                    h.0.push((parsed, value));
                }
                "_sum" => h.1 = Some(value),
                "_count" => {
                    if value < 0.0 || value.fract() != 0.0 {
                        return refuse(line, format!("count {value} is not a whole number"));
                    }
                    h.2 = Some(value as u64);
                }
                _ => {
                    return err(
                        line,
                        if kind == MetricType::Histogram {
                            format!("{name}: a histogram has only _bucket, _sum and _count samples")
                        } else {
                            format!("{name}: a summary has only quantile, _sum and _count samples")
                        },
                    );
                }
            }
        } else {
            if labels.iter().any(|(k, _)| k == "le" || k == "quantile")
                && f.kind != Some(MetricType::Untyped)
                && f.kind.is_some()
            {
                return refuse(
                    line,
                    format!(
                        "label {:?} is reserved",
                        if labels.iter().any(|(k, _)| k == "le") {
                            "le"
                        } else {
                            "quantile"
                        }
                    ),
                );
            }
            labels.sort();
            if !f.seen.insert(labels.clone()) {
                return refuse(
                    line,
                    format!("second sample of {name} with the same labels"),
                );
            }
            f.plain.push((labels, value));
        }
    }
    let mut out: Vec<(usize, ParsedFamily)> = Vec::new();
    for (name, b) in families {
        if b.plain.is_empty() && b.hist.is_empty() {
            continue;
        }
        let kind = b.kind.unwrap_or(MetricType::Untyped);
        let mut series = Vec::new();
        for (labels, v) in b.plain {
            series.push((labels, Value::Number(v)));
        }
        for (labels, (mut buckets, sum, count)) in b.hist {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if let Some(w) = buckets.windows(2).find(|w| w[0].0 == w[1].0) {
                let (what, label) = if kind == MetricType::Summary {
                    ("quantile", "quantile")
                } else {
                    ("bucket", "le")
                };
                return refuse(
                    0,
                    format!(
                        "{name}: second {what} sample with {label}=\"{}\" for labels {labels:?}",
                        w[0].0
                    ),
                );
            }
            if kind == MetricType::Summary {
                series.push((
                    labels,
                    Value::Summary(Box::new(tidegauge_core::Summary {
                        quantiles: buckets,
                        sum: sum.unwrap_or(0.0),
                        count: count.unwrap_or(0),
                    })),
                ));
                continue;
            }
            // Whole numbers: checked line by line.
            let mut buckets: Vec<(f64, u64)> =
                buckets.into_iter().map(|(le, c)| (le, c as u64)).collect();
            let inf = buckets
                .iter()
                .find(|(le, _)| le.is_infinite())
                .map(|(_, c)| *c);
            buckets.retain(|(le, _)| le.is_finite());
            let count = count.or(inf).unwrap_or(0);
            if buckets.windows(2).any(|w| w[0].1 > w[1].1)
                || buckets.last().is_some_and(|(_, c)| *c > count)
            {
                return refuse(0, format!("{name}: bucket counts must not decrease"));
            }
            series.push((
                labels,
                Value::Histogram(Box::new(tidegauge_core::Histogram {
                    buckets,
                    sum: sum.unwrap_or(0.0),
                    count,
                })),
            ));
        }
        out.push((
            b.order,
            ParsedFamily {
                name,
                help: b.help.unwrap_or_default(),
                kind,
                series,
            },
        ));
    }
    out.sort_by_key(|(o, _)| *o);
    Ok(out.into_iter().map(|(_, f)| f).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_client_output() {
        let body = "# HELP job_last_success_unixtime Last time a batch job successfully finished\n# TYPE job_last_success_unixtime gauge\njob_last_success_unixtime 1.7e+09\n# HELP runs_total Runs\n# TYPE runs_total counter\nruns_total{kind=\"a\"} 3.0\n# HELP runs_created Runs\n# TYPE runs_created gauge\nruns_created{kind=\"a\"} 1.7e+09\n";
        let f = parse(body).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name, "job_last_success_unixtime");
        assert_eq!(f[1].kind, MetricType::Counter);
        assert_eq!(f[1].series[0].0, vec![("kind".to_owned(), "a".to_owned())]);
    }

    #[test]
    fn histogram_and_untyped() {
        let body = "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 4\nh_sum 2.5\nh_count 4\nsome_metric{label=\"val1\"} 42\n";
        let f = parse(body).unwrap();
        assert_eq!(
            f[0].series[0].1,
            Value::Histogram(Box::new(tidegauge_core::Histogram {
                buckets: vec![(0.1, 1), (1.0, 3)],
                sum: 2.5,
                count: 4
            }))
        );
        assert_eq!(f[1].kind, MetricType::Untyped);
    }

    #[test]
    fn summaries() {
        // What Python's prometheus_client writes for a Summary (no quantiles), then a Go-style
        // summary with quantiles and labels.
        let body = "# HELP latency_seconds Latency\n# TYPE latency_seconds summary\nlatency_seconds_count 2.0\nlatency_seconds_sum 0.75\n# HELP latency_seconds_created Latency\n# TYPE latency_seconds_created gauge\nlatency_seconds_created 1.7e+09\n# TYPE rpc summary\nrpc{svc=\"a\",quantile=\"0.9\"} 7\nrpc{svc=\"a\",quantile=\"0.5\"} 3\nrpc_sum{svc=\"a\"} 40\nrpc_count{svc=\"a\"} 10\n";
        let f = parse(body).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].kind, MetricType::Summary);
        assert_eq!(
            f[0].series,
            vec![(
                vec![],
                Value::Summary(Box::new(tidegauge_core::Summary {
                    quantiles: vec![],
                    sum: 0.75,
                    count: 2
                }))
            )]
        );
        assert_eq!(f[1].name, "latency_seconds_created");
        assert_eq!(
            f[2].series,
            vec![(
                vec![("svc".to_owned(), "a".to_owned())],
                Value::Summary(Box::new(tidegauge_core::Summary {
                    quantiles: vec![(0.5, 3.0), (0.9, 7.0)],
                    sum: 40.0,
                    count: 10
                }))
            )]
        );
    }

    /// A HELP line without text is accepted, as the Pushgateway accepts it.
    #[test]
    fn bare_help_line() {
        for body in [
            "# HELP bare\nbare 1\n",
            "# HELP bare \n# TYPE bare gauge\nbare 1\n",
        ] {
            let f = parse(body).unwrap();
            assert_eq!(
                (f[0].name.as_str(), f[0].help.as_str()),
                ("bare", ""),
                "{body:?}"
            );
            assert_eq!(f[0].series.len(), 1);
        }
    }

    #[test]
    fn sample_limit() {
        assert_eq!(parse_limited("a 1\nb 1\n", 2).unwrap().len(), 2);
        let e = parse_limited("a 1\nb 1\nc 1\n", 2).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("more than 2 samples"), "{e}");
    }

    #[test]
    fn errors() {
        for (body, want) in [
            ("x 1 1700000000\n", TIMESTAMP_ERROR),
            ("x 1\r\n", "carriage return"),
            ("x{a=\"1\" 1\n", "expected"),
            ("x abc\n", "invalid value"),
            ("1x 1\n", "invalid metric name"),
            ("x{__a=\"1\"} 1\n", "invalid label name"),
            ("# TYPE x summary\nx 1\n", "x without quantile"),
            ("# TYPE x summary\nx{quantile=\"2\"} 1\n", "outside [0, 1]"),
            (
                "# TYPE x summary\nx{quantile=\"a\"} 1\n",
                "invalid quantile",
            ),
            (
                "# TYPE x summary\nx{quantile=\"0.5\"} 1\nx{quantile=\"0.5\"} 2\n",
                "second quantile sample",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1.5\n",
                "not a whole number",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"1\"} 1\n",
                "second bucket sample",
            ),
            ("# TYPE x gauge\n# TYPE x counter\n", "second TYPE"),
            ("x 1\nx 2\n", "same labels"),
            ("# TYPE x wat\n", "unknown metric type"),
        ] {
            let e = parse(body).unwrap_err();
            assert!(e.reason.contains(want), "{body:?}: {e}");
        }
    }
}
