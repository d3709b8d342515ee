//! Invariants of the workspace's shape, checked on every test run (as rust-analyzer's tidy
//! tests do): the host crates name no collector, collectors do not depend on each other, the
//! binary reaches each collector through exactly one factory line, and tests reach only loopback.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// Crates under `crates/` that are not collectors.
const HOST_CRATES: [&str; 4] = ["core", "remote-write", "server", "testkit"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn collectors() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !HOST_CRATES.contains(&n.as_str()))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no collector crates found");
    out
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The collector's name as it can appear in text: `app-status`, `app_status`, `app status`.
fn spellings(name: &str) -> Vec<String> {
    vec![
        name.to_owned(),
        name.replace('-', "_"),
        name.replace('-', " "),
    ]
}

#[test]
fn core_and_server_name_no_collector() {
    let mut offences = Vec::new();
    for host in ["core", "server"] {
        let mut all = Vec::new();
        files(&root().join("crates").join(host), &mut all);
        for f in all {
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let text = text.to_ascii_lowercase();
            for c in collectors() {
                for s in spellings(&c) {
                    if text.contains(&s) {
                        offences.push(format!("{} names {s:?}", f.display()));
                    }
                }
            }
        }
    }
    assert!(offences.is_empty(), "{offences:#?}");
}

#[test]
fn no_collector_depends_on_another() {
    for c in collectors() {
        let manifest: toml::Table =
            std::fs::read_to_string(root().join("crates").join(&c).join("Cargo.toml"))
                .unwrap()
                .parse()
                .unwrap();
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(toml::Value::as_table) else {
                continue;
            };
            for other in collectors().iter().filter(|o| **o != c) {
                assert!(
                    !deps.contains_key(&format!("tidegauge-{other}")),
                    "crates/{c} depends on tidegauge-{other} ({section})"
                );
            }
        }
    }
}

/// Source outside `#[cfg(test)]` modules.
fn non_test(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

#[test]
fn bin_reaches_each_collector_through_one_factory_line() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("bin/Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let features = manifest["features"].as_table().unwrap();
    let mut sources = Vec::new();
    files(&root().join("bin/src"), &mut sources);
    for c in collectors() {
        let krate = format!("tidegauge_{}", c.replace('-', "_"));
        assert_eq!(
            features
                .get(&c)
                .and_then(toml::Value::as_array)
                .map(Vec::len),
            Some(1),
            "bin/Cargo.toml needs a feature {c} = [\"dep:tidegauge-{c}\"]"
        );
        let mut lines = Vec::new();
        for f in &sources {
            let text = std::fs::read_to_string(f).unwrap();
            for line in non_test(&text).lines().filter(|l| l.contains(&krate)) {
                lines.push(format!("{}: {}", f.display(), line.trim()));
            }
        }
        assert_eq!(
            lines,
            vec![format!(
                "{}: Box::new({krate}::Factory),",
                root().join("bin/src/factories.rs").display()
            )],
            "bin/ must name {krate} in exactly one factory line and nowhere else"
        );
    }
}

/// Tests reach only loopback: their HTTP clients come from `tidegauge_testkit::http_client()`,
/// whose resolver knows only `localhost`, never from the production client, which would send a
/// DNS query for any name a test (or a redirect) gives it.
#[test]
fn tests_use_the_loopback_client() {
    let mut all = Vec::new();
    for dir in ["crates", "bin"] {
        files(&root().join(dir), &mut all);
    }
    let offenders: Vec<String> = all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter(|p| p.components().any(|c| c.as_os_str() == "tests"))
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("http::client()")
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "tests must use tidegauge_testkit::http_client(): {offenders:?}"
    );
}
