//! The canonical quantities every source is converted into, and the units readings arrive in.

use serde::Deserialize;
use tidegauge_core::MetricFamily;

/// A physical quantity with one canonical metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Degrees Celsius.
    Temperature,
    /// Relative humidity as a ratio (0–1).
    Humidity,
    /// Pascals.
    Pressure,
    /// Gas sensor resistance in ohms.
    GasResistance,
}

impl Quantity {
    /// Every quantity, in exposition order.
    pub const ALL: [Quantity; 4] = [
        Quantity::Temperature,
        Quantity::Humidity,
        Quantity::Pressure,
        Quantity::GasResistance,
    ];

    /// The configuration spelling, also the `sensor` label of a mapped board series.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantity::Temperature => "temperature",
            Quantity::Humidity => "humidity",
            Quantity::Pressure => "pressure",
            Quantity::GasResistance => "gas_resistance",
        }
    }

    /// The canonical metric name.
    pub fn metric(self) -> &'static str {
        match self {
            Quantity::Temperature => "sensor_temperature_celsius",
            Quantity::Humidity => "sensor_relative_humidity_ratio",
            Quantity::Pressure => "sensor_pressure_pascals",
            Quantity::GasResistance => "sensor_gas_resistance_ohms",
        }
    }

    /// An empty family of the canonical metric, with its OpenMetrics unit.
    pub fn family(self) -> MetricFamily {
        let (help, unit) = match self {
            Quantity::Temperature => ("Temperature in degrees Celsius.", "celsius"),
            Quantity::Humidity => ("Relative humidity as a ratio (0-1).", "ratio"),
            Quantity::Pressure => ("Air pressure in pascals.", "pascals"),
            Quantity::GasResistance => ("Gas sensor resistance in ohms.", "ohms"),
        };
        let mut f = MetricFamily::gauge(self.metric(), help);
        f.unit = Some(unit.to_owned());
        f
    }
}

/// A unit a reading arrives in, converted to its quantity's base unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// °C.
    Celsius,
    /// m°C (Linux IIO and hwmon).
    Millicelsius,
    /// °F.
    Fahrenheit,
    /// K.
    Kelvin,
    /// 0–1.
    Ratio,
    /// %RH (boards, bme680's IIO driver).
    Percent,
    /// Thousandths of a percent (Linux IIO and hwmon).
    Millipercent,
    /// Pa.
    Pascals,
    /// hPa (boards).
    Hectopascals,
    /// kPa (Linux IIO).
    Kilopascals,
    /// Ω.
    Ohms,
    /// kΩ.
    Kiloohms,
}

impl Unit {
    /// The quantity this unit measures.
    pub fn quantity(self) -> Quantity {
        match self {
            Unit::Celsius | Unit::Millicelsius | Unit::Fahrenheit | Unit::Kelvin => {
                Quantity::Temperature
            }
            Unit::Ratio | Unit::Percent | Unit::Millipercent => Quantity::Humidity,
            Unit::Pascals | Unit::Hectopascals | Unit::Kilopascals => Quantity::Pressure,
            Unit::Ohms | Unit::Kiloohms => Quantity::GasResistance,
        }
    }

    /// `v` in this unit, in the quantity's base unit.
    pub fn to_base(self, v: f64) -> f64 {
        match self {
            Unit::Celsius | Unit::Ratio | Unit::Pascals | Unit::Ohms => v,
            Unit::Millicelsius => v / 1000.0,
            Unit::Fahrenheit => (v - 32.0) * 5.0 / 9.0,
            Unit::Kelvin => v - 273.15,
            Unit::Percent => v / 100.0,
            Unit::Millipercent => v / 100_000.0,
            Unit::Hectopascals => v * 100.0,
            Unit::Kilopascals => v * 1000.0,
            Unit::Kiloohms => v * 1000.0,
        }
    }

    /// The unit the Linux sysfs ABI (IIO and hwmon) gives a quantity in, after scale and offset.
    pub fn sysfs(q: Quantity) -> Unit {
        match q {
            Quantity::Temperature => Unit::Millicelsius,
            Quantity::Humidity => Unit::Millipercent,
            Quantity::Pressure => Unit::Kilopascals,
            Quantity::GasResistance => Unit::Ohms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_reach_base_units() {
        assert_eq!(Unit::Millicelsius.to_base(24730.0), 24.73);
        assert_eq!(Unit::Millipercent.to_base(45000.0), 0.45);
        assert_eq!(Unit::Percent.to_base(49.406), 0.49406);
        assert_eq!(Unit::Kilopascals.to_base(98.325), 98325.0);
        assert_eq!(Unit::Hectopascals.to_base(983.25), 98325.0);
        assert!((Unit::Fahrenheit.to_base(212.0) - 100.0).abs() < 1e-9);
        for u in [Unit::Kelvin, Unit::Kiloohms, Unit::Ratio] {
            assert_eq!(Unit::sysfs(u.quantity()).quantity(), u.quantity());
        }
    }
}
