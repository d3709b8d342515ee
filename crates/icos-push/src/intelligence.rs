//! The remote Intelligence API (the ICOS intelligence module, a BentoML service): spec §4.5.

use std::time::Duration;

use serde_json::{Value as Json, json};

/// Most an answer may hold.
const MAX_ANSWER: usize = 4 << 20;

/// A prediction as the Intelligence API gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// `model_prediction`, unwrapped from nested lists.
    pub value: f64,
    /// `model_confidence`.
    pub confidence: Option<f64>,
    /// The bounds of `95%_confidence_interval` (`"0.47 to 0.55"`).
    pub interval: Option<(f64, f64)>,
}

/// Why a call failed; the text is the 400's detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IntelligenceError(pub String);

/// The API at a base URL.
#[derive(Debug, Clone)]
pub struct Intelligence {
    base: reqwest::Url,
    timeout: Duration,
    train_timeout: Duration,
}

impl Intelligence {
    /// The API under `base`; `predict`, `show_models` and `remove_model` give up after
    /// `timeout`, `train` after `train_timeout`.
    pub fn new(base: &reqwest::Url, timeout: Duration, train_timeout: Duration) -> Self {
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Self {
            base,
            timeout,
            train_timeout,
        }
    }

    /// POSTs `body` to `route`: the answer's JSON when it is a 2xx, else the error to report.
    pub async fn call(
        &self,
        http: &reqwest::Client,
        route: &str,
        body: &Json,
    ) -> Result<Json, IntelligenceError> {
        let timeout = if route == "train" {
            self.train_timeout
        } else {
            self.timeout
        };
        let url = self
            .base
            .join(route)
            .map_err(|e| IntelligenceError(format!("Intelligence API URL: {e}")))?;
        let failed = |what: String| {
            IntelligenceError(format!(
                "Intelligence API error or endpoint does not exist. Error: {what}"
            ))
        };
        let resp = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| {
                failed(if e.is_timeout() {
                    format!("no answer from {route} within {timeout:?}")
                } else {
                    e.to_string()
                })
            })?;
        let status = resp.status();
        let bytes = tidegauge_core::http::read_body_limited(resp, MAX_ANSWER)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            return Err(failed(format!("{route} answered HTTP {status}: {text}")));
        }
        serde_json::from_slice(&bytes).map_err(|e| failed(format!("{route}: not JSON: {e}")))
    }

    /// `predict`: the request of spec §4.5, with the request's `metric_type` sent.
    #[allow(clippy::too_many_arguments)]
    pub async fn predict(
        &self,
        http: &reqwest::Client,
        model_tag: &str,
        steps_back: usize,
        data_interruption: bool,
        history_data: &Json,
        inputs: &[Vec<f64>],
        history_sample_size: Option<u64>,
        metric_type: u8,
    ) -> Result<Prediction, IntelligenceError> {
        let input_series: serde_json::Map<String, Json> = inputs
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("input_{}", i + 1), json!(v)))
            .collect();
        let mut body = json!({"model_tag": model_tag, "steps_back": steps_back,
            "data_interruption": data_interruption, "history_data": history_data,
            "input_series": input_series, "metric_type": metric_type});
        if let Some(n) = history_sample_size {
            body["history_sample_size"] = json!(n);
        }
        let answer = self.call(http, "predict", &body).await?;
        parse_prediction(&answer)
    }
}

/// A `predict` answer: `model_prediction` (nested lists unwrapped by their first element),
/// `model_confidence` and `95%_confidence_interval`.
pub fn parse_prediction(answer: &Json) -> Result<Prediction, IntelligenceError> {
    let mut v = answer.get("model_prediction").ok_or_else(|| {
        IntelligenceError(
            "the Intelligence API's answer has no model_prediction (an LSTM model answers per metric, which a model metric cannot use)".into(),
        )
    })?;
    while let Json::Array(items) = v {
        v = items
            .first()
            .ok_or_else(|| IntelligenceError("model_prediction is an empty list".into()))?;
    }
    let value = number(v)
        .ok_or_else(|| IntelligenceError(format!("model_prediction is not a number: {v}")))?;
    let confidence = answer.get("model_confidence").and_then(number);
    let interval = answer
        .get("95%_confidence_interval")
        .and_then(Json::as_str)
        .and_then(|s| s.split_once(" to "))
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
    Ok(Prediction {
        value,
        confidence,
        interval,
    })
}

/// A JSON number, or a string holding one (Python services write NaN as text).
fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        Json::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_unwrap_nested_lists_and_read_the_interval() {
        let p = parse_prediction(
            &json!({"model_prediction": [[0.512, 0.6]], "model_confidence": 97.5,
            "95%_confidence_interval": "0.47 to 0.55", "metric_type": 2}),
        )
        .unwrap();
        assert_eq!(
            p,
            Prediction {
                value: 0.512,
                confidence: Some(97.5),
                interval: Some((0.47, 0.55))
            }
        );
        let lstm = json!({"metric_0": {"model_prediction": 1}, "metric_type": 2});
        assert!(
            parse_prediction(&lstm)
                .unwrap_err()
                .0
                .contains("no model_prediction")
        );
        assert!(parse_prediction(&json!({"model_prediction": []})).is_err());
        assert!(parse_prediction(&json!({"model_prediction": {"a": 1}})).is_err());
    }
}
