//! A small per-thread lookup cache, for values the request path would
//! otherwise fetch from a map behind a lock every thread writes (or build
//! again) on every request. A client talks to few authorities and
//! clusters, so a short list searched linearly beats a shared map, and
//! nothing in it is written by another thread.

use std::cell::RefCell;

/// Entries kept per thread; the oldest goes first.
pub(crate) const CAPACITY: usize = 16;

/// Key-value pairs of one thread, oldest first. Declare it in a
/// `thread_local!` with `const { ThreadCache::new() }`, or keep it in
/// something that thread owns.
pub(crate) struct ThreadCache<K, V> {
    entries: RefCell<Vec<(K, V)>>,
}

impl<K, V> ThreadCache<K, V> {
    pub const fn new() -> Self {
        Self {
            entries: RefCell::new(Vec::new()),
        }
    }

    /// The first `Some` `hit` gives for an entry; `None` on a miss (or
    /// when the cache is in use further up this thread's stack).
    pub fn find<T>(&self, mut hit: impl FnMut(&K, &V) -> Option<T>) -> Option<T> {
        let entries = self.entries.try_borrow().ok()?;
        entries.iter().find_map(|(k, v)| hit(k, v))
    }

    /// Remembers `value` for `key`, after dropping the entries `keep`
    /// rejects and, when full, the oldest.
    pub fn insert(&self, key: K, value: V, keep: impl FnMut(&(K, V)) -> bool) {
        let Ok(mut entries) = self.entries.try_borrow_mut() else {
            return;
        };
        entries.retain(keep);
        if entries.len() >= CAPACITY {
            entries.remove(0);
        }
        entries.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_and_evicts_the_oldest() {
        let c: ThreadCache<u32, &str> = ThreadCache::new();
        assert_eq!(c.find(|k, v| (*k == 1).then_some(*v)), None);
        for k in 0..CAPACITY as u32 + 1 {
            c.insert(k, "v", |_| true);
        }
        assert_eq!(
            c.find(|k, _| (*k == 0).then_some(())),
            None,
            "oldest evicted"
        );
        assert_eq!(c.find(|k, v| (*k == 1).then_some(*v)), Some("v"));
        // `keep` drops entries before inserting.
        c.insert(99, "w", |(k, _)| *k != 1);
        assert_eq!(c.find(|k, _| (*k == 1).then_some(())), None);
        assert_eq!(c.find(|k, v| (*k == 99).then_some(*v)), Some("w"));
    }
}
