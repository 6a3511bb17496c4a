//! The Istio YAML a load run serves, written so meshd (`--config DIR`) and
//! istiod (`discovery --registries= --configDir=DIR`) read the same files:
//! per service one file with a `ServiceEntry` (STATIC, a few inline
//! endpoints, host `svc-N.load.svc.cluster.local`, gRPC port 7070), a
//! `VirtualService` with a timeout, and for every fourth service a
//! `DestinationRule` with two subsets the VirtualService splits over.
//! istiod's file source reads Istio kinds only, so no Kubernetes
//! `Service`/pods here.
//!
//! Also the clients' side of the same naming: which services client `c`
//! targets, and the listener names a gRPC client asks for
//! (`host:port`, as for an `xds:///host:port` target).
//!
//! Not here: writing or reading anything but this generated layout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::LoadError;

/// The namespace of every service and client.
pub const NAMESPACE: &str = "load";

/// The gRPC port of every service.
pub const PORT: u16 = 7070;

/// Endpoints per service.
pub const ENDPOINTS: usize = 3;

/// The route timeout before any edit, in seconds.
pub const BASE_TIMEOUT_S: u32 = 5;

/// Service `i`'s name.
pub fn service(i: usize) -> String {
    format!("svc-{i}")
}

/// Service `i`'s host.
pub fn host(i: usize) -> String {
    format!("svc-{i}.{NAMESPACE}.svc.cluster.local")
}

/// The listener a gRPC client asks for to reach service `i`.
pub fn listener(i: usize) -> String {
    format!("{}:{PORT}", host(i))
}

/// The services client `c` targets: `k` consecutive ones (wrapping) from
/// `c * k`, so the fleet covers the services evenly.
pub fn targets(c: usize, k: usize, services: usize) -> Vec<usize> {
    let k = k.min(services);
    let start = (c * k) % services.max(1);
    (0..k).map(|j| (start + j) % services).collect()
}

/// Whether service `i` gets a DestinationRule with subsets.
fn has_subsets(i: usize) -> bool {
    i.is_multiple_of(4)
}

/// A DestinationRule with subsets v1 and v2 (by `version` label) for
/// `host`, and a VirtualService splitting it 90/10 over them with route
/// timeout `timeout_s`, both named `name` in `namespace`.
pub fn split_yaml(name: &str, namespace: &str, host: &str, timeout_s: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {host}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{host}]
  http:
  - route:
    - {{destination: {{host: {host}, subset: v1}}, weight: 90}}
    - {{destination: {{host: {host}, subset: v2}}, weight: 10}}
    timeout: {timeout_s}s
"
    )
}

/// The YAML of service `i`, with route timeout `timeout_s`.
pub fn service_yaml(i: usize, timeout_s: u32) -> String {
    let name = service(i);
    let host = host(i);
    let mut y = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: grpc, protocol: GRPC}}]
  endpoints:
"
    );
    for e in 0..ENDPOINTS {
        let version = if e % 2 == 0 { "v1" } else { "v2" };
        let _ = writeln!(
            y,
            "  - {{address: 10.{}.{}.{}, labels: {{app: {name}, version: {version}}}}}",
            (i >> 8) & 0xff,
            i & 0xff,
            e + 1
        );
    }
    if has_subsets(i) {
        y.push_str("---\n");
        y.push_str(&split_yaml(&name, NAMESPACE, &host, timeout_s));
    } else {
        let _ = write!(
            y,
            "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  hosts: [{host}]
  http:
  - route: [{{destination: {{host: {host}}}}}]
    timeout: {timeout_s}s
"
        );
    }
    y
}

fn file(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("{}.yaml", service(i)))
}

fn write(path: &Path, text: &str) -> Result<(), LoadError> {
    // Write then rename, so a watcher never reads half a file.
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)
        .map_err(|e| LoadError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| LoadError::io(format!("renaming to {}", path.display()), e))
}

/// Writes `services` services into `dir` (created if missing; earlier
/// `svc-*.yaml` files are replaced, so the same call gives the same
/// directory).
pub fn generate(dir: &Path, services: usize) -> Result<(), LoadError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LoadError::io(format!("creating {}", dir.display()), e))?;
    let old = std::fs::read_dir(dir)
        .map_err(|e| LoadError::io(format!("listing {}", dir.display()), e))?;
    for entry in old.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("svc-") && name.ends_with(".yaml") {
            std::fs::remove_file(entry.path())
                .map_err(|e| LoadError::io(format!("removing {}", entry.path().display()), e))?;
        }
    }
    for i in 0..services {
        write(&file(dir, i), &service_yaml(i, BASE_TIMEOUT_S))?;
    }
    Ok(())
}

/// The YAML that makes every client a server too: per app a
/// `ServiceEntry` whose `workloadSelector` selects the app's pods, on the
/// gRPC port. Each pod then serves that port at its own IP (server
/// listeners named by its `INSTANCE_IPS`), as pods behind a Kubernetes
/// Service do.
pub fn apps_yaml(apps: usize) -> String {
    let mut y = String::new();
    for a in 0..apps {
        let _ = write!(
            y,
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: client-{a}, namespace: {NAMESPACE}}}
spec:
  hosts: [client-{a}.{NAMESPACE}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: client-{a}}}}}
"
        );
    }
    y
}

/// Writes [`apps_yaml`] into `dir` when `apps` is given, removes it
/// otherwise (so a directory reused across runs holds what this one
/// asks for).
pub fn serve_apps(dir: &Path, apps: Option<usize>) -> Result<(), LoadError> {
    let path = dir.join("apps.yaml");
    match apps {
        Some(n) => write(&path, &apps_yaml(n)),
        None if path.exists() => std::fs::remove_file(&path)
            .map_err(|e| LoadError::io(format!("removing {}", path.display()), e)),
        None => Ok(()),
    }
}

/// The edit: service `i`'s VirtualService gets route timeout `timeout_s`.
pub fn edit(dir: &Path, i: usize, timeout_s: u32) -> Result<(), LoadError> {
    write(&file(dir, i), &service_yaml(i, timeout_s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_wrap_and_cover() {
        assert_eq!(targets(0, 3, 10), vec![0, 1, 2]);
        assert_eq!(targets(3, 3, 10), vec![9, 0, 1]);
        assert_eq!(targets(1, 20, 5), vec![0, 1, 2, 3, 4]);
    }
}
