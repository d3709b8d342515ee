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
serde.workspace = true
serde_json.workspace = true
reqwest.workspace = true
thiserror.workspace = true

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
        &format!(
            r#"//! The `{name}` collector: reads a JSON document `{{"value": <number>}}` from `url` at scrape
//! time and exposes it as `{ident}_value`. Replace the fetch and the mapping with your own.

use std::time::Duration;

use serde::Deserialize;
use tidegauge_core::http::read_body_limited;
use tidegauge_core::{{CollectError, Collector, MetricFamily, ScrapeContext, Snapshot, async_trait}};

/// The collector's name in configuration, flags and filters.
pub const NAME: &str = "{name}";

/// Configuration (`[collectors.{name}]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {{
    /// Where to read the value.
    pub url: String,
}}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{{0}}")]
pub struct ConfigError(pub String);

/// The collector.
#[derive(Debug)]
pub struct {title} {{
    url: reqwest::Url,
}}

impl {title} {{
    /// Validates the configuration.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {{
        let url = reqwest::Url::parse(&config.url).map_err(|e| ConfigError(format!("url {{:?}}: {{e}}", config.url)))?;
        Ok(Self {{ url }})
    }}
}}

#[derive(Deserialize)]
struct Document {{
    value: f64,
}}

#[async_trait]
impl Collector for {title} {{
    fn name(&self) -> &str {{
        NAME
    }}

    async fn collect(&self, ctx: &ScrapeContext) -> Result<Snapshot, CollectError> {{
        let up = MetricFamily::gauge("{ident}_up", "Whether the last fetch succeeded.");
        let mut snap = Snapshot::new();
        let fetched = async {{
            let resp = ctx
                .http()
                .get(self.url.clone())
                .timeout(ctx.upstream_budget().min(Duration::from_secs(10)))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .error_for_status()
                .map_err(|e| e.to_string())?;
            let body = read_body_limited(resp, 1024 * 1024).await.map_err(|e| e.to_string())?;
            serde_json::from_slice::<Document>(&body).map_err(|e| e.to_string())
        }}
        .await;
        match fetched {{
            Ok(doc) => {{
                snap.push(MetricFamily::gauge("{ident}_value", "The value read from the upstream.").with(vec![], doc.value));
                snap.push(up.with(vec![], 1.0));
            }}
            Err(_) => {{
                snap.push(up.with(vec![], 0.0));
            }}
        }}
        Ok(snap)
    }}
}}
"#
        ),
    )?;

    write_new(
        &root.join("fixtures").join(name).join("value.json"),
        "{\"value\": 42.5}\n",
    )?;

    write_new(
        &dir.join("tests/fixtures.rs"),
        &format!(
            r#"//! `{name}` against a fixture served by wiremock.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tidegauge_core::Collector;
use tidegauge_testkit::{{FIXTURE_EPOCH, FakeClock, context, fixture, render}};
use {krate_ident}::{{Config, {title}}};
use wiremock::matchers::path;
use wiremock::{{Mock, MockServer, ResponseTemplate}};

#[tokio::test]
async fn reads_the_value() {{
    let server = MockServer::start().await;
    Mock::given(path("/value"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(fixture("{name}/value.json"), "application/json"))
        .mount(&server)
        .await;
    let c = {title}::new(&Config {{ url: format!("{{}}/value", server.uri()) }}).unwrap();
    let ctx = context(Duration::from_secs(5), FakeClock::at(FIXTURE_EPOCH));
    let out = render(&c.collect(&ctx).await.unwrap());
    assert!(out.contains("{ident}_value 42.5"), "{{out}}");
    assert!(out.contains("{ident}_up 1"), "{{out}}");
}}
"#
        ),
    )?;

    // Wire it into the binary behind a feature of its own.
    let bin_toml = root.join("bin/Cargo.toml");
    insert_before(
        &bin_toml,
        "# new-collector: features",
        &format!("{name} = [\"dep:{krate}\"]\n"),
    )?;
    insert_before(
        &bin_toml,
        "# new-collector: dependencies",
        &format!("{krate} = {{ path = \"../crates/{name}\", optional = true }}\n"),
    )?;
    insert_before(
        &root.join("bin/src/config.rs"),
        "// new-collector: compiled",
        &format!("        \"{name}\" => cfg!(feature = \"{name}\"),\n"),
    )?;
    insert_before(
        &root.join("bin/src/collectors.rs"),
        "// new-collector: construction",
        &format!(
            "        #[cfg(feature = \"{name}\")]\n        {krate_ident}::NAME => {{\n            let cfg: {krate_ident}::Config = crate::config::deserialize(name, own)?;\n            let c = {krate_ident}::{title}::new(&cfg).map_err(|e| ConfigError(format!(\"collectors.{{name}}: {{e}}\")))?;\n            Ok(Arc::new(c))\n        }}\n"
        ),
    )?;
    let config_rs = root.join("bin/src/config.rs");
    let src = std::fs::read_to_string(&config_rs).map_err(|e| e.to_string())?;
    if !src.contains(&format!("\"{name}\",")) && !src.contains(&format!("\"{name}\"]")) {
        insert_before(
            &config_rs,
            "// new-collector: known",
            &format!("    \"{name}\",\n"),
        )?;
    }
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
    run(&[
        "test",
        "-q",
        "-p",
        "tidegauge-scaffold-probe",
        "--test",
        "fixtures",
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
