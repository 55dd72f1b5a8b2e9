//! Join the idle queue (Lu, Xie, Kliot, Geller, Larus and Greenberg, "Join-Idle-Queue: a
//! novel load balancing algorithm for dynamically scalable web services", Performance
//! 2011): a server that becomes idle reports to the dispatcher, which keeps idle servers
//! in a FIFO "I-queue". A request goes to the head of the I-queue (removing it) when the
//! queue is not empty, and to a uniformly random server otherwise.
//!
//! "Idle" is in this balancer's view: no request of its own in flight (with several
//! balancers each is a dispatcher with its own I-queue). At start every backend is idle
//! and queued in index order. Down backends stay queued but are passed over.

use std::collections::VecDeque;

use super::registry::{About, Parameterless, PickCost, Reads, Split};
use super::{Backends, Outcome, PickContext, Strategy};
use crate::rng::SimRng;
use crate::time::Nanos;

/// Join the idle queue.
#[derive(Debug)]
pub struct JoinIdleQueue {
    rng: SimRng,
    idle: VecDeque<usize>,
    queued: Vec<bool>,
    in_flight: Vec<u32>,
}

impl JoinIdleQueue {
    /// JIQ over `n` backends (grows on demand), random fallback driven by `rng`.
    pub fn new(n: usize, rng: SimRng) -> JoinIdleQueue {
        JoinIdleQueue {
            rng,
            idle: (0..n).collect(),
            queued: vec![true; n],
            in_flight: vec![0; n],
        }
    }

    fn grow(&mut self, n: usize) {
        while self.queued.len() < n {
            let i = self.queued.len();
            self.queued.push(true);
            self.in_flight.push(0);
            self.idle.push_back(i);
        }
    }
}

impl Strategy for JoinIdleQueue {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        self.grow(backends.len());
        if let Some(pos) = self
            .idle
            .iter()
            .position(|&i| backends.get(i).is_some_and(|b| b.up))
        {
            let i = self.idle.remove(pos)?;
            self.queued[i] = false;
            return Some(i);
        }
        super::random::uniform_up(backends, &mut self.rng)
    }

    fn on_dispatch(&mut self, backend: usize, _now: Nanos) {
        self.grow(backend + 1);
        self.in_flight[backend] += 1;
        if self.queued[backend] {
            // Dispatched by the random fallback while queued cannot happen (the queue was
            // empty of up backends), but keep the invariant if a caller routes directly.
            self.queued[backend] = false;
            self.idle.retain(|&i| i != backend);
        }
    }

    fn on_complete(&mut self, backend: usize, _latency: Nanos, _outcome: Outcome, _now: Nanos) {
        self.grow(backend + 1);
        let f = &mut self.in_flight[backend];
        *f = f.saturating_sub(1);
        if *f == 0 && !self.queued[backend] {
            self.queued[backend] = true;
            self.idle.push_back(backend);
        }
    }
}

/// `kind = "jiq"`: no parameters.
impl Parameterless for JoinIdleQueue {
    const ABOUT: About = About {
        kind: "jiq",
        aliases: &[],
        follows: "join the idle queue (Lu et al. 2011): idle servers first, else random",
        knobs: &[],
        reads: Reads::NOTHING,
        split: Split::Dynamic,
    };
    const COST: PickCost = PickCost::CONSTANT;
    fn start(n: usize, rng: crate::rng::SimRng) -> JoinIdleQueue {
        JoinIdleQueue::new(n, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Stream, stream_rng};
    use crate::strategy::Balancer;

    #[test]
    fn idle_servers_first_in_the_order_they_became_idle() {
        let rng = stream_rng(1, 0, Stream::Strategy, 0);
        let mut b = Balancer::new(Box::new(JoinIdleQueue::new(3, rng)), &[1, 1, 1]);
        let p: Vec<usize> = (0..3).map(|_| b.route(Nanos(0), 0).unwrap()).collect();
        assert_eq!(p, vec![0, 1, 2]);
        b.complete(2, Nanos(1), Outcome::Ok, Nanos(1));
        b.complete(0, Nanos(1), Outcome::Ok, Nanos(1));
        assert_eq!(b.route(Nanos(2), 0), Some(2));
        assert_eq!(b.route(Nanos(2), 0), Some(0));
        // Nobody idle: random, never down.
        b.set_up(1, false);
        for _ in 0..50 {
            let i = b.route(Nanos(3), 0).unwrap();
            assert_ne!(i, 1);
        }
        for i in 0..3 {
            b.set_up(i, false);
        }
        assert_eq!(b.route(Nanos(3), 0), None);
    }
}
