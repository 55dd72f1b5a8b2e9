//! Interval methods compared by `p99_coverage eval`.

use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::{Run, read, truth};

const P: f64 = 0.99;

fn t_q(p: f64, df: f64) -> f64 {
    use statrs::distribution::StudentsT;
    StudentsT::new(0.0, 1.0, df.max(1.0))
        .unwrap()
        .inverse_cdf(p)
}

/// One run on a geometric grid of candidate values: per replication, the exceedances of
/// each grid value.
struct Grid {
    x: Vec<f64>,
    /// exc[i][j]: replication i's values above x[j].
    exc: Vec<Vec<f64>>,
    n: Vec<f64>,
}

impl Grid {
    fn new(run: &Run, truth: f64) -> Grid {
        let lo = truth * 0.26;
        let m = (16f64.ln() / 0.001) as usize;
        let x: Vec<f64> = (0..m).map(|j| lo * (0.001 * j as f64).exp()).collect();
        let exc = run
            .reps
            .iter()
            .map(|(n, c)| x.iter().map(|&v| n - c.count_le(v)).collect())
            .collect();
        Grid {
            x,
            exc,
            n: run.reps.iter().map(|r| r.0).collect(),
        }
    }
    fn b(&self) -> usize {
        self.n.len()
    }
    /// Pooled exceedance fraction at grid j over the replications `idx`.
    fn u(&self, idx: &[usize], j: usize) -> f64 {
        let (mut e, mut n) = (0.0, 0.0);
        for &i in idx {
            e += self.exc[i][j];
            n += self.n[i];
        }
        e / n
    }
    /// The value where the pooled exceedance over `idx` falls to `target` (linear between
    /// grid points; clamped to the grid).
    fn inv(&self, idx: &[usize], target: f64) -> f64 {
        // u is non-increasing in j.
        let (mut a, mut z) = (0usize, self.x.len() - 1);
        if self.u(idx, a) <= target {
            return self.x[0];
        }
        if self.u(idx, z) > target {
            return self.x[z];
        }
        while z - a > 1 {
            let m = (a + z) / 2;
            if self.u(idx, m) > target {
                a = m
            } else {
                z = m
            }
        }
        let (ua, uz) = (self.u(idx, a), self.u(idx, z));
        let f = if ua > uz {
            (ua - target) / (ua - uz)
        } else {
            1.0
        };
        self.x[a] + f * (self.x[z] - self.x[a])
    }
    /// Index of the grid point nearest at or above x.
    fn at(&self, x: f64) -> usize {
        self.x.partition_point(|&v| v < x).min(self.x.len() - 1)
    }
    /// Per-replication residuals y_i = X_i − u0·n_i at grid j.
    fn resid(&self, j: usize, u0: f64) -> Vec<f64> {
        (0..self.b())
            .map(|i| self.exc[i][j] - u0 * self.n[i])
            .collect()
    }
}

fn moments(v: &[f64]) -> (f64, f64, f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s2 = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    let m3 = v.iter().map(|x| (x - m).powi(3)).sum::<f64>() / n;
    let m4 = v.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n;
    (m, s2, m3, m4)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn quantile_of(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let k = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[k]
}

/// Accept-set inversion over the grid: smallest and largest accepted value.
fn accept_range(g: &Grid, ok: impl Fn(usize) -> bool) -> (f64, f64) {
    let mut lo = f64::NAN;
    let mut hi = f64::NAN;
    for j in 0..g.x.len() {
        if ok(j) {
            if lo.is_nan() {
                lo = g.x[j];
            }
            hi = g.x[j];
        }
    }
    (lo, hi)
}

type Method = (&'static str, fn(&Grid, &[usize], f64, u64) -> (f64, f64));

fn methods() -> Vec<Method> {
    vec![
        ("woodruff-t (current)", |g, all, _, _| {
            let u0 = 1.0 - P;
            let q = g.inv(all, u0);
            let j = g.at(q);
            let b = g.b() as f64;
            let nbar = g.n.iter().sum::<f64>() / b;
            let (_, s2, _, _) = moments(&g.resid(j, u0));
            let h = t_q(0.975, b - 1.0) * s2.sqrt() / (nbar * b.sqrt());
            (g.inv(all, u0 + h), g.inv(all, (u0 - h).max(0.0)))
        }),
        ("woodruff log-exceedance", |g, all, _, _| {
            let u0 = 1.0 - P;
            let q = g.inv(all, u0);
            let j = g.at(q);
            let b = g.b() as f64;
            let nbar = g.n.iter().sum::<f64>() / b;
            let (_, s2, _, _) = moments(&g.resid(j, u0));
            let h = t_q(0.975, b - 1.0) * s2.sqrt() / (nbar * b.sqrt()) / u0;
            (g.inv(all, u0 * h.exp()), g.inv(all, u0 * (-h).exp()))
        }),
        ("woodruff t(Kish df)", |g, all, _, _| {
            let u0 = 1.0 - P;
            let q = g.inv(all, u0);
            let j = g.at(q);
            let b = g.b() as f64;
            let nbar = g.n.iter().sum::<f64>() / b;
            let x: Vec<f64> = (0..g.b()).map(|i| g.exc[i][j]).collect();
            let kish = x.iter().sum::<f64>().powi(2) / x.iter().map(|v| v * v).sum::<f64>();
            let (_, s2, _, _) = moments(&g.resid(j, u0));
            let h = t_q(0.975, (kish - 1.0).max(1.0)) * s2.sqrt() / (nbar * b.sqrt());
            (g.inv(all, u0 + h), g.inv(all, (u0 - h).max(0.0)))
        }),
        ("woodruff t(kurtosis df)", |g, all, _, _| {
            let u0 = 1.0 - P;
            let q = g.inv(all, u0);
            let j = g.at(q);
            let b = g.b() as f64;
            let nbar = g.n.iter().sum::<f64>() / b;
            let (_, s2, _, m4) = moments(&g.resid(j, u0));
            let s2b = s2 * (b - 1.0) / b;
            let kappa = m4 / (s2b * s2b) - 3.0;
            let df = 2.0 / (2.0 / (b - 1.0) + kappa / b);
            let h = t_q(0.975, df.min(b - 1.0)) * s2.sqrt() / (nbar * b.sqrt());
            (g.inv(all, u0 + h), g.inv(all, (u0 - h).max(0.0)))
        }),
        ("quasi-binomial score", |g, all, _, _| {
            let u0 = 1.0 - P;
            let b = g.b() as f64;
            let nn: f64 = g.n.iter().sum();
            let nbar = nn / b;
            let t = t_q(0.975, b - 1.0);
            accept_range(g, |j| {
                let u = g.u(all, j);
                if u <= 0.0 || u >= 1.0 {
                    return false;
                }
                let (_, s2, _, _) = moments(&g.resid(j, u));
                let phi = s2 / (nbar * u * (1.0 - u));
                let se0 = (phi * u0 * (1.0 - u0) / nn).sqrt();
                (u - u0).abs() <= t * se0
            })
        }),
        ("scaled Poisson (Garwood)", |g, all, _, _| {
            let u0 = 1.0 - P;
            let b = g.b() as f64;
            let nn: f64 = g.n.iter().sum();
            let nbar = nn / b;
            let q = g.inv(all, u0);
            let jq = g.at(q);
            let (_, s2, _, _) = moments(&g.resid(jq, u0));
            let phi = (s2 / (nbar * u0 * (1.0 - u0))).max(1e-9);
            let mu0 = u0 * nn / phi;
            accept_range(g, |j| {
                let k = g.u(all, j) * nn / phi;
                let lo = if k <= 0.0 {
                    0.0
                } else {
                    ChiSquared::new(2.0 * k).unwrap().inverse_cdf(0.025) / 2.0
                };
                let hi = ChiSquared::new(2.0 * k + 2.0).unwrap().inverse_cdf(0.975) / 2.0;
                lo <= mu0 && mu0 <= hi
            })
        }),
        ("Johnson t (moments at Q)", |g, all, _, _| {
            let u0 = 1.0 - P;
            let b = g.b() as f64;
            let nbar = g.n.iter().sum::<f64>() / b;
            let q = g.inv(all, u0);
            let (_, s2, m3, _) = moments(&g.resid(g.at(q), u0));
            let t = t_q(0.975, b - 1.0);
            accept_range(g, |j| {
                // D: mean residual at x, whose expectation is 0 at the true quantile.
                let d = nbar * (g.u(all, j) - u0);
                let tj = (d + m3 / (6.0 * s2 * b) + m3 / (3.0 * s2 * s2) * d * d) / (s2 / b).sqrt();
                tj.abs() <= t
            })
        }),
        ("Hall transform (moments at Q)", |g, all, _, _| {
            let u0 = 1.0 - P;
            let b = g.b() as f64;
            let nbar = g.n.iter().sum::<f64>() / b;
            let q = g.inv(all, u0);
            let (_, s2, m3, _) = moments(&g.resid(g.at(q), u0));
            let gam = m3 / s2.powf(1.5);
            let t = t_q(0.975, b - 1.0);
            accept_range(g, |j| {
                let z = nbar * (g.u(all, j) - u0) / s2.sqrt();
                let th = b.sqrt()
                    * (z + gam * z * z / 3.0 + gam * gam * z * z * z / 27.0 + gam / (6.0 * b));
                th.abs() <= t
            })
        }),
        ("sectioning (Nakayama 2014)", |g, all, _, _| {
            let u0 = 1.0 - P;
            let q = g.inv(all, u0);
            let qs: Vec<f64> = (0..g.b()).map(|i| g.inv(&[i], u0)).collect();
            let b = g.b() as f64;
            let s2 = qs.iter().map(|v| (v - q).powi(2)).sum::<f64>() / (b - 1.0);
            let h = t_q(0.975, b - 1.0) * (s2 / b).sqrt();
            (q - h, q + h)
        }),
        ("sectioning-jackknife", |g, all, _, _| {
            let u0 = 1.0 - P;
            let q = g.inv(all, u0);
            let b = g.b() as f64;
            let pseudo: Vec<f64> = (0..g.b())
                .map(|i| {
                    let rest: Vec<usize> = all.iter().copied().filter(|&k| k != i).collect();
                    b * q - (b - 1.0) * g.inv(&rest, u0)
                })
                .collect();
            let (m, s2, _, _) = moments(&pseudo);
            let h = t_q(0.975, b - 1.0) * (s2 / b).sqrt();
            let _ = m;
            (q - h, q + h)
        }),
        ("bootstrap percentile", |g, all, _, seed| {
            let u0 = 1.0 - P;
            let mut rng = Rng(seed * 2654435761 + 1);
            let mut qs: Vec<f64> = (0..999)
                .map(|_| {
                    let idx: Vec<usize> = all.iter().map(|_| rng.below(all.len())).collect();
                    g.inv(&idx, u0)
                })
                .collect();
            (quantile_of(&mut qs, 0.025), quantile_of(&mut qs, 0.975))
        }),
        ("bootstrap-t on exceedance at Q", |g, all, _, seed| {
            let u0 = 1.0 - P;
            let b = g.b() as f64;
            let nbar = g.n.iter().sum::<f64>() / b;
            let q = g.inv(all, u0);
            let jq = g.at(q);
            // The grid point's own pooled exceedance is the bootstrap world's truth.
            let uq = g.u(all, jq);
            let se = |idx: &[usize]| {
                let u = g.u(idx, jq);
                let y: Vec<f64> = idx.iter().map(|&i| g.exc[i][jq] - u * g.n[i]).collect();
                let nb = idx.iter().map(|&i| g.n[i]).sum::<f64>() / b;
                moments(&y).1.sqrt() / (nb * b.sqrt())
            };
            let se0 = se(all);
            let _ = nbar;
            let mut rng = Rng(seed * 2654435761 + 7);
            let mut ts: Vec<f64> = (0..999)
                .map(|_| {
                    let idx: Vec<usize> = all.iter().map(|_| rng.below(all.len())).collect();
                    let s = se(&idx);
                    if s > 0.0 {
                        (g.u(&idx, jq) - uq) / s
                    } else {
                        0.0
                    }
                })
                .collect();
            let (tlo, thi) = (quantile_of(&mut ts, 0.025), quantile_of(&mut ts, 0.975));
            // Accept x when (u(x) − u0)/se0 lies in [tlo, thi]; u decreasing in x, so the
            // upper end of x comes from tlo.
            (
                g.inv(all, (u0 + thi * se0).max(0.0)),
                g.inv(all, (u0 + tlo * se0).max(0.0)),
            )
        }),
        ("bootstrap-t on quantile", |g, all, _, seed| {
            let u0 = 1.0 - P;
            let b = g.b() as f64;
            let t = t_q(0.975, b - 1.0);
            let wood = |idx: &[usize]| {
                let q = g.inv(idx, u0);
                let j = g.at(q);
                let u = g.u(idx, j);
                let y: Vec<f64> = idx.iter().map(|&i| g.exc[i][j] - u * g.n[i]).collect();
                let nb = idx.iter().map(|&i| g.n[i]).sum::<f64>() / b;
                let h = t * moments(&y).1.sqrt() / (nb * b.sqrt());
                (q, (g.inv(idx, u0 - h) - g.inv(idx, u0 + h)) / (2.0 * t))
            };
            let (q, se) = wood(all);
            let mut rng = Rng(seed * 2654435761 + 11);
            let mut ts: Vec<f64> = (0..999)
                .map(|_| {
                    let idx: Vec<usize> = all.iter().map(|_| rng.below(all.len())).collect();
                    let (qs, ss) = wood(&idx);
                    if ss > 0.0 { (qs - q) / ss } else { 0.0 }
                })
                .collect();
            let (tlo, thi) = (quantile_of(&mut ts, 0.025), quantile_of(&mut ts, 0.975));
            (q - thi * se, q - tlo * se)
        }),
    ]
}

pub fn eval(rho: f64, files: &[String]) {
    let truth = truth(rho) * 1e9;
    for file in files {
        let runs = read(file);
        let grids: Vec<Grid> = runs.iter().map(|r| Grid::new(r, truth)).collect();
        println!(
            "{file}: {} runs of {} replications, truth {:.3} ms",
            runs.len(),
            runs[0].reps.len(),
            truth * 1e-6
        );
        println!("| method | covered | truth below / above | mean width / truth | median width |");
        println!("|---|---:|---|---:|---:|");
        let only: Option<String> = std::env::var("ONLY").ok();
        for (name, m) in methods() {
            if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
                continue;
            }
            let (mut cov, mut below, mut above) = (0, 0, 0);
            let mut widths = Vec::new();
            let gate: f64 = std::env::var("GATE")
                .ok()
                .map_or(0.0, |v| v.parse().unwrap());
            let mut reported = 0;
            for (k, g) in grids.iter().enumerate() {
                let all: Vec<usize> = (0..g.b()).collect();
                if kish_at_q(g) < gate {
                    continue;
                }
                reported += 1;
                let (lo, hi) = m(g, &all, truth, k as u64 + 1);
                if lo <= truth && truth <= hi {
                    cov += 1;
                } else if truth < lo {
                    below += 1;
                } else {
                    above += 1;
                }
                widths.push((hi - lo) / truth);
            }
            if widths.is_empty() {
                println!("| {name} | none of {} reported | | | |", grids.len());
                continue;
            }
            let mean = widths.iter().sum::<f64>() / widths.len() as f64;
            let med = quantile_of(&mut widths, 0.5);
            println!(
                "| {name} | {cov}/{reported} of {} | {below} / {above} | {mean:.3} | {med:.3} |",
                grids.len()
            );
        }
    }
}

/// Per-run diagnostics: Q̂/ξ, ū(ξ)/u0, Woodruff se/u0, Kish effective number at Q̂.
pub fn diag(rho: f64, file: &str) {
    let truth = truth(rho) * 1e9;
    let u0 = 1.0 - P;
    for (k, r) in read(file).iter().enumerate() {
        let g = Grid::new(r, truth);
        let all: Vec<usize> = (0..g.b()).collect();
        let b = g.b() as f64;
        let nbar = g.n.iter().sum::<f64>() / b;
        let q = g.inv(&all, u0);
        let j = g.at(q);
        let (_, s2, m3, _) = moments(&g.resid(j, u0));
        let se = s2.sqrt() / (nbar * b.sqrt());
        let x: Vec<f64> = (0..g.b()).map(|i| g.exc[i][j]).collect();
        let kish = x.iter().sum::<f64>().powi(2) / x.iter().map(|v| v * v).sum::<f64>();
        let jt = g.at(truth);
        let xt: Vec<f64> = (0..g.b()).map(|i| g.exc[i][jt]).collect();
        let kish_t = xt.iter().sum::<f64>().powi(2) / xt.iter().map(|v| v * v).sum::<f64>();
        let (_, s2t, _, _) = moments(&g.resid(jt, u0));
        println!(
            "{k} {:.4} {:.4} {:.4} {:.2} {:.3} {:.2} {:.4}",
            q / truth,
            g.u(&all, jt) / u0,
            se / u0,
            kish,
            m3 / s2.powf(1.5),
            kish_t,
            s2t.sqrt() / (nbar * b.sqrt()) / u0
        );
    }
}

fn kish_at_q(g: &Grid) -> f64 {
    let all: Vec<usize> = (0..g.b()).collect();
    let j = g.at(g.inv(&all, 1.0 - P));
    let x: Vec<f64> = (0..g.b()).map(|i| g.exc[i][j]).collect();
    x.iter().sum::<f64>().powi(2) / x.iter().map(|v| v * v).sum::<f64>()
}
