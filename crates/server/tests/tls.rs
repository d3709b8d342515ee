//! TLS from the web configuration file, served to real rustls clients on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::routing::get;
use tidegauge_server::tls::TlsListener;
use tidegauge_server::webconfig::Loader;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tls")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

struct Server {
    url: String,
    web: PathBuf,
    dir: PathBuf,
    task: tokio::task::JoinHandle<()>,
    loader: Arc<Loader>,
}

impl Server {
    /// Rewrites the web config file and applies it, as the host's watcher does within a second.
    fn write(&self, yaml: impl AsRef<str>) {
        std::fs::write(&self.web, yaml.as_ref()).unwrap();
        // A changed file applies once it reads the same twice.
        self.loader.refresh();
        self.loader.refresh();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

async fn server(tag: &str, yaml: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("tidegauge-tls-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let web = dir.join("web.yml");
    // Certificate paths are relative to the web config file, as in exporter-toolkit.
    for f in ["server.pem", "server-key.pem", "ca.pem"] {
        std::fs::copy(fixtures().join(f), dir.join(f)).unwrap();
    }
    std::fs::write(&web, yaml).unwrap();
    let loader = Loader::open(web.clone()).unwrap();
    assert!(loader.tls().is_some(), "TLS configured");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let listener = TlsListener::new(tcp, Arc::clone(&loader)).unwrap();
    let app = axum::Router::new().route("/", get(|| async { "ok" }));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        url: format!("https://localhost:{port}/"),
        web,
        dir,
        task,
        loader,
    }
}

fn client(identity: Option<&str>) -> reqwest::Client {
    // Installs the ring provider the host uses.
    tidegauge_testkit::http_client();
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.pem")).unwrap());
    if let Some(name) = identity {
        let mut pem = read(&format!("{name}.pem"));
        pem.extend(read(&format!("{name}-key.pem")));
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

async fn status(c: &reqwest::Client, url: &str) -> Result<(u16, reqwest::Version), String> {
    c.get(url)
        .send()
        .await
        .map(|r| (r.status().as_u16(), r.version()))
        .map_err(|e| format!("{e:?}"))
}

const SERVER: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n";

#[tokio::test]
async fn serves_tls_over_http1() {
    let s = server("plain", SERVER).await;
    let (code, version) = status(&client(None), &s.url).await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        version,
        reqwest::Version::HTTP_11,
        "ALPN offers HTTP/1.1 only"
    );
    // A client that does not trust the CA fails the handshake.
    tidegauge_testkit::http_client();
    let untrusting = reqwest::Client::builder().build().unwrap();
    assert!(status(&untrusting, &s.url).await.is_err());
    // A client that insists on HTTP/2 gets no answer in it.
    let h2 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.pem")).unwrap())
        .http2_prior_knowledge()
        .build()
        .unwrap();
    assert!(status(&h2, &s.url).await.is_err());
}

#[tokio::test]
async fn client_certificates_are_verified() {
    let s = server(
        "mtls",
        &format!(
            "{SERVER}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  client_allowed_sans: [client.example]\n"
        ),
    )
    .await;
    assert_eq!(
        status(&client(Some("client")), &s.url).await.unwrap().0,
        200
    );
    assert!(
        status(&client(None), &s.url).await.is_err(),
        "no certificate"
    );
    // An allow-list makes a certificate necessary even when it would be optional.
    s.write(format!(
            "{SERVER}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n  client_allowed_sans: [client.example]\n"
        ));
    assert!(
        status(&client(None), &s.url).await.is_err(),
        "no certificate, SANs listed"
    );
    assert_eq!(
        status(&client(Some("client")), &s.url).await.unwrap().0,
        200
    );
    assert!(
        status(&client(Some("stranger")), &s.url).await.is_err(),
        "certificate from an unknown CA"
    );

    // Names are compared exactly: a wildcard certificate does not stand for a listed name.
    s.write(format!(
            "{SERVER}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  client_allowed_sans: [node.clients.example]\n"
        ));
    assert_eq!(
        status(&client(Some("client")), &s.url).await.unwrap().0,
        200
    );
    assert!(
        status(&client(Some("wildcard")), &s.url).await.is_err(),
        "*.clients.example does not stand for node.clients.example"
    );

    // The allowed SANs change: the same certificate is now refused.
    s.write(format!(
            "{SERVER}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  client_allowed_sans: [other.example]\n"
        ));
    assert!(status(&client(Some("client")), &s.url).await.is_err());

    // Optional certificates: none is fine, a bad one is not.
    s.write(format!(
        "{SERVER}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
    ));
    assert_eq!(status(&client(None), &s.url).await.unwrap().0, 200);
    assert_eq!(
        status(&client(Some("client")), &s.url).await.unwrap().0,
        200
    );
    assert!(status(&client(Some("stranger")), &s.url).await.is_err());

    // A broken file keeps the last good configuration.
    s.write("tls_server_config:\n  cert_file: nowhere.pem\n");
    assert!(status(&client(Some("stranger")), &s.url).await.is_err());
    assert_eq!(status(&client(None), &s.url).await.unwrap().0, 200);
}

/// The web configuration file is one configuration: a new file whose TLS part is invalid is
/// refused whole (500 on every route), never half-applied with authentication dropped.
#[tokio::test]
async fn a_file_with_an_invalid_tls_part_is_refused_whole() {
    use tower::ServiceExt;
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let s = server(
        "half",
        &format!("{SERVER}basic_auth_users:\n  alice: {hash}\n"),
    )
    .await;
    let engine = tidegauge_server::Engine::builder(
        Arc::new(tidegauge_core::SystemClock),
        tidegauge_testkit::http_client(),
    )
    .build()
    .unwrap();
    let app = tidegauge_server::router(
        tidegauge_server::SharedEngine::new(engine),
        tidegauge_server::WebSettings {
            web_config: Some(Arc::clone(&s.loader)),
            ..tidegauge_server::WebSettings::default()
        },
    );
    let status = |app: &axum::Router| {
        let app = app.clone();
        async move {
            app.oneshot(
                axum::http::Request::get("/metrics")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
            .status()
            .as_u16()
        }
    };
    assert_eq!(status(&app).await, 401);
    s.write("tls_server_config:\n  cert_file: nope.pem\n  key_file: server-key.pem\n");
    assert_eq!(status(&app).await, 500, "refused whole, not open");
    s.write(format!("{SERVER}basic_auth_users:\n  alice: {hash}\n"));
    assert_eq!(status(&app).await, 401);
}
