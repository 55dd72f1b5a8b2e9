//! Streaming metrics of one run (one replication of one strategy).
//!
//! Memory does not grow with run length: latencies go into an HDR histogram, queue lengths
//! and utilisation into time integrals. [`RunMetrics::summarize`] reduces a run to the
//! figures listed in [`METRICS`], which the statistics layer then combines across
//! replications.

use hdrhistogram::Histogram;

use crate::time::Nanos;

/// Which direction of a metric is better (used by comparisons and regression checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Smaller values are better (latency, rejections, imbalance).
    Lower,
    /// Larger values are better (throughput, fairness).
    Higher,
    /// Neither: a descriptive figure.
    Neither,
}

/// A metric reported per strategy.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    /// Name in CSV files.
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// What it measures.
    pub doc: &'static str,
    /// Which direction is better.
    pub better: Better,
}

const fn def(
    name: &'static str,
    unit: &'static str,
    doc: &'static str,
    better: Better,
) -> MetricDef {
    MetricDef {
        name,
        unit,
        doc,
        better,
    }
}

/// Every metric of [`RunSummary::values`], in order.
pub const METRICS: &[MetricDef] = &[
    def(
        "latency_mean",
        "s",
        "mean response time (queueing + service) of requests served",
        Better::Lower,
    ),
    def("latency_p50", "s", "median response time", Better::Lower),
    def(
        "latency_p90",
        "s",
        "90th percentile response time",
        Better::Lower,
    ),
    def(
        "latency_p99",
        "s",
        "99th percentile response time",
        Better::Lower,
    ),
    def(
        "latency_p999",
        "s",
        "99.9th percentile response time",
        Better::Lower,
    ),
    def("latency_max", "s", "largest response time", Better::Lower),
    def(
        "throughput",
        "req/s",
        "requests that arrived in the measured window and were served, per second",
        Better::Higher,
    ),
    def(
        "rejected_fraction",
        "1",
        "fraction of requests refused (queue full or no server up)",
        Better::Lower,
    ),
    def(
        "error_fraction",
        "1",
        "fraction of requests that failed (their server crashed, or was down and not yet detected)",
        Better::Lower,
    ),
    def(
        "utilization_mean",
        "1",
        "mean over servers of busy worker-time / (workers × window)",
        Better::Neither,
    ),
    def(
        "utilization_max",
        "1",
        "utilisation of the busiest server",
        Better::Lower,
    ),
    def(
        "utilization_cv",
        "1",
        "coefficient of variation of per-server utilisation (0 = even)",
        Better::Lower,
    ),
    def(
        "utilization_max_over_mean",
        "1",
        "busiest server's utilisation over the mean (1 = even)",
        Better::Lower,
    ),
    def(
        "jain_index",
        "1",
        "Jain's fairness index of per-server utilisation (1 = even, 1/n = one server does all)",
        Better::Higher,
    ),
    def(
        "queue_mean",
        "requests",
        "time-average number waiting, averaged over servers",
        Better::Lower,
    ),
    def(
        "queue_max",
        "requests",
        "largest number waiting at any server",
        Better::Lower,
    ),
    def(
        "in_system_mean",
        "requests",
        "time-average number in the whole system (waiting + in service), L in Little's law",
        Better::Neither,
    ),
    def(
        "accepted_rate",
        "req/s",
        "requests accepted per second of window, λ in Little's law",
        Better::Neither,
    ),
];

/// Index of a metric in [`METRICS`] by name.
pub fn metric_index(name: &str) -> Option<usize> {
    METRICS.iter().position(|m| m.name == name)
}

/// Time integrals of one server over the measured window.
#[derive(Clone, Debug, Default)]
pub struct ServerAccumulator {
    /// Worker count (for utilisation).
    pub workers: u32,
    /// Measured requests accepted by this server.
    pub requests: u64,
    /// ∫ busy workers dt over the window (worker-nanoseconds).
    pub busy_area: f64,
    /// ∫ queue length dt over the window (request-nanoseconds).
    pub queue_area: f64,
    /// Largest queue length seen during the window.
    pub queue_max: u32,
    last: Nanos,
}

impl ServerAccumulator {
    /// An accumulator for a server with `workers` workers.
    pub fn new(workers: u32) -> ServerAccumulator {
        ServerAccumulator {
            workers,
            ..Default::default()
        }
    }

    /// Accounts for the state `(busy, queued)` having held from the last call until `now`,
    /// clipped to the window `[from, to)`.
    #[inline]
    pub fn advance(&mut self, now: Nanos, busy: u32, queued: u32, from: Nanos, to: Nanos) {
        let a = self.last.max(from);
        let b = now.min(to);
        if b > a {
            let dt = (b.0 - a.0) as f64;
            self.busy_area += f64::from(busy) * dt;
            self.queue_area += f64::from(queued) * dt;
        }
        if now > from && self.last < to && queued > self.queue_max {
            self.queue_max = queued;
        }
        self.last = now;
    }
}

/// Everything measured in one run.
#[derive(Clone, Debug)]
pub struct RunMetrics {
    /// Response times of measured requests (nanoseconds).
    pub latency: Histogram<u64>,
    /// Exact sum of measured response times (seconds), for an exact mean.
    pub latency_sum: f64,
    /// Largest measured response time.
    pub latency_max: Nanos,
    /// Requests that arrived in the window.
    pub arrived: u64,
    /// Of those, refused because the chosen server's queue was full.
    pub rejected: u64,
    /// Of those, refused because no server was up.
    pub unroutable: u64,
    /// Of those, failed because their server crashed (or was down when they reached it).
    pub failed: u64,
    /// Per server.
    pub servers: Vec<ServerAccumulator>,
    /// Start of the window.
    pub from: Nanos,
    /// End of the window.
    pub to: Nanos,
}

/// Largest latency the histogram resolves (about 73 minutes); longer ones saturate.
pub const LATENCY_HIGH_NS: u64 = 1 << 42;

/// An empty latency histogram: 1 ns to [`LATENCY_HIGH_NS`], 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_HIGH_NS, 3).expect("valid histogram bounds")
}

impl RunMetrics {
    /// Empty metrics for servers with the given worker counts, measuring `[from, to)`.
    pub fn new(workers: &[u32], from: Nanos, to: Nanos) -> RunMetrics {
        RunMetrics {
            latency: latency_histogram(),
            latency_sum: 0.0,
            latency_max: Nanos::ZERO,
            arrived: 0,
            rejected: 0,
            unroutable: 0,
            failed: 0,
            servers: workers.iter().map(|&w| ServerAccumulator::new(w)).collect(),
            from,
            to,
        }
    }

    /// Records a measured request's response time.
    #[inline]
    pub fn record_latency(&mut self, latency: Nanos) {
        self.latency.saturating_record(latency.0.max(1));
        self.latency_sum += latency.as_secs_f64();
        self.latency_max = self.latency_max.max(latency);
    }

    /// Reduces the run to its figures.
    pub fn summarize(&self) -> RunSummary {
        let window = (self.to - self.from).as_secs_f64();
        let window_ns = (self.to - self.from).0 as f64;
        let served = self.latency.len();
        let q = |p: f64| {
            if served == 0 {
                f64::NAN
            } else {
                self.latency.value_at_quantile(p) as f64 * 1e-9
            }
        };
        let utils: Vec<f64> = self
            .servers
            .iter()
            .map(|s| s.busy_area / (f64::from(s.workers) * window_ns))
            .collect();
        let n = utils.len() as f64;
        let mean_u = utils.iter().sum::<f64>() / n;
        let max_u = utils.iter().copied().fold(0.0, f64::max);
        let var_u = utils.iter().map(|u| (u - mean_u).powi(2)).sum::<f64>() / n;
        let sum_sq = utils.iter().map(|u| u * u).sum::<f64>();
        let jain = if sum_sq > 0.0 {
            utils.iter().sum::<f64>().powi(2) / (n * sum_sq)
        } else {
            f64::NAN
        };
        let accepted: u64 = self.servers.iter().map(|s| s.requests).sum();
        let in_system = self
            .servers
            .iter()
            .map(|s| s.busy_area + s.queue_area)
            .sum::<f64>()
            / window_ns;
        let values = vec![
            if served == 0 {
                f64::NAN
            } else {
                self.latency_sum / served as f64
            },
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            if served == 0 {
                f64::NAN
            } else {
                self.latency_max.as_secs_f64()
            },
            served as f64 / window,
            if self.arrived == 0 {
                0.0
            } else {
                (self.rejected + self.unroutable) as f64 / self.arrived as f64
            },
            if self.arrived == 0 {
                0.0
            } else {
                self.failed as f64 / self.arrived as f64
            },
            mean_u,
            max_u,
            if mean_u > 0.0 {
                var_u.sqrt() / mean_u
            } else {
                f64::NAN
            },
            if mean_u > 0.0 {
                max_u / mean_u
            } else {
                f64::NAN
            },
            jain,
            self.servers.iter().map(|s| s.queue_area).sum::<f64>() / (n * window_ns),
            f64::from(self.servers.iter().map(|s| s.queue_max).max().unwrap_or(0)),
            in_system,
            accepted as f64 / window,
        ];
        debug_assert_eq!(values.len(), METRICS.len());
        let servers = self
            .servers
            .iter()
            .zip(&utils)
            .map(|(s, &u)| ServerSummary {
                requests: s.requests as f64,
                share: if accepted == 0 {
                    0.0
                } else {
                    s.requests as f64 / accepted as f64
                },
                utilization: u,
                queue_mean: s.queue_area / window_ns,
                queue_max: f64::from(s.queue_max),
            })
            .collect();
        RunSummary { values, servers }
    }
}

/// The figures of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// One value per entry of [`METRICS`], in order (NaN when undefined, e.g. no request served).
    pub values: Vec<f64>,
    /// Per server, in server order.
    pub servers: Vec<ServerSummary>,
}

/// The figures of one server in one run.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSummary {
    /// Measured requests it accepted.
    pub requests: f64,
    /// Its share of all accepted requests.
    pub share: f64,
    /// Busy worker-time over workers × window.
    pub utilization: f64,
    /// Time-average number waiting.
    pub queue_mean: f64,
    /// Largest number waiting.
    pub queue_max: f64,
}

/// Names of the per-server figures, in the order of [`ServerSummary::as_array`].
pub const SERVER_METRICS: [&str; 5] = [
    "requests",
    "share",
    "utilization",
    "queue_mean",
    "queue_max",
];

impl ServerSummary {
    /// The figures in the order of [`SERVER_METRICS`].
    pub fn as_array(&self) -> [f64; 5] {
        [
            self.requests,
            self.share,
            self.utilization,
            self.queue_mean,
            self.queue_max,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulator_clips_to_window() {
        let mut a = ServerAccumulator::new(2);
        let (from, to) = (Nanos(10), Nanos(20));
        // Each call reports the state that held since the previous call.
        a.advance(Nanos(5), 0, 0, from, to); // (0, 0) on [0, 5): outside the window
        a.advance(Nanos(15), 2, 3, from, to); // (2, 3) on [5, 15) → [10, 15)
        a.advance(Nanos(25), 1, 0, from, to); // (1, 0) on [15, 25) → [15, 20)
        assert_eq!(a.busy_area, 2.0 * 5.0 + 5.0);
        assert_eq!(a.queue_area, 3.0 * 5.0);
        assert_eq!(a.queue_max, 3);
    }

    #[test]
    fn summary_of_an_even_cluster() {
        let mut m = RunMetrics::new(&[1, 1], Nanos(0), Nanos(1_000));
        for s in &mut m.servers {
            s.busy_area = 500.0;
            s.requests = 5;
        }
        m.record_latency(Nanos(100));
        m.record_latency(Nanos(300));
        m.arrived = 10;
        let s = m.summarize();
        let v = |name| s.values[metric_index(name).unwrap()];
        assert!((v("latency_mean") - 200e-9).abs() < 1e-15);
        assert_eq!(v("utilization_mean"), 0.5);
        assert_eq!(v("jain_index"), 1.0);
        assert_eq!(v("utilization_cv"), 0.0);
        assert_eq!(s.servers[0].share, 0.5);
    }
}
