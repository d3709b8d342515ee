//! Repository chores: `cargo xtask test | e2e | demo | bench | soak | new-collector NAME`.

mod bench;
mod browser;
mod demo;
mod docker;
mod e2e;
mod models;
mod remote_write;
mod scaffold;
mod sensors;
mod soak;
mod table;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo xtask <command>\n\n\
         commands:\n  \
         test                 install test tools when missing (promtool), then run every test and the e2e run\n  \
         e2e                  the host under a real Prometheus with every collector's sample upstreams\n  \
         docker               the Dockerfile's build commands run plainly, the binary started as its user\n  \
         demo                 start sample upstreams (status app, IFCB dashboard, sensor boards, sysfs) and the host\n  \
         bench [WHAT]         criterion and end-to-end benchmarks (release build); WHAT: encode, models, host, ifcb, push, sensors\n  \
         soak                 100,000 scrapes and pushes with probes and reloads: memory, files, no lost push\n  \
         new-collector NAME   scaffold a collector crate wired behind a feature in bin/"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo::run(),
        Some("docker") => docker::check(),
        Some("e2e") => e2e::run(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())),
        Some("bench") => bench::run(&args[1..]),
        Some("soak") => soak::run(),
        Some("new-collector") => match args.get(1) {
            Some(name) => scaffold::new_collector(&root(), name),
            None => return usage(),
        },
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command in the workspace root, failing on a non-zero exit. The variables `cargo run`
/// set for xtask itself are left out: ring's and rustls's build scripts rerun when
/// `CARGO_MANIFEST_DIR` changes, so a build started here would otherwise redo (and undo) the
/// README's `cargo run --release -p tidegauge`, about four minutes on two cores each way.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        ) || key.starts_with("CARGO_PKG_")
        {
            cmd.env_remove(key);
        }
    }
    eprintln!("xtask: running {shown}");
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("{shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed with {status}"))
    }
}

/// Installs the Debian packages of `tools` that are not on the PATH (see
/// `scripts/install-test-deps.sh`).
pub fn ensure_tools(tools: &[&str]) -> Result<(), String> {
    if tools.iter().all(|t| has(t)) {
        return Ok(());
    }
    run(Command::new("bash")
        .arg(root().join("scripts/install-test-deps.sh"))
        .args(tools))
}

/// Whether `tool` is on the PATH.
pub fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn test(extra: &[String]) -> Result<(), String> {
    run(Command::new("bash").arg(root().join("scripts/install-test-deps.sh")))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The smallest build must keep compiling, and the collector template must keep working.
    run(Command::new(&cargo).args([
        "check",
        "-p",
        "tidegauge",
        "--no-default-features",
        "--features",
        "app-status",
    ]))?;
    scaffold::check(&cargo)?;
    e2e::run(&cargo)?;
    docker::check()?;
    // The test run goes last, so its summary closes the output.
    let nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nextest {
        run(Command::new(&cargo)
            .args([
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--no-fail-fast",
            ])
            .args(extra))
    } else {
        run(Command::new(&cargo)
            .args(["test", "--workspace", "--all-features", "--no-fail-fast"])
            .args(extra))
    }
}
