//! The Pushgateway routes: grammar, replacement rules, consistency, push times, TTL, restart.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tidegauge_core::Collector;
use tidegauge_icos_push::{Config, IcosPush};
use tidegauge_testkit::{FIXTURE_EPOCH, FakeClock, context, render_formats};
use tower::ServiceExt;

struct Rig {
    push: IcosPush,
    app: axum::Router,
    clock: Arc<FakeClock>,
    dir: std::path::PathBuf,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("tidegauge-pgw-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self::open(dir, FakeClock::at(FIXTURE_EPOCH), false)
    }

    fn open(dir: std::path::PathBuf, clock: Arc<FakeClock>, admin_api: bool) -> Rig {
        let cfg = Config {
            data_dir: Some(dir.clone()),
            max_group_series: 5,
            admin_api,
            ..Config::default()
        };
        let services = tidegauge_testkit::services(clock.clone(), dir.clone());
        let push = IcosPush::open(&cfg, &services, None).unwrap();
        let app = push.routes().into_router();
        Rig {
            push,
            app,
            clock,
            dir,
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        self.send_bytes(method, path, body.as_bytes().to_vec(), headers)
            .await
    }

    async fn send_bytes(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn exposition(&self) -> String {
        let ctx = context(Duration::from_secs(5), self.clock.clone());
        // Commit counters depend on timing and on the process's history.
        tidegauge_testkit::drop_families(
            &render_formats(&self.push.collect(&ctx).await.unwrap()),
            "tidegauge_icos_push_store_",
        )
    }
}

#[tokio::test]
async fn pushgateway_readme_examples_and_replacement_rules() {
    let rig = Rig::new("readme");
    let mut log = String::new();
    let steps: &[(&str, &str, &str)] = &[
        // echo "some_metric 3.14" | curl --data-binary @- .../metrics/job/some_job
        ("POST", "/metrics/job/some_job", "some_metric 3.14\n"),
        // The second example pushes some_metric again, now as a counter: a type clash while the
        // first group exists, accepted once it is deleted.
        (
            "POST",
            "/metrics/job/some_job/instance/some_instance",
            "# TYPE some_metric counter\nsome_metric{label=\"val1\"} 42\n",
        ),
        ("DELETE", "/metrics/job/some_job", ""),
        (
            "POST",
            "/metrics/job/some_job/instance/some_instance",
            "# TYPE some_metric counter\nsome_metric{label=\"val1\"} 42\n# TYPE another_metric gauge\n# HELP another_metric Just an example.\nanother_metric 2398.283\n",
        ),
        // POST replaces only the families pushed.
        (
            "POST",
            "/metrics/job/some_job/instance/some_instance",
            "# TYPE another_metric gauge\nanother_metric 1\n",
        ),
        // Path labels beat body labels; base64 and empty values.
        (
            "PUT",
            "/metrics/job/directory_cleaner/path@base64/L3Zhci90bXA",
            "files_removed{job=\"ignored\",path=\"x\"} 7\n",
        ),
        (
            "PUT",
            "/metrics/job/example/first_label@base64/=/second_label/foobar",
            "example_value 1\n",
        ),
        // Errors that never touch a group.
        ("PUT", "/metrics/job/broken", "x 1 1700000000\n"),
        ("PUT", "/metrics/job/broken", "x{a=\"1\" 1\n"),
        ("PUT", "/metrics/job/broken/odd", "x 1\n"),
        ("PUT", "/metrics/job/broken/__reserved/x", "x 1\n"),
        ("PUT", "/metrics/job@base64/%%%", "x 1\n"),
        (
            "PUT",
            "/metrics/job/broken",
            "# TYPE s summary\ns{quantile=\"1.5\"} 1\n",
        ),
        // Summaries and histograms, as the Go client pushes them.
        (
            "PUT",
            "/metrics/job/latency",
            "# HELP rpc_seconds RPC latency.\n# TYPE rpc_seconds summary\nrpc_seconds{quantile=\"0.5\"} 0.2\nrpc_seconds{quantile=\"0.99\"} 0.9\nrpc_seconds_sum 12.5\nrpc_seconds_count 40\n",
        ),
        // Each bucket, quantile, sum and count is a series of its own for the limits: these
        // two families exceed the limit of 5 together, so they go to two groups.
        (
            "PUT",
            "/metrics/job/latency/part/sizes",
            "# TYPE size_bytes histogram\nsize_bytes_bucket{le=\"100\"} 3\nsize_bytes_bucket{le=\"+Inf\"} 5\nsize_bytes_sum 900\nsize_bytes_count 5\n",
        ),
        // Inconsistent with another group: rejected, failure time recorded, group created.
        (
            "PUT",
            "/metrics/job/clash",
            "# TYPE some_metric gauge\nsome_metric 1\n",
        ),
        // The same series from two groups is a clash too: a body label can equal another
        // group's grouping label.
        ("PUT", "/metrics/job/dup", "dup_metric{a=\"1\"} 1\n"),
        ("PUT", "/metrics/job/dup/a/1", "dup_metric 2\n"),
        // An empty instance in the URL names the same group as none.
        (
            "PUT",
            "/metrics/job/dup/instance@base64/=",
            "dup_metric{a=\"1\"} 3\n",
        ),
        // An explicit empty instance overrides the body's, as every grouping label does.
        (
            "PUT",
            "/metrics/job/emptied/instance@base64/=",
            "overridden{instance=\"body\"} 1\n",
        ),
        // Too many series for one group (limit 5 in this test).
        ("PUT", "/metrics/job/big", "a 1\nb 1\nc 1\nd 1\ne 1\nf 1\n"),
        // PUT with an empty body empties the group (its push time is updated).
        (
            "PUT",
            "/metrics/job/example/first_label@base64/=/second_label/foobar",
            "",
        ),
        ("DELETE", "/metrics/job/does_not_exist", ""),
        ("GET", "/metrics/job/some_job", ""),
    ];
    for (method, path, body) in steps {
        let (status, answer) = rig.send(method, path, body, &[]).await;
        log.push_str(&format!(
            "{method} {path}\n   -> {status} {}\n",
            answer.trim_end()
        ));
    }
    insta::assert_snapshot!("transcript", log);
    insta::assert_snapshot!("exposition", rig.exposition().await);

    // DELETE removes the group and its series.
    assert_eq!(
        rig.send(
            "DELETE",
            "/metrics/job/some_job/instance/some_instance",
            "",
            &[]
        )
        .await
        .0,
        202
    );
    let after = rig.exposition().await;
    assert!(!after.contains("another_metric"), "{after}");
    std::fs::remove_dir_all(&rig.dir).ok();
}

/// Families are served under the names they were pushed with, in both formats; a counter
/// OpenMetrics cannot write as a counter is written as `unknown` under that name.
#[tokio::test]
async fn pushed_names_are_kept_as_pushed() {
    use prost::Message;
    use tidegauge_icos_push::protobuf::wire;
    let rig = Rig::new("names");
    let mut log = String::new();
    let steps: &[(&str, &str, &str)] = &[
        // A Python Counter and Gauge of one base name, pushed to two jobs: two families.
        ("PUT", "/metrics/job/gauges", "# TYPE b gauge\nb 1\n"),
        (
            "PUT",
            "/metrics/job/counters",
            "# TYPE b_total counter\nb_total 2\n# TYPE jobs_total counter\njobs_total 7\n",
        ),
        // A histogram q POSTed next to a counter q_total: both stay.
        (
            "PUT",
            "/metrics/job/hist",
            "# TYPE q_total counter\nq_total 3\n",
        ),
        (
            "POST",
            "/metrics/job/hist",
            "# TYPE q histogram\nq_bucket{le=\"+Inf\"} 1\nq_sum 0.5\nq_count 1\n",
        ),
        // POST replaces a family of the same pushed name, whatever its type was.
        (
            "PUT",
            "/metrics/job/x",
            "# TYPE x_total untyped\nx_total 1\n",
        ),
        (
            "POST",
            "/metrics/job/x",
            "# TYPE x_total counter\nx_total 5\n",
        ),
        // A counter called _total is a valid name and is served.
        (
            "PUT",
            "/metrics/job/underscore",
            "# TYPE _total counter\n_total 4\n",
        ),
    ];
    for (method, path, body) in steps {
        let (status, answer) = rig.send(method, path, body, &[]).await;
        log.push_str(&format!(
            "{method} {path}\n   -> {status} {}\n",
            answer.trim_end()
        ));
    }
    // A counter without _total, as Go's client_golang pushes it (protobuf).
    let family = wire::MetricFamily {
        name: Some("go_ops".into()),
        help: Some("Operations.".into()),
        r#type: Some(0),
        metric: vec![wire::Metric {
            counter: Some(wire::Single { value: Some(9.0) }),
            ..Default::default()
        }],
    };
    let (status, answer) = rig
        .send_bytes(
            "PUT",
            "/metrics/job/go",
            family.encode_length_delimited_to_vec(),
            &[(
                "content-type",
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
            )],
        )
        .await;
    log.push_str(&format!(
        "PUT /metrics/job/go (protobuf counter go_ops)\n   -> {status} {}\n",
        answer.trim_end()
    ));
    insta::assert_snapshot!("names_transcript", log);
    insta::assert_snapshot!("names_exposition", rig.exposition().await);
    std::fs::remove_dir_all(&rig.dir).ok();
}

#[tokio::test]
async fn groups_survive_a_restart_and_expire_after_their_ttl() {
    let rig = Rig::new("restart");
    assert_eq!(
        rig.send("PUT", "/metrics/job/keep", "kept 1\n", &[])
            .await
            .0,
        200
    );
    assert_eq!(
        rig.send(
            "PUT",
            "/metrics/job/short",
            "short_lived 1\n",
            &[("X-Push-TTL", "10s")]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        rig.send(
            "PUT",
            "/metrics/job/bad_ttl",
            "x 1\n",
            &[("X-Push-TTL", "soon")]
        )
        .await
        .0,
        400
    );
    let dir = rig.dir.clone();
    let clock = rig.clock.clone();
    let before = rig.exposition().await;
    assert!(
        before.contains("short_lived{instance=\"\",job=\"short\"} 1"),
        "{before}"
    );
    drop(rig);

    let rig = Rig::open(dir, clock, false);
    assert_eq!(rig.exposition().await, before);
    rig.clock.advance(Duration::from_secs(11));
    let after = rig.exposition().await;
    assert!(!after.contains("short_lived"), "{after}");
    assert!(after.contains("kept{instance=\"\",job=\"keep\"} 1"));
    assert!(
        after.contains("tidegauge_icos_push_expired_groups_total 1"),
        "{after}"
    );

    // An expiry found by a push that is then refused (over the group limit of 5) still
    // leaves the exposition and the store.
    assert_eq!(
        rig.send(
            "PUT",
            "/metrics/job/brief",
            "brief 1\n",
            &[("X-Push-TTL", "5s")]
        )
        .await
        .0,
        200
    );
    assert!(rig.exposition().await.contains("brief{"));
    rig.clock.advance(Duration::from_secs(6));
    let (status, _) = rig
        .send(
            "PUT",
            "/metrics/job/big",
            "a 1\nb 1\nc 1\nd 1\ne 1\nf 1\n",
            &[],
        )
        .await;
    assert_eq!(status, 400);
    let after = rig.exposition().await;
    assert!(!after.contains("brief{"), "{after}");
    assert!(
        after.contains("tidegauge_icos_push_expired_groups_total 2"),
        "{after}"
    );
    let (dir, clock) = (rig.dir.clone(), rig.clock.clone());
    drop(rig);
    let rig = Rig::open(dir, clock, false);
    assert!(!rig.exposition().await.contains("brief{"));
    std::fs::remove_dir_all(&rig.dir).ok();
}

#[tokio::test]
async fn pushed_and_registered_names_never_clash() {
    let rig = Rig::new("clash");
    assert_eq!(
        rig.send(
            "PUT",
            "/metrics/job/j",
            "# TYPE jobs_done counter\njobs_done_total 3\n",
            &[]
        )
        .await
        .0,
        200
    );
    let (status, body) = rig
        .send(
            "POST",
            "/create_metric",
            r#"{"metric_type": 2, "metric_name": "jobs_done_total", "value": 1}"#,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Pushgateway"), "{body}");
    let (status, _) = rig
        .send(
            "POST",
            "/create_metric",
            r#"{"metric_type": 2, "metric_name": "registered", "value": 1}"#,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = rig
        .send("PUT", "/metrics/job/k", "registered 2\n", &[])
        .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("inconsistent") && body.contains("registered"),
        "{body}"
    );
    let (status, body) = rig
        .send("PUT", "/metrics/job/k", "tidegauge_build_info 2\n", &[])
        .await;
    assert_eq!(status, 400, "{body}");
    std::fs::remove_dir_all(&rig.dir).ok();
}

#[tokio::test]
async fn exposed_names_clash_across_types_and_posts_cannot_outgrow_a_group() {
    let rig = Rig::new("exposed");
    assert_eq!(
        rig.send("PUT", "/metrics/job/a", "# TYPE foo counter\nfoo 1\n", &[])
            .await
            .0,
        200
    );
    // Families are told apart by the names they are pushed with, as the Pushgateway tells
    // them apart: a gauge foo_total is not the counter foo (200 from the Pushgateway too)...
    let (status, body) = rig
        .send(
            "PUT",
            "/metrics/job/b",
            "# TYPE foo_total gauge\nfoo_total 1\n",
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // ... but a gauge foo is, and so is a histogram's part.
    let (status, body) = rig
        .send("PUT", "/metrics/job/c", "# TYPE foo gauge\nfoo 2\n", &[])
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"foo\""), "{body}");
    let (status, body) = rig
        .send(
            "PUT",
            "/metrics/job/c",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            &[],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = rig
        .send(
            "PUT",
            "/metrics/job/d",
            "# TYPE h_sum gauge\nh_sum 2\n",
            &[],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // The limit (5 in this rig) holds for the group as it would be, not only for one push.
    for (i, name) in ["p", "q", "r", "s", "t"].iter().enumerate() {
        let (status, body) = rig
            .send("POST", "/metrics/job/grow", &format!("{name} {i}\n"), &[])
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = rig.send("POST", "/metrics/job/grow", "u 1\n", &[]).await;
    assert_eq!(status, 400);
    assert!(body.contains("per group"), "{body}");
    std::fs::remove_dir_all(&rig.dir).ok();
}

#[tokio::test]
async fn encoded_bodies_and_the_api() {
    use prost::Message;
    use std::io::Write;
    use tidegauge_icos_push::protobuf::wire;
    let rig = Rig::new("encoded");
    let gzip = |bytes: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    };
    let (status, _) = rig
        .send_bytes(
            "PUT",
            "/metrics/job/z",
            gzip(b"zipped 5\n"),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(status, 200);
    let mut snappy = snap::write::FrameEncoder::new(Vec::new());
    snappy.write_all(b"snapped 6\n").unwrap();
    let (status, answer) = rig
        .send_bytes(
            "PUT",
            "/metrics/job/s",
            snappy.into_inner().unwrap(),
            &[("content-encoding", "snappy")],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    for encoding in ["gzip", "snappy"] {
        let (status, answer) = rig
            .send(
                "PUT",
                "/metrics/job/z",
                "garbage",
                &[("content-encoding", encoding)],
            )
            .await;
        assert_eq!(status, 400, "{encoding}: {answer}");
        assert!(answer.contains(&format!("bad {encoding} body")), "{answer}");
    }
    // Delimited protobuf, as the Go client's push package sends it, plain and gzipped.
    const PROTO: &str = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";
    let family = wire::MetricFamily {
        name: Some("go_pushed_total".into()),
        help: Some("Pushed from Go.".into()),
        r#type: Some(0),
        metric: vec![wire::Metric {
            label: vec![wire::LabelPair {
                name: Some("worker".into()),
                value: Some("w1".into()),
            }],
            counter: Some(wire::Single { value: Some(12.0) }),
            ..Default::default()
        }],
    };
    let body = family.encode_length_delimited_to_vec();
    let (status, answer) = rig
        .send_bytes(
            "PUT",
            "/metrics/job/go",
            body.clone(),
            &[("content-type", PROTO)],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = rig
        .send_bytes(
            "PUT",
            "/metrics/job/go/instance/gz",
            gzip(&body),
            &[("content-type", PROTO), ("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let exposition = rig.exposition().await;
    assert!(
        exposition.contains("# TYPE go_pushed_total counter\ngo_pushed_total{instance=\"\",job=\"go\",worker=\"w1\"} 12\n"),
        "{exposition}"
    );
    assert!(
        exposition.contains("go_pushed_total{instance=\"gz\",job=\"go\",worker=\"w1\"} 12\n"),
        "{exposition}"
    );
    assert!(exposition.contains("snapped{instance=\"\",job=\"s\"} 6\n"));
    let (status, answer) = rig
        .send("PUT", "/metrics/job/bad", "x", &[("content-type", PROTO)])
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("does not decode"), "{answer}");
    let (status, _) = rig
        .send(
            "PUT",
            "/metrics/job/bad",
            "",
            &[(
                "content-type",
                "application/vnd.google.protobuf; proto=other.Message; encoding=delimited",
            )],
        )
        .await;
    assert_eq!(status, 415);
    let (status, _) = rig
        .send(
            "PUT",
            "/metrics/job/bad",
            "x 1\n",
            &[("content-encoding", "br")],
        )
        .await;
    assert_eq!(status, 415);
    let (status, body) = rig.send("GET", "/api/v1/metrics", "", &[]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success");
    let z = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["labels"]["job"] == "z")
        .unwrap();
    assert_eq!(z["zipped"]["metrics"][0]["value"], "5");
    assert_eq!(z["last_push_successful"], true);
    let (status, body) = rig.send("GET", "/api/v1/status", "", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("build_information"), "{body}");
    std::fs::remove_dir_all(&rig.dir).ok();
}

#[tokio::test]
async fn admin_wipe_deletes_every_group_durably() {
    let rig = Rig::new("nowipe");
    assert_eq!(rig.send("PUT", "/metrics/job/a", "x 1\n", &[]).await.0, 200);
    let (status, answer) = rig.send("PUT", "/api/v1/admin/wipe", "", &[]).await;
    assert_eq!(status, 403, "disabled by default: {answer}");
    assert!(rig.exposition().await.contains("job=\"a\""));
    std::fs::remove_dir_all(&rig.dir).ok();

    let dir = std::env::temp_dir().join(format!("tidegauge-pgw-wipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let clock = FakeClock::at(FIXTURE_EPOCH);
    let rig = Rig::open(dir.clone(), clock.clone(), true);
    for job in ["a", "b", "c"] {
        let path = format!("/metrics/job/{job}");
        assert_eq!(rig.send("PUT", &path, "x{k=\"1\"} 1\n", &[]).await.0, 200);
    }
    assert_eq!(rig.send("PUT", "/api/v1/admin/wipe", "", &[]).await.0, 202);
    assert!(!rig.exposition().await.contains("job="));
    assert_eq!(rig.send("PUT", "/api/v1/admin/wipe", "", &[]).await.0, 202);
    drop(rig);
    let rig = Rig::open(dir.clone(), clock, true);
    let after = rig.exposition().await;
    assert!(!after.contains("job="), "wiped groups came back:\n{after}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The status of a `PUT /metrics/job/<job>` of `body`.
async fn put(app: &axum::Router, job: String, body: &'static str) -> u16 {
    app.clone()
        .oneshot(
            Request::put(format!("/metrics/job/{job}"))
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every group exposes two series of its own (push time, push failure time): empty groups count
/// toward `max_series`, and `max_groups` caps the groups, those created by refused pushes too.
#[tokio::test]
async fn empty_groups_count_toward_the_limits() {
    let dir = std::env::temp_dir().join(format!("tidegauge-pgw-groups-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = |max_series: usize, max_groups: usize, tag: &str| {
        let cfg = Config {
            data_dir: Some(dir.join(tag)),
            max_series,
            max_groups,
            ..Config::default()
        };
        let services = tidegauge_testkit::services(FakeClock::at(FIXTURE_EPOCH), dir.clone());
        IcosPush::open(&cfg, &services, None)
            .unwrap()
            .routes()
            .into_router()
    };
    // max_series 10: five empty groups (two series each), not six.
    let app = open(10, 10_000, "series");
    for i in 0..5 {
        assert_eq!(put(&app, format!("e{i}"), "").await, 200, "group {i}");
    }
    assert_eq!(put(&app, "e5".into(), "").await, 400);
    // An existing group can still be replaced.
    assert_eq!(put(&app, "e0".into(), "").await, 200);

    // max_groups 3: the fourth group is refused, whether its push is valid or not.
    let app = open(100_000, 3, "groups");
    for i in 0..3 {
        assert_eq!(put(&app, format!("g{i}"), "x 1\n").await, 200);
    }
    assert_eq!(put(&app, "g3".into(), "x 1\n").await, 400);
    assert_eq!(put(&app, "g4".into(), "x{ 1\n").await, 400);
    // A refused push to an existing group is recorded (its failure time), not refused by the cap.
    assert_eq!(put(&app, "g0".into(), "x{ 1\n").await, 400);
    std::fs::remove_dir_all(&dir).ok();
}

/// A commit that fails (a full disk, a failed fsync) answers 503, leaves what is served equal to
/// what is stored, and the service recovers when the fault clears.
#[tokio::test]
async fn a_failed_commit_answers_503_and_recovers() {
    let dir = std::env::temp_dir().join(format!("tidegauge-pgw-faults-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = Config {
        data_dir: Some(dir.clone()),
        ..Config::default()
    };
    let clock = FakeClock::at(FIXTURE_EPOCH);
    let services = tidegauge_testkit::services(clock.clone(), dir.clone());
    let push = IcosPush::open(&cfg, &services, None).unwrap();
    let app = push.routes().into_router();
    let put = |job: &'static str, body: &'static str| put(&app, job.to_owned(), body);
    let served = || async {
        let ctx = context(Duration::from_secs(5), clock.clone());
        let snap = push.collect(&ctx).await.unwrap();
        tidegauge_core::encode::encode(
            tidegauge_core::encode::Format::Text,
            std::slice::from_ref(&snap),
        )
    };
    assert_eq!(put("a", "kept 1\n").await, 200);
    push.fail_commits(1);
    assert_eq!(put("b", "lost 1\n").await, 503);
    let body = served().await;
    assert!(body.contains("kept{"), "{body}");
    assert!(!body.contains("lost{"), "served equals stored: {body}");
    // The fault cleared: writes go through again.
    assert_eq!(put("b", "lost 2\n").await, 200);
    assert!(served().await.contains("lost{instance=\"\",job=\"b\"} 2"));
    drop(app);
    drop(push);
    let push = IcosPush::open(&cfg, &services, None).unwrap();
    let ctx = context(Duration::from_secs(5), clock.clone());
    let snap = push.collect(&ctx).await.unwrap();
    let body = tidegauge_core::encode::encode(
        tidegauge_core::encode::Format::Text,
        std::slice::from_ref(&snap),
    );
    assert!(
        body.contains("kept{") && body.contains("lost{instance=\"\",job=\"b\"} 2"),
        "{body}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `le` as a grouping label of a histogram (or `quantile` of a summary) would clash with the
/// encoder's own label: refused with the reason instead of dropped at every scrape.
#[tokio::test]
async fn reserved_grouping_labels_are_refused() {
    let rig = Rig::new("reserved");
    let (status, body) = rig
        .send(
            "PUT",
            "/metrics/job/j/le/1",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            &[],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"le\""), "{body}");
    let (status, body) = rig
        .send(
            "PUT",
            "/metrics/job/j/quantile/x",
            "# TYPE s summary\ns_sum 1\ns_count 1\n",
            &[],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // A gauge may carry either.
    let (status, _) = rig.send("PUT", "/metrics/job/j/le/1", "g 1\n", &[]).await;
    assert_eq!(status, 200);
}

/// A push refused for its content records its failure as the Pushgateway does: the group's
/// `push_failure_time_seconds` is set, and a new group is created, failed and empty.
#[tokio::test]
async fn refused_pushes_record_their_failure_time() {
    let rig = Rig::new("failures");
    let (status, body) = rig.send("PUT", "/metrics/job/ts", "x 1 1234\n", &[]).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = rig.send("PUT", "/metrics/job/kept", "y 1\n", &[]).await;
    assert_eq!(status, 200);
    rig.clock.advance(Duration::from_secs(10));
    let (status, _) = rig
        .send(
            "POST",
            "/metrics/job/kept",
            "y{a=\"1\"} 1\ny{a=\"1\"} 2\n",
            &[],
        )
        .await;
    assert_eq!(status, 400);
    let out = rig.exposition().await;
    let at = FIXTURE_EPOCH as f64;
    assert!(
        out.contains(&format!(
            "push_failure_time_seconds{{instance=\"\",job=\"ts\"}} {at}"
        )),
        "{out}"
    );
    assert!(
        out.contains("push_time_seconds{instance=\"\",job=\"ts\"} 0"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "push_failure_time_seconds{{instance=\"\",job=\"kept\"}} {}",
            at + 10.0
        )),
        "{out}"
    );
    assert!(
        out.contains("y{instance=\"\",job=\"kept\"} 1"),
        "the group keeps its series: {out}"
    );
    // A body that does not parse (text or protobuf) is not a push, for the Pushgateway too:
    // nothing is recorded and no group is created.
    let (status, _) = rig
        .send("PUT", "/metrics/job/syntax", "x{a=\"1\" 1\n", &[])
        .await;
    assert_eq!(status, 400);
    let (status, _) = rig
        .send_bytes(
            "PUT",
            "/metrics/job/syntax",
            vec![0x05, 0xff],
            &[(
                "content-type",
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
            )],
        )
        .await;
    assert_eq!(status, 400);
    // A label name over the length limit (default 4,096 bytes) is refused content too.
    let long = format!("x{{{}=\"1\"}} 1\n", "k".repeat(5000));
    let (status, body) = rig.send("PUT", "/metrics/job/long_name", &long, &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("label names"), "{body}");
    // A reserved label name in a well-formed body is refused content: recorded.
    let (status, _) = rig
        .send("PUT", "/metrics/job/reserved", "x{__a=\"1\"} 1\n", &[])
        .await;
    assert_eq!(status, 400);
    // The group limit (5 series in this rig), whether one push passes it or the group would.
    let (status, _) = rig
        .send("PUT", "/metrics/job/limited", "a 1\nb 1\nc 1\n", &[])
        .await;
    assert_eq!(status, 200);
    rig.clock.advance(Duration::from_secs(5));
    let (status, _) = rig
        .send("POST", "/metrics/job/limited", "d 1\ne 1\nf 1\n", &[])
        .await;
    assert_eq!(status, 400);
    let (status, _) = rig
        .send(
            "PUT",
            "/metrics/job/limited_new",
            // Five lines, six series: three buckets, +Inf, _sum and _count.
            "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
            &[],
        )
        .await;
    assert_eq!(status, 400);
    let out = rig.exposition().await;
    assert!(!out.contains("job=\"syntax\""), "{out}");
    assert!(
        out.contains(&format!(
            "push_failure_time_seconds{{instance=\"\",job=\"limited\"}} {}",
            at + 15.0
        )),
        "{out}"
    );
    assert!(
        out.contains("push_failure_time_seconds{instance=\"\",job=\"limited_new\"}"),
        "{out}"
    );
    assert!(
        out.contains("push_failure_time_seconds{instance=\"\",job=\"reserved\"}"),
        "{out}"
    );
}

/// `/api/v1/metrics` as the Pushgateway writes it: families under their exposed names, `+Inf`
/// buckets, push times with their help and `instance`; CORS for dashboards elsewhere.
#[tokio::test]
async fn the_json_api_as_the_pushgateway_writes_it() {
    let rig = Rig::new("api");
    let body = "# TYPE jobs_total counter\njobs_total 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    assert_eq!(rig.send("PUT", "/metrics/job/j", body, &[]).await.0, 200);
    let (status, text) = rig.send("GET", "/api/v1/metrics", "", &[]).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let group = &json["data"][0];
    assert!(group.get("jobs_total").is_some(), "{group}");
    assert_eq!(group["h"]["metrics"][0]["buckets"]["+Inf"], "2", "{group}");
    let push_time = &group["push_time_seconds"];
    assert!(push_time["help"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(push_time["metrics"][0]["labels"]["instance"], "");
    let preflight = rig
        .app
        .clone()
        .oneshot(
            Request::options("/api/v1/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
}

/// The landing page's status: each group with its last push and expiry, a group whose last
/// push was refused first (a warning).
#[tokio::test]
async fn status_lists_groups_with_last_push_and_expiry_refused_first() {
    use tidegauge_core::status::{Cell, Health};
    let rig = Rig::new("status");
    let (s, _) = rig
        .send(
            "PUT",
            "/metrics/job/batch",
            "a 1\nb 2\n",
            &[("X-Push-TTL", "10m")],
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = rig.send("PUT", "/metrics/job/kept", "y 1\n", &[]).await;
    assert_eq!(s, 200);
    rig.clock.advance(Duration::from_secs(90));
    // Refused: a timestamped sample.
    let (s, _) = rig
        .send("PUT", "/metrics/job/kept", "y 2 1234\n", &[])
        .await;
    assert_eq!(s, 400);
    let status = rig.push.status();
    let groups = &status.sections[0];
    assert_eq!(groups.title, "Push groups");
    let text = |r: usize| -> Vec<String> {
        groups.rows[r]
            .cells
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(groups.rows[0].health, Health::Warning);
    assert_eq!(
        text(0),
        ["job=\"kept\"", "1", "1 min ago", "just now", "never"]
    );
    assert_eq!(groups.rows[1].health, Health::Ok);
    assert_eq!(
        text(1),
        ["job=\"batch\"", "2", "1 min ago", "never", "in 8 min"]
    );
    assert_eq!(groups.rows[1].cells[0], Cell::Text("job=\"batch\"".into()));
    assert_eq!(status.sections.len(), 1, "no model metrics defined");
    // A value cannot pass for another label: values are quoted and escaped.
    let (s, _) = rig
        .send(
            "PUT",
            "/metrics/job@base64/ZXZpbCIsIGluc3RhbmNlPSJwcm9k",
            "a 1\n",
            &[],
        )
        .await;
    assert_eq!(s, 200);
    let status = rig.push.status();
    assert!(
        status.sections[0]
            .rows
            .iter()
            .any(|r| r.cells[0].to_string() == r#"job="evil\", instance=\"prod""#),
        "{:?}",
        status.sections[0].rows
    );
}

/// Thousands of groups make no page of thousands of rows: the refused ones first, 100 in all,
/// and a line for the rest.
#[tokio::test]
async fn status_lists_at_most_a_hundred_groups_refused_first() {
    let rig = Rig::new("status-cap");
    for i in 0..102 {
        let (s, _) = rig
            .send("PUT", &format!("/metrics/job/j/instance/{i}"), "a 1\n", &[])
            .await;
        assert_eq!(s, 200);
    }
    rig.clock.advance(Duration::from_secs(1));
    let (s, _) = rig
        .send("PUT", "/metrics/job/j/instance/77", "a 2 1234\n", &[])
        .await;
    assert_eq!(s, 400);
    let status = rig.push.status();
    let rows = &status.sections[0].rows;
    assert_eq!(rows.len(), 101);
    assert_eq!(rows[0].cells[0].to_string(), "job=\"j\", instance=\"77\"");
    assert_eq!(rows[0].health, tidegauge_core::status::Health::Warning);
    assert_eq!(
        rows[100].cells[0].to_string(),
        "and 2 more (see /api/v1/metrics)"
    );
}
