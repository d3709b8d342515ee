//! The shared HTTP client and bounded body reading for collectors.

use std::time::Duration;

/// The settings every tidegauge HTTP client shares: rustls (ring), gzip, pooled connections,
/// a connect timeout. Per-request timeouts are set by each call, from the scrape budget.
pub fn builder() -> reqwest::ClientBuilder {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("tidegauge/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
}

/// Whether two URLs share scheme, host and port.
pub fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Builds the HTTP client shared by all collectors ([`builder`]). It follows at most 10
/// redirects, and only within the origin of the request's URL: no request a collector makes
/// is sent to a host its configuration does not name. A collector that must allow other hops
/// follows them itself, checking each.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    client_from(builder())
}

/// [`client`] from another builder ([`builder`] with changes, such as tests' own resolver).
pub fn client_from(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, reqwest::Error> {
    builder
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().cloned();
            if attempt.previous().len() > 10 {
                attempt.error("too many redirects")
            } else if first.is_some_and(|f| same_origin(&f, attempt.url())) {
                attempt.follow()
            } else {
                attempt.error("redirect to another origin")
            }
        }))
        .build()
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than the limit.
    #[error("response body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The transfer failed (including timeouts).
    #[error("reading the response body failed: {0}")]
    Transport(#[from] reqwest::Error),
}

/// Reads a response body, refusing more than `limit` bytes (checked against `Content-Length`
/// first, then while streaming, so an oversized body is never buffered whole).
pub async fn read_body_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if let Some(len) = response.content_length()
        && len > limit as u64
    {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
