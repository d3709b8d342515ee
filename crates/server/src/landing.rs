//! The landing page (`/`): what is wrong first. Each collector's last scrape and the status it
//! supplies ([`tidegauge_core::Collector::status`]), rendered with relative times and the
//! failing items on top, as plain HTML (no JavaScript).

use std::fmt::Write as _;

use tidegauge_core::status::{Cell, Health, Row, Section, Status, clip};

/// Rows a section shows at most (worst first), and characters a cell shows at most: a
/// dashboard listing thousands of datasets or an upstream's megabyte error message must not
/// make a page of megabytes.
const MAX_ROWS: usize = 200;
const MAX_CELL: usize = 300;

use crate::engine::{CollectorStatus, Engine};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A collector's overall health: its last scrape, then the worst of its items.
fn health(c: &CollectorStatus) -> Health {
    let scrape = match c.last_success {
        None => Health::Unknown,
        Some(true) => Health::Ok,
        Some(false) => Health::Failing,
    };
    scrape.min(c.detail.worst())
}

fn badge(h: Health) -> String {
    format!("<span class=\"badge {0}\">{0}</span>", h.word())
}

/// Rows worst first, in the collector's order otherwise.
fn sorted(rows: &[Row]) -> Vec<&Row> {
    let mut v: Vec<&Row> = rows.iter().collect();
    v.sort_by_key(|r| r.health);
    v
}

fn section(out: &mut String, s: &Section) {
    let _ = write!(
        out,
        "<h3>{}</h3>\n<table>\n<tr><th>state</th>",
        esc(&s.title)
    );
    for c in &s.columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr>\n");
    if s.rows.is_empty() {
        let _ = writeln!(
            out,
            "<tr><td colspan=\"{}\">none</td></tr>",
            s.columns.len() + 1
        );
    }
    let rows = sorted(&s.rows);
    for r in rows.iter().take(MAX_ROWS) {
        let _ = write!(
            out,
            "<tr class=\"{}\"><td>{}</td>",
            r.health.word(),
            badge(r.health)
        );
        for c in &r.cells {
            let class = match c {
                Cell::Text(_) => "",
                _ => " class=\"time\"",
            };
            let _ = write!(
                out,
                "<td{class}>{}</td>",
                esc(&clip(&c.to_string(), MAX_CELL))
            );
        }
        out.push_str("</tr>\n");
    }
    if rows.len() > MAX_ROWS {
        let _ = writeln!(
            out,
            "<tr><td colspan=\"{}\">and {} more</td></tr>",
            s.columns.len() + 1,
            rows.len() - MAX_ROWS
        );
    }
    out.push_str("</table>\n");
}

fn problems(status: &Status) -> (usize, usize) {
    let rows = status.sections.iter().flat_map(|s| &s.rows);
    let failing = rows.clone().filter(|r| r.health == Health::Failing).count();
    let warning = rows.filter(|r| r.health == Health::Warning).count();
    (failing, warning)
}

/// The page for the engine serving now.
pub(crate) fn render(engine: &Engine, telemetry_path: &str, probe_modules: &[String]) -> String {
    let now = engine.now();
    let path = esc(telemetry_path);
    let mut collectors = engine.status();
    // Worst first, a failed scrape before failing items, then by name (the engine's order).
    collectors.sort_by_key(|c| (health(c), c.last_success != Some(false)));
    let host = engine.host_status();

    let mut summary = Vec::new();
    for c in &collectors {
        let (failing, warning) = problems(&c.detail);
        let mut what = Vec::new();
        if c.last_success == Some(false) {
            what.push("last scrape failed".to_owned());
        }
        if failing > 0 {
            what.push(format!("{failing} failing"));
        }
        if warning > 0 {
            what.push(format!("{warning} warning"));
        }
        if !what.is_empty() {
            summary.push(format!(
                "<a href=\"#c-{0}\">{0}</a>: {1}",
                esc(&c.name),
                what.join(", ")
            ));
        }
    }
    let (hf, hw) = problems(&host);
    if hf + hw > 0 {
        summary.push(format!(
            "<a href=\"#host\">host</a>: {}",
            [(hf, "failing"), (hw, "warning")]
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, w)| format!("{n} {w}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let worst = collectors
        .iter()
        .map(health)
        .chain([host.worst()])
        .min()
        .unwrap_or(Health::Ok);
    let summary = if summary.is_empty() {
        format!(
            "<p class=\"summary ok\">All {} collectors are working.</p>",
            collectors.len()
        )
    } else {
        format!(
            "<p class=\"summary {}\">Needs attention: {}.</p>",
            worst.word(),
            summary.join("; ")
        )
    };

    let mut rows = String::new();
    for c in &collectors {
        let h = health(c);
        let result = match c.last_success {
            None => "not scraped yet".to_owned(),
            Some(true) => "ok".to_owned(),
            Some(false) => format!(
                "failed: {}",
                esc(&clip(c.last_error.as_deref().unwrap_or(""), MAX_CELL))
            ),
        };
        let last_ok = Cell::Ago(
            c.last_success_time
                .map(|t| now.duration_since(t).unwrap_or_default()),
        );
        let dur = c
            .last_duration
            .map(|d| format!("{:.3} s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        let name = esc(&c.name);
        let _ = writeln!(
            rows,
            "<tr class=\"{}\"><td>{}</td><td><a href=\"{path}?collect[]={name}\">{name}</a></td><td>{result}</td><td class=\"time\">{last_ok}</td><td>{dur}</td></tr>",
            h.word(),
            badge(h),
        );
    }

    // Each collector's own sections, then the host's, worst first.
    let mut parts: Vec<(Health, String)> = Vec::new();
    for c in collectors.iter().filter(|c| !c.detail.sections.is_empty()) {
        let mut html = format!(
            "<section id=\"c-{0}\"><h2>{0} {1}</h2>\n",
            esc(&c.name),
            badge(health(c))
        );
        let mut sections: Vec<&Section> = c.detail.sections.iter().collect();
        sections.sort_by_key(|s| s.worst());
        for s in sections {
            section(&mut html, s);
        }
        html.push_str("</section>\n");
        parts.push((health(c), html));
    }
    if !host.sections.is_empty() {
        let mut html = format!(
            "<section id=\"host\"><h2>host {}</h2>\n",
            badge(host.worst())
        );
        for s in &host.sections {
            section(&mut html, s);
        }
        html.push_str("</section>\n");
        parts.push((host.worst(), html));
    }
    parts.sort_by_key(|(h, _)| *h);
    let details: String = parts.into_iter().map(|(_, html)| html).collect();

    let probe_form = if probe_modules.is_empty() {
        String::new()
    } else {
        let options: String = probe_modules
            .iter()
            .map(|m| format!("<option>{}</option>", esc(m)))
            .collect();
        format!(
            "<h2>Probe</h2><form action=\"/probe\"><label>Target <input name=\"target\" placeholder=\"http://app:8000/status\"></label> <label>Module <select name=\"module\">{options}</select></label> <input type=\"submit\" value=\"Probe\"></form>"
        )
    };
    let generated = humantime::format_rfc3339_seconds(now);
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tidegauge</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;margin:0;color:#222}}
header{{background:#e6522c;color:#fff;padding:0.5em 1em}}header h1{{margin:0;font-size:1.4em}}
main{{padding:0 1em 1em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{padding:0.25em 0.8em;text-align:left;border-bottom:1px solid #ddd}}th{{background:#f4f4f4}}
td.time{{white-space:nowrap}}
.badge{{display:inline-block;min-width:4.5em;text-align:center;border-radius:0.3em;padding:0 0.3em;font-size:0.85em;color:#fff}}
.badge.ok{{background:#2e7d32}}.badge.warning{{background:#b26a00}}.badge.failing{{background:#c62828}}.badge.unknown{{background:#757575}}
tr.failing td{{background:#fdecea}}tr.warning td{{background:#fff4e5}}
.summary{{padding:0.6em 1em;border-radius:0.3em;font-weight:bold}}
.summary.ok{{background:#e8f5e9}}.summary.warning{{background:#fff4e5}}.summary.failing{{background:#fdecea}}.summary.unknown{{background:#f4f4f4}}
</style></head>
<body><header><h1>tidegauge</h1></header><main>
{summary}
<p><a href="{path}">Metrics</a> · <a href="/-/healthy">Health</a> · <a href="/-/ready">Readiness</a> · version {version} · page generated {generated}</p>
<h2>Collectors</h2>
<table>
<tr><th>state</th><th>collector</th><th>last scrape</th><th>last success</th><th>duration</th></tr>
{rows}</table>
{details}{probe_form}
</main></body></html>
"#,
        version = env!("CARGO_PKG_VERSION"),
    )
}
