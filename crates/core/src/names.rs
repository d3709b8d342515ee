//! Who exposes which metric name. The host records every source's own families at each scrape
//! (its self-metrics, each collector's non-guest families); a push API asks before accepting a
//! family that another source exposes under another type, so no push can hide or change a
//! collector's series.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::{MetricFamily, MetricType};

/// The exposed names of every source, by source.
#[derive(Debug, Default)]
pub struct Names {
    by_owner: RwLock<HashMap<String, Exposed>>,
}

/// One source's exposed names: exposed name → (the family's name in text 0.0.4, type).
type Exposed = HashMap<String, (String, MetricType)>;

impl Names {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces what `owner` exposes (`the host`, `collector NAME`) with `families`.
    pub fn record<'a>(&self, owner: &str, families: impl IntoIterator<Item = &'a MetricFamily>) {
        let mut map = HashMap::new();
        for f in families {
            for n in f.exposed_names() {
                map.insert(n, (f.text_name(), f.kind));
            }
        }
        let mut all = self
            .by_owner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if all.get(owner) != Some(&map) {
            all.insert(owner.to_owned(), map);
        }
    }

    /// Forgets every source but `keep` (a reload that disabled a collector).
    pub fn retain(&self, keep: &[String]) {
        self.by_owner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|owner, _| keep.contains(owner));
    }

    /// The source that exposes `name`, if one does.
    pub fn owner_of(&self, name: &str) -> Option<String> {
        self.by_owner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(_, names)| names.contains_key(name))
            .map(|(owner, _)| owner.clone())
    }

    /// Why `family` cannot be served beside the others' (an exposed name of it belongs to a
    /// family of another name or type), or `None` when it can (then its series join the
    /// owner's family). Families are the same when their text 0.0.4 names and types are: a
    /// counter pushed as `x_total` is the counter `x` of a collector.
    pub fn conflict(&self, family: &MetricFamily) -> Option<String> {
        let (name, kind) = (family.text_name(), family.kind);
        let all = self
            .by_owner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for n in family.exposed_names() {
            for (owner, names) in all.iter() {
                if let Some((other, k)) = names.get(&n)
                    && (*other != name || *k != kind)
                {
                    return Some(format!(
                        "{n:?} is exposed by {owner} as part of the {k} {other:?}; pushed as part of the {kind} {name:?}"
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Naming;

    fn probe(name: &str, kind: MetricType) -> MetricFamily {
        MetricFamily::new(name, "", kind)
    }

    fn exact(name: &str, kind: MetricType) -> MetricFamily {
        let mut f = probe(name, kind);
        f.naming = Naming::Exact;
        f
    }

    #[test]
    fn conflicts_by_name_and_type() {
        let names = Names::new();
        names.record(
            "collector a",
            &[
                MetricFamily::gauge("a_up", ""),
                MetricFamily::counter("a_errors", ""),
            ],
        );
        assert_eq!(names.conflict(&probe("a_up", MetricType::Gauge)), None);
        assert_eq!(
            names.conflict(&probe("a_errors", MetricType::Counter)),
            None
        );
        let e = names.conflict(&probe("a_up", MetricType::Counter)).unwrap();
        assert!(e.contains("collector a") && e.contains("gauge"), "{e}");
        // A gauge named like the counter's sample clashes with it.
        assert!(
            names
                .conflict(&probe("a_errors_total", MetricType::Gauge))
                .is_some()
        );
        assert_eq!(names.conflict(&probe("other", MetricType::Gauge)), None);
        // A counter pushed under its exposed name is the collector's counter; one whose
        // OpenMetrics family name is a gauge's is not.
        assert_eq!(
            names.conflict(&exact("a_errors_total", MetricType::Counter)),
            None
        );
        assert!(
            names
                .conflict(&exact("a_up_total", MetricType::Counter))
                .is_some()
        );
        assert!(
            names
                .conflict(&exact("a_errors", MetricType::Counter))
                .is_some()
        );
        // A new record replaces the owner's names.
        names.record("collector a", &[]);
        assert_eq!(names.conflict(&probe("a_up", MetricType::Counter)), None);
        // A source that is gone (disabled by a reload) owns nothing.
        names.record("collector b", &[MetricFamily::gauge("b_up", "")]);
        assert!(
            names
                .conflict(&probe("b_up", MetricType::Counter))
                .is_some()
        );
        names.retain(&["the host".to_owned()]);
        assert_eq!(names.conflict(&probe("b_up", MetricType::Counter)), None);
    }
}
