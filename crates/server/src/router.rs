//! The HTTP surface: `/metrics`, `/probe`, the landing page, health, readiness and reload.

use crate::webconfig;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on};
use futures_util::future::BoxFuture;
use tidegauge_core::encode::{Format, encode};
use tidegauge_core::{Access, MetricFamily, ProbeError, Snapshot};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;

use crate::deadline::{SCRAPE_TIMEOUT_HEADER, scrape_budget};
use crate::engine::Engine;
use crate::negotiate::negotiate;

/// Reloads the configuration; answers what was done or why nothing was.
pub type ReloadFn = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// The engine currently serving; replaced whole on reload.
#[derive(Debug, Clone)]
pub struct SharedEngine(Arc<RwLock<Arc<Engine>>>);

impl SharedEngine {
    /// Wraps an engine.
    pub fn new(engine: Engine) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(engine))))
    }

    /// The engine now serving.
    pub fn current(&self) -> Arc<Engine> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Replaces the engine; returns the previous one.
    pub fn replace(&self, engine: Engine) -> Arc<Engine> {
        let mut guard = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *guard, Arc::new(engine))
    }
}

/// Router settings.
#[derive(Clone)]
pub struct WebSettings {
    /// Path of the metrics route (`--web.telemetry-path`).
    pub telemetry_path: String,
    /// Requests to `/metrics`, `/probe` and `/` in flight at once; 0 = unlimited.
    pub max_requests: usize,
    /// Called by `POST /-/reload`.
    pub reload: Option<ReloadFn>,
    /// The exporter-toolkit web configuration file (`--web.config.file`), through its loader.
    pub web_config: Option<Arc<webconfig::Loader>>,
}

impl std::fmt::Debug for WebSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSettings")
            .field("telemetry_path", &self.telemetry_path)
            .field("max_requests", &self.max_requests)
            .finish_non_exhaustive()
    }
}

impl Default for WebSettings {
    fn default() -> Self {
        Self {
            telemetry_path: "/metrics".into(),
            max_requests: 40,
            reload: None,
            web_config: None,
        }
    }
}

#[derive(Clone)]
struct AppState {
    engine: SharedEngine,
    settings: Arc<WebSettings>,
    limiter: Option<Arc<Semaphore>>,
}

const TEXT: &str = "text/plain; charset=utf-8";

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (status, [(header::CONTENT_TYPE, TEXT)], body).into_response()
}

/// 404 for a path nobody serves. A client that sent or accepts JSON gets
/// `{"detail":"Not Found"}` (FastAPI's shape, which the ICOS service's clients parse, and the
/// `detail` member of RFC 9457); everyone else gets text, as exporters answer.
pub fn not_found(headers: &HeaderMap) -> Response {
    if wants_json(headers) {
        let mut resp = (StatusCode::NOT_FOUND, r#"{"detail":"Not Found"}"#).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    } else {
        text(StatusCode::NOT_FOUND, "not found")
    }
}

fn wants_json(headers: &HeaderMap) -> bool {
    let names_json = |name: header::HeaderName| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|part| part.trim().parse::<mime::Mime>().ok())
            .any(|m| {
                (m.type_() == mime::APPLICATION && m.subtype() == mime::JSON)
                    || m.suffix() == Some(mime::JSON)
            })
    };
    names_json(header::CONTENT_TYPE) || names_json(header::ACCEPT)
}

/// The paths the host serves itself with this telemetry path; collectors may not declare them.
pub fn host_paths(telemetry_path: &str) -> Vec<String> {
    let mut paths = vec![
        telemetry_path.to_owned(),
        "/probe".to_owned(),
        "/-/healthy".to_owned(),
        "/-/ready".to_owned(),
        "/-/reload".to_owned(),
        "/".to_owned(),
    ];
    if telemetry_path != "/" && !telemetry_path.ends_with('/') {
        paths.push(format!("{telemetry_path}/"));
    }
    paths
}

/// Builds the host's router.
pub fn router(engine: SharedEngine, settings: WebSettings) -> Router {
    let limiter =
        (settings.max_requests > 0).then(|| Arc::new(Semaphore::new(settings.max_requests)));
    let telemetry = settings.telemetry_path.clone();
    let state = AppState {
        engine,
        settings: Arc::new(settings),
        limiter,
    };
    let level =
        |access: Access| middleware::from_fn_with_state((state.clone(), access), enforce_current);
    let mut limited = Router::new().route(&telemetry, get(metrics));
    if telemetry != "/" && !telemetry.ends_with('/') {
        // Scrapers and probes that do not follow redirects get the same answer with the slash.
        limited = limited.route(&format!("{telemetry}/"), get(metrics));
    }
    if telemetry != "/" {
        // The landing page renders every collector's status: it counts toward the limit too.
        limited = limited.route("/", get(landing));
    }
    let limited = limited
        .route("/probe", get(probe))
        .route_layer(middleware::from_fn_with_state(state.clone(), limit))
        .route_layer(level(Access::Read));
    let app = Router::new()
        .merge(limited)
        .route(
            "/-/healthy",
            on(MethodFilter::GET.or(MethodFilter::HEAD), healthy).layer(level(Access::Public)),
        )
        .route(
            "/-/ready",
            on(MethodFilter::GET.or(MethodFilter::HEAD), ready).layer(level(Access::Public)),
        )
        .route(
            "/-/reload",
            on(MethodFilter::POST.or(MethodFilter::PUT), reload).layer(level(Access::Write)),
        );
    let web_config = state.settings.web_config.clone();
    let fallback = level(Access::Public);
    let app = app
        .fallback(collector_routes)
        .layer(fallback)
        .with_state(state)
        .layer(middleware::map_response(ensure_content_type))
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .no_br()
                .no_deflate()
                .no_zstd(),
        );
    match web_config {
        // Outermost: the rate limit and the basic-auth users cover every route, as in
        // exporter-toolkit.
        Some(loader) => app.layer(middleware::from_fn_with_state(loader, webconfig::guard)),
        None => app,
    }
}

/// The access check of a host route, under the rules of the engine serving now.
async fn enforce_current(
    State((state, level)): State<(AppState, Access)>,
    req: Request,
    next: Next,
) -> Response {
    let policy = Arc::clone(state.engine.current().access());
    match crate::access::check(&policy, level, &req).await {
        Some(refusal) => refusal,
        None => next.run(req).await,
    }
}

/// Every response carries a `Content-Type`, including axum's own (405 and the like).
async fn ensure_content_type(mut resp: Response) -> Response {
    if !resp.headers().contains_key(header::CONTENT_TYPE) {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    }
    resp
}

async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(sem) = &state.limiter else {
        return next.run(req).await;
    };
    match Arc::clone(sem).try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many concurrent requests (limit {}, see --web.max-requests)",
                state.settings.max_requests
            ),
        ),
    }
}

/// Collectors' own routes (a push API, say), dispatched to the engine serving now so that a
/// reload takes effect without restarting the listener.
async fn collector_routes(State(state): State<AppState>, req: Request) -> Response {
    let engine = state.engine.current();
    match engine.routes() {
        None => not_found(req.headers()),
        Some(routes) => match routes.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
    }
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| format!("header {name} is not valid text")),
    }
}

async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let engine = state.engine.current();
    let mut collect = Vec::new();
    let mut exclude = Vec::new();
    let mut selectors = Vec::new();
    let mut selector_bytes = 0;
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "collect[]" => collect.push(v),
            "exclude[]" => exclude.push(v),
            "match[]" => {
                selector_bytes += v.len();
                if selectors.len() >= crate::selector::MAX_SELECTORS
                    || selector_bytes > crate::selector::MAX_SELECTOR_BYTES
                {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "match[]: at most {} selectors of {} bytes in all",
                            crate::selector::MAX_SELECTORS,
                            crate::selector::MAX_SELECTOR_BYTES
                        ),
                    );
                }
                match crate::selector::Selector::parse(&v) {
                    Ok(s) => selectors.push(s),
                    Err(e) => return text(StatusCode::BAD_REQUEST, format!("match[]: {e}")),
                }
            }
            _ => {}
        }
    }
    let selection = match engine.select(collect, exclude) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let timeout = match header_str(&headers, SCRAPE_TIMEOUT_HEADER) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let format = negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    match engine.scrape(&selection, timeout).await {
        Ok(g) if selectors.is_empty() => exposition_chunks(format, engine.encode(format, &g)),
        Ok(g) => exposition_chunks(format, engine.encode(format, &g.select(&selectors))),
        // Every refusal (bad timeout header) is the client's to fix.
        Err(e) => text(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn exposition(format: Format, parts: &[Arc<Snapshot>]) -> Response {
    with_content_type(format, encode(format, parts))
}

fn exposition_chunks(format: Format, chunks: Vec<bytes::Bytes>) -> Response {
    with_content_type(format, Body::new(Chunks::new(chunks)))
}

/// A response body of shared chunks (collectors' encoded parts), sent without copying them into
/// one buffer; its exact length is the response's `Content-Length`.
struct Chunks {
    chunks: std::collections::VecDeque<bytes::Bytes>,
    remaining: u64,
}

impl Chunks {
    fn new(chunks: Vec<bytes::Bytes>) -> Self {
        let chunks: std::collections::VecDeque<_> =
            chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Self { chunks, remaining }
    }
}

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front();
        if let Some(c) = &next {
            self.remaining -= c.len() as u64;
        }
        std::task::Poll::Ready(next.map(|c| Ok(http_body::Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

fn with_content_type(format: Format, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}

async fn probe(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let engine = state.engine.current();
    let mut module = None;
    let mut target = None;
    for (k, v) in query_pairs(q.as_deref()) {
        match k.as_str() {
            "module" => module = Some(v),
            "target" => target = Some(v),
            _ => {}
        }
    }
    let module = module
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let Some(target) = target.filter(|t| !t.trim().is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "Target parameter is missing");
    };
    let timeout = match header_str(&headers, SCRAPE_TIMEOUT_HEADER) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let budget = match scrape_budget(timeout, engine.timeouts()) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let prober = engine.collectors().find(|c| {
        c.prober()
            .is_some_and(|p| p.modules().iter().any(|m| m == &module))
    });
    let Some(collector) = prober else {
        let known: Vec<String> = engine
            .collectors()
            .filter_map(|c| c.prober().map(|p| p.modules()))
            .flatten()
            .collect();
        return text(
            StatusCode::BAD_REQUEST,
            format!("Unknown module {module:?} (known: {})", known.join(", ")),
        );
    };
    let Some(prober) = collector.prober() else {
        return text(StatusCode::BAD_REQUEST, "Unknown module");
    };
    let ctx = engine.context(budget);
    let started = Instant::now();
    let result =
        tokio::time::timeout_at(ctx.deadline(), prober.probe(&module, &target, &ctx)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (success, mut snapshot) = match result {
        Ok(Ok(r)) => (r.success, r.snapshot),
        Ok(Err(e @ (ProbeError::Forbidden(_) | ProbeError::CredentialsWithheld { .. }))) => {
            return text(StatusCode::FORBIDDEN, e.to_string());
        }
        Ok(Err(e)) => return text(StatusCode::BAD_REQUEST, e.to_string()),
        Err(_) => {
            tracing::debug!(%target, %module, "probe timed out");
            (false, Snapshot::new())
        }
    };
    snapshot.push(
        MetricFamily::gauge(
            "probe_success",
            "Displays whether or not the probe was a success",
        )
        .with(vec![], if success { 1.0 } else { 0.0 }),
    );
    snapshot.push(
        MetricFamily::gauge(
            "probe_duration_seconds",
            "Returns how long the probe took to complete in seconds",
        )
        .with(vec![], elapsed),
    );
    snapshot.push(
        MetricFamily::gauge(
            "probe_timeout_seconds",
            "Returns how long the probe had to complete in seconds",
        )
        .with(vec![], budget.as_secs_f64()),
    );
    let format = negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let snapshot = engine.with_const_labels("/probe", snapshot);
    exposition(format, &[Arc::new(snapshot)])
}

async fn healthy() -> Response {
    text(StatusCode::OK, "Healthy")
}

async fn ready() -> Response {
    text(StatusCode::OK, "Ready")
}

async fn reload(State(state): State<AppState>) -> Response {
    if !state.engine.current().access().lifecycle {
        return text(
            StatusCode::FORBIDDEN,
            "Lifecycle API is not enabled (--web.enable-lifecycle).",
        );
    }
    let Some(reload) = &state.settings.reload else {
        return text(StatusCode::NOT_IMPLEMENTED, "reload is not available");
    };
    match reload().await {
        Ok(msg) => text(StatusCode::OK, msg),
        Err(msg) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed, the running configuration stays: {msg}"),
        ),
    }
}

async fn landing(State(state): State<AppState>) -> Response {
    let engine = state.engine.current();
    let probe_modules: Vec<String> = engine
        .collectors()
        .filter_map(|c| c.prober().map(|p| p.modules()))
        .flatten()
        .collect();
    let body = crate::landing::render(&engine, &state.settings.telemetry_path, &probe_modules);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // What the page is, enforced: inline styles and a form to /probe, nothing else.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}
