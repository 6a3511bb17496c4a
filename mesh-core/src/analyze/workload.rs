//! Workload checks: pods that would escape the mesh.

use crate::config::Spec;

use super::{Context, Finding};

/// Istio's proxy runs as UID 1337 and the traffic capture rules exempt that
/// UID, so an application container running as 1337 bypasses the mesh:
/// no mTLS, no policy, no telemetry.
const PROXY_UID: i64 = 1337;

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for r in ctx.resources {
        let pod = match &r.spec {
            Spec::Pod(p) => &p.spec,
            Spec::Controller(c) => &c.template.spec,
            _ => continue,
        };
        let base = if matches!(r.spec, Spec::Pod(_)) {
            "spec"
        } else {
            "spec.template.spec"
        };
        for (container, path, uid) in pod.effective_run_as_users() {
            if uid == Some(PROXY_UID) {
                let at = if path.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}.{path}")
                };
                out.push(Finding::at(
                    "workload-uid-1337",
                    r,
                    &at,
                    format!(
                        "container {container:?} runs as UID 1337, the mesh proxy's UID; its traffic is exempt from capture and bypasses mTLS and policy. Run it as another UID"
                    ),
                ));
            }
        }
    }
}
