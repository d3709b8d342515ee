//! The Dockerfile checked without an image registry (none is reachable from CI): its shape
//! (a build stage, a slim final stage, a numeric non-root user, the binary as entry point), its
//! build-stage commands run as plain commands, and the installed binary started as that user
//! and scraped. The final stage's `apt-get` and `useradd` are not run: they would change this
//! machine.

use std::process::{Command, Stdio};

use crate::bench::{Host, free_port};

/// One stage: its base image, name, and instructions (continuation lines joined).
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

fn parse(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if pending.is_empty() && (line.trim_start().starts_with('#') || line.trim().is_empty()) {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let (op, rest) = full.trim().split_once(' ').unwrap_or((full.trim(), ""));
        let rest = rest.trim().to_owned();
        if op.eq_ignore_ascii_case("FROM") {
            let mut words = rest.split_whitespace();
            let base = words.next().unwrap_or_default().to_owned();
            let name = match (words.next(), words.next()) {
                (Some(kw), Some(n)) if kw.eq_ignore_ascii_case("AS") => Some(n.to_owned()),
                _ => None,
            };
            stages.push(Stage {
                base,
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((op.to_ascii_uppercase(), rest));
        }
    }
    stages
}

pub fn check() -> Result<(), String> {
    let root = crate::root();
    let text = std::fs::read_to_string(root.join("Dockerfile")).map_err(|e| e.to_string())?;
    let stages = parse(&text);
    let [build, .., run] = stages.as_slice() else {
        return Err("the Dockerfile must have a build stage and a final stage".into());
    };
    if build.name.as_deref() != Some("build") {
        return Err("the Dockerfile's first stage must be named `build`".into());
    }
    if !run.base.ends_with("-slim") && !run.base.contains("distroless") {
        return Err(format!(
            "the final stage's base {} is not a slim image",
            run.base
        ));
    }
    let last = |op: &str| {
        run.instructions
            .iter()
            .rev()
            .find(|(o, _)| o == op)
            .map(|(_, r)| r.clone())
    };
    let user = last("USER").ok_or("the final stage sets no USER: it would run as root")?;
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .filter(|u| *u != 0)
        .ok_or(format!("USER {user}: expected a numeric, non-root user"))?;
    let entry = last("ENTRYPOINT").unwrap_or_default();
    if entry != "[\"/usr/local/bin/tidegauge\"]" {
        return Err(format!(
            "ENTRYPOINT {entry}: expected [\"/usr/local/bin/tidegauge\"]"
        ));
    }
    if !run
        .instructions
        .iter()
        .any(|(o, r)| o == "COPY" && r == "--from=build /out/ /")
    {
        return Err("the final stage must copy the build stage's /out/ to /".into());
    }
    // The build stage's commands, as plain commands in the repository (its WORKDIR after
    // `COPY . .`), installing into a directory of ours instead of /out.
    let out = root.join("target/docker-out");
    let _ = std::fs::remove_dir_all(&out);
    for (op, cmd) in &build.instructions {
        if op == "RUN" {
            let cmd = cmd.replace("/out/", &format!("{}/", out.display()));
            crate::run(Command::new("sh").args(["-c", &cmd]))?;
        }
    }
    let bin = out.join("usr/local/bin/tidegauge");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&bin)
            .map_err(|e| format!("{}: {e}", bin.display()))?
            .permissions(),
    );
    if mode & 0o7777 != 0o755 {
        return Err(format!(
            "{} has mode {:o}, expected 755",
            bin.display(),
            mode & 0o7777
        ));
    }
    // Started as the image's user in a working directory of its own, as the image runs it.
    let work = root.join("target/docker-home");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let as_root = effective_uid() == 0;
    if as_root {
        std::os::unix::fs::chown(&work, Some(uid), Some(uid)).map_err(|e| e.to_string())?;
    }
    let port = free_port()?;
    let mut cmd = if as_root {
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let child = cmd
        .args(["--web.listen-address", &format!("127.0.0.1:{port}")])
        .current_dir(&work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let host = Host(child);
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let body = rt.block_on(async {
        let http = tidegauge_core::http::client().map_err(|e| e.to_string())?;
        for _ in 0..100 {
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                && r.status().is_success()
            {
                return r.text().await.map_err(|e| e.to_string());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(format!(
            "the installed binary, run as uid {uid}, did not serve /metrics"
        ))
    })?;
    drop(host);
    if !body.contains("tidegauge_build_info") {
        return Err(format!(
            "the installed binary served an unexpected /metrics:\n{body}"
        ));
    }
    eprintln!(
        "xtask: Dockerfile: build-stage commands ran, the installed binary served /metrics as uid {uid}{} (final-stage apt-get and useradd not run)",
        if as_root {
            ""
        } else {
            " (as this user: not root, so no switch)"
        }
    );
    Ok(())
}

/// This process's effective uid, read from /proc (no libc call needed).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(u32::MAX)
}
