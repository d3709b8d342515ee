//! Durations in configuration: `"1m30s"`, `"250ms"` or a plain number of seconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// Parses `"1m30s"`, `"250ms"`, `"5"` (seconds) or `"0.5"`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return from_secs(secs);
    }
    humantime::parse_duration(t).map_err(|e| {
        format!("invalid duration {s:?}: {e} (examples: \"10s\", \"1m30s\", \"250ms\", 5)")
    })
}

fn from_secs(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!(
            "invalid duration {secs}: must be a finite, non-negative number of seconds"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {secs}: {e}"))
}

/// Serde `deserialize_with` for a [`Duration`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(u64),
        Float(f64),
        Text(String),
    }
    match Raw::deserialize(d).map_err(|_| {
        de::Error::custom("expected a duration such as \"10s\", \"250ms\" or a number of seconds")
    })? {
        Raw::Int(n) => Ok(Duration::from_secs(n)),
        Raw::Float(f) => from_secs(f).map_err(de::Error::custom),
        Raw::Text(s) => parse(&s).map_err(de::Error::custom),
    }
}

/// Serde `deserialize_with` for an optional [`Duration`].
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse("-1").is_err());
        assert!(parse("soon").is_err());
    }
}
