//! The host process's own series (`process_*`), as every Prometheus client library exports
//! them, read from `/proc/self` on Linux (nothing elsewhere).

use tidegauge_core::MetricFamily;

/// Kernel clock ticks per second for `/proc` CPU times (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

fn status_kib(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
}

/// The `process_*` families, or none when `/proc/self` is not readable.
pub fn families() -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return out;
    };
    // Fields after the parenthesised command name, which may itself hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // Indexes are the stat(5) field numbers minus 3 (pid and comm come first).
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        out.push(
            MetricFamily::counter(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
            )
            .with(vec![], (utime + stime) / TICKS),
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("btime "))
            .and_then(|l| l[6..].trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(19)) {
        out.push(
            MetricFamily::gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )
            .with(vec![], boot + start / TICKS),
        );
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(rss) = status_kib(&status, "VmRSS:") {
            out.push(
                MetricFamily::gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                )
                .with(vec![], rss * 1024.0),
            );
        }
        if let Some(vm) = status_kib(&status, "VmSize:") {
            out.push(
                MetricFamily::gauge(
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                )
                .with(vec![], vm * 1024.0),
            );
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        out.push(
            MetricFamily::gauge("process_open_fds", "Number of open file descriptors.")
                .with(vec![], dir.count() as f64),
        );
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<f64>().ok())
        });
    if let Some(max) = max_fds {
        out.push(
            MetricFamily::gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            )
            .with(vec![], max),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let f = families();
        if std::path::Path::new("/proc/self/stat").exists() {
            let names: Vec<&str> = f.iter().map(|f| f.name.as_str()).collect();
            for n in [
                "process_cpu_seconds",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_start_time_seconds",
            ] {
                assert!(names.contains(&n), "{n} missing from {names:?}");
            }
            let rss = f
                .iter()
                .find(|f| f.name == "process_resident_memory_bytes")
                .unwrap();
            assert!(matches!(rss.samples[0].value, tidegauge_core::Value::Number(v) if v > 1e6));
        }
    }
}
