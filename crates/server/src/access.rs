//! Who may use a route. Every route, the host's and the collectors', has an [`Access`] level;
//! credentials are basic auth (the web configuration's `basic_auth_users`) and bearer tokens
//! (`[auth]`: static tokens, Keycloak JWTs), and a request may carry either.
//!
//! | level | needs a credential when |
//! |---|---|
//! | public | basic auth is configured (it covers every route, as in exporter-toolkit); CORS preflights are public |
//! | read | that, or the exposition is protected (`auth.protect_metrics`) |
//! | write | any authentication is configured; a JWT must also carry the configured role |

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tidegauge_core::Access;

use crate::bearer::{Denied, Verifier};
use crate::webconfig::{BasicUsers, Verdict};

/// The access rules of one configuration.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Bearer credentials, when configured.
    pub verifier: Option<Arc<Verifier>>,
    /// Reading routes need a credential too.
    pub protect_reads: bool,
    /// `POST /-/reload` is served (`--web.enable-lifecycle`).
    pub lifecycle: bool,
}

impl Default for AccessPolicy {
    /// No credentials, reads open, the lifecycle API on.
    fn default() -> Self {
        Self {
            verifier: None,
            protect_reads: false,
            lifecycle: true,
        }
    }
}

fn refusal(status: StatusCode, detail: &str, basic: bool, bearer: Option<bool>) -> Response {
    let mut resp = if bearer.is_some() {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "detail": detail }).to_string(),
        )
            .into_response()
    } else {
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Unauthorized\n",
        )
            .into_response()
    };
    if status == StatusCode::UNAUTHORIZED {
        if basic {
            resp.headers_mut()
                .append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        }
        if let Some(token_sent) = bearer {
            let challenge = if token_sent {
                "Bearer error=\"invalid_token\""
            } else {
                "Bearer"
            };
            resp.headers_mut().append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
    }
    resp
}

/// `None` when `req` may use a route of `level`, else the refusal to send.
pub fn check(
    policy: &AccessPolicy,
    level: Access,
    req: &Request,
) -> impl Future<Output = Option<Response>> + Send + use<> {
    // Taken out first: the request body is not `Sync`, so no reference to it crosses an await.
    let basic = req
        .extensions()
        .get::<BasicUsers>()
        .filter(|b| b.configured())
        .cloned();
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let several = req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some();
    // A CORS preflight carries no credentials by design: it is public, whatever it asks about.
    let preflight = req.method() == axum::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let level = if preflight { Access::Public } else { level };
    let policy = policy.clone();
    async move {
        if several && needed(&policy, level, basic.as_ref()) {
            // Which one would count is ambiguous, and proxies disagree: refuse both.
            return Some(
                (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "More than one Authorization header.\n",
                )
                    .into_response(),
            );
        }
        decide(&policy, level, basic.as_ref(), header.as_deref()).await
    }
}

fn needed(policy: &AccessPolicy, level: Access, basic: Option<&BasicUsers>) -> bool {
    match level {
        Access::Public => basic.is_some(),
        Access::Read => basic.is_some() || policy.protect_reads,
        Access::Write => basic.is_some() || policy.verifier.is_some(),
    }
}

async fn decide(
    policy: &AccessPolicy,
    level: Access,
    basic: Option<&BasicUsers>,
    header: Option<&str>,
) -> Option<Response> {
    let bearer = policy.verifier.as_deref();
    if !needed(policy, level, basic) {
        return None;
    }
    let scheme = header
        .and_then(|h| h.trim().split_once(' '))
        .map(|(s, _)| s.to_ascii_lowercase());
    match (scheme.as_deref(), basic, bearer) {
        (Some("basic"), Some(users), _) => {
            match users.verify(header).await {
                Verdict::Allowed => return None,
                Verdict::Busy => {
                    return Some(
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                            "Too many password checks waiting; try again.\n",
                        )
                            .into_response(),
                    );
                }
                Verdict::Denied => {}
            }
            Some(refusal(
                StatusCode::UNAUTHORIZED,
                "Invalid user name or password.",
                true,
                bearer.map(|_| false),
            ))
        }
        (Some("bearer"), _, Some(v)) => match v.check(header, level == Access::Write).await {
            Ok(()) => None,
            Err(Denied::Forbidden(detail)) => Some(refusal(
                StatusCode::FORBIDDEN,
                &detail,
                basic.is_some(),
                Some(true),
            )),
            Err(Denied::Unauthorized { detail, token_sent }) => Some(refusal(
                StatusCode::UNAUTHORIZED,
                &detail,
                basic.is_some(),
                Some(token_sent),
            )),
        },
        _ => Some(refusal(
            StatusCode::UNAUTHORIZED,
            if header.is_none() {
                "No authorization header."
            } else {
                "Unsupported authorization scheme."
            },
            basic.is_some(),
            bearer.map(|_| false),
        )),
    }
}

/// Middleware for a route built with its engine's policy (collectors' routes).
pub async fn enforce_fixed(
    State((policy, level)): State<(Arc<AccessPolicy>, Access)>,
    req: Request,
    next: Next,
) -> Response {
    match check(&policy, level, &req).await {
        Some(refusal) => refusal,
        None => next.run(req).await,
    }
}
