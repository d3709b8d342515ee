//! The ICOS service's routes: `POST /create_metric`, `POST /unregister_metric`.

use super::*;

pub(crate) fn json_response(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn rejection(r: Rejection) -> Response {
    match r {
        Rejection::Bad(msg) => json_response(StatusCode::BAD_REQUEST, json!({"detail": msg})),
        Rejection::Schema(errors) => {
            json_response(StatusCode::UNPROCESSABLE_ENTITY, json!({"detail": errors}))
        }
    }
}

#[allow(clippy::result_large_err)]
/// Reads and parses a JSON body within the size limit; the error is the answer to send.
pub(crate) async fn json_body(inner: &Inner, body: Body) -> Result<Json, Response> {
    read_json(inner, body, false).await
}

#[allow(clippy::result_large_err)]
/// [`json_body`], an empty body (or only whitespace) reading as `{}`: a route whose fields all
/// have defaults.
pub(crate) async fn json_body_or_empty(inner: &Inner, body: Body) -> Result<Json, Response> {
    read_json(inner, body, true).await
}

#[allow(clippy::result_large_err)]
async fn read_json(inner: &Inner, body: Body, empty_is_object: bool) -> Result<Json, Response> {
    let max_body = inner.settings.max_body;
    let bytes = to_bytes(body, max_body).await.map_err(|_| {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"detail": format!("request body exceeds the limit of {max_body} bytes")}),
        )
    })?;
    if empty_is_object && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&python_json(&bytes)).map_err(|e| {
        rejection(Rejection::Schema(vec![json!({
            "type": "json_invalid", "loc": ["body", e.column()], "msg": "JSON decode error",
            "input": {}, "ctx": {"error": e.to_string()}})]))
    })
}

/// JSON as Python's `json.dumps` writes it by default: the bare literals `NaN`, `Infinity` and
/// `-Infinity`, and numbers beyond `f64` (`1e309`), become the strings a value may also be
/// (`"NaN"`, `"Infinity"`), as the original (FastAPI) read them. Text inside strings is kept.
pub(crate) fn python_json(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let b = bytes[i];
        let rest = &bytes[i..];
        if in_string || b == b'"' {
            let len = if in_string && b == b'\\' { 2 } else { 1 };
            in_string = if in_string {
                b != b'"' || len == 2
            } else {
                true
            };
            let len = len.min(rest.len());
            if let Some(o) = out.as_mut() {
                o.extend_from_slice(&rest[..len]);
            }
            i += len;
            continue;
        }
        let literal = [
            (&b"-Infinity"[..], &b"\"-Infinity\""[..]),
            (b"Infinity", b"\"Infinity\""),
            (b"NaN", b"\"NaN\""),
        ]
        .into_iter()
        .find(|(lit, _)| rest.starts_with(lit));
        let (len, with): (usize, Option<&[u8]>) = match literal {
            Some((lit, quoted)) => (lit.len(), Some(quoted)),
            None if b == b'-' || b.is_ascii_digit() => {
                let len = rest
                    .iter()
                    .take_while(|c| {
                        c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E')
                    })
                    .count();
                let overflow = std::str::from_utf8(&rest[..len])
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .filter(|v| v.is_infinite());
                let quoted: Option<&[u8]> = overflow.map(|v| {
                    if v > 0.0 {
                        &b"\"Infinity\""[..]
                    } else {
                        &b"\"-Infinity\""[..]
                    }
                });
                (len.max(1), quoted)
            }
            None => (1, None),
        };
        match with {
            Some(quoted) => {
                let o = out.get_or_insert_with(|| bytes[..i].to_vec());
                o.extend_from_slice(quoted);
            }
            None => {
                if let Some(o) = out.as_mut() {
                    o.extend_from_slice(&rest[..len]);
                }
            }
        }
        i += len;
    }
    match out {
        Some(o) => std::borrow::Cow::Owned(o),
        None => std::borrow::Cow::Borrowed(bytes),
    }
}

/// Applies a change under the registry lock, queues its write in the same order, and answers
/// only once the write is on disk; a failed commit undoes the change.
pub(crate) async fn apply(
    inner: &Inner,
    name: &str,
    change: impl FnOnce(&mut Registry, &Groups) -> Result<Change, Rejection>,
    ok: &str,
) -> Response {
    let pending = {
        let mut state = lock(&inner.durable.state);
        let Pushed {
            registry: reg,
            groups,
            generation,
            ..
        } = &mut *state;
        let reg: &mut Registry = reg;
        let previous_key = reg.base_of(name);
        let previous = previous_key.as_deref().and_then(|k| reg.get(k).cloned());
        let (key, writes) = match change(reg, groups) {
            Err(r) => return rejection(r),
            Ok(Change::None) => {
                return json_response(
                    StatusCode::OK,
                    json!({"message": "Metric not found. You can create a new one."}),
                );
            }
            Ok(Change::Put(m)) => match records::encode(&m) {
                Ok(bytes) => (m.name.clone(), vec![Write::Put(m.name.clone(), bytes)]),
                Err(e) => {
                    reg.revert(&m.name, previous);
                    return json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"detail": format!("cannot encode the metric: {e}")}),
                    );
                }
            },
            Ok(Change::Delete(base)) => (base.clone(), vec![Write::Delete(base)]),
        };
        *generation += 1;
        let seq = state.begin();
        // `previous` is what the registry held: committed, or an earlier pending change whose
        // committed value `note` keeps.
        state.note(key.clone(), Before::Metric(key, previous), seq);
        (seq, inner.durable.store.submit_in(state.epoch, writes))
    };
    let (seq, pending) = pending;
    match inner.durable.settled(seq, pending).await {
        Ok(()) => json_response(StatusCode::OK, json!({"message": ok})),
        Err(reason) => {
            resync(inner);
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": format!("the write could not be stored and was not applied: {reason}")}),
            )
        }
    }
}

/// Checks a `create_metric` request against the names others own, then applies it; `writer`
/// is the model metric writing it, if one is.
fn check_create(
    inner: &Inner,
    reg: &mut Registry,
    groups: &Groups,
    req: &model::CreateRequest,
    now: f64,
    writer: Option<&str>,
) -> Result<Change, Rejection> {
    reserved_by_others(inner, groups, req, writer)?;
    reg.create(req, now, &inner.settings.limits)
}

/// Whether a name `req` would expose belongs to another source: the Pushgateway routes, a
/// collector or the host, or a model metric other than `writer`.
pub(crate) fn reserved_by_others(
    inner: &Inner,
    groups: &Groups,
    req: &model::CreateRequest,
    writer: Option<&str>,
) -> Result<(), Rejection> {
    let sent = req.name.trim();
    let base = sent.strip_suffix("_total").unwrap_or(sent);
    for n in [
        sent.to_owned(),
        base.to_owned(),
        format!("{base}_total"),
        format!("{base}_created"),
        format!("{base}_info"),
    ] {
        if groups.occupies(&n) || n == "push_time_seconds" || n == "push_failure_time_seconds" {
            return Err(Rejection::Bad(format!(
                "Metric name {n:?} is taken by the Pushgateway routes (a pushed metric, or their push_time_seconds and push_failure_time_seconds)."
            )));
        }
    }
    let probe = tidegauge_core::MetricFamily::new(base, "", req.kind.metric_type());
    if let Some(reason) = inner.services.names.conflict(&probe) {
        return Err(Rejection::Bad(reason));
    }
    // An ICOS series has no job or instance to tell it from a collector's: joining a family
    // another source exposes could duplicate one of its series, which is then dropped.
    for n in probe.exposed_names() {
        if let Some(owner) = inner.services.names.owner_of(&n) {
            return Err(Rejection::Bad(format!(
                "Metric name {n:?} is exposed by {owner}; ICOS metrics cannot join its family."
            )));
        }
    }
    for n in [sent.to_owned(), base.to_owned(), format!("{base}_total")] {
        if let Some(m) = inner.durable.models.writer_of(&n)
            && Some(m.as_str()) != writer
        {
            return Err(Rejection::Bad(format!(
                "Metric name {n:?} is written by the model metric {m}; stop it (stop_model_metrics) before writing it."
            )));
        }
    }
    Ok(())
}

/// Why [`create_all`] changed nothing.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// A request was refused (400 or 422).
    Refused(Rejection),
    /// The change could not be encoded or committed (503).
    Unstored(String),
}

impl WriteError {
    pub(crate) fn message(&self) -> String {
        match self {
            Self::Refused(Rejection::Bad(m)) => m.clone(),
            Self::Refused(Rejection::Schema(e)) => Json::from(e.clone()).to_string(),
            Self::Unstored(m) => m.clone(),
        }
    }

    fn response(self) -> Response {
        match self {
            Self::Refused(r) => rejection(r),
            Self::Unstored(m) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"detail": format!("the write could not be stored and was not applied: {m}")}),
            ),
        }
    }
}

/// Applies `create_metric` requests as one change, all or none, in one commit; answers once
/// it is on disk (a failed commit undoes it).
pub(crate) async fn create_all(
    inner: &Inner,
    reqs: &[model::CreateRequest],
    writer: Option<&str>,
) -> Result<(), WriteError> {
    let now = unix_seconds(inner.services.clock.now());
    let (seq, pending) = {
        let mut state = lock(&inner.durable.state);
        let mut done: Vec<(String, Option<Metric>)> = Vec::new();
        let mut writes = Vec::new();
        let mut failure = None;
        for req in reqs {
            let Pushed {
                registry: reg,
                groups,
                ..
            } = &mut *state;
            let previous = reg.base_of(&req.name).and_then(|k| reg.get(&k).cloned());
            match check_create(inner, reg, groups, req, now, writer) {
                Ok(Change::Put(m)) => match records::encode(&m) {
                    Ok(bytes) => {
                        writes.push(Write::Put(m.name.clone(), bytes));
                        done.push((m.name, previous));
                    }
                    Err(e) => {
                        reg.revert(&m.name, previous);
                        failure = Some(WriteError::Unstored(format!(
                            "cannot encode the metric: {e}"
                        )));
                        break;
                    }
                },
                Ok(_) => {}
                Err(r) => {
                    failure = Some(WriteError::Refused(r));
                    break;
                }
            }
        }
        if let Some(f) = failure {
            for (name, previous) in done.into_iter().rev() {
                state.registry.revert(&name, previous);
            }
            return Err(f);
        }
        state.generation += 1;
        let seq = state.begin();
        // `previous` is what the registry held: committed, or an earlier pending change whose
        // committed value `note` keeps.
        for (name, previous) in done {
            state.note(name.clone(), Before::Metric(name, previous), seq);
        }
        (seq, inner.durable.store.submit_in(state.epoch, writes))
    };
    inner.durable.settled(seq, pending).await.map_err(|reason| {
        resync(inner);
        WriteError::Unstored(reason)
    })
}

pub(crate) async fn create_metric(State(inner): State<Arc<Inner>>, body: Body) -> Response {
    let body = match json_body(&inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let req = match model::parse_create(&body) {
        Ok(r) => r,
        Err(r) => return rejection(r),
    };
    match create_all(&inner, std::slice::from_ref(&req), None).await {
        Ok(()) => json_response(
            StatusCode::OK,
            json!({"message": "Metric updated successfully."}),
        ),
        Err(e) => e.response(),
    }
}

pub(crate) async fn unregister_metric(State(inner): State<Arc<Inner>>, body: Body) -> Response {
    let body = match json_body(&inner, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (kind, name) = match model::parse_unregister(&body) {
        Ok(r) => r,
        Err(r) => return rejection(r),
    };
    if name.trim().is_empty() {
        return rejection(Rejection::Bad("metric_name is required.".into()));
    }
    apply(
        &inner,
        &name,
        |reg, _| reg.unregister(kind, &name),
        "Unregistered metric successfully.",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::python_json;

    #[test]
    fn python_literals_become_strings() {
        let fixed = |s: &str| String::from_utf8(python_json(s.as_bytes()).into_owned()).unwrap();
        assert_eq!(
            fixed(r#"{"value": NaN, "a": Infinity, "b": -Infinity, "c": 1e309, "d": -1e400}"#),
            r#"{"value": "NaN", "a": "Infinity", "b": "-Infinity", "c": "Infinity", "d": "-Infinity"}"#
        );
        // Inside strings, and ordinary numbers, nothing changes.
        let same = r#"{"name": "NaN \" Infinity 1e309", "v": -1.5e3, "w": 12}"#;
        assert_eq!(fixed(same), same);
        assert!(matches!(
            python_json(same.as_bytes()),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
