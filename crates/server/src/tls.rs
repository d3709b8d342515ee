//! TLS from the web configuration file's `tls_server_config` (exporter-toolkit schema), served
//! with rustls. The configuration is rebuilt for a new connection whenever the web config
//! file or a file it names changed, so renewed certificates apply without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{DistinguishedName, RootCertStore, SignatureScheme};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// `tls_server_config`; unknown keys are an error.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// Certificate chain, PEM file.
    pub cert_file: Option<String>,
    /// Certificate chain, inline PEM.
    pub cert: Option<String>,
    /// Private key, PEM file.
    pub key_file: Option<String>,
    /// Private key, inline PEM.
    pub key: Option<String>,
    /// `NoClientCert` (default), `VerifyClientCertIfGiven` or `RequireAndVerifyClientCert`.
    pub client_auth_type: Option<String>,
    /// CA certificates for client certificates, PEM file.
    pub client_ca_file: Option<String>,
    /// CA certificates for client certificates, inline PEM.
    pub client_ca: Option<String>,
    /// Client certificates must carry one of these DNS names or IP addresses.
    #[serde(default)]
    pub client_allowed_sans: Vec<String>,
    /// `TLS12` (default) or `TLS13`.
    pub min_version: Option<String>,
    /// `TLS13` (default) or `TLS12`.
    pub max_version: Option<String>,
    /// TLS 1.2 suites by their Go names; TLS 1.3 suites are always on, as in Go.
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// Whether the server's suite order wins (default true).
    pub prefer_server_cipher_suites: Option<bool>,
    /// Key exchange groups by their Go names.
    #[serde(default)]
    pub curve_preferences: Vec<String>,
}

/// The web config file's TLS part (the rest is checked by [`crate::webconfig`]).
#[derive(Debug, Deserialize)]
struct TlsPart {
    tls_server_config: Option<TlsServerConfig>,
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Resolves a path from the file relative to the file's directory, as exporter-toolkit does.
fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// PEM from a file or inline; `what` names the keys in errors.
fn pem(
    dir: &Path,
    file: Option<&String>,
    inline: Option<&String>,
    what: (&str, &str),
    used: &mut Vec<PathBuf>,
) -> Result<Option<Vec<u8>>, String> {
    match (file, inline) {
        (Some(_), Some(_)) => Err(format!(
            "at most one of {} and {} must be configured",
            what.0, what.1
        )),
        (Some(f), None) => {
            let path = resolve(dir, f);
            // Watched even when it cannot be read yet, so its arrival is noticed.
            used.push(path.clone());
            let bytes =
                std::fs::read(&path).map_err(|e| format!("{} {}: {e}", what.1, path.display()))?;
            Ok(Some(bytes))
        }
        (None, Some(v)) => Ok(Some(v.as_bytes().to_vec())),
        (None, None) => Ok(None),
    }
}

fn version(
    v: Option<&String>,
    default: &'static rustls::SupportedProtocolVersion,
    key: &str,
) -> Result<&'static rustls::SupportedProtocolVersion, String> {
    match v.map(String::as_str) {
        None | Some("") => Ok(default),
        Some("TLS12") => Ok(&rustls::version::TLS12),
        Some("TLS13") => Ok(&rustls::version::TLS13),
        Some(old @ ("TLS10" | "TLS11")) => Err(format!(
            "{key}: {old} is not supported (rustls serves TLS 1.2 and 1.3 only)"
        )),
        Some(other) => Err(format!("unknown TLS version: {other}")),
    }
}

/// The TLS server configuration the web config file describes, or none when it has no
/// `tls_server_config`.
pub fn server_config(web_config: &Path) -> Result<Option<Arc<ServerConfig>>, String> {
    let text = std::fs::read_to_string(web_config)
        .map_err(|e| format!("web config {}: {e}", web_config.display()))?;
    server_config_watching(web_config, &text, &mut Vec::new())
}

/// [`server_config`], adding to `used` every file it reads or tried to read (the web config
/// file itself not included), so a caller can watch them for changes.
fn server_config_watching(
    web_config: &Path,
    text: &str,
    used: &mut Vec<PathBuf>,
) -> Result<Option<Arc<ServerConfig>>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let part: TlsPart = serde_yaml::from_str(text)
        .map_err(|e| format!("web config {}: {e}", web_config.display()))?;
    let Some(tls) = part.tls_server_config else {
        return Ok(None);
    };
    let dir = web_config.parent().unwrap_or(Path::new("."));
    build(&tls, dir, used).map(Some).map_err(|e| {
        format!(
            "web config {}: tls_server_config: {e}",
            web_config.display()
        )
    })
}

fn build(
    tls: &TlsServerConfig,
    dir: &Path,
    used: &mut Vec<PathBuf>,
) -> Result<Arc<ServerConfig>, String> {
    let cert = pem(
        dir,
        tls.cert_file.as_ref(),
        tls.cert.as_ref(),
        ("cert", "cert_file"),
        used,
    )?
    .ok_or("missing one of cert or cert_file")?;
    let key = pem(
        dir,
        tls.key_file.as_ref(),
        tls.key.as_ref(),
        ("key", "key_file"),
        used,
    )?
    .ok_or("missing one of key or key_file")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cert: {e}"))?;
    if certs.is_empty() {
        return Err("cert: no certificate in the PEM data".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("key: {e}"))?;

    let min = version(
        tls.min_version.as_ref(),
        &rustls::version::TLS12,
        "min_version",
    )?;
    let max = version(
        tls.max_version.as_ref(),
        &rustls::version::TLS13,
        "max_version",
    )?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match (min.version, max.version)
    {
        (rustls::ProtocolVersion::TLSv1_2, rustls::ProtocolVersion::TLSv1_2) => {
            vec![&rustls::version::TLS12]
        }
        (rustls::ProtocolVersion::TLSv1_3, rustls::ProtocolVersion::TLSv1_3) => {
            vec![&rustls::version::TLS13]
        }
        (rustls::ProtocolVersion::TLSv1_2, _) => {
            vec![&rustls::version::TLS12, &rustls::version::TLS13]
        }
        _ => return Err("min_version is above max_version".into()),
    };

    let mut provider = provider();
    if !tls.cipher_suites.is_empty() {
        use rustls::crypto::ring::cipher_suite as cs;
        let mut chosen: Vec<rustls::SupportedCipherSuite> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .collect();
        for name in &tls.cipher_suites {
            let suite = match name
                .trim_end_matches("_SHA256")
                .trim_end_matches("_POLY1305")
            {
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                }
                "TLS_ECDHE_ECDSA_WITH_CHACHA20" => {
                    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                }
                "TLS_ECDHE_RSA_WITH_AES_128_GCM" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
                    cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                }
                "TLS_ECDHE_RSA_WITH_CHACHA20" => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                _ => {
                    return Err(format!(
                        "cipher suite {name} is not supported (rustls offers only the ECDHE AES-GCM and ChaCha20-Poly1305 suites)"
                    ));
                }
            };
            chosen.push(suite);
        }
        provider.cipher_suites = chosen;
    }
    if !tls.curve_preferences.is_empty() {
        use rustls::crypto::ring::kx_group;
        let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
        for name in &tls.curve_preferences {
            groups.push(match name.as_str() {
                "CurveP256" => kx_group::SECP256R1,
                "CurveP384" => kx_group::SECP384R1,
                "X25519" => kx_group::X25519,
                other => {
                    return Err(format!(
                        "curve {other} is not supported (CurveP256, CurveP384 and X25519 are)"
                    ));
                }
            });
        }
        provider.kx_groups = groups;
    }
    let provider = Arc::new(provider);

    let ca = pem(
        dir,
        tls.client_ca_file.as_ref(),
        tls.client_ca.as_ref(),
        ("client_ca", "client_ca_file"),
        used,
    )?;
    let auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let required = match auth {
        "" | "NoClientCert" => None,
        "VerifyClientCertIfGiven" => Some(false),
        "RequireAndVerifyClientCert" => Some(true),
        "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
            return Err(format!(
                "client_auth_type {auth} (certificates accepted without verification) is not supported; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ));
        }
        other => return Err(format!("invalid ClientAuth: {other}")),
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let builder = match (required, ca) {
        (None, Some(_)) => {
            return Err("client CA's have been configured without a Client Auth Policy".into());
        }
        (None, None) => {
            if !tls.client_allowed_sans.is_empty() {
                return Err(
                    "client_allowed_sans needs a client_auth_type that verifies certificates"
                        .into(),
                );
            }
            builder.with_no_client_auth()
        }
        (Some(_), None) => {
            return Err(format!(
                "client_auth_type {auth} needs client_ca_file or client_ca"
            ));
        }
        (Some(required), Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&ca) {
                roots
                    .add(c.map_err(|e| format!("client_ca: {e}"))?)
                    .map_err(|e| format!("client_ca: {e}"))?;
            }
            if roots.is_empty() {
                return Err("client_ca: no certificate in the PEM data".into());
            }
            let mut v =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            if !required {
                v = v.allow_unauthenticated();
            }
            let inner = v.build().map_err(|e| format!("client_ca: {e}"))?;
            let mut sans = Vec::new();
            for s in &tls.client_allowed_sans {
                sans.push(ServerName::try_from(s.clone()).map_err(|_| {
                    format!("client_allowed_sans: {s:?} is neither a DNS name nor an IP address (the only kinds supported)")
                })?);
            }
            let verifier: Arc<dyn ClientCertVerifier> = if sans.is_empty() {
                inner
            } else {
                Arc::new(AllowedSans { inner, sans })
            };
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert and key: {e}"))?;
    config.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    // HTTP/1.1 only, whatever `http2` says: Prometheus scrapes over HTTP/1.1, and not serving
    // HTTP/2 at all leaves no stream-reset floods to defend against.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client certificates verified by the CA and then required to name one of the allowed SANs.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    /// With an allow-list a certificate is required even under `VerifyClientCertIfGiven`:
    /// rustls never asks this verifier about a client that sends none, so the list would
    /// otherwise not apply to it.
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("client certificate: {e}")))?;
        // Exact comparison, as exporter-toolkit does: a wildcard certificate does not stand
        // for a listed name.
        let allowed = self.sans.iter().any(|san| match san {
            ServerName::DnsName(name) => cert
                .valid_dns_names()
                .any(|d| d.eq_ignore_ascii_case(name.as_ref())),
            ServerName::IpAddress(_) => cert.verify_is_valid_for_subject_name(san).is_ok(),
            _ => false,
        });
        if allowed {
            Ok(verified)
        } else {
            Err(rustls::Error::General(
                "client certificate carries none of client_allowed_sans".into(),
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What identifies a file's content without reading it: a rewrite in place changes the change
/// time even when a tool keeps the modification time and size, a rename changes the inode.
type Stamp = Option<(SystemTime, i64, i64, u64, u64, u64)>;

fn stamp(p: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| {
        (
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
            m.dev(),
            m.len(),
        )
    })
}

/// The current TLS configuration, rebuilt when the web config file or a file it names changed.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    /// The files read, as they were, and what was built from them.
    cached: Mutex<Cached>,
}

#[derive(Debug)]
struct Cached {
    /// The web config file first, then the files it names.
    stamps: Vec<(PathBuf, Stamp)>,
    config: Arc<ServerConfig>,
}

impl Source {
    /// The TLS setup of the file at `path`, whose text is `text`; `Ok(None)` when it
    /// configures no TLS.
    pub fn open(path: PathBuf, text: &str) -> Result<Option<Self>, String> {
        let before = stamp(&path);
        let mut used = Vec::new();
        let Some(config) = server_config_watching(&path, text, &mut used)? else {
            return Ok(None);
        };
        let stamps = Self::stamps(&path, before, &[], used);
        Ok(Some(Self {
            path,
            cached: Mutex::new(Cached { stamps, config }),
        }))
    }

    /// Stamps for the files of a build: those known before it keep the stamps taken before
    /// reading (a change during the build is then seen next time), new ones are stamped now.
    fn stamps(
        path: &Path,
        web_before: Stamp,
        before: &[(PathBuf, Stamp)],
        used: Vec<PathBuf>,
    ) -> Vec<(PathBuf, Stamp)> {
        let mut out = vec![(path.to_path_buf(), web_before)];
        for p in used {
            let s = before
                .iter()
                .find(|(q, _)| *q == p)
                .map_or_else(|| stamp(&p), |(_, s)| *s);
            out.push((p, s));
        }
        out
    }

    /// The configuration for a new connection (no file access).
    pub fn current(&self) -> Arc<ServerConfig> {
        let cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&cached.config)
    }

    /// Rebuilds the configuration when the web config file (whose text is `text` now) or a
    /// file it names changed. A file that became unreadable or invalid keeps the last good
    /// configuration (logged), so a half-written renewal does not stop serving; the error says
    /// why (for the caller to refuse a web config file whose TLS part is invalid).
    pub fn refresh(&self, text: &str) -> Result<(), String> {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now: Vec<(PathBuf, Stamp)> = cached
            .stamps
            .iter()
            .map(|(p, _)| (p.clone(), stamp(p)))
            .collect();
        if now.iter().zip(&cached.stamps).all(|(a, b)| a.1 == b.1) {
            return Ok(());
        }
        let web_before = now.first().and_then(|(_, s)| *s);
        let mut used = Vec::new();
        match server_config_watching(&self.path, text, &mut used) {
            Ok(Some(config)) => {
                tracing::info!(file = %self.path.display(), "TLS configuration reloaded");
                cached.stamps = Self::stamps(&self.path, web_before, &now[1..], used);
                cached.config = config;
                Ok(())
            }
            failed => {
                let reason = match failed {
                    Ok(_) => {
                        tracing::error!(file = %self.path.display(), "tls_server_config was removed; TLS stays on with the last configuration until a restart");
                        "tls_server_config was removed".to_owned()
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS configuration not reloaded; the last good one stays");
                        e
                    }
                };
                // Watch what this attempt read or tried to read, as it was before reading.
                cached.stamps = Self::stamps(&self.path, web_before, &now[1..], used);
                Err(reason)
            }
        }
    }
}

/// Handshakes in progress at once; more wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 256;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A TLS listener for `axum::serve`: TCP connections are accepted and their handshakes run
/// in separate tasks, so one slow client never holds up the others.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsListener {
    /// Serves TLS on `listener` with the configuration the web config `loader` gives each new
    /// connection.
    pub fn new(
        listener: TcpListener,
        loader: Arc<crate::webconfig::Loader>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, then go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(source) = loader.tls() else {
                    return;
                };
                let acceptor = TlsAcceptor::from(source.current());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, addr)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(client = %addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local, rx, task })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tls")
    }

    fn check(yaml: &str) -> Result<(), String> {
        let tls: TlsServerConfig = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        build(&tls, &fixtures(), &mut Vec::new()).map(|_| ())
    }

    #[test]
    fn errors_name_the_setting() {
        let base = "cert_file: server.pem\nkey_file: server-key.pem\n";
        check(base).unwrap();
        for (yaml, want) in [
            (
                "key_file: server-key.pem\n".to_owned(),
                "missing one of cert or cert_file",
            ),
            (
                "cert_file: server.pem\n".to_owned(),
                "missing one of key or key_file",
            ),
            (
                format!("{base}cert: x\n"),
                "at most one of cert and cert_file",
            ),
            (
                format!("{base}client_auth_type: Sometimes\n"),
                "invalid ClientAuth: Sometimes",
            ),
            (
                format!("{base}client_ca_file: ca.pem\n"),
                "without a Client Auth Policy",
            ),
            (
                format!("{base}client_auth_type: RequireAndVerifyClientCert\n"),
                "needs client_ca_file",
            ),
            (
                format!("{base}client_auth_type: RequireAnyClientCert\n"),
                "is not supported",
            ),
            (
                format!("{base}min_version: TLS10\n"),
                "TLS10 is not supported",
            ),
            (
                format!("{base}min_version: SSL3\n"),
                "unknown TLS version: SSL3",
            ),
            (
                format!("{base}min_version: TLS13\nmax_version: TLS12\n"),
                "above max_version",
            ),
            (
                format!("{base}cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n"),
                "is not supported",
            ),
            (
                format!("{base}curve_preferences: [CurveP521]\n"),
                "CurveP521 is not supported",
            ),
            (format!("{base}bogus: 1\n"), "unknown field `bogus`"),
            (
                "cert_file: missing.pem\nkey_file: server-key.pem\n".to_owned(),
                "missing.pem",
            ),
            (
                "cert_file: server-key.pem\nkey_file: server-key.pem\n".to_owned(),
                "no certificate",
            ),
        ] {
            let e = check(&yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        check(&format!(
            "{base}client_auth_type: RequireAndVerifyClientCert\nclient_ca_file: ca.pem\nclient_allowed_sans: [client.example, 10.0.0.1]\nmin_version: TLS13\ncipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\ncurve_preferences: [X25519, CurveP256]\nprefer_server_cipher_suites: false\n"
        ))
        .unwrap();
    }
}
