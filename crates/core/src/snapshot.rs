//! The owned metric model collectors return and the host encodes.
//!
//! Names are final. A family of the project's own ([`Naming::Canonical`]) stores a counter without
//! `_total` and an info family without `_info` (the encoders append them); a family served as a
//! client pushed it ([`Naming::Exact`]) keeps the name it was sent with. No unit is ever appended
//! implicitly.

use std::collections::{HashMap, HashSet};
use std::fmt;

/// The type of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum MetricType {
    /// A value that can go up and down.
    Gauge,
    /// A monotonically increasing total; exposed with a `_total` suffix.
    Counter,
    /// A value of unknown semantics (`untyped` in text 0.0.4, `unknown` in OpenMetrics).
    Untyped,
    /// Constant labels with the value 1; exposed as `<name>_info`.
    Info,
    /// An enum: one series per state, labelled with the state, 1 for the current one.
    /// Written as a gauge family in both formats.
    StateSet,
    /// A classic histogram with cumulative buckets.
    Histogram,
    /// A summary: precomputed quantiles, sum and count.
    Summary,
}

/// How the encoders name a family's samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Naming {
    /// The project's convention: a counter's samples are `<name>_total`, an info family's
    /// `<name>_info`.
    #[default]
    Canonical,
    /// As a client pushed it: samples are named `<name>` in both formats (histograms and
    /// summaries add their part suffixes; info families stay canonical), so Prometheus stores the
    /// same series whichever format it negotiates. OpenMetrics writes a counter named
    /// `<stem>_total` as the counter family `<stem>`, any other counter as `unknown`.
    Exact,
    /// As [`Naming::Exact`], but OpenMetrics writes a counter as `unknown` even when its name
    /// ends with `_total`: another family of the exposition is called `<stem>`
    /// ([`Snapshot::settle_exact`] decides).
    ExactUnknown,
    /// As [`Naming::Exact`] in text 0.0.4; OpenMetrics writes no family of this name, its series
    /// being the `_created` samples of the counter, histogram or summary it names (a Python
    /// client's `x_created` gauge beside its `x`), with which a family of this name would clash
    /// ([`Snapshot::settle_exact`] decides).
    ExactFolded,
}

impl Naming {
    /// Whether samples carry the family name as given.
    pub fn is_exact(self) -> bool {
        self != Self::Canonical
    }

    #[cfg_attr(not(feature = "serde"), allow(dead_code))]
    fn is_canonical(&self) -> bool {
        *self == Self::Canonical
    }
}

/// The value of one sample. Histograms and summaries are boxed: most samples are numbers, and
/// every sample is the size of the largest variant.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Value {
    /// A single number (gauge, counter, untyped, state set, info).
    Number(f64),
    /// A classic histogram.
    Histogram(Box<Histogram>),
    /// A summary.
    Summary(Box<Summary>),
}

/// A classic histogram: cumulative `(upper bound, count)` buckets, sum and count. The `+Inf`
/// bucket is implied by `count`.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Histogram {
    /// Cumulative buckets, ascending by upper bound, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// A summary: `(quantile, value)` pairs ascending by quantile, sum and count.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Summary {
    /// Quantiles, each in `[0, 1]`, ascending.
    pub quantiles: Vec<(f64, f64)>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

/// Ordered label pairs, as collectors build them; a [`Sample`] stores them as a [`LabelSet`].
pub type Labels = Vec<(String, String)>;

/// The ordered label pairs of one sample, in one shared allocation: a clone (a pushed series
/// in each exposition built from it, a series joining another family) shares the strings
/// instead of copying each of them, and a series costs one allocation instead of one per name
/// and value. Equal pairs give equal sets; it serializes as the list of pairs.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSet(Option<std::sync::Arc<str>>);

impl LabelSet {
    /// The empty set.
    pub const fn new() -> Self {
        Self(None)
    }

    /// The pairs in order.
    pub fn iter(&self) -> LabelIter<'_> {
        let (lengths, text) = match &self.0 {
            // The lengths end at the first `;`: they are digits and commas.
            Some(s) => s.split_once(';').unwrap_or(("", "")),
            None => ("", ""),
        };
        LabelIter {
            lengths: (!lengths.is_empty()).then(|| lengths.split(',')),
            text,
        }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The value of the first pair named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The pairs as owned strings.
    pub fn to_vec(&self) -> Labels {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl PartialOrd for LabelSet {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Pair by pair, as the pairs' `Vec` compares.
impl Ord for LabelSet {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.iter().cmp(other.iter())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for LabelSet {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        use std::fmt::Write as _;
        let mut lengths = String::new();
        let mut text = String::new();
        for (k, v) in pairs {
            for part in [k.as_ref(), v.as_ref()] {
                if !lengths.is_empty() {
                    lengths.push(',');
                }
                let _ = write!(lengths, "{}", part.len());
                text.push_str(part);
            }
        }
        if lengths.is_empty() {
            return Self(None);
        }
        lengths.push(';');
        lengths.push_str(&text);
        Self(Some(std::sync::Arc::from(lengths)))
    }
}

impl From<Labels> for LabelSet {
    fn from(pairs: Labels) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<&[(String, String)]> for LabelSet {
    fn from(pairs: &[(String, String)]) -> Self {
        pairs.iter().map(|(k, v)| (k, v)).collect()
    }
}

impl From<&Labels> for LabelSet {
    fn from(pairs: &Labels) -> Self {
        pairs.as_slice().into()
    }
}

impl<'a> IntoIterator for &'a LabelSet {
    type Item = (&'a str, &'a str);
    type IntoIter = LabelIter<'a>;
    fn into_iter(self) -> LabelIter<'a> {
        self.iter()
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq<Labels> for LabelSet {
    fn eq(&self, other: &Labels) -> bool {
        self.iter()
            .eq(other.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for LabelSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // With its length first, as a `Vec` is written (CBOR would mark an unknown length).
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for pair in self.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for LabelSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Labels::deserialize(d)?.into())
    }
}

/// The pairs of a [`LabelSet`].
#[derive(Debug, Clone)]
pub struct LabelIter<'a> {
    lengths: Option<std::str::Split<'a, char>>,
    text: &'a str,
}

impl<'a> LabelIter<'a> {
    fn part(&mut self) -> Option<&'a str> {
        let len: usize = self.lengths.as_mut()?.next()?.parse().ok()?;
        let (part, rest) = self.text.split_at_checked(len)?;
        self.text = rest;
        Some(part)
    }
}

impl<'a> Iterator for LabelIter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        Some((self.part()?, self.part()?))
    }
}

/// One series of a family.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Sample {
    /// Label pairs, in exposition order.
    pub labels: LabelSet,
    /// The value.
    pub value: Value,
    /// Creation time in seconds since the epoch: written (as a `_created` sample, in OpenMetrics
    /// only) for exact families, kept but not written for canonical ones.
    pub created: Option<f64>,
}

/// A metric family: one name, one type, one help text, any number of samples.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MetricFamily {
    /// Final name (counters without `_total`, info without `_info`).
    pub name: String,
    /// Help text, written verbatim (escaped by the encoders).
    pub help: String,
    /// Type.
    pub kind: MetricType,
    /// Unit for the OpenMetrics `# UNIT` line; the name must already end with it.
    pub unit: Option<String>,
    /// Samples.
    pub samples: Vec<Sample>,
    /// Served on behalf of clients (pushed), not owned: where another source exposes the same
    /// name, this family's series join that one's family (same type) or are dropped.
    #[cfg_attr(feature = "serde", serde(default, skip_serializing))]
    pub guest: bool,
    /// How the samples are named.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Naming::is_canonical")
    )]
    pub naming: Naming,
}

impl MetricFamily {
    /// An empty family.
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: MetricType) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind,
            unit: None,
            samples: Vec::new(),
            guest: false,
            naming: Naming::Canonical,
        }
    }

    /// An empty gauge family.
    pub fn gauge(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, MetricType::Gauge)
    }

    /// An empty counter family (`name` without `_total`).
    pub fn counter(name: impl Into<String>, help: impl Into<String>) -> Self {
        Self::new(name, help, MetricType::Counter)
    }

    /// Adds a numeric sample.
    pub fn push(&mut self, labels: impl Into<LabelSet>, value: f64) -> &mut Self {
        self.samples.push(Sample {
            labels: labels.into(),
            value: Value::Number(value),
            created: None,
        });
        self
    }

    /// Builder form of [`MetricFamily::push`].
    pub fn with(mut self, labels: impl Into<LabelSet>, value: f64) -> Self {
        self.push(labels, value);
        self
    }

    /// Adds the series of one state set: a sample per state, labelled `label="<state>"` after
    /// `labels`, 1 for `current` and 0 for the others (all 0 when `current` is none of them).
    pub fn push_states<S: AsRef<str>>(
        &mut self,
        labels: &[(String, String)],
        label: &str,
        states: &[S],
        current: Option<&str>,
    ) -> &mut Self {
        for state in states {
            let state = state.as_ref();
            let mut l = labels.to_vec();
            l.push((label.to_owned(), state.to_owned()));
            let on = current == Some(state);
            self.push(l, if on { 1.0 } else { 0.0 });
        }
        self
    }
}

/// Helper to build a label set from string pairs.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What one collection produced.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Snapshot {
    /// Families in exposition order.
    pub families: Vec<MetricFamily>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a family; empty families are kept out (they encode to nothing useful).
    pub fn push(&mut self, family: MetricFamily) -> &mut Self {
        if !family.samples.is_empty() {
            self.families.push(family);
        }
        self
    }

    /// Number of samples over all families.
    pub fn sample_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    /// The family called `name`, if present.
    pub fn family(&self, name: &str) -> Option<&MetricFamily> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Decides how OpenMetrics writes the exact families, so that no two families of the
    /// snapshot clash there and no accepted series is lost:
    /// - an exact gauge or untyped `<x>_created` whose series match those of the exact counter
    ///   `<x>_total`, histogram or summary `<x>` becomes their `_created` samples (a Python
    ///   client pushes these beside each counter, histogram and summary); against a histogram
    ///   or summary, whose samples cannot move, the series without a match are left out of
    ///   OpenMetrics;
    /// - an exact counter `<x>_total` is the counter family `<x>` (with `<x>_created` reserved
    ///   to it) unless another family holds either name, say a gauge `<x>`, or a value is
    ///   negative or NaN: then it is `unknown` under its pushed name.
    pub fn settle_exact(&mut self) {
        for f in &mut self.families {
            if f.naming.is_exact() {
                f.naming = Naming::Exact;
                for s in &mut f.samples {
                    s.created = None;
                }
            }
        }
        let bases: HashMap<String, usize> = self
            .families
            .iter()
            .enumerate()
            .filter(|(_, f)| f.naming == Naming::Exact)
            .filter_map(|(i, f)| f.created_base().map(|b| (b.to_owned(), i)))
            .collect();
        // Folds, by base.
        let mut folded: HashMap<usize, usize> = HashMap::new();
        for c in 0..self.families.len() {
            let created = &self.families[c];
            if created.naming != Naming::Exact
                || !matches!(created.kind, MetricType::Gauge | MetricType::Untyped)
            {
                continue;
            }
            let Some(&b) = created
                .name
                .strip_suffix("_created")
                .and_then(|base| bases.get(base))
            else {
                continue;
            };
            let by_labels: HashMap<&LabelSet, usize> = self.families[b]
                .samples
                .iter()
                .enumerate()
                .map(|(i, s)| (&s.labels, i))
                .collect();
            let pairs: Vec<Option<(usize, f64)>> = created
                .samples
                .iter()
                .map(|s| match s.value {
                    Value::Number(v) => by_labels.get(&s.labels).map(|&i| (i, v)),
                    _ => None,
                })
                .collect();
            let whole = pairs.iter().all(Option::is_some);
            if !whole && self.families[b].kind == MetricType::Counter {
                // The counter steps aside instead (below): the gauge stays a family.
                continue;
            }
            for (i, v) in pairs.into_iter().flatten() {
                self.families[b].samples[i].created = Some(v);
            }
            self.families[c].naming = Naming::ExactFolded;
            folded.insert(b, c);
        }
        // What the other families hold in OpenMetrics; exact counters hold their pushed name
        // until they are placed, folded families nothing of their own.
        let mut taken: HashSet<String> = HashSet::new();
        for f in &self.families {
            match f.naming {
                Naming::ExactFolded => {}
                Naming::Exact if f.kind == MetricType::Counter => {
                    taken.insert(f.name.clone());
                }
                _ => taken.extend(f.exposed_names()),
            }
        }
        let mut counters: Vec<usize> = (0..self.families.len())
            .filter(|&i| {
                let f = &self.families[i];
                f.naming == Naming::Exact && f.kind == MetricType::Counter
            })
            .collect();
        counters.sort_by(|a, b| self.families[*a].name.cmp(&self.families[*b].name));
        for i in counters {
            let Some(stem) = self.families[i].om_counter_stem().map(str::to_owned) else {
                continue;
            };
            let created = format!("{stem}_created");
            // OpenMetrics counters are never negative or NaN; the text format takes any value.
            let countable = self.families[i]
                .samples
                .iter()
                .all(|s| matches!(s.value, Value::Number(v) if v >= 0.0));
            if !countable || taken.contains(&stem) || taken.contains(&created) {
                self.families[i].naming = Naming::ExactUnknown;
                for s in &mut self.families[i].samples {
                    s.created = None;
                }
                if let Some(c) = folded.remove(&i) {
                    self.families[c].naming = Naming::Exact;
                    taken.insert(self.families[c].name.clone());
                }
            } else {
                taken.insert(stem);
                taken.insert(created);
            }
        }
    }
}

/// Why a family or label name is not valid in the Prometheus data model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The metric name is empty or has a character outside `[a-zA-Z0-9_:]` (or starts with a digit).
    #[error("invalid metric name {0:?}: must match [a-zA-Z_:][a-zA-Z0-9_:]*")]
    Metric(String),
    /// The label name is empty, has a character outside `[a-zA-Z0-9_]`, starts with a digit or
    /// with the reserved `__`.
    #[error("invalid label name {0:?}: must match [a-zA-Z_][a-zA-Z0-9_]* and not start with __")]
    Label(String),
    /// A sample carries the same label name twice.
    #[error("label name {0:?} appears twice in one series")]
    Repeated(String),
    /// A sample's value does not fit the family's type (a histogram value in a gauge, ...).
    #[error("a {value} value in a family of type {kind}")]
    Mismatch {
        /// The family's type.
        kind: MetricType,
        /// What the value is (`number`, `histogram`, `summary`).
        value: &'static str,
    },
    /// A histogram series labelled `le`, or a summary series labelled `quantile`: the encoders
    /// add that label themselves.
    #[error("label name {0:?} is reserved in this family type")]
    Reserved(&'static str),
}

/// Whether `name` is a valid metric name.
pub fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a valid (non-reserved) label name.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    !name.starts_with("__") && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a metric name.
pub fn check_metric_name(name: &str) -> Result<(), NameError> {
    if is_valid_metric_name(name) {
        Ok(())
    } else {
        Err(NameError::Metric(name.to_owned()))
    }
}

/// Checks a label name.
pub fn check_label_name(name: &str) -> Result<(), NameError> {
    if is_valid_label_name(name) {
        Ok(())
    } else {
        Err(NameError::Label(name.to_owned()))
    }
}

impl MetricFamily {
    /// Checks the family name, every label name of every sample (valid, not repeated, not one
    /// the encoder adds), and that every value fits the family's type.
    pub fn validate(&self) -> Result<(), NameError> {
        check_metric_name(&self.name)?;
        let reserved = match self.kind {
            MetricType::Histogram => Some("le"),
            MetricType::Summary => Some("quantile"),
            _ => None,
        };
        for s in &self.samples {
            let fits = match (&s.value, self.kind) {
                (Value::Histogram(_), MetricType::Histogram)
                | (Value::Summary(_), MetricType::Summary) => true,
                (Value::Number(_), k) => k != MetricType::Histogram && k != MetricType::Summary,
                _ => false,
            };
            if !fits {
                return Err(NameError::Mismatch {
                    kind: self.kind,
                    value: match s.value {
                        Value::Number(_) => "number",
                        Value::Histogram(_) => "histogram",
                        Value::Summary(_) => "summary",
                    },
                });
            }
            for (i, (k, _)) in s.labels.iter().enumerate() {
                if let Some(r) = reserved
                    && k == r
                {
                    return Err(NameError::Reserved(r));
                }
                check_label_name(k)?;
                if s.labels.iter().take(i).any(|(other, _)| other == k) {
                    return Err(NameError::Repeated(k.to_owned()));
                }
            }
        }
        Ok(())
    }

    /// Time series as Prometheus counts them: one per number; a histogram one per bucket plus
    /// `+Inf`, `_sum` and `_count`; a summary one per quantile plus `_sum` and `_count`.
    pub fn series_count(&self) -> usize {
        self.samples
            .iter()
            .map(|s| match &s.value {
                Value::Number(_) => 1,
                Value::Histogram(h) => h.buckets.len() + 3,
                Value::Summary(q) => q.quantiles.len() + 2,
            })
            .sum()
    }

    /// The family's name in text 0.0.4, its samples' name but for histogram and summary parts
    /// (`x_total` for a canonical counter, `x_info` for an info family); `match[]` selects it.
    pub fn text_name(&self) -> String {
        match (self.kind, self.naming) {
            (MetricType::Counter, Naming::Canonical) => format!("{}_total", self.name),
            (MetricType::Info, _) => format!("{}_info", self.name),
            _ => self.name.clone(),
        }
    }

    /// For a counter OpenMetrics can write as one, the family name it writes (the stem its
    /// samples add `_total` to); `None` for other types and for exact counters written as
    /// `unknown`.
    pub fn om_counter_stem(&self) -> Option<&str> {
        if self.kind != MetricType::Counter {
            return None;
        }
        match self.naming {
            Naming::Canonical => Some(&self.name),
            Naming::Exact => self.name.strip_suffix("_total").filter(|s| !s.is_empty()),
            Naming::ExactUnknown | Naming::ExactFolded => None,
        }
    }

    /// The names this family occupies in text 0.0.4: its name there and its samples' names.
    /// Pushed families are told apart by these, as the Pushgateway tells them apart.
    pub fn text_names(&self) -> Vec<String> {
        let n = &self.name;
        match self.kind {
            MetricType::Histogram => vec![
                n.clone(),
                format!("{n}_bucket"),
                format!("{n}_sum"),
                format!("{n}_count"),
            ],
            MetricType::Summary => vec![n.clone(), format!("{n}_sum"), format!("{n}_count")],
            _ => vec![self.text_name()],
        }
    }

    /// The OpenMetrics family name under which this family may write `_created` samples (a
    /// counter written as a counter, a histogram, a summary): `<that>_created` is reserved to it.
    pub fn created_base(&self) -> Option<&str> {
        match self.kind {
            MetricType::Counter => self.om_counter_stem(),
            MetricType::Histogram | MetricType::Summary => Some(&self.name),
            _ => None,
        }
    }

    /// The names this family occupies in either format (`x`, `x_total`, `x_info`, `x_bucket`,
    /// `x_created` ...), used to detect clashes between families.
    pub fn exposed_names(&self) -> Vec<String> {
        let mut names = self.text_names();
        let om = match self.kind {
            MetricType::Counter => self.om_counter_stem(),
            MetricType::Info => Some(self.name.as_str()),
            _ => None,
        };
        if let Some(om) = om {
            names.insert(0, om.to_owned());
        }
        if let Some(base) = self.created_base() {
            names.push(format!("{base}_created"));
        }
        names
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Untyped => "untyped",
            Self::Info => "info",
            Self::StateSet => "stateset",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pair comes back as given, whatever it holds (the separators of the stored form
    /// included), and sets compare, hash and print as their pairs' `Vec` does.
    #[test]
    fn label_sets_keep_every_pair_as_given() {
        let cases: Vec<Labels> = vec![
            vec![],
            vec![(String::new(), String::new())],
            labels([("a", "1")]),
            labels([
                ("job", "x;y,z"),
                ("12", "3,4;"),
                ("é", "値\n\"\n"),
                ("", ""),
            ]),
            labels([("a", ""), ("b", "0"), ("a", "2")]),
        ];
        for pairs in &cases {
            let set = LabelSet::from(pairs);
            assert_eq!(set.to_vec(), *pairs);
            assert_eq!(set.len(), pairs.len());
            assert_eq!(set.is_empty(), pairs.is_empty());
            assert_eq!(format!("{set:?}"), format!("{pairs:?}"));
            assert!(set == *pairs);
            for (k, v) in pairs {
                let first = pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                assert_eq!(set.get(k), first, "{k:?}={v:?}");
            }
            for other in &cases {
                let o = LabelSet::from(other);
                assert_eq!(set.cmp(&o), pairs.cmp(other), "{pairs:?} vs {other:?}");
                assert_eq!(set == o, pairs == other);
            }
        }
        assert_eq!(LabelSet::from(labels([("a", "1,2")])).get("a"), Some("1,2"));
        assert_ne!(
            LabelSet::from(labels([("a", "1"), ("b", "")])),
            LabelSet::from(labels([("a", "1b"), ("", "")]))
        );
    }

    #[test]
    fn names() {
        assert!(is_valid_metric_name("app_uptime"));
        assert!(is_valid_metric_name("a:b_c1"));
        assert!(!is_valid_metric_name("1abc"));
        assert!(!is_valid_metric_name(""));
        assert!(!is_valid_metric_name("a-b"));
        assert!(is_valid_label_name("target"));
        assert!(!is_valid_label_name("__name__"));
        assert!(!is_valid_label_name("a:b"));
        assert!(!is_valid_label_name("é"));
    }

    #[test]
    fn states() {
        let mut f = MetricFamily::new("app_health", "Health", MetricType::StateSet);
        f.push_states(
            &[],
            "app_health",
            &["healthy", "unhealthy"],
            Some("unhealthy"),
        );
        assert_eq!(f.samples.len(), 2);
        assert_eq!(f.samples[0].value, Value::Number(0.0));
        assert_eq!(f.samples[1].value, Value::Number(1.0));
        assert_eq!(f.samples[1].labels, labels([("app_health", "unhealthy")]));
    }

    #[test]
    fn values_must_fit_the_family_type() {
        let summary = Value::Summary(Box::new(Summary {
            quantiles: vec![],
            sum: 0.0,
            count: 0,
        }));
        let mut g = MetricFamily::gauge("g", "g");
        g.samples.push(Sample {
            labels: vec![].into(),
            value: summary.clone(),
            created: None,
        });
        assert!(matches!(g.validate(), Err(NameError::Mismatch { .. })));
        let s = MetricFamily::new("s", "s", MetricType::Summary).with(vec![], 1.0);
        assert!(matches!(s.validate(), Err(NameError::Mismatch { .. })));
        let mut q = MetricFamily::new("s", "s", MetricType::Summary);
        q.samples.push(Sample {
            labels: labels([("quantile", "0.5")]).into(),
            value: summary,
            created: None,
        });
        assert_eq!(q.validate(), Err(NameError::Reserved("quantile")));
    }

    #[test]
    fn repeated_label_names_are_invalid() {
        let f = MetricFamily::gauge("x", "x").with(labels([("a", "1"), ("a", "2")]), 1.0);
        assert_eq!(f.validate(), Err(NameError::Repeated("a".into())));
    }
}
