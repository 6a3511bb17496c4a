//! Route deadlines without a tokio timer per request.
//!
//! A tokio `Sleep` per request clones the runtime handle's `Arc` and locks
//! a timer shard chosen at random, at its first poll and again at its
//! drop: cache lines the requests of every core write. Nearly every
//! request ends long before its deadline, so each thread instead keeps
//! its requests' deadlines in a list of its own (a lock only that thread
//! takes, but for a sweeper's rare visit), and one sweeper task per thread
//! sleeps until the earliest and wakes the requests whose deadline passed.
//! A request checks the clock itself whenever it is polled, so a deadline
//! is never reported early, and at most one timer tick late, like tokio's.
//!
//! The sweeper runs on the runtime that registered the first deadline; a
//! thread that later serves another runtime (tests do) starts a new one
//! once the old one is gone with its runtime.

use mesh_core::sync::LockExt;
use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;

use tokio::sync::Notify;
use tokio::time::Instant;

/// One thread's deadlines.
struct Shard {
    entries: Mutex<Entries>,
    /// Tells the sweeper a deadline earlier than the one it sleeps until
    /// was registered.
    earlier: Arc<Notify>,
}

#[derive(Default)]
struct Entries {
    /// `(deadline, waker)`; the waker is taken when the sweeper wakes it.
    slots: Vec<Option<(Instant, Option<Waker>)>>,
    free: Vec<usize>,
    /// What the sweeper sleeps until (`None`: nothing, it waits for news).
    target: Option<Instant>,
    /// Alive while the sweeper task is.
    sweeper: Weak<()>,
}

fn lock(m: &Mutex<Entries>) -> MutexGuard<'_, Entries> {
    m.locked()
}

thread_local! {
    static SHARD: RefCell<Option<Arc<Shard>>> = const { RefCell::new(None) };
}

/// A registered deadline; dropping it forgets the deadline.
struct Registration {
    shard: Arc<Shard>,
    slot: usize,
}

impl Registration {
    /// Remembers that `waker` must be woken at `deadline`. `None` outside
    /// a tokio runtime (nothing could run the sweeper there).
    fn new(deadline: Instant, waker: &Waker) -> Option<Self> {
        let shard = SHARD.with(|s| {
            s.borrow_mut()
                .get_or_insert_with(|| {
                    Arc::new(Shard {
                        entries: Mutex::default(),
                        earlier: Arc::new(Notify::new()),
                    })
                })
                .clone()
        });
        let (slot, wake_sweeper) = {
            let mut e = lock(&shard.entries);
            if e.sweeper.upgrade().is_none() {
                let handle = tokio::runtime::Handle::try_current().ok()?;
                let alive = Arc::new(());
                e.sweeper = Arc::downgrade(&alive);
                e.target = None;
                handle.spawn(sweep(Arc::downgrade(&shard), shard.earlier.clone(), alive));
            }
            let entry = Some((deadline, Some(waker.clone())));
            let slot = match e.free.pop() {
                Some(i) => {
                    if let Some(s) = e.slots.get_mut(i) {
                        *s = entry;
                    }
                    i
                }
                None => {
                    e.slots.push(entry);
                    e.slots.len() - 1
                }
            };
            (slot, e.target.is_none_or(|t| deadline < t))
        };
        if wake_sweeper {
            shard.earlier.notify_one();
        }
        Some(Registration { shard, slot })
    }

    /// Wakes `waker` at the deadline instead of the one registered before
    /// (the request moved to another task or was polled with a new
    /// waker).
    fn update(&self, waker: &Waker) {
        let mut e = lock(&self.shard.entries);
        if let Some(Some((_, w))) = e.slots.get_mut(self.slot) {
            match w {
                Some(old) if old.will_wake(waker) => {}
                // Not woken yet, or woken already: either way, wake this one.
                _ => *w = Some(waker.clone()),
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut e = lock(&self.shard.entries);
        if let Some(s) = e.slots.get_mut(self.slot) {
            *s = None;
            e.free.push(self.slot);
        }
    }
}

/// A one-shot timer on the deadline list: the route timeout, and the
/// per-try timeout and backoff of the retry stage.
pub(crate) struct Timer {
    deadline: Instant,
    polled: bool,
    registration: Option<Registration>,
}

impl Timer {
    /// A timer expiring `d` from now.
    pub(crate) fn after(d: std::time::Duration) -> Self {
        Timer {
            deadline: Instant::now() + d,
            polled: false,
            registration: None,
        }
    }

    /// True once the deadline passed; until then, arranges for the task
    /// of `cx` to be woken at the deadline.
    pub(crate) fn expired(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        // The first poll follows the setting of the timer at once: no
        // clock read (the sweeper wakes it if the deadline passed anyway).
        if self.polled && Instant::now() >= self.deadline {
            self.registration = None;
            return true;
        }
        self.polled = true;
        match &self.registration {
            None => self.registration = Registration::new(self.deadline, cx.waker()),
            Some(r) => r.update(cx.waker()),
        }
        false
    }
}

/// The sweeper of one thread's deadlines: sleeps until the earliest,
/// wakes those that passed, and ends when the thread's list is gone.
async fn sweep(shard: Weak<Shard>, news: Arc<Notify>, _alive: Arc<()>) {
    loop {
        let Some(s) = shard.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut due = Vec::new();
        let target = {
            let mut e = lock(&s.entries);
            let mut earliest: Option<Instant> = None;
            for (deadline, waker) in e.slots.iter_mut().flatten() {
                if *deadline <= now {
                    if let Some(w) = waker.take() {
                        due.push(w);
                    }
                } else if waker.is_some() {
                    earliest = Some(earliest.map_or(*deadline, |t| t.min(*deadline)));
                }
            }
            e.target = earliest;
            earliest
        };
        for w in due {
            w.wake();
        }
        // Only the thread keeps its list alive while this sleeps.
        drop(s);
        let earlier = news.notified();
        match target {
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = earlier => {}
                }
            }
            None => earlier.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    /// Pending until `deadline`, which it registers like the timeout stage.
    async fn until(deadline: Instant) -> Instant {
        let mut reg = None;
        poll_fn(|cx| {
            if Instant::now() >= deadline {
                return Poll::Ready(Instant::now());
            }
            match &reg {
                None => reg = Registration::new(deadline, cx.waker()),
                Some(r) => r.update(cx.waker()),
            }
            Poll::Pending
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_each_deadline_on_time_in_any_order() {
        let start = Instant::now();
        let late = tokio::spawn(until(start + Duration::from_secs(5)));
        tokio::task::yield_now().await;
        // Registered after a later one: the sweeper must wake up earlier.
        let early = tokio::spawn(until(start + Duration::from_millis(250)));
        assert_eq!(early.await.unwrap() - start, Duration::from_millis(250));
        assert_eq!(late.await.unwrap() - start, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_forgotten_deadline_wakes_nobody_and_frees_its_slot() {
        let start = Instant::now();
        let waker = futures_util::task::noop_waker();
        let reg = Registration::new(start + Duration::from_secs(1), &waker).unwrap();
        let slot = reg.slot;
        drop(reg);
        let again = Registration::new(start + Duration::from_secs(2), &waker).unwrap();
        assert_eq!(again.slot, slot, "slot reused");
        drop(again);
        // Later deadlines still work after the list emptied.
        let t = until(start + Duration::from_secs(3)).await;
        assert_eq!(t - start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_expires_after_its_duration_not_before() {
        let start = Instant::now();
        let mut timer = Timer::after(Duration::from_millis(40));
        let fired = poll_fn(|cx| {
            if timer.expired(cx) {
                Poll::Ready(Instant::now())
            } else {
                Poll::Pending
            }
        })
        .await;
        assert_eq!(fired - start, Duration::from_millis(40));
    }

    #[test]
    fn a_new_runtime_on_the_same_thread_gets_a_new_sweeper() {
        for _ in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let start = Instant::now();
                let t = until(start + Duration::from_millis(10)).await;
                assert_eq!(t - start, Duration::from_millis(10));
            });
        }
    }
}
