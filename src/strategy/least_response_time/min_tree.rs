//! A wide tree of minima over integer keys, for [`super::LeastResponseTime`]'s index: the
//! least key of all, and "the first position at or after `from` whose key is at most `m`",
//! each in a few scans of [`FANOUT`] consecutive keys.
//!
//! Laid out as C3's score index (`c3.rs`, `ScoreIndex`): level 0 is the keys themselves,
//! each node of level `j + 1` the least of [`FANOUT`] consecutive nodes of level `j`, up
//! to a root alone. At 1,000 keys that is three levels above the keys where a binary tree
//! has ten: a walk is a few dependent loads instead of ten, and each step scans its
//! group of keys branch-free (a compare per key into a bit mask, then `trailing_zeros`),
//! where a binary walk takes an unpredictable branch per level.

/// Children of each node (keys under each lowest node).
pub(super) const FANOUT: usize = 16;

/// The key of an absent position (padding, or a backend that is down): above every key
/// a position holds.
pub(super) const ABSENT: u64 = u64::MAX;

/// A tree of minima over `len` keys (see the module documentation).
#[derive(Debug, Clone)]
pub(super) struct MinTree {
    /// Every level, from the keys (level 0) to the root, one after another; each level
    /// but the root is padded with [`ABSENT`] to a whole number of groups.
    nodes: Vec<u64>,
    /// Where each level starts in `nodes`; the last is the root's.
    starts: Vec<usize>,
}

/// The least of [`FANOUT`] keys, in four running minima: each conditional move waits on
/// a quarter of the others, not on all before it (as C3's `least_key`).
fn least(keys: &[u64; FANOUT]) -> u64 {
    let mut m = [ABSENT; 4];
    for chunk in keys.chunks_exact(4) {
        for (m, &k) in m.iter_mut().zip(chunk) {
            *m = (*m).min(k);
        }
    }
    m[0].min(m[1]).min(m[2].min(m[3]))
}

/// Which of [`FANOUT`] keys are at most `m`, as bits (bit `j` for `keys[j]`).
fn at_most(keys: &[u64; FANOUT], m: u64) -> u32 {
    keys.iter()
        .enumerate()
        .fold(0, |held, (j, &k)| held | u32::from(k <= m) << j)
}

impl MinTree {
    /// A tree over `len` keys, all [`ABSENT`].
    pub(super) fn new(len: usize) -> MinTree {
        // Nodes per level, from the keys to the root (above at least one group of keys,
        // so that the keys are never the root).
        let mut widths = vec![len.max(1)];
        loop {
            let w = widths[widths.len() - 1].div_ceil(FANOUT);
            widths.push(w);
            if w == 1 {
                break;
            }
        }
        let mut starts = Vec::with_capacity(widths.len());
        let mut end = 0;
        for (j, &w) in widths.iter().enumerate() {
            starts.push(end);
            // Whole groups below the root.
            end += if j + 1 < widths.len() {
                w.next_multiple_of(FANOUT)
            } else {
                w
            };
        }
        MinTree {
            nodes: vec![ABSENT; end],
            starts,
        }
    }

    /// The least key of all ([`ABSENT`] when none is present).
    pub(super) fn least(&self) -> u64 {
        self.nodes[self.nodes.len() - 1]
    }

    /// The key at position `i`.
    #[cfg(test)]
    pub(super) fn key(&self, i: usize) -> u64 {
        self.nodes[i]
    }

    /// Group `g` of level `j` (the children of node `g` of level `j + 1`).
    fn group(&self, j: usize, g: usize) -> &[u64; FANOUT] {
        let at = self.starts[j] + g * FANOUT;
        self.nodes[at..at + FANOUT]
            .try_into()
            .expect("levels below the root are whole groups")
    }

    /// Sets the key at position `i`, then its ancestors up to the first that keeps its
    /// value.
    pub(super) fn set(&mut self, i: usize, key: u64) {
        let (mut was, mut now) = (std::mem::replace(&mut self.nodes[i], key), key);
        let mut p = i;
        for j in 0..self.starts.len() - 1 {
            if was == now {
                return;
            }
            let g = p / FANOUT;
            let parent = self.starts[j + 1] + g;
            let old = self.nodes[parent];
            let new = if now <= old {
                // The child is now (one of) the least: no need to read its siblings.
                now
            } else if was > old {
                // Neither then nor now the least.
                return;
            } else {
                // It held the least and went up: the least of the group again.
                least(self.group(j, g))
            };
            self.nodes[parent] = new;
            (was, now, p) = (old, new, g);
        }
    }

    /// The first position at `from` or after whose key is at most `m` (below [`ABSENT`]:
    /// the padding is absent).
    pub(super) fn first_at_most(&self, from: usize, m: u64) -> Option<usize> {
        debug_assert!(m < ABSENT);
        let top = self.starts.len() - 1;
        // Up: at level `j`, the first node at `p` or after in `p`'s group; if none, the
        // first in the parent's level after the parent.
        let (mut j, mut p) = (0, from);
        loop {
            if j == top {
                return None;
            }
            let g = p / FANOUT;
            if self.starts[j] + g * FANOUT >= self.starts[j + 1] {
                // Past the level's last group.
                return None;
            }
            let held = at_most(self.group(j, g), m) & (u32::MAX << (p % FANOUT));
            if held != 0 {
                p = g * FANOUT + held.trailing_zeros() as usize;
                break;
            }
            (j, p) = (j + 1, g + 1);
        }
        // Down: the first child of each node at most `m` (one is: the node is their least).
        while j > 0 {
            j -= 1;
            p = p * FANOUT + at_most(self.group(j, p), m).trailing_zeros() as usize;
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The model: a plain array of keys.
    fn first_at_most(keys: &[u64], from: usize, m: u64) -> Option<usize> {
        (from..keys.len()).find(|&i| keys[i] <= m)
    }

    /// Keys drawn from a few values (ties) or from many, with some absent.
    fn key() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..4, Just(ABSENT), any::<u64>()]
    }

    proptest! {
        /// After any sequence of sets, the least and every `first_at_most` are the plain
        /// array's, at sizes from one group to four levels.
        #[test]
        fn agrees_with_a_plain_array(
            len in prop_oneof![1usize..40, 200usize..300, 4090usize..4200],
            sets in proptest::collection::vec((any::<prop::sample::Index>(), key()), 1..400),
            queries in proptest::collection::vec(
                (any::<prop::sample::Index>(), key().prop_map(|m| m.min(ABSENT - 1))),
                1..40,
            ),
        ) {
            let mut tree = MinTree::new(len);
            let mut model = vec![ABSENT; len];
            for (i, k) in sets {
                let i = i.index(len);
                tree.set(i, k);
                model[i] = k;
                prop_assert_eq!(tree.least(), model.iter().copied().min().unwrap());
            }
            for (i, &k) in model.iter().enumerate() {
                prop_assert_eq!(tree.key(i), k);
            }
            for (from, m) in queries {
                // Past the end too.
                let from = from.index(len + 2);
                prop_assert_eq!(tree.first_at_most(from, m), first_at_most(&model, from, m));
                let least = tree.least();
                if least != ABSENT {
                    let model = first_at_most(&model, from, least);
                    prop_assert_eq!(tree.first_at_most(from, least), model);
                }
            }
        }
    }

    #[test]
    fn levels_of_whole_groups() {
        let t = MinTree::new(1000);
        // 1,000 keys in 63 groups, 63 nodes in 4, 4 in 1, and the root.
        assert_eq!(t.starts, vec![0, 1008, 1008 + 64, 1008 + 64 + 16]);
        assert_eq!(MinTree::new(1).starts, vec![0, 16]);
        assert_eq!(MinTree::new(16).starts, vec![0, 16]);
        assert_eq!(MinTree::new(17).starts, vec![0, 32, 48]);
    }

    #[test]
    fn first_at_most_wraps_nothing_and_finds_ties_in_order() {
        let mut t = MinTree::new(40);
        assert_eq!(t.least(), ABSENT);
        assert_eq!(t.first_at_most(0, 5), None);
        for i in [3, 17, 39] {
            t.set(i, 5);
        }
        assert_eq!(t.first_at_most(0, 5), Some(3));
        assert_eq!(t.first_at_most(4, 5), Some(17));
        assert_eq!(t.first_at_most(18, 5), Some(39));
        assert_eq!(t.first_at_most(40, 5), None);
        assert_eq!(t.first_at_most(0, 4), None);
    }
}
