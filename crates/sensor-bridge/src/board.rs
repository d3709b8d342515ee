//! Boards running prometheus_express: fragile single-threaded HTTP servers (spec §1). At most
//! one connection per board, a minimum interval between requests, a request that runs to its own
//! timeout whatever the scrape does, and backoff with jitter after failures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Empty, Limited};
use tidegauge_core::lock;
use tidegauge_core::singleflight::SingleFlight;
use tokio::time::Instant;

use crate::Errors;
use crate::config::{BoardAddress, BoardConfig};
use crate::parse::{Parsed, parse};

/// Why a request failed: the `reason` label of `sensor_read_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection or no complete answer in time.
    Timeout,
    /// The connection was refused.
    Refused,
    /// Anything else on the wire: a reset, an empty reply, a status other than 200, a body
    /// over `max_body`.
    Http(String),
    /// An answer with more series than `max_series`.
    TooManySeries(usize),
    /// An answer of which not one line could be read (a login page, JSON).
    Unreadable(usize),
}

impl Failure {
    /// The `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Refused => "refused",
            Failure::Http(_) => "http",
            Failure::TooManySeries(_) | Failure::Unreadable(_) => "parse",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("timed out"),
            Failure::Refused => f.write_str("connection refused"),
            Failure::Http(m) => f.write_str(m),
            Failure::TooManySeries(n) => write!(f, "{n} series, more than max_series"),
            Failure::Unreadable(n) => write!(f, "none of {n} lines is a sample"),
        }
    }
}

/// The wait after `failures` consecutive failures (at least one): `initial` doubled per further
/// failure, at most `max`, times `jitter` (drawn from 0.8–1.2).
pub fn backoff(failures: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    let base = initial
        .checked_mul(1u32 << doublings)
        .unwrap_or(max)
        .min(max);
    Duration::try_from_secs_f64(base.as_secs_f64() * jitter.clamp(0.8, 1.2))
        .unwrap_or(max)
        .min(max)
}

/// `now + d`, or a day from now when that cannot be represented.
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}

/// A good answer and when it arrived.
#[derive(Debug, Clone)]
pub struct Held {
    /// The series read.
    pub parsed: Arc<Parsed>,
    /// When the answer was complete.
    pub at: Instant,
}

#[derive(Debug, Default)]
struct State {
    held: Option<Held>,
    last_ok: bool,
    last_duration: Option<Duration>,
    failures: u32,
    /// No request starts before this.
    next_allowed: Option<Instant>,
}

/// What one scrape serves of a board.
#[derive(Debug, Clone)]
pub struct View {
    /// The board's name.
    pub name: String,
    /// `sensor_board_up`.
    pub up: bool,
    /// Duration of the last request, if one was made.
    pub duration: Option<Duration>,
    /// The fresh sample served, its age, and when it arrived (which tells samples apart).
    pub sample: Option<(Arc<Parsed>, Duration, Instant)>,
}

/// What keeps one board's requests apart: the request in flight, the interval and backoff, the
/// sample held. Shared by every configuration of the same address, so that a reload that
/// changes a board's settings neither opens a second connection nor hurries a request.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<State>,
    flight: SingleFlight<()>,
}

/// One board.
#[derive(Debug)]
pub struct Board {
    config: BoardConfig,
    address: BoardAddress,
    gate: Arc<Gate>,
    errors: Arc<Errors>,
}

impl Board {
    /// A board behind `gate` (a new one when the address was not configured before).
    pub fn new(
        config: BoardConfig,
        address: BoardAddress,
        errors: Arc<Errors>,
        gate: Option<Arc<Gate>>,
    ) -> Self {
        Self {
            config,
            address,
            gate: gate.unwrap_or_default(),
            errors,
        }
    }

    /// Where the board is reached.
    pub fn address(&self) -> &BoardAddress {
        &self.address
    }

    /// The board's gate, for the board's next configuration.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// The board's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The board's settings.
    pub fn config(&self) -> &BoardConfig {
        &self.config
    }

    /// The board's sample for a scrape that must answer by `deadline`: joins the request in
    /// flight, or starts one when the minimum interval and any backoff have passed, and waits
    /// for it until the deadline; otherwise serves what it holds.
    pub async fn scrape(self: &Arc<Self>, deadline: Instant) -> View {
        let gate = &self.gate;
        let flight = {
            let mut st = lock(&gate.state);
            let now = Instant::now();
            if gate.flight.in_flight() {
                Some(gate.flight.run(|| async {}.boxed()))
            } else if st.next_allowed.is_none_or(|t| now >= t) {
                st.next_allowed = Some(later(now, self.config.min_interval));
                let board = Arc::clone(self);
                Some(gate.flight.run(move || board.request().boxed()))
            } else {
                None
            }
        };
        if let Some(f) = flight {
            // The request runs on as its own task when the scrape gives up.
            let _ = tokio::time::timeout_at(deadline, f).await;
        }
        self.view()
    }

    /// The board as the landing page shows it: up or down, the age of its last good answer,
    /// failures in a row and when the next request may go (backoff).
    pub fn status_row(&self) -> tidegauge_core::status::Row {
        use tidegauge_core::status::{Cell, Health, Row};
        let st = lock(&self.gate.state);
        let now = Instant::now();
        let age = st
            .held
            .as_ref()
            .map(|h| now.saturating_duration_since(h.at));
        let up = st.last_ok && age.is_some_and(|a| a < self.config.stale_after);
        let health = if up {
            Health::Ok
        } else if st.last_duration.is_none() && st.failures == 0 {
            Health::Unknown
        } else {
            Health::Failing
        };
        let a = &self.address;
        Row::new(
            health,
            vec![
                Cell::Text(self.config.name.clone()),
                Cell::Text(format!("{}:{}{}", a.host, a.port, a.path)),
                Cell::Text(if up { "up" } else { "down" }.into()),
                Cell::Ago(age),
                Cell::Text(st.failures.to_string()),
                match st.next_allowed.filter(|t| st.failures > 0 && *t > now) {
                    Some(t) => Cell::In(Some(t - now)),
                    None => Cell::Text("-".into()),
                },
            ],
        )
    }

    fn view(&self) -> View {
        let st = lock(&self.gate.state);
        let now = Instant::now();
        let sample = st
            .held
            .as_ref()
            .map(|h| {
                (
                    Arc::clone(&h.parsed),
                    now.saturating_duration_since(h.at),
                    h.at,
                )
            })
            .filter(|(_, age, _)| *age < self.config.stale_after);
        View {
            name: self.config.name.clone(),
            up: st.last_ok && sample.is_some(),
            duration: st.last_duration,
            sample,
        }
    }

    async fn request(self: Arc<Self>) {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.config.request_timeout, self.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Timeout),
        };
        let result = result.and_then(|body| {
            let parsed = parse(&String::from_utf8_lossy(&body));
            if parsed.series() > self.config.max_series {
                Err(Failure::TooManySeries(parsed.series()))
            } else if parsed.series() == 0 && parsed.skipped > 0 {
                Err(Failure::Unreadable(parsed.skipped))
            } else {
                Ok(parsed)
            }
        });
        let now = Instant::now();
        let mut st = lock(&self.gate.state);
        st.last_duration = Some(now - started);
        match result {
            Ok(parsed) => {
                if parsed.skipped > 0 {
                    tracing::debug!(board = %self.config.name, lines = parsed.skipped, "board lines skipped");
                    self.errors.add(
                        "board",
                        &self.config.name,
                        "",
                        "parse",
                        parsed.skipped as u64,
                    );
                }
                st.held = Some(Held {
                    parsed: Arc::new(parsed),
                    at: now,
                });
                st.last_ok = true;
                st.failures = 0;
            }
            Err(failure) => {
                st.last_ok = false;
                st.failures = st.failures.saturating_add(1);
                let wait = backoff(
                    st.failures,
                    self.config.backoff_initial,
                    self.config.backoff_max,
                    0.8 + 0.4 * fastrand::f64(),
                );
                let retry = later(now, wait);
                st.next_allowed = Some(st.next_allowed.map_or(retry, |t| t.max(retry)));
                tracing::warn!(board = %self.config.name, error = %failure, retry_in = ?wait, "board request failed");
                self.errors
                    .add("board", &self.config.name, "", failure.reason(), 1);
            }
        }
    }

    /// One `GET`: exactly a request line, `Host` and `Connection: close` (spec §1.3).
    async fn fetch(&self) -> Result<Bytes, Failure> {
        let a = &self.address;
        // RFC 6761: names under `.invalid` never resolve, so none is looked up.
        let host = a.host.trim_end_matches('.').to_ascii_lowercase();
        if host == "invalid" || host.ends_with(".invalid") {
            return Err(Failure::Http(format!("unknown host {}", a.host)));
        }
        let stream = match tokio::time::timeout(
            self.config.connect_timeout,
            tokio::net::TcpStream::connect((a.host.as_str(), a.port)),
        )
        .await
        {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(Failure::Refused);
            }
            Ok(Err(e)) => return Err(Failure::Http(format!("connect: {e}"))),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| Failure::Http(e.to_string()))?;
        // Dropped with this future (a timeout), so a hanging board's socket is closed.
        let driver = AbortOnDrop(tokio::spawn(conn));
        let request = hyper::Request::get(a.path.as_str())
            .header(hyper::header::HOST, a.host_header.as_str())
            .header(hyper::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| Failure::Http(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::Http(e.to_string()))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(Failure::Http(format!("HTTP status {}", response.status())));
        }
        let body = Limited::new(response.into_body(), self.config.max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Failure::Http(format!(
                        "answer over max_body ({} bytes)",
                        self.config.max_body
                    ))
                } else {
                    Failure::Http(e.to_string())
                }
            })?
            .to_bytes();
        drop(driver);
        Ok(body)
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_bounded_jitter() {
        let s = Duration::from_secs;
        let seq: Vec<Duration> = (1..=8).map(|n| backoff(n, s(5), s(300), 1.0)).collect();
        assert_eq!(
            seq,
            [s(5), s(10), s(20), s(40), s(80), s(160), s(300), s(300)]
        );
        assert_eq!(backoff(1, s(5), s(300), 0.8), s(4));
        assert_eq!(backoff(1, s(5), s(300), 1.2), s(6));
        assert_eq!(backoff(1, s(5), s(300), 9.0), s(6));
        assert_eq!(backoff(u32::MAX, s(5), s(300), 1.0), s(300));
        // Jitter never takes a wait past the cap.
        assert_eq!(backoff(7, s(5), s(300), 1.2), s(300));
        assert_eq!(backoff(2, s(5), s(8), 1.2), s(8));
        let huge = Duration::from_secs(u64::MAX / 2);
        assert_eq!(backoff(3, huge, huge, 1.2), huge);
    }
}
