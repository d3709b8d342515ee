//! The exporter-toolkit web configuration file (`--web.config.file`): basic auth, response
//! headers, a rate limit and TLS. One [`Loader`] reads it, off the request path: a watcher
//! re-reads it every second and rebuilds what changed, and requests and new connections take
//! the configuration in force without touching the disk.

use base64::Engine as _;
use tidegauge_core::lock;

/// Standard base64, padded or not (clients differ).
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The file's schema; unknown keys are an error, as with exporter-toolkit.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// TLS settings (see [`crate::tls`]).
    #[serde(default)]
    pub tls_server_config: Option<crate::tls::TlsServerConfig>,
    /// HTTP settings.
    #[serde(default)]
    pub http_server_config: HttpServerConfig,
    /// User → bcrypt hash; empty: no basic auth.
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
    /// Requests allowed per interval, over all clients.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// `http_server_config`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Accepted for compatibility; tidegauge serves HTTP/1.1 only.
    #[serde(default = "yes")]
    pub http2: bool,
    /// Security headers added to every response.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        Self {
            http2: true,
            headers: BTreeMap::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// `rate_limit`: a token bucket of `burst` requests refilled one per `interval`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Time per request; zero disables the limit.
    #[serde(deserialize_with = "tidegauge_core::duration::deserialize")]
    pub interval: Duration,
    /// Requests allowed at once.
    pub burst: u32,
}

/// The headers exporter-toolkit lets a file set, with the values it allows (none: any).
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

/// A checked configuration, ready to serve.
#[derive(Debug, Clone)]
pub struct Checked {
    users: BTreeMap<String, String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<RateLimit>,
}

impl Checked {
    /// Whether basic auth is on.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }
}

/// Reads and checks the file, TLS part included (its certificates are loaded); the error
/// names the file and what is wrong.
pub fn load(path: &Path) -> Result<Checked, String> {
    let checked = load_http(path)?;
    crate::tls::server_config(path)?;
    Ok(checked)
}

/// [`load`] without the TLS part, which [`crate::tls::Source`] watches on its own (a broken
/// certificate renewal keeps the last good TLS setup and must not refuse every request).
fn load_http(path: &Path) -> Result<Checked, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("web config {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("web config {}: {e}", path.display()))
}

/// Parses and checks the YAML text; TLS settings are only type-checked here (their files are
/// relative to the file's directory, see [`load`]).
pub fn parse(text: &str) -> Result<Checked, String> {
    let config: WebConfig = if text.trim().is_empty() {
        WebConfig::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| e.to_string())?
    };
    let mut headers = Vec::new();
    for (name, value) in &config.http_server_config.headers {
        let Some((canonical, allowed)) = HEADERS.iter().find(|(h, _)| h.eq_ignore_ascii_case(name))
        else {
            return Err(format!("HTTP header {name:?} can not be configured"));
        };
        if let Some(allowed) = allowed
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(value))
        {
            return Err(format!(
                "invalid value for {canonical}: {value:?} (allowed: {})",
                allowed.join(", ")
            ));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for {canonical}: {value:?}"))?;
        let name = HeaderName::from_bytes(canonical.as_bytes())
            .map_err(|e| format!("{canonical}: {e}"))?;
        headers.push((name, value));
    }
    for (user, hash) in &config.basic_auth_users {
        if user.contains(':') {
            return Err(format!("basic_auth_users: user {user:?} contains ':'"));
        }
        bcrypt_cost(hash).map_err(|e| format!("basic_auth_users.{user}: {e}"))?;
    }
    Ok(Checked {
        users: config.basic_auth_users,
        headers,
        rate_limit: config.rate_limit.filter(|r| !r.interval.is_zero()),
    })
}

/// The cost of a bcrypt hash, or why it is not one.
fn bcrypt_cost(hash: &str) -> Result<u32, String> {
    hash.parse::<bcrypt::HashParts>()
        .map(|p| p.get_cost())
        .map_err(|e| {
            format!("not a bcrypt hash ({e}); make one with htpasswd -nBC 10 \"\" | tr -d ':\\n'")
        })
}

/// Checked against when the user is unknown, so the answer takes as long as for a known user
/// (cost 10, as `htpasswd -B` makes them).
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    bcrypt::hash("tidegauge: no such user", 10).unwrap_or_else(|_| String::new())
});

/// Successful checks remembered; the key covers user, stored hash and password, so a changed
/// hash in the file is checked afresh (the fix for CVE-2022-46146 in exporter-toolkit).
const CACHE_SIZE: usize = 100;

/// What the middleware keeps between requests.
pub struct Guard {
    path: PathBuf,
    loaded: Mutex<Option<Loaded>>,
    /// Changed bytes read once, applied when the next read finds them again.
    candidate: Mutex<Option<Vec<u8>>>,
    bucket: Mutex<Bucket>,
    verified: Mutex<HashMap<[u8; 32], ()>>,
    /// bcrypt checks run one at a time: a burst of bad passwords must not take every core.
    bcrypt: Arc<tokio::sync::Mutex<()>>,
    /// Checks waiting for `bcrypt` (bounded by [`MAX_WAITING`]).
    waiting: std::sync::atomic::AtomicUsize,
}

#[derive(Debug, Clone)]
struct Loaded {
    /// The file's bytes the configuration was parsed from.
    bytes: Vec<u8>,
    config: Result<Arc<Checked>, String>,
}

#[derive(Debug)]
struct Bucket {
    limit: Option<RateLimit>,
    tokens: f64,
    at: Instant,
}

impl Guard {
    /// A guard for the file at `path` (checked at start-up by [`load`]).
    pub fn new(path: PathBuf) -> Self {
        // Hashed now rather than inside the first request for an unknown user.
        std::sync::LazyLock::force(&DUMMY_HASH);
        Self {
            path,
            loaded: Mutex::new(None),
            candidate: Mutex::new(None),
            bucket: Mutex::new(Bucket {
                limit: None,
                tokens: 0.0,
                at: Instant::now(),
            }),
            verified: Mutex::new(HashMap::new()),
            bcrypt: Arc::new(tokio::sync::Mutex::new(())),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Whether `bytes` may be applied: they are what is in force, or were read last time too.
    fn confirmed(&self, bytes: &[u8]) -> bool {
        if !self.differs(bytes) {
            return true;
        }
        let mut candidate = lock(&self.candidate);
        if candidate.as_deref() == Some(bytes) {
            *candidate = None;
            true
        } else {
            *candidate = Some(bytes.to_vec());
            false
        }
    }

    /// Whether `bytes` differ from the file in force.
    fn differs(&self, bytes: &[u8]) -> bool {
        lock(&self.loaded)
            .as_ref()
            .is_none_or(|l| l.config.is_err() || l.bytes != bytes)
    }

    /// The configuration in force (no file access).
    fn current(&self) -> Result<Arc<Checked>, String> {
        match lock(&self.loaded).as_ref() {
            Some(l) => l.config.clone(),
            None => Err("web config not read yet".into()),
        }
    }

    /// Takes the file's bytes as read now: parsed again only when they changed. A file that
    /// does not parse refuses requests (500) until it does.
    fn update(&self, bytes: Result<Vec<u8>, String>) {
        let mut loaded = lock(&self.loaded);
        let bytes = match bytes {
            Ok(b) => b,
            Err(e) => {
                if loaded.as_ref().is_none_or(|l| l.config.is_ok()) {
                    tracing::error!(error = %e, "web config unreadable; requests are refused with 500 until it is fixed");
                }
                *loaded = Some(Loaded {
                    bytes: Vec::new(),
                    config: Err(e),
                });
                return;
            }
        };
        if let Some(l) = loaded.as_ref()
            && l.bytes == bytes
        {
            return;
        }
        let config = std::str::from_utf8(&bytes)
            .map_err(|_| "not UTF-8 text".to_owned())
            .and_then(parse)
            .map(Arc::new)
            .map_err(|e| format!("web config {}: {e}", self.path.display()));
        if let Err(e) = &config {
            tracing::error!(error = %e, "web config invalid; requests are refused with 500 until it is fixed");
        }
        *loaded = Some(Loaded { bytes, config });
    }

    fn admit(&self, limit: Option<RateLimit>) -> bool {
        let mut b = lock(&self.bucket);
        if b.limit != limit {
            // A new limit starts with a full bucket.
            b.limit = limit;
            b.tokens = limit.map_or(0.0, |l| f64::from(l.burst));
            b.at = Instant::now();
        }
        let Some(l) = limit else {
            return true;
        };
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() / l.interval.as_secs_f64();
        b.tokens = (b.tokens + refill).min(f64::from(l.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    async fn authorized(&self, users: &BTreeMap<String, String>, header: Option<&str>) -> Verdict {
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return Verdict::Denied;
        };
        let known = users.get(&user);
        let hash = known.map_or(DUMMY_HASH.as_str(), String::as_str);
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            for part in [user.as_bytes(), hash.as_bytes(), password.as_bytes()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
            h.finalize().into()
        };
        if known.is_some() && lock(&self.verified).contains_key(&key) {
            return Verdict::Allowed;
        }
        // A flood of unverified passwords waits in a bounded queue; past it, 429 at once.
        let Some(_queued) = Queued::join(&self.waiting) else {
            return Verdict::Busy;
        };
        // The lock travels into the blocking task: a cancelled request must not let the next
        // check start while this one still runs.
        let one_at_a_time = Arc::clone(&self.bcrypt).lock_owned().await;
        let (password, hash_owned) = (password.clone(), hash.to_owned());
        let ok = tokio::task::spawn_blocking(move || {
            let _held = one_at_a_time;
            bcrypt::verify(password, &hash_owned).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if ok && known.is_some() {
            let mut cache = lock(&self.verified);
            if cache.len() >= CACHE_SIZE {
                cache.clear();
            }
            cache.insert(key, ());
            return Verdict::Allowed;
        }
        Verdict::Denied
    }
}

/// The outcome of a basic-auth check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A known user's password.
    Allowed,
    /// No, or wrong, credentials.
    Denied,
    /// Too many unverified passwords wait already (answered 429).
    Busy,
}

/// Unverified passwords waiting for a bcrypt check at most; bcrypt runs one at a time.
const MAX_WAITING: usize = 8;

/// A place in the bcrypt queue, given back when dropped.
struct Queued<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Queued<'a> {
    fn join(waiting: &'a std::sync::atomic::AtomicUsize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        let before = waiting.fetch_add(1, Ordering::SeqCst);
        if before >= MAX_WAITING {
            waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self(waiting))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// `Basic <base64(user:password)>`, scheme case-insensitive.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}

/// How often the [`Loader`]'s watcher looks at the files.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The one reader of the web configuration file: basic auth, headers and rate limit for the
/// request path, TLS for new connections.
#[derive(Debug)]
pub struct Loader {
    path: PathBuf,
    guard: Arc<Guard>,
    tls: Option<crate::tls::Source>,
}

impl Loader {
    /// Reads and checks the file (TLS files included); the error names the file and the
    /// setting.
    pub fn open(path: PathBuf) -> Result<Arc<Self>, String> {
        let bytes =
            std::fs::read(&path).map_err(|e| format!("web config {}: {e}", path.display()))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("web config {}: not UTF-8 text", path.display()))?;
        parse(text).map_err(|e| format!("web config {}: {e}", path.display()))?;
        let tls = crate::tls::Source::open(path.clone(), text)?;
        let guard = Arc::new(Guard::new(path.clone()));
        guard.update(Ok(bytes));
        Ok(Arc::new(Self { path, guard, tls }))
    }

    /// Reads the files again and applies what changed. Blocking: the watcher runs it off the
    /// runtime's threads; tests call it after changing a file.
    pub fn refresh(&self) {
        let bytes = std::fs::read(&self.path)
            .map_err(|e| format!("web config {}: {e}", self.path.display()));
        // A changed file applies once it reads the same twice in a row (a second apart under
        // the watcher): a file caught half-written, or emptied before being rewritten in place,
        // never switches authentication off.
        if let Ok(b) = &bytes
            && !self.guard.confirmed(b)
        {
            return;
        }
        let changed = bytes.as_ref().is_ok_and(|b| self.guard.differs(b));
        if let (Some(tls), Ok(b)) = (&self.tls, &bytes)
            && let Err(e) = tls.refresh(&String::from_utf8_lossy(b))
            && changed
        {
            // The file is one configuration: an invalid TLS part refuses it whole.
            self.guard
                .update(Err(format!("web config {}: {e}", self.path.display())));
            return;
        }
        self.guard.update(bytes);
    }

    /// Refreshes every [`REFRESH`] until the task is dropped or aborted.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let me = Arc::clone(&me);
                let _ = tokio::task::spawn_blocking(move || me.refresh()).await;
            }
        })
    }

    /// The TLS setup, when the file configures TLS.
    pub fn tls(&self) -> Option<&crate::tls::Source> {
        self.tls.as_ref()
    }
}

/// The basic-auth users of the web configuration in force, handed to the access checks of
/// the route a request reaches (a request extension set by [`guard`]).
#[derive(Clone)]
pub struct BasicUsers {
    guard: Arc<Guard>,
    config: Arc<Checked>,
}

impl BasicUsers {
    /// Whether the file configures basic auth.
    pub fn configured(&self) -> bool {
        self.config.has_users()
    }

    /// Whether the `Authorization` header carries a known user's password.
    pub async fn verify(&self, header: Option<&str>) -> Verdict {
        self.guard.authorized(&self.config.users, header).await
    }
}

/// The middleware: rate limit, the users for the access checks, then the configured headers
/// on the answer.
pub async fn guard(State(loader): State<Arc<Loader>>, mut req: Request, next: Next) -> Response {
    let guard = &loader.guard;
    // The reason is logged, never sent: it can quote the file, secrets included, and nobody
    // is authenticated yet.
    let Ok(config) = guard.current() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let mut resp = if !guard.admit(config.rate_limit) {
        text(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
    } else {
        req.extensions_mut().insert(BasicUsers {
            guard: Arc::clone(guard),
            config: Arc::clone(&config),
        });
        next.run(req).await
    };
    for (name, value) in &config.headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_errors_name_the_problem() {
        for (yaml, want) in [
            ("bogus: 1\n", "unknown field `bogus`"),
            (
                "tls_server_config:\n  cert_fil: a.crt\n",
                "unknown field `cert_fil`",
            ),
            (
                "http_server_config:\n  headers:\n    X-Powered-By: me\n",
                "HTTP header \"X-Powered-By\" can not be configured",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "invalid value for X-Frame-Options",
            ),
            ("basic_auth_users:\n  alice: secret\n", "not a bcrypt hash"),
            (
                "rate_limit:\n  interval: soon\n  burst: 1\n",
                "invalid duration",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        let ok = parse(&format!(
            "basic_auth_users:\n  alice: {}\nrate_limit:\n  interval: 0s\n  burst: 5\nhttp_server_config:\n  http2: false\n  headers:\n    x-frame-options: DENY\n",
            *DUMMY_HASH
        ))
        .unwrap();
        assert!(ok.has_users());
        assert_eq!(ok.rate_limit, None, "interval 0 disables the limit");
        assert_eq!(ok.headers[0].0, "x-frame-options");
        assert!(!parse("").unwrap().has_users());
    }

    #[test]
    fn credentials() {
        // "alice:pa:ss"
        assert_eq!(
            basic_credentials("Basic YWxpY2U6cGE6c3M="),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(
            basic_credentials("basic YWxpY2U6cGE6c3M="),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials("Bearer YWxpY2U6cGE6c3M="), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Basic YWxpY2U="), None, "no colon");
    }

    #[test]
    fn the_dummy_hash_is_a_cost_10_bcrypt_hash() {
        assert_eq!(bcrypt_cost(&DUMMY_HASH), Ok(10));
    }

    #[tokio::test]
    async fn verified_credentials_never_wait_and_the_queue_is_bounded() {
        use std::sync::atomic::Ordering;
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let users = BTreeMap::from([("alice".to_owned(), hash)]);
        let guard = Arc::new(Guard::new(PathBuf::from("unused.yml")));
        let good = "Basic YWxpY2U6czNjcmV0"; // alice:s3cret
        let wrong = "Basic YWxpY2U6d3Jvbmc="; // alice:wrong
        assert_eq!(guard.authorized(&users, Some(good)).await, Verdict::Allowed);
        // A check in progress holds bcrypt; verified credentials pass without waiting for it.
        let held = Arc::clone(&guard.bcrypt).lock_owned().await;
        let cached =
            tokio::time::timeout(Duration::from_secs(5), guard.authorized(&users, Some(good)))
                .await
                .expect("cached credentials must not wait behind bcrypt");
        assert_eq!(cached, Verdict::Allowed);
        let mut queued = Vec::new();
        for _ in 0..MAX_WAITING {
            let (g, u) = (Arc::clone(&guard), users.clone());
            queued.push(tokio::spawn(
                async move { g.authorized(&u, Some(wrong)).await },
            ));
        }
        while guard.waiting.load(Ordering::SeqCst) < MAX_WAITING {
            tokio::task::yield_now().await;
        }
        assert_eq!(guard.authorized(&users, Some(wrong)).await, Verdict::Busy);
        drop(held);
        for q in queued {
            assert_eq!(q.await.unwrap(), Verdict::Denied);
        }
        assert_eq!(guard.waiting.load(Ordering::SeqCst), 0);
    }

    /// As exporter-toolkit (Go's bcrypt): only the first 72 bytes of a password count.
    #[tokio::test]
    async fn passwords_over_72_bytes_compare_as_go_does() {
        let long = "p".repeat(72);
        let users = BTreeMap::from([("bob".to_owned(), bcrypt::hash(&long, 4).unwrap())]);
        let guard = Guard::new(PathBuf::from("unused.yml"));
        let header = |password: &str| format!("Basic {}", BASE64.encode(format!("bob:{password}")));
        assert_eq!(
            guard
                .authorized(&users, Some(&header(&format!("{long}extra"))))
                .await,
            Verdict::Allowed
        );
        assert_eq!(
            guard.authorized(&users, Some(&header(&long[..71]))).await,
            Verdict::Denied
        );
    }
}
