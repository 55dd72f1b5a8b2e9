//! The future-event list: a 4-ary min-heap ordered by (time, scheduling sequence).
//!
//! Tie-break: events due at the same nanosecond run in the order they were scheduled
//! (first scheduled, first run). Together with seeded random streams this makes every run
//! deterministic. Keys are unique (the sequence never repeats), so the order of pops is
//! the same whatever the heap's shape: this heap pops exactly what `std`'s
//! `BinaryHeap` did.
//!
//! Why not `BinaryHeap`: its `push` writes the entry into the vector and reads it back
//! whole before sifting, and on x86-64 that read of a just-written, piecewise-stored entry
//! stalls store forwarding (a seventh of the engine's completion handling on 10 servers).
//! Here the entry being sifted stays in registers and is written once, at its place; four
//! children per node halve the depth.
//!
//! A pop leaves the root's slot as a hole ([`EventQueue::pop`]): most completions start
//! the server's next job at once, and the push of its completion then fills the hole by
//! one sift down from the root (a "replace top"), where a pop's sift down and a push's
//! sift up took two. Any other operation fills the hole first as a pop would have (the
//! last entry sifted down from the root). Keys are unique, so which entries sit where
//! never changes what is popped next.
//!
//! Events scheduled a constant delay after the current time (probes and their answers,
//! [`super::probe`]) become due in the order they were scheduled, so they need no heap: a
//! FIFO beside it ([`EventQueue::push_fifo`]) keeps them in O(1) each, and [`EventQueue::pop`]
//! takes whichever head has the smaller (time, sequence) key. Keys come from the one
//! sequence counter, so the order of pops is exactly the heap's. A FIFO push that would
//! come before the FIFO's tail goes to the heap instead: the order stays exact whatever
//! the delays.

use std::collections::VecDeque;

use crate::time::Nanos;

#[derive(Clone, Copy)]
struct Entry<E> {
    /// `(time << 64) | seq`: one comparison orders by time, then sequence.
    key: u128,
    event: E,
}

/// Children per node.
const ARITY: usize = 4;

fn key(time: Nanos, seq: u64) -> u128 {
    (u128::from(time.0) << 64) | u128::from(seq)
}

/// A priority queue of events of type `E`.
pub struct EventQueue<E> {
    heap: Vec<Entry<E>>,
    /// Events pushed with [`EventQueue::push_fifo`], in increasing key order.
    fifo: VecDeque<Entry<E>>,
    seq: u64,
    /// Whether `heap[0]` is a hole: the root was popped and nothing has taken its place
    /// yet (the next push does, or [`EventQueue::settle`]).
    hole: bool,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: Vec::new(),
            fifo: VecDeque::new(),
            seq: 0,
            hole: false,
        }
    }
}

impl<E: Copy> EventQueue<E> {
    /// Schedules `event` at `time`.
    #[inline]
    pub fn push(&mut self, time: Nanos, event: E) {
        let seq = self.seq;
        self.seq += 1;
        self.push_keyed(time, seq, event);
    }

    /// Schedules `event` at `time` with sequence number `seq`, taken earlier
    /// ([`EventQueue::reserve_seq`]) or just now ([`EventQueue::push`], whose code this
    /// is: always inlined there, as it was written in it).
    #[inline(always)]
    fn push_keyed(&mut self, time: Nanos, seq: u64, event: E) {
        let entry = Entry {
            key: key(time, seq),
            event,
        };
        if self.hole {
            // The popped root's slot: the entry takes it and sinks to its place.
            self.hole = false;
            self.sift_down(entry);
            return;
        }
        // The slot is overwritten below (or is the entry's own place): the entry itself
        // is never read back from memory.
        let mut i = self.heap.len();
        self.heap.push(entry);
        while i > 0 {
            let parent = (i - 1) / ARITY;
            let p = self.heap[parent];
            if entry.key >= p.key {
                break;
            }
            self.heap[i] = p;
            i = parent;
        }
        self.heap[i] = entry;
    }

    /// Schedules `event` at `time`, for an event due a constant delay after the current
    /// time: such events come due in the order they were scheduled, and a FIFO keeps them
    /// in O(1) instead of the heap's O(log n). Pops are exactly as with
    /// [`EventQueue::push`]; an event due before the FIFO's last one goes to the heap.
    #[inline]
    pub fn push_fifo(&mut self, time: Nanos, event: E) {
        let seq = self.seq;
        self.seq += 1;
        self.push_fifo_keyed(time, seq, event);
    }

    /// [`EventQueue::push_fifo`] with sequence number `seq`, taken earlier
    /// ([`EventQueue::reserve_seq`]): for an event held aside for a while (see
    /// [`super::probe`]), ordered as if it had been pushed when `seq` was taken.
    #[inline]
    pub fn push_fifo_keyed(&mut self, time: Nanos, seq: u64, event: E) {
        let entry = Entry {
            key: key(time, seq),
            event,
        };
        match self.fifo.back() {
            Some(last) if last.key > entry.key => self.push_keyed(time, seq, event),
            _ => self.fifo.push_back(entry),
        }
    }

    /// Takes `n` sequence numbers, as `n` calls of [`EventQueue::reserve_seq`] would.
    #[inline]
    pub fn skip_seqs(&mut self, n: u64) {
        self.seq += n;
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
    pub fn peek_key(&mut self) -> Option<(Nanos, u64)> {
        self.settle();
        let heap = self.heap.first().map(|e| e.key);
        let key = match self.fifo.front() {
            Some(f) => Some(heap.map_or(f.key, |h| h.min(f.key))),
            None => heap,
        };
        key.map(|k| (Nanos((k >> 64) as u64), k as u64))
    }

    /// The heap's earliest event, if any (a hole filled first, as the next peek would):
    /// a hint of what comes next, for prefetching (the FIFO is not looked at).
    #[inline(always)]
    pub fn hint(&mut self) -> Option<&E> {
        self.settle();
        self.heap.first().map(|e| &e.event)
    }

    /// The heap's second earliest event (the least of the root's children), if the root
    /// has all its children; meant after [`EventQueue::hint`] (with a hole, the root's
    /// children are the earliest). A hint as [`EventQueue::hint`] is.
    #[inline(always)]
    pub fn hint2(&self) -> Option<&E> {
        let c = self.heap.get(1..1 + ARITY)?;
        let a = if c[1].key < c[0].key { &c[1] } else { &c[0] };
        let b = if c[3].key < c[2].key { &c[3] } else { &c[2] };
        Some(if b.key < a.key { &b.event } else { &a.event })
    }

    /// Removes and returns the earliest event (first scheduled among equal times). An
    /// event from the heap leaves its slot as a hole, for the next push to fill.
    #[inline]
    pub fn pop(&mut self) -> Option<(Nanos, E)> {
        self.settle();
        if let Some(f) = self.fifo.front()
            && self.heap.first().is_none_or(|h| f.key < h.key)
        {
            let f = self.fifo.pop_front()?;
            return Some((Nanos((f.key >> 64) as u64), f.event));
        }
        let top = *self.heap.first()?;
        self.hole = true;
        Some((Nanos((top.key >> 64) as u64), top.event))
    }

    /// Fills the hole a pop left, if any, as the pop would have: the last entry takes the
    /// root's slot and sinks to its place. Every peek and pop asks, and most find no hole
    /// (a push filled it): the question is inlined, the filling is not.
    #[inline(always)]
    fn settle(&mut self) {
        if self.hole {
            self.fill_hole();
        }
    }

    /// [`EventQueue::settle`] when there is a hole.
    #[inline(never)]
    fn fill_hole(&mut self) {
        self.hole = false;
        let last = self.heap.pop().expect("a hole is a slot of the heap");
        if !self.heap.is_empty() {
            self.sift_down(last);
        }
    }

    /// Puts `entry` at the root (whose slot is free: a hole, or the last entry's, already
    /// taken out) and sifts it down, moving the smallest child up at each level. The
    /// entry stays in registers and is written once, at its place. Always inlined: into
    /// the push that fills a hole (a completion starting the next job) and into
    /// [`EventQueue::fill_hole`].
    #[inline(always)]
    fn sift_down(&mut self, entry: Entry<E>) {
        let n = self.heap.len();
        let mut i = 0;
        loop {
            let first = ARITY * i + 1;
            if first >= n {
                break;
            }
            let (m, m_key) = self.least_child(first, n);
            if m_key >= entry.key {
                break;
            }
            self.heap[i] = self.heap[m];
            i = m;
        }
        self.heap[i] = entry;
    }

    /// The least of the children of a node, which start at `first` (< `n`, the heap's
    /// length): its index and key. Keys are unique, so any order of comparisons finds the
    /// same child. A node with all its children (most, in a heap of more than a few
    /// entries) compares them as a tournament, two pairs then their winners: one bounds
    /// check, and two comparisons deep instead of three in a row, each a conditional
    /// move (which child is least is as random as the events' times).
    #[inline(always)]
    fn least_child(&self, first: usize, n: usize) -> (usize, u128) {
        if let Some(c) = self.heap.get(first..first + ARITY) {
            let (a, ka) = if c[1].key < c[0].key {
                (1, c[1].key)
            } else {
                (0, c[0].key)
            };
            let (b, kb) = if c[3].key < c[2].key {
                (3, c[3].key)
            } else {
                (2, c[2].key)
            };
            return if kb < ka {
                (first + b, kb)
            } else {
                (first + a, ka)
            };
        }
        let mut m = first;
        let mut m_key = self.heap[first].key;
        for c in first + 1..n {
            let k = self.heap[c].key;
            if k < m_key {
                m = c;
                m_key = k;
            }
        }
        (m, m_key)
    }

    /// Number of pending events.
    pub fn len(&self) -> usize {
        self.heap.len() - usize::from(self.hole) + self.fifo.len()
    }

    /// Whether no event is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// An event pushed late with a sequence number taken earlier runs as if pushed then:
    /// before the events pushed since at its time, after those pushed before; in the FIFO
    /// or, behind a later FIFO entry, in the heap.
    #[test]
    fn events_pushed_late_with_an_early_sequence_number_run_in_its_place() {
        let mut q = EventQueue::default();
        q.push(Nanos(5), "a");
        let early = q.reserve_seq();
        let earlier = q.reserve_seq();
        q.push(Nanos(5), "c");
        q.push_fifo(Nanos(5), "d");
        q.push_fifo_keyed(Nanos(5), earlier, "b2");
        q.push_fifo_keyed(Nanos(5), early, "b1");
        q.skip_seqs(2);
        q.push(Nanos(5), "e");
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!["a", "b1", "b2", "c", "d", "e"]);
        assert_eq!(q.reserve_seq(), early + 7);
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

    #[test]
    fn a_push_after_a_pop_takes_the_roots_slot() {
        let mut q = EventQueue::default();
        for (t, e) in [(4, "d"), (1, "a"), (3, "c"), (6, "f"), (2, "b")] {
            q.push(Nanos(t), e);
        }
        assert_eq!(q.pop(), Some((Nanos(1), "a")));
        // The popped root is a hole: not counted, and filled by the next push, which
        // sinks below the root when it is later than the rest.
        assert_eq!(q.len(), 4);
        q.push(Nanos(5), "e");
        assert_eq!(q.len(), 5);
        assert_eq!(q.pop(), Some((Nanos(2), "b")));
        // A push earlier than every other entry stays at the root.
        q.push(Nanos(2), "b2");
        assert_eq!(q.peek_key(), Some((Nanos(2), 6)));
        // Pops without pushes between them fill each hole as they go.
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!["b2", "c", "d", "e", "f"]);
        assert!(q.is_empty());
        q.push(Nanos(7), "g");
        assert_eq!(q.pop(), Some((Nanos(7), "g")));
        assert!(q.is_empty() && q.pop().is_none());
    }

    #[test]
    fn fifo_and_heap_interleave_by_time_then_sequence() {
        let mut q = EventQueue::default();
        q.push_fifo(Nanos(5), "f1");
        q.push(Nanos(5), "h1");
        q.push_fifo(Nanos(5), "f2");
        q.push(Nanos(2), "h0");
        q.push_fifo(Nanos(7), "f3");
        // Before the FIFO's tail: goes to the heap, still in order.
        q.push_fifo(Nanos(6), "h2");
        assert_eq!(q.len(), 6);
        assert_eq!(q.peek_key(), Some((Nanos(2), 3)));
        let order: Vec<_> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, vec!["h0", "f1", "h1", "f2", "h2", "f3"]);
        assert!(q.is_empty());
    }

    proptest::proptest! {
        /// Any interleaving of pushes (to the heap or the FIFO) and pops gives what
        /// `std`'s `BinaryHeap` of (time, sequence) gives, reserved sequence numbers
        /// included. FIFO pushes are mostly a constant delay after the last popped time
        /// (the engine's use), sometimes any time (which the FIFO hands to the heap).
        /// Peeks are operations of their own (op 6): a peek fills the hole a pop leaves,
        /// and pushes must also meet the hole.
        #[test]
        fn pops_what_a_binary_heap_pops(
            ops in proptest::collection::vec((0u8..7, 0u64..20), 0..400),
        ) {
            use std::cmp::Reverse;
            use std::collections::BinaryHeap;
            let mut q = EventQueue::default();
            let mut std_heap = BinaryHeap::new();
            let mut seq = 0u64;
            let mut now = 0u64;
            for (op, t) in ops {
                match op {
                    0 | 1 => {
                        q.push(Nanos(t), seq);
                        std_heap.push(Reverse((t, seq)));
                        seq += 1;
                    }
                    4 | 5 => {
                        // Op 4: a constant delay after now; op 5: any time.
                        let at = if op == 4 { now + 3 } else { t };
                        q.push_fifo(Nanos(at), seq);
                        std_heap.push(Reverse((at, seq)));
                        seq += 1;
                    }
                    2 => {
                        proptest::prop_assert_eq!(q.reserve_seq(), seq);
                        seq += 1;
                    }
                    6 => {
                        let peek = std_heap.peek().map(|Reverse((t, s))| (Nanos(*t), *s));
                        proptest::prop_assert_eq!(q.peek_key(), peek);
                    }
                    _ => {
                        let want = std_heap.pop().map(|Reverse((t, s))| (Nanos(t), s));
                        if let Some((t, _)) = want {
                            now = t.0;
                        }
                        proptest::prop_assert_eq!(q.pop(), want);
                    }
                }
                proptest::prop_assert_eq!(q.len(), std_heap.len());
                proptest::prop_assert_eq!(q.is_empty(), std_heap.is_empty());
            }
            while let Some(Reverse((t, s))) = std_heap.pop() {
                proptest::prop_assert_eq!(q.pop(), Some((Nanos(t), s)));
            }
            proptest::prop_assert!(q.is_empty());
        }

        /// The hints name the two earliest events of the heap (the second once the root
        /// has all its children), and taking them changes no pop.
        #[test]
        fn hints_are_the_next_two_pops(
            ops in proptest::collection::vec((0u8..4, 0u64..30), 0..400),
        ) {
            use std::collections::BTreeSet;
            let mut q = EventQueue::default();
            let mut all = BTreeSet::new();
            let mut seq = 0u64;
            for (op, t) in ops {
                match op {
                    0 | 1 => {
                        q.push(Nanos(t), seq);
                        all.insert((t, seq));
                        seq += 1;
                    }
                    2 => {
                        let want = all.pop_first().map(|(t, s)| (Nanos(t), s));
                        proptest::prop_assert_eq!(q.pop(), want);
                    }
                    _ => {
                        let mut next = all.iter().map(|&(_, s)| s);
                        let (first, second) = (next.next(), next.next());
                        proptest::prop_assert_eq!(q.hint().copied(), first);
                        let second = second.filter(|_| all.len() > ARITY);
                        proptest::prop_assert_eq!(q.hint2().copied(), second);
                    }
                }
            }
            while let Some((t, s)) = all.pop_first() {
                proptest::prop_assert_eq!(q.pop(), Some((Nanos(t), s)));
            }
        }
    }
}
