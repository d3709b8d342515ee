//! Configuration of the app-status collector, and the seed's environment variables.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The collector's configuration (`[collectors.app-status]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Static targets fetched on every scrape. Empty: the seed's target `default`, from
    /// `TARGET_HOST`, `TARGET_PORT`, `TARGET_METRICS` and `TARGET_SCHEME`.
    pub targets: Vec<TargetConfig>,
    /// Named modules: request settings and mappings. `default` is built in (the seed's
    /// mapping) unless defined here.
    pub modules: BTreeMap<String, ModuleConfig>,
    /// Minimum interval between two fetches of one target (seed: `POLLING_INTERVAL_SECONDS`,
    /// default 5 s); a scrape arriving sooner is served the previous result. `0`: every scrape.
    #[serde(
        default,
        deserialize_with = "tidegauge_core::duration::deserialize_opt"
    )]
    pub min_interval: Option<Duration>,
    /// `/probe` settings.
    pub probe: ProbeConfig,
}

/// One static target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Name, the value of the `target` label of the status metrics.
    pub name: String,
    /// Full URL of the status route.
    pub url: String,
    /// Module to use.
    #[serde(default = "default_module")]
    pub module: String,
    /// Labels added to this target's mapped series; they tell targets apart.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_module() -> String {
    "default".to_owned()
}

/// `/probe` settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// When non-empty, only targets starting with one of these prefixes may be probed (403
    /// otherwise), so the exporter cannot be used to reach arbitrary hosts.
    pub allow: Vec<String>,
}

/// Request settings and mappings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// Upper bound of one fetch (the scrape budget may cut it shorter).
    #[serde(
        default = "default_timeout",
        deserialize_with = "tidegauge_core::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Largest accepted body in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_size: usize,
    /// Extra request headers; `Accept: application/json` unless overridden.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Accepted statuses; empty: any 2xx.
    #[serde(default)]
    pub valid_status: Vec<u16>,
    /// A body switches the request to POST.
    #[serde(default)]
    pub body: Option<String>,
    /// Bearer token, literally.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// Bearer token read from this file at start-up.
    #[serde(default)]
    pub bearer_token_file: Option<String>,
    /// Bearer token read from this environment variable at start-up.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// Basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuthConfig>,
    /// The mappings.
    #[serde(default)]
    pub metrics: Vec<MappingConfig>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_body() -> usize {
    1024 * 1024
}

/// Basic authentication; the password from exactly one of the three sources.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// User name.
    pub username: String,
    /// Password, literally.
    #[serde(default)]
    pub password: Option<String>,
    /// Password read from this file at start-up.
    #[serde(default)]
    pub password_file: Option<String>,
    /// Password read from this environment variable at start-up.
    #[serde(default)]
    pub password_env: Option<String>,
}

/// The type of a mapped family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappedType {
    /// Gauge (default).
    #[default]
    Gauge,
    /// Counter; the name is written without `_total`, the host appends it.
    Counter,
    /// Untyped.
    Untyped,
}

/// One mapping: a JSON path to a metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Metric name.
    pub name: String,
    /// Path of the value (relative to the element when `each` is set).
    pub path: String,
    /// Type.
    #[serde(default, rename = "type")]
    pub kind: MappedType,
    /// Help text; defaults to the name.
    #[serde(default)]
    pub help: Option<String>,
    /// Labels: a value starting with `$` is a path, anything else static text.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Iterate over an object's members or an array's elements: one series each.
    #[serde(default)]
    pub each: Option<String>,
    /// With `each`: label holding the member's key (or element's index).
    #[serde(default)]
    pub key_label: Option<String>,
    /// Value conversion.
    #[serde(default)]
    pub convert: Convert,
}

/// How a JSON value becomes a number.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Convert {
    /// JSON number, bool (1/0) or numeric string.
    #[default]
    Number,
    /// RFC 3339 / ISO-8601 string, or an epoch number in seconds (`Millis`: milliseconds).
    Timestamp {
        /// Epoch numbers are milliseconds.
        millis: bool,
    },
    /// String looked up in a table.
    Map {
        /// The table.
        table: BTreeMap<String, f64>,
        /// Value for strings not in the table; without it they are an `unknown_state` error.
        default: Option<f64>,
    },
    /// One series per state, 1 for the current.
    States {
        /// The states.
        states: Vec<String>,
        /// Label holding the state; defaults to the metric name.
        label: Option<String>,
    },
    /// First capture group of a regular expression, times `scale`.
    Regex {
        /// The expression.
        pattern: String,
        /// Factor.
        scale: f64,
    },
    /// Number times a factor.
    Scale(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConvertTable {
    map: Option<BTreeMap<String, f64>>,
    default: Option<f64>,
    states: Option<Vec<String>>,
    label: Option<String>,
    timestamp: Option<String>,
    regex: Option<String>,
    scale: Option<f64>,
}

impl<'de> Deserialize<'de> for Convert {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Convert;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"number\", \"timestamp\", or a table with one of map, states, timestamp, regex, scale")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Convert, E> {
                match s {
                    "number" => Ok(Convert::Number),
                    "timestamp" => Ok(Convert::Timestamp { millis: false }),
                    other => Err(E::custom(format!(
                        "unknown converter {other:?}: expected \"number\" or \"timestamp\", or a table (map, states, regex, scale)"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Convert, A::Error> {
                let t = ConvertTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let kinds = [
                    t.map.is_some(),
                    t.states.is_some(),
                    t.timestamp.is_some(),
                    t.regex.is_some(),
                ]
                .iter()
                .filter(|b| **b)
                .count();
                if kinds > 1 {
                    return Err(de::Error::custom(
                        "a converter takes only one of map, states, timestamp, regex",
                    ));
                }
                let only = |ok: bool, what: &str| {
                    if ok {
                        Ok(())
                    } else {
                        Err(de::Error::custom(what))
                    }
                };
                if let Some(table) = t.map {
                    only(
                        t.states.is_none() && t.label.is_none() && t.scale.is_none(),
                        "map takes only `default` besides the table",
                    )?;
                    return Ok(Convert::Map {
                        table,
                        default: t.default,
                    });
                }
                only(t.default.is_none(), "`default` belongs to a map converter")?;
                if let Some(states) = t.states {
                    only(t.scale.is_none(), "states take only `label`")?;
                    if states.is_empty() {
                        return Err(de::Error::custom("states must list at least one state"));
                    }
                    return Ok(Convert::States {
                        states,
                        label: t.label,
                    });
                }
                only(t.label.is_none(), "`label` belongs to a states converter")?;
                if let Some(unit) = t.timestamp {
                    only(t.scale.is_none(), "timestamp takes no scale")?;
                    return match unit.as_str() {
                        "s" => Ok(Convert::Timestamp { millis: false }),
                        "ms" => Ok(Convert::Timestamp { millis: true }),
                        other => Err(de::Error::custom(format!(
                            "timestamp unit {other:?}: expected \"s\" or \"ms\""
                        ))),
                    };
                }
                if let Some(pattern) = t.regex {
                    return Ok(Convert::Regex {
                        pattern,
                        scale: t.scale.unwrap_or(1.0),
                    });
                }
                if let Some(f) = t.scale {
                    return Ok(Convert::Scale(f));
                }
                Err(de::Error::custom(
                    "empty converter table: give one of map, states, timestamp, regex, scale",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// The built-in `default` module: the seed exporter's mapping.
pub fn seed_module() -> ModuleConfig {
    let m = |path: &str, name: &str, help: &str| MappingConfig {
        name: name.into(),
        path: path.into(),
        kind: MappedType::Gauge,
        help: Some(help.into()),
        labels: BTreeMap::new(),
        each: None,
        key_label: None,
        convert: Convert::Number,
    };
    let mut health = m("$.health", "app_health", "Health");
    health.convert = Convert::States {
        states: vec!["healthy".into(), "unhealthy".into()],
        label: Some("app_health".into()),
    };
    ModuleConfig {
        timeout: default_timeout(),
        max_body_size: default_max_body(),
        headers: BTreeMap::new(),
        valid_status: Vec::new(),
        body: None,
        bearer_token: None,
        bearer_token_file: None,
        bearer_token_env: None,
        basic_auth: None,
        metrics: vec![
            m(
                "$.current_requests",
                "app_requests_current",
                "Current requests",
            ),
            m(
                "$.pending_requests",
                "app_requests_pending",
                "Pending requests",
            ),
            m("$.total_uptime", "app_uptime", "Uptime"),
            health,
        ],
    }
}

/// A configuration or environment error, naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The seed exporter's environment variables, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedEnv {
    /// `{TARGET_SCHEME}://{TARGET_HOST}:{TARGET_PORT}/{TARGET_METRICS}`.
    pub url: String,
    /// `POLLING_INTERVAL_SECONDS`, when set.
    pub min_interval: Option<Duration>,
}

impl SeedEnv {
    /// `POLLING_INTERVAL_SECONDS`, when set: a non-negative number of seconds.
    pub fn polling_interval(
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(raw) = env("POLLING_INTERVAL_SECONDS") else {
            return Ok(None);
        };
        let bad = || {
            ConfigError(format!(
                "POLLING_INTERVAL_SECONDS={raw:?}: expected a non-negative number of seconds"
            ))
        };
        let secs: f64 = raw.trim().parse().map_err(|_| bad())?;
        if !secs.is_finite() || secs < 0.0 {
            return Err(bad());
        }
        Duration::try_from_secs_f64(secs)
            .map(Some)
            .map_err(|_| bad())
    }

    /// Reads the variables through `env` (so tests need not touch the process environment).
    pub fn read(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str, d: &str| env(k).unwrap_or_else(|| d.to_owned());
        let scheme = get("TARGET_SCHEME", "http");
        if scheme != "http" && scheme != "https" {
            return Err(ConfigError(format!(
                "TARGET_SCHEME={scheme:?}: expected http or https"
            )));
        }
        let host = get("TARGET_HOST", "localhost");
        if host.is_empty() || host.contains(['/', ' ', '?', '#']) {
            return Err(ConfigError(format!(
                "TARGET_HOST={host:?}: expected a host name or address"
            )));
        }
        let port_raw = get("TARGET_PORT", "8000");
        let port: u16 = port_raw.trim().parse().map_err(|_| {
            ConfigError(format!(
                "TARGET_PORT={port_raw:?}: expected a port number (1-65535)"
            ))
        })?;
        if port == 0 {
            return Err(ConfigError(
                "TARGET_PORT=0: expected a port number (1-65535)".into(),
            ));
        }
        let path = get("TARGET_METRICS", "status");
        let min_interval = Self::polling_interval(env)?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Self {
            url: format!("{scheme}://{host}:{port}/{}", path.trim_start_matches('/')),
            min_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn seed_defaults() {
        let s = SeedEnv::read(&env(&[])).unwrap();
        assert_eq!(s.url, "http://localhost:8000/status");
        assert_eq!(s.min_interval, None);
    }

    #[test]
    fn leading_slash_is_stripped() {
        let s = SeedEnv::read(&env(&[
            ("TARGET_METRICS", "/status"),
            ("TARGET_HOST", "node-app"),
            ("TARGET_PORT", "9000"),
        ]))
        .unwrap();
        assert_eq!(s.url, "http://node-app:9000/status");
    }

    #[test]
    fn bad_env_names_the_variable() {
        let e = SeedEnv::read(&env(&[("TARGET_PORT", "abc")])).unwrap_err();
        assert!(e.0.contains("TARGET_PORT"), "{e}");
        for bad in ["-1", "soon", "1e300", "inf"] {
            let e = SeedEnv::read(&env(&[("POLLING_INTERVAL_SECONDS", bad)])).unwrap_err();
            assert!(e.0.contains("POLLING_INTERVAL_SECONDS"), "{e}");
        }
        let e = SeedEnv::read(&env(&[("TARGET_SCHEME", "ftp")])).unwrap_err();
        assert!(e.0.contains("TARGET_SCHEME"), "{e}");
    }

    #[test]
    fn converters_parse() {
        #[derive(Deserialize)]
        struct W {
            c: Convert,
        }
        let p = |s: &str| toml::from_str::<W>(s).map(|w| w.c);
        assert_eq!(p("c = \"number\"").unwrap(), Convert::Number);
        assert_eq!(
            p("c = { timestamp = \"ms\" }").unwrap(),
            Convert::Timestamp { millis: true }
        );
        assert_eq!(p("c = { scale = 0.001 }").unwrap(), Convert::Scale(0.001));
        assert!(matches!(
            p("c = { map = { a = 1 }, default = 0 }").unwrap(),
            Convert::Map {
                default: Some(_),
                ..
            }
        ));
        assert!(
            p("c = \"nope\"")
                .unwrap_err()
                .to_string()
                .contains("unknown converter")
        );
        assert!(p("c = { states = [] }").is_err());
        assert!(p("c = { map = { a = 1 }, states = [\"x\"] }").is_err());
        assert!(p("c = { bogus = 1 }").is_err());
        assert!(p("c = { default = 1 }").is_err());
    }
}
