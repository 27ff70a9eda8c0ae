//! helloworld: a replicated Redis-like key-value store (see README.md).

use drakkar::StateMachineBox;
use drakkar_examples::common::{self, Options};
use drakkar_examples::kv::{self, GROUP, KvStore};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Options::from_args("helloworld", 26001)?;
    if o.replica_id.is_some() {
        return common::run_process(&o, &[GROUP], kv::group_config(), |_, _| {
            Ok(StateMachineBox::regular(KvStore::default()))
        })
        .await;
    }
    let report = kv::run(&drakkar_examples::fresh_dir(&o.data_dir)?).await?;
    println!("every one of the {} acknowledged keys was there after the restart", report.acknowledged);
    Ok(())
}
