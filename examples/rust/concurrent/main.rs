//! concurrent: reads served while a batch is applied (see README.md).

use std::sync::Arc;
use std::time::Duration;

use drakkar::{GroupConfig, StateMachineBox};
use drakkar_examples::common::{self, Options};
use drakkar_examples::concurrent::{self, Board, GROUP};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Options::from_args("concurrent", 26021)?;
    if o.replica_id.is_some() {
        return common::run_process(&o, &[GROUP], GroupConfig::default(), |_, _| {
            Ok(StateMachineBox::concurrent(Arc::new(Board::new(Duration::from_millis(5)))))
        })
        .await;
    }
    let report = concurrent::run(&drakkar_examples::fresh_dir(&o.data_dir)?).await?;
    println!("{} reads answered during updates", report.reads_during_apply);
    Ok(())
}
