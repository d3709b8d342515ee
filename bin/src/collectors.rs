//! Construction of the compiled-in collectors from their configuration tables.

use std::sync::Arc;

use figment::value::Value;
use tidegauge_core::{Collector, HostServices};

use crate::config::ConfigError;

/// Builds the collector `name` from its own configuration keys.
pub fn build(
    name: &str,
    own: &Value,
    services: &HostServices,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Collector>, ConfigError> {
    let _ = (own, services, env);
    match name {
        #[cfg(feature = "app-status")]
        tidegauge_app_status::NAME => {
            let cfg: tidegauge_app_status::Config = crate::config::deserialize(name, own)?;
            let c = tidegauge_app_status::AppStatus::new(&cfg, env)
                .map_err(|e| ConfigError(format!("collectors.{name}: {e}")))?;
            Ok(Arc::new(c))
        }
        #[cfg(feature = "ifcb")]
        tidegauge_ifcb::NAME => {
            let cfg: tidegauge_ifcb::Config = crate::config::deserialize(name, own)?;
            let c = tidegauge_ifcb::Ifcb::new(&cfg, services.http.clone())
                .map_err(|e| ConfigError(format!("collectors.{name}: {e}")))?;
            Ok(Arc::new(c))
        }
        #[cfg(feature = "icos-push")]
        tidegauge_icos_push::NAME => {
            let cfg: tidegauge_icos_push::Config = crate::config::deserialize(name, own)?;
            let c = tidegauge_icos_push::IcosPush::open(&cfg, services, env)
                .map_err(|e| ConfigError(format!("collectors.{name}: {e}")))?;
            Ok(Arc::new(c))
        }
        // new-collector: construction
        other => Err(ConfigError(crate::config::not_compiled(other))),
    }
}
