//! `mesh-shim iptables`: the NAT rules that send a workload's traffic
//! through the shim without the app knowing, as Istio's `istio-iptables`
//! init step installs them in a pod's network namespace:
//!
//! - inbound TCP (PREROUTING) to the inbound capture port (15006), except
//!   `--exclude-inbound-ports` and the shim's own ports;
//! - outbound TCP (OUTPUT) to the outbound capture port (15001), except
//!   what the shim itself sends (its UID, 1337 by default, so it never
//!   captures its own upstream connections), loopback, and
//!   `--exclude-outbound-ports` / `--exclude-outbound-ip-ranges`; only
//!   `--include-outbound-ip-ranges` (`*` = all) are captured.
//!
//! The rules are applied in one `iptables-restore --noflush` transaction,
//! so a failure leaves nothing half-installed; `--dry-run` prints them.
//! The shim recovers each connection's original destination with
//! `SO_ORIGINAL_DST`.

use std::io::Write;
use std::process::{Command, Stdio};

use clap::Args;

/// `mesh-shim iptables` flags, named after Istio's annotations.
#[derive(Debug, Clone, Args)]
pub struct IptablesArgs {
    /// The UID the shim runs as; its traffic is never captured.
    #[arg(long, env = "MESH_SHIM_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// Where inbound traffic is redirected.
    #[arg(long, env = "MESH_SHIM_INBOUND_CAPTURE_PORT", default_value_t = 15006)]
    pub inbound_capture_port: u16,
    /// Where outbound traffic is redirected.
    #[arg(long, env = "MESH_SHIM_OUTBOUND_CAPTURE_PORT", default_value_t = 15001)]
    pub outbound_capture_port: u16,
    /// Inbound ports to capture, comma-separated, or `*` for all
    /// (`traffic.sidecar.istio.io/includeInboundPorts`).
    #[arg(long, env = "MESH_SHIM_INCLUDE_INBOUND_PORTS", default_value = "*")]
    pub include_inbound_ports: String,
    /// Inbound ports never captured (`excludeInboundPorts`); the shim's
    /// admin, metrics and readiness ports are always excluded.
    #[arg(long, env = "MESH_SHIM_EXCLUDE_INBOUND_PORTS", default_value = "")]
    pub exclude_inbound_ports: String,
    /// Outbound destination ranges to capture, CIDRs or `*`
    /// (`includeOutboundIPRanges`).
    #[arg(
        long,
        env = "MESH_SHIM_INCLUDE_OUTBOUND_IP_RANGES",
        default_value = "*"
    )]
    pub include_outbound_ip_ranges: String,
    /// Outbound destination ranges never captured (`excludeOutboundIPRanges`).
    #[arg(long, env = "MESH_SHIM_EXCLUDE_OUTBOUND_IP_RANGES", default_value = "")]
    pub exclude_outbound_ip_ranges: String,
    /// Outbound destination ports never captured (`excludeOutboundPorts`).
    #[arg(long, env = "MESH_SHIM_EXCLUDE_OUTBOUND_PORTS", default_value = "")]
    pub exclude_outbound_ports: String,
    /// The shim's own ports, never captured inbound.
    #[arg(
        long,
        env = "MESH_SHIM_OWN_PORTS",
        default_value = "15000,15001,15006,15020,15021"
    )]
    pub own_ports: String,
    /// Print the rules instead of installing them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove the rules (and chains) this command installs.
    #[arg(long)]
    pub clean: bool,
}

const CHAINS: [&str; 4] = [
    "MESH_INBOUND",
    "MESH_IN_REDIRECT",
    "MESH_OUTPUT",
    "MESH_REDIRECT",
];

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn ports(flag: &str, s: &str) -> Result<Vec<u16>, String> {
    list(s)
        .into_iter()
        .map(|p| {
            p.parse().map_err(|_| {
                format!("--{flag}: {p:?} is not a port; write a comma-separated list like 22,3306")
            })
        })
        .collect()
}

fn cidrs(flag: &str, s: &str) -> Result<Option<Vec<String>>, String> {
    let items = list(s);
    if items.iter().any(|c| c == "*") {
        return Ok(None);
    }
    for c in &items {
        c.parse::<ipnet::IpNet>()
            .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                format!("--{flag}: {c:?} is not a CIDR; write 10.0.0.0/8,172.16.0.0/12 or *")
            })?;
    }
    Ok(Some(items))
}

/// The `iptables-restore` input for the nat table.
pub fn rules(a: &IptablesArgs) -> Result<String, String> {
    let mut r = vec!["*nat".to_string()];
    for c in CHAINS {
        r.push(format!(":{c} - [0:0]"));
    }
    r.push(format!(
        "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        a.inbound_capture_port
    ));
    r.push(format!(
        "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        a.outbound_capture_port
    ));

    // Inbound.
    r.push("-A PREROUTING -p tcp -j MESH_INBOUND".into());
    let mut excluded = ports("own-ports", &a.own_ports)?;
    excluded.extend(ports("exclude-inbound-ports", &a.exclude_inbound_ports)?);
    for p in &excluded {
        r.push(format!("-A MESH_INBOUND -p tcp --dport {p} -j RETURN"));
    }
    if a.include_inbound_ports.trim() == "*" {
        r.push("-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT".into());
    } else {
        for p in ports("include-inbound-ports", &a.include_inbound_ports)? {
            if !excluded.contains(&p) {
                r.push(format!(
                    "-A MESH_INBOUND -p tcp --dport {p} -j MESH_IN_REDIRECT"
                ));
            }
        }
    }

    // Outbound.
    let uid = a.proxy_uid;
    r.push("-A OUTPUT -p tcp -j MESH_OUTPUT".into());
    r.push(format!(
        "-A MESH_OUTPUT -m owner --uid-owner {uid} -j RETURN"
    ));
    r.push("-A MESH_OUTPUT -o lo -j RETURN".into());
    r.push("-A MESH_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
    for p in ports("exclude-outbound-ports", &a.exclude_outbound_ports)? {
        r.push(format!("-A MESH_OUTPUT -p tcp --dport {p} -j RETURN"));
    }
    if let Some(ex) = cidrs("exclude-outbound-ip-ranges", &a.exclude_outbound_ip_ranges)? {
        for c in ex {
            r.push(format!("-A MESH_OUTPUT -d {c} -j RETURN"));
        }
    }
    match cidrs("include-outbound-ip-ranges", &a.include_outbound_ip_ranges)? {
        None => r.push("-A MESH_OUTPUT -j MESH_REDIRECT".into()),
        Some(inc) => {
            for c in inc {
                r.push(format!("-A MESH_OUTPUT -d {c} -j MESH_REDIRECT"));
            }
        }
    }
    r.push("COMMIT".into());
    Ok(r.join("\n") + "\n")
}

/// The rules that undo [`rules`]: jumps out of the built-in chains, then
/// the chains themselves.
pub fn clean_rules() -> String {
    let mut r = vec!["*nat".to_string()];
    for c in CHAINS {
        r.push(format!(":{c} - [0:0]"));
    }
    r.push("-D PREROUTING -p tcp -j MESH_INBOUND".into());
    r.push("-D OUTPUT -p tcp -j MESH_OUTPUT".into());
    for c in CHAINS {
        r.push(format!("-X {c}"));
    }
    r.push("COMMIT".into());
    r.join("\n") + "\n"
}

/// Installs (or removes, or prints) the rules.
pub fn run(a: &IptablesArgs) -> Result<(), String> {
    let text = if a.clean { clean_rules() } else { rules(a)? };
    if a.dry_run {
        print!("{text}");
        return Ok(());
    }
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run iptables-restore: {e}; install iptables (apt-get install iptables) and run as root in the workload's network namespace"))?;
    child
        .stdin
        .take()
        .ok_or("iptables-restore has no stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing the rules to iptables-restore: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-restore refused the rules ({}): {}; see them with --dry-run",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: IptablesArgs,
    }

    fn args(extra: &[&str]) -> IptablesArgs {
        let mut v = vec!["t"];
        v.extend(extra);
        T::parse_from(v).a
    }

    #[test]
    fn defaults_capture_everything_but_the_shim_itself() {
        let r = rules(&args(&[])).unwrap();
        assert!(r.contains("-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"));
        assert!(r.contains("-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001"));
        assert!(r.contains("-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN"));
        assert!(r.contains("-A MESH_INBOUND -p tcp --dport 15021 -j RETURN"));
        assert!(r.contains("-A MESH_INBOUND -p tcp -j MESH_IN_REDIRECT"));
        assert!(r.contains("-A MESH_OUTPUT -j MESH_REDIRECT"));
        // The shim's exclusion comes before any redirect of OUTPUT.
        let uid = r.find("--uid-owner 1337 -j RETURN").unwrap();
        assert!(uid < r.find("-j MESH_REDIRECT").unwrap());
        assert!(r.starts_with("*nat\n") && r.ends_with("COMMIT\n"));
    }

    #[test]
    fn istio_annotations_narrow_the_capture() {
        let r = rules(&args(&[
            "--include-outbound-ip-ranges",
            "10.96.0.0/12",
            "--exclude-outbound-ports",
            "5432",
            "--include-inbound-ports",
            "9080,15021",
            "--exclude-inbound-ports",
            "22",
            "--proxy-uid",
            "0",
        ]))
        .unwrap();
        assert!(r.contains("-A MESH_OUTPUT -d 10.96.0.0/12 -j MESH_REDIRECT"));
        assert!(!r.contains("-A MESH_OUTPUT -j MESH_REDIRECT"));
        assert!(r.contains("-A MESH_OUTPUT -p tcp --dport 5432 -j RETURN"));
        assert!(r.contains("-A MESH_INBOUND -p tcp --dport 9080 -j MESH_IN_REDIRECT"));
        // An own port listed for capture stays excluded.
        assert!(!r.contains("--dport 15021 -j MESH_IN_REDIRECT"));
        assert!(r.contains("-A MESH_INBOUND -p tcp --dport 22 -j RETURN"));
        assert!(r.contains("--uid-owner 0 -j RETURN"));
    }

    #[test]
    fn bad_values_name_the_flag_and_the_fix() {
        let e = rules(&args(&["--exclude-outbound-ports", "postgres"])).unwrap_err();
        assert!(
            e.contains("--exclude-outbound-ports") && e.contains("22,3306"),
            "{e}"
        );
        let e = rules(&args(&["--include-outbound-ip-ranges", "10.0.0.0/33"])).unwrap_err();
        assert!(
            e.contains("--include-outbound-ip-ranges") && e.contains("CIDR"),
            "{e}"
        );
    }

    #[test]
    fn clean_removes_the_jumps_and_the_chains() {
        let r = clean_rules();
        assert!(r.contains("-D OUTPUT -p tcp -j MESH_OUTPUT"));
        assert!(r.contains("-X MESH_REDIRECT"));
    }
}
