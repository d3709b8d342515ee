//! The `icos-push` collector: a push API compatible with the ICOS "Metrics Export to Prometheus"
//! service, whose pushed metrics are committed to an embedded store before a write is
//! acknowledged and are served on the host's `/metrics`.

mod api;
mod body;
mod collector;
mod factory;
pub mod forecast;
pub mod grafana;
mod icos_routes;
pub mod intelligence;
pub mod model;
mod model_routes;
pub mod models;
pub mod openapi;
pub mod protobuf;
mod push_routes;
pub mod pushgateway;
pub mod records;
mod state;
pub mod store;
pub mod telemetry;
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
use pushgateway::{Group, Groups, Method};
use store::{Store, Write};

pub use factory::Factory;

use {api::*, body::*, icos_routes::*, model_routes::*, push_routes::*, state::*};

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
    /// Pushgateway groups; a push creating one more is a 400.
    pub max_groups: usize,
    /// Default time-to-live of Pushgateway groups (none: they stay until deleted). A push can
    /// set its own with the `X-Push-TTL` header.
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize_opt")]
    pub push_ttl: Option<std::time::Duration>,
    /// `PUT /api/v1/admin/wipe` deletes every Pushgateway group (the Pushgateway's
    /// `--web.enable-admin-api`); off by default.
    pub admin_api: bool,
    /// Model metrics: telemetry source, remote Intelligence API, step.
    pub models: models::ModelsConfig,
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
            max_groups: 10_000,
            push_ttl: None,
            admin_api: false,
            models: models::ModelsConfig::default(),
        }
    }
}

/// A configuration or start-up error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The icos-push collector.
#[derive(Clone)]
pub struct IcosPush {
    inner: Arc<Inner>,
}

/// A wrong method on an ICOS route, answered as FastAPI answers it (JSON clients parse it).
async fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"detail": "Method Not Allowed"}),
    )
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
        let settings = Self::settings(config)?;
        let models = Arc::new(ModelSettings::new(&config.models, &services.env)?);
        let data_dir = config
            .data_dir
            .clone()
            .unwrap_or_else(|| services.data_dir.clone());
        let canonical = std::fs::canonicalize(&data_dir).unwrap_or_else(|_| data_dir.clone());
        let durable = match previous {
            Some(p) if p.inner.durable.dir == canonical => Arc::clone(&p.inner.durable),
            Some(p) => {
                tracing::warn!(from = %p.inner.durable.dir.display(), to = %data_dir.display(), "data_dir changed: pushed metrics are now served from another store");
                Arc::new(Durable::open(&data_dir)?)
            }
            None => Arc::new(Durable::open(&data_dir)?),
        };
        let inner = Arc::new(Inner {
            durable,
            settings,
            models,
            services: services.clone(),
        });
        inner.durable.models.attach(&inner);
        Ok(Self { inner })
    }

    /// Makes the store's next `n` commits fail (a full disk, a failed fsync): for tests.
    #[doc(hidden)]
    pub fn fail_commits(&self, n: u32) {
        self.inner.durable.store.fail_commits(n);
    }

    /// The settings a configuration gives, checked (no store is opened).
    fn settings(config: &Config) -> Result<Settings, ConfigError> {
        if config.max_body_size == 0 || config.max_series == 0 || config.max_label_length == 0 {
            return Err(ConfigError(
                "max_body_size, max_series and max_label_length must be greater than zero".into(),
            ));
        }
        Ok(Settings {
            limits: Limits {
                max_series: config.max_series,
                max_label_length: config.max_label_length,
            },
            max_body: config.max_body_size,
            max_group_series: config.max_group_series,
            max_groups: config.max_groups,
            push_ttl: config.push_ttl,
            admin_api: config.admin_api,
        })
    }

    /// Checks a configuration without opening the store (for `--check-config`, which must not
    /// touch or lock the data a running instance uses).
    pub fn check(config: &Config) -> Result<(), ConfigError> {
        Self::check_with(config, &tidegauge_core::factory::Environment::process())
    }

    /// [`IcosPush::check`] with the original's variables read from `env`.
    pub fn check_with(
        config: &Config,
        env: &tidegauge_core::factory::Environment,
    ) -> Result<(), ConfigError> {
        Self::settings(config)?;
        ModelSettings::new(&config.models, env).map(|_| ())
    }

    /// The HTTP routes of the push API, with the access each needs.
    pub fn routes(&self) -> Routes {
        let state = Arc::clone(&self.inner);
        Routes::new()
            .route(
                "/create_metric",
                Access::Write,
                post(create_metric)
                    .fallback(method_not_allowed)
                    .with_state(Arc::clone(&state)),
            )
            .route(
                "/unregister_metric",
                Access::Write,
                post(unregister_metric)
                    .fallback(method_not_allowed)
                    .with_state(Arc::clone(&state)),
            )
            .route(
                "/create_model_metric",
                Access::Write,
                post(create_model_metric)
                    .fallback(method_not_allowed)
                    .with_state(Arc::clone(&state)),
            )
            .route(
                "/stop_model_metrics",
                Access::Write,
                post(stop_model_metrics)
                    .fallback(method_not_allowed)
                    .with_state(Arc::clone(&state)),
            )
            .route(
                "/train_model_metric",
                Access::Write,
                post(train_model_metric)
                    .fallback(method_not_allowed)
                    .with_state(Arc::clone(&state)),
            )
            .route(
                "/show_models",
                Access::Write,
                post(show_models)
                    .fallback(method_not_allowed)
                    .with_state(Arc::clone(&state)),
            )
            .route(
                "/remove_model",
                Access::Write,
                post(remove_model)
                    .fallback(method_not_allowed)
                    .with_state(Arc::clone(&state)),
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
                get(api_metrics)
                    .options(api_options)
                    .with_state(Arc::clone(&state)),
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
