//! worked: three replicas applying the same proposals in the same order (see README.md).

use std::sync::{Arc, Mutex};

use drakkar::{GroupConfig, StateMachineBox};
use drakkar_examples::common::{self, Options};
use drakkar_examples::worked::{self, Account, GROUP};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Options::from_args("worked", 26041)?;
    if o.replica_id.is_some() {
        let printed = Arc::new(Mutex::new(Vec::new()));
        return common::run_process(&o, &[GROUP], GroupConfig::default(), |_, replica| {
            Ok(StateMachineBox::regular(Account::new(replica, printed.clone())))
        })
        .await;
    }
    worked::run(&drakkar_examples::fresh_dir(&o.data_dir)?).await?;
    Ok(())
}
