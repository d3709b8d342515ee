//! `[remote_write]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[remote_write]`: where and how what the host gathers is sent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver's write URL (`http://mimir:9009/api/v1/push`,
    /// `http://prometheus:9090/api/v1/write`).
    pub url: String,
    /// How often the collectors are gathered and the result queued.
    #[serde(
        default = "default_interval",
        deserialize_with = "tidegauge_core::duration::deserialize"
    )]
    pub interval: Duration,
    /// Timeout of one request to the receiver.
    #[serde(
        default = "default_timeout",
        deserialize_with = "tidegauge_core::duration::deserialize"
    )]
    pub timeout: Duration,
    /// Directory of the on-disk queue; `remote-write` under the data directory by default.
    #[serde(default)]
    pub queue_dir: Option<PathBuf>,
    /// Bytes the queue may hold on disk; past it the oldest requests are dropped and counted.
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: u64,
    /// Samples per request at most.
    #[serde(default = "default_max_samples_per_send")]
    pub max_samples_per_send: usize,
    /// Collectors whose series are sent (the host's own always are); all enabled ones when
    /// absent.
    #[serde(default)]
    pub collectors: Option<Vec<String>>,
    /// Labels added to every series sent that does not have them.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
    /// Basic authentication.
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// A bearer token.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// A file holding the bearer token (re-read on reload).
    #[serde(default)]
    pub bearer_token_file: Option<PathBuf>,
    /// TLS towards the receiver.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// `[remote_write.basic_auth]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (re-read on reload).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `[remote_write.tls]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CA certificates trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. For tests only.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_queue_max_bytes() -> u64 {
    512 << 20
}
fn default_max_samples_per_send() -> usize {
    2000
}

/// A `[remote_write]` setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("remote_write.{key}: {why}")]
pub struct ConfigError {
    /// The key.
    pub key: &'static str,
    /// What is wrong.
    pub why: String,
}

fn err(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        why: why.into(),
    }
}

/// Credentials resolved from the configuration (files read).
#[derive(Clone, PartialEq)]
pub(crate) enum Credentials {
    None,
    Basic(String, String),
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "None",
            Self::Basic(..) => "Basic(<redacted>)",
            Self::Bearer(_) => "Bearer(<redacted>)",
        })
    }
}

fn read_secret(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err(key, format!("{}: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

impl RemoteWriteConfig {
    /// Checks every setting; returns the parsed URL.
    pub fn validate(&self) -> Result<reqwest::Url, ConfigError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| err("url", format!("{:?}: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(err(
                "url",
                format!("{:?}: the scheme must be http or https", self.url),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err(
                "url",
                "credentials in the URL would be logged; give them in remote_write.basic_auth",
            ));
        }
        if self.interval < Duration::from_millis(100) || self.interval > Duration::from_secs(86_400)
        {
            return Err(err("interval", "must be between 100ms and 24h"));
        }
        if self.timeout.is_zero() {
            return Err(err("timeout", "must be greater than zero"));
        }
        if self.queue_max_bytes < 1 << 20 {
            return Err(err("queue_max_bytes", "must be at least 1 MiB (1048576)"));
        }
        if self.max_samples_per_send == 0 {
            return Err(err("max_samples_per_send", "must be at least 1"));
        }
        for name in self.external_labels.keys() {
            if !tidegauge_core::snapshot::is_valid_label_name(name) || name.starts_with("__") {
                return Err(err(
                    "external_labels",
                    format!("{name:?} is not a usable label name"),
                ));
            }
        }
        let auths = [
            self.basic_auth.is_some(),
            self.bearer_token.is_some(),
            self.bearer_token_file.is_some(),
        ];
        if auths.iter().filter(|a| **a).count() > 1 {
            return Err(err(
                "basic_auth",
                "give one of basic_auth, bearer_token and bearer_token_file",
            ));
        }
        if let Some(b) = &self.basic_auth
            && b.password.is_some() == b.password_file.is_some()
        {
            return Err(err("basic_auth", "give one of password and password_file"));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(err("tls", "cert_file and key_file go together"));
        }
        Ok(url)
    }

    pub(crate) fn credentials(&self) -> Result<Credentials, ConfigError> {
        if let Some(b) = &self.basic_auth {
            let password = match (&b.password, &b.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => read_secret("basic_auth.password_file", f)?,
                (None, None) => String::new(),
            };
            return Ok(Credentials::Basic(b.username.clone(), password));
        }
        if let Some(t) = &self.bearer_token {
            return Ok(Credentials::Bearer(t.clone()));
        }
        if let Some(f) = &self.bearer_token_file {
            return Ok(Credentials::Bearer(read_secret("bearer_token_file", f)?));
        }
        Ok(Credentials::None)
    }

    /// The HTTP client for the receiver: the host's settings, this table's TLS, redirects only
    /// within the URL's origin (so credentials never leave it).
    pub(crate) fn client(&self) -> Result<reqwest::Client, ConfigError> {
        let mut b = tidegauge_core::http::builder().timeout(self.timeout);
        let read = |key: &'static str, p: &Path| {
            std::fs::read(p).map_err(|e| err(key, format!("{}: {e}", p.display())))
        };
        if let Some(ca) = &self.tls.ca_file {
            let pem = read("tls.ca_file", ca)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| err("tls.ca_file", format!("{}: {e}", ca.display())))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&self.tls.cert_file, &self.tls.key_file) {
            let mut pem = read("tls.cert_file", cert)?;
            pem.push(b'\n');
            pem.extend(read("tls.key_file", key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| err("tls.cert_file", format!("{}: {e}", cert.display())))?;
            b = b.identity(id);
        }
        if self.tls.insecure_skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        // Only 307 and 308 keep the method and body; a 301, 302 or 303 would turn the write
        // into a bodiless GET whose 200 (a login page, say) would count the samples as sent.
        // So those stay answers, retried; and no redirect leaves the URL's origin.
        let b = b.redirect(reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().cloned();
            if !matches!(attempt.status().as_u16(), 307 | 308) {
                attempt.stop()
            } else if attempt.previous().len() > 10 {
                attempt.error("too many redirects")
            } else if first.is_some_and(|f| tidegauge_core::http::same_origin(&f, attempt.url())) {
                attempt.follow()
            } else {
                attempt.error("redirect to another origin")
            }
        }));
        b.build().map_err(|e| err("tls", e.to_string()))
    }

    /// The queue directory: the configured one, or `remote-write` under `data_dir`.
    pub fn queue_dir(&self, data_dir: &Path) -> PathBuf {
        self.queue_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("remote-write"))
    }
}
