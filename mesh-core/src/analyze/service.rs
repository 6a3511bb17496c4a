//! Kubernetes Service checks.

use crate::config::kube::Protocol;
use crate::config::Spec;

use super::{Context, Finding};

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for r in ctx.resources {
        let Spec::Service(spec) = &r.spec else {
            continue;
        };
        for (i, p) in spec.ports.iter().enumerate() {
            if Protocol::declared(p.name.as_deref(), p.app_protocol.as_deref()) == Protocol::Unknown
            {
                out.push(Finding::at(
                    "service-port-protocol-unknown",
                    r,
                    &format!("spec.ports[{i}]"),
                    format!(
                        "port {} ({}) declares no protocol, so the mesh must guess it and HTTP routing, retries and HTTP authorization fields will not apply reliably; name it with a protocol prefix (http-, grpc-, tcp-, ...) or set appProtocol",
                        p.port,
                        p.name.as_deref().unwrap_or("unnamed")
                    ),
                ));
            }
        }
    }
}
