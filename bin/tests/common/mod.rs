//! Helpers shared by the tests that run the built binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_tidegauge");

pub struct Host {
    pub child: Child,
    pub addr: String,
    pub logs: mpsc::Receiver<String>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    /// Starts the binary and waits for its "listening" log line.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Host {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("EXPORTER_PORT")
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Owned by `Host` from here on, so it is killed and reaped whatever happens.
        let mut host = Host {
            child,
            addr: String::new(),
            logs: rx,
        };
        let re = regex::Regex::new(r"address=(\S+).*listening|listening.*address=(\S+)").unwrap();
        loop {
            let line = host
                .logs
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no 'listening' line from tidegauge: {e}"));
            if let Some(c) = re.captures(&line) {
                host.addr = c.get(1).or(c.get(2)).unwrap().as_str().to_owned();
                return host;
            }
        }
    }

    /// Starts the binary with a configuration file on an ephemeral loopback port.
    pub fn with_config(cfg: &Path) -> Host {
        Host::start(
            &[
                "--config",
                cfg.to_str().unwrap(),
                "--web.listen-address",
                "127.0.0.1:0",
            ],
            &[],
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn wait_for_log(&self, needle: &str) -> String {
        loop {
            let line = self
                .logs
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("no log line containing {needle:?}: {e}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tidegauge-e2e-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn client() -> reqwest::Client {
    tidegauge_testkit::http_client()
}

pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// The body of `url` asked for as OpenMetrics, as Prometheus asks.
pub async fn get_openmetrics(http: &reqwest::Client, url: &str) -> String {
    http.get(url)
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Runs `program` with `args`, `input` on its standard input; what it printed and its status.
pub fn run_with_stdin(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&str],
    input: &str,
) -> std::process::Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn promtool_check(exposition: &str) {
    let promtool = which("promtool").unwrap_or_else(|| {
        panic!("promtool not found: run scripts/install-test-deps.sh (or `cargo xtask test`, which runs it)")
    });
    let out = run_with_stdin(promtool, &["check", "metrics"], exposition);
    assert!(
        out.status.success(),
        "promtool rejected the exposition:\n{}{}\n---\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python client's strict OpenMetrics parser reads `om` whole (it refuses a family named
/// twice, a counter sample without `_total`, or a family named like another's samples).
pub fn strict_openmetrics_check(om: &str) {
    let out = run_with_stdin(
        "python3",
        &[
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nprint(len(list(p(sys.stdin.read()))))",
        ],
        om,
    );
    assert!(
        out.status.success(),
        "OpenMetrics parser: {}\n{om}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}

pub fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A configuration running only icos-push, with its store under `dir`.
pub fn push_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("tidegauge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[collectors.app-status]\nenabled = false\n[collectors.icos-push]\ndata_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    cfg
}
