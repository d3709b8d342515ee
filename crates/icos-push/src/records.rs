//! How pushed state is kept in the store: one record per ICOS metric (by its base name) and
//! one per Pushgateway group (by its grouping key), CBOR-encoded, so NaN and infinities keep
//! their values. Groups hold core's snapshot types. Earlier formats are upgraded record by
//! record when a store is opened (see [`crate::store::Store::open`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::Metric;
use crate::pushgateway::STORE_PREFIX;

/// The store format this release writes. 0: JSON records with floats as text (release 0.1.0);
/// 1: CBOR records of core's types; 2: pushed families keep the names they were pushed with
/// (format 1 stored a counter without `_total` and served it with one); 3: model-metric
/// definitions and trained models join them (an older release must not read those as metrics).
pub const FORMAT: u64 = 3;

/// A record's bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// A record from its bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    ciborium::from_reader(bytes).map_err(|e| e.to_string())
}

/// Whether a store key names a Pushgateway group.
pub fn is_group(key: &str) -> bool {
    key.starts_with(STORE_PREFIX)
}

/// What a store record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An ICOS metric.
    Metric,
    /// A Pushgateway group.
    Group,
    /// A model-metric definition.
    Definition,
    /// A locally trained model.
    Trained,
}

/// The kind of record under a store key.
pub fn kind(key: &str) -> Kind {
    if is_group(key) {
        Kind::Group
    } else if key.starts_with(crate::models::DEFINITION_PREFIX) {
        Kind::Definition
    } else if key.starts_with(crate::models::TRAINED_PREFIX) {
        Kind::Trained
    } else {
        Kind::Metric
    }
}

/// Upgrades one record from format `from` to `from + 1`.
pub fn upgrade(from: u64, key: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    match from {
        0 if is_group(key) => {
            let old: v0::Group = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            encode(&old.upgrade())
        }
        0 => {
            // The registry's model is unchanged; its floats were text and now are numbers
            // (`Metric` reads both).
            let m: Metric = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            encode(&m)
        }
        1 if is_group(key) => {
            let mut group: crate::pushgateway::Group = decode(bytes)?;
            for f in &mut group.families {
                // Format 1 served a counter `x` as `x_total`: that stays its name.
                if f.kind == tidegauge_core::MetricType::Counter && !f.naming.is_exact() {
                    f.name.push_str("_total");
                }
                f.naming = tidegauge_core::Naming::Exact;
            }
            encode(&group)
        }
        1 | 2 => Ok(bytes.to_vec()),
        _ => Err(format!("no upgrade from store format {from}")),
    }
}

/// Format 0 of a Pushgateway group (release 0.1.0), read only to upgrade it.
mod v0 {
    use serde::Deserialize;
    use tidegauge_core::{Labels, MetricFamily, MetricType, Sample, Value};

    /// A float kept as text.
    #[derive(Debug, Clone, Copy)]
    pub struct F(pub f64);

    impl<'de> Deserialize<'de> for F {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            s.parse().map(F).map_err(serde::de::Error::custom)
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum StoredValue {
        Number(F),
        Histogram {
            buckets: Vec<(F, u64)>,
            sum: F,
            count: u64,
        },
        Summary {
            quantiles: Vec<(F, F)>,
            sum: F,
            count: u64,
        },
    }

    #[derive(Debug, Deserialize)]
    pub struct StoredFamily {
        pub name: String,
        pub help: String,
        pub kind: String,
        pub series: Vec<(Labels, StoredValue)>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Group {
        pub key: Labels,
        pub families: Vec<StoredFamily>,
        pub push_time: F,
        pub failure_time: F,
        pub expires: Option<F>,
    }

    impl Group {
        pub fn upgrade(self) -> crate::pushgateway::Group {
            crate::pushgateway::Group {
                key: self.key,
                families: self.families.into_iter().map(family).collect(),
                push_time: self.push_time.0,
                failure_time: self.failure_time.0,
                expires: self.expires.map(|e| e.0),
            }
        }
    }

    fn family(f: StoredFamily) -> MetricFamily {
        let kind = match f.kind.as_str() {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            _ => MetricType::Untyped,
        };
        let mut out = MetricFamily::new(f.name, f.help, kind);
        for (labels, v) in f.series {
            let value = match v {
                StoredValue::Number(n) => Value::Number(n.0),
                StoredValue::Histogram {
                    buckets,
                    sum,
                    count,
                } => Value::Histogram(Box::new(tidegauge_core::Histogram {
                    buckets: buckets.into_iter().map(|(le, c)| (le.0, c)).collect(),
                    sum: sum.0,
                    count,
                })),
                StoredValue::Summary {
                    quantiles,
                    sum,
                    count,
                } => Value::Summary(Box::new(tidegauge_core::Summary {
                    quantiles: quantiles.into_iter().map(|(q, v)| (q.0, v.0)).collect(),
                    sum: sum.0,
                    count,
                })),
            };
            out.samples.push(Sample {
                labels: labels.into(),
                value,
                created: None,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pushgateway::Group;
    use tidegauge_core::Value;

    #[test]
    fn non_finite_values_survive_a_record() {
        let mut g = Group {
            key: vec![("job".into(), "j".into())],
            families: vec![tidegauge_core::MetricFamily::gauge("g", "")],
            push_time: 1.5,
            failure_time: 0.0,
            expires: None,
        };
        g.families[0].push(vec![], f64::NAN);
        g.families[0].push(vec![("a".into(), "b".into())], f64::INFINITY);
        let back: Group = decode(&encode(&g).unwrap()).unwrap();
        let values: Vec<f64> = back.families[0]
            .samples
            .iter()
            .map(|s| match s.value {
                tidegauge_core::Value::Number(n) => n,
                _ => 0.0,
            })
            .collect();
        assert!(
            values[0].is_nan() && values[1] == f64::INFINITY,
            "{values:?}"
        );
    }

    /// Samples store their labels as a `LabelSet` and box histogram and summary values; records
    /// keep the shapes that stores written before hold, so both read each other's.
    #[test]
    fn records_keep_the_shape_of_earlier_stores() {
        let pairs: tidegauge_core::Labels = vec![
            ("job".into(), "j;1,2".into()),
            ("instance".into(), String::new()),
        ];
        let set = tidegauge_core::LabelSet::from(&pairs);
        assert_eq!(encode(&set).unwrap(), encode(&pairs).unwrap());
        let back: tidegauge_core::LabelSet = decode(&encode(&pairs).unwrap()).unwrap();
        assert_eq!(back, set);
        // Boxed histograms and summaries are recorded as the struct variants they were.
        #[derive(serde::Serialize)]
        enum Before {
            Histogram {
                buckets: Vec<(f64, u64)>,
                sum: f64,
                count: u64,
            },
            Summary {
                quantiles: Vec<(f64, f64)>,
                sum: f64,
                count: u64,
            },
        }
        let h = Before::Histogram {
            buckets: vec![(0.5, 1), (1.0, 3)],
            sum: 2.5,
            count: 4,
        };
        let q = Before::Summary {
            quantiles: vec![(0.5, 0.1)],
            sum: 1.0,
            count: 2,
        };
        let (hv, qv) = (
            Value::Histogram(Box::new(tidegauge_core::Histogram {
                buckets: vec![(0.5, 1), (1.0, 3)],
                sum: 2.5,
                count: 4,
            })),
            Value::Summary(Box::new(tidegauge_core::Summary {
                quantiles: vec![(0.5, 0.1)],
                sum: 1.0,
                count: 2,
            })),
        );
        assert_eq!(encode(&hv).unwrap(), encode(&h).unwrap());
        assert_eq!(encode(&qv).unwrap(), encode(&q).unwrap());
        assert_eq!(decode::<Value>(&encode(&h).unwrap()).unwrap(), hv);
        let empty: tidegauge_core::Labels = vec![];
        let back: tidegauge_core::LabelSet = decode(&encode(&empty).unwrap()).unwrap();
        assert!(back.is_empty());
    }
}
