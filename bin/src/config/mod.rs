//! Configuration: built-in defaults, then `tidegauge.toml` (or `--config FILE`), then
//! `TIDEGAUGE_*` environment variables, then the collectors' legacy flags and variables, then the
//! host's flags.

mod cli;
mod listen;
mod schema;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::ArgMatches;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Value};
use tidegauge_core::factory::{Inputs, Legacy, Setting};
use tidegauge_core::{Environment, factory};
use tidegauge_server::CollectorSettings;

pub use cli::command;
pub use listen::{Listen, parse_listen};
pub use schema::{
    CollectorConfig, ConfigError, HostConfig, HostKeys, LogFormat, RawConfig, WebConfig,
};

use crate::factories::Catalog;

fn flag_value(m: &ArgMatches, id: &str) -> Option<String> {
    m.get_one::<String>(id).cloned()
}

/// The configuration file: `--config FILE`, else `./tidegauge.toml` when present.
fn config_file(m: &ArgMatches) -> Result<Option<PathBuf>, ConfigError> {
    match flag_value(m, "config").map(PathBuf::from) {
        Some(p) if p.is_file() => Ok(Some(p)),
        Some(p) => Err(ConfigError(format!(
            "--config {}: no such file",
            p.display()
        ))),
        None => Ok(Some(PathBuf::from("tidegauge.toml")).filter(|p| p.is_file())),
    }
}

/// Listen addresses from the collectors' legacy ports, when they apply: a port flag unless
/// `--web.listen-address` is given; a port variable, or the replaced exporter's own port, only
/// when nothing configures listen addresses.
fn legacy_listen(legacies: &[Legacy], configured: bool, listen_flag: bool) -> Option<Setting> {
    if listen_flag {
        return None;
    }
    let ports = |from_flag: bool| -> Vec<&factory::Port> {
        legacies
            .iter()
            .flat_map(|l| &l.ports)
            .filter(|p| p.from_flag == from_flag)
            .collect()
    };
    let chosen = match (ports(true), ports(false)) {
        (flags, _) if !flags.is_empty() => flags,
        _ if configured => return None,
        (_, vars) if !vars.is_empty() => vars,
        _ => {
            let port = legacies
                .iter()
                .filter(|l| l.takes_over)
                .find_map(|l| l.default_port)?;
            return Some(Setting::new(
                "web.listen_addresses",
                vec![format!(":{port}")],
                "the replaced exporter's default port",
            ));
        }
    };
    let mut addrs: Vec<String> = Vec::new();
    let mut sources: Vec<&str> = Vec::new();
    for p in chosen {
        let a = format!(":{}", p.port);
        if !addrs.contains(&a) {
            addrs.push(a);
        }
        sources.push(&p.source);
    }
    Some(Setting::new(
        "web.listen_addresses",
        addrs,
        sources.join(" and "),
    ))
}

/// Loads the configuration for the given command line and environment.
pub fn load(
    m: &ArgMatches,
    env: &Environment,
    catalog: &Catalog,
) -> Result<HostConfig, ConfigError> {
    let file = config_file(m)?;
    let mut fig = Figment::new();
    if let Some(f) = &file {
        // Read it ourselves so a syntax error names the file plainly.
        let text =
            std::fs::read_to_string(f).map_err(|e| ConfigError(format!("{}: {e}", f.display())))?;
        // Position and message only: the parser's excerpt of the line would print a secret
        // written there (a password with a stray quote) in logs and in the reload's answer.
        text.parse::<toml::Table>().map_err(|e| {
            let at = e.span().map_or(String::new(), |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!(" at line {line}, column {column}")
            });
            ConfigError(format!(
                "{}: TOML syntax error{at}: {}",
                f.display(),
                e.message().trim_end()
            ))
        })?;
        fig = fig.merge(Toml::file_exact(f));
    }
    fig = fig.merge(Env::prefixed("TIDEGAUGE_").split("__"));

    let inputs = Inputs { flags: m, env };
    let legacies = catalog
        .factories
        .iter()
        .map(|f| f.legacy(inputs).map_err(ConfigError))
        .collect::<Result<Vec<Legacy>, _>>()?;
    let configured = fig.find_value("web.listen_addresses").is_ok();
    let listen_flag = m.get_many::<String>("web.listen-address").is_some();
    if let Some(s) = legacy_listen(&legacies, configured, listen_flag) {
        fig = fig.merge(s);
    }
    for s in legacies.iter().flat_map(|l| &l.settings) {
        fig = fig.merge(s.clone());
    }
    fig = merge_host_flags(fig, m);
    for (collector, key, to) in legacies.iter().flat_map(|l| &l.aliases) {
        fig = alias(fig, collector, key, to)?;
    }
    for s in legacies.iter().flat_map(|l| &l.fills) {
        fig = fig.join(s.clone());
    }
    for (key, why) in legacies.iter().flat_map(|l| &l.requires) {
        if fig.find_value(key).is_err() {
            return Err(ConfigError(why.clone()));
        }
    }
    let mut raw: RawConfig = fig.extract()?;
    for (collector, key, _) in legacies.iter().flat_map(|l| &l.aliases) {
        for (name, table) in raw.collectors.iter_mut() {
            if name.replace('_', "-") == *collector {
                table.remove(key);
            }
        }
    }
    validate_web(&raw.web)?;
    if let Some(path) = &raw.web.config_file {
        let checked = tidegauge_server::webconfig::load(path).map_err(ConfigError)?;
        raw.web.basic_auth = checked.has_users();
    }
    let has_bearer = raw.auth.tokens_file.is_some() || raw.auth.keycloak.is_some();
    if raw.auth.protect_metrics && !has_bearer && !raw.web.basic_auth {
        return Err(ConfigError(
            "auth.protect_metrics (PROMETHEUS_METRICS_DISABLED=true) puts /metrics behind authentication, but none is configured: give auth.tokens_file, auth.keycloak (SECURITY_DISABLED=false with KEYCLOAK_*) or basic_auth_users in web.config_file".into(),
        ));
    }
    if raw.scrape.default_timeout.is_zero() {
        return Err(ConfigError(
            "scrape.default_timeout must be greater than zero".into(),
        ));
    }
    let labels = constant_labels(raw.labels, m)?;
    let taken_over = legacies.iter().any(|l| l.takes_over);
    let collectors = resolve_collectors(m, catalog, raw.collectors, taken_over)?;
    if let Some(rw) = &raw.remote_write {
        tidegauge_remote_write::RemoteWrite::check(rw).map_err(|e| ConfigError(e.to_string()))?;
        for name in rw.collectors.iter().flatten() {
            match collectors.get(name) {
                Some(c) if c.enabled => {}
                Some(_) => {
                    return Err(ConfigError(format!(
                        "remote_write.collectors: collector {name:?} is not enabled"
                    )));
                }
                None => {
                    return Err(ConfigError(format!(
                        "remote_write.collectors: {name:?}: {}",
                        catalog.missing(name)
                    )));
                }
            }
        }
    }
    Ok(HostConfig {
        web: raw.web,
        scrape: raw.scrape,
        log: raw.log,
        auth: raw.auth,
        labels,
        collectors,
        remote_write: raw.remote_write,
        file,
    })
}

/// `[labels]` with `--label NAME=VALUE` over it, checked: valid label names, none reserved.
fn constant_labels(
    mut labels: BTreeMap<String, String>,
    m: &ArgMatches,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut given = std::collections::BTreeSet::new();
    for flag in m.get_many::<String>("label").into_iter().flatten() {
        let (name, value) = flag
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("--label {flag:?}: expected NAME=VALUE")))?;
        if !given.insert(name.to_owned()) {
            return Err(ConfigError(format!("--label {name}: given twice")));
        }
        labels.insert(name.to_owned(), value.to_owned());
    }
    for name in labels.keys() {
        let reserved = name.starts_with("__") || name == "le" || name == "quantile";
        if !tidegauge_core::snapshot::is_valid_label_name(name) || reserved {
            return Err(ConfigError(format!(
                "labels.{name}: not a usable label name (letters, digits and _, not starting with a digit or __; le and quantile are the encoders')"
            )));
        }
    }
    Ok(labels.into_iter().collect())
}

/// Serves the old spelling `collectors.NAME.KEY` of the host key `to`; both at once is an error.
fn alias(fig: Figment, collector: &str, key: &str, to: &str) -> Result<Figment, ConfigError> {
    let spellings = [
        format!("collectors.{collector}.{key}"),
        format!("collectors.{}.{key}", collector.replace('-', "_")),
    ];
    let Some((old, value)) = spellings
        .iter()
        .find_map(|k| fig.find_value(k).ok().map(|v| (k, v)))
    else {
        return Ok(fig);
    };
    if fig.find_value(to).is_ok() {
        return Err(ConfigError(format!(
            "{old} and {to} both given: {old} is the old name of [{to}]; keep one"
        )));
    }
    Ok(fig.merge(Setting::new(
        to,
        value,
        format!("{old} (the old name of {to})"),
    )))
}

fn merge_host_flags(mut fig: Figment, m: &ArgMatches) -> Figment {
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
    if let Some(v) = m.get_one::<bool>("web.enable-lifecycle") {
        fig = fig.merge(Setting::new(
            "web.enable_lifecycle",
            *v,
            "flag --web.enable-lifecycle",
        ));
    }
    if let Some(v) = m.get_one::<u64>("web.max-connections") {
        fig = fig.merge(Setting::new(
            "web.max_connections",
            *v,
            "flag --web.max-connections",
        ));
    }
    if let Some(v) = m.get_one::<u64>("web.max-requests") {
        fig = fig.merge(Setting::new(
            "web.max_requests",
            *v,
            "flag --web.max-requests",
        ));
    }
    for (flag, key) in [
        ("web.telemetry-path", "web.telemetry_path"),
        ("web.read-header-timeout", "web.read_header_timeout"),
        ("web.read-timeout", "web.read_timeout"),
        ("web.idle-timeout", "web.idle_timeout"),
        ("web.config.file", "web.config_file"),
        ("scrape.default-timeout", "scrape.default_timeout"),
        ("scrape.timeout-offset", "scrape.timeout_offset"),
        ("log.level", "log.level"),
        ("log.format", "log.format"),
    ] {
        if let Some(v) = flag_value(m, flag) {
            fig = fig.merge(Setting::new(key, v, format!("flag --{flag}")));
        }
    }
    fig
}

/// Each compiled-in collector: enabled or not, host settings, own keys.
fn resolve_collectors(
    m: &ArgMatches,
    catalog: &Catalog,
    given: BTreeMap<String, Dict>,
    taken_over: bool,
) -> Result<BTreeMap<String, CollectorConfig>, ConfigError> {
    let mut tables: BTreeMap<String, Dict> = BTreeMap::new();
    for (key, dict) in given {
        // Environment variables cannot spell `-`: accept `app_status` for `app-status`.
        let name = key.replace('_', "-");
        if catalog.get(&name).is_none() {
            return Err(ConfigError(format!(
                "collectors.{key}: {}",
                catalog.missing(&name)
            )));
        }
        tables.entry(name).or_default().extend(dict);
    }
    let disable_defaults = m.get_flag("collector.disable-defaults");
    for name in &catalog.features {
        let on = m.get_flag(&format!("collector.{name}"));
        let off = m.get_flag(&format!("no-collector.{name}"));
        if on && off {
            return Err(ConfigError(format!(
                "--collector.{name} and --no-collector.{name} contradict each other"
            )));
        }
        if catalog.get(name).is_none()
            && (on || flag_value(m, &format!("collector.{name}.timeout")).is_some())
        {
            return Err(ConfigError(format!(
                "--collector.{name}: {}",
                catalog.missing(name)
            )));
        }
    }
    let mut collectors = BTreeMap::new();
    for factory in &catalog.factories {
        let name = factory.name();
        let given = tables.remove(name);
        let mut own = given.clone().unwrap_or_default();
        let mut host_part = Dict::new();
        for k in HostKeys::NAMES {
            if let Some(v) = own.remove(k) {
                host_part.insert(k.to_owned(), v);
            }
        }
        let host: HostKeys = factory::deserialize(name, &Value::from(host_part))?;
        let mut timeout = host.timeout;
        if let Some(t) = flag_value(m, &format!("collector.{name}.timeout")) {
            timeout = Some(
                tidegauge_core::duration::parse(&t)
                    .map_err(|e| ConfigError(format!("--collector.{name}.timeout: {e}")))?,
            );
        }
        // The replaced exporter's command line means "this is that exporter": the others then
        // run only when configured or enabled explicitly.
        let default_on =
            factory.enabled_by_default(given.as_ref()) && (!taken_over || given.is_some());
        let enabled = if m.get_flag(&format!("collector.{name}")) {
            true
        } else if m.get_flag(&format!("no-collector.{name}")) {
            false
        } else {
            host.enabled.unwrap_or(!disable_defaults && default_on)
        };
        collectors.insert(
            name.to_owned(),
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
    Ok(collectors)
}

fn validate_web(web: &WebConfig) -> Result<(), ConfigError> {
    for (key, d) in [
        ("web.read_header_timeout", web.read_header_timeout),
        ("web.read_timeout", web.read_timeout),
        ("web.idle_timeout", web.idle_timeout),
    ] {
        if d.is_zero() {
            return Err(ConfigError(format!("{key} must be greater than zero")));
        }
    }
    if web.max_connections == 0 {
        return Err(ConfigError("web.max_connections must be at least 1".into()));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    fn load_args(args: &[&str], env: &[(&str, &str)]) -> Result<HostConfig, ConfigError> {
        let catalog = Catalog::compiled();
        let m = command(&catalog.factories, &catalog.features)
            .try_get_matches_from(std::iter::once("tidegauge").chain(args.iter().copied()))
            .map_err(|e| ConfigError(e.to_string()))?;
        load(&m, &Environment::from_pairs(env.iter().copied()), &catalog)
    }

    fn services(dir: std::path::PathBuf, env: Environment) -> tidegauge_core::HostServices {
        tidegauge_core::HostServices {
            env,
            ..tidegauge_core::HostServices::new(tidegauge_testkit::http_client(), dir)
        }
    }

    fn build(
        name: &str,
        c: &HostConfig,
        env: Environment,
    ) -> Result<tidegauge_core::Instance, tidegauge_core::BuildError> {
        Catalog::compiled().get(name).unwrap().build(
            &c.collectors[name].own,
            &services(std::env::temp_dir(), env),
            None,
        )
    }

    /// The host starts on its defaults with every compiled-in collector (a collector that needs
    /// configuration must be off by default).
    #[test]
    fn defaults_build_every_enabled_collector() {
        let c = load_args(&[], &[]).unwrap();
        for (name, cc) in c.collectors.iter().filter(|(_, cc)| cc.enabled) {
            let dir =
                std::env::temp_dir().join(format!("tidegauge-defaults-{}", std::process::id()));
            let built = Catalog::compiled().get(name).unwrap().build(
                &cc.own,
                &services(dir, Environment::from_pairs::<&str, &str>([])),
                None,
            );
            assert!(built.is_ok(), "{name}: {:?}", built.err());
        }
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
        let cfg: tidegauge_ifcb::Config =
            factory::deserialize("ifcb", &c.collectors["ifcb"].own).unwrap();
        assert_eq!(cfg.lag_threshold, Duration::from_secs(100));
        assert_eq!(cfg.interval, Duration::from_secs(60));
        assert_eq!(cfg.dashboards.len(), 2);
        assert_eq!(cfg.dashboards[0].name.as_deref(), Some("caloos"));
        assert_eq!(cfg.dashboards[1].name, None);
        assert_eq!(cfg.dashboards[1].datasets, vec!["a", "b"]);
        // Without dashboards ifcb stays off; asked for explicitly it is a clear error.
        assert!(!load_args(&[], &[]).unwrap().collectors["ifcb"].enabled);
        let c = load_args(&["--collector.ifcb"], &[]).unwrap();
        let err = build("ifcb", &c, Environment::from_pairs::<&str, &str>([])).unwrap_err();
        assert!(err.0.contains("collectors.ifcb: no dashboards"), "{err}");
    }

    #[test]
    fn both_ifcb_exporter_versions_start_unchanged_on_its_port() {
        // The first release's command line, without --port: the original's 8000.
        let c = load_args(
            &[
                "--base-url",
                "https://ifcb.example/api",
                "--lookback-seconds",
                "3600",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.web.listen_addresses, vec![":8000"]);
        let cfg: tidegauge_ifcb::Config =
            factory::deserialize("ifcb", &c.collectors["ifcb"].own).unwrap();
        assert_eq!(cfg.lookback, Duration::from_secs(3600));
        // The later release: --lookback-bins, --log-level (Python's names, any case), --datasets.
        let c = load_args(
            &[
                "--base-url",
                "https://ifcb.example/api",
                "--lookback-bins",
                "7",
                "--log-level",
                "warning",
                "--datasets",
                "pier",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.web.listen_addresses, vec![":8000"]);
        assert_eq!(c.log.level, "warn");
        let cfg: tidegauge_ifcb::Config =
            factory::deserialize("ifcb", &c.collectors["ifcb"].own).unwrap();
        assert_eq!(cfg.max_scan_bins, 7);
        assert_eq!(cfg.dashboards[0].datasets, vec!["pier"]);
        // A listen address, the file's addresses or EXPORTER_PORT beat the original's port.
        let c = load_args(
            &[
                "--base-url",
                "https://ifcb.example/api",
                "--web.listen-address",
                "127.0.0.1:5",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.web.listen_addresses, vec!["127.0.0.1:5"]);
        let c = load_args(
            &["--base-url", "https://ifcb.example/api"],
            &[("EXPORTER_PORT", "9100")],
        )
        .unwrap();
        assert_eq!(c.web.listen_addresses, vec![":9100"]);
        // Without the IFCB command line the host's own default stays.
        assert_eq!(
            load_args(&[], &[]).unwrap().web.listen_addresses,
            vec![":9877"]
        );
        for (args, want) in [
            (
                &["--base-url", "u", "--log-level", "loud"][..],
                "--log-level",
            ),
            (
                &[
                    "--base-url",
                    "u",
                    "--lookback-bins",
                    "1",
                    "--max-scan-bins",
                    "2",
                ][..],
                "--max-scan-bins",
            ),
        ] {
            let e = load_args(args, &[]).unwrap_err();
            assert!(e.0.contains(want), "{args:?}: {e}");
        }
    }

    /// The ICOS service's variables fill the host's `[auth]` where the file leaves it open;
    /// its old `[collectors.icos-push.auth]` table is `[auth]` under another name.
    #[test]
    fn icos_variables_and_the_old_auth_table_configure_the_host() {
        let vars = [
            ("SECURITY_DISABLED", "False"),
            ("KEYCLOAK_SERVER_URL", "https://kc.example.org"),
            ("KEYCLOAK_REALM_NAME", "icos"),
            ("KEYCLOAK_AUDIENCE", "tidegauge"),
            ("KEYCLOAK_CLIENT_ID", "pusher"),
            ("PROMETHEUS_METRICS_DISABLED", "yes"),
        ];
        let c = load_args(&[], &vars).unwrap();
        let k = c.auth.keycloak.as_ref().unwrap();
        assert_eq!(
            (k.server_url.as_str(), k.realm.as_str(), k.audience.as_str()),
            ("https://kc.example.org", "icos", "tidegauge")
        );
        assert_eq!(k.client_id.as_deref(), Some("pusher"));
        assert!(c.auth.protect_metrics);
        // The original's default: no authentication.
        let c = load_args(
            &[],
            &[
                ("SECURITY_DISABLED", "True"),
                ("PROMETHEUS_METRICS_DISABLED", "no"),
            ],
        )
        .unwrap();
        assert!(c.auth.keycloak.is_none() && !c.auth.protect_metrics);

        for (vars, want) in [
            (&[("SECURITY_DISABLED", "false")][..], "KEYCLOAK_SERVER_URL"),
            (
                &[
                    ("SECURITY_DISABLED", "0"),
                    ("KEYCLOAK_SERVER_URL", "https://kc.example.org"),
                    ("KEYCLOAK_REALM_NAME", "icos"),
                ][..],
                "KEYCLOAK_AUDIENCE",
            ),
            (
                &[
                    ("SECURITY_DISABLED", "no"),
                    ("KEYCLOAK_SERVER_URL", "https://kc.example.org"),
                ][..],
                "KEYCLOAK_REALM_NAME is not set",
            ),
            (
                &[
                    ("SECURITY_DISABLED", "false"),
                    ("KEYCLOAK_REALM_NAME", "icos"),
                ][..],
                "KEYCLOAK_SERVER_URL is not set",
            ),
            (
                &[("PROMETHEUS_METRICS_DISABLED", "TRUE")][..],
                "PROMETHEUS_METRICS_DISABLED",
            ),
        ] {
            let e = load_args(&[], vars).unwrap_err();
            assert!(e.0.contains(want), "{vars:?}: {e}");
        }

        let dir = std::env::temp_dir().join(format!("tidegauge-auth-alias-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.toml");
        std::fs::write(
            &f,
            "[collectors.icos-push]\nmax_series = 5\n[collectors.icos-push.auth]\ntokens_file = \"tokens\"\nprotect_metrics = true\n",
        )
        .unwrap();
        let c = load_args(&["--config", f.to_str().unwrap()], &[]).unwrap();
        assert_eq!(
            c.auth.tokens_file.as_deref(),
            Some(std::path::Path::new("tokens"))
        );
        assert!(c.auth.protect_metrics);
        assert!(c.collectors["icos-push"].own.find_ref("auth").is_none());
        // SECURITY_DISABLED=false with [auth] configured in the file: nothing missing.
        assert!(
            load_args(
                &["--config", f.to_str().unwrap()],
                &[("SECURITY_DISABLED", "false")]
            )
            .is_ok()
        );
        std::fs::write(
            &f,
            "[auth]\ntokens_file = \"a\"\n[collectors.icos-push.auth]\ntokens_file = \"b\"\n",
        )
        .unwrap();
        let e = load_args(&["--config", f.to_str().unwrap()], &[]).unwrap_err();
        assert!(
            e.0.contains("collectors.icos-push.auth and auth both given"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn constant_labels_from_the_file_and_flags() {
        let dir = std::env::temp_dir().join(format!("tidegauge-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t.toml");
        std::fs::write(&f, "[labels]\nsite = \"north\"\nship = \"a\"\n").unwrap();
        let c = load_args(
            &[
                "--config",
                f.to_str().unwrap(),
                "--label",
                "ship=b",
                "--label",
                "env=prod",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            c.labels,
            vec![
                ("env".to_owned(), "prod".to_owned()),
                ("ship".to_owned(), "b".to_owned()),
                ("site".to_owned(), "north".to_owned())
            ]
        );
        for (args, want) in [
            (&["--label", "nope"][..], "expected NAME=VALUE"),
            (&["--label", "1x=a"][..], "labels.1x"),
            (&["--label", "__name__=a"][..], "labels.__name__"),
            (&["--label", "le=1"][..], "labels.le"),
            (
                &["--label", "a=1", "--label", "a=2"][..],
                "--label a: given twice",
            ),
        ] {
            let e = load_args(args, &[]).unwrap_err();
            assert!(e.0.contains(want), "{args:?}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn readme_example_configuration_loads() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\n[collectors.app-status]")
            .expect("README has the example")
            + "```toml\n".len();
        let len = readme[start..].find("```").unwrap();
        let dir = std::env::temp_dir().join(format!("tidegauge-readme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("readme.toml");
        std::fs::write(&f, &readme[start..start + len]).unwrap();
        let env = [("BILLING_TOKEN", "secret")];
        let c = load_args(&["--config", f.to_str().unwrap()], &env).unwrap();
        let built = build("app-status", &c, Environment::from_pairs(env)).unwrap();
        assert_eq!(built.collector.name(), "app-status");
        std::fs::remove_dir_all(&dir).ok();
    }
}
