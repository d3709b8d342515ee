//! How the host builds icos-push: off unless configured or enabled (it writes a store on
//! disk), the ICOS service's `PORT`, and the open store handed across reloads.

use std::sync::Arc;

use tidegauge_core::HostServices;
use tidegauge_core::factory::{BuildError, Inputs, Legacy, Table};

use crate::{Config, IcosPush, NAME};

/// The icos-push collector's entry point for the host.
#[derive(Debug, Default, Clone, Copy)]
pub struct Factory;

impl tidegauge_core::Factory for Factory {
    type Config = Config;
    type Collector = IcosPush;

    fn name(&self) -> &'static str {
        NAME
    }

    fn enabled_by_default(&self, table: Option<&Table>) -> bool {
        table.is_some()
    }

    fn legacy(&self, inputs: Inputs<'_>) -> Result<Legacy, String> {
        let mut legacy = Legacy::default();
        legacy.ports.extend(inputs.env.port("PORT")?);
        Ok(legacy)
    }

    fn build(
        &self,
        config: Config,
        services: &HostServices,
        previous: Option<&Arc<IcosPush>>,
    ) -> Result<Arc<IcosPush>, BuildError> {
        IcosPush::open(
            &config,
            services,
            &|k| services.env.get(k),
            previous.map(|p| &**p),
        )
        .map(Arc::new)
        .map_err(|e| BuildError(e.to_string()))
    }
}
