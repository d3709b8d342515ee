//! The collectors compiled into this binary: one line per collector crate, nothing else.

use tidegauge_core::DynFactory;

/// Every compiled-in collector's factory.
pub fn all() -> Vec<Box<dyn DynFactory>> {
    vec![
        #[cfg(feature = "app-status")]
        Box::new(tidegauge_app_status::Factory),
        #[cfg(feature = "icos-push")]
        Box::new(tidegauge_icos_push::Factory),
        #[cfg(feature = "ifcb")]
        Box::new(tidegauge_ifcb::Factory),
        #[cfg(feature = "sensor-bridge")]
        Box::new(tidegauge_sensor_bridge::Factory),
        // new-collector: factories
    ]
}

/// The collector features of this package, compiled in or not, read from its manifest so that
/// a collector left out of a build is named with the feature that brings it back.
pub fn features() -> Vec<String> {
    let manifest: toml::Table = include_str!("../Cargo.toml").parse().unwrap_or_default();
    manifest
        .get("features")
        .and_then(toml::Value::as_table)
        .map(|t| t.keys().filter(|k| *k != "default").cloned().collect())
        .unwrap_or_default()
}

/// The compiled-in factories and the names of every collector feature.
pub struct Catalog {
    /// Compiled-in collectors.
    pub factories: Vec<Box<dyn DynFactory>>,
    /// Every collector feature of the package.
    pub features: Vec<String>,
}

impl Catalog {
    /// This binary's collectors.
    pub fn compiled() -> Self {
        Self {
            factories: all(),
            features: features(),
        }
    }

    /// The factory of `name`, when compiled in.
    pub fn get(&self, name: &str) -> Option<&dyn DynFactory> {
        self.factories
            .iter()
            .find(|f| f.name() == name)
            .map(|f| &**f)
    }

    /// Why `name` cannot be used: a feature left out of this build, or no collector at all.
    pub fn missing(&self, name: &str) -> String {
        if self.features.iter().any(|f| f == name) {
            format!(
                "the {name} collector is not compiled into this binary (rebuild with --features {name})"
            )
        } else {
            let known: Vec<&str> = self.factories.iter().map(|f| f.name()).collect();
            format!("unknown collector (this binary has: {})", known.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_feature_is_a_collector_and_every_factory_a_feature() {
        let features = super::features();
        assert!(!features.is_empty());
        for f in super::all() {
            assert!(features.iter().any(|x| x == f.name()), "{}", f.name());
        }
    }

    #[test]
    fn a_collector_left_out_is_named_with_its_feature() {
        let catalog = super::Catalog {
            factories: Vec::new(),
            features: vec!["sensor-bridge".into()],
        };
        assert_eq!(
            catalog.missing("sensor-bridge"),
            "the sensor-bridge collector is not compiled into this binary (rebuild with --features sensor-bridge)"
        );
        assert!(catalog.missing("nope").starts_with("unknown collector"));
    }
}
