//! Model input read from a Prometheus-compatible query API (Prometheus, Thanos, Mimir,
//! VictoriaMetrics): spec §4.3a and §4.4.

use std::time::Duration;

use serde::Deserialize;

/// Most a query answer may hold: `steps_back` points of one series are a few KiB, and an
/// expression matching thousands of series must not be buffered whole.
pub const MAX_ANSWER: usize = 16 << 20;

/// Credentials sent to the query API, as Prometheus's own HTTP client offers them.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// Characters of an upstream's reason kept (its error text can be as long as its answer).
pub(crate) const MAX_REASON: usize = 500;

/// Why an expression gave no model input.
#[derive(Debug, thiserror::Error)]
#[error("telemetry query {expr:?}: {reason}")]
pub struct TelemetryError {
    /// The expression.
    pub expr: String,
    /// What went wrong.
    pub reason: String,
}

/// A Prometheus-compatible HTTP API.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    query_range: reqwest::Url,
    auth: Option<Auth>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(default)]
    result: Vec<Series>,
}

#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    values: Vec<(f64, String)>,
}

impl PrometheusSource {
    /// The API under `base` (a path prefix, such as Thanos's or Mimir's `/prometheus`, is kept);
    /// every query gives up after `timeout`.
    pub fn new(base: &reqwest::Url, auth: Option<Auth>, timeout: Duration) -> Self {
        let mut query_range = base.clone();
        let path = format!("{}/api/v1/query_range", base.path().trim_end_matches('/'));
        query_range.set_path(&path);
        query_range.set_query(None);
        Self {
            query_range,
            auth,
            timeout,
        }
    }

    /// The newest `steps_back` values of `expr`'s first series, one per `step` up to `end`
    /// (Unix seconds), oldest first and padded at the start with 0 when the series is shorter.
    pub async fn input(
        &self,
        http: &reqwest::Client,
        expr: &str,
        end: f64,
        step: Duration,
        steps_back: usize,
    ) -> Result<Vec<f64>, TelemetryError> {
        let step_s = step.as_secs().max(1) as f64;
        let values = self
            .fetch(http, expr, end - steps_back as f64 * step_s, end, step)
            .await?;
        Ok(pad(values, steps_back))
    }

    /// Up to `points` values of `expr`'s first series, one per `step` up to `end`, oldest
    /// first and not padded (a training's history).
    pub async fn series(
        &self,
        http: &reqwest::Client,
        expr: &str,
        end: f64,
        step: Duration,
        points: usize,
    ) -> Result<Vec<f64>, TelemetryError> {
        let step_s = step.as_secs().max(1) as f64;
        let start = end - points.saturating_sub(1) as f64 * step_s;
        self.fetch(http, expr, start, end, step).await
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Result<Vec<f64>, TelemetryError> {
        let fail = |reason: String| TelemetryError {
            expr: expr.to_owned(),
            reason: tidegauge_core::status::clip(&reason, MAX_REASON),
        };
        let step_s = step.as_secs().max(1);
        let mut url = self.query_range.clone();
        url.query_pairs_mut()
            .append_pair("query", expr)
            .append_pair("start", &start.to_string())
            .append_pair("end", &end.to_string())
            .append_pair("step", &format!("{step_s}s"));
        let mut req = http.get(url).timeout(self.timeout);
        req = match &self.auth {
            Some(Auth::Bearer(token)) => req.bearer_auth(token),
            Some(Auth::Basic { username, password }) => req.basic_auth(username, Some(password)),
            None => req,
        };
        let late = |e: &reqwest::Error| {
            if e.is_timeout() {
                format!("no answer within {:?}", self.timeout)
            } else {
                e.to_string()
            }
        };
        let resp = req.send().await.map_err(|e| fail(late(&e)))?;
        let status = resp.status();
        let body = match tidegauge_core::http::read_body_limited(resp, MAX_ANSWER).await {
            Ok(b) => b,
            Err(tidegauge_core::http::BodyError::Transport(e)) => return Err(fail(late(&e))),
            Err(e) => return Err(fail(e.to_string())),
        };
        let answer: Answer = match serde_json::from_slice(&body) {
            Ok(a) => a,
            Err(_) if !status.is_success() => return Err(fail(format!("HTTP {status}"))),
            Err(e) => return Err(fail(format!("not a query_range answer: {e}"))),
        };
        if answer.status != "success" || !status.is_success() {
            let why = answer
                .error
                .unwrap_or_else(|| format!("status {:?}", answer.status));
            return Err(fail(format!("HTTP {status}: {why}")));
        }
        let values = answer
            .data
            .and_then(|d| d.result.into_iter().next())
            .map(|s| s.values)
            .unwrap_or_default();
        if values.is_empty() {
            return Err(fail("no data".to_owned()));
        }
        values
            .iter()
            .map(|(_, v)| {
                v.parse::<f64>()
                    .map_err(|_| fail(format!("value {v:?} is not a number")))
            })
            .collect()
    }
}

/// The newest `steps_back` of `values`, padded at the start with 0 when shorter (spec §4.4).
pub fn pad(values: Vec<f64>, steps_back: usize) -> Vec<f64> {
    let newest = &values[values.len().saturating_sub(steps_back)..];
    let mut out = Vec::with_capacity(steps_back);
    out.resize(steps_back - newest.len(), 0.0);
    out.extend_from_slice(newest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn answer(values: &[(f64, &str)]) -> serde_json::Value {
        serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": [
            {"metric": {"__name__": "up"}, "values": values},
            {"metric": {"__name__": "up", "instance": "other"}, "values": [[1.0, "99"]]},
        ]}})
    }

    fn source(server: &MockServer, prefix: &str, auth: Option<Auth>) -> PrometheusSource {
        let base = reqwest::Url::parse(&format!("{}{prefix}", server.uri())).unwrap();
        PrometheusSource::new(&base, auth, Duration::from_secs(2))
    }

    #[tokio::test]
    async fn reads_the_newest_values_of_the_first_series_padded_at_the_start() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/prometheus/api/v1/query_range"))
            .and(query_param("query", "rate(x[5m])"))
            .and(query_param("start", "1000"))
            .and(query_param("end", "1300"))
            .and(query_param("step", "60s"))
            .and(header("authorization", "Bearer t0k"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer(&[
                (1060.0, "1"),
                (1120.0, "2.5"),
                (1180.0, "NaN"),
                (1240.0, "+Inf"),
            ])))
            .expect(1)
            .mount(&server)
            .await;
        let src = source(&server, "/prometheus/", Some(Auth::Bearer("t0k".into())));
        let http = tidegauge_testkit::http_client();
        let got = src
            .input(&http, "rate(x[5m])", 1300.0, Duration::from_secs(60), 5)
            .await
            .unwrap();
        assert_eq!(got[..3], [0.0, 1.0, 2.5]);
        assert!(got[3].is_nan() && got[4] == f64::INFINITY, "{got:?}");
        // Longer than asked: the newest values.
        let server2 = MockServer::start().await;
        Mock::given(path("/api/v1/query_range"))
            .and(header("authorization", "Basic dTpw"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer(&[
                (1.0, "1"),
                (2.0, "2"),
                (3.0, "3"),
            ])))
            .mount(&server2)
            .await;
        let basic = Auth::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        let src = source(&server2, "", Some(basic));
        let got = src
            .input(&http, "x", 3.0, Duration::from_secs(1), 2)
            .await
            .unwrap();
        assert_eq!(got, [2.0, 3.0]);
    }

    #[tokio::test]
    async fn failures_name_the_expression_and_the_reason() {
        let server = MockServer::start().await;
        Mock::given(query_param("query", "bad("))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!(
                {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}
            )))
            .mount(&server)
            .await;
        Mock::given(query_param("query", "empty"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"status": "success", "data": {"resultType": "matrix", "result": []}}),
            ))
            .mount(&server)
            .await;
        Mock::given(query_param("query", "html"))
            .respond_with(ResponseTemplate::new(502).set_body_string("<html>bad gateway</html>"))
            .mount(&server)
            .await;
        Mock::given(query_param("query", "word"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer(&[(1.0, "lots")])))
            .mount(&server)
            .await;
        Mock::given(query_param("query", "huge"))
            .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(MAX_ANSWER + 1)))
            .mount(&server)
            .await;
        Mock::given(query_param("query", "slow"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(answer(&[(1.0, "1")]))
                    .set_delay(Duration::from_secs(5)),
            )
            .mount(&server)
            .await;
        Mock::given(query_param("query", "long"))
            .respond_with(ResponseTemplate::new(422).set_body_json(
                serde_json::json!({"status": "error", "errorType": "execution", "error": "<".repeat(100_000)}),
            ))
            .mount(&server)
            .await;
        let src = source(&server, "", None);
        let http = tidegauge_testkit::http_client();
        // An upstream's error text is kept short: it goes to logs, answers and the landing page.
        let err = src
            .input(&http, "long", 10.0, Duration::from_secs(1), 3)
            .await
            .unwrap_err();
        assert!(
            err.reason.chars().count() <= MAX_REASON + 1,
            "{}",
            err.reason.len()
        );
        assert!(err.reason.ends_with('…'));
        for (expr, want) in [
            ("bad(", "HTTP 400 Bad Request: parse error at char 5"),
            ("empty", "no data"),
            ("html", "HTTP 502 Bad Gateway"),
            ("word", "value \"lots\" is not a number"),
            ("huge", "exceeds the limit"),
            ("slow", "no answer within 2s"),
        ] {
            let err = src
                .input(&http, expr, 10.0, Duration::from_secs(1), 3)
                .await
                .unwrap_err();
            assert_eq!(err.expr, expr);
            assert!(err.reason.contains(want), "{expr}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("telemetry query {expr:?}: "))
            );
        }
    }

    #[test]
    fn credentials_never_print() {
        let b = format!("{:?}", Auth::Bearer("secret".into()));
        let p = format!(
            "{:?}",
            Auth::Basic {
                username: "u".into(),
                password: "secret".into()
            }
        );
        assert!(!b.contains("secret") && !p.contains("secret"), "{b} {p}");
    }
}
