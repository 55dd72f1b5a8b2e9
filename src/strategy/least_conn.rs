//! Least connections, as nginx's `least_conn`: the backend with the fewest requests in
//! flight wins; in the weighted variant the comparison is `in_flight / weight` (nginx
//! compares `conns * best.weight < best.conns * weight`). Ties are broken by smooth
//! weighted round robin among the tied backends, as nginx does — with equal weights that is
//! plain round robin.
//!
//! nginx scans every backend twice per pick. Here the picks are the same, exactly, but come
//! from an index of the view kept up to date as it changes ([`Strategy::on_view`]): one
//! [`BucketQueue`] per distinct weight, filing that weight's backends by in-flight count,
//! and a [`Tournament`] over the queues' least ratios `count / weight`. The backends at the
//! least ratio (a ratio class) are the least buckets of the weights at that ratio.
//!
//! A pick adds `weight` to the smooth-round-robin counter of every backend of the class:
//! that is one counter of picks per bucket ("picks made from this bucket"), and a member's
//! counter is its key plus `weight ×` that count, so the order of the members of a bucket
//! never changes while they stay in it: each bucket is ordered by key — once picked from.
//! Under a steady load only the least bucket is picked from; the one above it (the busy
//! backends) takes a member at each dispatch and loses one at each completion, unordered
//! (a push and a swap-remove, see [`Bucket`]). A bucket picked from of 128 members or
//! more keeps them in a [`Ring`] by key (O(1) to file, take out and pick: its keys are
//! close together and picked from the top down), those the ring turns away in a heap.
//!
//! Where the time goes (cost bench, equal weights, load 0.8, 2026-11-28): at 1,000 servers
//! the least bucket's heap pop (a pick) was 13% of a run, the engine's event queue and
//! metrics most of the rest; at 10,000 the pop 16%, `unfile` 8% (the swap-remove's write
//! to the moved member's place, a cache miss). Tried and not kept: the least bucket as a
//! queue in descending key order with a heap beside it for keys out of order (a backend
//! comes back from its request with a key anywhere among those waiting: as slow as the
//! heap); a 4-ary heap (1.10-1.18x this one). On the cost bench's cluster of weights 1 to 4
//! (`w/`, 2026-11-28, helper lcw) the pop was 20% of a run at 10,000 servers (the idle
//! bucket: about 6,800 backends); the ring took it out (0.86× the heap's CPU time unweighted,
//! 0.91× weighted; 0.93–0.95× at 1,000), its cost now the cache miss on the head of the
//! next key down after a pick (`Ring::release`, 11% of a run weighted at 10,000: four
//! rings, one per weight, walked at once). Tried there, not kept: a ring of twice the
//! keys' span (1.05× this one weighted at 10,000); reading the head one cache line below
//! the top at each move, as a prefetch (1.01×); a ring for buckets of any size (1.15× the
//! heap at 100 servers: lists of equal keys walked, reordered often).
//!
//! A pick costs O(log W) for W distinct weights (O(log n) from a heap), plus the number of
//! weights tied at the least ratio (at ratio 0, every weight with an idle backend); a
//! dispatch and a completion O(log W) (O(log n) in a heap). Without weights every backend
//! weighs 1: one queue.
//!
//! Up to [`SCAN_UP_TO`] backends nginx's scans are faster and used. The property tests
//! check that the index picks exactly what the scans pick.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::SpecError;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, Entries, PickContext, Strategy};

/// Up to this many backends the two scans are faster than the index (measured in
/// `benches/scale.rs`); both pick the same.
pub const SCAN_UP_TO: usize = 48;

/// nginx `least_conn`, optionally weighted.
#[derive(Debug, Default)]
pub struct LeastConnections {
    weighted: bool,
    /// Pick by nginx's two scans (small clusters) rather than from the index.
    scan: bool,
    /// The scans' smooth-round-robin counters.
    current: Vec<i64>,
    /// The index of the view (built at the first pick when not scanning).
    index: Option<Index>,
}

impl LeastConnections {
    /// Least connections; `weighted` compares `in_flight / weight`. Picks from the index.
    pub fn new(weighted: bool) -> LeastConnections {
        LeastConnections {
            weighted,
            ..Default::default()
        }
    }

    /// Least connections over `n` backends: nginx's scans up to `SCAN_UP_TO` backends,
    /// the index beyond. The same picks either way.
    pub fn for_backends(weighted: bool, n: usize) -> LeastConnections {
        LeastConnections {
            scan: n <= SCAN_UP_TO,
            ..LeastConnections::new(weighted)
        }
    }

    /// nginx's two scans, over a dense view's slices when it has them.
    fn scan(&mut self, backends: &Backends) -> Option<usize> {
        match backends.dense() {
            Some(dense) => self.scan_entries(&dense),
            None => self.scan_entries(backends),
        }
    }

    /// nginx's two scans.
    fn scan_entries(&mut self, backends: &impl Entries) -> Option<usize> {
        let weighted = self.weighted;
        let wt = |b: &Backend| if weighted { u64::from(b.weight) } else { 1 };
        // Pass 1: the best ratio in_flight / weight, by cross-multiplication (exact, as
        // nginx compares `conns * best.weight < best.conns * weight`).
        let mut best: Option<(u64, u64)> = None;
        for b in backends.iter() {
            let w = wt(&b);
            if !b.up || w == 0 {
                continue;
            }
            let c = u64::from(b.in_flight);
            if best.is_none_or(|(bc, bw)| c * bw < bc * w) {
                best = Some((c, w));
            }
        }
        let (cj, wj) = best?;
        // Pass 2: smooth weighted round robin among the backends tied at that ratio.
        if self.current.len() != backends.len() {
            self.current.resize(backends.len(), 0);
        }
        let mut total = 0i64;
        // The first backend of highest counter, with its counter (as in smooth WRR's step).
        let mut chosen: Option<(usize, i64)> = None;
        for (i, (b, c)) in backends.iter().zip(self.current.iter_mut()).enumerate() {
            let w = wt(&b);
            if !b.up || w == 0 || u64::from(b.in_flight) * wj != cj * w {
                continue;
            }
            *c += w as i64;
            total += w as i64;
            if chosen.is_none_or(|(_, top)| *c > top) {
                chosen = Some((i, *c));
            }
        }
        let (i, _) = chosen?;
        self.current[i] -= total;
        Some(i)
    }
}

impl Strategy for LeastConnections {
    fn pick(&mut self, backends: &Backends, _ctx: &PickContext) -> Option<usize> {
        if self.scan {
            return self.scan(backends);
        }
        let weighted = self.weighted;
        let index = match &mut self.index {
            Some(index) if index.backends.len() == backends.len() => index,
            stale => stale.insert(Index::new(backends, weighted)),
        };
        index.pick()
    }

    fn indexes_view(&self) -> bool {
        !self.scan
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        if let Some(index) = &mut self.index {
            index.update(backend, view);
        }
    }
}

/// The view, indexed: one [`BucketQueue`] per distinct weight, and the [`Tournament`] of
/// their least ratios.
#[derive(Debug)]
struct Index {
    /// Whether weights count (else every backend weighs 1).
    weighted: bool,
    backends: Vec<Member>,
    generations: Generations,
    queues: Vec<BucketQueue>,
    /// The queue of each weight seen (queues are never dropped: weights are few and rarely
    /// change).
    queue_of: HashMap<u32, u32>,
    least: Tournament,
    /// The backend just picked, taken out of its queue until the view tells of its
    /// dispatch (then filed under its new count at once: one move instead of two).
    detached: Option<usize>,
}

/// A backend as the [`Index`] knows it (one struct, so that an update reads one cache
/// line rather than one per field).
#[derive(Clone, Copy, Debug, Default)]
struct Member {
    /// The in-flight count it is filed under (or was last told of).
    flight: u32,
    /// Its weight (1 when unweighted).
    weight: u32,
    /// The queue of its weight (meaningless while its weight is 0).
    queue: u32,
    /// Filed in its queue (up, of weight above 0, and not detached).
    filed: bool,
    /// Its key when filed (counter minus `weight × picks` of its bucket), else its
    /// smooth-round-robin counter.
    current: i64,
}

impl Index {
    fn new(backends: &Backends, weighted: bool) -> Index {
        let n = backends.len();
        let mut index = Index {
            weighted,
            backends: vec![Member::default(); n],
            generations: Generations::new(vec![0; n]),
            queues: Vec::new(),
            queue_of: HashMap::new(),
            least: Tournament::default(),
            detached: None,
        };
        for (i, b) in backends.iter().enumerate() {
            index.backends[i].flight = b.in_flight;
            index.set_weight(i, if weighted { b.weight } else { 1 });
            if b.up && index.backends[i].weight > 0 {
                index.insert(i);
            }
        }
        index
    }

    /// Sets backend `i`'s weight, and its queue (made if need be) when above 0.
    fn set_weight(&mut self, i: usize, w: u32) {
        self.backends[i].weight = w;
        if w > 0 {
            let queues = &mut self.queues;
            self.backends[i].queue = *self.queue_of.entry(w).or_insert_with(|| {
                queues.push(BucketQueue::new(w));
                (queues.len() - 1) as u32
            });
        }
    }

    fn update(&mut self, i: usize, view: &Backend) {
        if i >= self.backends.len() {
            return;
        }
        if self.detached == Some(i) {
            self.detached = None;
        } else {
            self.reattach();
        }
        let w = if self.weighted { view.weight } else { 1 };
        let member = view.up && w > 0;
        let b = self.backends[i];
        if b.filed && member && view.in_flight == b.flight && w == b.weight {
            return;
        }
        if b.filed {
            self.unfile(i);
        }
        self.backends[i].flight = view.in_flight;
        if w != b.weight {
            self.set_weight(i, w);
        }
        if member {
            self.insert(i);
        }
    }

    /// Files the detached backend again (where it was), if any.
    fn reattach(&mut self) {
        if let Some(j) = self.detached.take() {
            self.insert(j);
        }
    }

    /// Backend `i`'s queue. Unweighted, the one queue, 0: known without reading the
    /// backend (a dependent load less on every filing).
    fn queue(&self, i: usize) -> usize {
        if self.weighted {
            self.backends[i].queue as usize
        } else {
            0
        }
    }

    /// Files member `i` in its queue; its counter becomes a key.
    fn insert(&mut self, i: usize) {
        let q = self.queue(i);
        let b = &mut self.backends[i];
        let queue = &mut self.queues[q];
        let moved;
        (b.current, moved) = queue.file(i, b.flight, b.current, &mut self.generations);
        b.filed = true;
        if moved {
            self.least.set(q, queue.least_ratio());
        }
    }

    /// Takes filed backend `i` out of its queue; its counter becomes explicit.
    fn unfile(&mut self, i: usize) {
        let q = self.queue(i);
        let b = &mut self.backends[i];
        let queue = &mut self.queues[q];
        let moved;
        (b.current, moved) = queue.unfile(i, b.flight, b.current, &mut self.generations);
        b.filed = false;
        if moved {
            self.least.set(q, queue.least_ratio());
        }
    }

    fn pick(&mut self) -> Option<usize> {
        self.reattach();
        // Each bucket of the class counts the pick; the class's total weight; the highest
        // counter (key + weight × picks), lowest index among equals.
        let mut total = 0i64;
        let mut best: Option<(i64, usize, usize)> = None;
        // Unweighted, the one queue is the class (the tournament of one need not be asked).
        let tied = if self.weighted {
            self.least.tied()
        } else {
            &[0]
        };
        for &q in tied {
            let top = self.queues[q].pick(&mut self.generations)?;
            total += top.total;
            if best.is_none_or(|(bc, bi, _)| top.counter > bc || (top.counter == bc && top.i < bi))
            {
                best = Some((top.counter, top.i, q));
            }
        }
        let (_, i, q) = best?;
        // Unfile it, then it gives back the class's total weight.
        self.queues[q].drop_picked(&self.generations);
        self.unfile(i);
        self.backends[i].current -= total;
        self.detached = Some(i);
        Some(i)
    }
}

/// A heap entry: a backend's key, the backend (the lowest index first among equal keys,
/// as nginx keeps the first backend of highest counter), and its generation when filed.
///
/// Packed in one `u128` whose order is that of `(key, Reverse(backend), generation)`: the
/// key's bits (sign flipped) on top, then the backend's complement, then the generation.
/// One comparison of two words without a branch, where the tuple's took two or three
/// with branches (a heap's sift compares at every level).
type Entry = u128;

fn entry(key: i64, i: usize, generation: u32) -> Entry {
    let key = (key as u64) ^ (1 << 63);
    (u128::from(key) << 64) | (u128::from(u32::MAX - i as u32) << 32) | u128::from(generation)
}

fn entry_key(e: Entry) -> i64 {
    (((e >> 64) as u64) ^ (1 << 63)) as i64
}

fn entry_backend(e: Entry) -> usize {
    (u32::MAX - (e >> 32) as u32) as usize
}

/// The generation of each backend, shared by the queues of an [`Index`]: bumped at every
/// filing and every unfiling, so an [`Entry`] is live exactly while its generation is its
/// backend's (lazy deletion: an unfiled backend's entry stays in its heap, dead, until it
/// reaches the top or the heap is compacted). The count wraps, so a dead entry would
/// come alive again only after 2^32 more filings and unfilings of its backend (2^31 picks
/// of one backend) while it stayed buried in its heap.
///
/// Beside each generation, the backend's place in its bucket's `items` while that bucket
/// is not a heap (see [`Bucket`]).
#[derive(Debug)]
struct Generations {
    number: Vec<u32>,
    pos: Vec<u32>,
}

impl Generations {
    /// The backends' generations, starting at `number`.
    fn new(number: Vec<u32>) -> Generations {
        let pos = vec![0; number.len()];
        Generations { number, pos }
    }

    /// Starts backend `i`'s next generation; returns it.
    fn bump(&mut self, i: usize) -> u32 {
        self.number[i] = self.number[i].wrapping_add(1);
        self.number[i]
    }

    fn is_live(&self, &e: &Entry) -> bool {
        self.number[entry_backend(e)] == e as u32
    }
}

/// The backends filed under one count: a max-heap of entries by key, live and dead, once
/// the bucket has been picked from; until then (and again once it empties) its members'
/// entries unordered in `items`, each backend's place kept in [`Generations`], so that a
/// filing is a push and an unfiling a swap-remove, and no entry dies.
///
/// Under a steady load the least bucket is picked from and the one above it is not: its
/// members come at each dispatch and go at each completion without ever being ordered
/// (as a heap, they cost a sift-up each and a compaction of the dead every bucket's worth
/// of completions: about 7% of a run at 1,000 servers). A bucket picked from stays a heap
/// until it empties, so a least count that moves back and forth orders it once.
#[derive(Debug, Default)]
struct Bucket {
    /// Picks made from this bucket (each added its queue's weight to every member's
    /// counter).
    picks: i64,
    /// Members filed here (live entries).
    live: usize,
    /// Whether the entries are in `ring` and `heap` (else in `items`).
    heaped: bool,
    /// Once picked from: the live entries by key, but those it turned away.
    ring: Ring,
    /// Once picked from: the entries the ring turned away (an equal key held, or a key
    /// too far from the others), live and dead.
    heap: BinaryHeap<Entry>,
    /// The members' entries while not heaped: all live.
    items: Vec<Entry>,
}

impl Bucket {
    /// Entries, live and dead.
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.ring.len + self.heap.len() + self.items.len()
    }

    /// Its live entries unordered in `items`, no longer ordered (O(entries + ring / 64)).
    fn unheap(&mut self, gens: &mut Generations) {
        let mut items = std::mem::take(&mut self.items);
        self.take_live(&mut items, gens);
        for (p, &e) in items.iter().enumerate() {
            gens.pos[entry_backend(e)] = p as u32;
        }
        self.items = items;
        self.heaped = false;
    }

    /// Moves the live entries of the ring and the heap to `out`.
    fn take_live(&mut self, out: &mut Vec<Entry>, gens: &Generations) {
        self.ring.drain_into(out, gens);
        out.extend(self.heap.drain().filter(|e| gens.is_live(e)));
    }

    /// Orders the entries (the ring and the heap), if not yet (O(members)).
    fn heapify(&mut self, gens: &mut Generations) {
        if !self.heaped {
            self.heaped = true;
            let mut items = std::mem::take(&mut self.items);
            self.order(&mut items, gens);
            self.items = items;
        }
    }

    /// Files live `entries` (emptied) in the ring, made large enough for their keys if
    /// need be, or in the heap.
    fn order(&mut self, entries: &mut Vec<Entry>, gens: &mut Generations) {
        let (lo, hi) = entries.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &e| {
            (lo.min(entry_key(e)), hi.max(entry_key(e)))
        });
        let span = (i128::from(hi) - i128::from(lo)).max(0) as u128;
        let slots = Ring::slots_for(span, entries.len());
        if entries.len() < RING_MIN {
            // Few: the heap alone (the ring, if any, left empty).
            self.ring.heads.clear();
        } else if slots > self.ring.heads.len() {
            self.ring = Ring::with_slots(slots);
        }
        self.ring.misses = 0;
        let ring = &mut self.ring;
        entries.retain(|&e| !ring.insert(entry_backend(e), entry_key(e), &mut gens.pos));
        self.heap.extend(entries.drain(..));
    }

    /// Orders the live entries again, the ring sized for their keys (it turned away too
    /// many).
    fn reorder(&mut self, gens: &mut Generations) {
        let mut items = std::mem::take(&mut self.items);
        self.take_live(&mut items, gens);
        self.order(&mut items, gens);
        self.items = items;
    }
}

/// The live entries of a bucket picked from, by key: a ring of S slots (a power of two),
/// the members of key `k` in slot `k mod S`, while the keys held lie within S of each other
/// (then two keys share a slot only if equal); a bitmap tells the slots held. A slot holds
/// its members as a list by backend (lowest first), linked through [`Generations::pos`]
/// (unused while a bucket is ordered). The top (the greatest key, its lowest backend) is
/// read at once, and found again after its removal by scanning the bitmap down from it:
/// the keys of a bucket picked from are close together, and its picks take them from the
/// top down (the picked backend's counter loses the class's total weight, so it comes back
/// below most of those waiting). A member with a key too far from the others, or beyond
/// [`RING_LIST_MAX`] of its key, is turned away (to the bucket's heap).
#[derive(Debug, Default)]
struct Ring {
    /// The first member (backend + 1) of each slot's list, by key mod S (stale where the
    /// slot is not held).
    heads: Vec<u32>,
    /// Bit `s % 64` of word `s / 64`: slot `s` held.
    bits: Vec<u64>,
    /// Members held.
    len: usize,
    /// The greatest key held (meaningful while `len` > 0).
    top: i64,
    /// The first member (backend + 1) of the top's list, kept here: a pick reads the top
    /// of every weight at the least ratio, and takes one.
    first: u32,
    /// At most the least key held (meaningful while `len` > 0).
    low: i64,
    /// Members turned away for their keys' distance since the ring was last filled.
    misses: usize,
}

/// The most slots of a ring (1 MB of heads).
const RING_SLOTS_MAX: usize = 1 << 18;

/// The fewest members a bucket is ordered with in a ring (fewer: the heap alone, as
/// cheap there, and without the lists' walks of a ring dense with equal keys). The unit
/// tests' buckets are small: 2 there, so that both ways are taken.
const RING_MIN: usize = if cfg!(test) { 2 } else { 128 };

/// The longest list of one key in a ring (members of equal keys beyond go to the heap).
const RING_LIST_MAX: usize = 8;

impl Ring {
    fn with_slots(slots: usize) -> Ring {
        Ring {
            heads: vec![0; slots],
            bits: vec![0; slots.div_ceil(64)],
            ..Ring::default()
        }
    }

    /// Slots for `n` members of keys spread over `span`: the span or twice the members, at least 64 and
    /// at most 64 a member (and [`RING_SLOTS_MAX`]), a power of two.
    fn slots_for(span: u128, n: usize) -> usize {
        let cap = (64 * n + 64).next_power_of_two().min(RING_SLOTS_MAX) as u128;
        let want = span.max(2 * n as u128).clamp(64, cap);
        (want as usize).next_power_of_two()
    }

    fn slot(&self, key: i64) -> usize {
        (key as u64 & (self.heads.len() as u64 - 1)) as usize
    }

    fn held(&self, p: usize) -> bool {
        self.bits[p / 64] & (1 << (p % 64)) != 0
    }

    /// Holds backend `i` under `key` if the keys held stay within the ring and its key's
    /// list is not full; else false. `links`: [`Generations::pos`].
    fn insert(&mut self, i: usize, key: i64, links: &mut [u32]) -> bool {
        if self.heads.is_empty() {
            // None (few members when last ordered): counted, to order again as they grow.
            self.misses += 1;
            return false;
        }
        let (top, low) = if self.len == 0 {
            (key, key)
        } else {
            (self.top.max(key), self.low.min(key))
        };
        if i128::from(top) - i128::from(low) >= self.heads.len() as i128 {
            self.misses += 1;
            return false;
        }
        let p = self.slot(key);
        let me = i as u32 + 1;
        if self.held(p) {
            let (mut j, mut length) = (self.heads[p], 0);
            while j != 0 {
                length += 1;
                if length >= RING_LIST_MAX {
                    return false;
                }
                j = links[j as usize - 1];
            }
        }
        if !self.held(p) {
            self.heads[p] = me;
            links[i] = 0;
            self.bits[p / 64] |= 1 << (p % 64);
        } else if self.heads[p] > me {
            links[i] = self.heads[p];
            self.heads[p] = me;
        } else {
            // After the last member below it.
            let mut prev = self.heads[p];
            while links[prev as usize - 1] != 0 && links[prev as usize - 1] < me {
                prev = links[prev as usize - 1];
            }
            links[i] = links[prev as usize - 1];
            links[prev as usize - 1] = me;
        }
        self.len += 1;
        (self.top, self.low) = (top, low);
        if key == top {
            self.first = self.heads[p];
        }
        true
    }

    /// The member of the greatest key (lowest backend among equals) and its key, if any.
    fn first(&self) -> Option<(usize, i64)> {
        (self.len > 0).then(|| (self.first as usize - 1, self.top))
    }

    /// Removes the member of the greatest key (there is one).
    fn pop(&mut self, links: &[u32]) {
        let p = self.slot(self.top);
        let head = self.heads[p] as usize - 1;
        self.heads[p] = links[head];
        self.release(p);
    }

    /// Removes backend `i`, held under `key`, if held.
    fn remove(&mut self, i: usize, key: i64, links: &mut [u32]) {
        if self.len == 0 || key > self.top || key < self.low {
            return;
        }
        // Within the keys held: the slot holds key `key` if held.
        let p = self.slot(key);
        if !self.held(p) {
            return;
        }
        let me = i as u32 + 1;
        if self.heads[p] == me {
            self.heads[p] = links[i];
        } else {
            let mut prev = self.heads[p];
            while links[prev as usize - 1] != me {
                prev = links[prev as usize - 1];
                if prev == 0 {
                    return;
                }
            }
            links[prev as usize - 1] = links[i];
        }
        self.release(p);
    }

    /// One member fewer, out of slot `p`'s list: the slot freed if that was its last, and
    /// the top found again if it was there.
    fn release(&mut self, p: usize) {
        self.len -= 1;
        let top = self.len > 0 && p == self.slot(self.top);
        if self.heads[p] == 0 {
            self.bits[p / 64] &= !(1 << (p % 64));
            if top {
                self.top -= self.gap_below(p) as i64;
            }
        }
        if top {
            self.first = self.heads[self.slot(self.top)];
        }
    }

    /// How far below slot `p` (going down, around the ring) the next slot held is: there
    /// is one.
    fn gap_below(&self, p: usize) -> usize {
        let mask = self.heads.len() - 1;
        let mut q = p.wrapping_sub(1) & mask;
        let mut gap = 1;
        loop {
            let (w, bit) = (q / 64, q % 64);
            let word = self.bits[w] & (u64::MAX >> (63 - bit));
            if word != 0 {
                return gap + bit - (63 - word.leading_zeros() as usize);
            }
            gap += bit + 1;
            q = (w * 64).wrapping_sub(1) & mask;
        }
    }

    /// Moves every member held to `out` as entries, emptying the ring (O(members + slots
    /// / 64)).
    fn drain_into(&mut self, out: &mut Vec<Entry>, gens: &Generations) {
        if self.len > 0 {
            let (mask, top_slot) = (self.heads.len() - 1, self.slot(self.top));
            for (w, word) in self.bits.iter_mut().enumerate() {
                let mut b = *word;
                while b != 0 {
                    let p = w * 64 + b.trailing_zeros() as usize;
                    let key = self.top - (top_slot.wrapping_sub(p) & mask) as i64;
                    let mut j = self.heads[p];
                    while j != 0 {
                        let i = j as usize - 1;
                        out.push(entry(key, i, gens.number[i]));
                        j = gens.pos[i];
                    }
                    b &= b - 1;
                }
                *word = 0;
            }
        }
        self.len = 0;
    }
}

/// What a pick reads of a bucket: its member of highest counter (lowest index among
/// equals), that counter, and the bucket's total weight.
struct Top {
    i: usize,
    counter: i64,
    total: i64,
}

/// A bucket queue: the backends of one weight, bucket `c` holding those of in-flight count
/// `c`, each bucket a heap by key. Counts move by one at a time, so the least non-empty
/// bucket is kept by walking up from the last one when it empties (a short walk). A
/// member's smooth-round-robin counter is its key plus `weight × picks` of its bucket: a
/// pick adds the weight to every member's counter at once, and leaves the order within
/// the bucket as it was.
#[derive(Debug)]
struct BucketQueue {
    weight: u32,
    buckets: Vec<Bucket>,
    /// The least bucket with a member (meaningless when `len` is 0).
    least: usize,
    /// Members filed.
    len: usize,
}

impl BucketQueue {
    fn new(weight: u32) -> BucketQueue {
        BucketQueue {
            weight,
            buckets: Vec::new(),
            least: 0,
            len: 0,
        }
    }

    /// The least count with a member, if any.
    fn least(&self) -> Option<u32> {
        (self.len > 0).then_some(self.least as u32)
    }

    /// The least ratio `count / weight` of the members, if any.
    fn least_ratio(&self) -> Option<Ratio> {
        self.least().map(|count| Ratio {
            count,
            weight: self.weight,
        })
    }

    /// Files backend `i` under `count` with smooth-round-robin counter `counter`, in a new
    /// generation; returns its key, and whether the least count changed. A bucket's dead
    /// entries are dropped when they outnumber its members, so memory stays within about
    /// twice the members.
    fn file(&mut self, i: usize, count: u32, counter: i64, gens: &mut Generations) -> (i64, bool) {
        let c = count as usize;
        if self.buckets.len() <= c {
            self.buckets.resize_with(c + 1, Bucket::default);
        }
        let b = &mut self.buckets[c];
        let key = counter - i64::from(self.weight) * b.picks;
        let entry = entry(key, i, gens.bump(i));
        b.live += 1;
        if b.heaped {
            if !b.ring.insert(i, key, &mut gens.pos) {
                b.heap.push(entry);
                if b.heap.len() > 2 * b.live + 32 {
                    if self.len > 0 && c > self.least {
                        // Not the least: unordered again (as it will be picked from only
                        // when the buckets below it empty).
                        b.unheap(gens);
                    } else {
                        b.heap.retain(|e| gens.is_live(e));
                    }
                } else if b.ring.misses > b.live + 64 && b.live >= RING_MIN {
                    b.reorder(gens);
                }
            }
        } else {
            gens.pos[i] = b.items.len() as u32;
            b.items.push(entry);
        }
        let moved = self.len == 0 || c < self.least;
        if moved {
            self.least = c;
        }
        self.len += 1;
        (key, moved)
    }

    /// Takes backend `i`, filed under `count` with key `key`, out (its entry dies in a heap,
    /// is removed from unordered `items`); returns
    /// its counter, and whether the least count changed.
    fn unfile(&mut self, i: usize, count: u32, key: i64, gens: &mut Generations) -> (i64, bool) {
        let c = count as usize;
        let b = &mut self.buckets[c];
        gens.bump(i);
        b.live -= 1;
        if b.heaped {
            // Out of the ring if there; else its entry dies in the heap.
            b.ring.remove(i, key, &mut gens.pos);
            if b.live == 0 {
                // Every entry is dead (the ring is empty): back to unordered.
                b.heap.clear();
                b.heaped = false;
            }
        } else {
            let p = gens.pos[i] as usize;
            b.items.swap_remove(p);
            if let Some(&e) = b.items.get(p) {
                gens.pos[entry_backend(e)] = p as u32;
            }
        }
        self.len -= 1;
        let counter = key + i64::from(self.weight) * b.picks;
        let moved = c == self.least && b.live == 0;
        if moved && self.len > 0 {
            while self.buckets[self.least].live == 0 {
                self.least += 1;
            }
        }
        (counter, moved)
    }

    /// Drops the least bucket's top entry: that of the member just picked, which is about
    /// to be unfiled (dropped now, while at hand, rather than left to die in the heap).
    fn drop_picked(&mut self, gens: &Generations) {
        let b = &mut self.buckets[self.least];
        match (b.ring.first(), b.heap.peek()) {
            (Some((i, key)), Some(&h)) if h > entry(key, i, 0) => {
                b.heap.pop();
            }
            (Some(_), _) => b.ring.pop(&gens.pos),
            _ => {
                b.heap.pop();
            }
        }
    }

    /// A pick from the least bucket: counts it there, and reads its top (dropping the dead
    /// entries above it in the heap). `None` when the queue is empty.
    fn pick(&mut self, gens: &mut Generations) -> Option<Top> {
        if self.len == 0 {
            return None;
        }
        let w = i64::from(self.weight);
        let b = &mut self.buckets[self.least];
        b.picks += 1;
        b.heapify(gens);
        while let Some(e) = b.heap.peek() {
            if gens.is_live(e) {
                break;
            }
            b.heap.pop();
        }
        // The greater of the ring's top and the heap's (two backends: the generation, 0
        // for the ring's, never decides).
        let (key, i) = match (b.ring.first(), b.heap.peek()) {
            (Some((i, key)), Some(&h)) if h > entry(key, i, 0) => (entry_key(h), entry_backend(h)),
            (Some((i, key)), _) => (key, i),
            (None, Some(&h)) => (entry_key(h), entry_backend(h)),
            (None, None) => return None,
        };
        let (counter, total) = (key + w * b.picks, w * b.live as i64);
        Some(Top { i, counter, total })
    }
}

/// `count / weight`, compared by value: by cross-multiplication, exact, as nginx compares
/// `conns * best.weight < best.conns * weight`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ratio {
    count: u32,
    weight: u32,
}

impl Ratio {
    fn compare(self, other: Ratio) -> Ordering {
        // Both below 2^32: the products fit in u64.
        let (a, b) = (u64::from(self.count), u64::from(self.weight));
        let (c, d) = (u64::from(other.count), u64::from(other.weight));
        (a * d).cmp(&(c * b))
    }
}

/// The least of the queues' least ratios: a tournament tree, a complete binary tree whose
/// leaves are the queues and whose every inner node holds the lesser of its two children,
/// so the root holds the least. A queue's least ratio changing replays its path to the
/// root: O(log W) comparisons for W queues.
#[derive(Debug, Default)]
struct Tournament {
    /// Node 1 is the root, the children of node `k` are `2k` and `2k + 1`, and queue `q`
    /// is leaf `leaves + q`. `None`: no member below.
    nodes: Vec<Option<Ratio>>,
    /// Number of leaves: a power of two (or 0 before the first queue).
    leaves: usize,
    /// The queues at the least ratio, as last collected.
    tied: Vec<usize>,
    /// Whether a queue's least ratio changed since `tied` was collected.
    stale: bool,
}

impl Tournament {
    /// The lesser of two nodes (`None` above everything; the left one among equals).
    fn lesser(a: Option<Ratio>, b: Option<Ratio>) -> Option<Ratio> {
        match (a, b) {
            (Some(x), Some(y)) if y.compare(x) == Ordering::Less => b,
            (None, _) => b,
            _ => a,
        }
    }

    /// Sets queue `q`'s least ratio.
    fn set(&mut self, q: usize, least: Option<Ratio>) {
        if q >= self.leaves {
            self.grow(q + 1);
        }
        self.stale = true;
        let mut k = self.leaves + q;
        self.nodes[k] = least;
        while k > 1 {
            k /= 2;
            self.nodes[k] = Self::lesser(self.nodes[2 * k], self.nodes[2 * k + 1]);
        }
    }

    /// Room for `n` queues: the leaves kept, the inner nodes played again.
    fn grow(&mut self, n: usize) {
        let leaves = n.next_power_of_two();
        let mut nodes = vec![None; 2 * leaves];
        nodes[leaves..leaves + self.leaves].copy_from_slice(&self.nodes[self.leaves..]);
        for k in (1..leaves).rev() {
            nodes[k] = Self::lesser(nodes[2 * k], nodes[2 * k + 1]);
        }
        self.nodes = nodes;
        self.leaves = leaves;
    }

    /// The least ratio, if any queue has a member.
    fn least(&self) -> Option<Ratio> {
        self.nodes.get(1).copied().flatten()
    }

    /// The queues at the least ratio, in order (collected again after a change only: at a
    /// steady least ratio, as while backends are idle, picks do not walk the tree).
    fn tied(&mut self) -> &[usize] {
        if self.stale {
            self.stale = false;
            let mut tied = std::mem::take(&mut self.tied);
            tied.clear();
            if let Some(least) = self.least() {
                self.collect(1, least, &mut tied);
            }
            self.tied = tied;
        }
        &self.tied
    }

    /// The queues at ratio `least` below node `k`. A node holds the least ratio below it,
    /// so a subtree holds a queue at `least` (the least of all) exactly when its root does.
    fn collect(&self, k: usize, least: Ratio, tied: &mut Vec<usize>) {
        if self.nodes[k].is_none_or(|r| r.compare(least) != Ordering::Equal) {
            return;
        }
        if k >= self.leaves {
            tied.push(k - self.leaves);
        } else {
            self.collect(2 * k, least, tied);
            self.collect(2 * k + 1, least, tied);
        }
    }
}

/// Parameters of `kind = "least_connections"`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LeastConnectionsParams {
    /// Compare `in_flight / weight` (nginx `least_conn` with weights). Default false.
    pub weighted: bool,
}

impl Kind for LeastConnections {
    type Params = LeastConnectionsParams;
    const ABOUT: About = About {
        kind: "least_connections",
        aliases: &[],
        follows: "nginx least_conn (ties by weighted round robin)",
        knobs: &[Knob::new("weighted", Ty::Bool)],
        reads: Reads::NOTHING,
        split: Split::Dynamic,
    };
    fn validate(_: &LeastConnectionsParams, _: usize) -> Result<(), SpecError> {
        Ok(())
    }
    fn build(p: &LeastConnectionsParams, n: usize, _: crate::rng::SimRng) -> LeastConnections {
        LeastConnections::for_backends(p.weighted, n)
    }
    fn cost(_: &LeastConnectionsParams) -> PickCost {
        PickCost::SCAN
    }
    fn reads(p: &LeastConnectionsParams) -> Reads {
        Reads {
            weights: p.weighted,
            ..Reads::NOTHING
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testing::{Pair, index_agrees_with_scan, long_runs_agree, weights};
    use crate::strategy::{Balancer, Outcome};
    use crate::time::Nanos;
    use proptest::prelude::*;
    use proptest::strategy::Strategy as _;
    use std::cmp::Reverse;

    #[test]
    fn picks_fewest_in_flight() {
        let mut b = Balancer::new(Box::new(LeastConnections::new(false)), &[1, 1, 1]);
        // Three requests outstanding spread one each, then complete backend 1's.
        let a = b.route(Nanos(0), 0).unwrap();
        let c = b.route(Nanos(0), 0).unwrap();
        let d = b.route(Nanos(0), 0).unwrap();
        let mut got = vec![a, c, d];
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
        b.complete(1, Nanos(5), Outcome::Ok, Nanos(5));
        assert_eq!(b.route(Nanos(6), 0), Some(1));
    }

    #[test]
    fn ties_are_broken_round_robin() {
        let mut b = Balancer::new(Box::new(LeastConnections::new(false)), &[1, 1, 1]);
        let seq = crate::strategy::testing::picks(&mut b, 6);
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weighted_compares_in_flight_over_weight() {
        let mut b = Balancer::new(Box::new(LeastConnections::new(true)), &[3, 1]);
        // Keep everything in flight: the 3-weight backend should take 3 of every 4.
        let picks: Vec<usize> = (0..8).map(|_| b.route(Nanos(0), 0).unwrap()).collect();
        let zero = picks.iter().filter(|&&i| i == 0).count();
        assert_eq!(zero, 6, "{picks:?}");
    }

    /// The index (`new`) and the scan (`for_backends` of 0 backends, which keeps none).
    fn index_and_scan(&weighted: &bool) -> Pair {
        (
            Box::new(LeastConnections::new(weighted)),
            Box::new(LeastConnections::for_backends(weighted, 0)),
        )
    }

    /// A long random workout of a larger cluster: the lazy heaps compact many times.
    #[test]
    fn long_runs_pick_what_the_scan_picks() {
        use rand::RngExt;
        long_runs_agree(
            7,
            (52, false),
            &[(false, 200), (true, 200), (false, 60)],
            |&(_, n), rng| (0..n).map(|_| rng.random_range(0..4)).collect(),
            |(weighted, _)| index_and_scan(weighted),
        );
    }

    /// 1, 2, 8, 9 and 50 distinct weights over 300 backends, many in flight: ties across
    /// weights at ratios above 0 (2/1 = 4/2), and a tournament of 1 to 64 leaves.
    #[test]
    fn long_weighted_runs_pick_what_the_scan_picks() {
        use rand::RngExt;
        long_runs_agree(
            11,
            (60, false),
            &[1, 2, 8, 9, 50],
            |&weights, rng| (0..300).map(|_| rng.random_range(1..=weights)).collect(),
            |_| index_and_scan(&true),
        );
    }

    #[test]
    fn index_picks_what_the_scan_picks() {
        index_agrees_with_scan(any::<bool>(), weights(), index_and_scan);
    }

    /// A change to the view of one backend, or a pick.
    #[derive(Clone, Debug)]
    enum Change {
        Pick,
        Weight(usize, u32),
        Up(usize, bool),
        Done(usize),
    }

    fn change(max_weight: u32) -> impl proptest::strategy::Strategy<Value = Change> {
        prop_oneof![
            4 => Just(Change::Pick),
            1 => (any::<usize>(), 0..=max_weight).prop_map(|(i, w)| Change::Weight(i, w)),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(i, up)| Change::Up(i, up)),
            3 => any::<usize>().prop_map(Change::Done),
        ]
    }

    proptest! {
        /// Weights that change (as the balancer tells of them), among few or many values:
        /// queues are made for new weights and reused; the picks stay the scan's.
        #[test]
        fn changing_weights_pick_what_the_scan_picks(
            (weights, changes) in (1u32..40).prop_flat_map(|max| (
                proptest::collection::vec(1..=max, 1..30),
                proptest::collection::vec(change(max), 1..200),
            )),
        ) {
            let (mut fast, mut oracle) = index_and_scan(&true);
            let mut view: Vec<Backend> = weights
                .iter()
                .map(|&weight| Backend { in_flight: 0, weight, up: true })
                .collect();
            let ctx = PickContext::new(Nanos(0), 0);
            for c in changes {
                let n = view.len();
                let i = match c {
                    Change::Pick => {
                        let backends: Backends = view.iter().copied().collect();
                        let got = fast.pick(&backends, &ctx);
                        prop_assert_eq!(got, oracle.pick(&backends, &ctx));
                        let Some(i) = got else { continue };
                        view[i].in_flight += 1;
                        i
                    }
                    Change::Weight(i, w) => { view[i % n].weight = w; i % n }
                    Change::Up(i, up) => { view[i % n].up = up; i % n }
                    Change::Done(i) => {
                        let b = &mut view[i % n];
                        b.in_flight = b.in_flight.saturating_sub(1);
                        i % n
                    }
                };
                fast.on_view(i, &view[i]);
                oracle.on_view(i, &view[i]);
            }
        }
    }

    const QN: usize = RING_LIST_MAX + 4;

    /// An operation on a bucket queue of [`QN`] backends (more than a ring lists of one key).
    #[derive(Clone, Debug)]
    enum QueueOp {
        /// File backend `.0` (if not filed) under count `.1`.
        File(usize, u32),
        /// Unfile backend `.0` (if filed).
        Unfile(usize),
        /// Pick, and unfile the one picked (giving back the bucket's total weight).
        Pick,
        /// Set backend `.0`'s counter to `.1` (if not filed): keys far apart.
        Counter(usize, i64),
    }

    fn queue_op() -> impl proptest::strategy::Strategy<Value = QueueOp> {
        prop_oneof![
            3 => (0..QN, 0..5u32).prop_map(|(i, c)| QueueOp::File(i, c)),
            2 => (0..QN).prop_map(QueueOp::Unfile),
            3 => Just(QueueOp::Pick),
            1 => (0..QN, prop_oneof![-3..3i64, -300..300i64, -(1i64 << 40)..(1i64 << 40)])
                .prop_map(|(i, c)| QueueOp::Counter(i, c)),
        ]
    }

    /// A bucket queue, its generations, and each backend's count and key when filed
    /// (else its counter).
    struct Queue {
        queue: BucketQueue,
        gens: Generations,
        filed: Vec<Option<u32>>,
        current: Vec<i64>,
    }

    impl Queue {
        fn new(weight: u32, gens: Vec<u32>) -> Queue {
            Queue {
                queue: BucketQueue::new(weight),
                filed: vec![None; gens.len()],
                current: vec![0; gens.len()],
                gens: Generations::new(gens),
            }
        }

        fn file(&mut self, i: usize, count: u32) {
            let before = self.queue.least();
            let moved;
            (self.current[i], moved) = self.queue.file(i, count, self.current[i], &mut self.gens);
            assert_eq!(moved, self.queue.least() != before);
            self.filed[i] = Some(count);
        }

        fn unfile(&mut self, i: usize) {
            let count = self.filed[i].take().expect("filed");
            let before = self.queue.least();
            let moved;
            (self.current[i], moved) = self.queue.unfile(i, count, self.current[i], &mut self.gens);
            assert_eq!(moved, self.queue.least() != before);
        }

        /// A pick, and the one picked unfiled and giving back the total.
        fn pick(&mut self) -> Option<(usize, i64)> {
            let top = self.queue.pick(&mut self.gens)?;
            self.queue.drop_picked(&self.gens);
            self.unfile(top.i);
            self.current[top.i] -= top.total;
            Some((top.i, self.current[top.i]))
        }
    }

    /// The same by brute force: every member's counter explicit.
    #[derive(Default)]
    struct Model {
        filed: Vec<Option<u32>>,
        counter: Vec<i64>,
    }

    impl Model {
        /// Smooth WRR over the least count's members: each gains the weight, the first of
        /// highest counter wins and gives back the total.
        fn pick(&mut self, w: i64) -> Option<(usize, i64)> {
            let least = self.filed.iter().flatten().min().copied()?;
            let class: Vec<usize> = (0..self.filed.len())
                .filter(|&i| self.filed[i] == Some(least))
                .collect();
            for &i in &class {
                self.counter[i] += w;
            }
            let best = class
                .iter()
                .copied()
                .max_by_key(|&i| (self.counter[i], Reverse(i)))?;
            self.counter[best] -= w * class.len() as i64;
            self.filed[best] = None;
            Some((best, self.counter[best]))
        }
    }

    proptest! {
        /// Filing, unfiling and picking in any order: the least count, the picks (smooth
        /// WRR in each bucket) and the counters are the brute force's. Generations start
        /// anywhere (some wrap).
        #[test]
        fn bucket_queue_is_smooth_wrr_by_least_count(
            weight in 1u32..4,
            start in prop_oneof![Just(0u32), Just(u32::MAX - 3), any::<u32>()],
            ops in proptest::collection::vec(queue_op(), 0..300),
        ) {
            // Generations of backends not filed; odd or even alike.
            let mut q = Queue::new(weight, (0..QN as u32).map(|i| start.wrapping_add(i)).collect());
            let mut model = Model { filed: vec![None; QN], counter: vec![0; QN] };
            for op in ops {
                match op {
                    QueueOp::File(i, c) if q.filed[i].is_none() => {
                        q.file(i, c);
                        model.filed[i] = Some(c);
                    }
                    QueueOp::Unfile(i) if q.filed[i].is_some() => {
                        q.unfile(i);
                        model.filed[i] = None;
                    }
                    QueueOp::Pick => {
                        prop_assert_eq!(q.pick(), model.pick(i64::from(weight)));
                    }
                    QueueOp::Counter(i, c) if q.filed[i].is_none() => {
                        q.current[i] = c;
                        model.counter[i] = c;
                    }
                    _ => {}
                }
                prop_assert_eq!(q.queue.least(), model.filed.iter().flatten().min().copied());
                for (i, f) in q.filed.iter().enumerate() {
                    if f.is_none() {
                        prop_assert_eq!(q.current[i], model.counter[i]);
                    }
                }
            }
        }
    }

    #[test]
    fn bucket_queue_least_walks_up_as_buckets_empty() {
        let mut q = Queue::new(1, vec![0; 4]);
        assert_eq!(q.queue.least(), None);
        q.file(0, 3);
        q.file(1, 1);
        q.file(2, 1);
        q.file(3, 5);
        assert_eq!(q.queue.least(), Some(1));
        q.unfile(1);
        assert_eq!(q.queue.least(), Some(1));
        q.unfile(2);
        assert_eq!(q.queue.least(), Some(3));
        q.unfile(0);
        assert_eq!(q.queue.least(), Some(5));
        q.file(1, 0);
        assert_eq!(q.queue.least(), Some(0));
        q.unfile(1);
        q.unfile(3);
        assert_eq!(q.queue.least(), None);
        assert!(q.queue.pick(&mut q.gens).is_none());
    }

    /// Picks come in order of counter, then index; a backend unfiled and filed again
    /// elsewhere leaves a dead entry in the heap (where the ring turned it away: its key
    /// too far from the others) that is skipped, even above live ones.
    #[test]
    fn bucket_queue_skips_dead_entries_of_older_generations() {
        let mut q = Queue::new(2, vec![u32::MAX - 1; 3]);
        q.current = vec![5, 10, 1000];
        for i in 0..3 {
            q.file(i, 0);
        }
        q.queue.buckets[0].heapify(&mut q.gens);
        assert_eq!(q.queue.buckets[0].ring.len, 2);
        // Backend 2 moves to count 1 (its generation wraps from u32::MAX to 1): its entry
        // at count 0, dead, stays in the heap, above backends 1 and 0 in the ring.
        q.unfile(2);
        q.file(2, 1);
        assert_eq!(q.queue.buckets[0].entries(), 3);
        // Counters +2 each at count 0: 7 and 12 (total 4): 1; then 9: 0 (not 2, whose
        // dead entry is on top); then count 1: 2 at 1002.
        assert_eq!(q.pick(), Some((1, 8)));
        assert_eq!(q.pick(), Some((0, 7)));
        assert_eq!(q.pick(), Some((2, 1000)));
        assert_eq!(q.pick(), None);
        assert_eq!(q.queue.least(), None);
    }

    /// Members of equal keys in the ring: a list by backend, up to [`RING_LIST_MAX`], the
    /// rest in the heap; picks take the lowest backend first either way, and a member
    /// taken out of the middle of a list leaves the others in order.
    #[test]
    fn bucket_queue_lists_equal_keys_by_backend() {
        let n = RING_LIST_MAX + 4;
        let mut q = Queue::new(1, vec![0; n]);
        for i in (0..n).rev() {
            q.file(i, 0);
        }
        q.queue.buckets[0].heapify(&mut q.gens);
        assert_eq!(q.queue.buckets[0].ring.len, RING_LIST_MAX);
        assert_eq!(q.queue.buckets[0].heap.len(), 4);
        q.unfile(5);
        // All at 0, +1 each: 0 first, giving back n - 1; then 1, 2, 3, 4, 6, ...
        let picked: Vec<usize> = std::iter::from_fn(|| q.pick().map(|(i, _)| i)).collect();
        let want: Vec<usize> = (0..n).filter(|&i| i != 5).collect();
        assert_eq!(picked, want);
    }

    /// Filing and unfiling one backend over and over next to one member: the dead
    /// entries are dropped once they pass twice the members plus 32.
    #[test]
    fn bucket_queue_compacts_dead_entries() {
        let mut q = Queue::new(1, vec![0; 2]);
        q.current[1] = 100;
        q.file(1, 0);
        q.queue.buckets[0].heapify(&mut q.gens);
        for _ in 0..100 {
            q.file(0, 0);
            assert!(q.queue.buckets[0].heap.len() <= 2 * 2 + 32);
            q.unfile(0);
        }
        assert_eq!(q.pick(), Some((1, 100)));
    }

    /// A bucket picked from (a heap), then above the least: once its dead entries pass twice
    /// its members plus 32 it is unordered again, its members' places known, and picks
    /// from it once it is the least again are smooth WRR's.
    #[test]
    fn bucket_queue_unorders_a_heap_above_the_least() {
        let mut q = Queue::new(1, vec![0; 4]);
        // Backend 2's key too far from the others': the ring turns it away, to the heap.
        q.current = vec![5, 10, 1000, 0];
        for i in [0, 1, 2] {
            q.file(i, 1);
        }
        q.queue.buckets[1].heapify(&mut q.gens);
        q.file(3, 0);
        for _ in 0..40 {
            q.unfile(2);
            q.file(2, 1);
        }
        assert!(!q.queue.buckets[1].heaped);
        assert_eq!(q.queue.buckets[1].entries(), 3);
        // Unfiled by their places: 0 first, then 3 (the least moves up to 1).
        q.unfile(0);
        q.unfile(3);
        assert_eq!(q.queue.least(), Some(1));
        // Counters 10 and 1000, +1 each: 2 at 1001 gives back 2; then 1 at 12, back 1.
        assert_eq!(q.pick(), Some((2, 999)));
        assert_eq!(q.pick(), Some((1, 11)));
        assert_eq!(q.pick(), None);
    }

    proptest! {
        /// A packed entry orders as `(key, Reverse(backend), generation)` and gives its
        /// parts back, at the edges of every part too.
        #[test]
        fn entries_order_as_their_tuples(
            a in (prop_oneof![Just(i64::MIN), Just(-1i64), Just(0i64), Just(i64::MAX), any::<i64>()], 0..=u32::MAX, any::<u32>()),
            b in (prop_oneof![Just(i64::MIN), Just(-1i64), Just(0i64), Just(i64::MAX), any::<i64>()], 0..=u32::MAX, any::<u32>()),
        ) {
            let pack = |(k, i, g): (i64, u32, u32)| entry(k, i as usize, g);
            let tuple = |(k, i, g): (i64, u32, u32)| (k, Reverse(i), g);
            prop_assert_eq!(pack(a).cmp(&pack(b)), tuple(a).cmp(&tuple(b)));
            let e = pack(a);
            prop_assert_eq!((entry_key(e), entry_backend(e), e as u32), (a.0, a.1 as usize, a.2));
        }
    }

    fn ratio(count: u32, weight: u32) -> Option<Ratio> {
        Some(Ratio { count, weight })
    }

    #[test]
    fn ratios_compare_by_value_exactly() {
        let r = |c, w| Ratio {
            count: c,
            weight: w,
        };
        assert_eq!(r(2, 4).compare(r(1, 2)), Ordering::Equal);
        assert_eq!(r(0, 1).compare(r(0, 7)), Ordering::Equal);
        assert_eq!(r(1, 3).compare(r(1, 2)), Ordering::Less);
        let big = u32::MAX;
        assert_eq!(r(big, big - 1).compare(r(big - 1, big - 2)), Ordering::Less);
        assert_eq!(r(big, big).compare(r(1, 1)), Ordering::Equal);
    }

    proptest! {
        /// The tournament's least ratio and its ties are the brute force's, as queues
        /// come, change and empty.
        #[test]
        fn tournament_finds_the_least_ratio_and_its_ties(
            sets in proptest::collection::vec((0..40usize, proptest::option::of((0u32..6, 1u32..5))), 1..100),
        ) {
            let mut t = Tournament::default();
            let mut model: Vec<Option<Ratio>> = Vec::new();
            for (q, least) in sets {
                let least = least.and_then(|(c, w)| ratio(c, w));
                t.set(q, least);
                if model.len() <= q {
                    model.resize(q + 1, None);
                }
                model[q] = least;
                let min = model.iter().flatten().copied().min_by(|a, b| a.compare(*b));
                let want: Vec<usize> = (0..model.len())
                    .filter(|&k| model[k].zip(min).is_some_and(|(a, m)| a.compare(m) == Ordering::Equal))
                    .collect();
                prop_assert_eq!(t.tied(), &want[..]);
                prop_assert_eq!(t.least().is_some(), min.is_some());
                if let (Some(a), Some(m)) = (t.least(), min) {
                    prop_assert_eq!(a.compare(m), Ordering::Equal);
                }
            }
        }
    }
}
