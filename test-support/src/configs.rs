//! Istio YAML the tests write again and again, as text: a Service with one
//! WorkloadEntry per version on loopback, a ServiceEntry with one loopback
//! endpoint, a DestinationRule. Every document here ends with `---`, so
//! they concatenate.

/// A Service `name` in `default` (selector `app: name`, one port
/// `port_name`/`port`) and, per `(version, endpoint port)`, a
/// WorkloadEntry `name-version` on 127.0.0.1 labelled `app: name,
/// version: version`.
pub fn versioned_service(
    name: &str,
    port_name: &str,
    port: u16,
    versions: &[(&str, u16)],
) -> String {
    let mut yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: {port_name}, port: {port}}}]
---
"
    );
    for (version, ep_port) in versions {
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}-{version}, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{{port_name}: {ep_port}}}
  labels: {{app: {name}, version: {version}}}
---
"
        ));
    }
    yaml
}

/// A ServiceEntry for `host:port` with one loopback endpoint on `ep_port`.
/// `location` is MESH_INTERNAL or MESH_EXTERNAL; `extra` goes under the
/// endpoint (labels, serviceAccount).
pub fn service_entry(host: &str, port: u16, ep_port: u16, location: &str, extra: &str) -> String {
    let name = host.split('.').next().unwrap();
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  location: {location}
  resolution: STATIC
  ports: [{{name: http, number: {port}, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {ep_port}}}
{extra}---
"
    )
}

/// A DestinationRule for `host` with `traffic_policy` (indented YAML).
pub fn destination_rule(host: &str, traffic_policy: &str) -> String {
    let name = host.split('.').next().unwrap();
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {host}
  trafficPolicy:
{traffic_policy}---
"
    )
}
