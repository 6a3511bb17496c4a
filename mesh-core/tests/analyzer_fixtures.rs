//! Every analyzer code has a fixture that triggers it and a near-identical
//! one that does not: `tests/fixtures/analyze/<code>/{trigger,clean}.yaml`,
//! with an optional `mesh.yaml` MeshConfig beside them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failures

use std::path::{Path, PathBuf};

use mesh_core::analyze::{analyze, Finding, CODES};
use mesh_core::config::load::{load_mesh_config, load_paths};
use mesh_core::config::MeshConfig;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analyze")
}

fn run(dir: &Path, file: &str) -> Vec<Finding> {
    let mesh_path = dir.join("mesh.yaml");
    let mesh = if mesh_path.exists() {
        load_mesh_config(&mesh_path).expect("mesh config")
    } else {
        MeshConfig::default()
    };
    let loaded = load_paths(&[dir.join(file)]).expect("readable fixture");
    analyze(&loaded, &mesh)
}

#[test]
fn every_code_has_fixtures_that_trigger_it_and_not() {
    let mut failures = Vec::new();
    for (code, _, _) in CODES {
        let dir = fixture_dir().join(code);
        if !dir.join("trigger.yaml").exists() || !dir.join("clean.yaml").exists() {
            failures.push(format!("{code}: missing trigger.yaml or clean.yaml"));
            continue;
        }
        let triggered = run(&dir, "trigger.yaml");
        if !triggered.iter().any(|f| f.code == *code) {
            failures.push(format!(
                "{code}: trigger.yaml did not produce it; got {:#?}",
                triggered
            ));
        }
        let clean = run(&dir, "clean.yaml");
        if let Some(f) = clean.iter().find(|f| f.code == *code) {
            failures.push(format!("{code}: clean.yaml produced it: {f}"));
        }
        if *code != "config-invalid" {
            if let Some(f) = clean
                .iter()
                .chain(triggered.iter())
                .find(|f| f.code == "config-invalid")
            {
                failures.push(format!("{code}: fixtures must be valid config: {f}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn findings_point_at_the_file_and_line() {
    let dir = fixture_dir().join("vs-retriable-4xx");
    let findings = run(&dir, "trigger.yaml");
    let f = findings
        .iter()
        .find(|f| f.code == "vs-retriable-4xx")
        .expect("finding");
    assert!(
        f.file.ends_with("vs-retriable-4xx/trigger.yaml"),
        "{}",
        f.file
    );
    assert_eq!(f.line, Some(9), "{f}");
    assert_eq!(f.resource, "VirtualService/default/payments");
}
