//! Pushgateway-compatible groups: the URL grammar, replacement rules, consistency checks,
//! push times and optional expiry.

use base64::Engine as _;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use tidegauge_core::snapshot::is_valid_label_name;
use tidegauge_core::{LabelSet, Labels, MetricFamily, MetricType, Naming, Sample, Snapshot};

use crate::textformat::ParsedFamily;

/// One group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// Grouping key: `job` first, then the other labels sorted.
    pub key: Labels,
    /// Families in push order, labels decorated with the grouping key.
    pub families: Vec<MetricFamily>,
    /// Last successful change, Unix seconds (0 = never).
    pub push_time: f64,
    /// Last rejected change, Unix seconds (0 = never).
    pub failure_time: f64,
    /// When the group expires, Unix seconds.
    pub expires: Option<f64>,
}

impl Group {
    /// Store key of the group.
    pub fn store_key(&self) -> String {
        store_key(&self.key)
    }
}

/// Prefix of group keys in the store (ICOS metric names cannot contain NUL).
pub const STORE_PREFIX: &str = "\u{0}group:";

/// The store key of a grouping key.
pub fn store_key(key: &Labels) -> String {
    let mut s = String::from(STORE_PREFIX);
    s.push_str(&serde_json::to_string(key).unwrap_or_default());
    s
}

/// `%XX`-decoded UTF-8; `None` for a `%` not followed by two hex digits (Go's
/// `url.PathUnescape` refuses those too) or for bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let escapes_valid = s.split('%').skip(1).all(|rest| {
        rest.as_bytes()
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_valid {
        return None;
    }
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// Why a pushed family cannot expose a name: `(name in text 0.0.4, family)`.
pub type Taken<'a> = dyn Fn(&str, &MetricFamily) -> Option<String> + 'a;

/// A push URL's grouping labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    /// The group's identity (`job` first); an empty `instance` is left out, since every series
    /// gets `instance=""` anyway.
    pub key: Labels,
    /// The labels that override the body's: the key, plus an explicit empty `instance`
    /// (`instance@base64/=`), which replaces a body's `instance` as the Pushgateway does.
    pub labels: Labels,
}

/// Parses the raw path after `/metrics/` into a grouping key (`job` first).
pub fn grouping_key(raw: &str) -> Result<Labels, String> {
    grouping(raw).map(|g| g.key)
}

/// Parses the raw path after `/metrics/` into its grouping labels.
pub fn grouping(raw: &str) -> Result<Grouping, String> {
    let parts: Vec<&str> = raw.trim_end_matches('/').split('/').collect();
    if parts.len() < 2 || parts[0].split('@').next() != Some("job") {
        return Err("job name is required".into());
    }
    if !parts.len().is_multiple_of(2) {
        return Err(format!(
            "odd number of components in label string {:?}",
            parts[2..].join("/")
        ));
    }
    let mut key: Labels = Vec::new();
    for pair in parts.chunks(2) {
        let (name, encoded) = (pair[0], pair[1]);
        let (name, b64) = match name.strip_suffix("@base64") {
            Some(n) => (n, true),
            None => (name, false),
        };
        let name = percent_decode(name).ok_or_else(|| format!("improper label name {name:?}"))?;
        if !is_valid_label_name(&name) {
            return Err(format!("improper label name {name:?}"));
        }
        let value = if b64 {
            // As the Pushgateway: padding trimmed, then URL-safe without padding (`=` is "").
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(encoded.trim_end_matches('='))
                .map_err(|_| {
                    if name == "job" {
                        format!("invalid base64 encoding in job name {encoded:?}")
                    } else {
                        format!("invalid base64 encoding for label {name}={encoded:?}")
                    }
                })?;
            String::from_utf8(bytes).map_err(|_| {
                format!("invalid base64 encoding for label {name}={encoded:?}: not UTF-8")
            })?
        } else {
            percent_decode(encoded)
                .ok_or_else(|| format!("invalid URL encoding for label {name}={encoded:?}"))?
        };
        if name == "job" && value.is_empty() {
            return Err("job name is required".into());
        }
        // As the Pushgateway: the job segment names the job whatever follows (Python's
        // `grouping_key` holding `job` adds a second one); another label repeated in the URL
        // takes its last value.
        match key.iter_mut().find(|(k, _)| *k == name) {
            Some(_) if name == "job" => {}
            Some(slot) => slot.1 = value,
            None => key.push((name, value)),
        }
    }
    let mut rest = key.split_off(1);
    rest.sort();
    key.extend(rest);
    let labels = key.clone();
    // An empty instance is what every series gets anyway: {job="x",instance=""} is {job="x"}.
    key.retain(|(k, v)| !(k == "instance" && v.is_empty()));
    Ok(Grouping { key, labels })
}

/// Converts parsed families into stored ones decorated with the grouping labels
/// ([`Grouping::labels`]), which override the body's.
pub fn decorate(key: &Labels, parsed: Vec<ParsedFamily>) -> Vec<MetricFamily> {
    parsed
        .into_iter()
        .filter(|f| f.name != "push_time_seconds" && f.name != "push_failure_time_seconds")
        .map(|f| {
            // Served under the name it was pushed with, as the Pushgateway serves it.
            let mut family = MetricFamily::new(f.name, f.help, f.kind);
            family.naming = Naming::Exact;
            for (mut labels, value) in f.series {
                labels.retain(|(k, _)| !key.iter().any(|(gk, _)| gk == k));
                labels.extend(key.iter().cloned());
                if !labels.iter().any(|(k, _)| k == "instance") {
                    labels.push(("instance".into(), String::new()));
                }
                labels.sort();
                family.samples.push(Sample {
                    labels: labels.into(),
                    value,
                    created: None,
                });
            }
            family
        })
        .collect()
}

/// How a push changes its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Replace every family of the group.
    Put,
    /// Replace the families pushed.
    Post,
}

/// All groups, with an index of what they expose so that a push is checked in time
/// proportional to its own size, not to everything already pushed.
#[derive(Debug, Default, Clone)]
pub struct Groups {
    groups: BTreeMap<Labels, Group>,
    index: Index,
}

/// What the groups expose, counted, kept in step by [`Groups::put`] and [`Groups::remove`].
#[derive(Debug, Default, Clone)]
struct Index {
    /// Name in text 0.0.4 (`x_total`, `x_bucket`, ...) → (family name, type) → how many
    /// families of all groups expose it that way. Pushed families are told apart by these names,
    /// as the Pushgateway tells them apart: a gauge `b` and a counter `b_total` are two families
    /// (OpenMetrics then writes the counter as `unknown`, see [`Snapshot::settle_exact`]).
    exposed: HashMap<String, HashMap<(String, MetricType), usize>>,
    /// Hash of (family name, labels) → how many groups hold that series. A hash, not a copy
    /// of every label set: a hit is confirmed against the groups themselves (see
    /// [`Groups::held_elsewhere`]).
    series: HashMap<u64, u32>,
    /// The hasher of `series`.
    hasher: std::hash::RandomState,
    /// Series over all groups.
    total: usize,
    /// No group expires before this (a lower bound; `None`: no group has a time-to-live).
    next_expiry: Option<f64>,
}

impl Index {
    fn series_key(&self, family: &str, labels: &LabelSet) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one((family, labels))
    }

    fn add(&mut self, g: &Group) {
        for f in &g.families {
            for n in f.text_names() {
                *self
                    .exposed
                    .entry(n)
                    .or_default()
                    .entry((f.name.clone(), f.kind))
                    .or_default() += 1;
            }
            for l in f.samples.iter().map(|s| &s.labels) {
                *self.series.entry(self.series_key(&f.name, l)).or_default() += 1;
            }
            self.total += f.series_count();
        }
        if let Some(e) = g.expires {
            self.next_expiry = Some(self.next_expiry.map_or(e, |n| n.min(e)));
        }
    }

    fn remove(&mut self, g: &Group) {
        for f in &g.families {
            for n in f.text_names() {
                if let Some(holders) = self.exposed.get_mut(&n) {
                    let key = (f.name.clone(), f.kind);
                    if let Some(c) = holders.get_mut(&key) {
                        *c -= 1;
                        if *c == 0 {
                            holders.remove(&key);
                        }
                    }
                    if holders.is_empty() {
                        self.exposed.remove(&n);
                    }
                }
            }
            for l in f.samples.iter().map(|s| &s.labels) {
                let key = self.series_key(&f.name, l);
                if let Some(c) = self.series.get_mut(&key) {
                    *c -= 1;
                    if *c == 0 {
                        self.series.remove(&key);
                    }
                }
            }
            self.total -= f.series_count();
        }
    }
}

impl Groups {
    /// Groups restored from the store.
    pub fn restore(groups: Vec<Group>) -> Self {
        let mut all = Self::default();
        for g in groups {
            all.put(g);
        }
        all
    }

    /// Series over all groups, pushed ones only (each group also exposes its push time and
    /// push failure time).
    pub fn series_count(&self) -> usize {
        self.index.total
    }

    /// Groups held.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Whether a pushed family exposes `name`, in text or, as `<x>_created` of a pushed counter
    /// `<x>_total`, histogram or summary `<x>`, in OpenMetrics.
    pub fn occupies(&self, name: &str) -> bool {
        let holds = |n: &str, kinds: &[MetricType]| {
            self.index
                .exposed
                .get(n)
                .is_some_and(|h| h.keys().any(|(_, k)| kinds.contains(k)))
        };
        self.index.exposed.contains_key(name)
            || name.strip_suffix("_created").is_some_and(|x| {
                holds(x, &[MetricType::Histogram, MetricType::Summary])
                    || holds(&format!("{x}_total"), &[MetricType::Counter])
            })
    }

    /// The group of a key.
    pub fn get(&self, key: &Labels) -> Option<&Group> {
        self.groups.get(key)
    }

    /// Every group.
    pub fn all(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// The group after a push, or why it is inconsistent; `taken(exposed name, family, type)`
    /// says why another part of the exposition (the ICOS metrics, the host, another collector)
    /// cannot share a name, if it cannot.
    pub fn candidate(
        &self,
        key: &Labels,
        method: Method,
        pushed: Vec<MetricFamily>,
        now: f64,
        taken: &Taken<'_>,
    ) -> Result<Group, (String, Group)> {
        let old = self.groups.get(key);
        let mut group = old.cloned().unwrap_or(Group {
            key: key.clone(),
            families: Vec::new(),
            push_time: 0.0,
            failure_time: 0.0,
            expires: None,
        });
        let pushed_names: HashSet<&str> = pushed.iter().map(|f| f.name.as_str()).collect();
        match method {
            Method::Put => group.families.clear(),
            Method::Post => group
                .families
                .retain(|f| !pushed_names.contains(f.name.as_str())),
        }
        group.families.extend(pushed);
        if let Err(reason) = self.check(&group, old, taken) {
            let mut failed = old.cloned().unwrap_or_else(|| Group {
                families: Vec::new(),
                ..group.clone()
            });
            failed.failure_time = now;
            return Err((reason, failed));
        }
        group.push_time = now;
        Ok(group)
    }

    /// Checks `group` (replacing `old`) against the other groups through the index: the old
    /// group's own entries are subtracted, so the cost follows the size of this group only.
    fn check(&self, group: &Group, old: Option<&Group>, taken: &Taken<'_>) -> Result<(), String> {
        let mut old_series: HashMap<(&str, &LabelSet), usize> = HashMap::new();
        for f in old.iter().flat_map(|g| &g.families) {
            for l in f.samples.iter().map(|s| &s.labels) {
                *old_series.entry((f.name.as_str(), l)).or_default() += 1;
            }
        }
        let old_exposes = |n: &str, holder: &(String, MetricType)| {
            old.iter()
                .flat_map(|g| &g.families)
                .filter(|f| f.name == holder.0 && f.kind == holder.1)
                .filter(|f| f.text_names().iter().any(|e| e == n))
                .count()
        };
        let mut own: HashMap<String, &str> = HashMap::new();
        let mut own_series: HashSet<(&str, &LabelSet)> = HashSet::new();
        for f in &group.families {
            for n in f.text_names() {
                if let Some(other) = own.insert(n.clone(), &f.name) {
                    return Err(format!(
                        "families {other:?} and {:?} both expose {n:?}",
                        f.name
                    ));
                }
                if let Some(holders) = self.index.exposed.get(&n) {
                    for (holder, count) in holders {
                        if (holder.0 != f.name || holder.1 != f.kind)
                            && *count > old_exposes(&n, holder)
                        {
                            return Err(format!(
                                "{n:?} is exposed by the {} {:?} of another group; pushed as part of the {} {:?}",
                                holder.1, holder.0, f.kind, f.name
                            ));
                        }
                    }
                }
                if let Some(reason) = taken(&n, f) {
                    return Err(reason);
                }
            }
            // A histogram's or summary's `_created` samples cannot step aside in OpenMetrics.
            if matches!(f.kind, MetricType::Histogram | MetricType::Summary)
                && let Some(reason) = taken(&format!("{}_created", f.name), f)
            {
                return Err(reason);
            }
            for l in f.samples.iter().map(|s| &s.labels) {
                if !own_series.insert((f.name.as_str(), l)) {
                    return Err(format!(
                        "collected metric {:?} with labels {l:?} appears twice in the push (after the grouping key was applied)",
                        f.name
                    ));
                }
                let hashed = self
                    .index
                    .series
                    .get(&self.index.series_key(&f.name, l))
                    .copied()
                    .unwrap_or(0) as usize;
                let here = old_series.get(&(f.name.as_str(), l)).copied().unwrap_or(0);
                if hashed > here && self.held_elsewhere(&f.name, l, &group.key) {
                    return Err(format!(
                        "collected metric {:?} with labels {l:?} was already pushed in another group",
                        f.name
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a group other than `key` holds the series (`family`, `labels`): the exact check
    /// behind a hit in the hashed index, which costs a scan but only on a hit (a repeated
    /// series, which refuses the push, or a hash collision).
    fn held_elsewhere(&self, family: &str, labels: &LabelSet, key: &Labels) -> bool {
        self.groups
            .values()
            .filter(|g| &g.key != key)
            .flat_map(|g| &g.families)
            .filter(|f| f.name == family)
            .any(|f| f.samples.iter().any(|s| &s.labels == labels))
    }

    /// Stores a group.
    pub fn put(&mut self, group: Group) {
        self.index.add(&group);
        if let Some(old) = self.groups.insert(group.key.clone(), group) {
            self.index.remove(&old);
        }
    }

    /// Removes a group.
    pub fn remove(&mut self, key: &Labels) -> Option<Group> {
        let old = self.groups.remove(key)?;
        self.index.remove(&old);
        Some(old)
    }

    /// Removes groups expired at `now`; returns them.
    pub fn expire(&mut self, now: f64) -> Vec<Group> {
        if self.index.next_expiry.is_none_or(|e| e > now) {
            return Vec::new();
        }
        let expired: Vec<Labels> = self
            .groups
            .values()
            .filter(|g| g.expires.is_some_and(|e| e <= now))
            .map(|g| g.key.clone())
            .collect();
        let removed = expired.iter().filter_map(|k| self.remove(k)).collect();
        self.index.next_expiry = self
            .groups
            .values()
            .filter_map(|g| g.expires)
            .reduce(f64::min);
        removed
    }

    /// Pushed families merged across groups (sorted by name), then the push times.
    pub fn snapshot(&self) -> Snapshot {
        // Sized first: growing by doubling would leave up to half of each merged family unused.
        let mut sizes: HashMap<&str, usize> = HashMap::new();
        for g in self.groups.values() {
            for fam in &g.families {
                *sizes.entry(fam.name.as_str()).or_default() += fam.samples.len();
            }
        }
        let mut merged: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for g in self.groups.values() {
            for fam in &g.families {
                let entry = merged.entry(fam.name.clone()).or_insert_with(|| {
                    let mut f = MetricFamily::new(fam.name.clone(), fam.help.clone(), fam.kind);
                    f.naming = fam.naming;
                    f.samples
                        .reserve_exact(sizes.get(fam.name.as_str()).copied().unwrap_or(0));
                    f
                });
                if !fam.help.is_empty() {
                    entry.help = fam.help.clone();
                }
                entry.samples.extend(fam.samples.iter().cloned());
            }
        }
        let mut snap = Snapshot::new();
        for (_, f) in merged {
            snap.push(f);
        }
        let mut ok = MetricFamily::gauge(
            "push_time_seconds",
            "Last Unix time when changing this group in the Pushgateway succeeded.",
        );
        let mut failed = MetricFamily::gauge(
            "push_failure_time_seconds",
            "Last Unix time when changing this group in the Pushgateway failed.",
        );
        for g in self.groups.values() {
            let mut l = g.key.clone();
            if !l.iter().any(|(k, _)| k == "instance") {
                l.push(("instance".into(), String::new()));
            }
            l.sort();
            ok.push(l.clone(), g.push_time);
            failed.push(l, g.failure_time);
        }
        snap.push(ok);
        snap.push(failed);
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidegauge_core::labels as l;

    #[test]
    fn a_repeated_url_label_takes_its_last_value_but_job_its_first() {
        assert_eq!(
            grouping_key("job/j/job/k/a/1/a/2"),
            Ok(l([("job", "j"), ("a", "2")]))
        );
    }

    #[test]
    fn url_grammar() {
        assert_eq!(grouping_key("job/some_job"), Ok(l([("job", "some_job")])));
        assert_eq!(
            grouping_key("job/some_job/instance/some_instance"),
            Ok(l([("job", "some_job"), ("instance", "some_instance")]))
        );
        assert_eq!(
            grouping_key("job/directory_cleaner/path@base64/L3Zhci90bXA"),
            Ok(l([("job", "directory_cleaner"), ("path", "/var/tmp")]))
        );
        assert_eq!(
            grouping_key("job/example/first_label@base64/=/second_label/foobar"),
            Ok(l([
                ("job", "example"),
                ("first_label", ""),
                ("second_label", "foobar")
            ]))
        );
        assert_eq!(
            grouping_key("job@base64/Zm9vL2Jhcg=="),
            Ok(l([("job", "foo/bar")]))
        );
        assert_eq!(
            grouping_key("job/a%20b/x/y%2Fz"),
            Ok(l([("job", "a b"), ("x", "y/z")]))
        );
        assert_eq!(
            grouping("job/j/instance@base64/="),
            Ok(Grouping {
                key: l([("job", "j")]),
                labels: l([("job", "j"), ("instance", "")]),
            })
        );
        assert!(
            grouping_key("job")
                .unwrap_err()
                .contains("job name is required")
        );
        assert!(
            grouping_key("job/x/a")
                .unwrap_err()
                .contains("odd number of components")
        );
        assert!(
            grouping_key("job/x/__a/b")
                .unwrap_err()
                .contains("improper label name")
        );
        assert!(
            grouping_key("job/x/a-b/c")
                .unwrap_err()
                .contains("improper label name")
        );
        assert!(
            grouping_key("job@base64/!!!")
                .unwrap_err()
                .contains("invalid base64 encoding in job name")
        );
        assert!(
            grouping_key("job/x/a@base64/%%")
                .unwrap_err()
                .contains("invalid base64 encoding for label a")
        );
        assert!(
            grouping_key("notjob/x")
                .unwrap_err()
                .contains("job name is required")
        );
    }

    #[test]
    fn grouping_labels_override_body_labels_and_instance_is_added() {
        let parsed =
            crate::textformat::parse("# TYPE x gauge\nx{job=\"other\",a=\"1\"} 1\n").unwrap();
        let fams = decorate(&l([("job", "j")]), parsed);
        assert_eq!(
            fams[0].samples[0].labels,
            l([("a", "1"), ("instance", ""), ("job", "j")])
        );
    }
}

/// The index-based check against a plain scan of every group, over random pushes and deletions.
#[cfg(test)]
mod index_tests {
    use super::*;

    fn family(name: &str, labels: Labels) -> MetricFamily {
        let mut f = MetricFamily::gauge(name, "");
        f.naming = Naming::Exact;
        f.push(labels, 1.0);
        f
    }

    /// A hit in the hashed series index is confirmed against the groups: a repeated series is
    /// refused, a hash collision (simulated) is not.
    #[test]
    fn hashed_series_hits_are_confirmed() {
        let a: Labels = vec![("job".into(), "a".into())];
        let b: Labels = vec![("job".into(), "b".into())];
        let mut groups = Groups::default();
        groups.put(Group {
            key: a.clone(),
            families: vec![family("x", vec![("s".into(), "1".into())])],
            push_time: 0.0,
            failure_time: 0.0,
            expires: None,
        });
        let collision: Labels = vec![("s".into(), "2".into())];
        let key = groups.index.series_key("x", &collision.clone().into());
        *groups.index.series.entry(key).or_default() += 1;
        let push = |labels: Labels| {
            groups.candidate(&b, Method::Put, vec![family("x", labels)], 1.0, &|_, _| {
                None
            })
        };
        assert!(push(collision.clone()).is_ok());
        let err = push(vec![("s".into(), "1".into())])
            .map(|_| ())
            .unwrap_err()
            .0;
        assert!(err.contains("already pushed in another group"), "{err}");
    }

    /// The definition of consistency, by scanning everything.
    fn reference(groups: &Groups, group: &Group) -> bool {
        let mut exposed: HashMap<String, (String, MetricType)> = HashMap::new();
        let mut series: HashSet<(String, LabelSet)> = HashSet::new();
        for g in groups.all().filter(|g| g.key != group.key) {
            for f in &g.families {
                for n in f.text_names() {
                    exposed.insert(n, (f.name.clone(), f.kind));
                }
                for l in f.samples.iter().map(|s| &s.labels) {
                    series.insert((f.name.clone(), l.clone()));
                }
            }
        }
        let mut own: HashSet<String> = HashSet::new();
        let mut own_series: HashSet<(String, LabelSet)> = HashSet::new();
        for f in &group.families {
            for n in f.text_names() {
                if !own.insert(n.clone()) {
                    return false;
                }
                if exposed
                    .get(&n)
                    .is_some_and(|(name, kind)| *name != f.name || *kind != f.kind)
                {
                    return false;
                }
            }
            for l in f.samples.iter().map(|s| &s.labels) {
                let k = (f.name.clone(), l.clone());
                if series.contains(&k) || !own_series.insert(k) {
                    return false;
                }
            }
        }
        true
    }

    #[test]
    fn index_agrees_with_a_full_scan() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let names = ["a", "a_total", "a_count", "b", "b_bucket", "c"];
        let kinds = [
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Untyped,
            MetricType::Histogram,
        ];
        let mut groups = Groups::default();
        let (mut accepted, mut refused) = (0, 0);
        for step in 0..4000 {
            let key: Labels = vec![("job".into(), format!("j{}", next(4)))];
            if next(10) == 0 {
                groups.remove(&key);
                continue;
            }
            let mut families = Vec::new();
            for _ in 0..=next(3) {
                let mut family = MetricFamily::new(
                    names[next(names.len() as u64) as usize],
                    "",
                    kinds[next(kinds.len() as u64) as usize],
                );
                family.naming = Naming::Exact;
                for _ in 0..=next(3) {
                    // Series labels deliberately overlap across groups (no job label here).
                    family.push(vec![("s".to_owned(), next(3).to_string())], 1.0);
                }
                families.push(family);
            }
            let method = if next(2) == 0 {
                Method::Put
            } else {
                Method::Post
            };
            let mut would_be = Group {
                key: key.clone(),
                families: Vec::new(),
                push_time: 0.0,
                failure_time: 0.0,
                expires: None,
            };
            if method == Method::Post
                && let Some(old) = groups.get(&key)
            {
                would_be.families = old
                    .families
                    .iter()
                    .filter(|o| !families.iter().any(|f| f.name == o.name))
                    .cloned()
                    .collect();
            }
            would_be.families.extend(families.iter().cloned());
            let expected = reference(&groups, &would_be);
            let result = groups.candidate(&key, method, families, step as f64, &|_, _| None);
            assert_eq!(result.is_ok(), expected, "step {step}: {would_be:?}");
            let group = match result {
                Ok(g) => {
                    accepted += 1;
                    g
                }
                Err((_, g)) => {
                    refused += 1;
                    g
                }
            };
            groups.put(group);
            let total: usize = groups
                .all()
                .flat_map(|g| &g.families)
                .map(MetricFamily::series_count)
                .sum();
            assert_eq!(groups.series_count(), total);
        }
        assert!(accepted > 100 && refused > 100, "{accepted} {refused}");
    }
}
