//! Noticing config changes: the directory's fingerprint
//! ([`mesh_core::config::fingerprint`], the same one the SDK's local
//! source polls), polled, and a debouncer that waits for the edits to
//! settle.
//!
//! Polling rather than inotify (`notify`): a config directory is small, so
//! hashing it every ~100 ms costs little, and polling behaves the same on
//! every filesystem, including the atomic symlink swaps Kubernetes uses
//! for mounted ConfigMaps, network filesystems and editors that write a
//! temp file and rename it, where inotify either misses events or reports
//! half-written files. The debouncer then turns a burst of writes (a `git
//! pull`, `kubectl cp` of many files) into a single load.

use std::time::Duration;

use tokio::time::Instant;

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
}
