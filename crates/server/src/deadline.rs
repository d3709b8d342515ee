//! The scrape budget: how long collectors may take for one request.

use std::time::Duration;

/// Settings of the budget derivation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeoutSettings {
    /// Used when Prometheus sends no `X-Prometheus-Scrape-Timeout-Seconds` (or `0`).
    pub default_timeout: Duration,
    /// Subtracted from the scrape timeout to leave room for the response.
    pub offset: Duration,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(10),
            offset: Duration::from_millis(500),
        }
    }
}

/// Longest budget a scrape may get, however large the header: keeps deadlines representable
/// and bounds how long a request can hold resources.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The header Prometheus sends with every scrape.
pub const SCRAPE_TIMEOUT_HEADER: &str = "X-Prometheus-Scrape-Timeout-Seconds";

/// A timeout header that is not a finite non-negative number of seconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {SCRAPE_TIMEOUT_HEADER} header {0:?}: expected a finite, non-negative number of seconds"
)]
pub struct BadTimeoutHeader(pub String);

/// `budget = max(base − offset, base / 2)`, where `base` is the header's value or the default
/// timeout when the header is absent or `0`.
pub fn scrape_budget(
    header: Option<&str>,
    settings: &TimeoutSettings,
) -> Result<Duration, BadTimeoutHeader> {
    let base = match header.map(str::trim) {
        None => settings.default_timeout,
        Some(raw) => {
            let secs: f64 = raw.parse().map_err(|_| BadTimeoutHeader(raw.to_owned()))?;
            if !secs.is_finite() || secs < 0.0 {
                return Err(BadTimeoutHeader(raw.to_owned()));
            }
            if secs == 0.0 {
                settings.default_timeout
            } else {
                Duration::try_from_secs_f64(secs).map_err(|_| BadTimeoutHeader(raw.to_owned()))?
            }
        }
    };
    let base = base.min(MAX_TIMEOUT);
    Ok(base.saturating_sub(settings.offset).max(base / 2))
}

/// A collector's share of the budget: capped by its own timeout when configured.
pub fn collector_budget(budget: Duration, cap: Option<Duration>) -> Duration {
    match cap {
        Some(cap) if !cap.is_zero() => budget.min(cap),
        _ => budget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_table() {
        let s = TimeoutSettings::default();
        let secs = Duration::from_secs_f64;
        // (header, collector cap, expected budget); None = 400.
        let table: &[(Option<&str>, Option<f64>, Option<f64>)] = &[
            (None, None, Some(9.5)),
            (Some("15"), None, Some(14.5)),
            (Some("15"), Some(5.0), Some(5.0)),
            (Some("10"), Some(20.0), Some(9.5)),
            (Some("0"), None, Some(9.5)),
            (Some("1"), None, Some(0.5)),
            (Some("0.6"), None, Some(0.3)),
            (Some(" 2.5 "), None, Some(2.0)),
            (Some("1e19"), None, Some(3599.5)),
            (Some("100000"), Some(5.0), Some(5.0)),
            (Some("abc"), None, None),
            (Some("-5"), None, None),
            (Some(""), None, None),
            (Some("NaN"), None, None),
            (Some("inf"), None, None),
            (Some("1e400"), None, None),
        ];
        for (header, cap, want) in table {
            let got = scrape_budget(*header, &s).map(|b| collector_budget(b, cap.map(secs)));
            match want {
                Some(w) => {
                    let got = got.unwrap_or_else(|e| panic!("{header:?}: {e}"));
                    assert!(
                        (got.as_secs_f64() - w).abs() < 1e-9,
                        "{header:?} {cap:?}: {got:?} != {w}"
                    );
                }
                None => assert!(got.is_err(), "{header:?} should be rejected, got {got:?}"),
            }
        }
    }

    #[test]
    fn custom_offset_and_default() {
        let s = TimeoutSettings {
            default_timeout: Duration::from_secs(30),
            offset: Duration::from_secs(1),
        };
        assert_eq!(scrape_budget(None, &s), Ok(Duration::from_secs(29)));
        assert_eq!(
            scrape_budget(Some("1.5"), &s),
            Ok(Duration::from_millis(750))
        );
    }
}
