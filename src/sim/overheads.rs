//! What live mode's calibration adds to the model of a run: passed to the engine with the
//! run (never stored on the [`crate::scenario::Scenario`], which stays what the file says).

/// Calibrated overheads, in scenario seconds; zero (the default) for runs of scenario
/// files.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Overheads {
    /// Added to every service time, whatever the server's speed: per-request server
    /// overhead that occupies a worker, such as a sleep's overshoot.
    pub service: f64,
    /// Added to every response time, occupying no server: the network round trip and
    /// client overhead.
    pub extra_latency: f64,
}

impl Overheads {
    /// No overhead: the model as the scenario file states it.
    pub const NONE: Overheads = Overheads {
        service: 0.0,
        extra_latency: 0.0,
    };
}
