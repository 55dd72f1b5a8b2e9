//! Least connections, as nginx's `least_conn`: the backend with the fewest requests in
//! flight wins; in the weighted variant the comparison is `in_flight / weight` (nginx
//! compares `conns * best.weight < best.conns * weight`). Ties are broken by smooth
//! weighted round robin among the tied backends, as nginx does — with equal weights that is
//! plain round robin.
//!
//! nginx scans every backend twice per pick. Here the picks are the same, exactly, but come
//! from an index of the view kept up to date as it changes ([`Strategy::on_view`]): the
//! backends grouped by their ratio `in_flight / weight` (a ratio class), and within a class
//! by their smooth-round-robin counter. A pick adds `weight` to the counter of every
//! backend at the lowest ratio: that is one counter of picks per group ("picks made at this
//! ratio"), and a member's counter is its key plus `weight ×` that counter, so the order of
//! members of equal weight never changes while they stay in the group.
//!
//! - Without weights every ratio is an in-flight count: the classes are a bucket queue
//!   indexed by count, each a binary heap with lazy deletion ([`FlatIndex`]).
//! - With few distinct weights (up to [`MAX_WEIGHTS`], the common case), one such bucket
//!   queue per weight ([`WeightedIndex`]): the lowest ratio is the least over the weights
//!   of (lowest count) / weight, and its class the lowest buckets of the weights at that
//!   ratio. A pick costs O(log n) plus the number of weights, a dispatch and a completion
//!   O(log n), with no ordered map.
//! - With more, an ordered map of ratio classes, each holding per weight an ordered set of
//!   members ([`Index`]): O(log n) times the number of weights at the lowest ratio.
//!
//! Up to [`SCAN_UP_TO`] backends nginx's scans are faster and used. The property tests
//! check that every index picks exactly what the scans pick.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use super::SpecError;
use super::registry::{About, Kind, Knob, PickCost, Reads, Split, Ty};
use super::{Backend, Backends, Entries, PickContext, Strategy};

/// Up to this many backends the two scans are faster than the index (measured in
/// `benches/scale.rs`); both pick the same.
pub const SCAN_UP_TO: usize = 48;

/// Up to this many distinct weights, weighted picks come from one bucket queue per weight
/// ([`WeightedIndex`], each pick looks at every weight); beyond, from the ordered map of
/// ratio classes ([`Index`]). The same picks either way.
const MAX_WEIGHTS: usize = 8;

/// nginx `least_conn`, optionally weighted.
#[derive(Debug, Default)]
pub struct LeastConnections {
    weighted: bool,
    /// Pick by nginx's two scans (small clusters) rather than from the index.
    scan: bool,
    /// The scans' smooth-round-robin counters.
    current: Vec<i64>,
    /// Weighted: the index by ratio.
    index: Option<Weighted>,
    /// Most distinct weights a [`WeightedIndex`] keeps; beyond, the ordered [`Index`].
    max_weights: usize,
    /// Unweighted: the index by in-flight count.
    flat: Option<FlatIndex>,
}

impl LeastConnections {
    /// Least connections; `weighted` compares `in_flight / weight`. Picks from the index.
    pub fn new(weighted: bool) -> LeastConnections {
        LeastConnections {
            weighted,
            max_weights: MAX_WEIGHTS,
            ..Default::default()
        }
    }

    /// Least connections over `n` backends: nginx's scans up to [`SCAN_UP_TO`] backends,
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
        if !self.weighted {
            let flat = match &mut self.flat {
                Some(flat) if flat.flight.len() == backends.len() => flat,
                stale => stale.insert(FlatIndex::new(backends)),
            };
            return flat.pick();
        }
        let max_weights = self.max_weights;
        let index = match &mut self.index {
            Some(index) if index.len() == backends.len() => index,
            stale => stale.insert(Weighted::new(backends, max_weights)),
        };
        index.pick()
    }

    fn indexes_view(&self) -> bool {
        !self.scan
    }

    fn on_view(&mut self, backend: usize, view: &Backend) {
        if let Some(flat) = &mut self.flat {
            flat.update(backend, view);
        }
        let index = match &mut self.index {
            Some(Weighted::Queues(queues)) => match queues.update(backend, view) {
                Ok(()) => return,
                Err(TooManyWeights(i)) => self.index.take().map(|index| index.into_tree(i)),
            },
            Some(Weighted::Tree(tree)) => {
                tree.update(backend, view, true);
                return;
            }
            None => return,
        };
        self.index = index;
    }
}

/// The weighted index: bucket queues while the weights are few, else the ordered map.
#[derive(Debug)]
enum Weighted {
    Queues(WeightedIndex),
    Tree(Index),
}

impl Weighted {
    fn new(backends: &Backends, max_weights: usize) -> Weighted {
        match WeightedIndex::new(backends, max_weights) {
            Some(queues) => Weighted::Queues(queues),
            None => Weighted::Tree(Index::new(backends, true)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Weighted::Queues(queues) => queues.flight.len(),
            Weighted::Tree(tree) => tree.flight.len(),
        }
    }

    fn pick(&mut self) -> Option<usize> {
        match self {
            Weighted::Queues(queues) => queues.pick(),
            Weighted::Tree(tree) => tree.pick(),
        }
    }

    /// The tree, with `pending` (a member the queues could not file) filed.
    fn into_tree(self, pending: usize) -> Weighted {
        match self {
            Weighted::Queues(queues) => Weighted::Tree(queues.into_tree(pending)),
            tree => tree,
        }
    }
}

/// `in_flight / weight`, reduced, ordered by value (cross-multiplication, exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ratio {
    conns: u64,
    weight: u64,
}

impl Ratio {
    fn new(conns: u32, weight: u32) -> Ratio {
        let (mut a, mut b) = (u64::from(conns), u64::from(weight));
        while b != 0 {
            (a, b) = (b, a % b);
        }
        Ratio {
            conns: u64::from(conns) / a,
            weight: u64::from(weight) / a,
        }
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        // Both below 2^32: the products fit in u64.
        (self.conns * other.weight).cmp(&(other.conns * self.weight))
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Members of one weight in a class, by key descending then index ascending.
type Members = BTreeSet<(Reverse<i64>, u32)>;

/// The backends at one ratio.
#[derive(Debug, Default)]
struct Class {
    /// Picks made among this class (each added its weight to every member's counter).
    picks: i64,
    /// Sum of the members' weights.
    total: i64,
    /// Per distinct weight, the members ordered by key descending then index ascending
    /// (nginx keeps the first backend of highest counter).
    by_weight: Vec<(i64, Members)>,
}

/// The view, indexed.
#[derive(Debug)]
struct Index {
    /// The in-flight count each backend is filed under.
    flight: Vec<u32>,
    /// Whether it is eligible (up, and of non-zero weight when weighted).
    member: Vec<bool>,
    /// Its weight (1 when unweighted).
    weight: Vec<u32>,
    /// Smooth-round-robin counter of a non-member; for a member, its key: the counter
    /// minus `weight × picks` of its class.
    current: Vec<i64>,
    classes: BTreeMap<Ratio, Class>,
    /// The backend just picked, taken out of its class until the view tells of its
    /// dispatch (then filed under its new count at once: one move instead of two).
    detached: Option<usize>,
}

impl Index {
    fn new(backends: &Backends, weighted: bool) -> Index {
        let mut index = Index {
            flight: backends.iter().map(|b| b.in_flight).collect(),
            member: vec![false; backends.len()],
            weight: backends
                .iter()
                .map(|b| if weighted { b.weight } else { 1 })
                .collect(),
            current: vec![0; backends.len()],
            classes: BTreeMap::new(),
            detached: None,
        };
        for (i, b) in backends.iter().enumerate() {
            if b.up && index.weight[i] > 0 {
                index.member[i] = true;
                index.insert(i);
            }
        }
        index
    }

    /// Files the detached backend again (where it was), if any.
    fn reattach(&mut self) {
        if let Some(j) = self.detached.take() {
            self.insert(j);
        }
    }

    fn update(&mut self, i: usize, view: &Backend, weighted: bool) {
        if i >= self.flight.len() {
            return;
        }
        let was_filed = if self.detached == Some(i) {
            self.detached = None;
            false
        } else {
            self.reattach();
            self.member[i]
        };
        let w = if weighted { view.weight } else { 1 };
        let member = view.up && w > 0;
        if was_filed && member && view.in_flight == self.flight[i] && w == self.weight[i] {
            return;
        }
        if was_filed {
            self.remove(i);
        }
        self.flight[i] = view.in_flight;
        self.weight[i] = w;
        self.member[i] = member;
        if member {
            self.insert(i);
        }
    }

    fn insert(&mut self, i: usize) {
        let w = self.weight[i];
        let class = self
            .classes
            .entry(Ratio::new(self.flight[i], w))
            .or_default();
        let key = self.current[i] - i64::from(w) * class.picks;
        self.current[i] = key;
        class.total += i64::from(w);
        let set = match class
            .by_weight
            .iter()
            .position(|(cw, _)| *cw == i64::from(w))
        {
            Some(k) => &mut class.by_weight[k].1,
            None => {
                class.by_weight.push((i64::from(w), Members::new()));
                &mut class.by_weight.last_mut().expect("just pushed").1
            }
        };
        set.insert((Reverse(key), i as u32));
    }

    fn remove(&mut self, i: usize) {
        let w = self.weight[i];
        let ratio = Ratio::new(self.flight[i], w);
        let Some(class) = self.classes.get_mut(&ratio) else {
            return;
        };
        let key = self.current[i];
        if let Some(k) = class
            .by_weight
            .iter()
            .position(|(cw, _)| *cw == i64::from(w))
        {
            class.by_weight[k].1.remove(&(Reverse(key), i as u32));
            if class.by_weight[k].1.is_empty() {
                class.by_weight.swap_remove(k);
            }
        }
        self.current[i] = key + i64::from(w) * class.picks;
        class.total -= i64::from(w);
        if class.by_weight.is_empty() {
            self.classes.remove(&ratio);
        }
    }

    fn pick(&mut self) -> Option<usize> {
        self.reattach();
        let mut entry = self.classes.first_entry()?;
        let class = entry.get_mut();
        class.picks += 1;
        // The highest counter (key + weight × picks), lowest index among equals.
        let mut best: Option<(i64, u32, usize)> = None;
        for (k, (w, set)) in class.by_weight.iter().enumerate() {
            let Some(&(Reverse(key), i)) = set.first() else {
                continue;
            };
            let counter = key + w * class.picks;
            if best.is_none_or(|(bc, bi, _)| counter > bc || (counter == bc && i < bi)) {
                best = Some((counter, i, k));
            }
        }
        let (counter, i, k) = best?;
        // The chosen one gives back the class's total weight, and leaves the class until
        // its dispatch files it under its new count.
        let set = &mut class.by_weight[k].1;
        set.remove(&(Reverse(self.current[i as usize]), i));
        if set.is_empty() {
            class.by_weight.swap_remove(k);
        }
        self.current[i as usize] = counter - class.total;
        class.total -= i64::from(self.weight[i as usize]);
        if class.by_weight.is_empty() {
            entry.remove();
        }
        self.detached = Some(i as usize);
        Some(i as usize)
    }
}

/// The members of one weight, weighted: buckets by in-flight count (a bucket queue, as
/// [`FlatIndex`]), each a heap with lazy deletion. A bucket's `picks` counts the picks
/// made in its ratio class while it had members (each added `weight` to every member's
/// counter): a member's counter is its key plus `weight × picks`.
#[derive(Debug)]
struct WeightQueue {
    weight: u32,
    buckets: Vec<Bucket>,
    /// Lowest bucket with a member (meaningless when `filed` is 0).
    min: usize,
    /// Members filed here.
    filed: usize,
}

impl WeightQueue {
    fn new(weight: u32) -> WeightQueue {
        WeightQueue {
            weight,
            buckets: Vec::new(),
            min: 0,
            filed: 0,
        }
    }
}

/// The view of weighted least connections, indexed while its members have few distinct
/// weights (at most [`LeastConnections::max_weights`]): one [`WeightQueue`] per weight.
/// The least ratio is the least over the weights of (lowest count of that weight) /
/// weight, and its class is the lowest buckets of the weights at that ratio (a bucket of
/// weight `w` at ratio `r` holds count `r × w`, and no lower count of `w` is filed). A
/// pick costs O(log n) plus the number of weights; a dispatch and a completion O(log n)
/// with small constants (no ordered maps).
#[derive(Debug)]
struct WeightedIndex {
    flight: Vec<u32>,
    /// Eligible (up, weight above 0).
    member: Vec<bool>,
    weight: Vec<u32>,
    /// Filed in its bucket (a member that is not detached).
    filed: Vec<bool>,
    /// Bumped at every filing and unfiling: heap entries of older generations are dead.
    generation: Vec<u32>,
    /// Key when filed (counter minus `weight × picks` of its bucket), counter otherwise.
    current: Vec<i64>,
    /// One queue per distinct weight (a queue left empty stays until its slot is needed).
    queues: Vec<WeightQueue>,
    max_weights: usize,
    /// See [`Index::detached`].
    detached: Option<usize>,
}

/// Too many distinct weights for a [`WeightedIndex`]: the backend it could not file.
#[derive(Debug)]
struct TooManyWeights(usize);

impl WeightedIndex {
    /// The index of `backends`, or `None` when they have more than `max_weights` weights.
    fn new(backends: &Backends, max_weights: usize) -> Option<WeightedIndex> {
        let n = backends.len();
        let mut index = WeightedIndex {
            flight: backends.iter().map(|b| b.in_flight).collect(),
            member: vec![false; n],
            weight: backends.iter().map(|b| b.weight).collect(),
            filed: vec![false; n],
            generation: vec![0; n],
            current: vec![0; n],
            queues: Vec::new(),
            max_weights,
            detached: None,
        };
        for (i, b) in backends.iter().enumerate() {
            if b.up && b.weight > 0 {
                index.member[i] = true;
                index.insert(i).ok()?;
            }
        }
        Some(index)
    }

    /// The queue of weight `w`, made if need be (dropping the empty queues when all slots
    /// are taken). Called only with no backend detached (every filing but the detached
    /// one's own reattaches it first), so no empty queue is still wanted.
    fn queue_of(&mut self, w: u32) -> Result<usize, ()> {
        if let Some(q) = self.queues.iter().position(|q| q.weight == w) {
            return Ok(q);
        }
        if self.queues.len() >= self.max_weights {
            self.queues.retain(|q| q.filed > 0);
        }
        if self.queues.len() >= self.max_weights {
            return Err(());
        }
        self.queues.push(WeightQueue::new(w));
        Ok(self.queues.len() - 1)
    }

    fn insert(&mut self, i: usize) -> Result<(), TooManyWeights> {
        let w = self.weight[i];
        let q = self.queue_of(w).map_err(|()| TooManyWeights(i))?;
        let queue = &mut self.queues[q];
        let c = self.flight[i] as usize;
        if queue.buckets.len() <= c {
            queue.buckets.resize_with(c + 1, Bucket::default);
        }
        let b = &mut queue.buckets[c];
        self.current[i] -= i64::from(w) * b.picks;
        b.file(i, self.current[i], &mut self.generation, &self.filed);
        self.filed[i] = true;
        if queue.filed == 0 || c < queue.min {
            queue.min = c;
        }
        queue.filed += 1;
        Ok(())
    }

    /// Takes a filed backend out of its bucket; its counter becomes explicit.
    fn unfile(&mut self, i: usize) {
        let w = self.weight[i];
        let queue = self
            .queues
            .iter_mut()
            .find(|q| q.weight == w)
            .expect("a filed backend's weight has a queue");
        let c = self.flight[i] as usize;
        let b = &mut queue.buckets[c];
        self.current[i] += i64::from(w) * b.picks;
        self.generation[i] = self.generation[i].wrapping_add(1);
        b.live -= 1;
        self.filed[i] = false;
        queue.filed -= 1;
        if queue.filed > 0 && c == queue.min {
            while queue.buckets[queue.min].live == 0 {
                queue.min += 1;
            }
        }
    }

    fn reattach(&mut self) {
        if let Some(j) = self.detached.take() {
            // Its queue is still there: queues are dropped only by `queue_of`, which runs
            // with no backend detached.
            self.insert(j)
                .expect("the detached backend's queue is kept");
        }
    }

    fn update(&mut self, i: usize, view: &Backend) -> Result<(), TooManyWeights> {
        if i >= self.flight.len() {
            return Ok(());
        }
        if self.detached == Some(i) {
            self.detached = None;
        } else {
            self.reattach();
        }
        let member = view.up && view.weight > 0;
        if self.filed[i]
            && member
            && view.in_flight == self.flight[i]
            && view.weight == self.weight[i]
        {
            return Ok(());
        }
        if self.filed[i] {
            self.unfile(i);
        }
        self.flight[i] = view.in_flight;
        self.weight[i] = view.weight;
        self.member[i] = member;
        if member { self.insert(i) } else { Ok(()) }
    }

    /// The least ratio `(count, weight)` over the queues with members.
    fn least_ratio(&self) -> Option<(u64, u64)> {
        let mut best: Option<(u64, u64)> = None;
        for q in self.queues.iter().filter(|q| q.filed > 0) {
            let (c, w) = (q.min as u64, u64::from(q.weight));
            if best.is_none_or(|(bc, bw)| c * bw < bc * w) {
                best = Some((c, w));
            }
        }
        best
    }

    fn pick(&mut self) -> Option<usize> {
        self.reattach();
        let (bc, bw) = self.least_ratio()?;
        let at_least =
            |q: &WeightQueue| q.filed > 0 && q.min as u64 * bw == bc * u64::from(q.weight);
        // The class adds one pick to each of its buckets; its total weight.
        let mut total = 0i64;
        for q in self.queues.iter_mut().filter(|q| at_least(q)) {
            let b = &mut q.buckets[q.min];
            b.picks += 1;
            total += i64::from(q.weight) * b.live as i64;
        }
        // The highest counter (key + weight × picks), lowest index among equals: over the
        // class's buckets, each heap's top once dead entries are dropped.
        let (filed, generation) = (&self.filed, &self.generation);
        let mut best: Option<(i64, u32)> = None;
        for q in self.queues.iter_mut().filter(|q| at_least(q)) {
            let w = i64::from(q.weight);
            let b = &mut q.buckets[q.min];
            while let Some(&(key, Reverse(j), g)) = b.heap.peek() {
                if filed[j as usize] && generation[j as usize] == g {
                    let counter = key + w * b.picks;
                    if best.is_none_or(|(bc, bi)| counter > bc || (counter == bc && j < bi)) {
                        best = Some((counter, j));
                    }
                    break;
                }
                b.heap.pop();
            }
        }
        let (_, i) = best?;
        let i = i as usize;
        // Unfile it (its heap entry goes dead), then it gives back the class's total.
        self.unfile(i);
        self.current[i] -= total;
        self.detached = Some(i);
        Some(i)
    }

    /// The same state as an [`Index`] (for more distinct weights than a `WeightedIndex`
    /// keeps), with `pending` (a member not yet filed) filed too.
    fn into_tree(mut self, pending: usize) -> Index {
        // Every filed member's counter made explicit, as the tree's `insert` expects.
        for i in 0..self.flight.len() {
            if self.filed[i] {
                self.unfile(i);
                self.filed[i] = true;
            }
        }
        let mut index = Index {
            flight: self.flight,
            member: self.member,
            weight: self.weight,
            current: self.current,
            classes: BTreeMap::new(),
            detached: self.detached,
        };
        for i in 0..index.flight.len() {
            if self.filed[i] || i == pending {
                index.insert(i);
            }
        }
        index
    }
}

/// Members of one in-flight count (of one weight, in [`WeightedIndex`]): a max-heap of
/// (key, lowest index first), with lazy deletion (an entry is live while its backend's
/// generation matches).
#[derive(Debug, Default)]
struct Bucket {
    /// Picks made among this bucket (each added 1 to every member's counter).
    picks: i64,
    /// Members filed here.
    live: usize,
    heap: BinaryHeap<(i64, Reverse<u32>, u32)>,
}

impl Bucket {
    /// Files backend `i` here under `key`, in a new generation (its older entries die).
    /// `filed` says which backends are filed somewhere (`i` is about to be): entries of
    /// others, or of older generations, are dead, and are dropped when they outnumber the
    /// members, so memory stays within twice the members.
    fn file(&mut self, i: usize, key: i64, generation: &mut [u32], filed: &[bool]) {
        generation[i] = generation[i].wrapping_add(1);
        self.heap.push((key, Reverse(i as u32), generation[i]));
        self.live += 1;
        if self.heap.len() > 2 * self.live + 32 {
            self.heap.retain(|&(_, Reverse(j), g)| {
                let j = j as usize;
                (filed[j] || j == i) && generation[j] == g
            });
        }
    }
}

/// The view of unweighted least connections, indexed: buckets by in-flight count (a bucket
/// queue: the lowest non-empty one is found by walking up from the last, and counts move
/// by one), each a heap. O(log n) per pick, dispatch and completion with small constants.
#[derive(Debug)]
struct FlatIndex {
    flight: Vec<u32>,
    /// Eligible (up).
    member: Vec<bool>,
    /// Filed in its bucket (a member that is not detached).
    filed: Vec<bool>,
    /// Bumped at every filing and unfiling: heap entries of older generations are dead.
    generation: Vec<u32>,
    /// Key when filed (counter minus its bucket's picks), counter otherwise.
    current: Vec<i64>,
    buckets: Vec<Bucket>,
    /// Lowest bucket with a member (meaningless when `filed_count` is 0).
    min: usize,
    filed_count: usize,
    /// See [`Index::detached`].
    detached: Option<usize>,
}

impl FlatIndex {
    fn new(backends: &Backends) -> FlatIndex {
        let n = backends.len();
        let mut index = FlatIndex {
            flight: backends.iter().map(|b| b.in_flight).collect(),
            member: vec![false; n],
            filed: vec![false; n],
            generation: vec![0; n],
            current: vec![0; n],
            buckets: Vec::new(),
            min: 0,
            filed_count: 0,
            detached: None,
        };
        for (i, b) in backends.iter().enumerate() {
            if b.up {
                index.member[i] = true;
                index.insert(i);
            }
        }
        index
    }

    fn insert(&mut self, i: usize) {
        let c = self.flight[i] as usize;
        if self.buckets.len() <= c {
            self.buckets.resize_with(c + 1, Bucket::default);
        }
        let b = &mut self.buckets[c];
        self.current[i] -= b.picks;
        b.file(i, self.current[i], &mut self.generation, &self.filed);
        self.filed[i] = true;
        if self.filed_count == 0 || c < self.min {
            self.min = c;
        }
        self.filed_count += 1;
    }

    /// Takes a filed backend out of its bucket; its counter becomes explicit.
    fn unfile(&mut self, i: usize) {
        let c = self.flight[i] as usize;
        let b = &mut self.buckets[c];
        self.current[i] += b.picks;
        self.generation[i] = self.generation[i].wrapping_add(1);
        b.live -= 1;
        self.filed[i] = false;
        self.filed_count -= 1;
        if self.filed_count > 0 && c == self.min {
            while self.buckets[self.min].live == 0 {
                self.min += 1;
            }
        }
    }

    fn reattach(&mut self) {
        if let Some(j) = self.detached.take() {
            self.insert(j);
        }
    }

    fn update(&mut self, i: usize, view: &Backend) {
        if i >= self.flight.len() {
            return;
        }
        if self.detached == Some(i) {
            self.detached = None;
        } else {
            self.reattach();
        }
        if self.filed[i] && view.up && view.in_flight == self.flight[i] {
            return;
        }
        if self.filed[i] {
            self.unfile(i);
        }
        self.flight[i] = view.in_flight;
        self.member[i] = view.up;
        if view.up {
            self.insert(i);
        }
    }

    fn pick(&mut self) -> Option<usize> {
        self.reattach();
        if self.filed_count == 0 {
            return None;
        }
        let b = &mut self.buckets[self.min];
        b.picks += 1;
        let total = b.live as i64;
        let (filed, generation) = (&self.filed, &self.generation);
        // The highest counter (key + picks), lowest index among equals: the heap's top
        // once dead entries are dropped.
        let i = loop {
            let &(_, Reverse(j), g) = b.heap.peek()?;
            b.heap.pop();
            if filed[j as usize] && generation[j as usize] == g {
                break j as usize;
            }
        };
        // Unfile it (its heap entry is already gone), then it gives back the bucket's total.
        self.unfile(i);
        self.current[i] -= total;
        self.detached = Some(i);
        Some(i)
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

    /// The index (`new`, keeping at most `max_weights` weights in bucket queues) and the
    /// scan (`for_backends` of 0 backends, which keeps none).
    fn index_and_scan(&(weighted, max_weights): &(bool, usize)) -> Pair {
        (
            Box::new(LeastConnections {
                max_weights,
                ..LeastConnections::new(weighted)
            }),
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
            |&(weighted, _)| index_and_scan(&(weighted, MAX_WEIGHTS)),
        );
    }

    /// Weights 1 to 5 over 300 backends, many in flight: ties across weights at ratios
    /// above 0 (2/1 = 4/2), with bucket queues and with the ordered map (2 weights kept).
    #[test]
    fn long_weighted_runs_pick_what_the_scan_picks() {
        use rand::RngExt;
        long_runs_agree(
            11,
            (60, false),
            &[(true, MAX_WEIGHTS), (true, 2)],
            |_, rng| (0..300).map(|_| rng.random_range(1..6)).collect(),
            index_and_scan,
        );
    }

    #[test]
    fn index_picks_what_the_scan_picks() {
        let params = (any::<bool>(), prop_oneof![Just(MAX_WEIGHTS), 1..4usize]);
        index_agrees_with_scan(params, weights(), index_and_scan);
    }

    /// A change to the view of one backend, or a pick.
    #[derive(Clone, Debug)]
    enum Change {
        Pick,
        Weight(usize, u32),
        Up(usize, bool),
        Done(usize),
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        prop_oneof![
            4 => Just(Change::Pick),
            1 => (any::<usize>(), 0u32..7).prop_map(|(i, w)| Change::Weight(i, w)),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(i, up)| Change::Up(i, up)),
            3 => any::<usize>().prop_map(Change::Done),
        ]
    }

    proptest! {
        /// Weights that change (as the balancer tells of them): the queues make and reuse
        /// a queue per weight, or turn into the ordered map when they run out; the picks
        /// stay the scan's.
        #[test]
        fn changing_weights_pick_what_the_scan_picks(
            weights in proptest::collection::vec(1u32..4, 1..10),
            max_weights in 1..5usize,
            changes in proptest::collection::vec(change(), 1..200),
        ) {
            let (mut fast, mut oracle) = index_and_scan(&(true, max_weights));
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
}
