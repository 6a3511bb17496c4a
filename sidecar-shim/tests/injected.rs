//! The contract between meshd's injector and this binary: the command
//! lines the injection webhook writes into pods (`mesh-init`, `mesh-shim`,
//! `mesh-agent`) parse with `mesh-shim`'s own flags, with the values the
//! injector meant.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;
use mesh_control::kube::inject::{inject, InjectConfig, Template};
use serde_json::{json, Value};
use sidecar_shim::config::{Cli, Command};

fn pod(annotations: Value) -> Value {
    json!({
        "metadata": {"name": "reviews-1", "labels": {"app": "reviews", "version": "v1"}, "annotations": annotations},
        "spec": {"serviceAccountName": "reviews", "containers": [{"name": "app", "image": "app:1"}]}
    })
}

/// `command + args` of the injected container `name`.
fn argv(pod: &Value, name: &str) -> Vec<String> {
    let c = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"));
    c["command"]
        .as_array()
        .unwrap()
        .iter()
        .chain(c["args"].as_array().unwrap())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_injected_sidecar_and_init_parse_as_the_injector_meant() {
    let p = inject(
        &pod(json!({
            "traffic.sidecar.istio.io/excludeOutboundPorts": "3306",
            "traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8",
        })),
        "bookinfo",
        Template::Sidecar,
        &InjectConfig::default(),
    );
    let Command::Run(run) = Cli::try_parse_from(argv(&p, "mesh-shim")).unwrap().command else {
        panic!("run")
    };
    assert_eq!(run.mesh.xds_addr, ["https://meshd.istio-system.svc:15012"]);
    assert_eq!(
        run.mesh.ca_addr.as_deref(),
        Some("meshd.istio-system.svc:15012")
    );
    assert_eq!(run.mesh.namespace, "bookinfo");
    assert_eq!(run.mesh.service_account.as_deref(), Some("reviews"));
    assert!(run
        .mesh
        .labels
        .0
        .contains(&("security.istio.io/tlsMode".into(), "istio".into())));
    assert!(run.capture_inbound);
    assert_eq!((run.ready_port, run.metrics_port), (15021, 15020));

    let Command::Iptables(ipt) = Cli::try_parse_from(argv(&p, "mesh-init")).unwrap().command else {
        panic!("iptables")
    };
    assert_eq!(ipt.proxy_uid, 1337);
    assert_eq!(ipt.exclude_outbound_ports, "3306");
    assert_eq!(ipt.include_outbound_ip_ranges, "10.0.0.0/8");
    assert_eq!(ipt.include_inbound_ports, "*");
    // The rules it would install are well-formed.
    sidecar_shim::iptables::rules(&ipt).unwrap();
}

#[test]
fn the_injected_agent_parses_as_the_injector_meant() {
    let p = inject(
        &pod(json!({})),
        "bookinfo",
        Template::GrpcAgent,
        &InjectConfig::default(),
    );
    let Command::Agent(a) = Cli::try_parse_from(argv(&p, "mesh-agent")).unwrap().command else {
        panic!("agent")
    };
    assert_eq!(a.xds_addr, "https://meshd.istio-system.svc:15012");
    assert_eq!(
        a.bootstrap_file.to_str(),
        Some("/etc/istio/proxy/grpc-bootstrap.json")
    );
    assert_eq!(a.cert_dir.to_str(), Some("/var/lib/istio/data"));
    assert_eq!(a.service_account, "reviews");
    assert_eq!(a.trust_domain, "cluster.local");
    // Expanded by the kubelet from the downward-API env.
    assert_eq!(a.pod_name.as_deref(), Some("$(POD_NAME)"));
    assert_eq!(a.ready_port, 15021);
}
