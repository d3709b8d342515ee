//! The command line: the host's flags, `--collector.NAME` for every collector feature, and the
//! flags each compiled-in collector declares.

use clap::{Arg, ArgAction, Command};
use tidegauge_core::DynFactory;

/// The command line for these factories; `features` names every collector feature of the
/// package, so a collector left out of this build still has its flags (and a clear error).
pub fn command(factories: &[Box<dyn DynFactory>], features: &[String]) -> Command {
    let mut cmd = Command::new("tidegauge")
        .version(env!("CARGO_PKG_VERSION"))
        .about("One host binary serving Prometheus metrics from tidegauge collectors.")
        .arg(
            Arg::new("config")
                .long("config")
                .alias("config.file")
                .value_name("FILE")
                .help("Configuration file (default: ./tidegauge.toml when present)"),
        )
        .arg(
            Arg::new("check-config")
                .long("check-config")
                .action(ArgAction::SetTrue)
                .help("Validate the configuration, print it resolved, and exit"),
        )
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .value_name("ADDR")
                .action(ArgAction::Append)
                .help("Address to listen on; repeatable (default :9877)"),
        )
        .arg(
            Arg::new("web.disable-exporter-metrics")
                .long("web.disable-exporter-metrics")
                .action(ArgAction::SetTrue)
                .help("Leave the host's process_* series out of /metrics"),
        )
        .arg(
            Arg::new("web.telemetry-path")
                .long("web.telemetry-path")
                .value_name("PATH")
                .help("Path under which to expose metrics (default /metrics)"),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_name("FILE")
                .help("exporter-toolkit web configuration (YAML): basic auth, headers, rate limit"),
        )
        .arg(
            Arg::new("web.enable-lifecycle")
                .long("web.enable-lifecycle")
                .value_name("BOOL")
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
                .value_parser(clap::value_parser!(bool))
                .help("Serve POST /-/reload (default true; --web.enable-lifecycle=false turns it off)"),
        )
        .arg(
            Arg::new("web.read-header-timeout")
                .long("web.read-header-timeout")
                .value_name("DURATION")
                .help("A request's headers must arrive within this; also bounds keep-alive waits (default 10s)"),
        )
        .arg(
            Arg::new("web.read-timeout")
                .long("web.read-timeout")
                .value_name("DURATION")
                .help("A request's body must arrive within this, else 408 (default 30s)"),
        )
        .arg(
            Arg::new("web.idle-timeout")
                .long("web.idle-timeout")
                .value_name("DURATION")
                .help("A connection with no traffic this long is closed (default 90s)"),
        )
        .arg(
            Arg::new("web.max-connections")
                .long("web.max-connections")
                .value_name("N")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("Connections open at once; more are closed (default 1024)"),
        )
        .arg(
            Arg::new("web.max-requests")
                .long("web.max-requests")
                .value_name("N")
                .value_parser(clap::value_parser!(u64))
                .help("Maximum concurrent scrape requests; 0 = unlimited (default 40)"),
        )
        .arg(
            Arg::new("scrape.default-timeout")
                .long("scrape.default-timeout")
                .value_name("DURATION")
                .help("Scrape timeout when Prometheus sends none (default 10s)"),
        )
        .arg(
            Arg::new("scrape.timeout-offset")
                .long("scrape.timeout-offset")
                .value_name("DURATION")
                .help("Subtracted from the scrape timeout (default 0.5s)"),
        )
        .arg(
            Arg::new("log.level")
                .long("log.level")
                .value_name("LEVEL")
                .help("error, warn, info, debug or trace (default info)"),
        )
        .arg(
            Arg::new("log.format")
                .long("log.format")
                .value_name("FORMAT")
                .help("text or json (default text)"),
        )
        .arg(
            Arg::new("label")
                .long("label")
                .value_name("NAME=VALUE")
                .action(ArgAction::Append)
                .help("Constant label added to every series; repeatable (beside [labels] in the file)"),
        )
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Run only the collectors enabled explicitly"),
        );
    for f in factories {
        cmd = cmd.args(f.flags());
    }
    for name in features {
        let suffix = if factories.iter().any(|f| f.name() == name) {
            ""
        } else {
            " (not compiled in)"
        };
        cmd = cmd
            .arg(
                Arg::new(format!("collector.{name}"))
                    .long(format!("collector.{name}"))
                    .action(ArgAction::SetTrue)
                    .help(format!("Enable the {name} collector{suffix}")),
            )
            .arg(
                Arg::new(format!("no-collector.{name}"))
                    .long(format!("no-collector.{name}"))
                    .action(ArgAction::SetTrue)
                    .help(format!("Disable the {name} collector")),
            )
            .arg(
                Arg::new(format!("collector.{name}.timeout"))
                    .long(format!("collector.{name}.timeout"))
                    .value_name("DURATION")
                    .help(format!("Cap on the {name} collector's scrape budget")),
            );
    }
    cmd
}

#[cfg(test)]
mod tests {
    #[test]
    fn flags_of_all_collectors_fit_together() {
        // clap's own consistency checks: duplicate ids or names between collectors fail here.
        super::command(&crate::factories::all(), &crate::factories::features()).debug_assert();
    }
}
