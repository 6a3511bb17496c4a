//! Path normalization.

use mesh_core::authz::{normalize, Normalization};

const MODES: [Normalization; 4] = [
    Normalization::None,
    Normalization::Base,
    Normalization::MergeSlashes,
    Normalization::DecodeAndMergeSlashes,
];

/// See the crate docs.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for mode in MODES {
        let Ok(once) = normalize(raw, mode) else {
            continue;
        };
        if mode == Normalization::None {
            continue;
        }
        let p = once.as_ref();
        assert!(p.starts_with('/'), "{mode:?}: {raw:?} -> {p:?}");
        assert!(!p.contains('\\'), "{mode:?}: {raw:?} -> {p:?}");
        assert!(
            !p.contains('?') && !p.contains('#'),
            "{mode:?}: {raw:?} -> {p:?} keeps a query or fragment"
        );
        for seg in p.split('/') {
            assert!(
                seg != "." && seg != "..",
                "{mode:?}: {raw:?} -> {p:?} keeps a dot segment"
            );
        }
        if mode != Normalization::Base {
            assert!(!p.contains("//"), "{mode:?}: {raw:?} -> {p:?}");
        }
        let twice = normalize(p, mode);
        assert_eq!(
            twice.as_deref(),
            Ok(p),
            "{mode:?}: normalizing {raw:?} again changes {p:?}"
        );
    }
}
