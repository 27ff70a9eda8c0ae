//! multigroup: sixteen Raft groups in one process (see README.md).

use drakkar::{GroupConfig, GroupId, StateMachineBox};
use drakkar_examples::common::{self, Options};
use drakkar_examples::kv::KvStore;
use drakkar_examples::multigroup::{self, GROUPS};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Options::from_args("multigroup", 26031)?;
    if o.replica_id.is_some() {
        // The console talks to group 1; every group runs here.
        let groups: Vec<GroupId> = (1..=GROUPS).map(GroupId).collect();
        return common::run_process(&o, &groups, GroupConfig::default(), |_, _| {
            Ok(StateMachineBox::regular(KvStore::default()))
        })
        .await;
    }
    let report = multigroup::run(&drakkar_examples::fresh_dir(&o.data_dir)?).await?;
    println!("keys per group {:?}, {} distinct leaders", report.keys_per_group, report.leaders);
    Ok(())
}
