//! Gateway checks.

use crate::config::Kind;
use crate::host::host_matches;

use super::{Context, Finding};

/// Strips the `namespace/` part a Gateway host may carry.
fn bare_host(h: &str) -> &str {
    h.split_once('/').map(|(_, h)| h).unwrap_or(h)
}

fn hosts_overlap(a: &str, b: &str) -> bool {
    let (a, b) = (bare_host(a), bare_host(b));
    host_matches(a, b) || host_matches(b, a)
}

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let gateways: Vec<_> = ctx
        .of_kind(Kind::Gateway)
        .filter_map(|r| r.gateway().map(|g| (r, g)))
        .collect();
    for (i, (ra, ga)) in gateways.iter().enumerate() {
        for (rb, gb) in &gateways[..i] {
            if ga.selector != gb.selector {
                continue;
            }
            for (si, sa) in ga.servers.iter().enumerate() {
                for sb in &gb.servers {
                    let (Some(pa), Some(pb)) = (&sa.port, &sb.port) else {
                        continue;
                    };
                    if pa.number != pb.number {
                        continue;
                    }
                    if let Some(h) = sa
                        .hosts
                        .iter()
                        .find(|ha| sb.hosts.iter().any(|hb| hosts_overlap(ha, hb)))
                    {
                        out.push(Finding::at(
                            "gateway-conflict",
                            ra,
                            &format!("spec.servers[{si}]"),
                            format!(
                                "port {} host {h} is also bound by Gateway {} on the same workloads; the gateway serves only one of them and which one is undefined. Merge the servers into one Gateway or use distinct hosts",
                                pa.number,
                                rb.ns_name()
                            ),
                        ));
                    }
                }
            }
        }
    }
}
