//! Writes the CRD YAML of mainstay's resources into the Helm chart.
//!
//! Usage: `cargo run -p mainstay-crds --bin mainstay-crdgen [REPO_ROOT]` (default: the current
//! directory).

use std::path::PathBuf;

fn main() {
    let root = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    let dir = root.join(mainstay_crds::CHART_CRD_DIR);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    for (file, crd) in mainstay_crds::crds() {
        let path = dir.join(file);
        if let Err(e) = std::fs::write(&path, mainstay_crds::render(&crd)) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
}
