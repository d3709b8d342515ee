//! `Accept` header negotiation between OpenMetrics 1.0.0 and Prometheus text 0.0.4.

use tidegauge_core::encode::Format;

/// Picks the exposition format for an `Accept` header. The highest `q` wins (`q=0` excluded);
/// on a tie an explicit media type beats a wildcard and OpenMetrics beats text. OpenMetrics is
/// chosen only for an explicit `application/openmetrics-text` with `version=1.0.0`; everything
/// else gets text 0.0.4, never a 406.
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Text;
    };
    // (q, explicitness, format preference)
    let mut best: Option<(f64, u8, u8, Format)> = None;
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0;
        let mut version: Option<String> = None;
        for p in parts {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim().trim_matches('"');
            match k.as_str() {
                "q" => {
                    q = v
                        .parse::<f64>()
                        .ok()
                        .filter(|q| q.is_finite())
                        .unwrap_or(0.0)
                }
                "version" => version = Some(v.to_ascii_lowercase()),
                _ => {}
            }
        }
        if q <= 0.0 {
            continue;
        }
        let candidate = match media.as_str() {
            "application/openmetrics-text" if version.as_deref() == Some("1.0.0") => {
                (q, 2, 1, Format::OpenMetrics)
            }
            "text/plain" => (q, 2, 0, Format::Text),
            "*/*" | "text/*" | "application/*" => (q, 1, 0, Format::Text),
            _ => continue,
        };
        let better = match &best {
            None => true,
            Some(b) => (candidate.0, candidate.1, candidate.2) > (b.0, b.1, b.2),
        };
        if better {
            best = Some(candidate);
        }
    }
    best.map_or(Format::Text, |b| b.3)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMETHEUS3: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

    #[test]
    fn table() {
        let om = Format::OpenMetrics;
        let text = Format::Text;
        let cases: &[(Option<&str>, Format)] = &[
            (Some(PROMETHEUS3), om),
            (Some("application/openmetrics-text;version=1.0.0"), om),
            (
                Some("application/openmetrics-text; Version = \"1.0.0\""),
                om,
            ),
            (Some("application/openmetrics-text"), text),
            (Some("application/openmetrics-text;version=0.0.1"), text),
            (Some("*/*"), text),
            (Some("text/plain"), text),
            (None, text),
            (Some("application/json"), text),
            (
                Some(
                    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
                ),
                text,
            ),
            (
                Some("application/openmetrics-text;version=1.0.0;q=0,text/plain"),
                text,
            ),
            (
                Some("text/plain;q=0.9,application/openmetrics-text;version=1.0.0;q=0.5"),
                text,
            ),
            (
                Some("text/plain;q=0.5,application/openmetrics-text;version=1.0.0;q=0.5"),
                om,
            ),
            (
                Some("*/*;q=0.9,application/openmetrics-text;version=1.0.0;q=0.9"),
                om,
            ),
            (Some("garbage;;;,=,q=x"), text),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(*accept), *want, "{accept:?}");
        }
    }
}
