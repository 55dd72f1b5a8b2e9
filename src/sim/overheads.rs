//! What live mode's calibration adds to the model of a run: passed to the engine with the
//! run (never stored on the [`crate::scenario::Scenario`], which stays what the file says).

/// Calibrated overheads per server, in scenario seconds; none (the default) for runs of
/// scenario files. A server without an entry has no overhead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overheads {
    /// Per server, added to every service time, whatever the server's speed: per-request
    /// server overhead that occupies a worker, such as a sleep's overshoot.
    pub service: Vec<f64>,
    /// Per server, added to the response time of every request it serves, occupying no
    /// server: the network round trip and client overhead.
    pub extra_latency: Vec<f64>,
}

impl Overheads {
    /// No overhead: the model as the scenario file states it.
    pub const NONE: Overheads = Overheads {
        service: Vec::new(),
        extra_latency: Vec::new(),
    };

    /// The same overheads on each of `servers` servers.
    pub fn uniform(servers: usize, service: f64, extra_latency: f64) -> Overheads {
        Overheads {
            service: vec![service; servers],
            extra_latency: vec![extra_latency; servers],
        }
    }

    /// Server `i`'s service overhead (0 without an entry).
    pub fn service(&self, i: usize) -> f64 {
        self.service.get(i).copied().unwrap_or(0.0).max(0.0)
    }

    /// Server `i`'s extra latency (0 without an entry).
    pub fn extra_latency(&self, i: usize) -> f64 {
        self.extra_latency.get(i).copied().unwrap_or(0.0).max(0.0)
    }
}
