//! One remote-write request and what its answer means for the queue.

use std::time::Duration;

use crate::config::Credentials;

/// First wait after a failure (Prometheus's `min_backoff`).
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(30);
/// Longest wait between attempts, unless the receiver asks for more (Prometheus's
/// `max_backoff`).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Bytes of an error answer kept for the log.
const ERROR_BODY: usize = 512;

/// What to do with a request after one attempt.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Accepted: remove it.
    Sent,
    /// Refused for good (4xx but 429): remove and count it.
    Refused { out_of_order: bool, why: String },
    /// Try again: network error, timeout, 5xx, 429, a redirect not followed.
    Retry {
        after: Option<Duration>,
        why: String,
    },
}

/// Receivers' words for a sample outside their window: Prometheus ("out of order sample",
/// "out of bounds", "too old"), Mimir and Cortex ("sample-out-of-order", "sample-too-old",
/// "out of order"), Thanos ("out of bounds").
fn says_out_of_order(body: &str) -> bool {
    let b = body.to_ascii_lowercase();
    [
        "out of order",
        "out-of-order",
        "out of bounds",
        "out-of-bounds",
        "too old",
        "too-old",
        "duplicate sample",
    ]
    .iter()
    .any(|w| b.contains(w))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

async fn error_text(resp: reqwest::Response) -> String {
    let mut resp = resp;
    let mut out = Vec::new();
    while out.len() < ERROR_BODY {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(ERROR_BODY - out.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).trim().to_owned()
}

/// How long to wait before the next attempt: the receiver's `Retry-After`, never less than
/// the backoff (a `Retry-After: 0` must not turn retries into a busy loop).
pub(crate) fn next_wait(after: Option<Duration>, backoff: Duration) -> Duration {
    after.map_or(backoff, |a| a.max(backoff))
}

/// A transport error with its causes (reqwest's own message names only the request).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Sends one request body (snappy-compressed `WriteRequest`).
pub(crate) async fn send(
    client: &reqwest::Client,
    url: &reqwest::Url,
    credentials: &Credentials,
    body: Vec<u8>,
) -> Outcome {
    let mut req = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .header(reqwest::header::CONTENT_ENCODING, "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body);
    req = match credentials {
        Credentials::None => req,
        Credentials::Basic(u, p) => req.basic_auth(u, Some(p)),
        Credentials::Bearer(t) => req.bearer_auth(t),
    };
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                after: None,
                why: describe(&e),
            };
        }
    };
    let status = resp.status();
    if status.is_success() {
        return Outcome::Sent;
    }
    let after = retry_after(resp.headers());
    let text = error_text(resp).await;
    let why = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    };
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Outcome::Retry { after, why }
    } else if status.is_client_error() {
        Outcome::Refused {
            out_of_order: says_out_of_order(&text),
            why,
        }
    } else {
        // A redirect the client would not follow (another origin) or an odd status: keep the
        // samples; the log says why nothing arrives.
        Outcome::Retry { after: None, why }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_never_shortens_the_backoff() {
        let ms = Duration::from_millis;
        assert_eq!(next_wait(Some(Duration::ZERO), ms(30)), ms(30));
        assert_eq!(next_wait(Some(ms(2000)), ms(30)), ms(2000));
        assert_eq!(next_wait(None, ms(60)), ms(60));
    }

    #[test]
    fn receivers_refusals_of_old_samples_are_recognised() {
        for body in [
            "out of order sample",
            "out of bounds",
            "err-mimir-sample-out-of-order: the sample has been rejected because another sample with a more recent timestamp has already been ingested and out-of-order samples are not allowed",
            "err-mimir-sample-too-old",
            "duplicate sample for timestamp",
        ] {
            assert!(says_out_of_order(body), "{body}");
        }
        assert!(!says_out_of_order("snappy: corrupt input"));
    }
}
