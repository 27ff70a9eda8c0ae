//! `crdgen`: prints the DrakkarCluster CRD, or writes it to every file given as an argument.
//!
//! Refresh the committed copies (the repository's and the Helm chart's) from the repository root:
//! `cargo run -p drakkar-operator --bin crdgen -- crds/drakkarcluster.yaml charts/drakkar/files/crds/drakkarcluster.yaml`

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let yaml = drakkar_operator::crdgen::crd_yaml()?;
    let paths: Vec<_> = std::env::args_os().skip(1).collect();
    if paths.is_empty() {
        print!("{yaml}");
    }
    for path in paths {
        std::fs::write(&path, &yaml)
            .with_context(|| format!("writing {}", std::path::Path::new(&path).display()))?;
    }
    Ok(())
}
