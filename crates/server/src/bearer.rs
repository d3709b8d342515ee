//! Bearer credentials (`[auth]`): static tokens and Keycloak (OIDC) JWTs verified locally
//! against the realm's JWKS.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// `[auth]`: bearer credentials accepted on every route that needs one.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// File of static bearer tokens, one per line (blank lines and `#` comments ignored).
    pub tokens_file: Option<std::path::PathBuf>,
    /// Keycloak realm whose JWTs are accepted.
    pub keycloak: Option<KeycloakConfig>,
    /// Reading routes (`/metrics`, `/probe`, `/`, a push API's reads) need a credential too.
    pub protect_metrics: bool,
}

/// A Keycloak realm.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeycloakConfig {
    /// Server base URL, e.g. `https://keycloak.example.org/` (`KEYCLOAK_SERVER_URL`).
    pub server_url: String,
    /// Realm name (`KEYCLOAK_REALM_NAME`).
    pub realm: String,
    /// Required audience (`KEYCLOAK_AUDIENCE`).
    pub audience: String,
    /// Client whose roles are checked (`KEYCLOAK_CLIENT_ID`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Role required in `realm_access.roles` or `resource_access.<client_id>.roles`.
    #[serde(default)]
    pub role: Option<String>,
    /// JWKS location; default `{issuer}/protocol/openid-connect/certs`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Shortest time between two JWKS fetches caused by unknown key ids.
    #[serde(
        default = "default_refresh",
        deserialize_with = "tidegauge_core::duration::deserialize"
    )]
    pub jwks_min_refresh: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(60)
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no or bad credentials. `token_sent` adds `error="invalid_token"`.
    Unauthorized {
        /// Explanation for `{"detail": ...}`.
        detail: String,
        /// Whether a token was presented.
        token_sent: bool,
    },
    /// 403: a valid token without the required role.
    Forbidden(String),
}

fn unauthorized(detail: impl Into<String>, token_sent: bool) -> Denied {
    Denied::Unauthorized {
        detail: detail.into(),
        token_sent,
    }
}

#[derive(Debug, Default)]
struct Keys {
    by_kid: HashMap<String, (DecodingKey, Algorithm)>,
    /// When the next fetch for an unknown key id may start.
    next_fetch: Option<Instant>,
    /// Fetches failed in a row (they are retried sooner than `jwks_min_refresh`).
    failures: u32,
}

/// The key cache and the lock that makes one fetch at a time, kept across reloads.
#[derive(Debug, Default)]
struct KeyCache {
    keys: std::sync::Mutex<Keys>,
    /// Held for a fetch only; checks with cached keys never wait for it.
    fetching: tokio::sync::Mutex<()>,
}

/// First retry after a failed JWKS fetch; doubled per failure up to `jwks_min_refresh`.
const RETRY: Duration = Duration::from_secs(1);

/// Verifies bearer credentials.
#[derive(Debug)]
pub struct Verifier {
    tokens: Vec<String>,
    jwt: Option<Jwt>,
}

#[derive(Debug)]
struct Jwt {
    issuer: String,
    audience: String,
    client_id: Option<String>,
    role: Option<String>,
    jwks_url: String,
    http: reqwest::Client,
    /// Shared with the verifier of the next configuration when the JWKS URL stays: a reload
    /// keeps the cached keys and the time of the last fetch.
    keys: Arc<KeyCache>,
    refresh_every: Duration,
}

/// Compares in time independent of where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// The algorithm a JWK permits: asymmetric only, fixed by the key, never by the token.
fn key_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    // Encryption keys (`use: enc`, `alg: RSA-OAEP`) never verify signatures.
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
    {
        return None;
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
    };
    let allowed: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        _ => &[],
    };
    match declared {
        Some(a) => allowed.contains(&a).then_some(a),
        None => allowed.first().copied(),
    }
}

impl Verifier {
    /// Builds the verifier; `None` when no bearer credentials are configured. `previous` is the
    /// running configuration's verifier: its key cache carries over when the JWKS is the same.
    pub fn new(
        config: &AuthConfig,
        http: reqwest::Client,
        previous: Option<&Verifier>,
    ) -> Result<Option<Self>, String> {
        let mut tokens = Vec::new();
        if let Some(path) = &config.tokens_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("auth.tokens_file {}: {e}", path.display()))?;
            tokens = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect();
            if tokens.is_empty() {
                return Err(format!(
                    "auth.tokens_file {}: no tokens in the file",
                    path.display()
                ));
            }
        }
        let jwt = match &config.keycloak {
            None => None,
            Some(k) => {
                if k.audience.trim().is_empty() {
                    return Err("auth.keycloak.audience must not be empty".into());
                }
                let base = if k.server_url.ends_with('/') {
                    k.server_url.clone()
                } else {
                    format!("{}/", k.server_url)
                };
                reqwest::Url::parse(&base)
                    .map_err(|e| format!("auth.keycloak.server_url {:?}: {e}", k.server_url))?;
                let issuer = format!("{base}realms/{}", k.realm);
                let jwks_url = k
                    .jwks_url
                    .clone()
                    .unwrap_or_else(|| format!("{issuer}/protocol/openid-connect/certs"));
                Some(Jwt {
                    issuer,
                    audience: k.audience.clone(),
                    client_id: k.client_id.clone(),
                    role: k.role.clone(),
                    keys: previous
                        .and_then(|p| p.jwt.as_ref())
                        .filter(|j| j.jwks_url == jwks_url)
                        .map(|j| Arc::clone(&j.keys))
                        .unwrap_or_default(),
                    jwks_url,
                    http,
                    refresh_every: k.jwks_min_refresh,
                })
            }
        };
        if tokens.is_empty() && jwt.is_none() {
            return Ok(None);
        }
        Ok(Some(Self { tokens, jwt }))
    }

    /// Checks an `Authorization` header value; `need_role` also requires a JWT's configured
    /// role (for writes).
    pub async fn check(&self, header: Option<&str>, need_role: bool) -> Result<(), Denied> {
        let Some(header) = header else {
            return Err(unauthorized("No authorization header.", false));
        };
        let (scheme, token) = header.trim().split_once(' ').unwrap_or((header, ""));
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(unauthorized(
                "Expected \"Authorization: Bearer <token>\".",
                false,
            ));
        }
        if self
            .tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
        {
            return Ok(());
        }
        match &self.jwt {
            Some(jwt) => jwt.verify(token, need_role).await,
            None => Err(unauthorized("Invalid token.", true)),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    realm_access: Option<Roles>,
    #[serde(default)]
    resource_access: Option<HashMap<String, Roles>>,
}

#[derive(Debug, Deserialize)]
struct Roles {
    #[serde(default)]
    roles: Vec<String>,
}

impl Jwt {
    fn cached(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        tidegauge_core::lock(&self.keys.keys)
            .by_kid
            .get(kid)
            .cloned()
    }

    async fn key_for(&self, kid: &str) -> Result<(DecodingKey, Algorithm), Denied> {
        if let Some(k) = self.cached(kid) {
            return Ok(k);
        }
        let unknown = || unauthorized(format!("Token signed by an unknown key {kid:?}."), true);
        // Unknown key: the realm may have rotated. One fetch at a time, at most once per
        // `jwks_min_refresh` (sooner, with backoff, after a failure); checks with known keys
        // go on meanwhile.
        let _one = self.keys.fetching.lock().await;
        if let Some(k) = self.cached(kid) {
            return Ok(k);
        }
        let due = tidegauge_core::lock(&self.keys.keys)
            .next_fetch
            .is_none_or(|t| Instant::now() >= t);
        if !due {
            return Err(unknown());
        }
        let fetched = self.fetch().await;
        let mut keys = tidegauge_core::lock(&self.keys.keys);
        match fetched {
            Ok(fresh) => {
                keys.by_kid = fresh;
                keys.failures = 0;
                keys.next_fetch = Some(Instant::now() + self.refresh_every);
            }
            Err(e) => {
                keys.failures = keys.failures.saturating_add(1);
                let wait = RETRY
                    .saturating_mul(1 << (keys.failures - 1).min(16))
                    .min(self.refresh_every);
                keys.next_fetch = Some(Instant::now() + wait);
                tracing::warn!(url = %self.jwks_url, error = %e, retry_in = ?wait, "cannot fetch the JWKS");
            }
        }
        keys.by_kid.get(kid).cloned().ok_or_else(unknown)
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        let resp = self
            .http
            .get(&self.jwks_url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let body = tidegauge_core::http::read_body_limited(resp, 1024 * 1024)
            .await
            .map_err(|e| e.to_string())?;
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let mut out = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), key_algorithm(jwk)) else {
                continue;
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                out.insert(kid, (key, alg));
            }
        }
        Ok(out)
    }

    async fn verify(&self, token: &str, need_role: bool) -> Result<(), Denied> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthorized(format!("Malformed token: {e}."), true))?;
        let kid = header
            .kid
            .ok_or_else(|| unauthorized("Token has no key id (kid).", true))?;
        let (key, alg) = self.key_for(&kid).await?;
        if header.alg != alg {
            return Err(unauthorized(
                format!(
                    "Token algorithm {:?} does not match its key ({alg:?}).",
                    header.alg
                ),
                true,
            ));
        }
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.leeway = 60;
        v.validate_nbf = true;
        v.required_spec_claims =
            HashSet::from(["exp".to_owned(), "iss".to_owned(), "aud".to_owned()]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map_err(|e| unauthorized(format!("Invalid token: {e}."), true))?;
        if let Some(role) = self.role.as_ref().filter(|_| need_role) {
            let c = &data.claims;
            let realm = c
                .realm_access
                .as_ref()
                .is_some_and(|r| r.roles.contains(role));
            let client = self
                .client_id
                .as_ref()
                .and_then(|id| c.resource_access.as_ref()?.get(id))
                .is_some_and(|r| r.roles.contains(role));
            if !realm && !client {
                return Err(Denied::Forbidden(format!(
                    "Insufficient permissions: role {role:?} required."
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
