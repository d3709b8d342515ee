//! Model input read through Grafana's query API (`POST api/ds/query`), exactly as the original
//! read it: spec §4.3.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::telemetry::{MAX_ANSWER, TelemetryError};

/// Grafana's query API in front of a Prometheus data source.
#[derive(Clone)]
pub struct GrafanaSource {
    query: reqwest::Url,
    token: String,
    datasource_uid: String,
    interval_ms: u64,
    utc_offset_sec: i64,
    timeout: Duration,
}

impl std::fmt::Debug for GrafanaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrafanaSource")
            .field("query", &self.query.as_str())
            .field("token", &"<redacted>")
            .field("datasource_uid", &self.datasource_uid)
            .field("interval_ms", &self.interval_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    results: std::collections::BTreeMap<String, RefResult>,
}

#[derive(Deserialize)]
struct RefResult {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    frames: Vec<Frame>,
}

#[derive(Deserialize)]
struct Frame {
    data: FrameData,
}

#[derive(Deserialize)]
struct FrameData {
    #[serde(default)]
    values: Vec<Vec<Option<f64>>>,
}

impl GrafanaSource {
    /// The API under `base` (`api/ds/query` is appended to its path), reading the Prometheus
    /// data source `datasource_uid` with a service account token.
    pub fn new(
        base: &reqwest::Url,
        token: String,
        datasource_uid: String,
        interval_ms: u64,
        utc_offset_sec: i64,
        timeout: Duration,
    ) -> Self {
        let mut query = base.clone();
        let path = format!("{}/api/ds/query", base.path().trim_end_matches('/'));
        query.set_path(&path);
        query.set_query(None);
        Self {
            query,
            token,
            datasource_uid,
            interval_ms: interval_ms.max(1),
            utc_offset_sec,
            timeout,
        }
    }

    /// The distance between two points Grafana returns.
    pub fn step(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The values of each expression's first frame over the `points` steps up to `end` (Unix
    /// seconds), oldest first, in one request as the original sent it (refIds `q0`, `q1`, ...).
    pub async fn series(
        &self,
        http: &reqwest::Client,
        exprs: &[String],
        end: f64,
        points: usize,
    ) -> Result<Vec<Vec<f64>>, TelemetryError> {
        let all = || exprs.join(", ");
        let fail = |expr: String, reason: String| TelemetryError {
            expr,
            reason: tidegauge_core::status::clip(&reason, crate::telemetry::MAX_REASON),
        };
        let to = (end * 1000.0) as i64;
        let from = to - (points as i64).saturating_mul(self.interval_ms as i64);
        let queries: Vec<_> = exprs
            .iter()
            .enumerate()
            .map(|(i, expr)| {
                json!({"refId": format!("q{i}"), "expr": expr, "range": true, "instant": false,
                    "datasource": {"type": "prometheus", "uid": self.datasource_uid},
                    "editorMode": "code", "legendFormat": "__auto", "exemplar": false,
                    "requestId": format!("{}A", i + 1), "utcOffsetSec": self.utc_offset_sec,
                    "interval": "", "datasourceId": 1, "intervalMs": self.interval_ms,
                    "maxDataPoints": points})
            })
            .collect();
        let body = json!({"queries": queries, "from": from.to_string(), "to": to.to_string()});
        let late = |e: &reqwest::Error| {
            if e.is_timeout() {
                format!("Grafana did not answer within {:?}", self.timeout)
            } else {
                format!("Grafana: {e}")
            }
        };
        let resp = http
            .post(self.query.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| fail(all(), late(&e)))?;
        let status = resp.status();
        let bytes = match tidegauge_core::http::read_body_limited(resp, MAX_ANSWER).await {
            Ok(b) => b,
            Err(tidegauge_core::http::BodyError::Transport(e)) => {
                return Err(fail(all(), late(&e)));
            }
            Err(e) => return Err(fail(all(), format!("Grafana: {e}"))),
        };
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            return Err(fail(
                all(),
                format!("Grafana answered HTTP {status}: {text}"),
            ));
        }
        let mut answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| fail(all(), format!("not a Grafana query answer: {e}")))?;
        let mut out = Vec::with_capacity(exprs.len());
        for (i, expr) in exprs.iter().enumerate() {
            let fail = |reason: &str| fail(expr.clone(), reason.to_owned());
            let Some(result) = answer.results.remove(&format!("q{i}")) else {
                return Err(fail("no data (Grafana returned no result for it)"));
            };
            if let Some(e) = result.error {
                return Err(fail(&format!("Grafana: {e}")));
            }
            if result.status.is_some_and(|s| !(200..300).contains(&s)) {
                return Err(fail(&format!(
                    "Grafana answered status {} for it",
                    result.status.unwrap_or_default()
                )));
            }
            if result.frames.len() > 1 {
                tracing::warn!(expr = %expr, frames = result.frames.len(), "the expression matches more than one series; the first is used");
            }
            let values = result
                .frames
                .into_iter()
                .next()
                .and_then(|f| f.data.values.into_iter().nth(1))
                .unwrap_or_default();
            if values.is_empty() {
                return Err(fail("no data"));
            }
            out.push(values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_partial_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn source(server: &MockServer) -> GrafanaSource {
        let base = reqwest::Url::parse(&format!("{}/grafana/", server.uri())).unwrap();
        GrafanaSource::new(
            &base,
            "sa-token".into(),
            "prom-uid".into(),
            60_000,
            7200,
            Duration::from_secs(2),
        )
    }

    /// The request is the original's (strings for `from`/`to`, `maxDataPoints = steps_back`,
    /// the data source's uid), and each expression reads its own refId's first frame.
    #[tokio::test]
    async fn queries_as_the_original_and_reads_first_frames() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/grafana/api/ds/query"))
            .and(header("authorization", "Bearer sa-token"))
            .and(body_partial_json(json!({
                "from": "1718599280000", "to": "1718600000000",
                "queries": [
                    {"refId": "q0", "expr": "cpu{node=~\"n.*\"}", "maxDataPoints": 12, "intervalMs": 60000,
                     "utcOffsetSec": 7200, "datasource": {"type": "prometheus", "uid": "prom-uid"}},
                    {"refId": "q1", "expr": "mem", "maxDataPoints": 12}
                ]})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": {
                "q0": {"status": 200, "frames": [
                    {"schema": {}, "data": {"values": [[1, 2, 3], [0.5, null, 0.7]]}},
                    {"schema": {}, "data": {"values": [[1], [99.0]]}}]},
                "q1": {"status": 200, "frames": [{"data": {"values": [[1], [4.0]]}}]}}})))
            .expect(1)
            .mount(&server)
            .await;
        let got = source(&server)
            .series(
                &tidegauge_testkit::http_client(),
                &["cpu{node=~\"n.*\"}".into(), "mem".into()],
                1_718_600_000.0,
                12,
            )
            .await
            .unwrap();
        assert_eq!(got[0][0], 0.5);
        assert!(got[0][1].is_nan());
        assert_eq!(got[0][2], 0.7);
        assert_eq!(got[1], [4.0]);
    }

    #[tokio::test]
    async fn an_expression_without_data_is_named() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": {
                "q0": {"status": 200, "frames": [{"data": {"values": [[1], [4.0]]}}]},
                "q1": {"status": 200, "frames": []}}})))
            .mount(&server)
            .await;
        let err = source(&server)
            .series(
                &tidegauge_testkit::http_client(),
                &["a".into(), "b".into()],
                1e9,
                3,
            )
            .await
            .unwrap_err();
        assert_eq!(err.expr, "b");
        assert!(err.to_string().contains("no data"), "{err}");
        server.reset().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(401).set_body_string("invalid API key"))
            .mount(&server)
            .await;
        let err = source(&server)
            .series(&tidegauge_testkit::http_client(), &["a".into()], 1e9, 3)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
    }
}
