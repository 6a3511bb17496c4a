//! The Kubernetes objects of a scale run (issue 17, item 8): Services in a
//! few namespaces, each with its EndpointSlices (as the endpoint-slice
//! controller writes them, label `kubernetes.io/service-name`), the Pods
//! behind them with the status a kubelet reports, and for every
//! `istio_every`-th Service a DestinationRule with subsets and a
//! VirtualService splitting over them.
//!
//! The same objects serve both sources: as JSON for the Kubernetes API
//! (the bench creates them with kube-rs), and as YAML files for
//! `meshd --config DIR` (the file loader reads Pod status and
//! EndpointSlices too), so a run can compare the two on equal input.
//! Also the clients' side of the naming: the listener a proxyless gRPC
//! client asks for to reach Service `i`.
//!
//! Not here: talking to an API server (the bench does; this crate never
//! depends on the test harness).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::PORT;
use crate::LoadError;

/// The shape of the cluster's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Services.
    pub services: usize,
    /// EndpointSlices per Service.
    pub slices_per_service: usize,
    /// Endpoints per EndpointSlice.
    pub endpoints_per_slice: usize,
    /// Pods. Endpoint `k` (counted over all Services and slices) names Pod
    /// `k` in its `targetRef` while `k < pods`; endpoints past that have no
    /// Pod, and Pods past the endpoints run outside any Service.
    pub pods: usize,
    /// Application namespaces (`ns-0` ...); Service `i` lives in
    /// `ns-{i % namespaces}`.
    pub namespaces: usize,
    /// Every `istio_every`-th Service (0, n, 2n, ...) gets a
    /// DestinationRule and a VirtualService; 0 for none.
    pub istio_every: usize,
}

/// meshd's own namespace: its CA Secret and leader Lease live there.
pub const SYSTEM_NAMESPACE: &str = "istio-system";

/// Where an endpoint is: its Service, slice and place in the slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointAt {
    /// The Service.
    pub service: usize,
    /// The slice of that Service.
    pub slice: usize,
    /// The endpoint in that slice.
    pub endpoint: usize,
}

impl Layout {
    /// Endpoints per Service.
    pub fn endpoints_per_service(&self) -> usize {
        self.slices_per_service * self.endpoints_per_slice
    }

    /// Endpoints over all slices.
    pub fn endpoints(&self) -> usize {
        self.services * self.endpoints_per_service()
    }

    /// EndpointSlices over all Services.
    pub fn slices(&self) -> usize {
        self.services * self.slices_per_service
    }

    /// Services with a DestinationRule and a VirtualService.
    pub fn istio_services(&self) -> usize {
        match self.istio_every {
            0 => 0,
            n => self.services.div_ceil(n),
        }
    }

    /// Every application namespace.
    pub fn namespace_names(&self) -> Vec<String> {
        (0..self.namespaces.max(1))
            .map(|m| format!("ns-{m}"))
            .collect()
    }

    /// Service `i`'s namespace.
    pub fn namespace(&self, i: usize) -> String {
        format!("ns-{}", i % self.namespaces.max(1))
    }

    /// Service `i`'s name.
    pub fn service(&self, i: usize) -> String {
        format!("svc-{i}")
    }

    /// Service `i`'s host.
    pub fn host(&self, i: usize) -> String {
        format!(
            "{}.{}.svc.cluster.local",
            self.service(i),
            self.namespace(i)
        )
    }

    /// The listener a gRPC client asks for to reach Service `i`
    /// (`xds:///svc-i.ns-m.svc.cluster.local:7070`).
    pub fn listener(&self, i: usize) -> String {
        format!("{}:{PORT}", self.host(i))
    }

    /// Slice `s` of Service `i`: its name (as the controller names them,
    /// the Service's name and a suffix).
    pub fn slice_name(&self, i: usize, s: usize) -> String {
        format!("{}-s{s}", self.service(i))
    }

    /// The global index of an endpoint.
    pub fn endpoint_index(&self, at: EndpointAt) -> usize {
        at.service * self.endpoints_per_service()
            + at.slice * self.endpoints_per_slice
            + at.endpoint
    }

    /// Endpoint `k`'s address, which is also Pod `k`'s IP:
    /// 10.128.0.0/9, clear of the API server's Service range
    /// (10.96.0.0/16) and of the clients' 10.200.0.0/16 up to 4.7 million
    /// endpoints.
    pub fn ip(&self, k: usize) -> String {
        format!(
            "10.{}.{}.{}",
            128 + ((k >> 16) & 0x7f),
            (k >> 8) & 0xff,
            k & 0xff
        )
    }

    /// Pod `k`: its namespace and name. Pods behind endpoints are named
    /// after their Service (`svc-3-7`: the 8th endpoint of Service 3);
    /// the others `extra-k`.
    pub fn pod(&self, k: usize) -> (String, String) {
        let per = self.endpoints_per_service().max(1);
        if k < self.endpoints() {
            let i = k / per;
            (
                self.namespace(i),
                format!("{}-{}", self.service(i), k % per),
            )
        } else {
            (
                format!("ns-{}", k % self.namespaces.max(1)),
                format!("extra-{k}"),
            )
        }
    }

    /// Pod `k`'s labels: `app` (its Service's name, or `extra`) and
    /// `version` (v1 and v2 alternating, what the subsets select).
    fn pod_labels(&self, k: usize) -> Value {
        let per = self.endpoints_per_service().max(1);
        let app = if k < self.endpoints() {
            self.service(k / per)
        } else {
            "extra".to_string()
        };
        let version = if k.is_multiple_of(2) { "v1" } else { "v2" };
        json!({"app": app, "version": version})
    }

    /// Service `i`: selector `app: svc-i`, one gRPC port.
    pub fn service_object(&self, i: usize) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.service(i), "namespace": self.namespace(i)},
            "spec": {
                "selector": {"app": self.service(i)},
                "ports": [{"name": "grpc", "port": PORT, "targetPort": PORT, "appProtocol": "grpc"}],
            },
        })
    }

    /// Slice `s` of Service `i`; the endpoint `unready` (if any) has
    /// conditions ready and serving false.
    pub fn slice_object(&self, i: usize, s: usize, unready: Option<usize>) -> Value {
        let ns = self.namespace(i);
        let endpoints: Vec<Value> = (0..self.endpoints_per_slice)
            .map(|e| {
                let k = self.endpoint_index(EndpointAt {
                    service: i,
                    slice: s,
                    endpoint: e,
                });
                let ready = unready != Some(e);
                let mut v = json!({
                    "addresses": [self.ip(k)],
                    "conditions": {"ready": ready, "serving": ready, "terminating": false},
                });
                if k < self.pods {
                    let (pod_ns, pod) = self.pod(k);
                    v["targetRef"] = json!({"kind": "Pod", "namespace": pod_ns, "name": pod});
                }
                v
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": self.slice_name(i, s),
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": self.service(i)},
            },
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": PORT, "protocol": "TCP", "appProtocol": "grpc"}],
            "endpoints": endpoints,
        })
    }

    /// Pod `k` as created (metadata and spec; the API server drops a
    /// status sent with the create).
    pub fn pod_object(&self, k: usize) -> Value {
        let (ns, name) = self.pod(k);
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": self.pod_labels(k)},
            "spec": {
                "containers": [{"name": "app", "image": "mesh-load/none"}],
                "serviceAccountName": self.pod_labels(k)["app"],
            },
        })
    }

    /// Pod `k`'s status as a kubelet reports it (`{"status": ...}`, for
    /// the status subresource): Running, its IP, Ready.
    pub fn pod_status(&self, k: usize) -> Value {
        let ip = self.ip(k);
        json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
        }})
    }

    /// Whether Service `i` gets a DestinationRule and a VirtualService.
    pub fn has_istio(&self, i: usize) -> bool {
        self.istio_every > 0 && i.is_multiple_of(self.istio_every)
    }

    /// Service `i`'s DestinationRule (subsets v1, v2) and VirtualService
    /// (90/10 over them, a 5 s timeout), as YAML; empty unless
    /// [`Layout::has_istio`].
    pub fn istio_yaml(&self, i: usize) -> String {
        if !self.has_istio(i) {
            return String::new();
        }
        crate::config::split_yaml(&self.service(i), &self.namespace(i), &self.host(i), 5)
    }

    /// The Pods behind Service `i`'s endpoints (those that exist).
    fn service_pods(&self, i: usize) -> std::ops::Range<usize> {
        let per = self.endpoints_per_service();
        let start = (i * per).min(self.pods);
        start..((i + 1) * per).min(self.pods)
    }

    /// Service `i`'s file for `meshd --config DIR`: the Service, its
    /// slices (endpoint `unready` of slice 0 not ready), its Pods with
    /// status, and its Istio objects.
    pub fn service_file(&self, i: usize, unready: Option<usize>) -> String {
        let mut docs: Vec<Value> = vec![self.service_object(i)];
        docs.extend(
            (0..self.slices_per_service)
                .map(|s| self.slice_object(i, s, if s == 0 { unready } else { None })),
        );
        docs.extend(self.service_pods(i).map(|k| self.pod_with_status(k)));
        let mut text = to_yaml(&docs);
        let istio = self.istio_yaml(i);
        if !istio.is_empty() {
            let _ = write!(text, "---\n{istio}");
        }
        text
    }

    fn pod_with_status(&self, k: usize) -> Value {
        let mut pod = self.pod_object(k);
        pod["status"] = self.pod_status(k)["status"].clone();
        pod
    }

    /// Writes every object as files into `dir` (created if missing): one
    /// `svc-i.yaml` per Service (see [`Layout::service_file`]) and
    /// `extra-pods.yaml` with the Pods outside any Service.
    pub fn write_files(&self, dir: &Path) -> Result<(), LoadError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| LoadError::io(format!("creating {}", dir.display()), e))?;
        for i in 0..self.services {
            self.write_service_file(dir, i, None)?;
        }
        let extra: Vec<Value> = (self.endpoints()..self.pods)
            .map(|k| self.pod_with_status(k))
            .collect();
        if !extra.is_empty() {
            write(&dir.join("extra-pods.yaml"), &to_yaml(&extra))?;
        }
        Ok(())
    }

    /// Rewrites Service `i`'s file (write, then rename) with endpoint
    /// `unready` of slice 0 not ready: the file source's EndpointSlice
    /// change.
    pub fn write_service_file(
        &self,
        dir: &Path,
        i: usize,
        unready: Option<usize>,
    ) -> Result<(), LoadError> {
        write(&self.file(dir, i), &self.service_file(i, unready))
    }

    fn file(&self, dir: &Path, i: usize) -> PathBuf {
        dir.join(format!("{}.yaml", self.service(i)))
    }
}

/// JSON documents as one multi-document YAML text (JSON is YAML).
fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_json::to_string_pretty(d).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

fn write(path: &Path, text: &str) -> Result<(), LoadError> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)
        .map_err(|e| LoadError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| LoadError::io(format!("renaming to {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            services: 10,
            slices_per_service: 2,
            endpoints_per_slice: 2,
            pods: 30,
            namespaces: 3,
            istio_every: 4,
        }
    }

    #[test]
    fn endpoints_name_their_pods_at_the_pods_ips() {
        let l = layout();
        assert_eq!(l.endpoints(), 40);
        let slice = l.slice_object(7, 1, Some(0));
        assert_eq!(slice["metadata"]["namespace"], "ns-1");
        assert_eq!(
            slice["metadata"]["labels"]["kubernetes.io/service-name"],
            "svc-7"
        );
        // Endpoint 30 (service 7, slice 1, endpoint 0) is past the pods.
        let eps = slice["endpoints"].as_array().cloned().unwrap_or_default();
        assert_eq!(eps[0]["conditions"]["ready"], false);
        assert!(eps[0].get("targetRef").is_none());
        let slice = l.slice_object(3, 1, None);
        let eps = slice["endpoints"].as_array().cloned().unwrap_or_default();
        let k = l.endpoint_index(EndpointAt {
            service: 3,
            slice: 1,
            endpoint: 1,
        });
        assert_eq!(k, 15);
        assert_eq!(eps[1]["targetRef"]["name"], "svc-3-3");
        assert_eq!(eps[1]["addresses"][0], l.ip(k));
        assert_eq!(l.pod_status(k)["status"]["podIP"], l.ip(k));
        assert_eq!(l.pod(k), ("ns-0".to_string(), "svc-3-3".to_string()));
        assert_eq!(l.istio_services(), 3);
        assert_eq!(l.listener(4), "svc-4.ns-1.svc.cluster.local:7070");
    }

    #[test]
    fn addresses_are_distinct_and_outside_the_service_range() {
        let l = layout();
        assert_eq!(l.ip(0), "10.128.0.0");
        assert_eq!(l.ip(70_000), "10.129.17.112");
        let mut seen = std::collections::HashSet::new();
        assert!((0..100_000).all(|k| seen.insert(l.ip(k))));
    }
}
