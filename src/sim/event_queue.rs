//! The future-event list: a binary heap ordered by (time, scheduling sequence).
//!
//! Tie-break: events due at the same nanosecond run in the order they were scheduled
//! (first scheduled, first run). Together with seeded random streams this makes every run
//! deterministic.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::time::Nanos;

struct Entry<E> {
    time: Nanos,
    seq: u64,
    event: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl<E> Eq for Entry<E> {}
impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// A priority queue of events of type `E`.
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `time`.
    #[inline]
    pub fn push(&mut self, time: Nanos, event: E) {
        self.heap.push(Entry {
            time,
            seq: self.seq,
            event,
        });
        self.seq += 1;
    }

    /// Takes the next scheduling sequence number without queueing anything: for an event
    /// kept outside the heap (the pending arrival) that must still be ordered as if it had
    /// been pushed now.
    #[inline]
    pub fn reserve_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq - 1
    }

    /// The (time, sequence) of the earliest event, if any.
    #[inline]
    pub fn peek_key(&self) -> Option<(Nanos, u64)> {
        self.heap.peek().map(|e| (e.time, e.seq))
    }

    /// Removes and returns the earliest event (first scheduled among equal times).
    #[inline]
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        self.heap.pop().map(|e| (e.time, e.event))
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_sequence_numbers_order_like_pushes() {
        let mut q = EventQueue::default();
        q.push(Nanos(5), "a");
        let reserved = q.reserve_seq();
        q.push(Nanos(5), "b");
        assert!((Nanos(5), reserved) > q.peek_key().unwrap());
        q.pop();
        assert!((Nanos(5), reserved) < q.peek_key().unwrap());
    }

    #[test]
    fn earliest_first_and_fifo_on_ties() {
        let mut q = EventQueue::default();
        q.push(Nanos(5), "b1");
        q.push(Nanos(1), "a");
        q.push(Nanos(5), "b2");
        q.push(Nanos(5), "b3");
        q.push(Nanos(9), "c");
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!["a", "b1", "b2", "b3", "c"]);
    }
}
