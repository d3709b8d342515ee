//! How a collector crate plugs into the host: one [`Factory`] per crate declares the
//! collector's name, whether it runs by default, its own command-line flags and the legacy
//! variables of the system it replaces, and builds the collector from its configuration table.
//!
//! The binary keeps one list of factories (`bin/src/factories.rs`) and nothing else per
//! collector. On a reload the host hands each factory the instance it built last time, so state
//! such as an open store carries across without a global.

use std::any::Any;
use std::sync::Arc;

use crate::{Collector, HostServices};

pub use clap;
pub use figment::value::{Dict as Table, Value};

/// One value set from outside the configuration file (a flag or a variable of the original
/// system), named in errors by its source.
#[derive(Debug, Clone)]
pub struct Setting {
    /// Dotted key from the configuration's root (`collectors.NAME.interval`, `log.level`).
    pub key: String,
    /// The value.
    pub value: Value,
    /// Where it came from, for error messages (`flag --interval`).
    pub source: String,
}

/// A port the replaced system listened on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The port.
    pub port: u16,
    /// Where it came from (`environment variable PORT`, `flag --port`).
    pub source: String,
    /// A flag beats the configuration file; a variable does not.
    pub from_flag: bool,
}

/// What a collector reads from its own flags and from the replaced system's environment.
#[derive(Debug, Clone, Default)]
pub struct Legacy {
    /// Settings merged above the file and `TIDEGAUGE_*` variables, below the host's own flags.
    pub settings: Vec<Setting>,
    /// Settings that apply only where no other source sets the key (the replaced system's
    /// variables "where the file leaves a setting open").
    pub fills: Vec<Setting>,
    /// Keys the collector once owned that are now the host's: `(collector, key, host key)`;
    /// the old spelling keeps working, and giving both is an error.
    pub aliases: Vec<(String, String, String)>,
    /// Host keys that must end up set, with the error naming why.
    pub requires: Vec<(String, String)>,
    /// Listen ports, served when no listen address is configured (flags: unless one is given
    /// with `--web.listen-address`).
    pub ports: Vec<Port>,
    /// The replaced system's port, used when its command line is given without one.
    pub default_port: Option<u16>,
    /// The replaced exporter's command line was given: the binary acts as that exporter, so the
    /// other collectors run only when configured or enabled explicitly.
    pub takes_over: bool,
}

impl Legacy {
    /// Sets `key` of the collector `collector`'s table.
    pub fn set(
        &mut self,
        collector: &str,
        key: &str,
        value: impl Into<Value>,
        source: impl Into<String>,
    ) {
        self.settings.push(Setting {
            key: format!("collectors.{collector}.{key}"),
            value: value.into(),
            source: source.into(),
        });
    }

    /// Sets a host key only where no other source does.
    pub fn fill(&mut self, key: &str, value: impl Into<Value>, source: impl Into<String>) {
        self.fills.push(Setting {
            key: key.to_owned(),
            value: value.into(),
            source: source.into(),
        });
    }

    /// Sets a host key (`log.level`).
    pub fn set_host(&mut self, key: &str, value: impl Into<Value>, source: impl Into<String>) {
        self.settings.push(Setting {
            key: key.to_owned(),
            value: value.into(),
            source: source.into(),
        });
    }
}

/// What a factory reads its flags and variables from.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// The parsed command line, with every factory's flags declared.
    pub flags: &'a clap::ArgMatches,
    /// The process environment.
    pub env: &'a Environment,
}

/// The process environment, replaceable in tests.
#[derive(Clone)]
pub struct Environment(Arc<Lookup>);

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Environment")
    }
}

impl Environment {
    /// The real process environment.
    pub fn process() -> Self {
        Self(Arc::new(|k| std::env::var(k).ok()))
    }

    /// An environment holding exactly these variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let map: std::collections::BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self(Arc::new(move |k| map.get(k).cloned()))
    }

    /// The value of `key`, if set (and valid UTF-8).
    pub fn get(&self, key: &str) -> Option<String> {
        (self.0)(key)
    }

    /// A listen port from the variable `var`, if set: 1 to 65535, or an error naming it.
    pub fn port(&self, var: &str) -> Result<Option<Port>, String> {
        let Some(raw) = self.get(var) else {
            return Ok(None);
        };
        let port: u16 = raw
            .trim()
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{var}={raw:?}: expected a port number (1-65535)"))?;
        Ok(Some(Port {
            port,
            source: format!("environment variable {var}"),
            from_flag: false,
        }))
    }
}

/// Why a collector could not be built; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// One collector crate's entry point.
pub trait Factory: Send + Sync + 'static {
    /// The collector's table, `[collectors.NAME]` (host keys `enabled`, `timeout` and
    /// `cache_ttl` removed).
    type Config: serde::de::DeserializeOwned;
    /// The collector built.
    type Collector: Collector;

    /// Stable name, used in configuration, flags, URL filters and self-metric labels.
    fn name(&self) -> &'static str;

    /// Whether it runs when neither a flag nor `enabled` says; `table` is its configuration
    /// table when the file, the environment or a legacy setting gave one. Default: on.
    fn enabled_by_default(&self, table: Option<&Table>) -> bool {
        let _ = table;
        true
    }

    /// Flags the collector declares besides the host's `--collector.NAME` family (the
    /// replaced exporter's command line, its own paths). Default: none.
    fn flags(&self) -> Vec<clap::Arg> {
        Vec::new()
    }

    /// Settings from those flags and from the replaced system's environment. Default: none.
    fn legacy(&self, inputs: Inputs<'_>) -> Result<Legacy, String> {
        let _ = inputs;
        Ok(Legacy::default())
    }

    /// Checks the configuration as [`Factory::build`] would, without its side effects (a store
    /// opened, a file locked), for `--check-config`. Default: build, then drop.
    fn check(&self, config: Self::Config, services: &HostServices) -> Result<(), BuildError> {
        self.build(config, services, None).map(drop)
    }

    /// Builds the collector. `previous` is the instance this factory built for the running
    /// configuration, on a reload: state worth keeping (an open store, caches) is taken from
    /// it. The running instance keeps serving until the new one replaces it, and stays in use
    /// if the reload fails, so building must not change it.
    fn build(
        &self,
        config: Self::Config,
        services: &HostServices,
        previous: Option<&Arc<Self::Collector>>,
    ) -> Result<Arc<Self::Collector>, BuildError>;
}

/// A built collector as the host holds it: the object it scrapes, and the same instance typed,
/// handed back to its factory on the next reload.
#[derive(Clone)]
pub struct Instance {
    /// What the engine scrapes.
    pub collector: Arc<dyn Collector>,
    typed: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("collector", &self.collector.name())
            .finish()
    }
}

/// [`Factory`] without its associated types, as the binary's list holds it.
pub trait DynFactory: Send + Sync {
    /// See [`Factory::name`].
    fn name(&self) -> &'static str;
    /// See [`Factory::enabled_by_default`].
    fn enabled_by_default(&self, table: Option<&Table>) -> bool;
    /// See [`Factory::flags`].
    fn flags(&self) -> Vec<clap::Arg>;
    /// See [`Factory::legacy`].
    fn legacy(&self, inputs: Inputs<'_>) -> Result<Legacy, String>;
    /// Deserializes `table` and checks it (see [`Factory::check`]); errors are prefixed
    /// `collectors.NAME`.
    fn check(&self, table: &Value, services: &HostServices) -> Result<(), BuildError>;
    /// Deserializes `table` into the collector's `Config` and builds it; errors are prefixed
    /// `collectors.NAME`.
    fn build(
        &self,
        table: &Value,
        services: &HostServices,
        previous: Option<&Instance>,
    ) -> Result<Instance, BuildError>;
}

impl<F: Factory> DynFactory for F {
    fn name(&self) -> &'static str {
        Factory::name(self)
    }

    fn enabled_by_default(&self, table: Option<&Table>) -> bool {
        Factory::enabled_by_default(self, table)
    }

    fn flags(&self) -> Vec<clap::Arg> {
        Factory::flags(self)
    }

    fn legacy(&self, inputs: Inputs<'_>) -> Result<Legacy, String> {
        Factory::legacy(self, inputs)
    }

    fn check(&self, table: &Value, services: &HostServices) -> Result<(), BuildError> {
        let name = Factory::name(self);
        let config: F::Config = deserialize(name, table)?;
        Factory::check(self, config, services)
            .map_err(|e| BuildError(format!("collectors.{name}: {e}")))
    }

    fn build(
        &self,
        table: &Value,
        services: &HostServices,
        previous: Option<&Instance>,
    ) -> Result<Instance, BuildError> {
        let name = Factory::name(self);
        let config: F::Config = deserialize(name, table)?;
        let previous = previous.and_then(|p| Arc::clone(&p.typed).downcast::<F::Collector>().ok());
        let built = Factory::build(self, config, services, previous.as_ref())
            .map_err(|e| BuildError(format!("collectors.{name}: {e}")))?;
        Ok(Instance {
            collector: Arc::clone(&built) as Arc<dyn Collector>,
            typed: built,
        })
    }
}

/// Deserializes a collector's table, naming the offending key (`collectors.NAME.key: …`).
pub fn deserialize<T: serde::de::DeserializeOwned>(
    collector: &str,
    table: &Value,
) -> Result<T, BuildError> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        BuildError(format!("collectors.{collector}{at}: {}", e.inner()))
    })
}

impl figment::Provider for Setting {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(self.source.clone())
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, Table>, figment::Error> {
        let nested = figment::util::nest(&self.key, self.value.clone());
        let dict = nested.into_dict().unwrap_or_default();
        Ok(figment::Profile::Global.collect(dict))
    }
}

impl Setting {
    /// A setting of a dotted key.
    pub fn new(key: impl Into<String>, value: impl Into<Value>, source: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            source: source.into(),
        }
    }
}
