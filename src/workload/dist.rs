//! Positive random quantities (service demands, interarrival times) described by their
//! quantile function.
//!
//! A request carries a quantile `u ∈ (0, 1)` drawn once; the server group it lands on turns
//! `u` into a service demand with [`Dist::quantile`]. Driving every distribution by its
//! quantile is what gives common random numbers across strategies: a request that is "large"
//! under one strategy is equally large under every other.

use serde::{Deserialize, Serialize};
use statrs::function::erf::erfc_inv;

/// A distribution of a positive quantity, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum Dist {
    /// Exponential with the given mean.
    Exponential {
        /// Mean (seconds).
        mean: f64,
    },
    /// Always the same value.
    Deterministic {
        /// The value (seconds).
        value: f64,
    },
    /// Uniform on `[min, max]`.
    Uniform {
        /// Lower bound (seconds).
        min: f64,
        /// Upper bound (seconds).
        max: f64,
    },
    /// Lognormal given by its mean and coefficient of variation (std dev / mean).
    Lognormal {
        /// Mean (seconds).
        mean: f64,
        /// Coefficient of variation.
        cv: f64,
    },
    /// Gamma given by its mean and coefficient of variation (shape = 1/cv²).
    Gamma {
        /// Mean (seconds).
        mean: f64,
        /// Coefficient of variation.
        cv: f64,
    },
    /// Weibull with shape `k` and scale `λ`: `F(x) = 1 - exp(-(x/λ)^k)`.
    Weibull {
        /// Shape `k`.
        shape: f64,
        /// Scale `λ` (seconds).
        scale: f64,
    },
    /// Pareto (type I) with tail index `α` and minimum `x_m`: `F(x) = 1 - (x_m/x)^α`.
    Pareto {
        /// Tail index `α` (> 1 for a finite mean).
        shape: f64,
        /// Minimum value `x_m` (seconds).
        scale: f64,
    },
    /// A mixture: a draw comes from component `i` with probability `weight_i / Σ weight`.
    Mixture {
        /// The components.
        components: Vec<Component>,
    },
    /// An empirical latency profile given by percentiles, as Finagle's `LatencyProfile`:
    /// linear interpolation between (0, min), (0.5, p50), (0.9, p90), (0.99, p99),
    /// (0.999, p999) and (1, max).
    Empirical {
        /// Smallest value (seconds). Default 0.
        #[serde(default)]
        min: f64,
        /// Median (seconds).
        p50: f64,
        /// 90th percentile (seconds).
        p90: f64,
        /// 99th percentile (seconds).
        p99: f64,
        /// 99.9th percentile (seconds).
        p999: f64,
        /// Largest value (seconds).
        max: f64,
    },
}

/// One component of a [`Dist::Mixture`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Relative weight (need not sum to one).
    pub weight: f64,
    /// The component's distribution.
    pub dist: Dist,
}

/// Why a [`Dist`] is not usable, with the fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{problem}; {fix}")]
pub struct DistError {
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

fn bad(problem: impl Into<String>, fix: impl Into<String>) -> DistError {
    DistError {
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn positive(name: &str, v: f64) -> Result<(), DistError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(
            format!("`{name}` is {v}"),
            format!("give `{name}` a finite value greater than 0"),
        ))
    }
}

/// Smallest coefficient of variation of a gamma distribution: its quantile function is
/// computed by Newton steps on the incomplete gamma function, which gets slow (shape
/// 1/cv² grows) and, below cv ≈ 1e-155, fails. A gamma this narrow is a constant.
pub const GAMMA_MIN_CV: f64 = 0.01;
/// Largest coefficient of variation of a lognormal or gamma distribution: beyond it the
/// quantile function overflows or collapses to 0.
pub const MAX_CV: f64 = 100.0;
/// Largest mean of a distribution (seconds, about 31 years): times must fit the
/// simulator's integer-nanosecond clock (584 years) with room for a run.
pub const MAX_MEAN: f64 = 1e9;

impl Dist {
    /// Checks the parameters: every distribution must be of a positive quantity with a
    /// finite mean no larger than [`MAX_MEAN`].
    pub fn validate(&self) -> Result<(), DistError> {
        self.validate_parameters()?;
        let mean = self.mean();
        if !(mean.is_finite() && mean > 0.0 && mean <= MAX_MEAN) {
            return Err(bad(
                format!("the mean is {mean} s"),
                format!(
                    "choose parameters giving a mean between 0 and {MAX_MEAN:e} s (the simulated clock counts nanoseconds and covers 584 years)"
                ),
            ));
        }
        Ok(())
    }

    fn validate_parameters(&self) -> Result<(), DistError> {
        match self {
            Dist::Exponential { mean } => positive("mean", *mean),
            Dist::Deterministic { value } => positive("value", *value),
            Dist::Uniform { min, max } => {
                if !(min.is_finite() && max.is_finite() && *min >= 0.0 && max > min) {
                    return Err(bad(
                        format!("uniform bounds min = {min}, max = {max}"),
                        "use 0 <= min < max",
                    ));
                }
                Ok(())
            }
            Dist::Lognormal { mean, cv } | Dist::Gamma { mean, cv } => {
                positive("mean", *mean)?;
                positive("cv", *cv)?;
                if *cv > MAX_CV {
                    return Err(bad(
                        format!("`cv` is {cv}, above {MAX_CV}"),
                        format!("use a coefficient of variation of at most {MAX_CV}"),
                    ));
                }
                if matches!(self, Dist::Gamma { .. }) && *cv < GAMMA_MIN_CV {
                    return Err(bad(
                        format!(
                            "gamma `cv` is {cv}, below {GAMMA_MIN_CV}: its quantile cannot be computed in reasonable time"
                        ),
                        format!(
                            "use cv ≥ {GAMMA_MIN_CV}, or dist = \"deterministic\" for a near-constant time (or \"lognormal\", whose small-cv shape is close to gamma's)"
                        ),
                    ));
                }
                Ok(())
            }
            Dist::Weibull { shape, scale } => {
                positive("shape", *shape)?;
                positive("scale", *scale)
            }
            Dist::Pareto { shape, scale } => {
                positive("scale", *scale)?;
                if !(shape.is_finite() && *shape > 1.0) {
                    return Err(bad(
                        format!("Pareto `shape` is {shape}: the mean is infinite"),
                        "use a shape (tail index) greater than 1, e.g. 1.5 or 2.5",
                    ));
                }
                Ok(())
            }
            Dist::Mixture { components } => {
                if components.is_empty() {
                    return Err(bad(
                        "mixture has no components",
                        "add at least one component",
                    ));
                }
                let mut total = 0.0;
                for c in components {
                    if !(c.weight.is_finite() && c.weight >= 0.0) {
                        return Err(bad(
                            format!("mixture weight {}", c.weight),
                            "use non-negative weights",
                        ));
                    }
                    total += c.weight;
                    c.dist.validate()?;
                }
                if total <= 0.0 {
                    return Err(bad(
                        "all mixture weights are 0",
                        "give a component a weight > 0",
                    ));
                }
                Ok(())
            }
            Dist::Empirical { .. } => {
                let pts = self.empirical_values().unwrap_or_default();
                let [min, p50, p90, p99, p999, max] = pts;
                if pts.iter().any(|v| !v.is_finite() || *v < 0.0)
                    || pts.windows(2).any(|w| w[1] < w[0])
                    || max <= 0.0
                {
                    return Err(bad(
                        format!(
                            "empirical percentiles min={min} p50={p50} p90={p90} p99={p99} p999={p999} max={max}"
                        ),
                        "percentiles must be non-negative and non-decreasing: min <= p50 <= p90 <= p99 <= p999 <= max, max > 0",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The value at quantile `u ∈ (0, 1)`. For a mixture, `u` first selects the component
    /// and is then rescaled within it, which yields exactly the mixture distribution.
    ///
    /// The exponential, the most common service time (a draw for every request), is
    /// computed inline; the others in a call (`Dist::quantile_of`, the same formulas).
    #[inline]
    pub fn quantile(&self, u: f64) -> f64 {
        match self {
            Dist::Exponential { mean } => exponential_quantile(*mean, u),
            _ => self.quantile_of(u),
        }
    }

    /// [`Dist::quantile`] out of line, for every distribution.
    #[inline(never)]
    fn quantile_of(&self, u: f64) -> f64 {
        match self {
            Dist::Exponential { mean } => exponential_quantile(*mean, u),
            Dist::Deterministic { value } => *value,
            Dist::Uniform { min, max } => min + (max - min) * u,
            Dist::Lognormal { mean, cv } => {
                let s2 = (1.0 + cv * cv).ln();
                let mu = mean.ln() - 0.5 * s2;
                (mu + s2.sqrt() * std_normal_quantile(u)).exp()
            }
            Dist::Gamma { mean, cv } => {
                let shape = 1.0 / (cv * cv);
                std_gamma_quantile(shape, u) * mean / shape
            }
            Dist::Weibull { shape, scale } => scale * (-(-u).ln_1p()).powf(1.0 / shape),
            Dist::Pareto { shape, scale } => scale * (1.0 - u).powf(-1.0 / shape),
            Dist::Mixture { components } => {
                let total: f64 = components.iter().map(|c| c.weight).sum();
                let mut lo = 0.0;
                for (i, c) in components.iter().enumerate() {
                    let p = c.weight / total;
                    if u < lo + p || i + 1 == components.len() {
                        let v = ((u - lo) / p).clamp(f64::MIN_POSITIVE, 1.0 - f64::EPSILON);
                        return c.dist.quantile(v);
                    }
                    lo += p;
                }
                unreachable!("a mixture has at least one component")
            }
            Dist::Empirical { max, .. } => {
                let pts = self.empirical_points();
                for w in pts.windows(2) {
                    let ((q0, v0), (q1, v1)) = (w[0], w[1]);
                    if u <= q1 {
                        return v0 + (v1 - v0) * (u - q0) / (q1 - q0);
                    }
                }
                *max
            }
        }
    }

    /// The mean of the distribution (seconds).
    pub fn mean(&self) -> f64 {
        match self {
            Dist::Exponential { mean }
            | Dist::Lognormal { mean, .. }
            | Dist::Gamma { mean, .. } => *mean,
            Dist::Deterministic { value } => *value,
            Dist::Uniform { min, max } => 0.5 * (min + max),
            Dist::Weibull { shape, scale } => {
                scale * statrs::function::gamma::gamma(1.0 + 1.0 / shape)
            }
            Dist::Pareto { shape, scale } => shape * scale / (shape - 1.0),
            Dist::Mixture { components } => {
                let total: f64 = components.iter().map(|c| c.weight).sum();
                components
                    .iter()
                    .map(|c| c.weight / total * c.dist.mean())
                    .sum()
            }
            Dist::Empirical { .. } => {
                // Mean of a piecewise-linear quantile function: trapezoids.
                self.empirical_points()
                    .windows(2)
                    .map(|w| (w[1].0 - w[0].0) * 0.5 * (w[0].1 + w[1].1))
                    .sum()
            }
        }
    }

    /// An empirical profile's values `[min, p50, p90, p99, p999, max]`, at the quantiles
    /// [`EMPIRICAL_QUANTILES`]; `None` for other distributions.
    pub fn empirical_values(&self) -> Option<[f64; 6]> {
        let mut profile = self.clone();
        profile.empirical_values_mut().map(|v| v.map(|x| *x))
    }

    /// [`Dist::empirical_values`], to change them in place.
    pub fn empirical_values_mut(&mut self) -> Option<[&mut f64; 6]> {
        match self {
            Dist::Empirical {
                min,
                p50,
                p90,
                p99,
                p999,
                max,
            } => Some([min, p50, p90, p99, p999, max]),
            _ => None,
        }
    }

    /// The (quantile, value) points of an empirical profile (zeros for other distributions;
    /// only called on `Empirical`). An array, not a `Vec`: it is used once per request.
    fn empirical_points(&self) -> [(f64, f64); 6] {
        let values = self.empirical_values().unwrap_or_default();
        std::array::from_fn(|i| (EMPIRICAL_QUANTILES[i], values[i]))
    }

    /// The second moment `E[X²]` (seconds²), used by the Pollaczek–Khinchine formula.
    /// `None` where it is infinite (Pareto with shape ≤ 2).
    pub fn second_moment(&self) -> Option<f64> {
        let m = self.mean();
        match self {
            Dist::Exponential { mean } => Some(2.0 * mean * mean),
            Dist::Deterministic { value } => Some(value * value),
            Dist::Uniform { min, max } => Some((min * min + min * max + max * max) / 3.0),
            Dist::Lognormal { cv, .. } | Dist::Gamma { cv, .. } => Some(m * m * (1.0 + cv * cv)),
            Dist::Weibull { shape, scale } => {
                Some(scale * scale * statrs::function::gamma::gamma(1.0 + 2.0 / shape))
            }
            Dist::Pareto { shape, scale } => {
                (*shape > 2.0).then(|| shape * scale * scale / (shape - 2.0))
            }
            Dist::Mixture { components } => {
                let total: f64 = components.iter().map(|c| c.weight).sum();
                components
                    .iter()
                    .map(|c| c.dist.second_moment().map(|s| c.weight / total * s))
                    .sum()
            }
            Dist::Empirical { .. } => None,
        }
    }
}

/// The quantiles of an empirical profile's values: min, p50, p90, p99, p999 and max.
pub const EMPIRICAL_QUANTILES: [f64; 6] = [0.0, 0.5, 0.9, 0.99, 0.999, 1.0];

/// The standard normal quantile `Φ⁻¹(u)`, via statrs' inverse complementary error function.
pub fn std_normal_quantile(u: f64) -> f64 {
    -std::f64::consts::SQRT_2 * erfc_inv(2.0 * u)
}

/// The quantile of the standard gamma distribution (shape `k`, rate 1).
///
/// statrs' own inverse CDF brackets the root on a fixed grid and fails (NaN, or values
/// around 2^42) for small shapes and quantiles. This solves `P(k, x) = u` for `t = ln x` by
/// Newton's method safeguarded by bisection, which converges for every shape: `d/dt P(k, e^t)
/// = x^k e^(-x) / Γ(k)` is positive and available in closed form.
pub fn std_gamma_quantile(k: f64, u: f64) -> f64 {
    use statrs::function::gamma::{gamma_lr, ln_gamma};
    let (mut lo, mut hi) = (-745.0f64, (k + 40.0 * k.sqrt() + 60.0).ln());
    let lg = ln_gamma(k);
    // Start from the small-x approximation x ≈ (u Γ(k + 1))^(1/k) or the mean.
    let guess = ((u.ln() + ln_gamma(k + 1.0)) / k).min(k.ln());
    let mut t = guess.clamp(lo + 1.0, hi - 1e-9);
    for _ in 0..200 {
        let x = t.exp();
        let f = gamma_lr(k, x) - u;
        if f > 0.0 {
            hi = t;
        } else {
            lo = t;
        }
        let slope = (k * t - x - lg).exp();
        let mut next = t - f / slope;
        if !(next.is_finite() && next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        if (next - t).abs() <= 1e-13 * t.abs().max(1.0) {
            return next.exp();
        }
        t = next;
    }
    t.exp()
}

/// The exponential distribution of mean `mean` at quantile `u`: `-mean · ln(1 - u)`.
#[inline]
fn exponential_quantile(mean: f64, u: f64) -> f64 {
    -mean * (-u).ln_1p()
}

/// A uniform draw strictly inside (0, 1), from the top 52 bits of a 64-bit word.
pub fn open_unit(bits: u64) -> f64 {
    ((bits >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use statrs::distribution::{ContinuousCDF, Gamma};

    /// A mixture of two fixed values, each `(weight, value)`.
    fn two_values(a: (f64, f64), b: (f64, f64)) -> Dist {
        let fixed = |(weight, value)| Component {
            weight,
            dist: Dist::Deterministic { value },
        };
        Dist::Mixture {
            components: vec![fixed(a), fixed(b)],
        }
    }

    fn sample_mean(d: &Dist, n: usize) -> f64 {
        // Stratified quantiles: exact up to discretisation, no randomness.
        (0..n)
            .map(|i| d.quantile((i as f64 + 0.5) / n as f64))
            .sum::<f64>()
            / n as f64
    }

    /// The exponential computed inline is the out-of-line one bit for bit, and the
    /// closed form `-mean · ln(1 - u)`.
    #[test]
    fn the_inline_exponential_is_the_general_quantile() {
        let d = Dist::Exponential { mean: 0.003 };
        for i in 1..1000 {
            let u = f64::from(i) / 1000.0;
            assert_eq!(d.quantile(u).to_bits(), d.quantile_of(u).to_bits(), "{u}");
        }
        assert!((d.quantile(0.9) - 0.003 * 10f64.ln()).abs() < 1e-15);
        assert!((d.quantile(0.5) - 0.003 * 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn quantile_means_match_closed_forms() {
        let dists = [
            Dist::Exponential { mean: 2.0 },
            Dist::Deterministic { value: 0.5 },
            Dist::Uniform { min: 1.0, max: 3.0 },
            Dist::Lognormal { mean: 1.0, cv: 0.5 },
            Dist::Gamma { mean: 1.0, cv: 0.7 },
            Dist::Weibull {
                shape: 1.5,
                scale: 1.0,
            },
            Dist::Pareto {
                shape: 3.0,
                scale: 1.0,
            },
            two_values((0.95, 1.0), (0.05, 21.0)),
            Dist::Empirical {
                min: 0.0,
                p50: 1.0,
                p90: 2.0,
                p99: 4.0,
                p999: 8.0,
                max: 10.0,
            },
        ];
        for d in &dists {
            d.validate().unwrap();
            let got = sample_mean(d, 200_000);
            assert!(
                (got - d.mean()).abs() / d.mean() < 5e-3,
                "{d:?}: {got} vs {}",
                d.mean()
            );
        }
    }

    #[test]
    fn gamma_quantile_inverts_the_cdf_at_any_scale() {
        // Regression: statrs' inverse CDF of Gamma(k, rate) returned about 2^42 ns for a
        // 4 ms mean; the quantile must invert the CDF whatever the mean.
        for mean in [1e-6, 4e-3, 1.0, 500.0] {
            for cv in [0.3, 1.0, 2.0] {
                let d = Dist::Gamma { mean, cv };
                let shape = 1.0 / (cv * cv);
                let g = Gamma::new(shape, shape / mean).unwrap();
                for u in [0.01, 0.3, 0.5, 0.9, 0.999] {
                    let x = d.quantile(u);
                    assert!(
                        (g.cdf(x) - u).abs() < 1e-6,
                        "mean {mean} cv {cv} u {u}: x {x}"
                    );
                }
                let m = sample_mean(&d, 20_000);
                assert!((m - mean).abs() / mean < 0.01, "mean {mean} cv {cv}: {m}");
            }
        }
    }

    #[test]
    fn mixture_is_bimodal_in_proportion() {
        let d = two_values((95.0, 1.0), (5.0, 2.0));
        assert_eq!(d.quantile(0.949), 1.0);
        assert_eq!(d.quantile(0.951), 2.0);
        assert!((d.mean() - 1.05).abs() < 1e-12);
    }

    #[test]
    fn normal_quantile_is_accurate() {
        assert!(std_normal_quantile(0.5).abs() < 1e-12);
        assert!((std_normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-9);
        assert!((std_normal_quantile(0.001) + 3.090_232_306_167_813).abs() < 1e-9);
    }

    #[test]
    fn invalid_parameters_are_rejected_with_a_fix() {
        let e = Dist::Pareto {
            shape: 1.0,
            scale: 1.0,
        }
        .validate()
        .unwrap_err();
        assert!(e.fix.contains("greater than 1"));
        assert!(Dist::Exponential { mean: 0.0 }.validate().is_err());
        assert!(Dist::Uniform { min: 2.0, max: 1.0 }.validate().is_err());
    }

    #[test]
    fn open_unit_is_strictly_inside() {
        assert!(open_unit(0) > 0.0);
        assert!(open_unit(u64::MAX) < 1.0);
    }
}
