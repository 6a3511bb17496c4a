//! Noticing config changes: a fingerprint of the directory, polled, and a
//! debouncer that waits for the edits to settle.
//!
//! Polling rather than inotify (`notify`): a config directory is small, so
//! hashing it every ~100 ms costs little, and polling behaves the same on
//! every filesystem, including the atomic symlink swaps Kubernetes uses
//! for mounted ConfigMaps, network filesystems and editors that write a
//! temp file and rename it, where inotify either misses events or reports
//! half-written files. The debouncer then turns a burst of writes (a `git
//! pull`, `kubectl cp` of many files) into a single load.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

/// A hash of every path, size and content under `paths`; it changes when
/// any file is added, removed or edited.
pub fn fingerprint(paths: &[&Path]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in paths {
        hash_tree(p, &mut h);
    }
    h.finish()
}

fn hash_tree(path: &Path, h: &mut DefaultHasher) {
    path.hash(h);
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            entries.sort();
            for e in entries {
                hash_tree(&e, h);
            }
        }
        Ok(_) => match std::fs::read(path) {
            Ok(bytes) => bytes.hash(h),
            Err(e) => e.kind().hash(h),
        },
        Err(e) => e.kind().hash(h),
    }
}

/// Debounce state: a change is applied once no other change was seen for
/// `after`, or at the latest `max` after the first change of the burst (so
/// a directory that never stops changing still gets applied).
#[derive(Debug, Clone)]
pub struct Debouncer {
    after: Duration,
    max: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    /// A debouncer with a quiet period and an upper bound.
    pub fn new(after: Duration, max: Duration) -> Self {
        Self {
            after,
            max: max.max(after),
            first: None,
            last: None,
        }
    }

    /// Records a change seen at `now`.
    pub fn changed(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// When the pending burst is due, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        let first = self.first?;
        let last = self.last.unwrap_or(first);
        Some((last + self.after).min(first + self.max))
    }

    /// If the pending burst is due at `now`, ends it and returns when its
    /// first change was seen (the start of convergence time).
    pub fn take_due(&mut self, now: Instant) -> Option<Instant> {
        if self.deadline()? <= now {
            self.last = None;
            self.first.take()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::time::advance;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn burst_is_applied_once_after_quiet_period() {
        let mut d = Debouncer::new(100 * MS, 10_000 * MS);
        let start = Instant::now();
        assert!(d.take_due(start).is_none());
        d.changed(Instant::now());
        advance(60 * MS).await;
        // Another write inside the quiet period pushes the deadline out.
        d.changed(Instant::now());
        advance(60 * MS).await;
        assert!(d.take_due(Instant::now()).is_none());
        advance(40 * MS).await;
        assert_eq!(d.take_due(Instant::now()), Some(start));
        assert!(d.deadline().is_none());
        assert!(d.take_due(Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn endless_changes_are_applied_at_max() {
        let mut d = Debouncer::new(100 * MS, 500 * MS);
        let start = Instant::now();
        let mut applied = None;
        for _ in 0..20 {
            d.changed(Instant::now());
            advance(50 * MS).await;
            if let Some(first) = d.take_due(Instant::now()) {
                applied = Some((first, Instant::now()));
                break;
            }
        }
        let (first, at) = applied.unwrap();
        assert_eq!(first, start);
        assert_eq!(at - start, 500 * MS);
    }

    #[test]
    fn fingerprint_sees_edits_adds_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, "x: 1\n").unwrap();
        let f1 = fingerprint(&[dir.path()]);
        assert_eq!(f1, fingerprint(&[dir.path()]));
        std::fs::write(&a, "x: 2\n").unwrap();
        let f2 = fingerprint(&[dir.path()]);
        assert_ne!(f1, f2);
        std::fs::write(dir.path().join("b.yaml"), "").unwrap();
        let f3 = fingerprint(&[dir.path()]);
        assert_ne!(f2, f3);
        std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
        assert_eq!(f2, fingerprint(&[dir.path()]));
    }
}
