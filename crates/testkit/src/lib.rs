//! Helpers for testing tidegauge collectors: a settable clock, scrape contexts, fixture paths
//! and filters that make encoded output deterministic for snapshots.

pub mod board;
pub mod faults;
pub mod ifcb;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tidegauge_core::encode::{encode_openmetrics, encode_text};
use tidegauge_core::{Clock, ScrapeContext, Snapshot};

/// A clock that stands still until told to move.
#[derive(Debug)]
pub struct FakeClock(Mutex<SystemTime>);

impl FakeClock {
    /// A clock showing `unix_seconds` after the epoch.
    pub fn at(unix_seconds: u64) -> Arc<Self> {
        Arc::new(Self(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(unix_seconds),
        )))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut t = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *t += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: SystemTime) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = to;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// 2024-05-01T12:00:00Z, the instant fixtures are written against.
pub const FIXTURE_EPOCH: u64 = 1_714_564_800;

/// Resolves only `localhost`, so tests reach only loopback: any other name, `*.invalid`
/// (the unknown host of the fault matrix) among them, fails at once without a DNS query.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopbackResolver;

impl reqwest::dns::Resolve for LoopbackResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let result: Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>> =
            if name.as_str().eq_ignore_ascii_case("localhost") {
                Ok(Box::new(
                    vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))].into_iter(),
                ))
            } else {
                Err(format!(
                    "no such host: {} (tests resolve only localhost)",
                    name.as_str()
                )
                .into())
            };
        Box::pin(std::future::ready(result))
    }
}

/// The HTTP client collectors get in production, with [`LoopbackResolver`].
pub fn http_client() -> reqwest::Client {
    tidegauge_core::http::client_from(
        tidegauge_core::http::builder().dns_resolver(LoopbackResolver),
    )
    .unwrap_or_else(|e| panic!("HTTP client: {e}"))
}

/// A scrape context with `budget`, the given clock and a fresh HTTP client ([`http_client`]).
pub fn context(budget: Duration, clock: Arc<dyn Clock>) -> ScrapeContext {
    ScrapeContext::new(budget, clock, http_client())
}

/// Host services for tests: a fresh HTTP client, `clock`, `data_dir`, and an empty environment.
pub fn services(clock: Arc<dyn Clock>, data_dir: PathBuf) -> tidegauge_core::HostServices {
    tidegauge_core::HostServices {
        clock,
        env: tidegauge_core::Environment::from_pairs::<&str, &str>([]),
        ..tidegauge_core::HostServices::new(http_client(), data_dir)
    }
}

/// The workspace's `fixtures/` directory: the first `fixtures/` above the crate under test
/// (cargo sets `CARGO_MANIFEST_DIR` when it runs a test).
pub fn fixtures_dir() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .map(|d| d.join("fixtures"))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| start.join("fixtures"))
}

/// Reads `fixtures/<rel>`.
pub fn fixture(rel: &str) -> Vec<u8> {
    let path = fixtures_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// A snapshot as Prometheus reads it (OpenMetrics 1.0.0), with [`redact`] applied. One format
/// is enough for a collector's snapshot: the encoders themselves are tested in core.
pub fn render(snapshot: &Snapshot) -> String {
    redact(&encode_openmetrics(&[Arc::new(snapshot.clone())]))
}

/// Both encodings, text 0.0.4 first, for output that differs between them by design (pushed
/// families keep the names clients gave them, which the two formats spell differently).
pub fn render_formats(snapshot: &Snapshot) -> String {
    let parts = [Arc::new(snapshot.clone())];
    format!(
        "## text 0.0.4\n{}## OpenMetrics 1.0.0\n{}",
        redact(&encode_text(&parts)),
        redact(&encode_openmetrics(&parts))
    )
}

/// Replaces the values of series that measure elapsed time (names ending in
/// `duration_seconds`, histogram series included) with `<elapsed>`, so snapshots do not depend on speed.
pub fn redact(exposition: &str) -> String {
    let re =
        regex::Regex::new(r"(?m)^([a-zA-Z_:][a-zA-Z0-9_:]*duration_seconds(?:_bucket|_sum|_count)?(?:\{[^}]*\})?) \S+$")
            .unwrap_or_else(|e| panic!("redaction regex: {e}"));
    re.replace_all(exposition, "$1 <elapsed>").into_owned()
}

/// Removes every line (HELP, TYPE, UNIT and samples) of the families whose names start with
/// `prefix`, for series that depend on timing or process history (e.g. store commit counters).
pub fn drop_families(exposition: &str, prefix: &str) -> String {
    exposition
        .lines()
        .filter(|l| {
            let name = l
                .strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .or_else(|| l.strip_prefix("# UNIT "))
                .unwrap_or(l);
            !name.starts_with(prefix)
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name other than `localhost` fails in the resolver itself: no DNS query leaves the
    /// machine.
    #[tokio::test]
    async fn the_test_client_resolves_only_localhost() {
        let e = http_client()
            .get("http://example.com/")
            .send()
            .await
            .unwrap_err();
        let chain = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains("tests resolve only localhost"), "{chain}");
    }

    #[test]
    fn redacts_only_elapsed_values() {
        let input = "app_status_fetch_duration_seconds{target=\"a\"} 0.0123\napp_status_result_age_seconds{target=\"a\"} 1\napp_uptime 25.99\n";
        assert_eq!(
            redact(input),
            "app_status_fetch_duration_seconds{target=\"a\"} <elapsed>\napp_status_result_age_seconds{target=\"a\"} 1\napp_uptime 25.99\n"
        );
    }

    #[test]
    fn drops_whole_families() {
        let text = "# HELP a_x A\n# TYPE a_x counter\na_x_total 1\n# HELP b B\nb 2\n";
        assert_eq!(drop_families(text, "a_"), "# HELP b B\nb 2\n");
    }

    #[test]
    fn fake_clock_moves_only_when_told() {
        let c = FakeClock::at(FIXTURE_EPOCH);
        let t0 = c.now();
        c.advance(Duration::from_secs(3));
        assert_eq!(
            c.now().duration_since(t0).ok(),
            Some(Duration::from_secs(3))
        );
    }
}
