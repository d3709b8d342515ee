//! How the host builds sensor-bridge: off unless configured or enabled, and node_exporter's
//! `--path.sysfs` for the root of sysfs.

use std::sync::Arc;

use tidegauge_core::HostServices;
use tidegauge_core::factory::clap::Arg;
use tidegauge_core::factory::{BuildError, Inputs, Legacy, Table};

use crate::{Config, NAME, SensorBridge};

/// The sensor-bridge collector's entry point for the host.
#[derive(Debug, Default, Clone, Copy)]
pub struct Factory;

impl tidegauge_core::Factory for Factory {
    type Config = Config;
    type Collector = SensorBridge;

    fn name(&self) -> &'static str {
        NAME
    }

    /// Reading sensors is opt-in: a table (or `--collector.sensor-bridge`) turns it on;
    /// `--path.sysfs` alone does not.
    fn enabled_by_default(&self, table: Option<&Table>) -> bool {
        table.is_some_and(|t| t.keys().any(|k| k != "sysfs"))
    }

    fn flags(&self) -> Vec<Arg> {
        vec![
            Arg::new("path.sysfs")
                .long("path.sysfs")
                .value_name("DIR")
                .help("sysfs mount point read by the sensor-bridge collector (default /sys)"),
        ]
    }

    fn legacy(&self, inputs: Inputs<'_>) -> Result<Legacy, String> {
        let mut legacy = Legacy::default();
        if let Some(p) = inputs.flags.get_one::<String>("path.sysfs") {
            legacy.set(NAME, "sysfs", p.clone(), "flag --path.sysfs");
        }
        Ok(legacy)
    }

    fn build(
        &self,
        config: Config,
        services: &HostServices,
        previous: Option<&Arc<SensorBridge>>,
    ) -> Result<Arc<SensorBridge>, BuildError> {
        SensorBridge::from_parts(
            config,
            Arc::new(crate::sysfs::Fs),
            &services.env,
            Arc::clone(&services.clock),
            previous.map(|p| &**p),
        )
        .map(Arc::new)
        .map_err(|e| BuildError(e.to_string()))
    }
}
