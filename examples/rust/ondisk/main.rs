//! ondisk: a replicated key-value store on redb files (see README.md).

use std::sync::Arc;

use drakkar::StateMachineBox;
use drakkar_examples::common::{self, Options};
use drakkar_examples::ondisk::{self, DiskStore, GROUP};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Options::from_args("ondisk", 26011)?;
    if let Some(id) = o.replica_id {
        let file = o.data_dir.join(format!("replica-{id}.redb"));
        std::fs::create_dir_all(&o.data_dir)?;
        return common::run_process(&o, &[GROUP], ondisk::group_config(), |_, _| {
            Ok(StateMachineBox::on_disk(Arc::new(DiskStore::new(&file))))
        })
        .await;
    }
    let report = ondisk::run(&drakkar_examples::fresh_dir(&o.data_dir)?).await?;
    println!(
        "reopened at {:?} (applied {:?} before), {} entries applied twice; replica 4 joined by snapshot: {}",
        report.opened_at, report.applied_before, report.replayed, report.joined_by_snapshot
    );
    Ok(())
}
