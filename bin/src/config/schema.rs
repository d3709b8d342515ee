//! The host's configuration keys: `[web]`, `[scrape]`, `[log]`, and the host keys of each
//! `[collectors.NAME]` table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use figment::value::{Dict, Value};
use serde::Deserialize;
use tidegauge_server::CollectorSettings;
use tidegauge_server::bearer::AuthConfig;

/// Default listen address: the seed status exporter's port, so its scrape jobs keep working.
pub const DEFAULT_LISTEN: &str = ":9877";

/// A configuration problem, reported with exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        // figment reports every error it collected; name them all, without its profile prefix.
        let all: Vec<String> = e
            .into_iter()
            .map(|e| {
                e.to_string()
                    .replace("for key \"default.", "for key \"")
                    .replace("for key \"global.", "for key \"")
            })
            .collect();
        Self(all.join("; "))
    }
}

impl From<tidegauge_core::BuildError> for ConfigError {
    fn from(e: tidegauge_core::BuildError) -> Self {
        Self(e.0)
    }
}

/// `[web]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Addresses to listen on (`:9877`, `127.0.0.1:9877`, `[::1]:9877`).
    pub listen_addresses: Vec<String>,
    /// Path of the metrics route.
    pub telemetry_path: String,
    /// Requests to `/metrics`, `/probe` and `/` in flight at once; 0 = unlimited.
    pub max_requests: usize,
    /// Leave the host's own `process_*` series out of `/metrics`.
    pub disable_exporter_metrics: bool,
    /// exporter-toolkit web configuration file (basic auth, headers, rate limit).
    pub config_file: Option<PathBuf>,
    /// `POST /-/reload` is served.
    pub enable_lifecycle: bool,
    /// A request's headers must arrive within this.
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub read_header_timeout: Duration,
    /// A request's body must arrive within this.
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub read_timeout: Duration,
    /// A connection idle this long is closed.
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Whether that file configures basic auth (read at load).
    #[serde(skip)]
    pub basic_auth: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen_addresses: vec![DEFAULT_LISTEN.to_owned()],
            telemetry_path: "/metrics".to_owned(),
            max_requests: 40,
            disable_exporter_metrics: false,
            config_file: None,
            enable_lifecycle: true,
            read_header_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_connections: 1024,
            basic_auth: false,
        }
    }
}

/// `[scrape]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    /// Timeout when Prometheus sends no scrape-timeout header.
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub default_timeout: Duration,
    /// Subtracted from the scrape timeout (never more than half of it).
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub timeout_offset: Duration,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(10),
            timeout_offset: Duration::from_millis(500),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The file, environment and flags merged, before collectors are resolved.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[web]`.
    #[serde(default)]
    pub web: WebConfig,
    /// `[scrape]`.
    #[serde(default)]
    pub scrape: ScrapeConfig,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[auth]`: bearer credentials.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[labels]`: constant labels added to every series.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `[collectors.NAME]`, as given.
    #[serde(default)]
    pub collectors: BTreeMap<String, Dict>,
    /// `[remote_write]`.
    #[serde(default)]
    pub remote_write: Option<tidegauge_remote_write::RemoteWriteConfig>,
}

/// Host-level settings of one collector, read from its table beside its own keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostKeys {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `timeout`: cap on the collector's budget.
    #[serde(
        default,
        deserialize_with = "tidegauge_core::duration::deserialize_opt"
    )]
    pub timeout: Option<Duration>,
    /// `cache_ttl`.
    #[serde(
        default,
        deserialize_with = "tidegauge_core::duration::deserialize_opt"
    )]
    pub cache_ttl: Option<Duration>,
}

impl HostKeys {
    /// The keys the host reads from a collector's table.
    pub const NAMES: [&'static str; 3] = ["enabled", "timeout", "cache_ttl"];
}

/// One collector's resolved configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Whether it runs.
    pub enabled: bool,
    /// Host settings (timeout cap, cache TTL).
    pub settings: CollectorSettings,
    /// The collector's own keys.
    pub own: Value,
}

/// The whole resolved configuration.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// `[web]`.
    pub web: WebConfig,
    /// `[scrape]`.
    pub scrape: ScrapeConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[labels]` and `--label`, in name order.
    pub labels: Vec<(String, String)>,
    /// Per collector, for every compiled-in collector.
    pub collectors: BTreeMap<String, CollectorConfig>,
    /// `[remote_write]`, checked.
    pub remote_write: Option<tidegauge_remote_write::RemoteWriteConfig>,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}
