//! Bearer authentication (`[auth]`) with locally generated keys served as a JWKS by wiremock,
//! through the host's router and a collector declaring routes of each access level.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tidegauge_core::{
    Access, CollectError, Collector, Routes, ScrapeContext, Snapshot, async_trait,
};
use tidegauge_server::bearer::{AuthConfig, KeycloakConfig, Verifier};
use tidegauge_server::{
    AccessPolicy, CollectorSettings, Engine, SharedEngine, WebSettings, router,
};
use tidegauge_testkit::fixture;
use tower::ServiceExt;
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const REALM: &str = "icos";
const AUDIENCE: &str = "tidegauge";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A push API's shape: writes, a read and a public health route.
#[derive(Debug)]
struct Pushy;

#[async_trait]
impl Collector for Pushy {
    fn name(&self) -> &str {
        "pushy"
    }
    async fn collect(&self, _: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        Ok(Arc::default())
    }
    fn routes(&self) -> Routes {
        use axum::routing::{get, post, put};
        Routes::new()
            .route(
                "/create_metric",
                Access::Write,
                post(|| async { "created" }),
            )
            .route(
                "/metrics/{*grouping}",
                Access::Write,
                put(|| async { "pushed" }),
            )
            .route("/api/v1/metrics", Access::Read, get(|| async { "{}" }))
            .route("/healthz", Access::Public, get(|| async { "ok" }))
    }
}

struct Rig {
    app: axum::Router,
    issuer: String,
    dir: std::path::PathBuf,
    verifier: Arc<Verifier>,
}

fn auth_config(
    jwks: &MockServer,
    role: Option<&str>,
    tokens_file: Option<std::path::PathBuf>,
) -> AuthConfig {
    AuthConfig {
        tokens_file,
        keycloak: Some(KeycloakConfig {
            server_url: format!("{}/", jwks.uri()),
            realm: REALM.into(),
            audience: AUDIENCE.into(),
            client_id: Some("pusher".into()),
            role: role.map(str::to_owned),
            jwks_url: None,
            jwks_min_refresh: Duration::ZERO,
        }),
        protect_metrics: false,
    }
}

fn app(verifier: Arc<Verifier>, protect_reads: bool) -> axum::Router {
    let engine = Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .access(AccessPolicy {
        verifier: Some(verifier),
        protect_reads,
        lifecycle: true,
    })
    .collector(Arc::new(Pushy), CollectorSettings::default())
    .build()
    .unwrap();
    router(SharedEngine::new(engine), WebSettings::default())
}

async fn rig(tag: &str, jwks: &MockServer, role: Option<&str>, tokens: Option<&str>) -> Rig {
    let dir = std::env::temp_dir().join(format!("tidegauge-auth-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tokens_file = tokens.map(|t| {
        let f = dir.join("tokens");
        std::fs::write(&f, format!("# push clients\n{t}\n\n")).unwrap();
        f
    });
    let cfg = auth_config(jwks, role, tokens_file);
    let verifier = Arc::new(
        Verifier::new(&cfg, tidegauge_testkit::http_client(), None)
            .unwrap()
            .unwrap(),
    );
    Rig {
        app: app(Arc::clone(&verifier), false),
        issuer: format!("{}/realms/{REALM}", jwks.uri()),
        dir,
        verifier,
    }
}

async fn jwks_server(file: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path(format!(
        "/realms/{REALM}/protocol/openid-connect/certs"
    )))
    .respond_with(
        ResponseTemplate::new(200)
            .set_body_raw(fixture(&format!("auth/{file}")), "application/json"),
    )
    .mount(&server)
    .await;
    server
}

fn token(alg: Algorithm, kid: &str, pem: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let pem = fixture(&format!("auth/{pem}"));
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
    };
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn claims(issuer: &str) -> serde_json::Value {
    json!({"iss": issuer, "aud": AUDIENCE, "exp": now() + 300, "iat": now(), "sub": "alice"})
}

async fn create(app: &axum::Router, auth: Option<&str>) -> (u16, String, Option<String>) {
    let mut req = Request::post("/create_metric").header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app
        .clone()
        .oneshot(
            req.body(Body::from(
                r#"{"metric_type": 2, "metric_name": "g", "value": 1}"#,
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    (status, body, challenge)
}

fn b64(v: &serde_json::Value) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = v.to_string().into_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn bearer_tokens_and_jwts() {
    let jwks = jwks_server("test-jwks.json").await;
    let r = rig("main", &jwks, None, Some("static-secret-1")).await;
    let iss = r.issuer.clone();

    let (s, body, ch) = create(&r.app, None).await;
    assert_eq!((s, ch.as_deref()), (401, Some("Bearer")), "{body}");
    assert!(body.contains("No authorization header"), "{body}");
    assert_eq!(create(&r.app, Some("Basic YWxpY2U6eA==")).await.0, 401);
    assert_eq!(create(&r.app, Some("Bearer static-secret-1")).await.0, 200);
    assert_eq!(
        create(&r.app, Some("bearer static-secret-1")).await.0,
        200,
        "scheme is case-insensitive"
    );
    let (s, _, ch) = create(&r.app, Some("Bearer static-secret-2")).await;
    assert_eq!(
        (s, ch.as_deref()),
        (401, Some("Bearer error=\"invalid_token\""))
    );

    let rs = token(Algorithm::RS256, "rsa-1", "test-rsa.pem", claims(&iss));
    assert_eq!(create(&r.app, Some(&format!("Bearer {rs}"))).await.0, 200);
    let es = token(Algorithm::ES256, "ec-1", "test-ec.pem", claims(&iss));
    assert_eq!(create(&r.app, Some(&format!("Bearer {es}"))).await.0, 200);

    let mut expired = claims(&iss);
    expired["exp"] = json!(now() - 120);
    let t = token(Algorithm::RS256, "rsa-1", "test-rsa.pem", expired);
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 401);
    let mut no_exp = claims(&iss);
    no_exp.as_object_mut().unwrap().remove("exp");
    let t = token(Algorithm::RS256, "rsa-1", "test-rsa.pem", no_exp);
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 401);
    let mut aud = claims(&iss);
    aud["aud"] = json!(["other", "account"]);
    let t = token(Algorithm::RS256, "rsa-1", "test-rsa.pem", aud);
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 401);
    let mut aud_list = claims(&iss);
    aud_list["aud"] = json!(["account", AUDIENCE]);
    let t = token(Algorithm::RS256, "rsa-1", "test-rsa.pem", aud_list);
    assert_eq!(
        create(&r.app, Some(&format!("Bearer {t}"))).await.0,
        200,
        "aud may be a list"
    );
    let t = token(
        Algorithm::RS256,
        "rsa-1",
        "test-rsa.pem",
        claims("https://evil.example/realms/icos"),
    );
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 401);
    // Signed by a key the realm does not publish, under a published kid.
    let t = token(
        Algorithm::RS256,
        "rsa-1",
        "test-rsa-other.pem",
        claims(&iss),
    );
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 401);
    // The EC key's kid with an RSA algorithm: the key fixes the algorithm.
    let t = token(Algorithm::RS256, "ec-1", "test-rsa.pem", claims(&iss));
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 401);

    // alg none.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "rsa-1", "typ": "JWT"})),
        b64(&claims(&iss))
    );
    assert_eq!(create(&r.app, Some(&format!("Bearer {none}"))).await.0, 401);
    // Algorithm confusion: HS256 keyed with the RSA public key (PEM), the classic attack on
    // verifiers that take the algorithm from the token.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let public = fixture("auth/test-rsa-pub.pem");
    let hs = jsonwebtoken::encode(&h, &claims(&iss), &EncodingKey::from_secret(&public)).unwrap();
    assert_eq!(create(&r.app, Some(&format!("Bearer {hs}"))).await.0, 401);
    // A key published for encryption never verifies a signature.
    let t = token(Algorithm::RS256, "enc-1", "test-rsa.pem", claims(&iss));
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 401);

    // Open routes need nothing.
    let resp = r
        .app
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Pushgateway writes are protected too.
    let resp = r
        .app
        .clone()
        .oneshot(
            Request::put("/metrics/job/x")
                .body(Body::from("x 1\n"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = r
        .app
        .clone()
        .oneshot(
            Request::put("/metrics/job/x")
                .header("authorization", format!("Bearer {rs}"))
                .body(Body::from("x 1\n"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    std::fs::remove_dir_all(&r.dir).ok();
}

#[tokio::test]
async fn roles_and_key_rotation() {
    let jwks = jwks_server("test-jwks.json").await;
    let r = rig("roles", &jwks, Some("writer"), None).await;
    let iss = r.issuer.clone();
    let t = token(Algorithm::RS256, "rsa-1", "test-rsa.pem", claims(&iss));
    let (s, body, _) = create(&r.app, Some(&format!("Bearer {t}"))).await;
    assert_eq!(s, 403, "{body}");
    let mut realm_role = claims(&iss);
    realm_role["realm_access"] = json!({"roles": ["writer"]});
    let t = token(Algorithm::RS256, "rsa-1", "test-rsa.pem", realm_role);
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 200);
    let mut client_role = claims(&iss);
    client_role["resource_access"] = json!({"pusher": {"roles": ["writer"]}});
    let t = token(Algorithm::ES256, "ec-1", "test-ec.pem", client_role.clone());
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 200);

    // The realm rotates to a new key: an unknown kid triggers a refetch.
    jwks.reset().await;
    Mock::given(path(format!(
        "/realms/{REALM}/protocol/openid-connect/certs"
    )))
    .respond_with(
        ResponseTemplate::new(200)
            .set_body_raw(fixture("auth/test-jwks-other.json"), "application/json"),
    )
    .expect(1)
    .mount(&jwks)
    .await;
    let t = token(Algorithm::RS256, "rsa-2", "test-rsa-other.pem", client_role);
    assert_eq!(create(&r.app, Some(&format!("Bearer {t}"))).await.0, 200);
    std::fs::remove_dir_all(&r.dir).ok();
}

/// Reads need no role, and only when the exposition is protected; a reload's verifier keeps
/// the cached keys and their refetch limit.
#[tokio::test]
async fn reads_need_a_credential_only_when_protected_and_reloads_keep_the_keys() {
    let jwks = MockServer::start().await;
    Mock::given(path(format!(
        "/realms/{REALM}/protocol/openid-connect/certs"
    )))
    .respond_with(
        ResponseTemplate::new(200).set_body_raw(fixture("auth/test-jwks.json"), "application/json"),
    )
    .expect(1)
    .mount(&jwks)
    .await;
    let r = rig("reads", &jwks, Some("writer"), None).await;
    let t = token(Algorithm::RS256, "rsa-1", "test-rsa.pem", claims(&r.issuer));
    let bearer = format!("Bearer {t}");
    let read = |app: &axum::Router, auth: Option<&str>| {
        let mut req = Request::get("/api/v1/metrics");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap())
    };
    assert_eq!(read(&r.app, None).await.unwrap().status(), 200);
    assert_eq!(
        create(&r.app, Some(&bearer)).await.0,
        403,
        "writes need the role"
    );

    // The reloaded configuration protects reads; its verifier is built from the running one.
    let cfg = auth_config(&jwks, Some("writer"), None);
    let next = Verifier::new(&cfg, tidegauge_testkit::http_client(), Some(&r.verifier))
        .unwrap()
        .unwrap();
    let app = app(Arc::new(next), true);
    assert_eq!(read(&app, None).await.unwrap().status(), 401);
    assert_eq!(
        read(&app, Some(&bearer)).await.unwrap().status(),
        200,
        "a valid token without the role may read"
    );
    // The key came from the running verifier's cache: the mock expects one JWKS fetch in all,
    // checked when it is dropped.
    std::fs::remove_dir_all(&r.dir).ok();
}

/// A JWKS fetch for an unknown key id (a slow or dead Keycloak) never holds up tokens signed by
/// keys already cached.
#[tokio::test]
async fn a_jwks_fetch_never_holds_up_known_keys() {
    let jwks = MockServer::start().await;
    let certs = format!("/realms/{REALM}/protocol/openid-connect/certs");
    Mock::given(path(certs.clone()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(fixture("auth/test-jwks.json"), "application/json"),
        )
        .up_to_n_times(1)
        .mount(&jwks)
        .await;
    // Every later fetch hangs past the verifier's 10 s fetch timeout.
    Mock::given(path(certs))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3600)))
        .mount(&jwks)
        .await;
    let verifier = Arc::new(
        Verifier::new(
            &auth_config(&jwks, None, None),
            tidegauge_testkit::http_client(),
            None,
        )
        .unwrap()
        .unwrap(),
    );
    let issuer = format!("{}/realms/{REALM}", jwks.uri());
    let known = format!(
        "Bearer {}",
        token(Algorithm::RS256, "rsa-1", "test-rsa.pem", claims(&issuer))
    );
    assert!(
        verifier.check(Some(&known), true).await.is_ok(),
        "the first check fetches the keys"
    );
    let stranger = format!(
        "Bearer {}",
        token(Algorithm::RS256, "rsa-9", "test-rsa.pem", claims(&issuer))
    );
    let pending = {
        let verifier = Arc::clone(&verifier);
        tokio::spawn(async move { verifier.check(Some(&stranger), true).await })
    };
    // Wait until the second fetch is in flight (the mock has seen it).
    while jwks.received_requests().await.unwrap_or_default().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Far less than the fetch's own 10 s timeout: a check that waited for it would fail here.
    let checked = tokio::time::timeout(Duration::from_secs(5), verifier.check(Some(&known), true))
        .await
        .expect("a known key must not wait for a JWKS fetch");
    assert!(checked.is_ok());
    pending.abort();
}

/// A failed JWKS fetch is retried after a short backoff, not after `jwks_min_refresh`.
#[tokio::test]
async fn a_failed_jwks_fetch_is_retried_soon() {
    let jwks = MockServer::start().await;
    let certs = format!("/realms/{REALM}/protocol/openid-connect/certs");
    Mock::given(path(certs.clone()))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&jwks)
        .await;
    Mock::given(path(certs))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(fixture("auth/test-jwks.json"), "application/json"),
        )
        .mount(&jwks)
        .await;
    let mut cfg = auth_config(&jwks, None, None);
    if let Some(k) = cfg.keycloak.as_mut() {
        k.jwks_min_refresh = Duration::from_secs(3600);
    }
    let verifier = Verifier::new(&cfg, tidegauge_testkit::http_client(), None)
        .unwrap()
        .unwrap();
    let issuer = format!("{}/realms/{REALM}", jwks.uri());
    let known = format!(
        "Bearer {}",
        token(Algorithm::RS256, "rsa-1", "test-rsa.pem", claims(&issuer))
    );
    assert!(
        verifier.check(Some(&known), true).await.is_err(),
        "the realm is down"
    );
    assert!(
        verifier.check(Some(&known), true).await.is_err(),
        "within the backoff"
    );
    // The first retry is due after a second (the backoff's first step), not an hour.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(verifier.check(Some(&known), true).await.is_ok());
    assert_eq!(jwks.received_requests().await.unwrap().len(), 2);
}
