//! [`Handle`]: an `Arc` reached through a handle one thread allocated.
//!
//! A request holds the model and the route table it started with until
//! it ends, and each stage that keeps it clones it. Cloning the shared
//! `Arc` writes its count, one cache line that the requests of every core
//! write twice each (at the start and at the end): on two cores, a line
//! that moves between them on nearly every request. The routing stage
//! instead hands out handles it made per thread and per model, so a
//! request writes a count only its own thread uses.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A shared `Arc<T>` behind a handle of its own (see the module docs).
/// Dereferences to the `Arc<T>`, so `&handle` passes where `&Arc<T>` or
/// `&T` is expected.
// The second allocation is the point: it holds the count this thread writes.
#[allow(clippy::redundant_allocation)]
pub struct Handle<T>(Arc<Arc<T>>);

impl<T> Handle<T> {
    /// A new handle on `inner`.
    pub fn new(inner: Arc<T>) -> Self {
        Handle(Arc::new(inner))
    }

    /// True when `a` and `b` are the same handle (not merely handles on
    /// the same value).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// The shared `Arc` this is a handle on.
    pub fn arc(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle(self.0.clone())
    }
}

impl<T> Deref for Handle<T> {
    type Target = Arc<T>;
    fn deref(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T> From<Arc<T>> for Handle<T> {
    fn from(inner: Arc<T>) -> Self {
        Handle::new(inner)
    }
}

impl<T: fmt::Debug> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_handle_not_the_inner_count() {
        let inner = Arc::new(5);
        let h = Handle::new(inner.clone());
        let h2 = h.clone();
        assert_eq!(Arc::strong_count(&inner), 2, "one count for all clones");
        assert!(Arc::ptr_eq(h.arc(), h2.arc()));
        assert!(Handle::ptr_eq(&h, &h2));
        assert!(!Handle::ptr_eq(&h, &Handle::new(inner.clone())));
        assert_eq!(**h2, 5);
        drop((h, h2));
        assert_eq!(Arc::strong_count(&inner), 1);
    }
}
