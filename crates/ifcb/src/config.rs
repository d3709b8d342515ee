//! Configuration of the ifcb collector (`[collectors.ifcb]`).

use std::time::Duration;

use serde::Deserialize;

/// The collector's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Dashboards to read.
    pub dashboards: Vec<DashboardConfig>,
    /// How old a dataset's values may be before a scrape refreshes them (the original's polling
    /// interval, `--interval`).
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub interval: Duration,
    /// Age of the newest bin above which a dataset is not up to date (`--lag-threshold-seconds`).
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub lag_threshold: Duration,
    /// Window for time series and the product scan (`--lookback-seconds`).
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub lookback: Duration,
    /// Total time per upstream request (`--request-timeout-seconds`).
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub request_timeout: Duration,
    /// Requests in flight per dashboard (`--max-concurrency`, at most 4).
    pub max_concurrency: usize,
    /// `has_products` calls per dataset per refresh (`--max-scan-bins`).
    pub max_scan_bins: usize,
    /// Largest accepted response body, in bytes.
    pub max_body_size: usize,
    /// Refresh every dataset once at start-up instead of at the first scrape.
    pub refresh_at_start: bool,
    /// While a dataset's newest bin is unchanged, its nine time series are fetched again only
    /// this often (they can change only when bins are added, skipped or re-processed).
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub series_refresh: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dashboards: Vec::new(),
            interval: Duration::from_secs(900),
            lag_threshold: Duration::from_secs(86_400),
            lookback: Duration::from_secs(1_209_600),
            request_timeout: Duration::from_secs(35),
            max_concurrency: 2,
            max_scan_bins: 20,
            max_body_size: 64 * 1024 * 1024,
            refresh_at_start: false,
            series_refresh: Duration::from_secs(3600),
        }
    }
}

/// One dashboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// API base URL, ending in `/api`.
    pub url: String,
    /// Value of the `dashboard` label; defaults to the URL's host.
    #[serde(default)]
    pub name: Option<String>,
    /// Read only these datasets (skips discovery through `filter_options`).
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Never read these datasets.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl DashboardConfig {
    /// Parses the seed's `--base-url` value: `URL` or `NAME=URL`.
    pub fn from_flag(value: &str) -> Self {
        match value.split_once('=') {
            Some((name, url)) if !name.is_empty() && !name.contains(['/', ':']) => Self {
                url: url.to_owned(),
                name: Some(name.to_owned()),
                datasets: Vec::new(),
                exclude: Vec::new(),
            },
            _ => Self {
                url: value.to_owned(),
                name: None,
                datasets: Vec::new(),
                exclude: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_flag_forms() {
        let d = DashboardConfig::from_flag("caloos=https://ifcb.caloos.org/api");
        assert_eq!(d.name.as_deref(), Some("caloos"));
        assert_eq!(d.url, "https://ifcb.caloos.org/api");
        let d = DashboardConfig::from_flag("https://ifcb.caloos.org/api?x=1");
        assert_eq!(d.name, None);
        assert_eq!(d.url, "https://ifcb.caloos.org/api?x=1");
    }
}
