//! Istio's CustomResourceDefinitions for the test clusters: the ones
//! `meshctl install` ships, generated from mesh-core's config model
//! (`mesh_core::crd`, structural schemas), so a test cluster refuses by
//! shape what a real install would.

/// Every Istio CRD meshd reads, as one multi-document YAML (JSON
/// documents, which YAML reads as they are).
pub fn istio_crds() -> String {
    mesh_core::crd::all()
        .iter()
        .map(|crd| format!("{crd}\n---\n"))
        .collect()
}
