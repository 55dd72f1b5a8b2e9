//! Percentiles from the pooled distribution of all replications, with 95% intervals that
//! hold for dependent output at any run length.
//!
//! **Point estimate.** The `p` quantile of the merged histogram of every replication's
//! measured requests, `Q̂ = F̂⁻¹(p)`. The average of per-replication quantiles is *not* a
//! consistent estimator of the steady-state quantile: a short window's p99 is biased (on
//! M/M/1 at ρ = 0.9, −37% with windows of 1,000 service times), and more replications only
//! narrow the interval around the wrong value. The pooled `F̂(x) = Σᵢ cᵢ(x) / Σᵢ nᵢ`
//! (`cᵢ(x)` of replication `i`'s `nᵢ` requests took at most `x`) converges to the
//! steady-state distribution as replications grow, whatever the window.
//!
//! **Interval.** Requests inside a replication are dependent, but replications are
//! independent and identically distributed, so `F̂(x)` is a ratio of sums of i.i.d. pairs
//! `(cᵢ, nᵢ)`: a cluster sample in survey-sampling terms. Its standard error at the pooled
//! quantile follows from the ratio estimator's linearisation,
//! `se(F̂) = sd(cᵢ − p·nᵢ) / (n̄·√b)` over the `b` replications, and the interval is
//! Woodruff's: `[F̂⁻¹(p − t·se), F̂⁻¹(p + t·se)]` with `t = t(0.975, b − 1)` (Woodruff 1952,
//! "Confidence intervals for medians and other position measures", JASA 47; for cluster
//! samples and tail quantiles, Sitter & Wu 2001, "A note on Woodruff confidence intervals
//! for quantiles", Statistics & Probability Letters 52). It is asymmetric, as a tail
//! quantile's uncertainty is.
//!
//! **Differences.** Paired comparisons (common random numbers) use the Bahadur
//! representation `Q̂ − ξ ≈ −(F̂(ξ) − p) / f(ξ)` (Bahadur 1966, Ann. Math. Statist. 37), so
//! each replication contributes `zᵢ = −(cᵢ − p·nᵢ) / (n̄·f̂)` and `Q̂_b − Q̂_a` has the
//! Student-t interval of the paired `z` differences. The density `f̂` is the difference
//! quotient of `F̂` over the Woodruff interval, `2·t·se / (F̂⁻¹(p + t·se) − F̂⁻¹(p − t·se))`,
//! the finite-difference estimator of Chu & Nakayama (2012, "Confidence intervals for
//! quantiles when applying variance-reduction techniques", ACM TOMACS 22(2)). Sectioning
//! (Nakayama 2014, same journal) was the alternative: it centres per-replication quantiles
//! on the pooled one, and their short-window bias then inflates the interval (to near 100%
//! coverage at 1,000 service times), where the ratio form stays at 95%.
//!
//! **What each replication keeps.** `cᵢ(x)` is needed at the pooled quantile, which is
//! known only once every replication is in, so each replication keeps a compact [`Cdf`]:
//! its counts in logarithmic buckets 1/128 of an octave wide (at most 0.8% of the value),
//! read with linear interpolation inside a bucket. Its size is bounded by the octaves the
//! values span (≤ 128 entries each), not by the run length.

use hdrhistogram::Histogram;

use super::{Estimate, t975};

/// Sub-buckets per octave (a power of two): bucket widths are at most 1/128 of the value.
const SUB: u64 = 128;
const SUB_BITS: u32 = 7;

/// The bucket of a value (monotone; exact below 128).
fn bucket_of(v: u64) -> u16 {
    if v < SUB {
        return v as u16;
    }
    let e = 63 - v.leading_zeros(); // v in [2^e, 2^(e+1)), e ≥ 7
    let m = (v >> (e - SUB_BITS)) & (SUB - 1);
    ((u64::from(e - SUB_BITS + 1)) * SUB + m) as u16
}

/// The values `[lo, hi)` of bucket `i`.
fn bucket_range(i: u16) -> (f64, f64) {
    let i = u64::from(i);
    if i < SUB {
        return (i as f64, (i + 1) as f64);
    }
    let shift = i / SUB - 1;
    let m = i % SUB;
    let lo = (SUB + m) << shift;
    (lo as f64, (lo + (1 << shift)) as f64)
}

/// One replication's distribution, compactly: cumulative counts per non-empty bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cdf {
    buckets: Vec<u16>,
    cumulative: Vec<u64>,
}

impl Cdf {
    /// The distribution of the values recorded in `h` (each at its bucket's median
    /// equivalent value).
    pub fn from_histogram(h: &Histogram<u64>) -> Cdf {
        let mut cdf = Cdf::default();
        let mut total = 0u64;
        for v in h.iter_recorded() {
            let b = bucket_of(h.median_equivalent(v.value_iterated_to()));
            total += v.count_at_value();
            if cdf.buckets.last() == Some(&b) {
                *cdf.cumulative.last_mut().expect("same length") = total;
            } else {
                cdf.buckets.push(b);
                cdf.cumulative.push(total);
            }
        }
        cdf
    }

    /// Number of values.
    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Number of values at most `x`, interpolated linearly inside `x`'s bucket.
    pub fn count_le(&self, x: f64) -> f64 {
        let pos = self.buckets.partition_point(|&b| bucket_range(b).1 <= x);
        let below = if pos == 0 {
            0
        } else {
            self.cumulative[pos - 1]
        };
        let Some(&b) = self.buckets.get(pos) else {
            return below as f64;
        };
        let (lo, hi) = bucket_range(b);
        if x < lo {
            return below as f64;
        }
        let inside = (self.cumulative[pos] - below) as f64;
        below as f64 + inside * ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    }

    /// `(bucket, cumulative count)` pairs, for storage (shard files).
    pub fn to_pairs(&self) -> Vec<[u64; 2]> {
        self.buckets
            .iter()
            .zip(&self.cumulative)
            .map(|(&b, &c)| [u64::from(b), c])
            .collect()
    }

    /// The inverse of [`Cdf::to_pairs`]; `None` unless buckets and counts both increase.
    pub fn from_pairs(pairs: &[[u64; 2]]) -> Option<Cdf> {
        let mut cdf = Cdf::default();
        for &[b, c] in pairs {
            let b = u16::try_from(b).ok()?;
            if cdf.buckets.last().is_some_and(|&l| l >= b)
                || cdf.cumulative.last().is_some_and(|&l| l > c)
            {
                return None;
            }
            cdf.buckets.push(b);
            cdf.cumulative.push(c);
        }
        Some(cdf)
    }
}

/// The pooled `p` quantile and what its interval and differences need.
#[derive(Clone, Copy, Debug)]
struct Fit {
    /// Pooled quantile (histogram units), NaN when nothing was recorded.
    q: f64,
    /// Woodruff interval (histogram units).
    low: f64,
    high: f64,
    /// Estimated density at `q` (per histogram unit); infinite when the interval is a
    /// single value.
    density: f64,
    /// Mean values per replication.
    n_bar: f64,
    b: usize,
}

fn fit(pooled: &Histogram<u64>, cdfs: &[&Cdf], p: f64) -> Fit {
    let b = cdfs.len();
    let total = pooled.len();
    if total == 0 || b == 0 {
        return Fit {
            q: f64::NAN,
            low: f64::NAN,
            high: f64::NAN,
            density: f64::NAN,
            n_bar: 0.0,
            b,
        };
    }
    let at = |p: f64| pooled.value_at_quantile(p.clamp(0.0, 1.0)) as f64;
    let q = at(p);
    let n_bar = cdfs.iter().map(|c| c.total() as f64).sum::<f64>() / b as f64;
    if b < 2 {
        return Fit {
            q,
            low: f64::NAN,
            high: f64::NAN,
            density: f64::NAN,
            n_bar,
            b,
        };
    }
    let e: Vec<f64> = cdfs
        .iter()
        .map(|c| c.count_le(q) - p * c.total() as f64)
        .collect();
    let mean = e.iter().sum::<f64>() / b as f64;
    let var = e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (b - 1) as f64;
    let se_p = var.sqrt() / (n_bar * (b as f64).sqrt());
    let h = t975(b - 1) * se_p;
    let (p_lo, p_hi) = ((p - h).max(0.0), (p + h).min(1.0));
    let (low, high) = (at(p_lo), at(p_hi));
    let density = if high > low {
        (p_hi - p_lo) / (high - low)
    } else {
        f64::INFINITY
    };
    Fit {
        q,
        low,
        high,
        density,
        n_bar,
        b,
    }
}

impl Fit {
    /// Each replication's contribution `zᵢ` to `Q̂ − ξ` (histogram units).
    fn influence(&self, cdfs: &[&Cdf], p: f64) -> Vec<f64> {
        cdfs.iter()
            .map(|c| {
                if !self.density.is_finite() || self.n_bar == 0.0 {
                    0.0
                } else {
                    -(c.count_le(self.q) - p * c.total() as f64) / (self.n_bar * self.density)
                }
            })
            .collect()
    }
}

/// The pooled `p` quantile of `pooled` (the merge of the replications whose compact
/// distributions are `cdfs`), times `scale`, with its 95% Woodruff interval. Fewer than two
/// replications: no interval (NaN ends).
pub fn quantile_estimate(pooled: &Histogram<u64>, cdfs: &[&Cdf], p: f64, scale: f64) -> Estimate {
    let f = fit(pooled, cdfs, p);
    Estimate {
        mean: f.q * scale,
        low: f.low * scale,
        high: f.high * scale,
        n: f.b,
    }
}

/// The pooled quantile difference `Q̂_b − Q̂_a` of two strategies run on the same
/// replications (same order), times `scale`, with the paired 95% interval of the Bahadur
/// representation; and the half-width an unpaired comparison would give.
pub fn quantile_difference(
    a: (&Histogram<u64>, &[&Cdf]),
    b: (&Histogram<u64>, &[&Cdf]),
    p: f64,
    scale: f64,
) -> (Estimate, f64) {
    let (fa, fb) = (fit(a.0, a.1, p), fit(b.0, b.1, p));
    let mean = (fb.q - fa.q) * scale;
    let n = fa.b.min(fb.b);
    if n < 2 || !mean.is_finite() {
        let e = Estimate {
            mean,
            low: f64::NAN,
            high: f64::NAN,
            n,
        };
        return (e, f64::NAN);
    }
    let (za, zb) = (fa.influence(a.1, p), fb.influence(b.1, p));
    let var = |z: &[f64]| {
        let m = z.iter().sum::<f64>() / z.len() as f64;
        z.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (z.len() - 1) as f64
    };
    let d: Vec<f64> = za.iter().zip(&zb).map(|(x, y)| y - x).collect();
    let t = t975(n - 1);
    let hw = t * (var(&d) / n as f64).sqrt() * scale;
    let unpaired = t * ((var(&za) + var(&zb)) / n as f64).sqrt() * scale;
    (
        Estimate {
            mean,
            low: mean - hw,
            high: mean + hw,
            n,
        },
        unpaired,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::latency_histogram;

    #[test]
    fn buckets_are_monotone_and_contain_their_values() {
        let mut last = 0u16;
        for v in (1u64..5000).chain([1 << 20, (1 << 20) + 12_345, 1 << 41, (1 << 52) + 3]) {
            let b = bucket_of(v);
            assert!(b >= last, "{v}");
            last = b;
            let (lo, hi) = bucket_range(b);
            assert!(lo <= v as f64 && (v as f64) < hi, "{v} not in [{lo}, {hi})");
            assert!(hi - lo <= (v as f64 / 128.0).max(1.0), "{v}");
        }
    }

    #[test]
    fn cdf_counts_and_round_trips() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let c = Cdf::from_histogram(&h);
        assert_eq!(c.total(), 1000);
        assert_eq!(c.count_le(0.0), 0.0);
        assert_eq!(c.count_le(1e9), 1000.0);
        // Within a bucket's width (0.8%) of the truth.
        let mid = c.count_le(500_000.0);
        assert!((mid - 500.0).abs() <= 5.0, "{mid}");
        assert_eq!(Cdf::from_pairs(&c.to_pairs()).unwrap(), c);
        assert!(Cdf::from_pairs(&[[5, 3], [4, 4]]).is_none());
        assert!(Cdf::from_pairs(&[[4, 3], [5, 2]]).is_none());
    }

    /// Replication `r` of a synthetic output: uniform values, shifted by `r`'s own offset
    /// (a between-replication effect that the interval must carry).
    fn replication(r: u64, shift: u64) -> Histogram<u64> {
        let mut h = latency_histogram();
        for v in 0..2000u64 {
            h.record(10_000 + v * 50 + (r % 5) * 3000 + shift).unwrap();
        }
        h
    }

    #[test]
    fn pooled_quantile_interval_and_pairing() {
        let reps: Vec<Histogram<u64>> = (0..20).map(|r| replication(r, 0)).collect();
        let mut pooled = latency_histogram();
        for h in &reps {
            pooled.add(h).unwrap();
        }
        let cdfs: Vec<Cdf> = reps.iter().map(Cdf::from_histogram).collect();
        let refs: Vec<&Cdf> = cdfs.iter().collect();
        let e = quantile_estimate(&pooled, &refs, 0.5, 1.0);
        assert_eq!(e.mean, pooled.value_at_quantile(0.5) as f64);
        assert!(e.low < e.mean && e.mean < e.high, "{e:?}");
        assert_eq!(e.n, 20);
        // One replication: a figure without an interval.
        let one = quantile_estimate(&reps[0], &refs[..1], 0.5, 1.0);
        assert!(one.mean.is_finite() && one.low.is_nan());
        // The same output shifted by a constant: the paired difference is the shift, with
        // an interval far narrower than the unpaired one.
        let shifted: Vec<Histogram<u64>> = (0..20).map(|r| replication(r, 777)).collect();
        let mut pooled_b = latency_histogram();
        for h in &shifted {
            pooled_b.add(h).unwrap();
        }
        let cdfs_b: Vec<Cdf> = shifted.iter().map(Cdf::from_histogram).collect();
        let refs_b: Vec<&Cdf> = cdfs_b.iter().collect();
        let (d, unpaired) = quantile_difference((&pooled, &refs), (&pooled_b, &refs_b), 0.5, 1.0);
        assert!((d.mean - 777.0).abs() < 60.0, "{d:?}");
        assert!(d.half_width() < 0.2 * unpaired, "{d:?} vs {unpaired}");
    }
}
