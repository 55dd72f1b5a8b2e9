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
//! **Degrees of freedom.** `t` has the *effective* degrees of freedom of the replications,
//! not `b − 1`: Kish's effective number `n_eff = (Σ xᵢ)² / Σ xᵢ²` of the replications'
//! counts `xᵢ` beyond `Q̂` (Kish 1965, *Survey Sampling*, Wiley), less one — the
//! "equivalent degrees of freedom" of a spread that few units dominate (Potthoff, Woodbury &
//! Manton 1992, JASA 87). Values beyond a tail quantile come in bursts (one long queue
//! excursion each), and a window short against the correlation time holds at most one or
//! two: on M/M/1 at ρ = 0.9 with 20 windows of 1,000 service times, the exceedances of the
//! pooled p99 sit in the equivalent of 2.1 windows on average, and the spread of 20 values
//! of which 18 are near zero says little about the spread. With `t(n_eff − 1)` the
//! interval widens where, and only where, that happens (at windows of 50,000 service
//! times `n_eff` is close to `b` and the interval barely moves).
//!
//! **What no interval can do.** In that same configuration 10.6% of runs (106 of 1,000)
//! hold *no* request beyond the true p99 in all 18,000 of their requests: every interval
//! bounded by the observed values misses the truth there, so none covers more than about
//! 89%. Measured coverage of the true p99 (1,000 runs of 20 windows of 1,000 service times;
//! the table of every method tried is in `tests/coverage.rs`): this interval 890 of 1,000
//! (mean width 74% of the truth), Woodruff with `t(b − 1)` 792 (49%). The reports warn at
//! such windows (`lbsim::steady::warnings`); the fix is longer windows or more of them.
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
//! values span (≤ 128 entries each), not by the run length, and its entries are stored as
//! varint deltas (2–3 bytes each): this is the memory a run keeps per replication.

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
///
/// Every replication keeps one per pooled source until the end of the run, so its size
/// sets the run's memory per replication. The entries are stored as LEB128 varints of
/// (bucket − previous bucket, count in the bucket), usually 2–3 bytes where the plain pair
/// takes 10, with a checkpoint every `CHECKPOINT_EVERY` entries so that
/// [`Cdf::count_le`] seeks by binary search and decodes at most that many entries. The
/// encoding is lossless: every count read back is the one recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cdf {
    /// The entries, encoded.
    bytes: Vec<u8>,
    /// Where entries `k · CHECKPOINT_EVERY` start.
    checkpoints: Vec<Checkpoint>,
    /// Number of values.
    total: u64,
    /// Entries encoded (for the checkpoints while building).
    entries: u32,
    /// Bucket of the last entry (while building).
    last_bucket: u16,
}

/// Entries between two checkpoints of a [`Cdf`].
const CHECKPOINT_EVERY: u32 = 32;

/// The decoder's state at an entry of a [`Cdf`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Checkpoint {
    /// Offset of the entry in the encoded bytes.
    offset: u32,
    /// Bucket of the entry before (0 for the first).
    previous: u16,
    /// Bucket of the entry.
    bucket: u16,
    /// Values in the buckets before it.
    below: u64,
}

fn put_varint(bytes: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        bytes.push((v as u8) | 0x80);
        v >>= 7;
    }
    bytes.push(v as u8);
}

/// The varint at `*at`, advancing `*at` (0 past the end: the encoder wrote every byte).
fn get_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0u32);
    while let Some(&b) = bytes.get(*at) {
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 || shift >= 63 {
            break;
        }
        shift += 7;
    }
    v
}

impl Cdf {
    /// Appends the entry of `bucket` (above every bucket so far) with `cumulative` values
    /// at most its top (at least the total so far).
    fn push(&mut self, bucket: u16, cumulative: u64) {
        if self.entries.is_multiple_of(CHECKPOINT_EVERY) {
            self.checkpoints.push(Checkpoint {
                offset: self.bytes.len() as u32,
                previous: self.last_bucket,
                bucket,
                below: self.total,
            });
        }
        put_varint(
            &mut self.bytes,
            u64::from(bucket.wrapping_sub(self.last_bucket)),
        );
        put_varint(&mut self.bytes, cumulative - self.total);
        self.entries += 1;
        self.last_bucket = bucket;
        self.total = cumulative;
    }

    /// Drops spare capacity: kept for every replication until the end of the run.
    fn shrink(mut self) -> Cdf {
        self.bytes.shrink_to_fit();
        self.checkpoints.shrink_to_fit();
        self
    }

    /// The entries from checkpoint `k` on, as `(bucket, values below it, values in it)`.
    fn entries_from(&self, k: usize) -> impl Iterator<Item = (u16, u64, u64)> + '_ {
        let c = self.checkpoints.get(k).copied().unwrap_or(Checkpoint {
            offset: self.bytes.len() as u32,
            ..Checkpoint::default()
        });
        let (mut at, mut bucket, mut below) = (c.offset as usize, c.previous, c.below);
        std::iter::from_fn(move || {
            if at >= self.bytes.len() {
                return None;
            }
            bucket = bucket.wrapping_add(get_varint(&self.bytes, &mut at) as u16);
            let count = get_varint(&self.bytes, &mut at);
            let entry = (bucket, below, count);
            below += count;
            Some(entry)
        })
    }

    /// The distribution of the values recorded in `h` (each at its bucket's median
    /// equivalent value).
    pub fn from_histogram(h: &Histogram<u64>) -> Cdf {
        Cdf::from_medians(h.iter_recorded().map(|v| {
            (
                h.median_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            )
        }))
    }

    /// The distribution of values given as `(value, count)`, values increasing: what
    /// [`Cdf::from_histogram`] makes of a histogram whose recorded buckets have these
    /// median equivalent values and counts.
    pub fn from_medians(values: impl IntoIterator<Item = (u64, u64)>) -> Cdf {
        let mut cdf = Cdf::default();
        let mut pending: Option<(u16, u64)> = None;
        let mut total = 0u64;
        for (value, count) in values {
            let b = bucket_of(value);
            total += count;
            match pending {
                Some((last, _)) if last == b => {}
                Some((last, cumulative)) => cdf.push(last, cumulative),
                None => {}
            }
            pending = Some((b, total));
        }
        if let Some((last, cumulative)) = pending {
            cdf.push(last, cumulative);
        }
        cdf.shrink()
    }

    /// Number of values.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Number of values at most `x`, interpolated linearly inside `x`'s bucket.
    pub fn count_le(&self, x: f64) -> f64 {
        // The last checkpoint whose bucket lies wholly at or below `x`: the first entry
        // that does not is at it or after it.
        let k = self
            .checkpoints
            .partition_point(|c| bucket_range(c.bucket).1 <= x)
            .saturating_sub(1);
        for (b, below, inside) in self.entries_from(k) {
            let (lo, hi) = bucket_range(b);
            if hi <= x {
                continue;
            }
            if x < lo {
                return below as f64;
            }
            return below as f64 + inside as f64 * ((x - lo) / (hi - lo)).clamp(0.0, 1.0);
        }
        self.total as f64
    }

    /// `(bucket, cumulative count)` pairs, for storage (shard files).
    pub fn to_pairs(&self) -> Vec<[u64; 2]> {
        self.entries_from(0)
            .map(|(b, below, inside)| [u64::from(b), below + inside])
            .collect()
    }

    /// The inverse of [`Cdf::to_pairs`]; `None` unless buckets and counts both increase.
    pub fn from_pairs(pairs: &[[u64; 2]]) -> Option<Cdf> {
        let mut cdf = Cdf::default();
        for &[b, c] in pairs {
            let b = u16::try_from(b).ok()?;
            if (cdf.entries > 0 && cdf.last_bucket >= b) || cdf.total > c {
                return None;
            }
            cdf.push(b, c);
        }
        Some(cdf.shrink())
    }
}

/// The pooled `p` quantile and what its interval and differences need: computed once per
/// strategy, source and `p` ([`crate::runner::StrategyResult`] keeps them), as every
/// report, ranking and comparison reads the same ones.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fit {
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

/// What a pooled quantile fit reads of a pooled distribution: a latency histogram, or a
/// server's sparse counts of one ([`crate::metrics::ServerPool`]), which read the same.
pub trait Quantiles {
    /// How many values it holds (`Histogram::len`).
    fn count(&self) -> u64;
    /// `Histogram::value_at_quantile`.
    fn value_at_quantile(&self, q: f64) -> u64;
}

impl Quantiles for Histogram<u64> {
    fn count(&self) -> u64 {
        self.len()
    }

    fn value_at_quantile(&self, q: f64) -> u64 {
        Histogram::value_at_quantile(self, q)
    }
}

/// The fit of the pooled `p` quantile of `pooled`, the merge of the replications whose
/// compact distributions are `cdfs`.
pub(crate) fn fit(pooled: &impl Quantiles, cdfs: &[&Cdf], p: f64) -> Fit {
    let b = cdfs.len();
    let total = pooled.count();
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
    // The interval: Student's t with the effective degrees of freedom.
    let h = t_quantile_real(0.975, effective_df(cdfs, q, p)) * se_p;
    let (low, high) = (at((p - h).max(0.0)), at((p + h).min(1.0)));
    // The density for differences: the difference quotient over the interval of
    // `t(b − 1)`, a span that does not depend on how the tail is clustered.
    let h = t975(b - 1) * se_p;
    let (p_lo, p_hi) = ((p - h).max(0.0), (p + h).min(1.0));
    let (q_lo, q_hi) = (at(p_lo), at(p_hi));
    let density = if q_hi > q_lo {
        (p_hi - p_lo) / (q_hi - q_lo)
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

/// The degrees of freedom of the spread of `b` replications at the pooled quantile `q`:
/// Kish's effective number `(Σ xᵢ)² / Σ xᵢ²` of the replications' counts `xᵢ` on the rare
/// side of `q` (above it for `p ≥ 0.5`, at or below it otherwise), less one, between 1 and
/// `b − 1`. When one replication holds most of the values beyond a tail quantile, the
/// spread over `b` replications carries about as much information as one over a couple of
/// them, and t with `b − 1` degrees of freedom would understate it.
fn effective_df(cdfs: &[&Cdf], q: f64, p: f64) -> f64 {
    let b = cdfs.len() as f64;
    let rare = |c: &Cdf| {
        let below = c.count_le(q);
        if p >= 0.5 {
            c.total() as f64 - below
        } else {
            below
        }
    };
    let (sum, squares) = cdfs.iter().fold((0.0, 0.0), |(s, s2), c| {
        let x = rare(c);
        (s + x, s2 + x * x)
    });
    let n_eff = if squares > 0.0 {
        sum * sum / squares
    } else {
        b
    };
    (n_eff - 1.0).clamp(1.0, (b - 1.0).max(1.0))
}

/// The `p` quantile of Student's t with `df` (real, ≥ 1) degrees of freedom.
fn t_quantile_real(p: f64, df: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    match StudentsT::new(0.0, 1.0, df) {
        Ok(t) => t.inverse_cdf(p),
        Err(_) => f64::NAN,
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
pub fn quantile_estimate(pooled: &impl Quantiles, cdfs: &[&Cdf], p: f64, scale: f64) -> Estimate {
    fitted_estimate(&fit(pooled, cdfs, p), scale)
}

/// [`quantile_estimate`] of a fit already made.
pub(crate) fn fitted_estimate(f: &Fit, scale: f64) -> Estimate {
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
    fitted_difference((&fit(a.0, a.1, p), a.1), (&fit(b.0, b.1, p), b.1), p, scale)
}

/// [`quantile_difference`] of fits already made, each with its replications' compact
/// distributions.
pub(crate) fn fitted_difference(
    (fa, ca): (&Fit, &[&Cdf]),
    (fb, cb): (&Fit, &[&Cdf]),
    p: f64,
    scale: f64,
) -> (Estimate, f64) {
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
    let (za, zb) = (fa.influence(ca, p), fb.influence(cb, p));
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

    /// The plain form the compact [`Cdf`] replaced: buckets and cumulative counts side by
    /// side, read by binary search.
    fn plain(h: &Histogram<u64>) -> (Vec<u16>, Vec<u64>) {
        let (mut buckets, mut cumulative) = (Vec::<u16>::new(), Vec::<u64>::new());
        let mut total = 0u64;
        for v in h.iter_recorded() {
            let b = bucket_of(h.median_equivalent(v.value_iterated_to()));
            total += v.count_at_value();
            if buckets.last() == Some(&b) {
                *cumulative.last_mut().unwrap() = total;
            } else {
                buckets.push(b);
                cumulative.push(total);
            }
        }
        (buckets, cumulative)
    }

    fn plain_count_le((buckets, cumulative): &(Vec<u16>, Vec<u64>), x: f64) -> f64 {
        let pos = buckets.partition_point(|&b| bucket_range(b).1 <= x);
        let below = if pos == 0 { 0 } else { cumulative[pos - 1] };
        let Some(&b) = buckets.get(pos) else {
            return below as f64;
        };
        let (lo, hi) = bucket_range(b);
        if x < lo {
            return below as f64;
        }
        let inside = (cumulative[pos] - below) as f64;
        below as f64 + inside * ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    }

    proptest::proptest! {
        #[test]
        fn compact_cdf_reads_exactly_as_the_plain_one(
            values in proptest::collection::vec((1u64..1u64 << 36, 1u64..100_000), 0..400),
            probes in proptest::collection::vec(0f64..1e11, 1..40),
        ) {
            let mut h = latency_histogram();
            for &(v, n) in &values {
                h.record_n(v.min(crate::metrics::LATENCY_HIGH_NS), n).unwrap();
            }
            let c = Cdf::from_histogram(&h);
            let p = plain(&h);
            proptest::prop_assert_eq!(c.total(), p.1.last().copied().unwrap_or(0));
            let pairs: Vec<[u64; 2]> =
                p.0.iter().zip(&p.1).map(|(&b, &n)| [u64::from(b), n]).collect();
            proptest::prop_assert_eq!(&c.to_pairs(), &pairs);
            proptest::prop_assert_eq!(&Cdf::from_pairs(&pairs).unwrap(), &c);
            // Bucket edges, values recorded and random points, bit for bit.
            let edges = p.0.iter().flat_map(|&b| {
                let (lo, hi) = bucket_range(b);
                [lo, hi, (lo + hi) / 2.0, hi - 1e-9]
            });
            let recorded = values.iter().map(|&(v, _)| v as f64);
            for x in edges.chain(recorded).chain(probes.iter().copied()).chain([0.0, -1.0]) {
                proptest::prop_assert_eq!(
                    c.count_le(x).to_bits(),
                    plain_count_le(&p, x).to_bits(),
                    "at {}", x
                );
            }
        }
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
    fn effective_degrees_of_freedom_count_the_replications_that_hold_the_tail() {
        // 10 replications of 1,000 values each, values 1..=1000 µs; the p99 is near
        // 990 µs. Spread evenly, the tail is in every replication: b − 1.
        let even: Vec<Histogram<u64>> = (0..10)
            .map(|_| {
                let mut h = latency_histogram();
                for v in 1..=1000u64 {
                    h.record(v * 1000).unwrap();
                }
                h
            })
            .collect();
        let cdfs: Vec<Cdf> = even.iter().map(Cdf::from_histogram).collect();
        let refs: Vec<&Cdf> = cdfs.iter().collect();
        assert!((effective_df(&refs, 990_000.0, 0.99) - 9.0).abs() < 1e-9);
        // Below the median the rare side is the count at or below: still b − 1.
        assert!((effective_df(&refs, 10_000.0, 0.01) - 9.0).abs() < 1e-9);
        // All of the tail in one replication (the others stop at 900 µs): 1.
        let burst: Vec<Histogram<u64>> = (0..10)
            .map(|r| {
                let mut h = latency_histogram();
                let top = if r == 3 { 1000 } else { 900 };
                for v in 1..=top {
                    h.record(v * 1000).unwrap();
                }
                h
            })
            .collect();
        let cdfs: Vec<Cdf> = burst.iter().map(Cdf::from_histogram).collect();
        let refs: Vec<&Cdf> = cdfs.iter().collect();
        assert_eq!(effective_df(&refs, 950_000.0, 0.99), 1.0);
        // Two replications with equal tails: Kish's n_eff = 2, so one degree of freedom;
        // the interval is then wider than with t(b − 1).
        let mut pooled = latency_histogram();
        for h in &burst {
            pooled.add(h).unwrap();
        }
        let e = quantile_estimate(&pooled, &refs, 0.99, 1.0);
        let q = e.mean;
        let resid: Vec<f64> = refs
            .iter()
            .map(|c| c.count_le(q) - 0.99 * c.total() as f64)
            .collect();
        let m = resid.iter().sum::<f64>() / 10.0;
        let sd = (resid.iter().map(|x| (x - m).powi(2)).sum::<f64>() / 9.0).sqrt();
        let n_bar = pooled.len() as f64 / 10.0;
        let se = sd / (n_bar * 10f64.sqrt());
        let plain_low = pooled.value_at_quantile(0.99 - t975(9) * se) as f64;
        assert_eq!(
            e.low,
            pooled.value_at_quantile(0.99 - t_quantile_real(0.975, 1.0) * se) as f64
        );
        assert!(
            e.low < plain_low && plain_low < e.mean,
            "{e:?} vs {plain_low}"
        );
        assert_eq!(e.high, pooled.max() as f64);
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
