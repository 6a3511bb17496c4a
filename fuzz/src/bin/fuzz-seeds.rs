//! Writes every target's seeds into `<dir>/<target>/`, the corpus
//! directories `scripts/fuzz.sh` hands to libFuzzer.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: fuzz-seeds <corpus dir>");
        std::process::exit(2)
    }));
    for (name, _) in mesh_fuzz::TARGETS {
        let out = dir.join(name);
        if let Err(e) = std::fs::create_dir_all(&out) {
            eprintln!("cannot create {}: {e}", out.display());
            std::process::exit(1);
        }
        let seeds = mesh_fuzz::seeds::of(name);
        for (i, s) in seeds.iter().enumerate() {
            let path = out.join(format!("seed-{i:03}"));
            if let Err(e) = std::fs::write(&path, s) {
                eprintln!("cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        println!("{name}: {} seeds in {}", seeds.len(), out.display());
    }
}
