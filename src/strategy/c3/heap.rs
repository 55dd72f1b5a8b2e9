//! C3 indexed's scores as a min-heap: one integer key per server (see `within_key` and
//! `over_key` in the parent module), and the servers holding one key kept as a set for
//! the draws among tied servers.
//!
//! Why a heap and not a tree of minima (issue 14): a pick raises the picked server's key,
//! and in a tree of minima that server was the least of every group on its path, so every
//! level changed up to the root (about 10 levels a pick at 10,000 servers, each a rescan
//! of a group with counts of tied servers). In a heap the risen root sinks only as far as
//! its new key, one least of four keys a level, and a reply's lower key rises from where
//! it is, usually a level or two.
//!
//! **Ties.** C3 indexed draws `random_range(0..t)` over the `t` servers holding the least
//! key and takes the drawn one in server order. Whatever the order among equal keys, the
//! servers at the least key form a subtree at the root (a node's ancestors are at most
//! its key, and none is below the least), so the root has no child at its key exactly
//! when `t = 1`: a pick without ties reads the root and its children. The tied servers
//! themselves come from [`Holders`], the set of the servers holding one key in server
//! order, kept exact through every change of key: ties are common at the start (every
//! server not heard from scores 0, thousands of them at 10,000 servers, and a pick leaves
//! such a server at 0) and rare later. A tie at another key than the one tracked rebuilds
//! the set from the tied subtree, in time linear in the tied servers.

use std::hint::select_unpredictable;

use super::DOWN_KEY;

/// Children of each node.
const ARITY: usize = 4;

/// The root's slot. Node `p` of the heap (root 0, children of `p` from `ARITY·p + 1`) is
/// slot `p + ROOT`, so that the children of the node at slot `s` are the aligned group of
/// [`ARITY`] slots from [`first_child`]`(s)`; the slots before the root are padding.
const ROOT: usize = ARITY - 1;

/// The first child's slot of the node at slot `s`: node `s − ROOT`'s first child is node
/// `ARITY·(s − ROOT) + 1`, slot `ARITY·(s − ROOT) + ARITY`.
fn first_child(s: usize) -> usize {
    ARITY * (s + 1 - ROOT)
}

/// The parent's slot of the slot `s` (not the root's): node `s − ROOT`'s parent is node
/// `(s − ROOT − 1) / ARITY`, which is `s / ARITY − 1` because `ROOT + 1 = ARITY`.
fn parent(s: usize) -> usize {
    s / ARITY - 1 + ROOT
}

/// The server of a padding slot (whose key is [`DOWN_KEY`]).
const NO_SERVER: u32 = u32::MAX;

/// A min-heap of servers by key, with each server's slot, and the holders of one key
/// ([`Holders`]).
#[derive(Debug, Clone)]
pub(super) struct KeyHeap {
    /// Per slot its key and its server, to whole groups of [`ARITY`] (padding:
    /// [`DOWN_KEY`], [`NO_SERVER`]).
    keys: Vec<u64>,
    servers: Vec<u32>,
    /// Per server its slot.
    slot: Vec<u32>,
    /// The servers holding one key.
    holders: Holders,
    /// The tied subtree's walk (kept to reuse its allocation).
    stack: Vec<u32>,
}

impl KeyHeap {
    /// `n` servers, every key [`DOWN_KEY`].
    pub(super) fn new(n: usize) -> KeyHeap {
        // Whole groups: the children of a slot are all within the tables or all beyond.
        let len = (ROOT + n).next_multiple_of(ARITY);
        let mut servers = vec![NO_SERVER; len];
        for (i, s) in servers[ROOT..ROOT + n].iter_mut().enumerate() {
            // Equal keys: any order is a heap.
            *s = i as u32;
        }
        KeyHeap {
            keys: vec![DOWN_KEY; len],
            servers,
            slot: (0..n).map(|i| (ROOT + i) as u32).collect(),
            holders: Holders::new(n, super::within_key(0.0)),
            stack: Vec::new(),
        }
    }

    /// Server `i`'s key.
    #[cfg(test)]
    pub(super) fn key(&self, i: usize) -> u64 {
        self.keys[self.slot[i] as usize]
    }

    /// Sets server `i`'s key. Inlined, so that each call site has its own branch on the
    /// direction (see `C3::pick_indexed`).
    #[inline(always)]
    pub(super) fn set(&mut self, i: usize, key: u64) {
        let s = self.slot[i] as usize;
        let old = self.keys[s];
        if old == key {
            return;
        }
        self.holders.change(i, old, key);
        if key < old {
            self.sift_up(s, key, i as u32);
        } else {
            self.sift_down(s, key, i as u32);
        }
    }

    /// Moves server `i` at `key`, whose slot `s` is free, up to where it belongs.
    #[inline(never)]
    fn sift_up(&mut self, mut s: usize, key: u64, i: u32) {
        while s != ROOT {
            let p = parent(s);
            let above = self.keys[p];
            if above <= key {
                break;
            }
            self.put(s, above, self.servers[p]);
            s = p;
        }
        self.put(s, key, i);
    }

    /// Moves server `i` at `key`, whose slot `s` is free, down to where it belongs.
    #[inline(never)]
    fn sift_down(&mut self, mut s: usize, key: u64, i: u32) {
        loop {
            let c = first_child(s);
            let Some(below) = self.keys.get(c..c + ARITY) else {
                break;
            };
            let m = c + least(below.try_into().expect("a group"));
            let next = self.keys[m];
            if next >= key {
                break;
            }
            self.put(s, next, self.servers[m]);
            s = m;
        }
        self.put(s, key, i);
    }

    /// Server `i` at `key` into slot `s`.
    #[inline(always)]
    fn put(&mut self, s: usize, key: u64, i: u32) {
        // Padding never moves: its key is above every server's but a down one, and
        // among equal keys nothing moves.
        debug_assert_ne!(i, NO_SERVER);
        self.keys[s] = key;
        self.servers[s] = i;
        self.slot[i as usize] = s as u32;
    }

    /// The server C3 indexed picks: `None` if every server is down (or there is none),
    /// else the only one at the least key, or among several the `draw(t)`-th (from 0, in
    /// server order) of the `t` tied.
    pub(super) fn pick(&mut self, draw: impl FnOnce(u32) -> u32) -> Option<usize> {
        let key = self.keys[ROOT];
        if key == DOWN_KEY {
            return None;
        }
        let c = first_child(ROOT);
        let tied = self
            .keys
            .get(c..c + ARITY)
            .is_some_and(|below| below.contains(&key));
        if !tied {
            return Some(self.servers[ROOT] as usize);
        }
        self.track(key);
        let rank = draw(self.holders.count);
        Some(self.holders.select(rank))
    }

    /// Makes [`Holders`] those of `key`, the root's, if it tracks another key: the
    /// servers of the subtree of `key` at the root.
    #[cold]
    #[inline(never)]
    fn track(&mut self, key: u64) {
        if self.holders.key == key {
            return;
        }
        self.holders.clear(key);
        self.stack.push(ROOT as u32);
        while let Some(s) = self.stack.pop() {
            let s = s as usize;
            if self.keys[s] != key {
                continue;
            }
            self.holders.insert(self.servers[s] as usize);
            let c = first_child(s);
            if c < self.keys.len() {
                self.stack.extend((c..c + ARITY).map(|c| c as u32));
            }
        }
    }
}

/// Where the least of [`ARITY`] keys is (the first of equals), without branches: which
/// child is least is a coin toss to a branch predictor, and a sift takes one a level.
/// Pairs of (key, place) are merged halves by halves, each merge a select.
#[inline(always)]
fn least(keys: &[u64; ARITY]) -> usize {
    let mut k = *keys;
    let mut at: [usize; ARITY] = std::array::from_fn(|j| j);
    let mut width = ARITY;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            let right = k[j + width] < k[j];
            at[j] = select_unpredictable(right, at[j + width], at[j]);
            k[j] = k[j].min(k[j + width]);
        }
    }
    at[0]
}

/// Servers per block of [`Holders`] (16 words of 64).
const BLOCK: usize = 1024;

/// The servers holding one key, as bits in server order, with how many are set in each
/// [`BLOCK`] for a draw's rank-th: a set kept exact through every change of key, so that
/// a draw among thousands of tied servers neither walks them nor counts them.
#[derive(Debug, Clone)]
struct Holders {
    key: u64,
    /// Bit `i % 64` of word `i / 64`: server `i` holds `key`.
    words: Vec<u64>,
    /// Per [`BLOCK`] of servers, how many hold `key`.
    blocks: Vec<u32>,
    count: u32,
}

impl Holders {
    /// The holders of `key` among `n` servers that hold none yet.
    fn new(n: usize, key: u64) -> Holders {
        Holders {
            key,
            words: vec![0; n.div_ceil(64)],
            blocks: vec![0; n.div_ceil(BLOCK)],
            count: 0,
        }
    }

    /// Server `i`'s key goes from `old` to `new` (not equal).
    #[inline(always)]
    fn change(&mut self, i: usize, old: u64, new: u64) {
        if old == self.key {
            self.remove(i);
        } else if new == self.key {
            self.insert(i);
        }
    }

    fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
        self.blocks[i / BLOCK] += 1;
        self.count += 1;
    }

    fn remove(&mut self, i: usize) {
        self.words[i / 64] &= !(1 << (i % 64));
        self.blocks[i / BLOCK] -= 1;
        self.count -= 1;
    }

    /// No server, and `key` the key tracked from now on.
    fn clear(&mut self, key: u64) {
        self.key = key;
        self.words.fill(0);
        self.blocks.fill(0);
        self.count = 0;
    }

    /// The `rank`-th holder (from 0) in server order.
    fn select(&self, mut rank: u32) -> usize {
        debug_assert!(rank < self.count, "rank {rank} of {}", self.count);
        let mut b = 0;
        while rank >= self.blocks[b] {
            rank -= self.blocks[b];
            b += 1;
        }
        let mut w = b * (BLOCK / 64);
        while rank >= self.words[w].count_ones() {
            rank -= self.words[w].count_ones();
            w += 1;
        }
        let mut bits = self.words[w];
        for _ in 0..rank {
            bits &= bits - 1;
        }
        w * 64 + bits.trailing_zeros() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::Strategy as Gen;

    /// Keys from a few values, so that many servers tie (and the down key).
    fn some_key() -> impl Gen<Value = u64> {
        prop_oneof![
            6 => 0u64..4,
            2 => (0u64..3).prop_map(|k| k | 1 << 63),
            1 => Just(DOWN_KEY),
        ]
    }

    /// Every slot's key at least its parent's, and each server's slot its own.
    fn assert_heap(h: &KeyHeap) {
        for s in ROOT + 1..h.keys.len() {
            assert!(h.keys[parent(s)] <= h.keys[s], "slot {s}");
        }
        for (i, &s) in h.slot.iter().enumerate() {
            assert_eq!(h.servers[s as usize], i as u32);
        }
    }

    proptest! {
        /// After any changes of keys, a pick is what a plain list gives: none when all
        /// are down, the one holder of the least key without a draw, else the drawn rank
        /// of the holders in server order, the draw over their number.
        #[test]
        fn picks_what_a_plain_list_picks(
            n in prop_oneof![1usize..12, 12usize..80, 900usize..1100],
            sets in proptest::collection::vec((any::<usize>(), some_key()), 1..300),
        ) {
            let mut h = KeyHeap::new(n);
            let mut model = vec![DOWN_KEY; n];
            for (i, key) in sets {
                let i = i % n;
                h.set(i, key);
                model[i] = key;
                assert_heap(&h);
                prop_assert_eq!(h.key(i), key);
                let least = *model.iter().min().expect("a server");
                let holders: Vec<usize> = (0..n).filter(|&j| model[j] == least).collect();
                if least == DOWN_KEY {
                    prop_assert_eq!(h.pick(|_| unreachable!()), None);
                    continue;
                }
                for (rank, &j) in holders.iter().enumerate() {
                    let mut drawn = None;
                    let picked = h.pick(|t| {
                        drawn = Some(t);
                        rank as u32
                    });
                    prop_assert_eq!(picked, Some(j));
                    let expected = (holders.len() > 1).then_some(holders.len() as u32);
                    prop_assert_eq!(drawn, expected);
                }
                prop_assert!(h.holders.count as usize <= n);
            }
        }
    }
}
