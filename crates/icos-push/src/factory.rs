//! How the host builds icos-push: off unless configured or enabled (it writes a store on
//! disk), the ICOS service's environment (`PORT`, `SECURITY_DISABLED`, `KEYCLOAK_*`,
//! `PROMETHEUS_METRICS_DISABLED`), the old `[collectors.icos-push.auth]` table as the host's
//! `[auth]`, and the open store handed across reloads.

use std::sync::Arc;

use tidegauge_core::HostServices;
use tidegauge_core::factory::{BuildError, Inputs, Legacy, Table};

use crate::{Config, IcosPush, NAME};

/// The icos-push collector's entry point for the host.
#[derive(Debug, Default, Clone, Copy)]
pub struct Factory;

/// The original's booleans: `true`, `1`, `yes` in any case; anything else is false.
fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

/// The original's authentication variables, as settings of the host's `[auth]` that apply
/// where the configuration leaves them open.
fn security(legacy: &mut Legacy, inputs: Inputs<'_>) -> Result<(), String> {
    let env = inputs.env;
    let get = |k: &str| {
        env.get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let source = |k: &str| format!("environment variable {k}");
    match env.get("SECURITY_DISABLED").map(|v| truthy(&v)) {
        Some(false) => match (get("KEYCLOAK_SERVER_URL"), get("KEYCLOAK_REALM_NAME")) {
            (Some(server_url), Some(realm)) => {
                let audience = get("KEYCLOAK_AUDIENCE").ok_or(
                    "SECURITY_DISABLED=false: KEYCLOAK_AUDIENCE (the audience tokens must carry) is not set",
                )?;
                legacy.fill(
                    "auth.keycloak.server_url",
                    server_url,
                    source("KEYCLOAK_SERVER_URL"),
                );
                legacy.fill("auth.keycloak.realm", realm, source("KEYCLOAK_REALM_NAME"));
                legacy.fill(
                    "auth.keycloak.audience",
                    audience,
                    source("KEYCLOAK_AUDIENCE"),
                );
                if let Some(id) = get("KEYCLOAK_CLIENT_ID") {
                    legacy.fill("auth.keycloak.client_id", id, source("KEYCLOAK_CLIENT_ID"));
                }
            }
            (None, None) => legacy.requires.push((
                "auth".into(),
                "SECURITY_DISABLED=false: KEYCLOAK_SERVER_URL is not set (the realm needs KEYCLOAK_SERVER_URL, KEYCLOAK_REALM_NAME and KEYCLOAK_AUDIENCE; or configure [auth])".into(),
            )),
            (url, _) => {
                let missing = if url.is_none() {
                    "KEYCLOAK_SERVER_URL"
                } else {
                    "KEYCLOAK_REALM_NAME"
                };
                return Err(format!(
                    "SECURITY_DISABLED=false: {missing} is not set (the realm needs KEYCLOAK_SERVER_URL, KEYCLOAK_REALM_NAME and KEYCLOAK_AUDIENCE; or configure [auth])"
                ));
            }
        },
        None if get("KEYCLOAK_SERVER_URL").is_some() => {
            tracing::warn!(
                "KEYCLOAK_SERVER_URL is set but SECURITY_DISABLED is not false: as in the original, the variables do not turn authentication on"
            );
        }
        _ => {}
    }
    if env
        .get("PROMETHEUS_METRICS_DISABLED")
        .is_some_and(|v| truthy(&v))
    {
        legacy.fill(
            "auth.protect_metrics",
            true,
            source("PROMETHEUS_METRICS_DISABLED"),
        );
    }
    Ok(())
}

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
        legacy
            .aliases
            .push((NAME.into(), "auth".into(), "auth".into()));
        security(&mut legacy, inputs)?;
        Ok(legacy)
    }

    fn check(&self, config: Config, services: &HostServices) -> Result<(), BuildError> {
        IcosPush::check_with(&config, &services.env).map_err(|e| BuildError(e.to_string()))
    }

    fn build(
        &self,
        config: Config,
        services: &HostServices,
        previous: Option<&Arc<IcosPush>>,
    ) -> Result<Arc<IcosPush>, BuildError> {
        IcosPush::open(&config, services, previous.map(|p| &**p))
            .map(Arc::new)
            .map_err(|e| BuildError(e.to_string()))
    }
}
