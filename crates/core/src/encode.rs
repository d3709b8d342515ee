//! Exposition encoders: OpenMetrics 1.0.0 through prometheus-client, Prometheus text 0.0.4 by hand.
//!
//! Both walk finished snapshots; encoding never does I/O and never awaits.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::registry::{Registry, Unit};

use crate::snapshot::{
    Histogram, LabelSet, MetricFamily, MetricType, Naming, Snapshot, Summary, Value,
};

/// An exposition format the host can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Text,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Encodes the parts, in order, as one exposition.
pub fn encode(format: Format, parts: &[Arc<Snapshot>]) -> String {
    match format {
        Format::OpenMetrics => encode_openmetrics(parts),
        Format::Text => encode_text(parts),
    }
}

/// Encodes one part without the OpenMetrics `# EOF` trailer, so parts encoded separately (and
/// cached) can be joined; [`EOF`] ends an OpenMetrics exposition.
pub fn encode_part(format: Format, part: &Arc<Snapshot>) -> String {
    match format {
        Format::Text => encode_text(std::slice::from_ref(part)),
        Format::OpenMetrics => {
            let mut out = String::with_capacity(estimate(std::slice::from_ref(part)));
            encode_part_om(&mut out, part);
            out
        }
    }
}

/// Whether OpenMetrics needs this family written here rather than by prometheus-client: it
/// has no summary type and no `_created` samples.
fn by_hand(f: &MetricFamily) -> bool {
    f.kind == MetricType::Summary
        || f.naming == Naming::ExactFolded
        || (f.naming.is_exact() && f.samples.iter().any(|s| s.created.is_some()))
}

/// prometheus-client has no summary type and no `_created` samples: runs of other families go
/// through it, the rest are written here in the same syntax.
fn encode_part_om(out: &mut String, part: &Arc<Snapshot>) {
    let families = &part.families;
    let mut start = 0;
    while start < families.len() {
        let f = &families[start];
        if by_hand(f) {
            // Folded families are another family's `_created` samples in OpenMetrics.
            if f.naming != Naming::ExactFolded {
                // Writing into a String cannot fail.
                let _ = write_family_text(out, f, Format::OpenMetrics);
            }
            start += 1;
            continue;
        }
        let end = families[start..]
            .iter()
            .position(by_hand)
            .map_or(families.len(), |n| start + n);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Adapter(Arc::clone(part), start..end)));
        if prometheus_client::encoding::text::encode_registry(out, &registry).is_err() {
            tracing::error!("OpenMetrics encoding failed");
        }
        start = end;
    }
}

/// The OpenMetrics trailer.
pub const EOF: &str = "# EOF\n";

/// Encodes the parts as OpenMetrics 1.0.0, `# EOF` included.
pub fn encode_openmetrics(parts: &[Arc<Snapshot>]) -> String {
    let mut out = String::with_capacity(estimate(parts));
    for part in parts {
        encode_part_om(&mut out, part);
    }
    out.push_str(EOF);
    out
}

fn estimate(parts: &[Arc<Snapshot>]) -> usize {
    parts
        .iter()
        .map(|p| p.sample_count() * 64 + p.families.len() * 96)
        .sum::<usize>()
        + 16
}

/// Hands a range of a finished snapshot's families to prometheus-client's encoder.
#[derive(Debug)]
struct Adapter(Arc<Snapshot>, std::ops::Range<usize>);

impl prometheus_client::collector::Collector for Adapter {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        for family in &self.0.families[self.1.clone()] {
            encode_family_om(&mut encoder, family)?;
        }
        Ok(())
    }
}

fn encode_family_om(encoder: &mut DescriptorEncoder<'_>, f: &MetricFamily) -> fmt::Result {
    use prometheus_client::metrics::MetricType as T;
    // A counter OpenMetrics cannot write as one (an exact name without `_total`, or whose stem
    // another family holds) is written as `unknown` under its own name.
    let (kind, value_kind, base) = match f.kind {
        MetricType::Gauge | MetricType::StateSet => (T::Gauge, f.kind, f.name.as_str()),
        MetricType::Counter => match f.om_counter_stem() {
            Some(stem) => (T::Counter, f.kind, stem),
            None => (T::Unknown, MetricType::Untyped, f.name.as_str()),
        },
        MetricType::Untyped => (T::Unknown, f.kind, f.name.as_str()),
        MetricType::Info => (T::Info, f.kind, f.name.as_str()),
        MetricType::Histogram => (T::Histogram, f.kind, f.name.as_str()),
        // Written by `encode_part_om`, never handed to prometheus-client.
        MetricType::Summary => return Err(fmt::Error),
    };
    // prometheus-client appends `_<unit>` to the name it is given; our names carry the unit
    // already, so hand it the stem.
    let (name, unit) = match &f.unit {
        Some(u) if !u.is_empty() && base.ends_with(&format!("_{u}")) => (
            &base[..base.len() - u.len() - 1],
            Some(Unit::Other(u.clone())),
        ),
        _ => (base, None),
    };
    // OpenMetrics escapes `"` in HELP as well; text 0.0.4 must not.
    let help = escape_help(&f.help).replace('"', "\\\"");
    let mut family = encoder.encode_descriptor(name, &help, unit.as_ref(), kind)?;
    for sample in &f.samples {
        let labels: Vec<(&str, &str)> = sample.labels.iter().collect();
        // An empty label set goes straight to the family encoder: through `encode_family` it
        // would print a stray `{}`.
        if f.kind == MetricType::Info {
            family.encode_info(&labels)?;
        } else if labels.is_empty() {
            encode_sample_om(&mut family, value_kind, &sample.value)?;
        } else {
            encode_sample_om(
                &mut family.encode_family(&labels)?,
                value_kind,
                &sample.value,
            )?;
        }
    }
    Ok(())
}

fn encode_sample_om(
    enc: &mut prometheus_client::encoding::MetricEncoder<'_>,
    kind: MetricType,
    value: &Value,
) -> fmt::Result {
    match (kind, value) {
        (MetricType::Counter, Value::Number(v)) => {
            enc.encode_counter::<NoLabelSet, f64, f64>(v, None)
        }
        (_, Value::Number(v)) => enc.encode_gauge(v),
        (_, Value::Histogram(h)) => {
            let Histogram {
                buckets,
                sum,
                count,
            } = &**h;
            let mut plain = Vec::with_capacity(buckets.len() + 1);
            let mut prev = 0u64;
            for (le, cum) in buckets {
                plain.push((*le, cum.saturating_sub(prev)));
                prev = *cum;
            }
            plain.push((f64::INFINITY, count.saturating_sub(prev)));
            enc.encode_histogram::<NoLabelSet>(*sum, *count, &plain, None)
        }
        // Summaries never reach prometheus-client (see `encode_part_om`).
        (_, Value::Summary(_)) => Err(fmt::Error),
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Encodes the parts as Prometheus text 0.0.4.
pub fn encode_text(parts: &[Arc<Snapshot>]) -> String {
    let mut out = String::with_capacity(estimate(parts));
    for family in parts.iter().flat_map(|s| s.families.iter()) {
        // Writing into a String cannot fail.
        let _ = write_family_text(&mut out, family, Format::Text);
    }
    out
}

/// One family in text 0.0.4 (every type), or in OpenMetrics (summaries, and exact counters,
/// histograms and summaries with `_created` samples, which prometheus-client cannot write; the
/// two syntaxes agree for them but for the counter's family name, HELP escaping, the `# UNIT`
/// line and `_created`).
fn write_family_text(out: &mut String, f: &MetricFamily, format: Format) -> fmt::Result {
    let om = format == Format::OpenMetrics;
    let type_word = match f.kind {
        MetricType::Counter => "counter",
        MetricType::Gauge | MetricType::StateSet | MetricType::Info => "gauge",
        MetricType::Untyped => "untyped",
        MetricType::Histogram => "histogram",
        MetricType::Summary => "summary",
    };
    let sample_name = f.text_name();
    // `by_hand` sends only counters OpenMetrics can write as counters here.
    let type_name = match f.om_counter_stem() {
        Some(stem) if om => stem.to_owned(),
        _ => sample_name.clone(),
    };
    // The family's `_created` sample, after the rest of a series (OpenMetrics only).
    let created = |out: &mut String, s: &crate::snapshot::Sample| {
        if let Some(c) = s.created.filter(|_| om && f.naming.is_exact()) {
            out.push_str(&type_name);
            out.push_str("_created");
            write_labels(out, &s.labels, None);
            out.push(' ');
            push_float(out, c);
            out.push('\n');
        }
    };
    if format == Format::OpenMetrics {
        writeln!(
            out,
            "# HELP {type_name} {}",
            escape_help(&f.help).replace('"', "\\\"")
        )?;
        writeln!(out, "# TYPE {type_name} {type_word}")?;
        // As on the prometheus-client path: a unit the name does not end with is left out,
        // since OpenMetrics parsers refuse the whole exposition over it.
        if let Some(unit) = f
            .unit
            .as_deref()
            .filter(|u| !u.is_empty() && f.name.ends_with(&format!("_{u}")))
        {
            writeln!(out, "# UNIT {type_name} {unit}")?;
        }
    } else {
        // A family pushed without HELP is served without one, as the Pushgateway serves it.
        if !(f.help.is_empty() && f.naming.is_exact()) {
            writeln!(out, "# HELP {type_name} {}", escape_help(&f.help))?;
        }
        writeln!(out, "# TYPE {type_name} {type_word}")?;
    }
    for s in &f.samples {
        match &s.value {
            Value::Number(v) => {
                let v = if f.kind == MetricType::Info { 1.0 } else { *v };
                out.push_str(&sample_name);
                write_labels(out, &s.labels, None);
                out.push(' ');
                push_float(out, v);
                out.push('\n');
                created(out, s);
            }
            Value::Histogram(h) => {
                let Histogram {
                    buckets,
                    sum,
                    count,
                } = &**h;
                for (le, cum) in buckets {
                    let mut le_s = String::new();
                    push_float(&mut le_s, *le);
                    if om && !le_s.contains(['.', 'e', 'I', 'N']) {
                        le_s.push_str(".0");
                    }
                    write!(out, "{}_bucket", f.name)?;
                    write_labels(out, &s.labels, Some(("le", &le_s)));
                    writeln!(out, " {cum}")?;
                }
                write!(out, "{}_bucket", f.name)?;
                write_labels(out, &s.labels, Some(("le", "+Inf")));
                writeln!(out, " {count}")?;
                write_sum_count(out, &f.name, &s.labels, *sum, *count)?;
                created(out, s);
            }
            Value::Summary(q) => {
                let Summary {
                    quantiles,
                    sum,
                    count,
                } = &**q;
                for (q, v) in quantiles {
                    let mut q_s = String::new();
                    push_float(&mut q_s, *q);
                    // OpenMetrics writes label floats with a fraction (`1.0`), as
                    // prometheus-client does for `le`.
                    if om && !q_s.contains(['.', 'e']) {
                        q_s.push_str(".0");
                    }
                    out.push_str(&f.name);
                    write_labels(out, &s.labels, Some(("quantile", &q_s)));
                    out.push(' ');
                    push_float(out, *v);
                    out.push('\n');
                }
                write_sum_count(out, &f.name, &s.labels, *sum, *count)?;
                created(out, s);
            }
        }
    }
    Ok(())
}

/// The `_sum` and `_count` lines of a histogram or summary series.
fn write_sum_count(
    out: &mut String,
    name: &str,
    labels: &LabelSet,
    sum: f64,
    count: u64,
) -> fmt::Result {
    write!(out, "{name}_sum")?;
    write_labels(out, labels, None);
    out.push(' ');
    push_float(out, sum);
    out.push('\n');
    write!(out, "{name}_count")?;
    write_labels(out, labels, None);
    writeln!(out, " {count}")
}

/// Writes `{labels}` plus one label the encoder adds (`le`, `quantile`), if any.
fn write_labels(out: &mut String, labels: &LabelSet, extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// Calls `f` for every series a family has in text 0.0.4, as Prometheus stores it after
/// scraping that format: the sample name, the labels, the label a histogram or summary part adds
/// (`le`, `quantile`, written as the text encoder writes it), and the value. Remote write sends
/// these, so a receiver stores the same series a scrape would.
pub fn for_each_series(
    family: &MetricFamily,
    mut f: impl FnMut(&str, &LabelSet, Option<(&str, &str)>, f64),
) {
    let sample_name = family.text_name();
    let name = &family.name;
    for s in &family.samples {
        match &s.value {
            Value::Number(v) => {
                let v = if family.kind == MetricType::Info {
                    1.0
                } else {
                    *v
                };
                f(&sample_name, &s.labels, None, v);
            }
            Value::Histogram(h) => {
                let bucket = format!("{name}_bucket");
                for (le, cum) in &h.buckets {
                    let mut le_s = String::new();
                    push_float(&mut le_s, *le);
                    f(&bucket, &s.labels, Some(("le", &le_s)), *cum as f64);
                }
                f(&bucket, &s.labels, Some(("le", "+Inf")), h.count as f64);
                f(&format!("{name}_sum"), &s.labels, None, h.sum);
                f(&format!("{name}_count"), &s.labels, None, h.count as f64);
            }
            Value::Summary(q) => {
                for (quantile, v) in &q.quantiles {
                    let mut q_s = String::new();
                    push_float(&mut q_s, *quantile);
                    f(name, &s.labels, Some(("quantile", &q_s)), *v);
                }
                f(&format!("{name}_sum"), &s.labels, None, q.sum);
                f(&format!("{name}_count"), &s.labels, None, q.count as f64);
            }
        }
    }
}

/// Writes a sample value the way Prometheus parsers read it: integers without a fraction,
/// `NaN`, `+Inf`, `-Inf`, otherwise the shortest representation that round-trips.
pub fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Exact: |v| < 2^53.
        let _ = write!(out, "{}", v as i64);
    } else if v.abs() >= 1e21 || (v != 0.0 && v.abs() < 1e-6) {
        let _ = write!(out, "{v:e}");
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Sample, labels};

    fn fixture() -> Arc<Snapshot> {
        let mut s = Snapshot::new();
        s.push(MetricFamily::gauge("app_requests_current", "Current requests").with(vec![], 10.0));
        s.push(
            MetricFamily::counter("fetch_errors", "Errors \"by\" reason\nand \\ backslash")
                .with(labels([("target", "a\"b"), ("reason", "connect")]), 3.0),
        );
        let mut st = MetricFamily::new("app_health", "Health", MetricType::StateSet);
        st.push_states(
            &[],
            "app_health",
            &["healthy", "unhealthy"],
            Some("healthy"),
        );
        s.push(st);
        s.push(
            MetricFamily::new("tidegauge_build", "Build information", MetricType::Info)
                .with(labels([("version", "0.1.0")]), 1.0),
        );
        s.push(MetricFamily::new("weird", "Untyped", MetricType::Untyped).with(vec![], f64::NAN));
        let mut g = MetricFamily::gauge("special_values", "Special values");
        g.push(labels([("v", "inf")]), f64::INFINITY);
        g.push(labels([("v", "neg")]), f64::NEG_INFINITY);
        g.push(labels([("v", "big")]), 1.5e300);
        g.push(labels([("v", "small")]), 2.5e-9);
        g.push(labels([("v", "frac")]), 25.99);
        s.push(g);
        let mut u = MetricFamily::gauge("disk_size_bytes", "Size with a unit");
        u.unit = Some("bytes".into());
        u.push(vec![], 1024.0);
        s.push(u);
        // A summary between other families: OpenMetrics writes it outside prometheus-client.
        let mut q = MetricFamily::new("rpc_seconds", "RPC \"latency\"", MetricType::Summary);
        q.unit = Some("seconds".into());
        q.samples.push(Sample {
            labels: labels([("svc", "a")]).into(),
            value: Value::Summary(Box::new(Summary {
                quantiles: vec![(0.5, 0.25), (0.99, 1.5), (1.0, 2.0)],
                sum: 40.0,
                count: 100,
            })),
            created: None,
        });
        s.push(q);
        let mut h = MetricFamily::new("req_duration_seconds", "Durations", MetricType::Histogram);
        h.samples.push(Sample {
            labels: labels([("route", "/x")]).into(),
            value: Value::Histogram(Box::new(Histogram {
                buckets: vec![(0.1, 2), (1.0, 5)],
                sum: 3.5,
                count: 6,
            })),
            created: None,
        });
        s.push(h);
        Arc::new(s)
    }

    #[test]
    fn text_format() {
        insta::assert_snapshot!(encode_text(&[fixture()]));
    }

    #[test]
    fn series_are_the_text_formats_samples() {
        // Written with the text encoder's own pieces, the series must be its sample lines.
        let mut lines = String::new();
        for family in &fixture().families {
            for_each_series(family, |name, labels, extra, v| {
                lines.push_str(name);
                write_labels(&mut lines, labels, extra);
                lines.push(' ');
                push_float(&mut lines, v);
                lines.push('\n');
            });
        }
        let text: String = encode_text(&[fixture()])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(lines, text);
    }

    #[test]
    fn openmetrics_format() {
        insta::assert_snapshot!(encode_openmetrics(&[fixture()]));
    }

    #[test]
    fn floats() {
        let cases = [
            (10.0, "10"),
            (-3.0, "-3"),
            (0.5, "0.5"),
            (1e300, "1e300"),
            (1e-9, "1e-9"),
            (1714564800.0, "1714564800"),
        ];
        for (v, want) in cases {
            let mut s = String::new();
            push_float(&mut s, v);
            assert_eq!(s, want, "{v}");
            assert_eq!(s.parse::<f64>().ok(), Some(v));
        }
    }

    /// Sample lines of an exposition as `name{sorted labels}` → value; `le` and `quantile`
    /// compared as numbers.
    fn parse_back(text: &str) -> std::collections::BTreeMap<String, f64> {
        let mut out = std::collections::BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("value in {line:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series, Vec::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let mut labels = Vec::new();
                    let mut chars = body.chars().peekable();
                    while chars.peek().is_some() {
                        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                        assert_eq!(chars.next(), Some('"'), "{line}");
                        let mut v = String::new();
                        while let Some(c) = chars.next() {
                            match c {
                                '\\' => match chars.next() {
                                    Some('n') => v.push('\n'),
                                    Some(o) => v.push(o),
                                    None => panic!("dangling escape in {line}"),
                                },
                                '"' => break,
                                c => v.push(c),
                            }
                        }
                        if (key == "le" || key == "quantile") && v != "+Inf" {
                            v = v.parse::<f64>().expect("numeric le").to_string();
                        }
                        labels.push((key, v));
                        if chars.peek() == Some(&',') {
                            chars.next();
                        }
                    }
                    labels.sort();
                    (name, labels)
                }
            };
            let key = format!("{name}{labels:?}");
            // NaN never equals itself; compare it as a marker.
            let value = if value.is_nan() {
                f64::MIN_POSITIVE
            } else {
                value
            };
            assert!(
                out.insert(key, value).is_none(),
                "duplicate series in {line}"
            );
        }
        out
    }

    #[test]
    fn both_formats_parse_back_to_the_same_series() {
        let parts = [fixture()];
        let text = parse_back(&encode_text(&parts));
        let om = parse_back(&encode_openmetrics(&parts));
        assert_eq!(text, om);
        assert_eq!(
            text.get("fetch_errors_total[(\"reason\", \"connect\"), (\"target\", \"a\\\"b\")]"),
            Some(&3.0)
        );
        assert_eq!(text.len(), 22);
    }

    #[test]
    fn parts_joined_equal_the_whole() {
        let a = fixture();
        let b = Arc::new(Snapshot {
            families: vec![MetricFamily::gauge("other", "Other").with(vec![], 1.0)],
        });
        let parts = [Arc::clone(&a), Arc::clone(&b)];
        let joined =
            encode_part(Format::OpenMetrics, &a) + &encode_part(Format::OpenMetrics, &b) + EOF;
        assert_eq!(joined, encode_openmetrics(&parts));
        let joined = encode_part(Format::Text, &a) + &encode_part(Format::Text, &b);
        assert_eq!(joined, encode_text(&parts));
    }

    #[test]
    fn a_unit_the_name_lacks_is_left_out() {
        let mut q = MetricFamily::new("rpc", "RPC", MetricType::Summary);
        q.unit = Some("seconds".into());
        q.samples.push(Sample {
            labels: vec![].into(),
            value: Value::Summary(Box::new(Summary {
                quantiles: vec![],
                sum: 1.0,
                count: 1,
            })),
            created: None,
        });
        let om = encode_openmetrics(&[Arc::new(Snapshot { families: vec![q] })]);
        assert!(!om.contains("# UNIT"), "{om}");
        assert!(
            om.contains("# TYPE rpc summary\nrpc_sum 1\nrpc_count 1\n"),
            "{om}"
        );
    }

    /// Families as a Python client pushes them: a counter and a histogram with their
    /// `_created` gauges, a gauge `b` beside a counter `b_total`, a counter without `_total`.
    #[test]
    fn exact_families_in_both_formats() {
        let exact = |mut f: MetricFamily| {
            f.naming = Naming::Exact;
            f
        };
        let l = labels([("job", "j")]);
        let mut s = Snapshot::new();
        s.push(exact(MetricFamily::gauge("b", "A gauge")).with(l.clone(), 5.0));
        s.push(exact(MetricFamily::counter("b_total", "A counter")).with(l.clone(), 1.0));
        s.push(exact(MetricFamily::gauge("b_created", "A counter")).with(l.clone(), 1.7e9));
        s.push(exact(MetricFamily::counter("jobs_total", "Jobs")).with(l.clone(), 3.0));
        s.push(exact(MetricFamily::gauge("jobs_created", "Jobs")).with(l.clone(), 1.5e9));
        let mut h = exact(MetricFamily::new("rows", "Rows", MetricType::Histogram));
        h.samples.push(Sample {
            labels: l.clone().into(),
            value: Value::Histogram(Box::new(Histogram {
                buckets: vec![(10.0, 0), (100.0, 1)],
                sum: 42.0,
                count: 1,
            })),
            created: None,
        });
        s.push(h);
        s.push(exact(MetricFamily::gauge("rows_created", "Rows")).with(l.clone(), 1.6e9));
        // A `_created` series without its own stays a family of its own; the counter is then
        // written as `unknown`, so the two do not clash.
        s.push(exact(MetricFamily::counter("lone_total", "")).with(l.clone(), 1.0));
        s.push(
            exact(MetricFamily::gauge("lone_created", "")).with(labels([("job", "other")]), 1.0),
        );
        s.push(exact(MetricFamily::counter("go_ops", "Go")).with(vec![], 9.0));
        s.settle_exact();
        let namings: Vec<_> = s
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.naming))
            .collect();
        assert_eq!(
            namings,
            [
                ("b", Naming::Exact),
                ("b_total", Naming::ExactUnknown),
                ("b_created", Naming::Exact),
                ("jobs_total", Naming::Exact),
                ("jobs_created", Naming::ExactFolded),
                ("rows", Naming::Exact),
                ("rows_created", Naming::ExactFolded),
                ("lone_total", Naming::ExactUnknown),
                ("lone_created", Naming::Exact),
                ("go_ops", Naming::Exact),
            ]
        );
        let parts = [Arc::new(s)];
        insta::assert_snapshot!(format!(
            "## text 0.0.4\n{}## OpenMetrics 1.0.0\n{}",
            encode_text(&parts),
            encode_openmetrics(&parts)
        ));
    }

    #[test]
    fn empty_parts_encode_eof_only() {
        assert_eq!(encode_openmetrics(&[]), "# EOF\n");
        assert_eq!(encode_text(&[]), "");
    }
}
