//! `meshctl install`: the manifests that run meshd on Kubernetes as istiod
//! runs there, for `kubectl apply -f`.
//!
//! In apply order: the Istio CRDs (generated from mesh-core's config model,
//! [`mesh_core::crd`]), the Namespace, meshd's ServiceAccount, its RBAC
//! ([`rbac`]: a ClusterRole with exactly what meshd does, a Role for what
//! it keeps in its own namespace), its Deployment and Service
//! ([`workload`]). This module only builds values ([`objects`]) and text
//! ([`render`]); it talks to no cluster.

pub mod rbac;
pub mod workload;
pub mod yaml;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::process::ExitCode;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::common::CliError;

/// meshd's name: its ServiceAccount, (Cluster)Role(Binding)s, Deployment
/// and Service.
pub const NAME: &str = "meshd";

/// Labels every object carries.
pub const LABELS: [(&str, &str); 2] = [
    ("app.kubernetes.io/part-of", NAME),
    ("app.kubernetes.io/managed-by", "meshctl"),
];

/// What to install, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallOptions {
    /// meshd's namespace (created by the manifests).
    pub namespace: String,
    /// meshd's container image.
    pub image: String,
    /// Deployment replicas.
    pub replicas: i32,
    /// Only the CRDs (for a cluster whose control plane is installed
    /// separately, or to install CRDs ahead of it).
    pub crds_only: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        Self {
            namespace: "istio-system".into(),
            image: "meshd:dev".into(),
            replicas: 1,
            crds_only: false,
        }
    }
}

/// Object metadata with the common labels.
pub(crate) fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(String::from),
        labels: Some(
            LABELS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ObjectMeta::default()
    }
}

fn value<T: serde::Serialize>(object: &T) -> Value {
    // k8s-openapi's types always serialize (apiVersion and kind included).
    serde_json::to_value(object).unwrap_or_default()
}

/// The CRDs, labelled like everything else.
pub fn crds() -> Vec<Value> {
    let mut crds = mesh_core::crd::all();
    for c in &mut crds {
        let labels: serde_json::Map<String, Value> = LABELS
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        c["metadata"]["labels"] = Value::Object(labels);
    }
    crds
}

/// meshd and what it needs besides the CRDs, in apply order.
pub fn control_plane(opts: &InstallOptions) -> Vec<Value> {
    vec![
        value(&workload::namespace(opts)),
        value(&workload::service_account(opts)),
        value(&rbac::cluster_role()),
        value(&rbac::cluster_role_binding(opts)),
        value(&rbac::role(opts)),
        value(&rbac::role_binding(opts)),
        value(&workload::deployment(opts)),
        value(&workload::service(opts)),
    ]
}

/// Every object `meshctl install` prints, in apply order: the CRDs, then
/// (unless `crds_only`) [`control_plane`].
pub fn objects(opts: &InstallOptions) -> Vec<Value> {
    let mut all = crds();
    if !opts.crds_only {
        all.extend(control_plane(opts));
    }
    all
}

/// What `meshctl install` prints: [`objects`] as one YAML stream.
pub fn render(opts: &InstallOptions) -> String {
    yaml::documents(&objects(opts))
}

/// What `meshctl install --output DIR` writes: `crds.yaml`, and unless
/// `crds_only`, `meshd.yaml` (apply the first, then the second).
pub fn render_files(opts: &InstallOptions) -> Vec<(&'static str, String)> {
    let mut files = vec![("crds.yaml", yaml::documents(&crds()))];
    if !opts.crds_only {
        files.push(("meshd.yaml", yaml::documents(&control_plane(opts))));
    }
    files
}

/// Arguments of `meshctl install`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Namespace meshd runs in (created).
    #[arg(long, default_value = "istio-system")]
    namespace: String,
    /// meshd's container image.
    #[arg(long, default_value = "meshd:dev")]
    image: String,
    /// meshd Deployment replicas.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..))]
    replicas: i32,
    /// Print only the CustomResourceDefinitions.
    #[arg(long)]
    crds_only: bool,
    /// Write crds.yaml (and meshd.yaml) into this directory instead of
    /// printing one stream.
    #[arg(long)]
    output: Option<PathBuf>,
}

impl From<&Args> for InstallOptions {
    fn from(a: &Args) -> Self {
        Self {
            namespace: a.namespace.clone(),
            image: a.image.clone(),
            replicas: a.replicas,
            crds_only: a.crds_only,
        }
    }
}

/// Runs `meshctl install`.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let opts = InstallOptions::from(&args);
    if !mesh_core::config::validate::is_dns1123_label(&opts.namespace) {
        return Err(format!(
            "--namespace {:?} is not a valid namespace name; use lowercase letters, digits and '-' (at most 63)",
            opts.namespace
        ));
    }
    match &args.output {
        None => print!("{}", render(&opts)),
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            for (name, text) in render_files(&opts) {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
