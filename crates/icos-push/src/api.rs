//! The Pushgateway's JSON API: `GET /api/v1/metrics`, `GET /api/v1/status`.

use super::*;

pub(crate) fn rfc3339(t: f64) -> String {
    chrono::DateTime::from_timestamp(t.floor() as i64, ((t.fract()) * 1e9) as u32)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub(crate) async fn api_metrics(State(inner): State<Arc<Inner>>) -> Response {
    let state = lock(&inner.durable.state);
    let mut data = Vec::new();
    for g in state.groups.all() {
        let labels: serde_json::Map<String, Json> = g
            .key
            .iter()
            .map(|(k, v)| (k.clone(), Json::from(v.clone())))
            .collect();
        let mut entry = serde_json::Map::new();
        entry.insert("labels".into(), Json::Object(labels.clone()));
        entry.insert(
            "last_push_successful".into(),
            Json::from(g.push_time >= g.failure_time),
        );
        for f in &g.families {
            let fam = f;
            let metrics: Vec<Json> = fam
                .samples
                .iter()
                .map(|s| {
                    let l: serde_json::Map<String, Json> = s.labels.iter().map(|(k, v)| (k.to_owned(), Json::from(v))).collect();
                    match &s.value {
                        tidegauge_core::Value::Number(v) => json!({"labels": l, "value": v.to_string()}),
                        tidegauge_core::Value::Histogram(h) => json!({
                            "labels": l,
                            "buckets": h.buckets
                                .iter()
                                .map(|(le, c)| (le.to_string(), c.to_string()))
                                .chain(std::iter::once(("+Inf".to_owned(), h.count.to_string())))
                                .collect::<BTreeMap<_, _>>(),
                            "count": h.count.to_string(),
                            "sum": h.sum.to_string(),
                        }),
                        tidegauge_core::Value::Summary(q) => json!({
                            "labels": l,
                            "quantiles": q.quantiles.iter().map(|(q, v)| (q.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
                            "count": q.count.to_string(),
                            "sum": q.sum.to_string(),
                        }),
                    }
                })
                .collect();
            // Keyed by the name the family is exposed under, as the Pushgateway keys it.
            entry.insert(
                f.text_name(),
                json!({"time_stamp": rfc3339(g.push_time), "type": f.kind.to_string().to_ascii_uppercase(), "help": f.help, "metrics": metrics}),
            );
        }
        let mut with_instance = labels.clone();
        with_instance
            .entry("instance")
            .or_insert_with(|| Json::from(""));
        for (name, t, help) in [
            (
                "push_time_seconds",
                g.push_time,
                "Last Unix time when changing this group in the Pushgateway succeeded.",
            ),
            (
                "push_failure_time_seconds",
                g.failure_time,
                "Last Unix time when changing this group in the Pushgateway failed.",
            ),
        ] {
            entry.insert(
                name.into(),
                json!({"time_stamp": rfc3339(g.push_time), "type": "GAUGE", "help": help, "metrics": [{"labels": with_instance, "value": t.to_string()}]}),
            );
        }
        data.push(Json::Object(entry));
    }
    with_cors(json_response(
        StatusCode::OK,
        json!({"status": "success", "data": data}),
    ))
}

/// The CORS headers the Pushgateway's API sends, so a dashboard on another origin can read it.
pub(crate) fn with_cors(mut resp: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Accept, Authorization, Content-Type, Origin"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Date"),
    );
    resp
}

/// `OPTIONS` on the API: the CORS headers, nothing else.
pub(crate) async fn api_options() -> Response {
    with_cors(StatusCode::OK.into_response())
}

pub(crate) async fn api_status(State(inner): State<Arc<Inner>>) -> Response {
    let settings = inner.settings;
    json_response(
        StatusCode::OK,
        json!({"status": "success", "data": {
            "build_information": {"version": env!("CARGO_PKG_VERSION"), "program": "tidegauge icos-push"},
            "flags": {
                "max_body_size": settings.max_body.to_string(),
                "max_series": settings.limits.max_series.to_string(),
                "max_group_series": settings.max_group_series.to_string(),
                "push_ttl": settings.push_ttl.map(|d| format!("{}s", d.as_secs_f64())).unwrap_or_default(),
            },
            "start_time": rfc3339(unix_seconds(inner.durable.started)),
        }}),
    )
}
