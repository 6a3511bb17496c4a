//! `shim-bench --quick` end to end: every row starts, serves and is
//! measured, with the debug `mesh-shim` that `cargo test --workspace`
//! builds beside this package's binaries, and Debian's wrk, h2load, nginx
//! and haproxy (scripts/test.sh installs them). Only that the bench runs
//! is checked; its goals are reported by the bench, never asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_bench_measures_all_five_rows_in_quick_mode() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_shim-bench"));
    let shim = bench.with_file_name("mesh-shim");
    assert!(
        shim.is_file(),
        "no {}: `cargo test --workspace` builds it, or `cargo build -p sidecar-shim`",
        shim.display()
    );
    for tool in ["wrk", "h2load", "nginx", "haproxy"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing: scripts/test.sh installs it (apt-get install wrk nghttp2-client nginx haproxy)"
        );
    }
    let out = Command::new(&bench)
        .args(["--quick", "--shim"])
        .arg(&shim)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for row in ["direct", "mesh-shim", "nginx", "haproxy", "2 shims, mTLS"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {row} |")))
            .unwrap_or_else(|| panic!("no row {row}:\n{stdout}"));
        assert!(!line.contains("failed"), "{line}\n{stdout}\n{stderr}");
    }
    assert!(stdout.contains("shim RSS idle <= 20 MB"), "{stdout}");
}
