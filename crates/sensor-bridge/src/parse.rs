//! A tolerant reader of the text that prometheus_express boards serve: no trailing newline,
//! CRLF, families in any order, label values written without escaping, a summary's sum called
//! `_total`, Python's spelling of numbers. It never panics and never fails as a whole: a line it
//! cannot read is skipped and counted.

use foldhash::HashMap;

use tidegauge_core::{Labels, MetricType};

/// A family as the bridge re-exports it (spec §5.3): counters and a summary's parts become
/// gauges, everything else it does not know is untyped.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Exported name.
    pub name: String,
    /// `Gauge` or `Untyped`.
    pub kind: MetricType,
    /// Help text, empty when the board sent none.
    pub help: String,
    /// Label sets (no `None` default series, no repeats) and values.
    pub samples: Vec<(Labels, f64)>,
}

/// One board answer, read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Families by exported name.
    pub families: Vec<Family>,
    /// Lines that could not be read, or that repeat a series already read.
    pub skipped: usize,
}

impl Parsed {
    /// Series over all families.
    pub fn series(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }
}

/// Lines a raw newline inside a label value may spread one sample over.
const MAX_JOINED_LINES: usize = 4;

/// Longest sample line read (SDK lines are well under 200 bytes); longer ones are skipped, which
/// also bounds the look-ahead that raw quotes need.
const MAX_LINE: usize = 4096;

/// Reads a board's answer.
pub fn parse(text: &str) -> Parsed {
    let mut types: HashMap<&str, Declared> = HashMap::default();
    let mut helps: HashMap<&str, std::borrow::Cow<'_, str>> = HashMap::default();
    let mut rows: Vec<Row<'_>> = Vec::new();
    let mut skipped = 0;
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        i += 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, [' ', '\t']);
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    types.entry(name).or_insert(Declared::of(kind.trim()));
                }
                (Some("HELP"), Some(name), help) => {
                    helps
                        .entry(name)
                        .or_insert_with(|| unescape_help(help.unwrap_or("").trim_end()));
                }
                _ => {}
            }
            continue;
        }
        match sample(line) {
            Line::Sample(row) => rows.push(row),
            Line::Bad => skipped += 1,
            Line::Unterminated => {
                // A raw newline in a label value: try the following lines as its rest.
                let mut joined = line.to_owned();
                let mut read = None;
                for next in lines.iter().skip(i).take(MAX_JOINED_LINES) {
                    joined.push('\n');
                    joined.push_str(next);
                    match sample(&joined) {
                        Line::Unterminated => continue,
                        Line::Sample((name, labels, v)) => {
                            read = Some((std::borrow::Cow::Owned(name.into_owned()), labels, v));
                        }
                        Line::Bad => {}
                    }
                    break;
                }
                match read {
                    Some(row) => {
                        i += row_lines(&row) - 1;
                        rows.push(row);
                    }
                    None => skipped += 1,
                }
            }
        }
    }

    // Each distinct sample name is routed once; series are told apart by a hash of their
    // sorted labels, confirmed on a hit.
    let mut routes: HashMap<&str, Route> = HashMap::default();
    let mut by_name: HashMap<String, usize> = HashMap::default();
    let mut families: Vec<Family> = Vec::new();
    let mut seen: HashMap<u64, (usize, usize)> = HashMap::default();
    let hasher = foldhash::fast::RandomState::default();
    for (name, labels, value) in rows {
        let cached = match &name {
            std::borrow::Cow::Borrowed(n) => routes.get(n).copied(),
            std::borrow::Cow::Owned(_) => None,
        };
        let route = match cached {
            Some(r) => r,
            None => {
                let r = match export(&name, &types) {
                    None => Route::Drop,
                    Some((exported, kind, help_of)) => {
                        let idx = *by_name.entry(exported.clone()).or_insert_with(|| {
                            families.push(Family {
                                name: exported,
                                kind,
                                help: helps
                                    .get(help_of)
                                    .map(|h| h.to_string())
                                    .unwrap_or_default(),
                                samples: Vec::new(),
                            });
                            families.len() - 1
                        });
                        if families[idx].kind == kind {
                            Route::Family(idx)
                        } else {
                            Route::Conflict
                        }
                    }
                };
                // Names of joined lines are rare and not borrowed from the text: not cached.
                if let std::borrow::Cow::Borrowed(n) = name {
                    routes.insert(n, r);
                }
                r
            }
        };
        let idx = match route {
            Route::Drop => continue,
            Route::Conflict => {
                skipped += 1;
                continue;
            }
            Route::Family(idx) => idx,
        };
        if !labels.is_empty() && labels.iter().all(|(_, v)| v == "None") {
            continue;
        }
        let h = {
            use std::hash::BuildHasher;
            if labels.is_sorted() {
                hasher.hash_one((idx, &labels))
            } else {
                hasher.hash_one((idx, sorted(&labels)))
            }
        };
        let family = &mut families[idx];
        let repeated = match seen.get(&h) {
            None => {
                seen.insert(h, (idx, family.samples.len()));
                false
            }
            Some(&(f, j)) if f == idx && same_set(&family.samples[j].0, &labels) => true,
            // Two label sets of one hash: compare with the whole family.
            Some(_) => family.samples.iter().any(|(l, _)| same_set(l, &labels)),
        };
        if repeated {
            skipped += 1;
            continue;
        }
        family.samples.push((labels, value));
    }
    families.retain(|f| !f.samples.is_empty());
    families.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Parsed { families, skipped }
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Family(usize),
    /// The name's exported family has another type (first come keeps it).
    Conflict,
    /// Not exported (a summary's quantiles).
    Drop,
}

/// A TYPE line's type, as far as the bridge tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Gauge,
    Counter,
    Summary,
    Other,
}

impl Declared {
    fn of(t: &str) -> Self {
        if t.eq_ignore_ascii_case("gauge") {
            Declared::Gauge
        } else if t.eq_ignore_ascii_case("counter") {
            Declared::Counter
        } else if t.eq_ignore_ascii_case("summary") {
            Declared::Summary
        } else {
            Declared::Other
        }
    }
}

/// HELP text as the format escapes it (`\\` and `\n`); other backslashes are kept.
fn unescape_help(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some('\\')) => {
                out.push('\\');
                chars.next();
            }
            ('\\', Some('n')) => {
                out.push('\n');
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The label pairs in name order (hashed as an owned `Labels` would be).
fn sorted(labels: &Labels) -> Labels {
    let mut v = labels.clone();
    v.sort_unstable();
    v
}

/// Whether two label sets hold the same pairs (in any order).
fn same_set(a: &Labels, b: &Labels) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p))
}

/// How many lines a row read from joined lines spanned: one more per raw newline in its labels.
fn row_lines(row: &Row<'_>) -> usize {
    1 + row
        .1
        .iter()
        .map(|(_, v)| v.matches('\n').count())
        .sum::<usize>()
}

/// The exported name and type of a sample called `name`, and the name its help is under.
/// `None` for a summary's quantiles, which the SDK never sends and a gauge cannot carry.
fn export<'a>(
    name: &'a str,
    types: &HashMap<&str, Declared>,
) -> Option<(String, MetricType, &'a str)> {
    match types.get(name) {
        Some(Declared::Gauge | Declared::Counter) => {
            return Some((name.to_owned(), MetricType::Gauge, name));
        }
        Some(Declared::Summary) => return None,
        Some(Declared::Other) => return Some((name.to_owned(), MetricType::Untyped, name)),
        None => {}
    }
    for suffix in ["_count", "_sum", "_total"] {
        let Some(base) = name.strip_suffix(suffix) else {
            continue;
        };
        match types.get(base) {
            Some(Declared::Summary) => {
                let part = if suffix == "_count" { "_count" } else { "_sum" };
                return Some((format!("{base}{part}"), MetricType::Gauge, base));
            }
            Some(Declared::Counter) if suffix == "_total" => {
                return Some((name.to_owned(), MetricType::Gauge, base));
            }
            _ => {}
        }
    }
    Some((name.to_owned(), MetricType::Untyped, name))
}

/// A sample line read: name (borrowed from the text unless lines were joined), labels, value.
type Row<'a> = (std::borrow::Cow<'a, str>, Labels, f64);

enum Line<'a> {
    Sample(Row<'a>),
    /// A label value still open at the end of the text.
    Unterminated,
    Bad,
}

fn sample(line: &str) -> Line<'_> {
    if line.len() > MAX_LINE {
        return Line::Bad;
    }
    let b = line.as_bytes();
    let name_end = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b':'))
        .unwrap_or(b.len());
    let name = &line[..name_end];
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Line::Bad;
    }
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(after) = rest.strip_prefix('{') {
        match label_set(after) {
            Ok((set, tail)) => {
                labels = set;
                rest = tail;
            }
            Err(unterminated) => {
                return if unterminated {
                    Line::Unterminated
                } else {
                    Line::Bad
                };
            }
        }
    }
    if !rest.starts_with([' ', '\t']) {
        return Line::Bad;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().and_then(number);
    let timestamp_ok = fields
        .next()
        .is_none_or(|t| t.parse::<i64>().is_ok() || t.parse::<f64>().is_ok());
    match value {
        Some(v) if timestamp_ok && fields.next().is_none() => {
            Line::Sample((std::borrow::Cow::Borrowed(name), labels, v))
        }
        _ => Line::Bad,
    }
}

/// Python's `str()` of a number, or the exposition's spelling: `nan`, `inf`, `-inf`, `+Inf`,
/// `1e-05`.
fn number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

/// Reads `name="value",…}` (after the `{`): the labels and the text after `}`. `Err(true)` when
/// the text ends inside a value.
fn label_set(mut s: &str) -> Result<(Labels, &str), bool> {
    let mut labels = Labels::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or(false)?;
        let name = s[..eq].trim();
        if !is_label_name(name) || labels.iter().any(|(n, _)| n == name) {
            return Err(false);
        }
        let after = s[eq + 1..].trim_start();
        let body = after.strip_prefix('"').ok_or(false)?;
        let (value, rest) = label_value(body)?;
        labels.push((name.to_owned(), value));
        s = rest.trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err(false);
        }
    }
}

/// Whether a `"` followed by `rest` closes a label value: what follows it must be the end of the
/// label set or the start of another label.
fn closes(rest: &str) -> bool {
    let rest = rest.trim_start();
    if rest.starts_with('}') {
        return true;
    }
    let Some(next) = rest.strip_prefix(',') else {
        return false;
    };
    let next = next.trim_start();
    if next.starts_with('}') {
        return true;
    }
    next.find('=').is_some_and(|eq| {
        is_label_name(next[..eq].trim()) && next[eq + 1..].trim_start().starts_with('"')
    })
}

/// A label value after its opening quote, escaped or raw, and the text after its closing quote.
fn label_value(s: &str) -> Result<(String, &str), bool> {
    // Nearly every value has neither escapes nor raw quotes.
    if let Some(q) = s.find(['"', '\\'])
        && s.as_bytes()[q] == b'"'
        && closes(&s[q + 1..])
    {
        return Ok((s[..q].to_owned(), &s[q + 1..]));
    }
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.peek().map(|&(_, n)| n) {
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                Some('n') => {
                    out.push('\n');
                    chars.next();
                }
                Some('"') if !closes(&s[i + 2..]) || later_close(&s[i + 2..]) => {
                    out.push('"');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '"' if closes(&s[i + 1..]) => return Ok((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    Err(true)
}

/// Whether some later `"` could close the value, so that `\"` here is an escape rather than a
/// raw backslash ending the value.
fn later_close(s: &str) -> bool {
    s.char_indices()
        .any(|(i, c)| c == '"' && closes(&s[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Family {
        let p = parse(text);
        assert_eq!(p.families.len(), 1, "{p:?}");
        p.families
            .into_iter()
            .next()
            .unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn reads_the_sdk_answer() {
        let text = "# HELP prom_express_humidity humidity\n# TYPE prom_express_humidity gauge\nprom_express_humidity{sensor=\"None\"} 0\nprom_express_humidity{sensor=\"bme680\"} 49.4062\r\nprom_express_gas 1060948";
        let p = parse(text);
        assert_eq!(p.skipped, 0);
        assert_eq!(p.families.len(), 2);
        assert_eq!(p.families[0].name, "prom_express_gas");
        assert_eq!(p.families[0].kind, MetricType::Untyped);
        assert_eq!(p.families[0].samples, vec![(vec![], 1060948.0)]);
        let h = &p.families[1];
        assert_eq!((h.kind, h.help.as_str()), (MetricType::Gauge, "humidity"));
        assert_eq!(
            h.samples,
            vec![(vec![("sensor".into(), "bme680".into())], 49.4062)]
        );
    }

    #[test]
    fn raw_quotes_backslashes_and_newlines_in_values() {
        let f = one("m{a=\"say \"hi\"\",b=\"c:\\dir\"} 1");
        assert_eq!(
            f.samples[0].0,
            vec![
                ("a".into(), "say \"hi\"".into()),
                ("b".into(), "c:\\dir".into())
            ]
        );
        let f = one("m{a=\"x\\\"y\\\\z\\n\"} 1");
        assert_eq!(f.samples[0].0[0].1, "x\"y\\z\n");
        let f = one("m{a=\"ends in \\\"} 2");
        assert_eq!(f.samples[0].0[0].1, "ends in \\");
        let p = parse("m{a=\"two\nlines\",b=\"c\"} 3\nn 4");
        assert_eq!(p.skipped, 0, "{p:?}");
        assert_eq!(p.families[0].samples[0].0[0].1, "two\nlines");
        assert_eq!(p.families[1].name, "n");
    }

    #[test]
    fn summary_parts_become_gauges_and_counters_keep_their_names() {
        let p = parse(
            "# TYPE s summary\ns_count 3\ns_total 7.5\n# TYPE c counter\nc 2\n# TYPE d counter\nd_total 1",
        );
        let got: Vec<(&str, MetricType, f64)> = p
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.samples[0].1))
            .collect();
        assert_eq!(
            got,
            vec![
                ("c", MetricType::Gauge, 2.0),
                ("d_total", MetricType::Gauge, 1.0),
                ("s_count", MetricType::Gauge, 3.0),
                ("s_sum", MetricType::Gauge, 7.5),
            ]
        );
    }

    #[test]
    fn numbers_as_python_writes_them() {
        let p = parse("a nan\nb inf\nc -inf\nd 1e-05\ne +Inf\nf NaN 123\ng 1 2 3\nh one");
        let values: Vec<f64> = p.families.iter().map(|f| f.samples[0].1).collect();
        assert!(values[0].is_nan());
        assert_eq!(
            values[1..5],
            [f64::INFINITY, f64::NEG_INFINITY, 1e-5, f64::INFINITY]
        );
        assert!(values[5].is_nan());
        assert_eq!(p.families.len(), 6);
        assert_eq!(p.skipped, 2);
    }

    #[test]
    fn bad_lines_are_skipped_and_counted() {
        for bad in [
            "{a=\"b\"} 1",
            "9x 1",
            "m{a=\"b\" 1",
            "m{__a=\"b\"} 1",
            "m{a=\"b\",a=\"c\"} 1",
            "m{a=b} 1",
            "m1",
            "m{a=\"unterminated} 1",
        ] {
            let p = parse(&format!("{bad}\nok 1"));
            assert_eq!(p.skipped, 1, "{bad:?}: {p:?}");
            assert_eq!(p.families.len(), 1, "{bad:?}: {p:?}");
        }
    }

    #[test]
    fn repeated_series_keep_the_first() {
        let f = one("m{a=\"1\",b=\"2\"} 1\nm{b=\"2\",a=\"1\"} 2");
        assert_eq!(f.samples.len(), 1);
        assert_eq!(f.samples[0].1, 1.0);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"ab_:{}=\",\\\n\r #0123456789.eEnaifNI+- \t\xff";
        for _ in 0..20_000 {
            let len = rng.usize(0..64);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(0..alphabet.len())])
                .collect();
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }
}

#[cfg(test)]
mod round_trip {
    use std::sync::Arc;

    use tidegauge_core::{MetricFamily, Snapshot};

    use super::*;

    fn word(rng: &mut fastrand::Rng, alphabet: &[u8], len: std::ops::Range<usize>) -> String {
        let n = rng.usize(len);
        (0..n)
            .map(|_| alphabet[rng.usize(0..alphabet.len())] as char)
            .collect()
    }

    fn value(rng: &mut fastrand::Rng) -> String {
        let pool = [
            "a", "\"", "\\", "\n", ",", "}", "{", "=", " ", "é", "x\",y=\"", "None ", "0",
        ];
        (0..rng.usize(0..6))
            .map(|_| pool[rng.usize(0..pool.len())])
            .collect()
    }

    /// Valid text 0.0.4, as core's encoder writes it (escaped label values, any order of
    /// families), reads back as the same families, series and values.
    #[test]
    fn valid_exposition_round_trips() {
        let mut rng = fastrand::Rng::with_seed(10);
        for case in 0..2_000 {
            let mut snap = Snapshot::new();
            let mut names = std::collections::BTreeSet::new();
            for _ in 0..rng.usize(1..5) {
                let name = format!("m_{}", word(&mut rng, b"abcxyz_:", 1..8));
                if !names.insert(name.clone()) {
                    continue;
                }
                let kind = if rng.bool() {
                    MetricType::Gauge
                } else {
                    MetricType::Untyped
                };
                let help = word(&mut rng, b"ab \\\n", 0..10);
                let mut f = MetricFamily::new(name, help.trim_end(), kind);
                let mut sets = std::collections::BTreeSet::new();
                for _ in 0..rng.usize(1..4) {
                    let mut labels = Labels::new();
                    for _ in 0..rng.usize(0..3) {
                        let n = word(&mut rng, b"abl_", 1..5);
                        if n.starts_with("__") || labels.iter().any(|(k, _)| *k == n) {
                            continue;
                        }
                        labels.push((n, value(&mut rng)));
                    }
                    if !labels.is_empty() && labels.iter().all(|(_, v)| v == "None") {
                        continue;
                    }
                    let mut key = labels.clone();
                    key.sort();
                    if !sets.insert(key) {
                        continue;
                    }
                    let v = [0.0, -1.5, 1e-5, 123456789.0, 3.25e300, -0.0][rng.usize(0..6)];
                    f.push(labels, v);
                }
                snap.push(f);
            }
            let text = tidegauge_core::encode::encode_text(&[Arc::new(snap.clone())]);
            let parsed = parse(&text);
            assert_eq!(parsed.skipped, 0, "case {case}:\n{text}\n{parsed:?}");
            let mut want: Vec<Family> = snap
                .families
                .iter()
                .map(|f| Family {
                    name: f.name.clone(),
                    kind: f.kind,
                    help: f.help.clone(),
                    samples: f
                        .samples
                        .iter()
                        .map(|s| match s.value {
                            tidegauge_core::Value::Number(v) => (s.labels.to_vec(), v),
                            _ => unreachable!(),
                        })
                        .collect(),
                })
                .collect();
            want.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(parsed.families, want, "case {case}:\n{text}");
        }
    }
}
