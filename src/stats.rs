//! Confidence intervals across replications.
//!
//! Replications are independent and identically distributed, so the mean of a figure over
//! `n` replications has a Student-t 95% interval `x̄ ± t(0.975, n−1) · s / √n`. Paired
//! differences (two strategies, same replications, common random numbers) use the same
//! interval on the per-replication differences, which is much narrower than comparing two
//! independent intervals.
//!
//! Percentiles are the exception: they come from the pooled distribution of every
//! replication, with the intervals of [`quantile`].

pub mod quantile;

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A mean with its 95% confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Sample mean.
    pub mean: f64,
    /// Lower end of the 95% interval (NaN with fewer than 2 values).
    pub low: f64,
    /// Upper end of the 95% interval (NaN with fewer than 2 values).
    pub high: f64,
    /// Number of (finite) values used.
    pub n: usize,
}

impl Estimate {
    /// Half the interval's width.
    pub fn half_width(&self) -> f64 {
        0.5 * (self.high - self.low)
    }

    /// Whether `x` lies in the interval.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// The `p` quantile of Student's t with `df` degrees of freedom.
pub fn t_quantile(p: f64, df: usize) -> f64 {
    match StudentsT::new(0.0, 1.0, df as f64) {
        Ok(t) => t.inverse_cdf(p),
        Err(_) => f64::NAN,
    }
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (two-sided 95%).
pub fn t975(df: usize) -> f64 {
    t_quantile(0.975, df)
}

/// Mean and 95% CI of the finite values in `values` (NaNs — undefined figures, such as a
/// percentile of a run that served nothing — are skipped).
pub fn estimate(values: &[f64]) -> Estimate {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len();
    if n == 0 {
        return Estimate {
            mean: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
            n,
        };
    }
    let mean = finite.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Estimate {
            mean,
            low: f64::NAN,
            high: f64::NAN,
            n,
        };
    }
    let var = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let hw = t975(n - 1) * (var / n as f64).sqrt();
    Estimate {
        mean,
        low: mean - hw,
        high: mean + hw,
        n,
    }
}

/// Mean and 95% CI of `b − a` over paired replications (pairs with a NaN are skipped).
pub fn paired_difference(a: &[f64], b: &[f64]) -> Estimate {
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    estimate(&diffs)
}

/// Mean and 95% CI of `mean(b) − mean(a)` treating the samples as independent (Welch's
/// interval). Used only to show what pairing buys: with common random numbers the paired
/// interval of [`paired_difference`] is the valid and much narrower one.
pub fn unpaired_difference(a: &[f64], b: &[f64]) -> Estimate {
    let (ea, eb) = (estimate(a), estimate(b));
    let mean = eb.mean - ea.mean;
    let var_of_mean = |v: &[f64], e: &Estimate| {
        let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        f.iter().map(|x| (x - e.mean).powi(2)).sum::<f64>() / ((e.n * (e.n.max(2) - 1)) as f64)
    };
    if ea.n < 2 || eb.n < 2 {
        return Estimate {
            mean,
            low: f64::NAN,
            high: f64::NAN,
            n: ea.n.min(eb.n),
        };
    }
    let (va, vb) = (var_of_mean(a, &ea), var_of_mean(b, &eb));
    let se2 = va + vb;
    // Welch–Satterthwaite degrees of freedom.
    let df = if se2 > 0.0 {
        se2 * se2 / (va * va / (ea.n - 1) as f64 + vb * vb / (eb.n - 1) as f64)
    } else {
        (ea.n + eb.n - 2) as f64
    };
    let hw = t975(df.floor().max(1.0) as usize) * se2.sqrt();
    Estimate {
        mean,
        low: mean - hw,
        high: mean + hw,
        n: ea.n.min(eb.n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_tables() {
        assert!((t975(1) - 12.706).abs() < 1e-3);
        assert!((t975(9) - 2.262).abs() < 1e-3);
        assert!((t975(1000) - 1.962).abs() < 1e-3);
    }

    #[test]
    fn interval_of_known_sample() {
        let e = estimate(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(e.mean, 3.0);
        // s = sqrt(2.5), t(4) = 2.776
        assert!((e.half_width() - 2.776 * (2.5f64 / 5.0).sqrt()).abs() < 1e-3);
        assert_eq!(e.n, 5);
    }

    #[test]
    fn nan_and_single_values() {
        let e = estimate(&[f64::NAN, 2.0]);
        assert_eq!(e.mean, 2.0);
        assert!(e.low.is_nan());
        assert!(estimate(&[]).mean.is_nan());
    }

    #[test]
    fn pairing_removes_common_noise() {
        let a = [10.0, 20.0, 30.0, 40.0];
        let b = [11.0, 21.1, 30.9, 41.0];
        let d = paired_difference(&a, &b);
        assert!((d.mean - 1.0).abs() < 1e-9);
        assert!(d.half_width() < 0.2);
        let u = unpaired_difference(&a, &b);
        assert!((u.mean - 1.0).abs() < 1e-9);
        assert!(u.half_width() > 10.0 * d.half_width());
    }
}
