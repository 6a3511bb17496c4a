//! Shared names for [`Upstream`]: the cluster, host and subset of a
//! destination as `Arc<str>`s, interned per thread so choosing a
//! destination allocates nothing once its names have been seen.
//!
//! The cache is keyed by the cluster name (which encodes host, port and
//! subset) and is cleared when it grows past a bound, so a long stream of
//! config changes cannot grow it without limit.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use mesh_core::model::write_cluster_name;

use crate::handle::Handle;
use crate::upstream::Upstream;

/// Entries kept per thread before the cache starts over.
const MAX_ENTRIES: usize = 4096;

/// The names of one destination, built by this thread.
#[derive(Clone)]
pub(crate) struct Names {
    cluster: Arc<str>,
    host: Arc<str>,
    subset: Option<Arc<str>>,
}

impl Names {
    /// A first-attempt [`Upstream`] to these names on `model`.
    pub(crate) fn upstream(self, port: u16, model: &Handle<mesh_core::model::Model>) -> Upstream {
        Upstream {
            cluster: self.cluster,
            host: self.host,
            port,
            subset: self.subset,
            model: model.clone(),
            attempt: 1,
            tried: Arc::default(),
            routed: None,
        }
    }
}

#[derive(Default)]
struct Cache {
    key: String,
    names: HashMap<Box<str>, Names, foldhash::fast::RandomState>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::default();
}

/// A first-attempt [`Upstream`] to `host:port` (subset `subset`) on `model`.
pub(crate) fn upstream(
    host: &str,
    port: u16,
    subset: Option<&str>,
    model: &Handle<mesh_core::model::Model>,
) -> Upstream {
    intern(host, port, subset).upstream(port, model)
}

/// This thread's names for `host:port` (subset `subset`).
pub(crate) fn intern(host: &str, port: u16, subset: Option<&str>) -> Names {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let c = &mut *c;
        c.key.clear();
        write_cluster_name(&mut c.key, host, port, subset);
        if let Some(n) = c.names.get(c.key.as_str()) {
            return n.clone();
        }
        if c.names.len() >= MAX_ENTRIES {
            c.names.clear();
        }
        let n = Names {
            cluster: Arc::from(c.key.as_str()),
            host: Arc::from(host),
            subset: subset.map(Arc::from),
        };
        c.names.insert(c.key.as_str().into(), n.clone());
        n
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_model_cluster_names_and_are_shared() {
        let model = Handle::new(crate::client::tests::model(""));
        let a = upstream(
            "reviews.default.svc.cluster.local",
            9080,
            Some("v2"),
            &model,
        );
        let b = upstream(
            "reviews.default.svc.cluster.local",
            9080,
            Some("v2"),
            &model,
        );
        assert_eq!(
            &*a.cluster,
            mesh_core::model::cluster_name("reviews.default.svc.cluster.local", 9080, Some("v2"))
        );
        assert_eq!(a.subset.as_deref(), Some("v2"));
        assert!(Arc::ptr_eq(&a.cluster, &b.cluster));
        let c = upstream("reviews.default.svc.cluster.local", 9080, None, &model);
        assert_eq!(
            &*c.cluster,
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(c.subset, None);
        assert_eq!(a.attempt, 1);
    }
}
