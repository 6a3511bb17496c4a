//! Objects as the missing kubelet and controllers would write them: Pods
//! with their status, Nodes, EndpointSlices, Namespaces; and any YAML
//! (core, apps, discovery.k8s.io, CRDs and their kinds) by server-side
//! apply. Every call is the admin's, and panics naming the object when the
//! API server refuses it.

use std::net::IpAddr;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use ::kube::core::discovery::{ApiCapabilities, ApiResource, Scope};
use ::kube::core::GroupVersionKind;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::cluster::KubeCluster;

/// The field manager of [`KubeCluster::apply_yaml`]'s server-side applies.
pub const FIELD_MANAGER: &str = "mesh-test-support";

/// How long a new CRD may take to be Established and served.
const CRD_WITHIN: Duration = Duration::from_secs(30);

/// A Pod as [`KubeCluster::create_pod`] writes it: spec, then status as a
/// kubelet would report it (phase Running, the IP, `Ready`).
#[derive(Debug, Clone)]
pub struct TestPod<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// `status.podIP` and `status.podIPs[0]`.
    pub ip: IpAddr,
    /// `metadata.labels`.
    pub labels: Vec<(&'a str, &'a str)>,
    /// `spec.serviceAccountName` (the ServiceAccount need not exist).
    pub service_account: Option<&'a str>,
    /// `spec.nodeName` (the Node need not exist).
    pub node: Option<&'a str>,
    /// The `Ready` and `ContainersReady` conditions.
    pub ready: bool,
}

impl<'a> TestPod<'a> {
    /// A ready Pod `namespace/name` at `ip`, with no labels, service
    /// account or node.
    pub fn new(namespace: &'a str, name: &'a str, ip: IpAddr) -> Self {
        TestPod {
            namespace,
            name,
            ip,
            labels: Vec::new(),
            service_account: None,
            node: None,
            ready: true,
        }
    }

    /// Adds the label `key: value`.
    pub fn label(mut self, key: &'a str, value: &'a str) -> Self {
        self.labels.push((key, value));
        self
    }

    /// Sets `spec.serviceAccountName`.
    pub fn service_account(mut self, name: &'a str) -> Self {
        self.service_account = Some(name);
        self
    }

    /// Sets `spec.nodeName`.
    pub fn node(mut self, name: &'a str) -> Self {
        self.node = Some(name);
        self
    }

    /// Sets readiness.
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }
}

/// One endpoint of [`KubeCluster::create_endpoint_slice`].
#[derive(Debug, Clone)]
pub struct SliceEndpoint {
    /// Its one address. Not loopback, unspecified or link-local (the API
    /// server answers 422): use [`super::netns::pod_ip`].
    pub ip: IpAddr,
    /// `conditions.ready` and `conditions.serving`.
    pub ready: bool,
    /// `targetRef`: the Pod (in the slice's namespace) it belongs to.
    pub pod: Option<String>,
    /// `nodeName`.
    pub node: Option<String>,
    /// `zone`.
    pub zone: Option<String>,
}

impl SliceEndpoint {
    /// A ready endpoint at `ip`, with no Pod, node or zone.
    pub fn new(ip: IpAddr) -> Self {
        SliceEndpoint {
            ip,
            ready: true,
            pod: None,
            node: None,
            zone: None,
        }
    }

    /// Sets `targetRef` to the Pod `name`.
    pub fn pod(mut self, name: &str) -> Self {
        self.pod = Some(name.to_string());
        self
    }

    /// Sets `nodeName`.
    pub fn node(mut self, name: &str) -> Self {
        self.node = Some(name.to_string());
        self
    }

    /// Sets `zone`.
    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = Some(zone.to_string());
        self
    }

    /// Sets readiness.
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }
}

fn labels_json(labels: &[(&str, &str)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect::<Map<_, _>>(),
    )
}

/// A Pod's conditions as a kubelet reports them.
fn pod_conditions(ready: bool) -> Value {
    let status = if ready { "True" } else { "False" };
    json!([
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": status},
        {"type": "Ready", "status": status},
    ])
}

fn typed<K: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).unwrap()
}

impl KubeCluster {
    /// Creates the Namespace `name`. Use a fresh one per test: a deleted
    /// Namespace stays `Terminating` forever (no namespace controller).
    pub async fn create_namespace(&self, name: &str) -> Namespace {
        let ns: Namespace = typed(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
        }));
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating Namespace {name}: {e}"))
    }

    /// Creates `pod` (one container, image `mesh-test/none`, never pulled)
    /// and writes its status through the status subresource, as a kubelet
    /// would: phase Running, `podIP`/`podIPs`, and the readiness
    /// conditions. Returns the Pod as stored.
    pub async fn create_pod(&self, pod: &TestPod<'_>) -> Pod {
        let mut spec = json!({"containers": [{"name": "app", "image": "mesh-test/none"}]});
        if let Some(sa) = pod.service_account {
            spec["serviceAccountName"] = sa.into();
        }
        if let Some(node) = pod.node {
            spec["nodeName"] = node.into();
        }
        let object: Pod = typed(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": labels_json(&pod.labels)},
            "spec": spec,
        }));
        let api = Api::<Pod>::namespaced(self.client(), pod.namespace);
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("creating Pod {}/{}: {e}", pod.namespace, pod.name));
        let ip = pod.ip.to_string();
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": pod_conditions(pod.ready),
        }});
        api.patch_status(pod.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "writing the status of Pod {}/{}: {e}",
                    pod.namespace, pod.name
                )
            })
    }

    /// Sets the Pod's `Ready` and `ContainersReady` conditions, as a
    /// kubelet does when its readiness probe changes.
    pub async fn set_pod_ready(&self, namespace: &str, name: &str, ready: bool) -> Pod {
        let status = json!({"status": {"conditions": pod_conditions(ready)}});
        Api::<Pod>::namespaced(self.client(), namespace)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("setting Pod {namespace}/{name} ready={ready}: {e}"))
    }

    /// Deletes the Pod at once (`gracePeriodSeconds=0`: without a kubelet
    /// a Pod with a node would otherwise stay Terminating forever).
    pub async fn delete_pod(&self, namespace: &str, name: &str) {
        let now = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        Api::<Pod>::namespaced(self.client(), namespace)
            .delete(name, &now)
            .await
            .unwrap_or_else(|e| panic!("deleting Pod {namespace}/{name}: {e}"));
    }

    /// Creates the Node `name` with `labels` (for example
    /// `topology.kubernetes.io/region` and `topology.kubernetes.io/zone`).
    pub async fn create_node(&self, name: &str, labels: &[(&str, &str)]) -> Node {
        let node: Node = typed(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels_json(labels)},
        }));
        Api::<Node>::all(self.client())
            .create(&PostParams::default(), &node)
            .await
            .unwrap_or_else(|e| panic!("creating Node {name}: {e}"))
    }

    /// Deletes the Node `name`.
    pub async fn delete_node(&self, name: &str) {
        Api::<Node>::all(self.client())
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting Node {name}: {e}"));
    }

    /// Creates the EndpointSlice `namespace/name` of Service `service`
    /// (label `kubernetes.io/service-name`, as the EndpointSlice controller
    /// would), with `endpoints` and TCP `ports` (name, port). The address
    /// type is that of the first endpoint (IPv4 when there is none).
    pub async fn create_endpoint_slice(
        &self,
        namespace: &str,
        service: &str,
        name: &str,
        endpoints: &[SliceEndpoint],
        ports: &[(&str, u16)],
    ) -> EndpointSlice {
        let address_type = match endpoints.first() {
            Some(SliceEndpoint {
                ip: IpAddr::V6(_), ..
            }) => "IPv6",
            _ => "IPv4",
        };
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|e| {
                let mut v = json!({
                    "addresses": [e.ip.to_string()],
                    "conditions": {"ready": e.ready, "serving": e.ready, "terminating": false},
                });
                if let Some(pod) = &e.pod {
                    v["targetRef"] = json!({"kind": "Pod", "namespace": namespace, "name": pod});
                }
                if let Some(node) = &e.node {
                    v["nodeName"] = node.as_str().into();
                }
                if let Some(zone) = &e.zone {
                    v["zone"] = zone.as_str().into();
                }
                v
            })
            .collect();
        let ports: Vec<Value> = ports
            .iter()
            .map(|(name, port)| json!({"name": name, "port": port, "protocol": "TCP"}))
            .collect();
        let slice: EndpointSlice = typed(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": name, "namespace": namespace,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": address_type,
            "endpoints": endpoints,
            "ports": ports,
        }));
        Api::<EndpointSlice>::namespaced(self.client(), namespace)
            .create(&PostParams::default(), &slice)
            .await
            .unwrap_or_else(|e| panic!("creating EndpointSlice {namespace}/{name}: {e}"))
    }

    /// Deletes the EndpointSlice `namespace/name`.
    pub async fn delete_endpoint_slice(&self, namespace: &str, name: &str) {
        Api::<EndpointSlice>::namespaced(self.client(), namespace)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting EndpointSlice {namespace}/{name}: {e}"));
    }

    /// Server-side applies every document of `yaml` (multi-document; empty
    /// documents skipped), in order, as the admin with field manager
    /// [`FIELD_MANAGER`] and `force`. Any kind the API server serves works:
    /// core, apps, discovery.k8s.io, RBAC, and custom kinds once their CRD
    /// is applied (earlier in the same YAML or before). A namespaced object
    /// without `metadata.namespace` goes to `default`. After a
    /// CustomResourceDefinition, waits until it is Established and its kind
    /// is served (bounded, 30 s), so the next document may use it. Returns
    /// the objects as stored.
    pub async fn apply_yaml(&self, yaml: &str) -> Vec<DynamicObject> {
        let (docs, error) = mesh_core::config::yaml::parse_documents(yaml);
        if let Some(e) = error {
            panic!(
                "apply_yaml: YAML syntax error in document {}: {e}",
                e.document
            );
        }
        let mut applied = Vec::new();
        for doc in docs {
            let v = doc.value;
            if v.is_null() {
                continue;
            }
            let at = format!("document {} (line {})", doc.index, doc.line);
            let field = |f: &str| -> String {
                let got = match f {
                    "name" => v["metadata"]["name"].as_str(),
                    _ => v[f].as_str(),
                };
                got.unwrap_or_else(|| panic!("apply_yaml: {at} has no {f}"))
                    .to_string()
            };
            let (api_version, kind, name) = (field("apiVersion"), field("kind"), field("name"));
            let (group, version) = api_version
                .split_once('/')
                .unwrap_or(("", api_version.as_str()));
            let gvk = GroupVersionKind::gvk(group, version, &kind);
            let (resource, caps) = self.resolve_kind(&gvk).await;
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => {
                    let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
                    Api::namespaced_with(self.client(), ns, &resource)
                }
                Scope::Cluster => Api::all_with(self.client(), &resource),
            };
            let object = api
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&v),
                )
                .await
                .unwrap_or_else(|e| panic!("apply_yaml: applying {kind} {name} ({at}): {e}"));
            if group == "apiextensions.k8s.io" && kind == "CustomResourceDefinition" {
                self.wait_established(&name).await;
            }
            applied.push(object);
        }
        applied
    }

    /// Where `gvk` is served and how: from the cache, else asking the API
    /// server (one discovery request for its group version), retried for a
    /// while (a just-established CRD's kind can take a moment to appear).
    async fn resolve_kind(&self, gvk: &GroupVersionKind) -> (ApiResource, ApiCapabilities) {
        let key = format!("{}/{}/{}", gvk.group, gvk.version, gvk.kind);
        if let Some(found) = self.kinds.lock().unwrap().get(&key) {
            return found.clone();
        }
        let deadline = Instant::now() + CRD_WITHIN;
        loop {
            match ::kube::discovery::pinned_kind(&self.client(), gvk).await {
                Ok(found) => {
                    self.kinds.lock().unwrap().insert(key, found.clone());
                    return found;
                }
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "apply_yaml: the API server does not serve {key} ({e}) after {CRD_WITHIN:?}; \
                     is its CRD applied?"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the CRD `name` has condition Established=True.
    async fn wait_established(&self, name: &str) {
        let api = Api::<CustomResourceDefinition>::all(self.client());
        let deadline = Instant::now() + CRD_WITHIN;
        loop {
            let crd = api
                .get(name)
                .await
                .unwrap_or_else(|e| panic!("apply_yaml: reading CRD {name}: {e}"));
            let conditions = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "apply_yaml: CRD {name} not Established within {CRD_WITHIN:?}; conditions: {conditions:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
