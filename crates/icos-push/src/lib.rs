//! The `icos-push` collector: a push API compatible with the ICOS "Metrics Export to Prometheus"
//! service, whose pushed metrics are committed to an embedded store before a write is
//! acknowledged and are served on the host's `/metrics`.

mod factory;
pub mod model;
pub mod openapi;
pub mod protobuf;
pub mod pushgateway;
pub mod store;
pub mod textformat;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tidegauge_core::lock;

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use tidegauge_core::{
    Access, CollectError, Collector, HostServices, Routes, ScrapeContext, Snapshot, async_trait,
    unix_seconds,
};

use model::{Change, Limits, Metric, Registry, Rejection};
use pushgateway::{F, Group, Groups, Method, STORE_PREFIX};
use store::{Store, Write};

pub use factory::Factory;

/// The collector's name in configuration, flags and filters.
pub const NAME: &str = "icos-push";

/// Configuration (`[collectors.icos-push]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the embedded store (`icos-push.redb` inside it); default: the host's data
    /// directory.
    pub data_dir: Option<PathBuf>,
    /// Largest accepted request body, in bytes (413 above).
    pub max_body_size: usize,
    /// Series over all pushed metrics.
    pub max_series: usize,
    /// Longest metric name, label value or HELP text, in bytes.
    pub max_label_length: usize,
    /// Series in one Pushgateway group.
    pub max_group_series: usize,
    /// Default time-to-live of Pushgateway groups (none: they stay until deleted). A push can
    /// set its own with the `X-Push-TTL` header.
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize_opt")]
    pub push_ttl: Option<std::time::Duration>,
    /// `PUT /api/v1/admin/wipe` deletes every Pushgateway group (the Pushgateway's
    /// `--web.enable-admin-api`); off by default.
    pub admin_api: bool,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            data_dir: None,
            max_body_size: 1024 * 1024,
            max_series: limits.max_series,
            max_label_length: limits.max_label_length,
            max_group_series: 10_000,
            push_ttl: None,
            admin_api: false,
        }
    }
}

/// A configuration or start-up error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Everything pushed: ICOS metrics and Pushgateway groups share one lock, so their writes reach
/// the store in the order they were decided.
struct Pushed {
    registry: Registry,
    groups: Groups,
    expired: u64,
    /// The store epoch this state is consistent with (see [`Store::submit_in`]).
    epoch: u64,
    /// Bumped by every change, so an unchanged exposition can be handed out again.
    generation: u64,
}

impl Pushed {
    /// Removes the groups expired at `now`, counts them and marks the state changed; returns
    /// the store deletions to queue.
    fn expire(&mut self, now: f64) -> Vec<Write> {
        let expired = self.groups.expire(now);
        if !expired.is_empty() {
            self.expired += expired.len() as u64;
            self.generation += 1;
        }
        expired
            .iter()
            .map(|g| {
                tracing::info!(group = ?g.key, "push group expired");
                Write::Delete(g.store_key())
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    limits: Limits,
    max_body: usize,
    max_group_series: usize,
    push_ttl: Option<std::time::Duration>,
    admin_api: bool,
}

/// What an exposition was built from: the state's generation and the store's commit count.
type ExpositionKey = (u64, u64);

/// What outlives a reload: the store and the state restored from it.
struct Durable {
    state: Mutex<Pushed>,
    store: Store,
    /// The exposition of one generation of the state and commit count.
    shared: Mutex<Option<(ExpositionKey, Arc<Snapshot>)>>,
    started: std::time::SystemTime,
    /// The data directory, canonical: a reload naming the same one keeps this store open (a
    /// database file can be opened once).
    dir: PathBuf,
}

struct Inner {
    durable: Arc<Durable>,
    settings: Settings,
    services: HostServices,
}

impl Durable {
    fn open(data_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let path = data_dir.join("icos-push.redb");
        let store = Store::open(&path)
            .map_err(|e| ConfigError(format!("data_dir {}: {e}", data_dir.display())))?;
        let (metrics, groups) =
            load_state(&store).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), metrics = metrics.len(), groups = groups.len(), "icos-push store opened");
        Ok(Self {
            state: Mutex::new(Pushed {
                registry: Registry::restore(metrics),
                groups: Groups::restore(groups),
                expired: 0,
                epoch: store.epoch(),
                generation: 0,
            }),
            store,
            shared: Mutex::new(None),
            started: std::time::SystemTime::now(),
            dir: std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()),
        })
    }
}

/// The icos-push collector.
#[derive(Clone)]
pub struct IcosPush {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IcosPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcosPush").finish_non_exhaustive()
    }
}

impl IcosPush {
    /// Opens the store under the data directory (`config.data_dir`, else the host's) and
    /// restores every acknowledged write. `previous` is the running instance on a reload: its
    /// store stays open when the directory is the same.
    pub fn open(
        config: &Config,
        services: &HostServices,
        previous: Option<&IcosPush>,
    ) -> Result<Self, ConfigError> {
        if config.max_body_size == 0 || config.max_series == 0 || config.max_label_length == 0 {
            return Err(ConfigError(
                "max_body_size, max_series and max_label_length must be greater than zero".into(),
            ));
        }
        let data_dir = config
            .data_dir
            .clone()
            .unwrap_or_else(|| services.data_dir.clone());
        let settings = Settings {
            limits: Limits {
                max_series: config.max_series,
                max_label_length: config.max_label_length,
            },
            max_body: config.max_body_size,
            max_group_series: config.max_group_series,
            push_ttl: config.push_ttl,
            admin_api: config.admin_api,
        };
        let canonical = std::fs::canonicalize(&data_dir).unwrap_or_else(|_| data_dir.clone());
        let durable = match previous {
            Some(p) if p.inner.durable.dir == canonical => Arc::clone(&p.inner.durable),
            _ => Arc::new(Durable::open(&data_dir)?),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                durable,
                settings,
                services: services.clone(),
            }),
        })
    }

    /// The HTTP routes of the push API, with the access each needs.
    pub fn routes(&self) -> Routes {
        let state = Arc::clone(&self.inner);
        Routes::new()
            .route(
                "/create_metric",
                Access::Write,
                post(create_metric).with_state(Arc::clone(&state)),
            )
            .route(
                "/unregister_metric",
                Access::Write,
                post(unregister_metric).with_state(Arc::clone(&state)),
            )
            .route(
                "/api/v1/admin/wipe",
                Access::Write,
                axum::routing::put(wipe).with_state(Arc::clone(&state)),
            )
            .route(
                "/metrics/{*grouping}",
                Access::Write,
                axum::routing::put(push_put)
                    .post(push_post)
                    .delete(push_delete)
                    .with_state(Arc::clone(&state)),
            )
            .route(
                "/healthz",
                Access::Public,
                get(|| async { json_response(StatusCode::OK, json!({"status": "ok"})) }),
            )
            .route(
                "/api/v1/metrics",
                Access::Read,
                get(api_metrics).with_state(Arc::clone(&state)),
            )
            .route(
                "/api/v1/status",
                Access::Read,
                get(api_status).with_state(state),
            )
            .route(
                "/openapi.json",
                Access::Public,
                get(|| async { json_response(StatusCode::OK, openapi::document()) }),
            )
            .route(
                "/docs",
                Access::Public,
                get(|| async {
                    (
                        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        openapi::page(&openapi::document()),
                    )
                }),
            )
    }
}

/// Every record of the store, decoded.
fn load_state(store: &Store) -> Result<(Vec<Metric>, Vec<Group>), String> {
    let mut metrics = Vec::new();
    let mut groups = Vec::new();
    for (key, bytes) in store.load().map_err(|e| e.to_string())? {
        let unreadable = |e: serde_json::Error| format!("stored record {key:?} is unreadable: {e}");
        if key.starts_with(STORE_PREFIX) {
            groups.push(serde_json::from_slice::<Group>(&bytes).map_err(unreadable)?);
        } else {
            metrics.push(serde_json::from_slice::<Metric>(&bytes).map_err(unreadable)?);
        }
    }
    Ok((metrics, groups))
}

/// After a failed commit the in-memory state may hold changes that never reached the disk, and
/// later changes may rest on them: throw it away and reload what the store holds.
fn resync(inner: &Inner) {
    let mut state = lock(&inner.durable.state);
    let epoch = inner.durable.store.epoch();
    if state.epoch == epoch {
        return;
    }
    match load_state(&inner.durable.store) {
        Ok((metrics, groups)) => {
            state.registry = Registry::restore(metrics);
            state.groups = Groups::restore(groups);
            state.epoch = epoch;
            state.generation += 1;
            tracing::warn!("icos-push state reloaded from the store after a failed write");
        }
        Err(e) => {
            tracing::error!(error = %e, "icos-push cannot reload its store; writes are refused until a restart");
        }
    }
}

fn json_response(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn rejection(r: Rejection) -> Response {
    match r {
        Rejection::Bad(msg) => json_response(StatusCode::BAD_REQUEST, json!({"detail": msg})),
        Rejection::Schema(errors) => {
            json_response(StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": errors}))
        }
    }
}

/// Reads and parses a JSON body within the size limit.
// The error is the answer to send; handlers return it as is.
#[allow(clippy::result_large_err)]
async fn json_body(inner: &Inner, body: Body) -> Result<Json, Response> {
    let max_body = inner.settings.max_body;
    let bytes = to_bytes(body, max_body).await.map_err(|_| {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"detail": format!("request body exceeds the limit of {max_body} bytes")}),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        rejection(Rejection::Schema(vec![json!({
            "type": "json_invalid", "loc": ["body", e.column()], "msg": "JSON decode error",
            "input": {}, "ctx": {"error": e.to_string()}})]))
    })
}

/// Applies a change under the registry lock, queues its write in the same order, and answers
/// only once the write is on disk; a failed commit undoes the change.
async fn apply(
    inner: &Inner,
    name: &str,
    change: impl FnOnce(&mut Registry, &Groups) -> Result<Change, Rejection>,
    ok: &str,
) -> Response {
    let pending = {
        let mut state = lock(&inner.durable.state);
        let Pushed {
            registry: reg,
            groups,
            generation,
            ..
        } = &mut *state;
        let reg: &mut Registry = reg;
        let previous_key = reg.base_of(name);
        let previous = previous_key.as_deref().and_then(|k| reg.get(k).cloned());
        let writes = match change(reg, groups) {
            Err(r) => return rejection(r),
            Ok(Change::None) => {
                return json_response(
                    StatusCode::OK,
                    json!({"message": "Metric not found. You can create a new one."}),
                );
            }
            Ok(Change::Put(m)) => match serde_json::to_vec(&m) {
                Ok(bytes) => vec![Write::Put(m.name.clone(), bytes)],
                Err(e) => {
                    reg.revert(&m.name, previous);
                    return json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"detail": format!("cannot encode the metric: {e}")}),
                    );
                }
            },
            Ok(Change::Delete(base)) => vec![Write::Delete(base)],
        };
        *generation += 1;
        inner.durable.store.submit_in(state.epoch, writes)
    };
    match pending.await {
        Ok(Ok(())) => json_response(StatusCode::OK, json!({"message": ok})),
        failure => {
            let reason = match failure {
                Ok(Err(e)) => e,
                _ => "the store's writer has stopped".to_owned(),
            };
            resync(inner);
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": format!("the write could not be stored and was not applied: {reason}")}),
            )
        }
    }
}

async fn create_metric(State(inner): State<Arc<Inner>>, body: Body) -> Response {
    let body = match json_body(&inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match model::parse_create(&body) {
        Ok(r) => r,
        Err(r) => return rejection(r),
    };
    let now = unix_seconds(inner.services.clock.now());
    let limits = inner.settings.limits;
    apply(
        &inner,
        &req.name,
        |reg, groups| {
            let sent = req.name.trim();
            let base = sent.strip_suffix("_total").unwrap_or(sent);
            for n in [sent.to_owned(), base.to_owned(), format!("{base}_total"), format!("{base}_created"), format!("{base}_info")] {
                if groups.occupies(&n) || n == "push_time_seconds" || n == "push_failure_time_seconds" {
                    return Err(Rejection::Bad(format!("Metric name {n:?} is taken by the Pushgateway routes (a pushed metric, or their push_time_seconds and push_failure_time_seconds).")));
                }
            }
            if let Some(reason) = inner.services.names.conflict(base, req.kind.metric_type()) {
                return Err(Rejection::Bad(reason));
            }
            reg.create(&req, now, &limits)
        },
        "Metric updated successfully.",
    )
    .await
}

async fn unregister_metric(State(inner): State<Arc<Inner>>, body: Body) -> Response {
    let body = match json_body(&inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (kind, name) = match model::parse_unregister(&body) {
        Ok(r) => r,
        Err(r) => return rejection(r),
    };
    if name.trim().is_empty() {
        return rejection(Rejection::Bad("metric_name is required.".into()));
    }
    apply(
        &inner,
        &name,
        |reg, _| reg.unregister(kind, &name),
        "Unregistered metric successfully.",
    )
    .await
}

fn text_response(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    if !msg.is_empty() && !msg.ends_with('\n') {
        msg.push('\n');
    }
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        msg,
    )
        .into_response()
}

// The error is the answer to send; handlers return it as is.
#[allow(clippy::result_large_err)]
fn grouping_of(uri: &axum::http::Uri) -> Result<tidegauge_core::Labels, Response> {
    let raw = uri.path().strip_prefix("/metrics/").unwrap_or("");
    pushgateway::grouping_key(raw).map_err(|e| text_response(StatusCode::BAD_REQUEST, e))
}

async fn push_put(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    push(&inner, Method::Put, &uri, &headers, body).await
}

async fn push_post(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    push(&inner, Method::Post, &uri, &headers, body).await
}

/// Deletes every group in one commit; 202 as the Pushgateway answers.
async fn wipe(State(inner): State<Arc<Inner>>) -> Response {
    if !inner.settings.admin_api {
        return text_response(
            StatusCode::FORBIDDEN,
            "the admin API is disabled; set admin_api = true in [collectors.icos-push]",
        );
    }
    let pending = {
        let mut state = lock(&inner.durable.state);
        let keys: Vec<_> = state.groups.all().map(|g| g.key.clone()).collect();
        if keys.is_empty() {
            return text_response(StatusCode::ACCEPTED, "");
        }
        let writes = keys
            .iter()
            .filter_map(|k| state.groups.remove(k))
            .map(|g| Write::Delete(g.store_key()))
            .collect();
        state.generation += 1;
        inner.durable.store.submit_in(state.epoch, writes)
    };
    deleted(&inner, pending, "wipe").await
}

/// 202 once a deletion is on disk; otherwise the state is reloaded and the answer is 503.
async fn deleted(
    inner: &Inner,
    pending: tokio::sync::oneshot::Receiver<Result<(), String>>,
    what: &str,
) -> Response {
    match pending.await {
        Ok(Ok(())) => text_response(StatusCode::ACCEPTED, ""),
        _ => {
            resync(inner);
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the {what} could not be stored and was not applied"),
            )
        }
    }
}

async fn push_delete(State(inner): State<Arc<Inner>>, uri: axum::http::Uri) -> Response {
    let key = match grouping_of(&uri) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let pending = {
        let mut state = lock(&inner.durable.state);
        match state.groups.remove(&key) {
            None => return text_response(StatusCode::ACCEPTED, ""),
            Some(g) => {
                state.generation += 1;
                inner
                    .durable
                    .store
                    .submit_in(state.epoch, vec![Write::Delete(g.store_key())])
            }
        }
    };
    deleted(&inner, pending, "deletion").await
}

/// Reads a pushed body within the size limit, undoes its `Content-Encoding` (gzip, snappy) and
/// parses it as the text format or, by `Content-Type`, delimited protobuf.
// The error is the answer to send; handlers return it as is.
#[allow(clippy::result_large_err)]
async fn push_body(
    inner: &Inner,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<Vec<textformat::ParsedFamily>, Response> {
    let (max_body, max_samples) = {
        let s = inner.settings;
        (s.max_body, s.max_group_series)
    };
    let bytes = to_bytes(body, max_body).await.map_err(|_| {
        text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the limit of {max_body} bytes"),
        )
    })?;
    let header = |name: axum::http::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let protobuf = protobuf::is_protobuf(content_type)
        .map_err(|e| text_response(StatusCode::UNSUPPORTED_MEDIA_TYPE, e))?;
    // A compressed body may expand to at most ten times the body limit.
    let limit = (max_body as u64).saturating_mul(10);
    let inflate = |reader: &mut dyn std::io::Read, what: &str| {
        use std::io::Read;
        let mut out = Vec::new();
        reader
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| text_response(StatusCode::BAD_REQUEST, format!("bad {what} body: {e}")))?;
        if out.len() as u64 > limit {
            return Err(text_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decompressed body exceeds {limit} bytes"),
            ));
        }
        Ok(out)
    };
    let bytes = match header(axum::http::header::CONTENT_ENCODING).as_str() {
        "" | "identity" => bytes.to_vec(),
        "gzip" => inflate(&mut flate2::read::MultiGzDecoder::new(&bytes[..]), "gzip")?,
        "snappy" => inflate(&mut snap::read::FrameDecoder::new(&bytes[..]), "snappy")?,
        other => {
            return Err(text_response(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {other:?}; use gzip, snappy or none"),
            ));
        }
    };
    if protobuf {
        return protobuf::parse_limited(&bytes, max_samples)
            .map_err(|e| text_response(StatusCode::BAD_REQUEST, e));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| text_response(StatusCode::BAD_REQUEST, "body is not UTF-8 text"))?;
    textformat::parse_limited(&text, max_samples)
        .map_err(|e| text_response(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn push(
    inner: &Inner,
    method: Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Response {
    let key = match grouping_of(uri) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let parsed = match push_body(inner, headers, body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let settings = inner.settings;
    let families = pushgateway::decorate(&key, parsed);
    let new_series: usize = families
        .iter()
        .map(pushgateway::StoredFamily::series_count)
        .sum();
    if new_series > settings.max_group_series {
        return text_response(
            StatusCode::BAD_REQUEST,
            format!(
                "push of {new_series} series exceeds the limit of {} series per group",
                settings.max_group_series
            ),
        );
    }
    let max_len = settings.limits.max_label_length;
    for f in &families {
        if f.name.len() > max_len
            || f.help.len() > max_len
            || f.series
                .iter()
                .any(|(l, _)| l.iter().any(|(_, v)| v.len() > max_len))
        {
            return text_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}: names, label values and help texts are limited to {max_len} bytes",
                    f.name
                ),
            );
        }
    }
    let ttl = match headers
        .get("x-push-ttl")
        .map(|v| v.to_str().map(tidegauge_core::duration::parse))
    {
        None => settings.push_ttl,
        Some(Ok(Ok(d))) if !d.is_zero() => Some(d),
        Some(Ok(Ok(_))) => None,
        _ => {
            return text_response(
                StatusCode::BAD_REQUEST,
                "X-Push-TTL: expected a duration such as \"10m\" or a number of seconds",
            );
        }
    };
    let now = unix_seconds(inner.services.clock.now());
    let (pending, outcome) = {
        let mut state = lock(&inner.durable.state);
        // Expired groups go first: they must not count in limits or consistency checks.
        let mut writes = state.expire(now);
        let registry = &state.registry;
        let names = &inner.services.names;
        let taken = |n: &str, family: &str, kind: tidegauge_core::MetricType| {
            if registry.occupies(n) || n.starts_with("tidegauge_") {
                Some(format!(
                    "metric name {n:?} is already exposed by a registered metric or the host"
                ))
            } else {
                names.conflict(family, kind)
            }
        };
        let candidate = state.groups.candidate(&key, method, families, now, &taken);
        let (group, outcome) = match candidate {
            Ok(mut g) => {
                // Limits apply to the group as it would be (a POST keeps other families).
                let group_series: usize = g
                    .families
                    .iter()
                    .map(pushgateway::StoredFamily::series_count)
                    .sum();
                let old_series = state.groups.get(&key).map_or(0, |o| {
                    o.families
                        .iter()
                        .map(pushgateway::StoredFamily::series_count)
                        .sum()
                });
                let total = state.registry.series_count() + state.groups.series_count()
                    - old_series
                    + group_series;
                let over = if group_series > settings.max_group_series {
                    Some(format!(
                        "the group would hold {group_series} series, over the limit of {} per group",
                        settings.max_group_series
                    ))
                } else if total > settings.limits.max_series {
                    Some(format!(
                        "the series limit ({}) would be exceeded",
                        settings.limits.max_series
                    ))
                } else {
                    None
                };
                if let Some(reason) = over {
                    // The expiries already applied in memory still go to the store; nobody
                    // waits for them, and a failure there reloads the state as usual.
                    if !writes.is_empty() {
                        drop(inner.durable.store.submit_in(state.epoch, writes));
                    }
                    return text_response(StatusCode::BAD_REQUEST, reason);
                }
                g.expires = ttl.map(|d| F(now + d.as_secs_f64()));
                (g, Ok(()))
            }
            Err((reason, g)) => (g, Err(reason)),
        };
        let bytes = serde_json::to_vec(&group).unwrap_or_default();
        writes.push(Write::Put(group.store_key(), bytes));
        let pending = inner.durable.store.submit_in(state.epoch, writes);
        state.groups.put(group);
        state.generation += 1;
        (pending, outcome)
    };
    match pending.await {
        Ok(Ok(())) => match outcome {
            Ok(()) => text_response(StatusCode::OK, ""),
            Err(reason) => text_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "pushed metrics are invalid or inconsistent with existing metrics: {reason}"
                ),
            ),
        },
        _ => {
            resync(inner);
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the push could not be stored and was not applied",
            )
        }
    }
}

fn rfc3339(t: f64) -> String {
    chrono::DateTime::from_timestamp(t.floor() as i64, ((t.fract()) * 1e9) as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

async fn api_metrics(State(inner): State<Arc<Inner>>) -> Response {
    let state = lock(&inner.durable.state);
    let mut data = Vec::new();
    for g in state.groups.all() {
        let labels: serde_json::Map<String, Json> = g
            .key
            .iter()
            .map(|(k, v)| (k.clone(), Json::from(v.clone())))
            .collect();
        let mut entry = serde_json::Map::new();
        entry.insert("labels".into(), Json::Object(labels.clone()));
        entry.insert(
            "last_push_successful".into(),
            Json::from(g.push_time.0 >= g.failure_time.0),
        );
        for f in &g.families {
            let fam = pushgateway::to_family(f);
            let metrics: Vec<Json> = fam
                .samples
                .iter()
                .map(|s| {
                    let l: serde_json::Map<String, Json> = s.labels.iter().map(|(k, v)| (k.clone(), Json::from(v.clone()))).collect();
                    match &s.value {
                        tidegauge_core::Value::Number(v) => json!({"labels": l, "value": v.to_string()}),
                        tidegauge_core::Value::Histogram { buckets, sum, count } => json!({
                            "labels": l,
                            "buckets": buckets.iter().map(|(le, c)| (le.to_string(), c.to_string())).collect::<BTreeMap<_, _>>(),
                            "count": count.to_string(),
                            "sum": sum.to_string(),
                        }),
                        tidegauge_core::Value::Summary { quantiles, sum, count } => json!({
                            "labels": l,
                            "quantiles": quantiles.iter().map(|(q, v)| (q.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                            "count": count.to_string(),
                            "sum": sum.to_string(),
                        }),
                    }
                })
                .collect();
            entry.insert(
                f.name.clone(),
                json!({"time_stamp": rfc3339(g.push_time.0), "type": f.kind.to_ascii_uppercase(), "help": f.help, "metrics": metrics}),
            );
        }
        for (name, t) in [
            ("push_time_seconds", g.push_time.0),
            ("push_failure_time_seconds", g.failure_time.0),
        ] {
            entry.insert(
                name.into(),
                json!({"time_stamp": rfc3339(g.push_time.0), "type": "GAUGE", "help": "", "metrics": [{"labels": labels, "value": t.to_string()}]}),
            );
        }
        data.push(Json::Object(entry));
    }
    json_response(StatusCode::OK, json!({"status": "success", "data": data}))
}

async fn api_status(State(inner): State<Arc<Inner>>) -> Response {
    let settings = inner.settings;
    json_response(
        StatusCode::OK,
        json!({"status": "success", "data": {
            "build_information": {"version": env!("CARGO_PKG_VERSION"), "program": "tidegauge icos-push"},
            "flags": {
                "max_body_size": settings.max_body.to_string(),
                "max_series": settings.limits.max_series.to_string(),
                "max_group_series": settings.max_group_series.to_string(),
                "push_ttl": settings.push_ttl.map(|d| format!("{}s", d.as_secs_f64())).unwrap_or_default(),
            },
            "start_time": rfc3339(unix_seconds(inner.durable.started)),
        }}),
    )
}

#[async_trait]
impl Collector for IcosPush {
    fn name(&self) -> &str {
        NAME
    }

    /// The same `Arc` while nothing changed: the host then reuses its checks and encoding.
    async fn collect(&self, ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        let now = unix_seconds(ctx.now());
        let pending = {
            let mut state = lock(&self.inner.durable.state);
            let deletes = state.expire(now);
            (!deletes.is_empty()).then(|| self.inner.durable.store.submit_in(state.epoch, deletes))
        };
        if let Some(p) = pending
            && !matches!(p.await, Ok(Ok(())))
        {
            tracing::warn!(
                "expired push groups could not be removed from the store; they will be removed again after a restart"
            );
        }
        let stats = self.inner.durable.store.stats();
        let load =
            |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;
        let state = lock(&self.inner.durable.state);
        // A change bumps the generation before its commit ends, so the commit count is part of
        // the key: the commit counters are current at every scrape.
        let key = (
            state.generation,
            stats.commits.load(std::sync::atomic::Ordering::Acquire),
        );
        let mut shared = lock(&self.inner.durable.shared);
        if let Some((at, snap)) = shared.as_ref()
            && *at == key
        {
            return Ok(Arc::clone(snap));
        }
        let mut snap = state.registry.snapshot();
        snap.families.extend(state.groups.snapshot().families);
        for f in &mut snap.families {
            // Pushed by clients: where another source owns a name, the host joins the series
            // to its family or drops them.
            f.guest = true;
        }
        snap.push(
            tidegauge_core::MetricFamily::counter(
                "tidegauge_icos_push_expired_groups",
                "Pushgateway groups removed because their time-to-live passed.",
            )
            .with(vec![], state.expired as f64),
        );
        snap.push(
            tidegauge_core::MetricFamily::counter(
                "tidegauge_icos_push_store_commits",
                "Store transactions committed (each one fsync); concurrent writes share one.",
            )
            .with(vec![], load(&stats.commits)),
        );
        snap.push(
            tidegauge_core::MetricFamily::counter(
                "tidegauge_icos_push_store_committed_requests",
                "Write requests carried by those transactions.",
            )
            .with(vec![], load(&stats.requests)),
        );
        snap.push(
            tidegauge_core::MetricFamily::counter(
                "tidegauge_icos_push_store_commit_seconds",
                "Time spent committing.",
            )
            .with(vec![], load(&stats.commit_micros) / 1e6),
        );
        let snap = Arc::new(snap);
        *shared = Some((key, Arc::clone(&snap)));
        Ok(snap)
    }

    fn routes(&self) -> Routes {
        IcosPush::routes(self)
    }
}
