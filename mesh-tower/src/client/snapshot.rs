//! The model as one thread sees it, and what that thread has already
//! worked out against it.
//!
//! Each thread keeps, per model channel, its own receiver and the latest
//! model: whether a newer model was published is one atomic load on a line
//! nobody writes between publications, where `borrow` takes the channel's
//! lock, a write every thread contends on for every request. Beside it the
//! thread remembers the authorities it resolved and the destination names
//! it built *for that model*: a request for a known authority then costs a
//! short scan of this thread's list instead of the search-path expansion
//! and map lookups of [`super::target::resolve`], and touches nothing
//! another thread writes. A new model starts the lists over, so nothing
//! stale outlives it.

use std::cell::RefCell;

use mesh_core::model::Model;
use mesh_core::route::{Destination, RouteTable};

use super::names::{self, Names};
use super::target::{self, Authority};
use crate::handle::Handle;
use crate::thread_cache::ThreadCache;
use crate::ModelRx;

/// Channels remembered per thread (a process rarely has more than one).
const CHANNELS_PER_THREAD: usize = 8;
/// What a request's authority resolved to.
#[derive(Clone)]
pub(crate) struct Service {
    /// The service's routes.
    pub routes: Handle<RouteTable>,
    /// The service's port.
    pub port: u16,
}

/// Resolutions against one model, on one thread (a client talks to few
/// authorities and destinations: short lists, the oldest going first).
pub(crate) struct RouteCache {
    /// (authority as sent, the scheme's default port) -> service, `None`
    /// for an authority not in the registry.
    services: ThreadCache<(Box<str>, u16), Option<Service>>,
    /// (destination address in the model, port) -> names.
    names: ThreadCache<(usize, u16), Names>,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache {
            services: ThreadCache::new(),
            names: ThreadCache::new(),
        }
    }
}

impl RouteCache {
    /// The service `auth` names in `model`.
    pub fn service(
        &mut self,
        model: &Model,
        auth: &Authority<'_>,
        default_port: u16,
    ) -> Option<Service> {
        let hit = self.services.find(|(raw, port), svc| {
            (*port == default_port && **raw == *auth.raw).then(|| svc.clone())
        });
        if let Some(svc) = hit {
            return svc;
        }
        let svc = target::resolve(model, auth.host, auth.port).map(|s| Service {
            routes: Handle::new(s.routes.clone()),
            port: s.port,
        });
        self.services
            .insert((auth.raw.into(), default_port), svc.clone(), |_| true);
        svc
    }

    /// The names of `dest` (of the model this cache belongs to) at `port`.
    pub fn names(&mut self, dest: &Destination, port: u16) -> Names {
        // The model outlives this cache and never changes, so a
        // destination's address names it for as long as the entry lives.
        let key = (std::ptr::from_ref(dest) as usize, port);
        if let Some(n) = self.names.find(|k, n| (*k == key).then(|| n.clone())) {
            return n;
        }
        let n = names::intern(&dest.host, port, dest.subset.as_deref());
        self.names.insert(key, n.clone(), |_| true);
        n
    }
}

struct Snapshot {
    rx: ModelRx,
    /// This thread's handle on the latest model.
    model: Handle<Model>,
    cache: RouteCache,
}

thread_local! {
    static SNAPSHOTS: RefCell<Vec<Snapshot>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the latest model published on `rx` and this thread's
/// resolutions against it.
pub(crate) fn with_latest<R>(
    rx: &ModelRx,
    f: impl FnOnce(&Handle<Model>, &mut RouteCache) -> R,
) -> R {
    SNAPSHOTS.with(|cell| {
        let Ok(mut seen) = cell.try_borrow_mut() else {
            // Re-entered (a stack inside a stack): no cache.
            let model = Handle::new(rx.borrow().clone());
            return f(&model, &mut RouteCache::default());
        };
        let i = match seen.iter().position(|s| s.rx.same_channel(rx)) {
            Some(i) => i,
            None => {
                if seen.len() >= CHANNELS_PER_THREAD {
                    seen.remove(0);
                }
                let mut own = rx.clone();
                let model = Handle::new(own.borrow_and_update().clone());
                seen.push(Snapshot {
                    rx: own,
                    model,
                    cache: RouteCache::default(),
                });
                seen.len() - 1
            }
        };
        let Some(s) = seen.get_mut(i) else {
            let model = Handle::new(rx.borrow().clone());
            return f(&model, &mut RouteCache::default());
        };
        if s.rx.has_changed().unwrap_or(true) {
            s.model = Handle::new(s.rx.borrow_and_update().clone());
            s.cache = RouteCache::default();
        }
        f(&s.model, &mut s.cache)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn latest(rx: &ModelRx) -> Arc<Model> {
        with_latest(rx, |m, _| m.arc().clone())
    }

    #[test]
    fn follows_each_publication_on_every_thread() {
        let first = crate::client::tests::model("");
        let (tx, rx) = tokio::sync::watch::channel(first.clone());
        assert!(Arc::ptr_eq(&latest(&rx), &first));
        assert!(Arc::ptr_eq(&latest(&rx), &first));
        let second = crate::client::tests::model("");
        tx.send_replace(second.clone());
        // The very next request sees the new model, here and elsewhere.
        assert!(Arc::ptr_eq(&latest(&rx), &second));
        let rx2 = rx.clone();
        let seen = std::thread::spawn(move || latest(&rx2)).join().unwrap();
        assert!(Arc::ptr_eq(&seen, &second));
        // Another channel is told apart from the first.
        let third = crate::client::tests::model("");
        let (_tx3, rx3) = tokio::sync::watch::channel(third.clone());
        assert!(Arc::ptr_eq(&latest(&rx3), &third));
        assert!(Arc::ptr_eq(&latest(&rx), &second));
    }

    #[test]
    fn resolutions_are_dropped_with_their_model() {
        let auth = target::split_authority("reviews:9080", 80);
        let first = crate::client::tests::model("");
        let (tx, rx) = tokio::sync::watch::channel(first);
        let routes =
            |rx: &ModelRx| with_latest(rx, |m, c| c.service(m, &auth, 80).map(|s| s.routes));
        let a = routes(&rx).expect("reviews is in the registry");
        // The same handle: resolved once, then found in the list.
        assert!(Handle::ptr_eq(&a, &routes(&rx).unwrap()), "cached");
        tx.send_replace(crate::client::tests::model(""));
        let b = routes(&rx).unwrap();
        assert!(!Arc::ptr_eq(a.arc(), b.arc()), "a new model resolves again");
        assert!(with_latest(&rx, |m, c| c
            .service(m, &target::split_authority("nowhere:80", 80), 80)
            .is_none()));
    }
}
