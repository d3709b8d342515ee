//! The operations kit in `ops/`: alert rules pass `promtool check rules` and their unit tests,
//! the systemd unit passes `systemd-analyze verify` with its hardening in place, and the Grafana
//! dashboard covers what operators watch (its PromQL is run against a real Prometheus by
//! `cargo xtask e2e`).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn ops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ops")
}

fn tool(name: &str) -> PathBuf {
    ["/usr/bin", "/usr/local/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found: run scripts/install-test-deps.sh (or `cargo xtask test`)")
        })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = tool("promtool");
    let checked = run(Command::new(&promtool)
        .args(["check", "rules", "alerts.yml"])
        .current_dir(ops()));
    let rules = std::fs::read_to_string(ops().join("alerts.yml")).unwrap();
    let count = rules.matches("- alert: ").count();
    assert!(
        checked.contains(&format!("SUCCESS: {count} rules found")),
        "{checked}"
    );
    let tested = run(Command::new(&promtool)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(ops()));
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test.
    let tests = std::fs::read_to_string(ops().join("alerts.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "{alert} has no unit test"
        );
    }
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let unit = std::fs::read_to_string(ops().join("tidegauge.service")).unwrap();
    for setting in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "StateDirectory=tidegauge",
        "RestartPreventExitStatus=2",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        eprintln!(
            "systemd-analyze is not installed: the unit's settings were checked, not verified"
        );
        return;
    };
    // `verify` needs the binary to exist: the test's own executable stands in for it.
    let exe = std::env::current_exe().unwrap();
    let dir = std::env::temp_dir().join(format!("tidegauge-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("tidegauge.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/tidegauge", &exe.display().to_string()),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && !text.contains("tidegauge.service:"),
        "systemd-analyze verify:\n{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_dashboard_covers_what_operators_watch() {
    let text = std::fs::read_to_string(ops().join("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    for needed in [
        "ifcb_latest_bin_timestamp",
        "ifcb_is_dataset_up_to_date",
        "sensor_temperature_celsius",
        "sensor_board_up",
        "tidegauge_scrape_collector_success",
        "tidegauge_icos_push_store_committed_requests_total",
        "tidegauge_icos_push_model_errors_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needed)),
            "no panel reads {needed}"
        );
    }
    assert!(
        panels
            .iter()
            .all(|p| p["datasource"]["uid"] == "${datasource}")
    );
}
