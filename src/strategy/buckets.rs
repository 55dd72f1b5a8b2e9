//! Backends filed in buckets by a small integer (a queue length, an in-flight count), for
//! O(1) "a uniform member of the lowest bucket": what join-the-shortest-queue needs.

/// Backends in buckets by key; each bucket in no particular order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Buckets {
    /// Key each backend is filed under.
    key: Vec<u32>,
    /// Whether it is filed.
    filed: Vec<bool>,
    /// Its position in its bucket.
    pos: Vec<u32>,
    bucket: Vec<Vec<u32>>,
    /// Lowest non-empty bucket (meaningless when `members` is 0).
    min: usize,
    members: usize,
}

impl Buckets {
    /// `n` backends, none filed.
    pub fn new(n: usize) -> Buckets {
        Buckets {
            key: vec![0; n],
            filed: vec![false; n],
            pos: vec![0; n],
            ..Default::default()
        }
    }

    /// Number of backends (filed or not).
    pub fn len(&self) -> usize {
        self.key.len()
    }

    /// Files backend `i` under `key`, or takes it out when `filed` is false. O(1), plus a
    /// walk up to the next non-empty bucket when the lowest one empties (keys change by
    /// one at a time, so that is short).
    pub fn set(&mut self, i: usize, filed: bool, key: u32) {
        if self.filed[i] == filed && (!filed || self.key[i] == key) {
            return;
        }
        if self.filed[i] {
            self.take(i);
        }
        self.key[i] = key;
        self.filed[i] = filed;
        if filed {
            let k = key as usize;
            if self.bucket.len() <= k {
                self.bucket.resize_with(k + 1, Vec::new);
            }
            self.pos[i] = self.bucket[k].len() as u32;
            self.bucket[k].push(i as u32);
            if self.members == 0 || k < self.min {
                self.min = k;
            }
            self.members += 1;
        }
    }

    fn take(&mut self, i: usize) {
        let k = self.key[i] as usize;
        let bucket = &mut self.bucket[k];
        let p = self.pos[i] as usize;
        bucket.swap_remove(p);
        if let Some(&moved) = bucket.get(p) {
            self.pos[moved as usize] = p as u32;
        }
        self.filed[i] = false;
        self.members -= 1;
        if self.members > 0 && k == self.min {
            while self.bucket[self.min].is_empty() {
                self.min += 1;
            }
        }
    }

    /// The members of the lowest non-empty bucket, if any backend is filed.
    pub fn lowest(&self) -> Option<&[u32]> {
        (self.members > 0).then(|| &self.bucket[self.min][..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The lowest bucket holds exactly the filed backends of the lowest key.
        #[test]
        fn lowest_is_the_minimum(ops in proptest::collection::vec((0usize..8, any::<bool>(), 0u32..5), 0..200)) {
            let mut b = Buckets::new(8);
            let mut model: Vec<Option<u32>> = vec![None; 8];
            for (i, filed, key) in ops {
                b.set(i, filed, key);
                model[i] = filed.then_some(key);
                let min = model.iter().flatten().min().copied();
                let mut want: Vec<u32> = (0..8u32).filter(|&j| min.is_some() && model[j as usize] == min).collect();
                let mut got = b.lowest().map(<[u32]>::to_vec).unwrap_or_default();
                got.sort();
                want.sort();
                prop_assert_eq!(got, want);
            }
        }
    }
}
