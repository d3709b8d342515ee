//! How the host builds ifcb: on when dashboards are configured, and the IFCB exporter's command
//! line (both released versions) kept working.

use std::sync::Arc;

use tidegauge_core::HostServices;
use tidegauge_core::factory::clap::{Arg, ArgAction, value_parser};
use tidegauge_core::factory::{BuildError, Inputs, Legacy, Port, Table, Value};

use crate::{Config, DashboardConfig, Ifcb, NAME};

/// The IFCB exporter listened here; its command line without `--port` still does.
pub const ORIGINAL_PORT: u16 = 8000;

const HEADING: &str = "IFCB exporter compatibility";

/// The ifcb collector's entry point for the host.
#[derive(Debug, Default, Clone, Copy)]
pub struct Factory;

fn seconds(id: &'static str, help: &'static str) -> Arg {
    Arg::new(id)
        .long(id)
        .value_name("SECONDS")
        .value_parser(value_parser!(u64))
        .help(help)
        .help_heading(HEADING)
}

fn count(id: &'static str, help: &'static str) -> Arg {
    Arg::new(id)
        .long(id)
        .value_name("N")
        .value_parser(value_parser!(u64))
        .help(help)
        .help_heading(HEADING)
}

/// Python's logging level names, any case, as the host's tracing levels.
fn python_level(name: &str) -> Option<&'static str> {
    Some(match name.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" | "FATAL" | "ERROR" => "error",
        "WARNING" | "WARN" => "warn",
        "INFO" => "info",
        "DEBUG" => "debug",
        "NOTSET" => "trace",
        _ => return None,
    })
}

impl tidegauge_core::Factory for Factory {
    type Config = Config;
    type Collector = Ifcb;

    fn name(&self) -> &'static str {
        NAME
    }

    /// Without dashboards ifcb has nothing to read.
    fn enabled_by_default(&self, table: Option<&Table>) -> bool {
        table.is_some_and(|t| t.contains_key("dashboards"))
    }

    fn flags(&self) -> Vec<Arg> {
        vec![
            Arg::new("base-url")
                .long("base-url")
                .value_name("[NAME=]URL")
                .action(ArgAction::Append)
                .help("IFCB dashboard API base ending in /api; repeatable; enables the ifcb collector")
                .help_heading(HEADING),
            seconds(
                "lag-threshold-seconds",
                "Newest-bin age above which a dataset is not up to date (default 86400)",
            ),
            seconds(
                "lookback-seconds",
                "Window for time series and the product scan (default 1209600)",
            ),
            count(
                "lookback-bins",
                "Newest bins scanned for products (the later exporter's name for --max-scan-bins)",
            )
            .conflicts_with("max-scan-bins"),
            seconds(
                "interval",
                "How old a dataset's values may be before a scrape refreshes them (default 900)",
            ),
            seconds(
                "request-timeout-seconds",
                "Total time per dashboard request (default 35)",
            ),
            count(
                "max-concurrency",
                "Requests in flight per dashboard, 1-4 (default 2)",
            ),
            count(
                "max-scan-bins",
                "has_products calls per dataset per refresh (default 20)",
            ),
            Arg::new("datasets")
                .long("datasets")
                .value_name("A,B")
                .help("Read only these datasets (skips discovery)")
                .help_heading(HEADING),
            Arg::new("refresh-at-start")
                .long("refresh-at-start")
                .action(ArgAction::SetTrue)
                .help("Refresh every dataset once at start-up")
                .help_heading(HEADING),
            Arg::new("port")
                .long("port")
                .value_name("PORT")
                .value_parser(value_parser!(u16).range(1..))
                .help("Listen port (all interfaces), unless --web.listen-address is given; 8000 with --base-url")
                .help_heading(HEADING),
            Arg::new("log-level")
                .long("log-level")
                .value_name("LEVEL")
                .help("DEBUG, INFO, WARNING, ERROR or CRITICAL (any case), as --log.level")
                .help_heading(HEADING),
        ]
    }

    fn legacy(&self, inputs: Inputs<'_>) -> Result<Legacy, String> {
        let m = inputs.flags;
        let mut legacy = Legacy::default();
        let datasets = m.get_one::<String>("datasets");
        match m.get_many::<String>("base-url") {
            None if datasets.is_some() => {
                return Err("--datasets applies to the dashboards given with --base-url; give --base-url too (or set datasets per dashboard in the file)".into());
            }
            None => {}
            Some(urls) => {
                let datasets: Option<Vec<Value>> = datasets.map(|d| {
                    d.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::from(s.to_owned()))
                        .collect()
                });
                let dashboards: Vec<Value> = urls
                    .map(|u| {
                        let d = DashboardConfig::from_flag(u);
                        let mut t = Table::new();
                        t.insert("url".into(), Value::from(d.url));
                        if let Some(name) = d.name {
                            t.insert("name".into(), Value::from(name));
                        }
                        if let Some(ds) = &datasets {
                            t.insert("datasets".into(), Value::from(ds.clone()));
                        }
                        Value::from(t)
                    })
                    .collect();
                legacy.set(NAME, "dashboards", dashboards, "flag --base-url");
                legacy.takes_over = true;
                legacy.default_port = Some(ORIGINAL_PORT);
            }
        }
        for (flag, key) in [
            ("lag-threshold-seconds", "lag_threshold"),
            ("lookback-seconds", "lookback"),
            ("interval", "interval"),
            ("request-timeout-seconds", "request_timeout"),
            ("max-concurrency", "max_concurrency"),
            ("max-scan-bins", "max_scan_bins"),
            ("lookback-bins", "max_scan_bins"),
        ] {
            if let Some(v) = m.get_one::<u64>(flag) {
                legacy.set(NAME, key, *v, format!("flag --{flag}"));
            }
        }
        if m.get_flag("refresh-at-start") {
            legacy.set(NAME, "refresh_at_start", true, "flag --refresh-at-start");
        }
        if let Some(p) = m.get_one::<u16>("port") {
            legacy.ports.push(Port {
                port: *p,
                source: "flag --port".into(),
                from_flag: true,
            });
        }
        if let Some(level) = m.get_one::<String>("log-level") {
            let mapped = python_level(level).ok_or_else(|| {
                format!("--log-level {level:?}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
            })?;
            legacy.set_host("log.level", mapped, "flag --log-level");
        }
        Ok(legacy)
    }

    fn build(
        &self,
        config: Config,
        services: &HostServices,
        _previous: Option<&Arc<Ifcb>>,
    ) -> Result<Arc<Ifcb>, BuildError> {
        Ifcb::new(&config, services.http.clone())
            .map(|i| Arc::new(i.with_clock(Arc::clone(&services.clock))))
            .map_err(|e| BuildError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::python_level;

    #[test]
    fn python_level_names() {
        assert_eq!(python_level("warning"), Some("warn"));
        assert_eq!(python_level("DEBUG"), Some("debug"));
        assert_eq!(python_level("Critical"), Some("error"));
        assert_eq!(python_level("loud"), None);
    }
}
