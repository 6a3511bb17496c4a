//! Every fuzz target over its seeds and over every input that once
//! crashed it (`fuzz/regressions/<target>/`, one file per finding, named
//! after what it found). A target that panics here fails the build's
//! tests, so a fixed finding stays fixed without the fuzzer.

use std::path::Path;

#[test]
fn every_target_survives_its_seeds_and_past_findings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut ran = 0;
    for (name, target) in mesh_fuzz::TARGETS {
        let seeds = mesh_fuzz::seeds::of(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        for s in &seeds {
            target(s);
            ran += 1;
        }
        let Ok(found) = std::fs::read_dir(dir.join(name)) else {
            continue;
        };
        for f in found.flatten() {
            let bytes =
                std::fs::read(f.path()).unwrap_or_else(|e| panic!("{}: {e}", f.path().display()));
            eprintln!("{name}: {}", f.path().display());
            target(&bytes);
            ran += 1;
        }
    }
    eprintln!("{ran} inputs");
}

/// The seeds reach deep: the config compiles and the JWT seed verifies, so
/// the fuzzer starts past the parsers' front doors.
#[test]
fn seeds_reach_the_checks_behind_the_parsers() {
    use mesh_tower::server::jwt::jwks::parse_jwks;
    use mesh_tower::server::jwt::verify::{check_claims, decode, verify_signature};
    let keys = parse_jwks(mesh_fuzz::jwt::JWKS).expect("fixed JWKS");
    let seeds = mesh_fuzz::seeds::of("jwt");
    let good = std::str::from_utf8(&seeds[0]).expect("utf-8");
    let t = decode(good).expect("the good seed decodes");
    verify_signature(&t, &keys).expect("the good seed verifies");
    check_claims(
        &t.claims,
        mesh_fuzz::jwt::ISSUER,
        &[mesh_fuzz::jwt::AUDIENCE.to_string()],
        mesh_fuzz::jwt::NOW,
        60,
    )
    .expect("the good seed's claims pass");
    let other = decode(std::str::from_utf8(&seeds[2]).expect("utf-8")).expect("decodes");
    assert!(
        check_claims(
            &other.claims,
            "https://other.test",
            &[],
            mesh_fuzz::jwt::NOW,
            60
        )
        .is_err(),
        "a string exp is refused"
    );
}
