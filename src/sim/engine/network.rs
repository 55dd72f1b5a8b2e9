//! Answers delayed by the network (`delay` faults): a server's answer reaches its client
//! the fault's `delay` after the server finished, so the client's response time, the
//! balancer's count of requests in flight and its latency samples all include the added
//! round trip. The server itself is free at once: the delay is on the wire.

use super::{Event, Sim};
use crate::sim::server::Job;
use crate::time::Nanos;

/// Answers on their way back, with free slots to reuse.
#[derive(Default)]
pub(super) struct Replies {
    pending: Vec<(u32, Job)>,
    free: Vec<u32>,
}

impl Sim<'_> {
    /// Server `i` finished `job`; its answer reaches the client after `delay`.
    pub(super) fn delay_reply(&mut self, now: Nanos, i: usize, job: Job, delay: Nanos) {
        let r = &mut self.replies;
        let slot = match r.free.pop() {
            Some(k) => {
                r.pending[k as usize] = (i as u32, job);
                k
            }
            None => {
                r.pending.push((i as u32, job));
                (r.pending.len() - 1) as u32
            }
        };
        self.events.push(now + delay, Event::Reply { slot });
    }

    /// A delayed answer reaches its client.
    pub(super) fn reply(&mut self, now: Nanos, slot: u32) {
        let (i, job) = self.replies.pending[slot as usize];
        self.replies.free.push(slot);
        if self.client.is_some() {
            self.attempt_answered(now, i as usize, job);
        } else {
            self.served(now, i as usize, job);
        }
    }
}
