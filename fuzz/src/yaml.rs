//! Istio YAML, from text to the resources a client is sent.

use mesh_core::analyze::{analyze, has_errors};
use mesh_core::compile::Compiler;
use mesh_core::config::load::load_str;
use mesh_core::config::resource::Spec;
use mesh_core::config::MeshConfig;
use mesh_core::model::Client;
use mesh_xds::{encode, EncodeOptions};

const FILE: &str = "fuzz.yaml";

/// See the crate docs.
pub fn yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = load_str(text, FILE);
    for e in &loaded.errors {
        // Every error must lead the user to the file.
        assert_eq!(e.file, FILE, "{e:?}");
        assert!(!e.message.is_empty(), "{e:?}");
    }
    let mesh = MeshConfig::default();
    let findings = analyze(&loaded, &mesh);
    if !loaded.errors.is_empty() || has_errors(&findings) {
        return;
    }
    // Clients: one plain workload, and each WorkloadEntry as a workload
    // (its namespace, labels and service account select policies).
    let mut clients = vec![Client::new("default", Default::default())];
    for r in loaded.resources.iter().take(4) {
        if let Spec::WorkloadEntry(we) = &r.spec {
            let mut c = Client::new(r.meta.namespace.clone(), we.labels.clone());
            c.service_account = we.service_account.clone();
            c.addresses = we.address.iter().cloned().collect();
            clients.push(c);
        }
    }
    let compiler = Compiler::new(loaded.resources, mesh);
    for client in &clients {
        let model = compiler.compile(client);
        let res = encode(&model, &EncodeOptions::default());
        if let Err(e) = mesh_xds::decode::decode(&res) {
            panic!("our own xDS encoding of a valid config does not decode: {e}");
        }
    }
}
