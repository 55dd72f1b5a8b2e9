//! Requests and the per-replication request stream.
//!
//! A [`RequestStream`] is built from a scenario, a seed and a replication index. Its three
//! random streams (arrivals, sizes, keys) are independent of the strategy, so every strategy
//! in a replication — and live mode replaying that replication — sees the same requests.

use std::sync::Arc;

use rand::RngExt;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};

use super::arrival::{ArrivalProcess, ArrivalSpec, Trace};
use super::dist::{Dist, open_unit};
use crate::rng::{SimRng, Stream, stream_rng};
use crate::time::Nanos;

/// The size of a request, fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Size {
    /// A quantile `u ∈ (0, 1)`: the server group turns it into a service demand through its
    /// service-time distribution.
    Quantile(f64),
    /// An explicit demand in seconds at speed 1 (from a trace).
    Work(f64),
}

impl Size {
    /// The work this request brings to a server whose service-time distribution is `dist`
    /// (seconds at speed 1).
    #[inline]
    pub fn work(self, dist: &Dist) -> f64 {
        match self {
            Size::Quantile(u) => dist.quantile(u),
            Size::Work(w) => w,
        }
    }
}

/// One request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// Sequence number within the replication, from 0.
    pub id: u64,
    /// Arrival time at the balancer.
    pub arrival: Nanos,
    /// Size (see [`Size`]).
    pub size: Size,
    /// Key, for hashing strategies.
    pub key: u64,
}

/// The distribution of request keys (`[keys]` in a scenario file).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySpec {
    /// Every request has its own random 64-bit key (the default).
    #[default]
    Unique,
    /// Keys uniform over `0..count`.
    Uniform {
        /// Number of distinct keys.
        count: u64,
    },
    /// Keys `0..count` with Zipf popularity: key `k` has weight `1 / (k + 1)^exponent`.
    Zipf {
        /// Number of distinct keys.
        count: u64,
        /// Zipf exponent `s` (≥ 0).
        exponent: f64,
    },
}

enum KeySampler {
    Unique,
    Uniform(u64),
    Zipf(Zipf<f64>),
}

impl KeySampler {
    #[inline]
    fn sample(&self, rng: &mut SimRng) -> u64 {
        match self {
            KeySampler::Unique => rng.random::<u64>(),
            KeySampler::Uniform(n) => rng.random_range(0..*n),
            KeySampler::Zipf(z) => z.sample(rng) as u64 - 1,
        }
    }
}

/// Everything that defines the request stream of a scenario.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The arrival process.
    pub arrivals: ArrivalSpec,
    /// The loaded trace, for trace replay.
    pub trace: Option<Arc<Trace>>,
    /// The key distribution.
    pub keys: KeySpec,
    /// No arrival at or after this time (seconds).
    pub horizon: f64,
}

/// The requests of one replication, in arrival order.
pub struct RequestStream {
    process: ArrivalProcess,
    arrival_rng: SimRng,
    size_rng: SimRng,
    key_rng: SimRng,
    keys: KeySampler,
    horizon: f64,
    next_id: u64,
}

impl RequestStream {
    /// The request stream of replication `replication` of a scenario with seed `seed`.
    pub fn new(workload: &Workload, seed: u64, replication: u64) -> RequestStream {
        let mut arrival_rng = stream_rng(seed, replication, Stream::Arrivals, 0);
        let process = ArrivalProcess::new(
            &workload.arrivals,
            workload.trace.clone(),
            workload.horizon,
            &mut arrival_rng,
        );
        let keys = match &workload.keys {
            KeySpec::Unique => KeySampler::Unique,
            KeySpec::Uniform { count } => KeySampler::Uniform((*count).max(1)),
            KeySpec::Zipf { count, exponent } => match Zipf::new((*count).max(1) as f64, *exponent)
            {
                Ok(z) => KeySampler::Zipf(z),
                Err(_) => KeySampler::Uniform((*count).max(1)),
            },
        };
        RequestStream {
            process,
            arrival_rng,
            size_rng: stream_rng(seed, replication, Stream::Sizes, 0),
            key_rng: stream_rng(seed, replication, Stream::Keys, 0),
            keys,
            horizon: workload.horizon,
            next_id: 0,
        }
    }
}

impl Iterator for RequestStream {
    type Item = Request;

    #[inline(always)]
    fn next(&mut self) -> Option<Request> {
        let (t, work) = self.process.next_arrival(&mut self.arrival_rng)?;
        if t >= self.horizon {
            return None;
        }
        // Draw size and key even when a trace fixes the work, so streams stay aligned.
        let u = open_unit(self.size_rng.random::<u64>());
        let key = self.keys.sample(&mut self.key_rng);
        let id = self.next_id;
        self.next_id += 1;
        Some(Request {
            id,
            arrival: Nanos::from_secs_f64(t),
            size: work.map_or(Size::Quantile(u), Size::Work),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(keys: KeySpec) -> Workload {
        Workload {
            arrivals: ArrivalSpec::Poisson { rate: 100.0 },
            trace: None,
            keys,
            horizon: 10.0,
        }
    }

    #[test]
    fn same_seed_same_requests() {
        let w = workload(KeySpec::Uniform { count: 10 });
        let a: Vec<_> = RequestStream::new(&w, 42, 3).collect();
        let b: Vec<_> = RequestStream::new(&w, 42, 3).collect();
        let c: Vec<_> = RequestStream::new(&w, 42, 4).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(
            a.iter()
                .all(|r| r.key < 10 && r.arrival < Nanos::from_secs_f64(10.0))
        );
        assert!(
            a.windows(2)
                .all(|w| w[0].arrival <= w[1].arrival && w[0].id + 1 == w[1].id)
        );
    }

    #[test]
    fn zipf_keys_favour_small_keys() {
        let w = workload(KeySpec::Zipf {
            count: 100,
            exponent: 1.2,
        });
        let reqs: Vec<_> = RequestStream::new(&w, 1, 0).collect();
        let zero = reqs.iter().filter(|r| r.key == 0).count();
        let fifty = reqs.iter().filter(|r| r.key == 50).count();
        assert!(reqs.iter().all(|r| r.key < 100));
        assert!(zero > 10 * fifty.max(1), "{zero} vs {fifty}");
    }
}
