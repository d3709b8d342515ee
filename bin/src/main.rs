//! `tidegauge`: one host binary serving Prometheus metrics from collector crates.

mod config;
mod factories;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tidegauge_core::lock;

use std::collections::BTreeMap;

use clap::ArgMatches;
use futures_util::FutureExt;
use tidegauge_core::{CancellationToken, Environment, HostServices, Instance};
use tidegauge_remote_write::RemoteWrite;
use tidegauge_server::bearer::Verifier;
use tidegauge_server::conn::{self, ConnLimits, ConnStats};
use tidegauge_server::{
    AccessPolicy, BuildInfo, Engine, ReloadFn, SharedEngine, TimeoutSettings, WebSettings,
};
use tokio::net::TcpListener;

use crate::config::{ConfigError, HostConfig, Listen, LogFormat};
use crate::factories::Catalog;

/// Where collectors keep durable state unless their configuration says otherwise.
const DATA_DIR: &str = "tidegauge-data";

/// The built collectors by name, handed to their factories on the next reload. Disabled
/// collectors keep their last instance here, so enabling one again reuses its state.
type Instances = BTreeMap<String, Instance>;

fn main() -> ExitCode {
    let catalog = Catalog::compiled();
    let env = Environment::process();
    let matches = match config::command(&catalog.factories, &catalog.features).try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let cfg = match config::load(&matches, &env, &catalog) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tidegauge: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(&cfg) {
        eprintln!("tidegauge: invalid configuration: {e}");
        return ExitCode::from(2);
    }
    match &cfg.file {
        Some(f) => tracing::info!(file = %f.display(), "configuration file read"),
        None => tracing::info!("no configuration file; using defaults, environment and flags"),
    }
    let services = match tidegauge_core::http::client() {
        Ok(http) => HostServices {
            env,
            ..HostServices::new(http, DATA_DIR.into())
        },
        Err(e) => {
            eprintln!("tidegauge: cannot build the HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches.get_flag("check-config") {
        // Checked without side effects: no store opened or locked, nothing contacted.
        for (name, c) in cfg.collectors.iter().filter(|(_, c)| c.enabled) {
            if let Some(Err(e)) = catalog.get(name).map(|f| f.check(&c.own, &services)) {
                eprintln!("tidegauge: invalid configuration: {e}");
                return ExitCode::from(2);
            }
        }
        if let Err(e) = Verifier::new(&cfg.auth, services.http.clone(), None) {
            eprintln!("tidegauge: invalid configuration: {e}");
            return ExitCode::from(2);
        }
        println!("configuration is valid");
        println!("listen: {}", cfg.web.listen_addresses.join(", "));
        for (name, c) in &cfg.collectors {
            println!(
                "collector {name}: {}",
                if c.enabled { "enabled" } else { "disabled" }
            );
        }
        return ExitCode::SUCCESS;
    }
    // Build the collectors before starting the runtime's servers so a bad configuration
    // never binds a port.
    // As Go programs do: the soft open-file limit up to the hard one, so the connection cap
    // (and the stores) are not cut short by a low default.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let conn_stats = Arc::new(ConnStats::default());
    let remote_stats = Arc::new(tidegauge_remote_write::Stats::default());
    let (engine, instances) = match build_engine(
        &cfg,
        &services,
        &catalog,
        &Instances::new(),
        None,
        (&conn_stats, &remote_stats),
    ) {
        Ok(built) => built,
        Err(e) => {
            eprintln!("tidegauge: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let remote = match build_remote(&cfg, &services, &remote_stats, None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidegauge: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidegauge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let topology = Topology {
        matches,
        catalog,
        services,
        instances: Mutex::new(instances),
        conn_stats,
        remote_stats,
        remote: Mutex::new(remote.map(|r| (r, CancellationToken::new()))),
    };
    let served = runtime.block_on(serve(topology, cfg, engine));
    // A blocking read that never returns (a hanging sysfs driver) must not keep the process
    // from exiting: what it would have produced is not needed any more.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "tidegauge stopped");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &HostConfig) -> Result<(), ConfigError> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level)
        .map_err(|e| ConfigError(format!("log.level {:?}: {e}", cfg.log.level)))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Builds the enabled collectors (each from its previous instance, when there is one) and the
/// engine that scrapes them; returns the instances to hand over on the next reload.
fn build_engine(
    cfg: &HostConfig,
    services: &HostServices,
    catalog: &Catalog,
    previous: &Instances,
    previous_access: Option<&AccessPolicy>,
    (conn_stats, remote_stats): (&Arc<ConnStats>, &Arc<tidegauge_remote_write::Stats>),
) -> Result<(Engine, Instances), ConfigError> {
    let mut instances = previous.clone();
    let verifier = Verifier::new(
        &cfg.auth,
        services.http.clone(),
        previous_access.and_then(|a| a.verifier.as_deref()),
    )
    .map_err(ConfigError)?
    .map(Arc::new);
    let access = AccessPolicy {
        verifier,
        protect_reads: cfg.auth.protect_metrics,
        lifecycle: cfg.web.enable_lifecycle,
    };
    let mut builder = Engine::builder(Arc::clone(&services.clock), services.http.clone())
        .access(access)
        .names(Arc::clone(&services.names))
        .conn_stats(Arc::clone(conn_stats))
        .host_metrics(Arc::clone(remote_stats) as Arc<dyn tidegauge_server::HostMetrics>)
        .const_labels(cfg.labels.clone())
        .host_paths(tidegauge_server::router::host_paths(
            &cfg.web.telemetry_path,
        ))
        .timeouts(TimeoutSettings {
            default_timeout: cfg.scrape.default_timeout,
            offset: cfg.scrape.timeout_offset,
        })
        .build_info(BuildInfo::default())
        .process_metrics(!cfg.web.disable_exporter_metrics);
    for (name, c) in &cfg.collectors {
        if !c.enabled {
            builder = builder.disabled(name.clone());
            continue;
        }
        let Some(factory) = catalog.get(name) else {
            continue;
        };
        let built = factory.build(&c.own, services, previous.get(name))?;
        let collector = Arc::clone(&built.collector);
        instances.insert(name.clone(), built);
        builder = builder.collector(collector, c.settings);
    }
    let engine = builder.build().map_err(ConfigError)?;
    let open = !cfg.web.basic_auth && engine.access().verifier.is_none();
    if open && engine.has_write_routes() {
        tracing::warn!(
            "write routes (pushes) accept requests from anyone; configure [auth] or basic_auth_users in web.config_file to restrict them"
        );
    }
    Ok((engine, instances))
}

/// The `[remote_write]` destination, taking over the previous one's queue when it has the same
/// directory; `None` when the table is absent.
fn build_remote(
    cfg: &HostConfig,
    services: &HostServices,
    stats: &Arc<tidegauge_remote_write::Stats>,
    previous: Option<&RemoteWrite>,
) -> Result<Option<Arc<RemoteWrite>>, ConfigError> {
    let Some(rw) = &cfg.remote_write else {
        return Ok(None);
    };
    RemoteWrite::build(rw, &services.data_dir, Arc::clone(stats), previous)
        .map(|r| Some(Arc::new(r)))
        .map_err(|e| ConfigError(e.to_string()))
}

async fn bind(addr: &str) -> std::io::Result<Vec<TcpListener>> {
    let parsed = config::parse_listen(addr).map_err(std::io::Error::other)?;
    match parsed {
        Listen::Any(port) => {
            // Dual-stack where the host has IPv6, plain IPv4 otherwise.
            match TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
                Ok(l) => Ok(vec![l]),
                Err(_) => Ok(vec![
                    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await?,
                ]),
            }
        }
        Listen::Host(host, port) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            let mut out = Vec::new();
            let mut last_err = None;
            for a in addrs {
                match TcpListener::bind(a).await {
                    Ok(l) => out.push(l),
                    Err(e) => last_err = Some(e),
                }
            }
            match (out.is_empty(), last_err) {
                (true, Some(e)) => Err(e),
                (true, None) => Err(std::io::Error::other(format!(
                    "{addr}: no address to listen on"
                ))),
                _ => Ok(out),
            }
        }
    }
}

/// What a reload needs: the command line, the collectors and the instances running.
struct Topology {
    matches: ArgMatches,
    catalog: Catalog,
    services: HostServices,
    instances: Mutex<Instances>,
    /// Connections the listeners closed, kept across reloads.
    conn_stats: Arc<ConnStats>,
    /// Remote write's counters, kept across reloads.
    remote_stats: Arc<tidegauge_remote_write::Stats>,
    /// The remote-write destination running, and what stops it.
    remote: Mutex<Option<(Arc<RemoteWrite>, CancellationToken)>>,
}

async fn serve(topology: Topology, cfg: HostConfig, engine: Engine) -> std::io::Result<()> {
    let conn_stats = Arc::clone(&topology.conn_stats);
    let mut listeners = Vec::new();
    for addr in &cfg.web.listen_addresses {
        match bind(addr).await {
            Ok(ls) => listeners.extend(ls),
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot listen on {addr}: {e}"),
                ));
            }
        }
    }
    let shutdown = CancellationToken::new();
    let background = Arc::new(Mutex::new(shutdown.child_token()));
    engine.start_background(&lock(&background));
    let shared = SharedEngine::new(engine);
    if let Some((rw, token)) = lock(&topology.remote).as_mut() {
        *token = shutdown.child_token();
        rw.start(shared.clone(), token.clone());
    }

    let reload: ReloadFn = {
        let shared = shared.clone();
        let background = Arc::clone(&background);
        let shutdown = shutdown.clone();
        let running = Arc::new(Mutex::new(cfg.clone()));
        let topology = Arc::new(topology);
        Arc::new(move || {
            let shared = shared.clone();
            let background = Arc::clone(&background);
            let shutdown = shutdown.clone();
            let running = Arc::clone(&running);
            let topology = Arc::clone(&topology);
            async move { reload(&topology, &shared, &background, &shutdown, &running) }.boxed()
        })
    };
    // Checked by config::load already; read again here, then watched for changes.
    let web_config = match &cfg.web.config_file {
        Some(path) => Some(
            tidegauge_server::webconfig::Loader::open(path.clone())
                .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    let _watcher = web_config.as_ref().map(|l| AbortOnDrop(l.watch()));
    let settings = WebSettings {
        telemetry_path: cfg.web.telemetry_path.clone(),
        max_requests: cfg.web.max_requests,
        reload: Some(Arc::clone(&reload)),
        web_config: web_config.clone(),
    };
    let app = tidegauge_server::router(shared, settings);

    // Installed before the first "listening" line, so a signal from then on is never lost.
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate())?;
    let hup = signal(SignalKind::hangup())?;
    tokio::spawn(watch_signals(shutdown.clone(), reload, term, hup));
    let tls = web_config.filter(|l| l.tls().is_some());
    let limits = ConnLimits {
        read_header_timeout: cfg.web.read_header_timeout,
        read_timeout: cfg.web.read_timeout,
        idle_timeout: cfg.web.idle_timeout,
        max_connections: cfg.web.max_connections,
    };
    let mut servers = Vec::new();
    for listener in listeners {
        let addr = listener.local_addr()?;
        tracing::info!(address = %addr, tls = tls.is_some(), "listening");
        let app = app.clone();
        let (stats, stop) = (Arc::clone(&conn_stats), shutdown.clone());
        servers.push(match &tls {
            Some(loader) => {
                let listener =
                    tidegauge_server::tls::TlsListener::new(listener, Arc::clone(loader))?;
                tokio::spawn(conn::serve(listener, app, limits, stats, stop))
            }
            None => tokio::spawn(conn::serve(listener, app, limits, stats, stop)),
        });
    }
    for s in servers {
        match s.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(std::io::Error::other(e)),
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Re-reads the configuration and swaps the engine; a bad configuration changes nothing.
fn reload(
    topology: &Topology,
    shared: &SharedEngine,
    background: &Mutex<CancellationToken>,
    shutdown: &CancellationToken,
    running: &Mutex<HostConfig>,
) -> Result<String, String> {
    // One reload at a time: each builds from the instances the previous one left.
    let mut instances = lock(&topology.instances);
    let built = config::load(&topology.matches, &topology.services.env, &topology.catalog)
        .and_then(|cfg| {
            let running = shared.current();
            build_engine(
                &cfg,
                &topology.services,
                &topology.catalog,
                &instances,
                Some(running.access()),
                (&topology.conn_stats, &topology.remote_stats),
            )
            .map(|(engine, next)| (cfg, engine, next))
        })
        .and_then(|(cfg, engine, next)| {
            // Built again on every reload (secret files are re-read); the queue is handed over.
            let remote = lock(&topology.remote);
            let previous = remote.as_ref().map(|(rw, _)| &**rw);
            build_remote(&cfg, &topology.services, &topology.remote_stats, previous)
                .map(|rw| (cfg, engine, next, rw))
        });
    let (cfg, engine, next, remote) = built.map_err(|e| {
        tracing::error!(error = %e, "reload failed; keeping the running configuration");
        e.to_string()
    })?;
    *instances = next;
    drop(instances);
    let mut notes = Vec::new();
    {
        let old = lock(running);
        if old.web != cfg.web {
            notes.push("web settings (listen addresses, telemetry path, max requests) apply after a restart");
        }
        if old.log != cfg.log {
            notes.push("log settings apply after a restart");
        }
    }
    let token = shutdown.child_token();
    engine.start_background(&token);
    shared.replace(engine);
    let old_token = std::mem::replace(&mut *lock(background), token);
    old_token.cancel();
    {
        let mut running = lock(&topology.remote);
        if let Some((_, token)) = running.take() {
            token.cancel();
        }
        if let Some(rw) = remote {
            let token = shutdown.child_token();
            rw.start(shared.clone(), token.clone());
            *running = Some((rw, token));
        }
    }
    *lock(running) = cfg;
    for n in &notes {
        tracing::warn!("{n}");
    }
    tracing::info!("configuration reloaded");
    let mut msg = "configuration reloaded".to_owned();
    for n in notes {
        msg.push_str("; ");
        msg.push_str(n);
    }
    Ok(msg)
}

async fn watch_signals(
    shutdown: CancellationToken,
    reload: ReloadFn,
    mut term: tokio::signal::unix::Signal,
    mut hup: tokio::signal::unix::Signal,
) {
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = reload().await;
            }
        }
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
