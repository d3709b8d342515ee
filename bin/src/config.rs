//! Configuration: built-in defaults, then `tidegauge.toml` (or `--config FILE`), then
//! `TIDEGAUGE_*` environment variables, then command-line flags.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use serde::Deserialize;
use tidegauge_server::CollectorSettings;

/// Every collector tidegauge knows, compiled in or not.
pub const KNOWN_COLLECTORS: &[&str] = &[
    "app-status",
    "icos-push",
    "ifcb",
    "sensor-bridge",
    // new-collector: known
];

/// Collectors tidegauge will have that no version provides yet (no cargo feature exists).
const UNRELEASED: &[&str] = &["sensor-bridge"];

/// Why a known collector is absent from this binary.
pub fn not_compiled(name: &str) -> String {
    if UNRELEASED.contains(&name) {
        format!("the {name} collector is not available in this version of tidegauge")
    } else {
        format!(
            "the {name} collector is not compiled into this binary (rebuild with --features {name})"
        )
    }
}

/// Whether this binary was built with the collector.
pub fn compiled_in(name: &str) -> bool {
    match name {
        "app-status" => cfg!(feature = "app-status"),
        "ifcb" => cfg!(feature = "ifcb"),
        "icos-push" => cfg!(feature = "icos-push"),
        // new-collector: compiled
        _ => false,
    }
}

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

/// One value set from outside the file (a flag or a seed variable), named in errors.
struct Setting {
    key: &'static str,
    value: Value,
    source: String,
}

impl Setting {
    fn new(key: &'static str, value: impl Into<Value>, source: impl Into<String>) -> Self {
        Self {
            key,
            value: value.into(),
            source: source.into(),
        }
    }
}

impl figment::Provider for Setting {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.source.clone())
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, Dict>, figment::Error> {
        let nested = figment::util::nest(self.key, self.value.clone());
        let dict = nested.into_dict().unwrap_or_default();
        Ok(figment::Profile::Global.collect(dict))
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
    /// Requests to `/metrics` and `/probe` in flight at once; 0 = unlimited.
    pub max_requests: usize,
    /// Leave the host's own `process_*` series out of `/metrics`.
    pub disable_exporter_metrics: bool,
    /// exporter-toolkit web configuration file (basic auth, headers, rate limit).
    pub config_file: Option<PathBuf>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    web: WebConfig,
    #[serde(default)]
    scrape: ScrapeConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    collectors: BTreeMap<String, Dict>,
}

/// Host-level settings of one collector, read from its table beside its own keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostKeys {
    enabled: Option<bool>,
    #[serde(
        default,
        deserialize_with = "tidegauge_core::duration::deserialize_opt"
    )]
    timeout: Option<Duration>,
    #[serde(
        default,
        deserialize_with = "tidegauge_core::duration::deserialize_opt"
    )]
    cache_ttl: Option<Duration>,
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
    /// Per collector, for every compiled-in collector.
    pub collectors: BTreeMap<String, CollectorConfig>,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}

/// The command line.
pub fn command() -> Command {
    let mut cmd = Command::new("tidegauge")
        .version(env!("CARGO_PKG_VERSION"))
        .about("One host binary serving Prometheus metrics from tidegauge collectors.")
        .arg(
            Arg::new("config")
                .long("config")
                .alias("config.file")
                .value_name("FILE")
                .help("Configuration file (default: ./tidegauge.toml when present)"),
        )
        .arg(
            Arg::new("check-config")
                .long("check-config")
                .action(ArgAction::SetTrue)
                .help("Validate the configuration, print it resolved, and exit"),
        )
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .value_name("ADDR")
                .action(ArgAction::Append)
                .help("Address to listen on; repeatable (default :9877)"),
        )
        .arg(
            Arg::new("web.disable-exporter-metrics")
                .long("web.disable-exporter-metrics")
                .action(ArgAction::SetTrue)
                .help("Leave the host's process_* series out of /metrics"),
        )
        .arg(
            Arg::new("web.telemetry-path")
                .long("web.telemetry-path")
                .value_name("PATH")
                .help("Path under which to expose metrics (default /metrics)"),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_name("FILE")
                .help("exporter-toolkit web configuration (YAML): basic auth, headers, rate limit"),
        )
        .arg(
            Arg::new("web.max-requests")
                .long("web.max-requests")
                .value_name("N")
                .value_parser(clap::value_parser!(u64))
                .help("Maximum concurrent scrape requests; 0 = unlimited (default 40)"),
        )
        .arg(
            Arg::new("scrape.default-timeout")
                .long("scrape.default-timeout")
                .value_name("DURATION")
                .help("Scrape timeout when Prometheus sends none (default 10s)"),
        )
        .arg(
            Arg::new("scrape.timeout-offset")
                .long("scrape.timeout-offset")
                .value_name("DURATION")
                .help("Subtracted from the scrape timeout (default 0.5s)"),
        )
        .arg(
            Arg::new("log.level")
                .long("log.level")
                .value_name("LEVEL")
                .help("error, warn, info, debug or trace (default info)"),
        )
        .arg(
            Arg::new("log.format")
                .long("log.format")
                .value_name("FORMAT")
                .help("text or json (default text)"),
        )
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Run only the collectors enabled explicitly"),
        );
    if compiled_in("ifcb") {
        cmd = ifcb_seed_flags(cmd);
    }
    for name in KNOWN_COLLECTORS {
        let suffix = if compiled_in(name) {
            ""
        } else {
            " (not compiled in)"
        };
        cmd = cmd
            .arg(
                Arg::new(format!("collector.{name}"))
                    .long(format!("collector.{name}"))
                    .action(ArgAction::SetTrue)
                    .help(format!("Enable the {name} collector{suffix}")),
            )
            .arg(
                Arg::new(format!("no-collector.{name}"))
                    .long(format!("no-collector.{name}"))
                    .action(ArgAction::SetTrue)
                    .help(format!("Disable the {name} collector")),
            )
            .arg(
                Arg::new(format!("collector.{name}.timeout"))
                    .long(format!("collector.{name}.timeout"))
                    .value_name("DURATION")
                    .help(format!("Cap on the {name} collector's scrape budget")),
            );
    }
    cmd
}

/// The original IFCB exporter's command line, kept working.
fn ifcb_seed_flags(cmd: Command) -> Command {
    let num = |id: &'static str, help: &'static str| {
        Arg::new(id)
            .long(id)
            .value_name("SECONDS")
            .value_parser(clap::value_parser!(u64))
            .help(help)
            .help_heading("IFCB exporter compatibility")
    };
    cmd.arg(
        Arg::new("base-url")
            .long("base-url")
            .value_name("[NAME=]URL")
            .action(ArgAction::Append)
            .help("IFCB dashboard API base ending in /api; repeatable; enables the ifcb collector")
            .help_heading("IFCB exporter compatibility"),
    )
    .arg(num(
        "lag-threshold-seconds",
        "Newest-bin age above which a dataset is not up to date (default 86400)",
    ))
    .arg(num(
        "lookback-seconds",
        "Window for time series and the product scan (default 1209600)",
    ))
    .arg(num(
        "interval",
        "How old a dataset's values may be before a scrape refreshes them (default 900)",
    ))
    .arg(num(
        "request-timeout-seconds",
        "Total time per dashboard request (default 35)",
    ))
    .arg(
        Arg::new("max-concurrency")
            .long("max-concurrency")
            .value_name("N")
            .value_parser(clap::value_parser!(u64))
            .help("Requests in flight per dashboard, 1-4 (default 2)")
            .help_heading("IFCB exporter compatibility"),
    )
    .arg(
        Arg::new("max-scan-bins")
            .long("max-scan-bins")
            .value_name("N")
            .value_parser(clap::value_parser!(u64))
            .help("has_products calls per dataset per refresh (default 20)")
            .help_heading("IFCB exporter compatibility"),
    )
    .arg(
        Arg::new("datasets")
            .long("datasets")
            .value_name("A,B")
            .help("Read only these datasets (skips discovery)")
            .help_heading("IFCB exporter compatibility"),
    )
    .arg(
        Arg::new("refresh-at-start")
            .long("refresh-at-start")
            .action(ArgAction::SetTrue)
            .help("Refresh every dataset once at start-up")
            .help_heading("IFCB exporter compatibility"),
    )
    .arg(
        Arg::new("port")
            .long("port")
            .value_name("PORT")
            .value_parser(clap::value_parser!(u16))
            .help("Listen port (all interfaces), unless --web.listen-address is given")
            .help_heading("IFCB exporter compatibility"),
    )
}

/// Settings from the IFCB exporter's flags.
fn ifcb_seed_settings(m: &ArgMatches) -> Result<Vec<Setting>, ConfigError> {
    let mut out = Vec::new();
    if m.try_get_one::<String>("base-url").is_err() {
        return Ok(out);
    }
    if m.get_many::<String>("base-url").is_none() && flag_value(m, "datasets").is_some() {
        return Err(ConfigError(
            "--datasets applies to the dashboards given with --base-url; give --base-url too (or set datasets per dashboard in the file)".into(),
        ));
    }
    if let Some(urls) = m.get_many::<String>("base-url") {
        let datasets: Option<Vec<Value>> = flag_value(m, "datasets").map(|d| {
            d.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::from(s.to_owned()))
                .collect()
        });
        let dashboards: Vec<Value> = urls
            .map(|u| {
                let d = tidegauge_ifcb_flag::split(u);
                let mut t = Dict::new();
                t.insert("url".into(), Value::from(d.1));
                if let Some(name) = d.0 {
                    t.insert("name".into(), Value::from(name));
                }
                if let Some(ds) = &datasets {
                    t.insert("datasets".into(), Value::from(ds.clone()));
                }
                Value::from(t)
            })
            .collect();
        out.push(Setting::new(
            "collectors.ifcb.dashboards",
            dashboards,
            "flag --base-url",
        ));
    }
    for (flag, key) in [
        ("lag-threshold-seconds", "collectors.ifcb.lag_threshold"),
        ("lookback-seconds", "collectors.ifcb.lookback"),
        ("interval", "collectors.ifcb.interval"),
        ("request-timeout-seconds", "collectors.ifcb.request_timeout"),
        ("max-concurrency", "collectors.ifcb.max_concurrency"),
        ("max-scan-bins", "collectors.ifcb.max_scan_bins"),
    ] {
        if let Some(v) = m.get_one::<u64>(flag) {
            out.push(Setting::new(key, *v, format!("flag --{flag}")));
        }
    }
    if m.get_flag("refresh-at-start") {
        out.push(Setting::new(
            "collectors.ifcb.refresh_at_start",
            true,
            "flag --refresh-at-start",
        ));
    }
    if let Some(p) = m.get_one::<u16>("port")
        && m.get_many::<String>("web.listen-address").is_none()
    {
        out.push(Setting::new(
            "web.listen_addresses",
            vec![format!(":{p}")],
            "flag --port",
        ));
    }
    Ok(out)
}

/// `NAME=URL` or `URL`, as the IFCB exporter's `--base-url` takes it.
mod tidegauge_ifcb_flag {
    pub fn split(v: &str) -> (Option<String>, String) {
        match v.split_once('=') {
            Some((name, url)) if !name.is_empty() && !name.contains(['/', ':']) => {
                (Some(name.to_owned()), url.to_owned())
            }
            _ => (None, v.to_owned()),
        }
    }
}

fn flag_value(m: &ArgMatches, id: &str) -> Option<String> {
    m.get_one::<String>(id).cloned()
}

/// Loads the configuration for the given command line; `env` is the process environment.
pub fn load(
    m: &ArgMatches,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HostConfig, ConfigError> {
    let explicit = flag_value(m, "config").map(PathBuf::from);
    let file = match explicit {
        Some(p) => {
            if !p.is_file() {
                return Err(ConfigError(format!(
                    "--config {}: no such file",
                    p.display()
                )));
            }
            Some(p)
        }
        None => Some(PathBuf::from("tidegauge.toml")).filter(|p| p.is_file()),
    };
    let mut fig = Figment::new();
    if let Some(f) = &file {
        // Read it ourselves so a syntax error names the file plainly.
        let text =
            std::fs::read_to_string(f).map_err(|e| ConfigError(format!("{}: {e}", f.display())))?;
        text.parse::<toml::Table>()
            .map_err(|e| ConfigError(format!("{}: {e}", f.display())))?;
        fig = fig.merge(Toml::file_exact(f));
    }
    fig = fig.merge(Env::prefixed("TIDEGAUGE_").split("__"));
    // Seed compatibility: the status exporter's EXPORTER_PORT and the ICOS service's PORT, unless
    // the file, the environment or a flag gives listen addresses. With both, both are served, so
    // the scrape configurations of either original keep working.
    let listen_set = fig.find_value("web.listen_addresses").is_ok();
    let mut seed_addrs: Vec<String> = Vec::new();
    let mut seed_vars: Vec<&str> = Vec::new();
    let port_vars: &[&str] = if compiled_in("icos-push") {
        &["EXPORTER_PORT", "PORT"]
    } else {
        &["EXPORTER_PORT"]
    };
    for var in port_vars {
        if let Some(port) = env(var) {
            let p: u16 = port.trim().parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                ConfigError(format!("{var}={port:?}: expected a port number (1-65535)"))
            })?;
            let addr = format!(":{p}");
            if !seed_addrs.contains(&addr) {
                seed_addrs.push(addr);
            }
            seed_vars.push(var);
        }
    }
    if !listen_set && !seed_addrs.is_empty() {
        fig = fig.merge(Setting::new(
            "web.listen_addresses",
            seed_addrs,
            format!("environment variable {}", seed_vars.join(" and ")),
        ));
    }
    if let Some(addrs) = m.get_many::<String>("web.listen-address") {
        let addrs: Vec<String> = addrs.cloned().collect();
        fig = fig.merge(Setting::new(
            "web.listen_addresses",
            addrs,
            "flag --web.listen-address",
        ));
    }
    if m.get_flag("web.disable-exporter-metrics") {
        fig = fig.merge(Setting::new(
            "web.disable_exporter_metrics",
            true,
            "flag --web.disable-exporter-metrics",
        ));
    }
    if let Some(v) = flag_value(m, "web.telemetry-path") {
        fig = fig.merge(Setting::new(
            "web.telemetry_path",
            v,
            "flag --web.telemetry-path",
        ));
    }
    if let Some(v) = flag_value(m, "web.config.file") {
        fig = fig.merge(Setting::new("web.config_file", v, "flag --web.config.file"));
    }
    if let Some(v) = m.get_one::<u64>("web.max-requests") {
        fig = fig.merge(Setting::new(
            "web.max_requests",
            *v,
            "flag --web.max-requests",
        ));
    }
    for (flag, key) in [
        ("scrape.default-timeout", "scrape.default_timeout"),
        ("scrape.timeout-offset", "scrape.timeout_offset"),
        ("log.level", "log.level"),
        ("log.format", "log.format"),
    ] {
        if let Some(v) = flag_value(m, flag) {
            fig = fig.merge(Setting::new(key, v, format!("flag --{flag}")));
        }
    }
    let seed_ifcb = m
        .try_get_many::<String>("base-url")
        .ok()
        .flatten()
        .is_some();
    for s in ifcb_seed_settings(m)? {
        fig = fig.merge(s);
    }
    let mut raw: RawConfig = fig.extract()?;
    validate_web(&raw.web)?;
    if let Some(path) = &raw.web.config_file {
        let checked = tidegauge_server::webconfig::load(path).map_err(ConfigError)?;
        raw.web.basic_auth = checked.has_users();
    }
    if raw.scrape.default_timeout.is_zero() {
        return Err(ConfigError(
            "scrape.default_timeout must be greater than zero".into(),
        ));
    }

    let mut tables: BTreeMap<String, Dict> = BTreeMap::new();
    for (key, dict) in raw.collectors {
        // Environment variables cannot spell `-`: accept `app_status` for `app-status`.
        let name = key.replace('_', "-");
        if !KNOWN_COLLECTORS.contains(&name.as_str()) {
            return Err(ConfigError(format!(
                "collectors.{key}: unknown collector (known: {})",
                KNOWN_COLLECTORS.join(", ")
            )));
        }
        if !compiled_in(&name) {
            return Err(ConfigError(format!(
                "collectors.{key}: {}",
                not_compiled(&name)
            )));
        }
        tables.entry(name).or_default().extend(dict);
    }
    let disable_defaults = m.get_flag("collector.disable-defaults");
    let tables_given: Vec<String> = tables.keys().cloned().collect();
    let mut collectors = BTreeMap::new();
    for name in KNOWN_COLLECTORS {
        let on = m.get_flag(&format!("collector.{name}"));
        let off = m.get_flag(&format!("no-collector.{name}"));
        if on && off {
            return Err(ConfigError(format!(
                "--collector.{name} and --no-collector.{name} contradict each other"
            )));
        }
        if !compiled_in(name) {
            if on || flag_value(m, &format!("collector.{name}.timeout")).is_some() {
                return Err(ConfigError(format!(
                    "--collector.{name}: {}",
                    not_compiled(name)
                )));
            }
            continue;
        }
        let mut own = tables.remove(*name).unwrap_or_default();
        let mut host_part = Dict::new();
        for k in ["enabled", "timeout", "cache_ttl"] {
            if let Some(v) = own.remove(k) {
                host_part.insert(k.to_owned(), v);
            }
        }
        let host: HostKeys = deserialize(name, &Value::from(host_part))?;
        let mut timeout = host.timeout;
        if let Some(t) = flag_value(m, &format!("collector.{name}.timeout")) {
            timeout = Some(
                tidegauge_core::duration::parse(&t)
                    .map_err(|e| ConfigError(format!("--collector.{name}.timeout: {e}")))?,
            );
        }
        // Without configuration ifcb has nothing to read; the IFCB exporter's command line
        // (`--base-url`) means "this is an IFCB exporter": other collectors then run only when
        // configured or enabled explicitly.
        let default_on = match *name {
            "ifcb" => own.contains_key("dashboards"),
            // A push API writes a store on disk: it runs when configured or asked for.
            "icos-push" => tables_given.contains(&(*name).to_owned()),
            _ if seed_ifcb => tables_given.contains(&(*name).to_owned()),
            _ => true,
        };
        let enabled = if on {
            true
        } else if off {
            false
        } else {
            host.enabled.unwrap_or(!disable_defaults && default_on)
        };
        collectors.insert(
            (*name).to_owned(),
            CollectorConfig {
                enabled,
                settings: CollectorSettings {
                    timeout,
                    cache_ttl: host.cache_ttl.filter(|d| !d.is_zero()),
                },
                own: Value::from(own),
            },
        );
    }
    Ok(HostConfig {
        web: raw.web,
        scrape: raw.scrape,
        log: raw.log,
        collectors,
        file,
    })
}

/// Deserializes a collector's table, naming the offending key in errors.
pub fn deserialize<T: serde::de::DeserializeOwned>(
    collector: &str,
    v: &Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        ConfigError(format!("collectors.{collector}{at}: {}", e.inner()))
    })
}

fn validate_web(web: &WebConfig) -> Result<(), ConfigError> {
    if web.listen_addresses.is_empty() {
        return Err(ConfigError(
            "web.listen_addresses must name at least one address".into(),
        ));
    }
    for a in &web.listen_addresses {
        parse_listen(a).map_err(|e| ConfigError(format!("web.listen_addresses: {e}")))?;
    }
    if !web.telemetry_path.starts_with('/')
        || !web
            .telemetry_path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.~".contains(c))
        || web.telemetry_path.contains("//")
    {
        return Err(ConfigError(format!(
            "web.telemetry_path {:?}: must start with / and use only letters, digits and / - _ . ~",
            web.telemetry_path
        )));
    }
    for reserved in ["/probe", "/-/healthy", "/-/ready", "/-/reload"] {
        if web.telemetry_path == reserved {
            return Err(ConfigError(format!(
                "web.telemetry_path {reserved:?} is a reserved route"
            )));
        }
    }
    Ok(())
}

/// A listen address: `:PORT` means every interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Every interface (IPv6 and IPv4 where available).
    Any(u16),
    /// A host (name or address) and port.
    Host(String, u16),
}

/// Parses `:9877`, `127.0.0.1:9877`, `localhost:9877`, `[::1]:9877`.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected HOST:PORT or :PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    if host.is_empty() {
        return Ok(Listen::Any(port));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', ' ']) {
        return Err(format!("{s:?}: invalid host"));
    }
    Ok(Listen::Host(host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_args(args: &[&str], env: &[(&str, &str)]) -> Result<HostConfig, ConfigError> {
        let m = command()
            .try_get_matches_from(std::iter::once("tidegauge").chain(args.iter().copied()))
            .map_err(|e| ConfigError(e.to_string()))?;
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        load(&m, &move |k| env.get(k).cloned())
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen(":9877"), Ok(Listen::Any(9877)));
        assert_eq!(
            parse_listen("127.0.0.1:1"),
            Ok(Listen::Host("127.0.0.1".into(), 1))
        );
        assert_eq!(
            parse_listen("[::1]:9100"),
            Ok(Listen::Host("::1".into(), 9100))
        );
        assert!(parse_listen("9100").is_err());
        assert!(parse_listen(":http").is_err());
    }

    #[test]
    fn defaults_and_flags() {
        let c = load_args(&[], &[]).unwrap();
        assert_eq!(c.web, WebConfig::default());
        assert!(c.collectors["app-status"].enabled);
        let c = load_args(
            &[
                "--web.listen-address",
                "127.0.0.1:1",
                "--web.listen-address",
                ":2",
                "--collector.app-status.timeout",
                "3s",
                "--web.max-requests",
                "0",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.web.listen_addresses, vec!["127.0.0.1:1", ":2"]);
        assert_eq!(c.web.max_requests, 0);
        assert_eq!(
            c.collectors["app-status"].settings.timeout,
            Some(Duration::from_secs(3))
        );
        assert!(!c.web.disable_exporter_metrics);
        let c = load_args(&["--web.disable-exporter-metrics"], &[]).unwrap();
        assert!(c.web.disable_exporter_metrics);
        let c = load_args(&["--no-collector.app-status"], &[]).unwrap();
        assert!(!c.collectors["app-status"].enabled);
        let c = load_args(&["--collector.disable-defaults"], &[]).unwrap();
        assert!(!c.collectors["app-status"].enabled);
        let c = load_args(
            &["--collector.disable-defaults", "--collector.app-status"],
            &[],
        )
        .unwrap();
        assert!(c.collectors["app-status"].enabled);
    }

    #[test]
    fn exporter_port_applies_unless_a_listen_address_is_given() {
        let c = load_args(&[], &[("EXPORTER_PORT", "9999")]).unwrap();
        assert_eq!(c.web.listen_addresses, vec![":9999"]);
        let c = load_args(
            &["--web.listen-address", "127.0.0.1:1"],
            &[("EXPORTER_PORT", "9999")],
        )
        .unwrap();
        assert_eq!(c.web.listen_addresses, vec!["127.0.0.1:1"]);
        let e = load_args(&[], &[("EXPORTER_PORT", "abc")]).unwrap_err();
        assert!(e.0.contains("EXPORTER_PORT"), "{e}");
        // The ICOS service's PORT too; with both, both ports are served.
        let c = load_args(&[], &[("EXPORTER_PORT", "9999"), ("PORT", "9600")]).unwrap();
        assert_eq!(c.web.listen_addresses, vec![":9999", ":9600"]);
        let c = load_args(&[], &[("PORT", "9600")]).unwrap();
        assert_eq!(c.web.listen_addresses, vec![":9600"]);
        let e = load_args(&[], &[("PORT", "0")]).unwrap_err();
        assert!(e.0.contains("PORT=\"0\""), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        for (args, want) in [
            (
                &["--collector.sensor-bridge"][..],
                "not available in this version",
            ),
            (&["--datasets", "a,b"][..], "--base-url"),
            (
                &["--collector.app-status", "--no-collector.app-status"][..],
                "contradict",
            ),
            (&["--scrape.default-timeout", "soon"][..], "default_timeout"),
            (
                &["--web.listen-address", "nowhere"][..],
                "web.listen_addresses",
            ),
            (&["--web.telemetry-path", "metrics"][..], "telemetry_path"),
            (&["--web.telemetry-path", "/{x}"][..], "telemetry_path"),
            (&["--web.telemetry-path", "/:x"][..], "telemetry_path"),
            (&["--log.format", "xml"][..], "format"),
            (
                &["--collector.app-status.timeout=-1"][..],
                "--collector.app-status.timeout",
            ),
            (
                &["--config", "/nonexistent/tidegauge.toml"][..],
                "no such file",
            ),
        ] {
            let e = load_args(args, &[]).unwrap_err();
            assert!(e.0.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn file_and_collector_tables() {
        let dir = std::env::temp_dir().join(format!("tidegauge-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.toml");
        std::fs::write(&f, "[web]\nmax_requests = 7\n[collectors.app-status]\ncache_ttl = \"30s\"\ntimeout = 2\nmin_interval = 0\n").unwrap();
        let c = load_args(&["--config", f.to_str().unwrap()], &[]).unwrap();
        assert_eq!(c.web.max_requests, 7);
        let a = &c.collectors["app-status"];
        assert_eq!(a.settings.cache_ttl, Some(Duration::from_secs(30)));
        assert_eq!(a.settings.timeout, Some(Duration::from_secs(2)));
        assert!(a.own.find_ref("min_interval").is_some());
        assert!(a.own.find_ref("cache_ttl").is_none());
        // The file's listen addresses beat the seed's EXPORTER_PORT.
        std::fs::write(&f, "[web]\nlisten_addresses = [\"127.0.0.1:7\"]\n").unwrap();
        let c = load_args(
            &["--config", f.to_str().unwrap()],
            &[("EXPORTER_PORT", "9999")],
        )
        .unwrap();
        assert_eq!(c.web.listen_addresses, vec!["127.0.0.1:7"]);
        std::fs::write(&f, "[web]\nmax_requests = 7\n[collectors.app-status]\ncache_ttl = \"30s\"\ntimeout = 2\nmin_interval = 0\n").unwrap();
        // Flags beat the file.
        let c = load_args(
            &["--config", f.to_str().unwrap(), "--web.max-requests", "9"],
            &[],
        )
        .unwrap();
        assert_eq!(c.web.max_requests, 9);

        for (text, want) in [
            ("[web]\nmax_requests = \"many\"\n", "max_requests"),
            ("[webb]\n", "webb"),
            (
                "[collectors.sensor-bridge]\nboards = []\n",
                "not available in this version",
            ),
            ("[collectors.nope]\n", "unknown collector"),
            (
                "[collectors.app-status]\nenabled = \"yes\"\n",
                "collectors.app-status",
            ),
            ("not toml at all [", "t.toml"),
        ] {
            std::fs::write(&f, text).unwrap();
            let e = load_args(&["--config", f.to_str().unwrap()], &[]).unwrap_err();
            assert!(e.0.contains(want), "{text}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn ifcb_exporter_command_line() {
        let c = load_args(
            &[
                "--base-url",
                "caloos=http://127.0.0.1:1/api",
                "--base-url",
                "http://127.0.0.2:1/api",
                "--lag-threshold-seconds",
                "100",
                "--interval",
                "60",
                "--datasets",
                "a,b",
                "--port",
                "8000",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.web.listen_addresses, vec![":8000"]);
        assert!(c.collectors["ifcb"].enabled);
        assert!(
            !c.collectors["app-status"].enabled,
            "an IFCB exporter command line runs only ifcb"
        );
        let cfg: tidegauge_ifcb::Config = deserialize("ifcb", &c.collectors["ifcb"].own).unwrap();
        assert_eq!(cfg.lag_threshold, Duration::from_secs(100));
        assert_eq!(cfg.interval, Duration::from_secs(60));
        assert_eq!(cfg.dashboards.len(), 2);
        assert_eq!(cfg.dashboards[0].name.as_deref(), Some("caloos"));
        assert_eq!(cfg.dashboards[1].name, None);
        assert_eq!(cfg.dashboards[1].datasets, vec!["a", "b"]);
        // Without dashboards ifcb stays off; asked for explicitly it is a clear error.
        assert!(!load_args(&[], &[]).unwrap().collectors["ifcb"].enabled);
        let c = load_args(&["--collector.ifcb"], &[]).unwrap();
        let services = tidegauge_core::HostServices {
            http: tidegauge_core::http::client().unwrap(),
            clock: std::sync::Arc::new(tidegauge_core::SystemClock),
            data_dir: std::env::temp_dir(),
        };
        let err = crate::collectors::build("ifcb", &c.collectors["ifcb"].own, &services, &|_| None)
            .err()
            .unwrap();
        assert!(err.0.contains("no dashboards"), "{err}");
    }

    #[test]
    fn readme_example_configuration_loads() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("```toml\n[collectors.app-status]")
            .expect("README has the example")
            + "```toml\n".len();
        let len = readme[start..].find("```").unwrap();
        let dir = std::env::temp_dir().join(format!("tidegauge-readme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("readme.toml");
        std::fs::write(&f, &readme[start..start + len]).unwrap();
        let env = |k: &str| (k == "BILLING_TOKEN").then(|| "secret".to_owned());
        let m = command()
            .try_get_matches_from(["tidegauge", "--config", f.to_str().unwrap()])
            .unwrap();
        let c = load(&m, &env).unwrap();
        let services = tidegauge_core::HostServices {
            http: tidegauge_core::http::client().unwrap(),
            clock: std::sync::Arc::new(tidegauge_core::SystemClock),
            data_dir: dir.clone(),
        };
        let collector = crate::collectors::build(
            "app-status",
            &c.collectors["app-status"].own,
            &services,
            &env,
        )
        .unwrap();
        assert_eq!(collector.name(), "app-status");
        std::fs::remove_dir_all(&dir).ok();
    }
}
