//! The one table `cargo xtask bench` ends with: tidegauge against the peers installed on the
//! machine, measured side by side in the same run, written to `docs/benchmarks.md`.

use std::fmt::Write as _;

/// Which way a ratio is good.
#[derive(Debug, Clone, Copy)]
pub enum Better {
    /// Rates: tidegauge / peer above 1 is better.
    Higher,
    /// Memory, requests, bytes: tidegauge / peer below 1 is better.
    Lower,
}

/// One comparison.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured, and how.
    pub workload: String,
    /// The peer's name.
    pub peer: &'static str,
    /// tidegauge's figure.
    pub tidegauge: f64,
    /// The peer's figure.
    pub other: f64,
    /// Unit of both figures.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
}

impl Row {
    /// A row.
    pub fn new(
        workload: impl Into<String>,
        peer: &'static str,
        (tidegauge, other): (f64, f64),
        unit: &'static str,
        better: Better,
    ) -> Self {
        Self {
            workload: workload.into(),
            peer,
            tidegauge,
            other,
            unit,
            better,
        }
    }
}

fn figure(v: f64, unit: &str) -> String {
    let n = if v >= 100.0 || v.fract() == 0.0 {
        let s = format!("{v:.0}");
        // Thousands separators, as the rest of the docs write figures.
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    format!("{n} {unit}")
}

fn ratio(r: &Row) -> String {
    if r.other > 0.0 {
        let x = r.tidegauge / r.other;
        let word = match (r.better, x >= 1.0) {
            (Better::Higher, true) | (Better::Lower, false) => "better",
            _ => "worse",
        };
        if x < 0.01 {
            format!("{x:.1e} ({word})")
        } else {
            format!("{x:.2} ({word})")
        }
    } else {
        "?".into()
    }
}

/// The machine, as `docs/benchmarks.md` names it.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    format!("{cores} cores ({cpu}), {mem} of memory")
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| workload | peer | tidegauge | peer's figure | tidegauge / peer |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.workload,
            r.peer,
            figure(r.tidegauge, r.unit),
            figure(r.other, r.unit),
            ratio(r)
        );
    }
    out
}

/// Prints the table and writes `docs/benchmarks.md`.
pub fn publish(rows: &[Row]) -> Result<(), String> {
    let table = markdown(rows);
    println!("\n{table}");
    let now = std::time::SystemTime::now();
    let date = humantime_date(now);
    let doc = format!(
        "# Benchmarks\n\n\
         Written by `cargo xtask bench` on {date} on {machine}: the release build of tidegauge\n\
         and each peer installed on the same machine, measured side by side in the same run.\n\
         Rates are `wrk -t2 -c16 -d10s` on loopback; memory is resident (VmRSS) after the load.\n\
         A ratio is tidegauge's figure over the peer's; \"better\" says which way it goes for\n\
         that row (higher for rates, lower for memory, requests and bytes). The individual\n\
         benches print more detail (`cargo xtask bench push`, `ifcb`, `host`, `models`, ...).\n\n\
         {table}",
        machine = machine(),
    );
    let path = crate::root().join("docs/benchmarks.md");
    std::fs::write(&path, doc).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("xtask: wrote {}", path.display());
    Ok(())
}

/// `YYYY-MM-DD` (UTC).
fn humantime_date(t: std::time::SystemTime) -> String {
    let mut s = humantime::format_rfc3339_seconds(t).to_string();
    s.truncate(10);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_say_which_way_is_better() {
        let rows = [
            Row::new("rate", "p", (2000.0, 100.0), "req/s", Better::Higher),
            Row::new("memory", "p", (15_240.0, 30_712.0), "KiB", Better::Lower),
            Row::new("requests", "p", (1.0, 300.0), "requests", Better::Lower),
        ];
        let md = markdown(&rows);
        assert!(
            md.contains("| rate | p | 2,000 req/s | 100 req/s | 20.00 (better) |"),
            "{md}"
        );
        assert!(
            md.contains("| 15,240 KiB | 30,712 KiB | 0.50 (better) |"),
            "{md}"
        );
        assert!(
            md.contains("| 1 requests | 300 requests | 3.3e-3 (better) |"),
            "{md}"
        );
        assert_eq!(
            humantime_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_183_691)),
            "2026-12-02"
        );
    }
}
