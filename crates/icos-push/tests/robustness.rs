//! Mutated push bodies and URLs never panic the parsers: each input is either parsed or refused.
#![allow(clippy::unwrap_used)]

use prost::Message;
use tidegauge_icos_push::model::{self, Limits, Registry};
use tidegauge_icos_push::protobuf::{self, wire};
use tidegauge_icos_push::{pushgateway, textformat};

/// Fails when a run exercised fewer inputs than `floor`: mutations that became too harsh (or a
/// parser that refuses everything) would otherwise pass without testing anything.
fn floor(what: &str, count: usize, floor: usize) {
    eprintln!("{what}: {count} inputs parsed (floor {floor})");
    assert!(
        count >= floor,
        "{what}: only {count} inputs parsed, fewer than the floor of {floor}"
    );
}

/// xorshift64*: deterministic, so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// Floors: about half of what the deterministic runs parse (19,415 text bodies, 1,333 protobuf
// bodies, 9,337 grouping keys, 1,571 ICOS payloads when the floors were set).
const FLOOR_TEXT: usize = 10_000;
const FLOOR_PROTOBUF: usize = 600;
const FLOOR_KEYS: usize = 4_500;
const FLOOR_ICOS: usize = 750;

const INTERESTING: &[u8] = b"{}\",=\\\n #_:@/%+-.eE0123456789\x00\xff\xc3";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = if b.is_empty() { 0 } else { rng.below(b.len()) };
        match rng.below(5) {
            0 if !b.is_empty() => b[at] = INTERESTING[rng.below(INTERESTING.len())],
            1 if !b.is_empty() => b[at] = rng.next() as u8,
            2 => b.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            3 if !b.is_empty() => {
                b.remove(at);
            }
            _ => b.truncate(at),
        }
    }
    b
}

#[test]
fn mutated_text_bodies_parse_or_are_refused() {
    let seeds: &[&str] = &[
        "# HELP a_total A \\\\ help\n# TYPE a_total counter\na_total{x=\"1\",y=\"a\\\"b\"} 3.5\n",
        "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1e3\nh_count 2\n",
        "# TYPE s summary\ns{quantile=\"0.5\"} NaN\ns_sum -Inf\ns_count 0\n",
        "untyped_metric 1\nother{a=\"\"} +Inf\n",
    ];
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut parsed_count = 0;
    for i in 0..100_000 {
        let seed = seeds[i % seeds.len()].as_bytes();
        let body = mutate(&mut rng, seed);
        if let Ok(text) = String::from_utf8(body)
            && let Ok(parsed) = textformat::parse_limited(&text, 1000)
        {
            parsed_count += 1;
            // What parses is valid Prometheus data once decorated with a grouping key.
            let key = vec![("job".to_owned(), "j".to_owned())];
            for f in pushgateway::decorate(&key, parsed) {
                f.validate().unwrap();
            }
        }
    }
    floor("text bodies", parsed_count, FLOOR_TEXT);
}

#[test]
fn mutated_protobuf_bodies_parse_or_are_refused() {
    let family = wire::MetricFamily {
        name: Some("h".into()),
        help: Some("H".into()),
        r#type: Some(4),
        metric: vec![wire::Metric {
            label: vec![wire::LabelPair {
                name: Some("a".into()),
                value: Some("b".into()),
            }],
            histogram: Some(wire::Histogram {
                sample_count: Some(3),
                sample_sum: Some(1.5),
                bucket: vec![wire::Bucket {
                    cumulative_count: Some(1),
                    upper_bound: Some(0.5),
                    cumulative_count_float: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    let mut seed = family.encode_length_delimited_to_vec();
    seed.extend(family.encode_length_delimited_to_vec());
    let mut rng = Rng(0x0F1E_2D3C_4B5A_6978);
    let mut parsed = 0;
    for _ in 0..100_000 {
        let body = mutate(&mut rng, &seed);
        parsed += usize::from(protobuf::parse_limited(&body, 1000).is_ok());
    }
    floor("protobuf bodies", parsed, FLOOR_PROTOBUF);
}

#[test]
fn mutated_grouping_keys_parse_or_are_refused() {
    let seeds = [
        "job/a/instance/b",
        "job@base64/Zm9vL2Jhcg==/path@base64/L3Zhci90bXA",
        "job/x/first@base64/=/second/%20y",
    ];
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let mut parsed = 0;
    for i in 0..100_000 {
        let raw = mutate(&mut rng, seeds[i % seeds.len()].as_bytes());
        if let Ok(s) = String::from_utf8(raw) {
            parsed += usize::from(pushgateway::grouping_key(&s).is_ok());
        }
    }
    floor("grouping keys", parsed, FLOOR_KEYS);
}

/// ICOS payloads: mutated JSON that still parses goes through validation and the registry, which
/// must refuse or apply it, and stay consistent (its exposition encodes).
#[test]
fn mutated_icos_payloads_are_applied_or_refused() {
    let seeds: &[&str] = &[
        r#"{"metric_type": 1, "metric_name": "runs_total", "value": 2, "labels": {"node": "n1"}}"#,
        r#"{"metric_type": 2, "metric_name": "cpu", "metric_info": "CPU", "value": "0.5", "labels": {"n": 1.0}}"#,
        r#"{"metric_type": 3, "metric_name": "build", "value": {"version": "1.2", "rev": 3}}"#,
        r#"{"metric_type": 4, "metric_name": "state", "value": "up", "states": ["up", "down"]}"#,
    ];
    let mut rng = Rng(0x5555_AAAA_1234_4321);
    let mut registry = Registry::default();
    let limits = Limits::default();
    let mut applied = 0;
    for i in 0..50_000 {
        let body = mutate(&mut rng, seeds[i % seeds.len()].as_bytes());
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        if let Ok(req) = model::parse_create(&json)
            && registry.create(&req, 1.7e9, &limits).is_ok()
        {
            applied += 1;
        }
        let _ = model::parse_unregister(&json);
    }
    floor("ICOS payloads", applied, FLOOR_ICOS);
    let snapshot = std::sync::Arc::new(registry.snapshot());
    let mut names = std::collections::HashSet::new();
    for f in &snapshot.families {
        f.validate().unwrap();
        assert!(names.insert(f.name.clone()), "{} twice", f.name);
    }
    let text = tidegauge_core::encode::encode_text(std::slice::from_ref(&snapshot));
    assert!(text.contains("# TYPE"), "{text}");
}
