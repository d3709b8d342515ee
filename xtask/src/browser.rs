//! The landing page in a real browser: headless Chromium (Debian's `chromium`) renders `/` of
//! the e2e host, takes a screenshot, and the rendered text is checked: failures first, times
//! relative, every collector's status there, no JavaScript.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(60);

/// Runs headless Chromium with `args` on `url`, killed if it takes longer than [`PATIENCE`].
fn chromium(dir: &Path, args: &[&str], url: &str) -> Result<Output, String> {
    let mut child = Command::new("chromium")
        // Root in CI: Chromium's sandbox needs an unprivileged user.
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .args(args)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("chromium: {e}"))?;
    let started = Instant::now();
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            return Err(format!("chromium did not finish within {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "chromium {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// The text a reader sees: the DOM without tags, whitespace collapsed.
fn text_of(dom: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    let mut in_style = false;
    let mut rest = dom;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("<style") {
            in_style = true;
        } else if rest.starts_with("</style>") {
            in_style = false;
        }
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag && !in_style => out.push(c),
            _ => {}
        }
        rest = &rest[c.len_utf8()..];
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks `/` of the host at `base` as Chromium renders it; `expected` are texts that must
/// appear, `before` pairs whose first must come before the second.
pub fn check(
    dir: &Path,
    base: &str,
    expected: &[&str],
    before: &[(&str, &str)],
) -> Result<Vec<String>, String> {
    let url = format!("{base}/");
    let shot = dir.join("landing.png");
    chromium(
        dir,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,2400",
        ],
        &url,
    )?;
    let png = std::fs::read(&shot).map_err(|e| format!("{}: {e}", shot.display()))?;
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") || png.len() < 10_000 {
        return Err(format!(
            "{}: not a screenshot of the page ({} bytes)",
            shot.display(),
            png.len()
        ));
    }
    let dom = String::from_utf8_lossy(&chromium(dir, &["--dump-dom"], &url)?.stdout).into_owned();
    if dom.to_ascii_lowercase().contains("<script") {
        return Err("the landing page carries a script".into());
    }
    let text = text_of(&dom);
    std::fs::write(dir.join("landing.txt"), &text).map_err(|e| e.to_string())?;
    for e in expected {
        if !text.contains(e) {
            return Err(format!(
                "the landing page, as Chromium renders it, lacks {e:?}: {text}"
            ));
        }
    }
    for (a, b) in before {
        match (text.find(a), text.find(b)) {
            (Some(x), Some(y)) if x < y => {}
            _ => {
                return Err(format!(
                    "the landing page shows {a:?} after {b:?} (or lacks one): {text}"
                ));
            }
        }
    }
    Ok(vec![format!(
        "ok   landing page in headless Chromium: {} checks, screenshot {} ({} KiB)",
        expected.len() + before.len(),
        shot.display(),
        png.len() / 1024
    )])
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_of_drops_tags_and_styles() {
        let dom =
            "<html><style>td{x}</style><body><p>a &lt;b&gt;</p><td>1 s ago</td></body></html>";
        assert_eq!(super::text_of(dom), "a <b> 1 s ago");
    }
}
