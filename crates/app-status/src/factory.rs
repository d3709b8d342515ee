//! How the host builds app-status: on by default, the seed exporter's `EXPORTER_PORT`.

use std::sync::Arc;

use tidegauge_core::HostServices;
use tidegauge_core::factory::{BuildError, Inputs, Legacy};

use crate::{AppStatus, Config, NAME};

/// The app-status collector's entry point for the host.
#[derive(Debug, Default, Clone, Copy)]
pub struct Factory;

impl tidegauge_core::Factory for Factory {
    type Config = Config;
    type Collector = AppStatus;

    fn name(&self) -> &'static str {
        NAME
    }

    fn legacy(&self, inputs: Inputs<'_>) -> Result<Legacy, String> {
        let mut legacy = Legacy::default();
        legacy.ports.extend(inputs.env.port("EXPORTER_PORT")?);
        Ok(legacy)
    }

    fn build(
        &self,
        config: Config,
        services: &HostServices,
        _previous: Option<&Arc<AppStatus>>,
    ) -> Result<Arc<AppStatus>, BuildError> {
        AppStatus::new(&config, &|k| services.env.get(k))
            .map(|a| a.with_clock(Arc::clone(&services.clock)))
            .map(Arc::new)
            .map_err(|e| BuildError(e.to_string()))
    }
}
