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

/// One source's exposed names: exposed name → (family name, type).
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
                map.insert(n, (f.name.clone(), f.kind));
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

    /// Why a family `name` of type `kind` cannot be served beside the others' (an exposed name
    /// of it belongs to a family of another name or type), or `None` when it can (then its
    /// series join the owner's family).
    pub fn conflict(&self, name: &str, kind: MetricType) -> Option<String> {
        let probe = MetricFamily::new(name, "", kind);
        let all = self
            .by_owner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for n in probe.exposed_names() {
            for (owner, names) in all.iter() {
                if let Some((family, k)) = names.get(&n)
                    && (family != name || *k != kind)
                {
                    return Some(format!(
                        "{n:?} is exposed by {owner} as part of the {k} {family:?}; pushed as part of the {kind} {name:?}"
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
        assert_eq!(names.conflict("a_up", MetricType::Gauge), None);
        assert_eq!(names.conflict("a_errors", MetricType::Counter), None);
        let e = names.conflict("a_up", MetricType::Counter).unwrap();
        assert!(e.contains("collector a") && e.contains("gauge"), "{e}");
        // A gauge named like the counter's sample clashes with it.
        assert!(
            names
                .conflict("a_errors_total", MetricType::Gauge)
                .is_some()
        );
        assert_eq!(names.conflict("other", MetricType::Gauge), None);
        // A new record replaces the owner's names.
        names.record("collector a", &[]);
        assert_eq!(names.conflict("a_up", MetricType::Counter), None);
        // A source that is gone (disabled by a reload) owns nothing.
        names.record("collector b", &[MetricFamily::gauge("b_up", "")]);
        assert!(names.conflict("b_up", MetricType::Counter).is_some());
        names.retain(&["the host".to_owned()]);
        assert_eq!(names.conflict("b_up", MetricType::Counter), None);
    }
}
