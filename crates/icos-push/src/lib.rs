//! The `icos-push` collector: a push API compatible with the ICOS "Metrics Export to Prometheus"
//! service, whose pushed metrics are committed to an embedded store before a write is
//! acknowledged and are served on the host's `/metrics`.

pub mod model;
pub mod store;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tidegauge_core::{
    CollectError, Collector, HostServices, ScrapeContext, Snapshot, async_trait, unix_seconds,
};

use model::{Change, Limits, Metric, Registry, Rejection};
use store::{Store, Write};

/// The collector's name in configuration, flags and filters.
pub const NAME: &str = "icos-push";

/// Configuration (`[collectors.icos-push]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory of the embedded store (`icos-push.redb` inside it).
    pub data_dir: PathBuf,
    /// Largest accepted request body, in bytes (413 above).
    pub max_body_size: usize,
    /// Series over all pushed metrics.
    pub max_series: usize,
    /// Longest metric name, label value or HELP text, in bytes.
    pub max_label_length: usize,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            data_dir: PathBuf::from("tidegauge-data"),
            max_body_size: 1024 * 1024,
            max_series: limits.max_series,
            max_label_length: limits.max_label_length,
        }
    }
}

/// A configuration or start-up error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

struct Inner {
    registry: Mutex<Registry>,
    store: Store,
    settings: Mutex<(Limits, usize)>,
    services: HostServices,
}

/// Stores open in this process, by path: a reload reuses the open store (a database file can
/// be opened once) and only takes the new limits.
static OPEN: Mutex<Vec<(PathBuf, std::sync::Weak<Inner>)>> = Mutex::new(Vec::new());

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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl IcosPush {
    /// Opens the store under `config.data_dir` and restores every acknowledged write.
    pub fn open(config: &Config, services: &HostServices) -> Result<Self, ConfigError> {
        if config.max_body_size == 0 || config.max_series == 0 || config.max_label_length == 0 {
            return Err(ConfigError(
                "max_body_size, max_series and max_label_length must be greater than zero".into(),
            ));
        }
        let path = config.data_dir.join("icos-push.redb");
        let limits = Limits {
            max_series: config.max_series,
            max_label_length: config.max_label_length,
        };
        let mut open = lock(&OPEN);
        open.retain(|(_, w)| w.strong_count() > 0);
        let canonical =
            std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
        if let Some(inner) = open
            .iter()
            .find(|(p, _)| *p == canonical)
            .and_then(|(_, w)| w.upgrade())
        {
            *lock(&inner.settings) = (limits, config.max_body_size);
            return Ok(Self { inner });
        }
        let store = Store::open(&path)
            .map_err(|e| ConfigError(format!("data_dir {}: {e}", config.data_dir.display())))?;
        let mut metrics = Vec::new();
        for (key, bytes) in store.load().map_err(|e| ConfigError(e.to_string()))? {
            let m: Metric = serde_json::from_slice(&bytes).map_err(|e| {
                ConfigError(format!(
                    "{}: stored metric {key:?} is unreadable: {e}",
                    path.display()
                ))
            })?;
            metrics.push(m);
        }
        tracing::info!(path = %path.display(), metrics = metrics.len(), "icos-push store opened");
        let inner = Arc::new(Inner {
            registry: Mutex::new(Registry::restore(metrics)),
            store,
            settings: Mutex::new((limits, config.max_body_size)),
            services: services.clone(),
        });
        let canonical =
            std::fs::canonicalize(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
        open.push((canonical, Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The HTTP routes of the push API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/create_metric", post(create_metric))
            .route("/unregister_metric", post(unregister_metric))
            .route(
                "/healthz",
                get(|| async { json_response(StatusCode::OK, json!({"status": "ok"})) }),
            )
            .with_state(Arc::clone(&self.inner))
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
async fn json_body(inner: &Inner, body: Body) -> Result<Json, Response> {
    let max_body = lock(&inner.settings).1;
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
    change: impl FnOnce(&mut Registry) -> Result<Change, Rejection>,
    ok: &str,
) -> Response {
    let (pending, key, previous) = {
        let mut reg = lock(&inner.registry);
        let previous_key = reg.base_of(name);
        let previous = previous_key.as_deref().and_then(|k| reg.get(k).cloned());
        let (writes, key) = match change(&mut reg) {
            Err(r) => return rejection(r),
            Ok(Change::None) => {
                return json_response(
                    StatusCode::OK,
                    json!({"message": "Metric not found. You can create a new one."}),
                );
            }
            Ok(Change::Put(m)) => match serde_json::to_vec(&m) {
                Ok(bytes) => (vec![Write::Put(m.name.clone(), bytes)], m.name.clone()),
                Err(e) => {
                    reg.revert(&m.name, previous);
                    return json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"detail": format!("cannot encode the metric: {e}")}),
                    );
                }
            },
            Ok(Change::Delete(base)) => (vec![Write::Delete(base.clone())], base),
        };
        (inner.store.submit(writes), key, previous)
    };
    match pending.await {
        Ok(Ok(())) => json_response(StatusCode::OK, json!({"message": ok})),
        failure => {
            let reason = match failure {
                Ok(Err(e)) => e,
                _ => "the store's writer has stopped".to_owned(),
            };
            lock(&inner.registry).revert(&key, previous);
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
    let limits = lock(&inner.settings).0;
    apply(
        &inner,
        &req.name,
        |reg| reg.create(&req, now, &limits),
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
        |reg| reg.unregister(kind, &name),
        "Unregistered metric successfully.",
    )
    .await
}

#[async_trait]
impl Collector for IcosPush {
    fn name(&self) -> &str {
        NAME
    }

    async fn collect(&self, _ctx: &ScrapeContext) -> Result<Snapshot, CollectError> {
        Ok(lock(&self.inner.registry).snapshot())
    }

    fn routes(&self) -> Option<Router> {
        Some(self.router())
    }
}
