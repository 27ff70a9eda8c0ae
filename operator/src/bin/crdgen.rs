//! `crdgen`: prints the DrakkarCluster CRD, or writes it to the file given as the only argument.
//!
//! `cargo run -p drakkar-operator --bin crdgen -- crds/drakkarcluster.yaml` refreshes the committed copy.

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let yaml = drakkar_operator::crdgen::crd_yaml()?;
    match std::env::args_os().nth(1) {
        Some(path) => std::fs::write(&path, yaml)
            .with_context(|| format!("writing {}", std::path::Path::new(&path).display()))?,
        None => print!("{yaml}"),
    }
    Ok(())
}
