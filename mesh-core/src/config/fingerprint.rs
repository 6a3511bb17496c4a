//! Noticing that config on disk changed: a hash of every path, size and
//! content under the watched paths, which the local watchers poll.
//!
//! One implementation for both watchers: meshd's config directory
//! (`mesh-control`) and the SDK's local YAML source (`mesh-tower`). It lives
//! in mesh-core, beside [`super::load::load_paths`] whose reads it shadows,
//! because it is plain `std::fs` (no tokio, no sockets) and both crates
//! depend on mesh-core (mesh-xds would do, but this has nothing to do with
//! xDS).
//!
//! Polling a hash rather than inotify behaves the same on every filesystem,
//! including the atomic symlink swaps Kubernetes uses for mounted
//! ConfigMaps, network filesystems, and editors that write a temp file and
//! rename it. It covers more than the loader reads (hidden entries, other
//! extensions), so a change can only cause a spurious reload, never a
//! missed one.
//!
//! Not here: how often to poll or how to debounce (the watchers' business).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// A hash of every path, size and content under `paths` (files, or
/// directories walked recursively in name order, following symlinks); it
/// changes when any file is added, removed or edited. A path that cannot be
/// read hashes as its error kind, so it changes when the path appears.
pub fn fingerprint<P: AsRef<Path>>(paths: &[P]) -> u64 {
    let mut h = DefaultHasher::new();
    for p in paths {
        hash_tree(p.as_ref(), &mut h);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sees_edits_adds_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, "x: 1\n").unwrap();
        let f1 = fingerprint(&[dir.path()]);
        assert_eq!(f1, fingerprint(&[dir.path()]));
        std::fs::write(&a, "x: 2\n").unwrap();
        let f2 = fingerprint(&[dir.path()]);
        assert_ne!(f1, f2);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.yaml"), "").unwrap();
        let f3 = fingerprint(&[dir.path()]);
        assert_ne!(f2, f3);
        std::fs::remove_file(dir.path().join("sub/b.yaml")).unwrap();
        std::fs::remove_dir(dir.path().join("sub")).unwrap();
        assert_eq!(f2, fingerprint(&[dir.path()]));
    }

    #[test]
    fn files_named_directly_and_missing_paths_count() {
        let dir = tempfile::tempdir().unwrap();
        let mesh = dir.path().join("mesh.yaml");
        let conf = dir.path().join("conf");
        std::fs::create_dir(&conf).unwrap();
        let before = fingerprint(&[conf.as_path(), mesh.as_path()]);
        std::fs::write(&mesh, "defaultConfig: {}\n").unwrap();
        let after = fingerprint(&[conf.clone(), mesh.clone()]);
        assert_ne!(before, after);
        std::fs::write(&mesh, "defaultConfig: {} \n").unwrap();
        assert_ne!(after, fingerprint(&[conf, mesh]));
    }

    #[cfg(unix)]
    #[test]
    fn sees_a_configmap_style_symlink_swap() {
        // Kubernetes mounts `a.yaml -> ..data/a.yaml`, `..data -> ..v1`, and
        // updates by pointing `..data` at a new directory.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (v, text) in [("..v1", "x: 1\n"), ("..v2", "x: 2\n")] {
            std::fs::create_dir(d.join(v)).unwrap();
            std::fs::write(d.join(v).join("a.yaml"), text).unwrap();
        }
        std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/a.yaml", d.join("a.yaml")).unwrap();
        let before = fingerprint(&[d]);
        std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        assert_ne!(before, fingerprint(&[d]));
    }
}
