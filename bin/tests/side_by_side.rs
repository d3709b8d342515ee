//! The real Pushgateway (Debian's `prometheus-pushgateway`, installed by
//! `scripts/install-test-deps.sh`) and tidegauge side by side: every case sends the same requests
//! to both and compares the answers' status codes and the pushed series each then exposes (names,
//! types, HELP, labels, values; push times compared as set or unset). A case either matches or
//! is a difference the README lists; a case that changes either way fails the test, so the
//! README's list stays measured. Run it alone with
//! `cargo nextest run -p tidegauge --test side_by_side --no-capture` to see the table.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Host, client, push_config, temp_dir, which};

struct Gateway {
    child: Child,
    addr: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_pushgateway() -> Gateway {
    let bin = which("prometheus-pushgateway").unwrap_or_else(|| {
        panic!("prometheus-pushgateway not found: run scripts/install-test-deps.sh (or `cargo xtask test`, which runs it)")
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            &format!("--web.listen-address={addr}"),
            "--web.enable-admin-api",
            // Debian's build persists to /var/lib/prometheus by default.
            "--persistence.file=",
            "--log.level=error",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gateway = Gateway { child, addr };
    let http = client();
    for _ in 0..200 {
        if let Ok(r) = http
            .get(format!("http://{}/-/ready", gateway.addr))
            .send()
            .await
            && r.status() == 200
        {
            return gateway;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the Pushgateway did not become ready on {}", gateway.addr);
}

/// One request of a case.
struct Req {
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

fn req(method: &'static str, path: &'static str, body: &str) -> Req {
    Req {
        method,
        path,
        content_type: None,
        body: body.as_bytes().to_vec(),
    }
}

const PROTO: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// A delimited protobuf `MetricFamily` with one sample, assembled by hand as the Go client writes
/// it: `type` 0 counter, 1 gauge.
fn proto_family(name: &str, kind: u8, value: f64) -> Vec<u8> {
    let mut single = vec![0x09];
    single.extend_from_slice(&value.to_le_bytes());
    let field = if kind == 0 { 0x1a } else { 0x12 };
    let mut metric = vec![field, u8::try_from(single.len()).unwrap()];
    metric.extend(single);
    let mut family = vec![0x0a, u8::try_from(name.len()).unwrap()];
    family.extend_from_slice(name.as_bytes());
    family.extend_from_slice(&[0x18, kind, 0x22, u8::try_from(metric.len()).unwrap()]);
    family.extend(metric);
    let mut out = vec![u8::try_from(family.len()).unwrap()];
    out.extend(family);
    out
}

struct Case {
    name: &'static str,
    requests: Vec<Req>,
    /// `None`: both answer alike; `Some(why)`: a difference the README lists.
    differs: Option<&'static str>,
}

fn case(name: &'static str, requests: Vec<Req>) -> Case {
    Case {
        name,
        requests,
        differs: None,
    }
}

fn cases() -> Vec<Case> {
    let mut proto_no_delimited = req("PUT", "/metrics/job/ct", "plain_text_body 1\n");
    proto_no_delimited.content_type =
        Some("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily");
    let go_counter = Req {
        method: "PUT",
        path: "/metrics/job/go",
        content_type: Some(PROTO),
        body: proto_family("go_ops", 0, 9.0),
    };
    let go_gauge = Req {
        method: "PUT",
        path: "/metrics/job/go2",
        content_type: Some(PROTO),
        body: proto_family("go_temp_celsius", 1, 21.5),
    };
    vec![
        case(
            "README: untyped sample",
            vec![req("POST", "/metrics/job/some_job", "some_metric 3.14\n")],
        ),
        case(
            "README: counter without _total, gauge with HELP",
            vec![req(
                "POST",
                "/metrics/job/some_job/instance/some_instance",
                "# TYPE some_metric counter\nsome_metric{label=\"val1\"} 42\n# TYPE another_metric gauge\n# HELP another_metric Just an example.\nanother_metric 2398.283\n",
            )],
        ),
        case(
            "README: type clash with another group",
            vec![
                req("POST", "/metrics/job/some_job", "some_metric 3.14\n"),
                req(
                    "POST",
                    "/metrics/job/some_job/instance/some_instance",
                    "# TYPE some_metric counter\nsome_metric{label=\"val1\"} 42\n",
                ),
            ],
        ),
        case(
            "POST replaces only the families pushed",
            vec![
                req("PUT", "/metrics/job/p", "a 1\nb 2\n"),
                req("POST", "/metrics/job/p", "a 3\n"),
            ],
        ),
        case(
            "PUT replaces the group",
            vec![
                req("PUT", "/metrics/job/p", "a 1\nb 2\n"),
                req("PUT", "/metrics/job/p", "a 3\n"),
            ],
        ),
        case(
            "PUT with an empty body empties the group",
            vec![
                req("PUT", "/metrics/job/p", "a 1\n"),
                req("PUT", "/metrics/job/p", ""),
            ],
        ),
        case(
            "DELETE a group",
            vec![
                req("PUT", "/metrics/job/p", "a 1\n"),
                req("DELETE", "/metrics/job/p", ""),
            ],
        ),
        case(
            "DELETE a group that does not exist",
            vec![req("DELETE", "/metrics/job/none", "")],
        ),
        case(
            "Python Counter and Gauge of one base name, two jobs",
            vec![
                req(
                    "PUT",
                    "/metrics/job/c1",
                    "# HELP shared_total A counter\n# TYPE shared_total counter\nshared_total 1.0\n# HELP shared_created A counter\n# TYPE shared_created gauge\nshared_created 1.7e+09\n",
                ),
                req(
                    "PUT",
                    "/metrics/job/c2",
                    "# HELP shared A gauge\n# TYPE shared gauge\nshared 5.0\n",
                ),
            ],
        ),
        case(
            "histogram q POSTed next to counter q_total",
            vec![
                req(
                    "PUT",
                    "/metrics/job/h",
                    "# TYPE q_total counter\nq_total 3\n",
                ),
                req(
                    "POST",
                    "/metrics/job/h",
                    "# TYPE q histogram\nq_bucket{le=\"0.5\"} 1\nq_bucket{le=\"+Inf\"} 2\nq_sum 1.5\nq_count 2\n",
                ),
            ],
        ),
        case(
            "counter x_total over untyped x_total",
            vec![
                req(
                    "PUT",
                    "/metrics/job/x",
                    "# TYPE x_total untyped\nx_total 1\n",
                ),
                req(
                    "POST",
                    "/metrics/job/x",
                    "# TYPE x_total counter\nx_total 5\n",
                ),
            ],
        ),
        case(
            "a counter named _total",
            vec![req(
                "PUT",
                "/metrics/job/u",
                "# TYPE _total counter\n_total 4\n",
            )],
        ),
        case("protobuf counter without _total (Go)", vec![go_counter]),
        case("protobuf gauge (Go)", vec![go_gauge]),
        case(
            "protobuf content type without encoding=delimited",
            vec![proto_no_delimited],
        ),
        case(
            "a label repeated in the URL",
            vec![req("PUT", "/metrics/job/j/job/k", "r 1\n")],
        ),
        case(
            "a bare HELP line",
            vec![req(
                "PUT",
                "/metrics/job/bare",
                "# HELP lonely\nwith_value 1\n",
            )],
        ),
        case(
            "grouping labels override body labels, base64 and empty values",
            vec![
                req(
                    "PUT",
                    "/metrics/job/directory_cleaner/path@base64/L3Zhci90bXA",
                    "files_removed{job=\"ignored\",path=\"x\"} 7\n",
                ),
                req(
                    "PUT",
                    "/metrics/job/example/first_label@base64/=/second_label/foobar",
                    "example_value 1\n",
                ),
            ],
        ),
        case(
            "an explicit empty instance overrides the body's",
            vec![req(
                "PUT",
                "/metrics/job/emptied/instance@base64/=",
                "overridden{instance=\"body\"} 1\n",
            )],
        ),
        case(
            "summary and histogram as the Go client pushes them",
            vec![req(
                "PUT",
                "/metrics/job/latency",
                "# HELP rpc_seconds RPC latency.\n# TYPE rpc_seconds summary\nrpc_seconds{quantile=\"0.5\"} 0.2\nrpc_seconds{quantile=\"0.99\"} 0.9\nrpc_seconds_sum 12.5\nrpc_seconds_count 40\n# TYPE size_bytes histogram\nsize_bytes_bucket{le=\"100\"} 3\nsize_bytes_bucket{le=\"+Inf\"} 5\nsize_bytes_sum 900\nsize_bytes_count 5\n",
            )],
        ),
        case(
            "escapes in label values and HELP",
            vec![req(
                "PUT",
                "/metrics/job/esc",
                "# HELP esc A \\\\ backslash\\nand a newline\nesc{v=\"q\\\"uote\\\\back\\nline\"} 1\n",
            )],
        ),
        case(
            "special values",
            vec![req(
                "PUT",
                "/metrics/job/special",
                "nan_value NaN\ninf_value +Inf\nneg_inf -Inf\nbig 1e+300\nsmall 1.5e-9\n",
            )],
        ),
        case(
            "timestamps are refused and the failure time recorded",
            vec![req("PUT", "/metrics/job/ts", "x 1 1700000000\n")],
        ),
        case(
            "a syntax error",
            vec![req("PUT", "/metrics/job/syntax", "x{a=\"1\" 1\n")],
        ),
        case(
            "the same series twice in one push",
            vec![req(
                "PUT",
                "/metrics/job/twice",
                "d{a=\"1\"} 1\nd{a=\"1\"} 2\n",
            )],
        ),
        case(
            "the same series from two groups",
            vec![
                req("PUT", "/metrics/job/dup", "dup_metric{a=\"1\"} 1\n"),
                req("PUT", "/metrics/job/dup/a/1", "dup_metric 2\n"),
            ],
        ),
        case(
            "an odd number of URL segments",
            vec![req("PUT", "/metrics/job/broken/odd", "x 1\n")],
        ),
        case(
            "a reserved label name in the URL",
            vec![req("PUT", "/metrics/job/broken/__reserved/x", "x 1\n")],
        ),
        case(
            "bad base64 in the URL",
            vec![req("PUT", "/metrics/job@base64/%%%", "x 1\n")],
        ),
        case(
            "an empty job name",
            vec![req("PUT", "/metrics/job/", "x 1\n")],
        ),
        Case {
            name: "a quantile out of range",
            requests: vec![req(
                "PUT",
                "/metrics/job/q",
                "# TYPE s summary\ns{quantile=\"1.5\"} 1\n",
            )],
            differs: Some(
                "tidegauge answers 400 (OpenMetrics allows quantiles in [0, 1] only); the Pushgateway serves it",
            ),
        },
        case(
            "a reserved label name in the body",
            vec![req("PUT", "/metrics/job/res", "x{__a=\"1\"} 1\n")],
        ),
        case(
            "a protobuf body that does not decode",
            vec![Req {
                method: "PUT",
                path: "/metrics/job/pb",
                content_type: Some(PROTO),
                body: vec![0x05, 0xff],
            }],
        ),
        case(
            "a path that is not a job",
            vec![req("PUT", "/metrics/jobs/x", "x 1\n")],
        ),
        // Not compared: HELP differing between groups. The Pushgateway serves one of them,
        // chosen anew at each scrape (Go's map order); tidegauge the last non-empty one in the
        // groups' order.
        case(
            "a label other than job repeated in the URL",
            vec![req("PUT", "/metrics/job/j/a/1/a/2", "r 1\n")],
        ),
        Case {
            name: "le as a grouping label of a histogram",
            requests: vec![req(
                "PUT",
                "/metrics/job/le/le/0.5",
                "# TYPE lh histogram\nlh_bucket{le=\"+Inf\"} 1\nlh_sum 1\nlh_count 1\n",
            )],
            differs: Some(
                "tidegauge answers 400; the Pushgateway accepts the push and then fails every scrape of /metrics",
            ),
        },
    ]
}

/// The pushed part of an exposition (families with a `job` label), normalised: label order,
/// float spelling, and push times as set or unset.
fn pushed(exposition: &str) -> BTreeSet<String> {
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples: BTreeSet<(String, String)> = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (n, h) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(n.to_owned(), h.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (n, t) = rest.split_once(' ').unwrap_or((rest, ""));
            types.insert(n.to_owned(), t.to_owned());
        } else if !line.is_empty() && !line.starts_with('#') {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
                None => (series, Vec::new()),
            };
            if !labels.iter().any(|(k, _)| k == "job") {
                continue;
            }
            let v: f64 = value.parse().unwrap();
            let v = if name == "push_time_seconds" || name == "push_failure_time_seconds" {
                if v == 0.0 { "unset" } else { "set" }.to_owned()
            } else if v.is_nan() {
                "NaN".to_owned()
            } else {
                format!("{v:?}")
            };
            let mut labels = labels;
            labels.sort();
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            samples.insert((name.to_owned(), format!("{{{}}} {v}", labels.join(","))));
        }
    }
    let mut out = BTreeSet::new();
    for (name, rest) in samples {
        // The family a sample belongs to: its own name, or a histogram's or summary's base.
        let family = ["", "_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|b| types.contains_key(*b))
            .unwrap_or(&name)
            .to_owned();
        out.insert(format!(
            "{name}{rest}  [family {family}: {} {:?}]",
            types.get(&family).map_or("-", String::as_str),
            help.get(&family).map_or("-", String::as_str)
        ));
    }
    out
}

/// Label pairs of a sample line, values unescaped, `le`/`quantile` compared as numbers.
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} in {s}");
        let mut v = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(o) => v.push(o),
                    None => {}
                },
                '"' => break,
                c => v.push(c),
            }
        }
        if (key == "le" || key == "quantile")
            && let Ok(n) = v.parse::<f64>()
        {
            v = format!("{n:?}");
        }
        out.push((key.trim().to_owned(), v));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
}

/// What one server did with a case: status codes, then the pushed series (or the scrape's
/// failure).
async fn run_case(http: &reqwest::Client, base: &str, case: &Case) -> (Vec<u16>, BTreeSet<String>) {
    let wipe = http
        .put(format!("{base}/api/v1/admin/wipe"))
        .send()
        .await
        .unwrap();
    assert!(
        wipe.status().is_success(),
        "wipe on {base}: {}",
        wipe.status()
    );
    let mut codes = Vec::new();
    for r in &case.requests {
        let mut rb = http.request(r.method.parse().unwrap(), format!("{base}{}", r.path));
        if let Some(ct) = r.content_type {
            rb = rb.header("content-type", ct);
        }
        codes.push(
            rb.body(r.body.clone())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    let resp = http
        .get(format!("{base}/metrics"))
        .header("accept", "text/plain; version=0.0.4")
        .send()
        .await
        .unwrap();
    let series = if resp.status() == 200 {
        pushed(&resp.text().await.unwrap())
    } else {
        BTreeSet::from([format!("/metrics answered {}", resp.status())])
    };
    (codes, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushgateway_side_by_side() {
    let gateway = start_pushgateway().await;
    let dir = temp_dir("side-by-side");
    let cfg = push_config(&dir);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("admin_api = true\n");
    std::fs::write(&cfg, text).unwrap();
    let host = Host::with_config(&cfg);
    let http = client();
    let pgw = format!("http://{}", gateway.addr);
    let tg = format!("http://{}", host.addr);
    let mut table =
        String::from("| case | Pushgateway 1.5.1 | tidegauge | result |\n|---|---|---|---|\n");
    let mut unexpected = Vec::new();
    let all = cases();
    let mut same = 0;
    for case in &all {
        let (pc, ps) = run_case(&http, &pgw, case).await;
        let (tc, ts) = run_case(&http, &tg, case).await;
        let alike = pc == tc && ps == ts;
        same += usize::from(alike);
        let result = match (alike, case.differs) {
            (true, None) => "same".to_owned(),
            (false, Some(why)) => format!("differs (listed): {why}"),
            (true, Some(_)) => {
                unexpected.push(format!(
                    "{}: listed as a difference but both now agree",
                    case.name
                ));
                "same, but listed as a difference".to_owned()
            }
            (false, None) => {
                let only_pgw: Vec<_> = ps.difference(&ts).collect();
                let only_tg: Vec<_> = ts.difference(&ps).collect();
                unexpected.push(format!(
                    "{}: codes {pc:?} vs {tc:?}\n  only the Pushgateway: {only_pgw:#?}\n  only tidegauge: {only_tg:#?}",
                    case.name
                ));
                "DIFFERS".to_owned()
            }
        };
        table.push_str(&format!("| {} | {pc:?} | {tc:?} | {result} |\n", case.name));
    }
    println!("{table}\n{same} of {} cases identical", all.len());
    assert!(unexpected.is_empty(), "{table}\n{}", unexpected.join("\n"));
    std::fs::remove_dir_all(&dir).ok();
}
