//! `cargo xtask new-collector NAME`: a compiling collector crate wired behind a feature.

use std::path::Path;

fn write_new(path: &Path, text: &str) -> Result<(), String> {
    if path.exists() {
        return Err(format!("{} already exists", path.display()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn insert_before(path: &Path, marker: &str, text: &str) -> Result<(), String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let at = src
        .find(marker)
        .ok_or_else(|| format!("{}: marker {marker:?} not found", path.display()))?;
    let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let mut out = String::with_capacity(src.len() + text.len());
    out.push_str(&src[..line_start]);
    out.push_str(text);
    out.push_str(&src[line_start..]);
    std::fs::write(path, out).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn new_collector(root: &Path, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-');
    if !valid {
        return Err(format!(
            "collector name {name:?}: use lowercase letters, digits and '-', starting with a letter"
        ));
    }
    let ident = name.replace('-', "_");
    let krate = format!("tidegauge-{name}");
    let krate_ident = format!("tidegauge_{ident}");
    let dir = root.join("crates").join(name);
    let title: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();

    write_new(
        &dir.join("Cargo.toml"),
        &format!(
            r#"[package]
name = "{krate}"
description = "tidegauge collector: {name}."
version.workspace = true
edition.workspace = true
license.workspace = true
publish.workspace = true

[dependencies]
tidegauge-core.workspace = true
reqwest.workspace = true
serde.workspace = true
serde_json.workspace = true

[dev-dependencies]
tidegauge-testkit.workspace = true
insta.workspace = true
tokio.workspace = true
wiremock.workspace = true

[lints]
workspace = true
"#
        ),
    )?;

    write_new(
        &dir.join("src/lib.rs"),
        &LIB_RS
            .replace("{name}", name)
            .replace("{ident}", &ident)
            .replace("{Title}", &title),
    )?;
    write_new(
        &root.join("fixtures").join(name).join("value.json"),
        "{\"value\": 42.5}\n",
    )?;
    write_new(
        &dir.join("tests/fixtures.rs"),
        &TEST_RS
            .replace("{name}", name)
            .replace("{krate_ident}", &krate_ident)
            .replace("{Title}", &title),
    )?;
    write_new(
        &dir.join("tests/snapshots/fixtures__reads_the_value.snap"),
        &SNAPSHOT.replace("{name}", name).replace("{ident}", &ident),
    )?;

    // The template is written fmt-clean; long names can still move line breaks.
    let _ = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .arg(dir.join("src/lib.rs"))
        .arg(dir.join("tests/fixtures.rs"))
        .status();

    // Wire it into the binary: a workspace dependency, a feature, one factory line.
    insert_before(
        &root.join("Cargo.toml"),
        "# new-collector: workspace",
        &format!("{krate} = {{ path = \"crates/{name}\" }}\n"),
    )?;
    let bin_toml = root.join("bin/Cargo.toml");
    insert_before(
        &bin_toml,
        "# new-collector: features",
        &format!("{name} = [\"dep:{krate}\"]\n"),
    )?;
    insert_before(
        &bin_toml,
        "# new-collector: dependencies",
        &format!("{krate} = {{ workspace = true, optional = true }}\n"),
    )?;
    insert_before(
        &root.join("bin/src/factories.rs"),
        "// new-collector: factories",
        &format!(
            "        #[cfg(feature = \"{name}\")]\n        Box::new({krate_ident}::Factory),\n"
        ),
    )?;
    println!(
        "created crates/{name} ({krate}), fixtures/{name}/value.json, and the `{name}` feature in bin/"
    );
    println!(
        "next: add it to the `default` feature if it should ship by default, then `cargo xtask test`"
    );
    Ok(())
}

/// Scaffolds a collector in a scratch copy of the tracked tree and proves it compiles, passes its
/// test and is accepted by clippy behind its feature, so the template cannot rot unnoticed.
pub fn check(cargo: &str) -> Result<(), String> {
    use std::process::Command;
    let root = crate::root();
    let scratch = root.join("target/scaffold-check");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    }
    let files = Command::new("git")
        .args(["ls-files", "-co", "--exclude-standard"])
        .current_dir(&root)
        .output()
        .map_err(|e| format!("git ls-files: {e}"))?;
    if !files.status.success() {
        return Err("git ls-files failed".into());
    }
    for rel in String::from_utf8_lossy(&files.stdout).lines() {
        let from = root.join(rel);
        if !from.is_file() {
            continue;
        }
        let to = scratch.join(rel);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::copy(&from, &to).map_err(|e| format!("{}: {e}", from.display()))?;
    }
    new_collector(&scratch, "scaffold-probe")?;
    let target = root.join("target");
    let run = |args: &[&str]| -> Result<(), String> {
        let shown = format!("cargo {}", args.join(" "));
        eprintln!("xtask: scaffold check: {shown}");
        let status = Command::new(cargo)
            .args(args)
            .current_dir(&scratch)
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .map_err(|e| format!("{shown}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("scaffold check: {shown} failed with {status}"))
        }
    };
    // What CI asks of every commit, on the scaffold's output as generated.
    run(&["fmt", "--all", "--", "--check"])?;
    run(&[
        "test",
        "-q",
        "-p",
        "tidegauge-scaffold-probe",
        "--test",
        "fixtures",
    ])?;
    // The host still starts on its defaults with the new collector compiled in.
    run(&[
        "test",
        "-q",
        "-p",
        "tidegauge",
        "--features",
        "scaffold-probe",
        "--bin",
        "tidegauge",
        "defaults_build_every_enabled_collector",
    ])?;
    run(&[
        "clippy",
        "-q",
        "-p",
        "tidegauge",
        "-p",
        "tidegauge-scaffold-probe",
        "--features",
        "scaffold-probe",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    std::fs::remove_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    Ok(())
}

/// The collector's source; `{name}`, `{ident}` and `{Title}` are replaced.
const LIB_RS: &str = r#"//! The `{name}` collector: reads a JSON document `{"value": <number>}` from `url` at scrape
//! time and exposes it as `{ident}_value`. Replace the fetch and the mapping with your own.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tidegauge_core::factory::{BuildError, Table};
use tidegauge_core::http::read_body_limited;
use tidegauge_core::{
    CollectError, Collector, HostServices, MetricFamily, ScrapeContext, Snapshot, async_trait,
};

/// The collector's name in configuration, flags and filters.
pub const NAME: &str = "{name}";

/// Largest upstream body read, in bytes.
const MAX_BODY: usize = 1024 * 1024;

/// The collector owns the names that start with its own (`{ident}_`).
const VALUE: &str = "{ident}_value";
const UP: &str = "{ident}_up";

/// Configuration (`[collectors.{name}]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to read the value.
    pub url: String,
}

/// The collector.
#[derive(Debug)]
pub struct {Title} {
    url: reqwest::Url,
}

impl {Title} {
    /// Validates the configuration, naming the key in errors.
    pub fn new(config: &Config) -> Result<Self, BuildError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|e| BuildError(format!("url {:?}: {e}", config.url)))?;
        Ok(Self { url })
    }
}

/// How the host builds the collector. It has no useful default `url`, so it runs only when
/// `[collectors.{name}]` is configured or `--collector.{name}` is given.
#[derive(Debug, Default, Clone, Copy)]
pub struct Factory;

impl tidegauge_core::Factory for Factory {
    type Config = Config;
    type Collector = {Title};

    fn name(&self) -> &'static str {
        NAME
    }

    fn enabled_by_default(&self, table: Option<&Table>) -> bool {
        table.is_some()
    }

    fn build(
        &self,
        config: Config,
        _services: &HostServices,
        _previous: Option<&Arc<{Title}>>,
    ) -> Result<Arc<{Title}>, BuildError> {
        {Title}::new(&config).map(Arc::new)
    }
}

#[derive(Deserialize)]
struct Document {
    value: f64,
}

#[async_trait]
impl Collector for {Title} {
    fn name(&self) -> &str {
        NAME
    }

    async fn collect(&self, ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        let fetched = async {
            let resp = ctx
                .http()
                .get(self.url.clone())
                .timeout(ctx.upstream_budget().min(Duration::from_secs(10)))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .error_for_status()
                .map_err(|e| e.to_string())?;
            let body = read_body_limited(resp, MAX_BODY)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<Document>(&body).map_err(|e| e.to_string())
        }
        .await;
        let mut snap = Snapshot::new();
        let up = MetricFamily::gauge(UP, "Whether the last fetch succeeded.");
        match fetched {
            Ok(doc) => {
                let value = MetricFamily::gauge(VALUE, "The value read from the upstream.");
                snap.push(value.with(vec![], doc.value));
                snap.push(up.with(vec![], 1.0));
            }
            // A failed fetch is data (`up 0`), not a failed collection; log `_reason` with
            // `tracing` and count it by reason in a real collector.
            Err(_reason) => {
                snap.push(up.with(vec![], 0.0));
            }
        }
        Ok(Arc::new(snap))
    }
}
"#;

/// The collector's test; `{name}`, `{krate_ident}` and `{Title}` are replaced.
const TEST_RS: &str = r#"//! `{name}` against a fixture served by wiremock.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tidegauge_core::Collector;
use tidegauge_testkit::{FIXTURE_EPOCH, FakeClock, context, fixture, render};
use {krate_ident}::{Config, {Title}};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn scrape(response: ResponseTemplate) -> String {
    let server = MockServer::start().await;
    Mock::given(path("/value"))
        .respond_with(response)
        .mount(&server)
        .await;
    let c = {Title}::new(&Config {
        url: format!("{}/value", server.uri()),
    })
    .unwrap();
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    render(&c.collect(&ctx).await.unwrap())
}

#[tokio::test]
async fn reads_the_value() {
    let body = fixture("{name}/value.json");
    insta::assert_snapshot!(
        scrape(ResponseTemplate::new(200).set_body_raw(body, "application/json")).await
    );
}

#[tokio::test]
async fn a_failing_upstream_is_down_without_a_value() {
    let out = scrape(ResponseTemplate::new(500)).await;
    assert!(out.contains("_up 0"), "{out}");
    assert!(!out.contains("_value"), "{out}");
}
"#;

/// The accepted snapshot of `reads_the_value`; `{name}` and `{ident}` are replaced.
const SNAPSHOT: &str = r#"---
source: crates/{name}/tests/fixtures.rs
expression: "scrape(ResponseTemplate::new(200).set_body_raw(body, \"application/json\")).await"
---
# HELP {ident}_value The value read from the upstream.
# TYPE {ident}_value gauge
{ident}_value 42.5
# HELP {ident}_up Whether the last fetch succeeded.
# TYPE {ident}_up gauge
{ident}_up 1.0
# EOF
"#;
