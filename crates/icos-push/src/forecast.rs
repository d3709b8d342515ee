//! The embedded forecaster: predicts a series' next value with nothing else running.
//!
//! Exponential smoothing (with automatic model selection) and the seasonal decomposition come
//! from Grafana's augurs crates; the least-squares trend, the period detection and the choice
//! by holdout error are small enough to write here.

use augurs_core::{Fit, Predict};
use augurs_ets::AutoETS;
use augurs_mstl::MSTLModel;

/// Coverage of the prediction interval (`_lower`, `_upper`).
pub const LEVEL: f64 = 0.95;

/// An embedded model, named by its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// `embedded:linear`: a least-squares trend.
    Linear,
    /// `embedded:ets`: exponential smoothing, the model chosen by AICc.
    Ets,
    /// `embedded:mstl`: a seasonal decomposition whose trend is forecast by ETS.
    Mstl,
    /// `embedded:auto`: the model with the smallest error on the newest fifth of the series.
    Auto,
}

impl Model {
    /// Every embedded model's tag.
    pub const TAGS: [&'static str; 4] = [
        "embedded:linear",
        "embedded:ets",
        "embedded:mstl",
        "embedded:auto",
    ];

    /// The model a tag names, if it is an embedded one.
    pub fn from_tag(tag: &str) -> Option<Self> {
        match tag {
            "embedded:linear" => Some(Self::Linear),
            "embedded:ets" => Some(Self::Ets),
            "embedded:mstl" => Some(Self::Mstl),
            "embedded:auto" => Some(Self::Auto),
            _ => None,
        }
    }

    /// The model's tag.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Linear => "embedded:linear",
            Self::Ets => "embedded:ets",
            Self::Mstl => "embedded:mstl",
            Self::Auto => "embedded:auto",
        }
    }

    /// Values a fit needs (MSTL: two whole periods and one more).
    fn needs(self, period: usize) -> usize {
        match self {
            Self::Linear => 3,
            Self::Ets => 10,
            Self::Mstl => period.saturating_mul(2).saturating_add(1),
            Self::Auto => 3,
        }
    }
}

/// One prediction of the next value.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// The predicted value.
    pub value: f64,
    /// Lower bound of the [`LEVEL`] prediction interval.
    pub lower: f64,
    /// Upper bound of the [`LEVEL`] prediction interval.
    pub upper: f64,
    /// `100 − error` on the newest fifth of the series, the error being the mean absolute error
    /// in percent of the series' mean absolute value (the original's `100 − MAE`, on a scale
    /// that does not depend on the series' unit), clamped to `[0, 100]`; none when the series is
    /// too short to hold part of it out.
    pub confidence: Option<f64>,
    /// The model that made it (for `embedded:auto`, the one it chose).
    pub model: Model,
}

/// Why a series could not be forecast.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    /// Fewer finite values than the model needs.
    #[error("the series has {got} usable values; {model} needs at least {need}")]
    TooShort {
        /// The model's tag.
        model: &'static str,
        /// Values it needs.
        need: usize,
        /// Finite values the series has, gaps within it filled.
        got: usize,
    },
    /// MSTL without a period, and none found in the series.
    #[error("embedded:mstl found no seasonal period in the series; give `period` (in steps)")]
    NoPeriod,
    /// A period under 2 steps.
    #[error("period must be at least 2 steps, got {0}")]
    BadPeriod(usize),
    /// The model's fit failed.
    #[error("{model} could not fit the series: {reason}")]
    Fit {
        /// The model's tag.
        model: &'static str,
        /// What augurs said.
        reason: String,
    },
}

/// Forecasts the value after the last of `series` (oldest first). Non-finite values inside the
/// series are gaps, filled linearly between their neighbours; leading and trailing ones are left
/// out. `period` (in steps) is MSTL's season; without it one is looked for in the series.
pub fn forecast(
    model: Model,
    series: &[f64],
    period: Option<usize>,
) -> Result<Forecast, ForecastError> {
    if let Some(p) = period.filter(|p| *p < 2) {
        return Err(ForecastError::BadPeriod(p));
    }
    let y = fill_gaps(series);
    let chosen = match model {
        Model::Auto => choose(&y, period)?,
        m => m,
    };
    let period = match chosen {
        Model::Mstl => Some(
            period
                .or_else(|| detect_period(&y))
                .ok_or(ForecastError::NoPeriod)?,
        ),
        _ => period,
    };
    let p = predict(chosen, &y, period, 1, None)?;
    Ok(Forecast {
        value: p.point[0],
        lower: p.lower[0],
        upper: p.upper[0],
        confidence: holdout_error(chosen, &y, period).map(|e| (100.0 - e).clamp(0.0, 100.0)),
        model: chosen,
    })
}

/// Point forecasts and interval bounds, `horizon` steps ahead.
struct Prediction {
    point: Vec<f64>,
    lower: Vec<f64>,
    upper: Vec<f64>,
}

fn predict(
    model: Model,
    y: &[f64],
    period: Option<usize>,
    horizon: usize,
    ets: Option<&EtsSpec>,
) -> Result<Prediction, ForecastError> {
    let need = model.needs(period.unwrap_or(0));
    if y.len() < need {
        return Err(ForecastError::TooShort {
            model: model.tag(),
            need,
            got: y.len(),
        });
    }
    // Nothing to fit in a flat series (and ETS's likelihood is undefined there).
    if y.iter().all(|v| *v == y[0]) {
        let point = vec![y[0]; horizon];
        return Ok(Prediction {
            lower: point.clone(),
            upper: point.clone(),
            point,
        });
    }
    let fit_err = |e: &dyn std::fmt::Display| ForecastError::Fit {
        model: model.tag(),
        reason: e.to_string(),
    };
    let forecast = match model {
        Model::Linear | Model::Auto => return Ok(linear(y, horizon)),
        Model::Ets => ets_search(ets)
            .map_err(|e| fit_err(&e))?
            .fit(y)
            .map_err(|e| fit_err(&e))?
            .predict(horizon, LEVEL)
            .map_err(|e| fit_err(&e))?,
        Model::Mstl => {
            let season = period.ok_or(ForecastError::NoPeriod)?;
            MSTLModel::new(vec![season], AutoETS::non_seasonal().into_trend_model())
                .fit(y)
                .map_err(|e| fit_err(&e))?
                .predict(horizon, LEVEL)
                .map_err(|e| fit_err(&e))?
        }
    };
    let point = forecast.point;
    if point.len() != horizon || point.iter().any(|v| !v.is_finite()) {
        return Err(fit_err(&"no finite forecast"));
    }
    let (lower, upper) = match forecast.intervals {
        Some(i) if i.lower.len() == horizon && i.upper.len() == horizon => (i.lower, i.upper),
        _ => (point.clone(), point.clone()),
    };
    Ok(Prediction {
        point,
        lower,
        upper,
    })
}

/// The ETS models to search: all non-seasonal ones, or the one a training chose.
fn ets_search(spec: Option<&EtsSpec>) -> Result<AutoETS, augurs_ets::Error> {
    match spec {
        None => Ok(AutoETS::non_seasonal()),
        Some(s) => {
            let auto = AutoETS::new(1, s.components.as_str())?;
            if s.damped {
                auto.damped(true)
            } else {
                auto.damped(false)
            }
        }
    }
}

/// The ETS model a training chose: its components (`AAN`: additive error, additive trend, no
/// season) and whether the trend is damped. Later fits only estimate its parameters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EtsSpec {
    /// Error, trend and season components, one letter each.
    pub components: String,
    /// Damped trend.
    pub damped: bool,
}

/// A model fitted by training, as stored: what forecasts with it reuse, and how well it did on
/// the part of the history held out.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Trained {
    /// Linear, ETS or MSTL.
    pub model: Model,
    /// ETS: the model chosen on the training part.
    pub ets: Option<EtsSpec>,
    /// MSTL: the season, in steps.
    pub period: Option<usize>,
    /// `100 − error` on the test part (see [`Forecast::confidence`]): every forecast's
    /// confidence, as the Intelligence API's is constant per model.
    pub confidence: f64,
    /// Values fitted.
    pub train_points: usize,
    /// Values held out to test.
    pub test_points: usize,
}

/// Trains `model` (linear, ETS or MSTL) on `series`: fits the older `1 − test_size` of it,
/// tests on the rest. ETS keeps the model it chose, MSTL the period (given, or detected).
pub fn train(
    model: Model,
    series: &[f64],
    test_size: f64,
    period: Option<usize>,
) -> Result<Trained, ForecastError> {
    if let Some(p) = period.filter(|p| *p < 2) {
        return Err(ForecastError::BadPeriod(p));
    }
    let model = if model == Model::Auto {
        Model::Ets
    } else {
        model
    };
    let y = fill_gaps(series);
    let test = ((y.len() as f64 * test_size.clamp(0.0, 1.0)).round() as usize).max(1);
    let Some(fit_len) = y.len().checked_sub(test) else {
        return Err(ForecastError::TooShort {
            model: model.tag(),
            need: model.needs(period.unwrap_or(2)) + 1,
            got: y.len(),
        });
    };
    let (fit, held) = y.split_at(fit_len);
    let period = match model {
        // Too short for the shortest season: say so rather than that none was found.
        Model::Mstl if period.is_none() && fit.len() < model.needs(2) => {
            return Err(ForecastError::TooShort {
                model: model.tag(),
                need: model.needs(2) + test,
                got: y.len(),
            });
        }
        Model::Mstl => Some(
            period
                .or_else(|| detect_period(fit))
                .ok_or(ForecastError::NoPeriod)?,
        ),
        _ => None,
    };
    let need = model.needs(period.unwrap_or(0));
    if fit.len() < need {
        return Err(ForecastError::TooShort {
            model: model.tag(),
            need: need + test,
            got: y.len(),
        });
    }
    let fit_err = |e: &dyn std::fmt::Display| ForecastError::Fit {
        model: model.tag(),
        reason: e.to_string(),
    };
    let ets = match model {
        Model::Ets if !fit.iter().all(|v| *v == fit[0]) => {
            let chosen = AutoETS::non_seasonal().fit(fit).map_err(|e| fit_err(&e))?;
            Some(EtsSpec {
                components: chosen.model().model_type().to_string(),
                damped: chosen.model().damped(),
            })
        }
        _ => None,
    };
    let p = predict(model, fit, period, held.len(), ets.as_ref())?;
    let confidence = 100.0 - error_percent(&p.point, held, &y);
    Ok(Trained {
        model,
        ets,
        period,
        confidence: confidence.clamp(0.0, 100.0),
        train_points: fit.len(),
        test_points: held.len(),
    })
}

/// Forecasts the value after the last of `series` with a trained model.
pub fn forecast_trained(t: &Trained, series: &[f64]) -> Result<Forecast, ForecastError> {
    let y = fill_gaps(series);
    let p = predict(t.model, &y, t.period, 1, t.ets.as_ref())?;
    Ok(Forecast {
        value: p.point[0],
        lower: p.lower[0],
        upper: p.upper[0],
        confidence: Some(t.confidence),
        model: t.model,
    })
}

/// Mean absolute error of `forecast` against `actual`, in percent of `scale`'s mean absolute
/// value.
fn error_percent(forecast: &[f64], actual: &[f64], scale: &[f64]) -> f64 {
    let mae = forecast
        .iter()
        .zip(actual)
        .map(|(f, t)| (f - t).abs())
        .sum::<f64>()
        / actual.len().max(1) as f64;
    let scale = scale.iter().map(|v| v.abs()).sum::<f64>() / scale.len().max(1) as f64;
    if scale > 0.0 {
        100.0 * mae / scale
    } else if mae == 0.0 {
        0.0
    } else {
        100.0
    }
}

/// Least squares on the step index; the interval from the residuals' spread.
fn linear(y: &[f64], horizon: usize) -> Prediction {
    let n = y.len() as f64;
    let (intercept, slope) = fit_line(y);
    let sse: f64 = y
        .iter()
        .enumerate()
        .map(|(i, v)| (v - (intercept + slope * i as f64)).powi(2))
        .sum();
    let spread = (sse / (n - 2.0).max(1.0)).sqrt();
    let z = distrs::Normal::ppf(0.5 + LEVEL / 2.0, 0.0, 1.0);
    let point: Vec<f64> = (0..horizon)
        .map(|k| intercept + slope * (n + k as f64))
        .collect();
    Prediction {
        lower: point.iter().map(|p| p - z * spread).collect(),
        upper: point.iter().map(|p| p + z * spread).collect(),
        point,
    }
}

/// Intercept and slope of the least-squares line through `y` against its step index.
fn fit_line(y: &[f64]) -> (f64, f64) {
    let n = y.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (v - mean_y);
        sxx += dx * dx;
    }
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (mean_y - slope * mean_x, slope)
}

/// Mean absolute error, in percent of the series' mean absolute value, of forecasting the newest
/// fifth of the series from the rest; none when the rest is too short for the model.
fn holdout_error(model: Model, y: &[f64], period: Option<usize>) -> Option<f64> {
    let held = (y.len() / 5).max(1);
    let (train, test) = y.split_at(y.len().checked_sub(held)?);
    let p = predict(model, train, period, test.len(), None).ok()?;
    Some(error_percent(&p.point, test, y))
}

/// `embedded:auto`: the candidate with the smallest holdout error (the simpler on a tie).
fn choose(y: &[f64], period: Option<usize>) -> Result<Model, ForecastError> {
    let period = period.or_else(|| detect_period(y));
    let mut best: Option<(f64, Model)> = None;
    for m in [Model::Linear, Model::Ets, Model::Mstl] {
        if m == Model::Mstl && period.is_none() {
            continue;
        }
        if let Some(e) = holdout_error(m, y, period)
            && best.is_none_or(|(b, _)| e < b)
        {
            best = Some((e, m));
        }
    }
    match best {
        Some((_, m)) => Ok(m),
        // Too short to hold any part out: the trend alone, if even that fits.
        None if y.len() >= Model::Linear.needs(0) => Ok(Model::Linear),
        None => Err(ForecastError::TooShort {
            model: Model::Auto.tag(),
            need: Model::Auto.needs(0),
            got: y.len(),
        }),
    }
}

/// The lag, up to half the series, with the strongest autocorrelation among the local maxima
/// above 0.5 (after removing the linear trend); none when no lag repeats the series that well.
fn detect_period(y: &[f64]) -> Option<usize> {
    let n = y.len();
    let (intercept, slope) = fit_line(y);
    let r: Vec<f64> = y
        .iter()
        .enumerate()
        .map(|(i, v)| v - intercept - slope * i as f64)
        .collect();
    let var: f64 = r.iter().map(|v| v * v).sum();
    if var <= 0.0 {
        return None;
    }
    let acf =
        |lag: usize| -> f64 { r.iter().zip(&r[lag..]).map(|(a, b)| a * b).sum::<f64>() / var };
    let max_lag = n / 2;
    if max_lag < 3 {
        return None;
    }
    let values: Vec<f64> = (0..=max_lag).map(acf).collect();
    (2..max_lag)
        .filter(|&l| values[l] > 0.5 && values[l] >= values[l - 1] && values[l] >= values[l + 1])
        .max_by(|a, b| values[*a].total_cmp(&values[*b]))
}

/// The series without leading and trailing non-finite values, gaps inside filled linearly.
fn fill_gaps(series: &[f64]) -> Vec<f64> {
    let first = series.iter().position(|v| v.is_finite());
    let last = series.iter().rposition(|v| v.is_finite());
    let (Some(first), Some(last)) = (first, last) else {
        return Vec::new();
    };
    let mut y = series[first..=last].to_vec();
    let mut i = 0;
    while i < y.len() {
        if y[i].is_finite() {
            i += 1;
            continue;
        }
        let start = i - 1;
        let end = (i..y.len())
            .find(|&j| y[j].is_finite())
            .unwrap_or(y.len() - 1);
        let (a, b) = (y[start], y[end]);
        for (k, slot) in y.iter_mut().enumerate().take(end).skip(i) {
            *slot = a + (b - a) * (k - start) as f64 / (end - start) as f64;
        }
        i = end;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(got: f64, want: f64, relative: f64) -> bool {
        (got - want).abs() <= relative * want.abs()
    }

    fn ramp(n: usize) -> Vec<f64> {
        (0..n).map(|i| 10.0 + 0.5 * i as f64).collect()
    }

    #[test]
    fn tags_name_the_models() {
        for tag in Model::TAGS {
            assert_eq!(Model::from_tag(tag).map(Model::tag), Some(tag));
        }
        assert_eq!(Model::from_tag("embedded:arima"), None);
        assert_eq!(Model::from_tag("linear"), None);
    }

    #[test]
    fn a_linear_ramp_is_continued_within_one_percent() {
        let y = ramp(120);
        let want = 10.0 + 0.5 * 120.0;
        for m in [Model::Linear, Model::Ets, Model::Auto] {
            let f = forecast(m, &y, None).unwrap();
            assert!(within(f.value, want, 0.01), "{m:?}: {f:?}");
            assert!(f.lower <= f.value && f.value <= f.upper, "{m:?}: {f:?}");
            assert!(f.confidence.is_some_and(|c| c > 95.0), "{m:?}: {f:?}");
        }
        let exact = forecast(Model::Linear, &y, None).unwrap();
        assert!((exact.value - want).abs() < 1e-9, "{exact:?}");
    }

    #[test]
    fn a_constant_stays_constant() {
        let y = vec![4.25; 60];
        for m in [Model::Linear, Model::Ets, Model::Auto] {
            let f = forecast(m, &y, None).unwrap();
            assert_eq!((f.value, f.lower, f.upper), (4.25, 4.25, 4.25), "{m:?}");
            assert_eq!(f.confidence, Some(100.0), "{m:?}");
        }
        let f = forecast(Model::Mstl, &y, Some(12)).unwrap();
        assert_eq!(f.value, 4.25);
    }

    #[test]
    fn a_seasonal_series_is_forecast_better_by_mstl_than_by_a_trend() {
        let wave = |i: usize| {
            20.0 + 0.01 * i as f64 + 5.0 * (std::f64::consts::TAU * i as f64 / 24.0).sin()
        };
        let y: Vec<f64> = (0..240).map(wave).collect();
        let want = wave(240);
        let mstl = forecast(Model::Mstl, &y, Some(24)).unwrap();
        let trend = forecast(Model::Linear, &y, None).unwrap();
        assert!(
            (mstl.value - want).abs() < (trend.value - want).abs(),
            "mstl {mstl:?}, linear {trend:?}, want {want}"
        );
        assert!(within(mstl.value, want, 0.02), "{mstl:?} against {want}");
        // The period is found without being given, and auto picks the seasonal model.
        assert_eq!(detect_period(&y), Some(24));
        let detected = forecast(Model::Mstl, &y, None).unwrap();
        assert!(within(detected.value, want, 0.02), "{detected:?}");
        assert_eq!(forecast(Model::Auto, &y, None).unwrap().model, Model::Mstl);
        assert_eq!(
            forecast(Model::Mstl, &ramp(100), None),
            Err(ForecastError::NoPeriod)
        );
    }

    #[test]
    fn gaps_and_nan_are_filled_and_trimmed() {
        let mut y = ramp(60);
        y[10] = f64::NAN;
        y[30..34].fill(f64::NAN);
        y[45] = f64::INFINITY;
        y.insert(0, f64::NAN);
        y.push(f64::NAN);
        let f = forecast(Model::Linear, &y, None).unwrap();
        assert!(within(f.value, 10.0 + 0.5 * 60.0, 0.01), "{f:?}");
        assert_eq!(
            fill_gaps(&[f64::NAN, 1.0, f64::NAN, 3.0, f64::NAN]),
            vec![1.0, 2.0, 3.0]
        );
        assert!(fill_gaps(&[f64::NAN; 4]).is_empty());
    }

    #[test]
    fn trained_models_keep_what_they_chose_and_their_test_confidence() {
        let t = train(Model::Linear, &ramp(200), 0.2, None).unwrap();
        assert_eq!((t.train_points, t.test_points), (160, 40));
        assert!(t.confidence > 99.0, "{t:?}");
        let f = forecast_trained(&t, &ramp(50)).unwrap();
        assert!(within(f.value, ramp(51)[50], 0.01), "{f:?}");
        assert_eq!(f.confidence, Some(t.confidence));
        // ETS keeps the components it chose; MSTL the period it found.
        let noisy: Vec<f64> = (0..300)
            .map(|i| 50.0 + 0.1 * i as f64 + ((i * 7919) % 13) as f64 / 13.0)
            .collect();
        let ets = train(Model::Ets, &noisy, 0.2, None).unwrap();
        let spec = ets.ets.clone().expect("a chosen ETS model");
        assert_eq!(spec.components.len(), 3, "{spec:?}");
        assert!(
            forecast_trained(&ets, &noisy[200..])
                .unwrap()
                .value
                .is_finite()
        );
        let sine: Vec<f64> = (0..240)
            .map(|i| 10.0 + 3.0 * (i as f64 * std::f64::consts::TAU / 24.0).sin())
            .collect();
        let mstl = train(Model::Mstl, &sine, 0.25, None).unwrap();
        assert_eq!(mstl.period, Some(24));
        assert!(mstl.confidence > 90.0, "{mstl:?}");
        // A stored model reads back as it was written.
        let back: Trained =
            crate::records::decode(&crate::records::encode(&mstl).unwrap()).unwrap();
        assert_eq!(back, mstl);
        assert!(matches!(
            train(Model::Ets, &ramp(8), 0.2, None),
            Err(ForecastError::TooShort { .. })
        ));
    }

    #[test]
    fn a_series_too_short_is_an_error_naming_what_it_needs() {
        assert_eq!(
            forecast(Model::Linear, &[1.0, 2.0], None),
            Err(ForecastError::TooShort {
                model: "embedded:linear",
                need: 3,
                got: 2
            })
        );
        let e = forecast(Model::Ets, &ramp(6), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the series has 6 usable values; embedded:ets needs at least 10"
        );
        assert!(matches!(
            forecast(Model::Mstl, &ramp(30), Some(24)),
            Err(ForecastError::TooShort { need: 49, .. })
        ));
        assert!(matches!(
            forecast(Model::Auto, &[f64::NAN, 1.0], None),
            Err(ForecastError::TooShort { .. })
        ));
        assert_eq!(
            forecast(Model::Mstl, &ramp(30), Some(1)),
            Err(ForecastError::BadPeriod(1))
        );
    }
}
