//! Maglev consistent hashing (Google's Maglev paper, weighted the way
//! Envoy does it): a lookup table of prime size (65537 by default) where
//! each endpoint fills slots along its own permutation, in proportion to
//! its weight. Lookups are one array index; when an endpoint leaves only
//! about its share of the slots change owner.

use super::hash::xxh64;

/// Envoy's default Maglev table size.
pub const DEFAULT_TABLE_SIZE: u64 = 65537;

/// A built Maglev table over endpoint indices.
#[derive(Debug, Clone)]
pub struct Maglev {
    table: Vec<usize>,
}

impl Maglev {
    /// Builds the table over `(index, name, weight)`. `table_size` should
    /// be prime (validation insists); a non-prime still works, less evenly.
    pub fn build(hosts: &[(usize, String, u32)], table_size: u64) -> Self {
        if hosts.is_empty() {
            return Self { table: Vec::new() };
        }
        let m = table_size.max(hosts.len() as u64).max(2);
        let total: f64 = hosts.iter().map(|h| f64::from(h.2.max(1))).sum();
        struct Entry {
            idx: usize,
            offset: u64,
            skip: u64,
            weight: f64,
            target: f64,
            next: u64,
        }
        let mut entries: Vec<Entry> = hosts
            .iter()
            .map(|(idx, name, w)| Entry {
                idx: *idx,
                offset: xxh64(name.as_bytes(), 0) % m,
                skip: xxh64(name.as_bytes(), 1) % (m - 1) + 1,
                weight: f64::from((*w).max(1)) / total,
                target: 0.0,
                next: 0,
            })
            .collect();
        let max_w = entries.iter().map(|e| e.weight).fold(0.0, f64::max);
        let mut table: Vec<Option<usize>> = vec![None; m as usize];
        let mut filled = 0u64;
        let mut iteration = 1u64;
        while filled < m {
            for e in entries.iter_mut() {
                if filled >= m {
                    break;
                }
                if (iteration as f64) * e.weight < e.target {
                    continue;
                }
                e.target += max_w;
                let mut c = (e.offset + e.skip * e.next) % m;
                while table[c as usize].is_some() {
                    e.next += 1;
                    c = (e.offset + e.skip * e.next) % m;
                }
                table[c as usize] = Some(e.idx);
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Self {
            table: table.into_iter().flatten().collect(),
        }
    }

    /// Table size.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The endpoint for `hash`, probing the following slots past endpoints
    /// `allowed` rejects.
    pub fn lookup(&self, hash: u64, allowed: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.table.len();
        if n == 0 {
            return None;
        }
        let start = (hash % n as u64) as usize;
        (0..n)
            .map(|i| self.table[(start + i) % n])
            .find(|idx| allowed(*idx))
    }
}
