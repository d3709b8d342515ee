//! The Pushgateway's write routes: `PUT`/`POST`/`DELETE /metrics/job/…` and the admin wipe.

use super::*;

pub(crate) fn text_response(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    if !msg.is_empty() && !msg.ends_with('\n') {
        msg.push('\n');
    }
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        msg,
    )
        .into_response()
}

#[allow(clippy::result_large_err)]
pub(crate) fn grouping_of(uri: &axum::http::Uri) -> Result<pushgateway::Grouping, Response> {
    let raw = uri.path().strip_prefix("/metrics/").unwrap_or("");
    // The Pushgateway routes only `/metrics/job/<job>…` and `/metrics/job@base64/<job>…`:
    // anything else, an empty job segment included, is its 404.
    let routed = raw
        .strip_prefix("job/")
        .or_else(|| raw.strip_prefix("job@base64/"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
    if !routed {
        return Err(text_response(StatusCode::NOT_FOUND, "404 page not found"));
    }
    pushgateway::grouping(raw).map_err(|e| text_response(StatusCode::BAD_REQUEST, e))
}

pub(crate) async fn push_put(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    push(&inner, Method::Put, &uri, &headers, body).await
}

pub(crate) async fn push_post(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    push(&inner, Method::Post, &uri, &headers, body).await
}

/// Deletes every group in one commit; 202 as the Pushgateway answers.
pub(crate) async fn wipe(State(inner): State<Arc<Inner>>) -> Response {
    if !inner.settings.admin_api {
        return text_response(
            StatusCode::FORBIDDEN,
            "the admin API is disabled; set admin_api = true in [collectors.icos-push]",
        );
    }
    let pending = {
        let mut state = lock(&inner.durable.state);
        let keys: Vec<_> = state.groups.all().map(|g| g.key.clone()).collect();
        if keys.is_empty() {
            return text_response(StatusCode::ACCEPTED, "");
        }
        let seq = state.begin();
        for k in &keys {
            state.note_group(k, seq);
        }
        let writes = keys
            .iter()
            .filter_map(|k| state.groups.remove(k))
            .map(|g| Write::Delete(g.store_key()))
            .collect();
        state.generation += 1;
        (seq, inner.durable.store.submit_in(state.epoch, writes))
    };
    deleted(&inner, pending, "wipe").await
}

/// 202 once a deletion is on disk; otherwise the state is reloaded and the answer is 503.
pub(crate) async fn deleted(
    inner: &Inner,
    (seq, pending): (u64, tokio::sync::oneshot::Receiver<Result<(), String>>),
    what: &str,
) -> Response {
    match inner.durable.settled(seq, pending).await {
        Ok(()) => text_response(StatusCode::ACCEPTED, ""),
        Err(_) => {
            resync(inner);
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the {what} could not be stored and was not applied"),
            )
        }
    }
}

pub(crate) async fn push_delete(State(inner): State<Arc<Inner>>, uri: axum::http::Uri) -> Response {
    let key = match grouping_of(&uri) {
        Ok(g) => g.key,
        Err(r) => return r,
    };
    let pending = {
        let mut state = lock(&inner.durable.state);
        if state.groups.get(&key).is_none() {
            return text_response(StatusCode::ACCEPTED, "");
        }
        let seq = state.begin();
        state.note_group(&key, seq);
        let writes = state
            .groups
            .remove(&key)
            .map(|g| Write::Delete(g.store_key()))
            .into_iter()
            .collect();
        state.generation += 1;
        (seq, inner.durable.store.submit_in(state.epoch, writes))
    };
    deleted(&inner, pending, "deletion").await
}

/// Answers `refusal` to a push that failed validation, after recording the failure as the
/// Pushgateway does: the group's `push_failure_time_seconds` is set, the group created (empty,
/// failed) when new, unless that would pass `max_groups` or `max_series`.
async fn failed(inner: &Inner, key: &tidegauge_core::Labels, refusal: Response) -> Response {
    let now = unix_seconds(inner.services.clock.now());
    let settings = inner.settings;
    let submitted = {
        let mut state = lock(&inner.durable.state);
        let seq = state.begin();
        let mut writes = state.expire(now, seq);
        let existing = state.groups.get(key).cloned();
        let room = state.groups.len() < settings.max_groups
            && state.registry.series_count()
                + state.groups.series_count()
                + 2 * (state.groups.len() + 1)
                <= settings.limits.max_series;
        let group = match existing {
            Some(mut g) => {
                g.failure_time = now;
                Some(g)
            }
            None if room => Some(Group {
                key: key.clone(),
                families: Vec::new(),
                push_time: 0.0,
                failure_time: now,
                expires: settings.push_ttl.map(|d| now + d.as_secs_f64()),
            }),
            None => None,
        };
        if let Some(g) = group {
            writes.push(Write::Put(
                g.store_key(),
                records::encode(&g).unwrap_or_default(),
            ));
            state.note_group(key, seq);
            state.groups.put(g);
            state.generation += 1;
        }
        (!writes.is_empty()).then(|| (seq, inner.durable.store.submit_in(state.epoch, writes)))
    };
    if let Some((seq, pending)) = submitted
        && inner.durable.settled(seq, pending).await.is_err()
    {
        resync(inner);
    }
    refusal
}

fn series_limit(max: usize) -> String {
    format!("the series limit ({max}) would be exceeded")
}

/// Refuses a push over a limit (400). The expiries already applied in memory still go to the
/// store: nobody waits for them, and a failure there reloads the state as usual.
fn over_limit(inner: &Inner, epoch: u64, writes: Vec<Write>, reason: String) -> Response {
    if !writes.is_empty() {
        drop(inner.durable.store.submit_in(epoch, writes));
    }
    text_response(StatusCode::BAD_REQUEST, reason)
}

pub(crate) async fn push(
    inner: &Inner,
    method: Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Response {
    let (key, labels) = match grouping_of(uri) {
        Ok(g) => (g.key, g.labels),
        Err(r) => return r,
    };
    let parsed = match push_body(inner, headers, body).await {
        Ok(p) => p,
        Err(body::BodyError::Refused(r)) => return failed(inner, &key, r).await,
        Err(body::BodyError::Unread(r)) => return r,
    };
    let settings = inner.settings;
    let families = pushgateway::decorate(&labels, parsed);
    for f in &families {
        let reserved = match f.kind {
            tidegauge_core::MetricType::Histogram => "le",
            tidegauge_core::MetricType::Summary => "quantile",
            _ => continue,
        };
        if key.iter().any(|(k, _)| k == reserved) {
            let refusal = text_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "grouping label {reserved:?} cannot be used with the {} {:?}: its series carry their own {reserved:?}",
                    f.kind, f.name
                ),
            );
            return failed(inner, &key, refusal).await;
        }
    }
    let new_series: usize = families
        .iter()
        .map(tidegauge_core::MetricFamily::series_count)
        .sum();
    if new_series > settings.max_group_series {
        let refusal = text_response(
            StatusCode::BAD_REQUEST,
            format!(
                "push of {new_series} series exceeds the limit of {} series per group",
                settings.max_group_series
            ),
        );
        return failed(inner, &key, refusal).await;
    }
    let max_len = settings.limits.max_label_length;
    for f in &families {
        if f.name.len() > max_len
            || f.help.len() > max_len
            || f.samples
                .iter()
                .any(|s| s.labels.iter().any(|(k, v)| k.len().max(v.len()) > max_len))
        {
            let refusal = text_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "{}: names, label names and values and help texts are limited to {max_len} bytes",
                    f.name
                ),
            );
            return failed(inner, &key, refusal).await;
        }
    }
    let ttl = match headers
        .get("x-push-ttl")
        .map(|v| v.to_str().map(tidegauge_core::duration::parse))
    {
        None => settings.push_ttl,
        Some(Ok(Ok(d))) if !d.is_zero() => Some(d),
        Some(Ok(Ok(_))) => None,
        _ => {
            return text_response(
                StatusCode::BAD_REQUEST,
                "X-Push-TTL: expected a duration such as \"10m\" or a number of seconds",
            );
        }
    };
    let now = unix_seconds(inner.services.clock.now());
    // Refused for a limit: answered after the lock is released, with the failure recorded.
    let decided = 'decide: {
        let mut state = lock(&inner.durable.state);
        // Expired groups go first: they must not count in limits or consistency checks.
        let seq = state.begin();
        let mut writes = state.expire(now, seq);
        let registry = &state.registry;
        let names = &inner.services.names;
        let taken = |n: &str, family: &tidegauge_core::MetricFamily| {
            if registry.occupies(n) || n.starts_with("tidegauge_") {
                Some(format!(
                    "metric name {n:?} is already exposed by a registered metric or the host"
                ))
            } else {
                names.conflict(family)
            }
        };
        // Every group also exposes its push time and push failure time: two series each.
        let new_group = state.groups.get(&key).is_none();
        let groups_after = state.groups.len() + usize::from(new_group);
        let refusal = if new_group && state.groups.len() >= settings.max_groups {
            Some(format!(
                "the number of groups is limited to {} (max_groups)",
                settings.max_groups
            ))
        } else if state.registry.series_count() + state.groups.series_count() + 2 * groups_after
            > settings.limits.max_series
        {
            Some(series_limit(settings.limits.max_series))
        } else {
            None
        };
        if let Some(reason) = refusal {
            break 'decide Err(over_limit(inner, state.epoch, writes, reason));
        }
        let candidate = state.groups.candidate(&key, method, families, now, &taken);
        let (group, outcome) = match candidate {
            Ok(mut g) => {
                // Limits apply to the group as it would be (a POST keeps other families).
                let group_series: usize = g
                    .families
                    .iter()
                    .map(tidegauge_core::MetricFamily::series_count)
                    .sum();
                let old_series = state.groups.get(&key).map_or(0, |o| {
                    o.families
                        .iter()
                        .map(tidegauge_core::MetricFamily::series_count)
                        .sum()
                });
                let total = state.registry.series_count() + state.groups.series_count()
                    - old_series
                    + group_series
                    + 2 * groups_after;
                let over = if group_series > settings.max_group_series {
                    Some(format!(
                        "the group would hold {group_series} series, over the limit of {} per group",
                        settings.max_group_series
                    ))
                } else if total > settings.limits.max_series {
                    Some(series_limit(settings.limits.max_series))
                } else {
                    None
                };
                if let Some(reason) = over {
                    break 'decide Err(over_limit(inner, state.epoch, writes, reason));
                }
                g.expires = ttl.map(|d| now + d.as_secs_f64());
                (g, Ok(()))
            }
            Err((reason, mut g)) => {
                // A group that exists only because a push to it was refused expires like any
                // other.
                if new_group {
                    g.expires = ttl.map(|d| now + d.as_secs_f64());
                }
                (g, Err(reason))
            }
        };
        let bytes = records::encode(&group).unwrap_or_default();
        writes.push(Write::Put(group.store_key(), bytes));
        let pending = inner.durable.store.submit_in(state.epoch, writes);
        state.note_group(&key, seq);
        state.groups.put(group);
        state.generation += 1;
        Ok((seq, pending, outcome))
    };
    let (seq, pending, outcome) = match decided {
        Ok(d) => d,
        Err(refusal) => return failed(inner, &key, refusal).await,
    };
    let committed = inner.durable.settled(seq, pending).await.is_ok();
    match committed.then_some(()) {
        Some(()) => match outcome {
            Ok(()) => text_response(StatusCode::OK, ""),
            Err(reason) => text_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "pushed metrics are invalid or inconsistent with existing metrics: {reason}"
                ),
            ),
        },
        None => {
            resync(inner);
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the push could not be stored and was not applied",
            )
        }
    }
}
