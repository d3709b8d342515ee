//! The OpenAPI description of the push API and a plain docs page generated from it.

use serde_json::{Value, json};

fn error_detail() -> Value {
    json!({"type": "object", "properties": {"detail": {"type": "string"}}})
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn answers(ok: &str) -> Value {
    json!({
        "200": {"description": ok, "content": {"application/json": {"schema": {"type": "object", "properties": {"message": {"type": "string"}}}}}},
        "400": {"description": "Semantic error", "content": {"application/json": {"schema": error_detail()}}},
        "401": {"description": "Missing or invalid bearer token (when authentication is configured)"},
        "403": {"description": "Valid token without the required role"},
        "413": {"description": "Body over the size limit"},
        "422": {"description": "Schema error (FastAPI's shape)"},
        "503": {"description": "The write could not be stored and was not applied"}
    })
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let metric_type = json!({"type": "integer", "enum": [1, 2, 3, 4], "description": "1 Counter, 2 Gauge, 3 Info, 4 Enum"});
    let create = json!({
        "type": "object",
        "required": ["metric_type", "metric_name", "value"],
        "properties": {
            "metric_type": metric_type,
            "metric_name": {"type": "string"},
            "metric_info": {"type": ["string", "null"], "description": "HELP text; default \"<metric_name> info\""},
            "value": {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "object", "additionalProperties": {"type": ["string", "number"]}}]},
            "labels": {"type": "object", "additionalProperties": {"type": ["string", "integer", "number"]}},
            "states": {"type": "array", "items": {"type": "string"}, "description": "Enum states, needed when the Enum is created"}
        }
    });
    let unregister = json!({"type": "object", "required": ["metric_name"], "properties": {"metric_type": metric_type, "metric_name": {"type": "string"}}, "description": "Without metric_type, the metric of that name is unregistered whatever its type (release 2.0.1 of the original sends the name alone)."});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let create_model = json!({
        "type": "object",
        "required": ["metric_type", "metric_name", "telemetry_metrics", "model_tag", "steps_back"],
        "properties": {
            "metric_type": metric_type,
            "metric_name": {"type": "string"},
            "metric_info": {"type": ["string", "null"]},
            "labels": {"type": "object", "additionalProperties": {"type": ["string", "integer", "number"]}},
            "telemetry_metrics": {"type": "array", "items": {"type": "string"}, "description": "PromQL expressions; embedded and locally trained models read the first only"},
            "model_tag": {"type": "string", "description": "embedded:linear, embedded:ets, embedded:mstl, embedded:auto; <model_name>:<version> (or :latest) of a model trained here; else a tag of the Intelligence API"},
            "steps_back": {"type": "integer", "minimum": 1, "maximum": 11000},
            "model_states": strings,
            "step_in_seconds": {"type": "integer", "description": "raised to INTERVAL_IN_SECONDS_FOR_METRICS_EXPORT (default 60)"},
            "period": {"type": "integer", "minimum": 2, "description": "embedded:mstl's season in steps (detected when absent)"},
            "history_sample_size": {"type": ["integer", "null"]},
            "data_interruption": {"type": "boolean"},
            "history_data": {"type": "array", "items": {"type": "array"}}
        }
    });
    let train = json!({
        "type": "object",
        "required": ["model_name", "model_type", "test_size", "steps_back", "telemetry_metrics", "model_parameters"],
        "properties": {
            "model_name": {"type": "string"},
            "model_type": {"type": "string", "description": "ETS, MSTL, LINEAR (trained here); XGB, ARIMA, PYTORCH (Intelligence API); any case"},
            "test_size": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "steps_back": {"type": "integer"},
            "telemetry_metrics": strings,
            "model_parameters": {"type": "object"},
            "labels": {"type": "object"},
            "period": {"type": "integer", "minimum": 2},
            "dataclay": {"type": "boolean"},
            "dataset_name": {"type": ["string", "null"]},
            "step_in_seconds": {"type": "integer"},
            "max_models_count": {"type": ["integer", "null"]},
            "max_mlruns_count": {"type": ["integer", "null"]},
            "shap_samples": {"type": ["integer", "null"]}
        }
    });
    let passthrough = |summary: &str, schema: Value, required: bool| {
        json!({"post": {"summary": summary, "security": [{"bearer": []}],
            "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}},
            "responses": {"200": {"description": "The models' JSON (local models merged with the Intelligence API's)"},
                "400": {"description": "Unknown model, or the Intelligence API failed", "content": {"application/json": {"schema": error_detail()}}},
                "422": {"description": "Schema error (FastAPI's shape)"}}}})
    };
    let group = |summary: &str, ok: &str| {
        json!({
            "summary": summary,
            "parameters": [{"name": "grouping", "in": "path", "required": true, "schema": {"type": "string"},
                "description": "<JOB>{/<LABEL>/<VALUE>}; `<name>@base64/<value>` for base64url values"}],
            "requestBody": {"content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/vnd.google.protobuf": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {ok: {"description": "Done"}, "400": {"description": "Bad grouping key, parse error or inconsistent push"},
                "401": {"description": "Missing or invalid bearer token"}, "413": {"description": "Body over the size limit"},
                "415": {"description": "Unsupported body encoding"}}
        })
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tidegauge icos-push",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Durable push API, compatible with the ICOS Metrics Export service and the Pushgateway. Every 2xx answer to a write means the change is on disk."
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/create_metric": {"post": {"summary": "Create or update a metric", "security": [{"bearer": []}],
                "requestBody": json_body(create), "responses": answers("Metric updated successfully.")}},
            "/unregister_metric": {"post": {"summary": "Remove a metric with all its series", "security": [{"bearer": []}],
                "requestBody": json_body(unregister), "responses": answers("Unregistered metric successfully.")}},
            "/create_model_metric": {"post": {"summary": "Define a metric whose value is a model's prediction; the first cycle runs in the request", "security": [{"bearer": []}],
                "requestBody": json_body(create_model), "responses": answers("First cycle completed successfully. Metric creation started.")}},
            "/stop_model_metrics": {"post": {"summary": "Stop model metrics (their series stay)", "security": [{"bearer": []}],
                "requestBody": json_body(json!({"type": "object", "required": ["metric_names"], "properties": {"metric_names": strings}})),
                "responses": answers("Metric creation(s) stopped successfully.")}},
            "/train_model_metric": {"post": {"summary": "Train a model and start the model metric named model_name", "security": [{"bearer": []}],
                "requestBody": json_body(train), "responses": answers("Dataset created, model training started successfully.")}},
            "/show_models": passthrough("List trained models", json!({"type": "object", "properties": {"model": {"type": "string", "default": "all"}}}), false),
            "/remove_model": passthrough("Remove a trained model", json!({"type": "object", "required": ["model_tag"], "properties": {"model_tag": {"type": "string"}}}), true),
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "{\"status\": \"ok\"}"}}}},
            "/metrics/job/{grouping}": {
                "put": group("Replace every metric of the group", "200"),
                "post": group("Replace the families pushed", "200"),
                "delete": group("Delete the group", "202")
            },
            "/api/v1/metrics": {"get": {"summary": "Pushed groups as JSON", "responses": {"200": {"description": "Groups"}}}},
            "/api/v1/status": {"get": {"summary": "Build information and settings", "responses": {"200": {"description": "Status"}}}},
            "/api/v1/admin/wipe": {"put": {"summary": "Delete every group (admin_api = true)", "security": [{"bearer": []}],
                "responses": {"202": {"description": "Deleted"}, "403": {"description": "The admin API is disabled"}}}},
            "/metrics": {"get": {"summary": "Exposition (served by the host)", "responses": {"200": {"description": "OpenMetrics or text 0.0.4"}}}}
        }
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A self-contained HTML page listing the operations (no scripts or external assets).
pub fn page(doc: &Value) -> String {
    let mut rows = String::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, ops) in paths {
            if let Some(ops) = ops.as_object() {
                for (method, op) in ops {
                    let codes: Vec<String> = op["responses"]
                        .as_object()
                        .map(|r| {
                            r.iter()
                                .map(|(c, d)| {
                                    format!(
                                        "{c}: {}",
                                        escape(d["description"].as_str().unwrap_or(""))
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    rows.push_str(&format!(
                        "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>\n",
                        method.to_uppercase(),
                        escape(path),
                        escape(op["summary"].as_str().unwrap_or("")),
                        codes.join("<br>")
                    ));
                }
            }
        }
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tidegauge icos-push API</title>\
<style>body{{font-family:sans-serif;margin:1em}}td{{padding:0.3em 0.8em;vertical-align:top;border-bottom:1px solid #ddd}}</style></head>\
<body><h1>tidegauge icos-push API</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p>\
<table><tr><th>method</th><th>path</th><th>summary</th><th>answers</th></tr>\n{rows}</table></body></html>\n",
        escape(doc["info"]["description"].as_str().unwrap_or(""))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_lists_every_route_and_the_page_renders_them() {
        let doc = document();
        for p in [
            "/create_metric",
            "/unregister_metric",
            "/healthz",
            "/metrics/job/{grouping}",
            "/api/v1/metrics",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p}");
        }
        let html = page(&doc);
        assert!(html.contains("<code>/create_metric</code>"));
        assert!(html.contains("<code>DELETE</code>"));
        assert!(!html.contains("<script"));
    }
}
