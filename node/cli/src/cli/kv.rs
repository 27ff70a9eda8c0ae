//! `drakkar kv put|get|del|scan`: keys spread over the cluster's KV groups (see
//! [`drakkar_client::ShardedKv`]), or one group with `--group`.

use anyhow::{Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use drakkar_client::pb::Consistency;
use drakkar_client::{ShardedKv, prefix};

use super::ClientArgs;

/// `drakkar kv`.
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Use this group instead of mapping keys to the cluster's KV groups by hash.
    #[arg(long, global = true)]
    group: Option<u64>,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand, Debug)]
enum KvCommand {
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Read a key (exit code 1 when absent).
    Get {
        /// The key.
        key: String,
        /// Read the local replica's state without confirming with the leader.
        #[arg(long)]
        stale: bool,
        /// Print the key's metadata too.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// List keys starting with a prefix, in order.
    Scan {
        /// The prefix (all keys when omitted).
        #[arg(default_value = "")]
        prefix: String,
        /// Most keys.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Read the local replicas' state without confirming with the leaders.
        #[arg(long)]
        stale: bool,
    },
}

fn consistency(stale: bool) -> Consistency {
    if stale { Consistency::Stale } else { Consistency::Linearizable }
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub async fn run(a: KvArgs) -> Result<()> {
    let client = a.client.client()?;
    let kv = match a.group {
        Some(g) => ShardedKv::new(client.clone(), vec![g])?,
        None => ShardedKv::discover(client.clone()).await?,
    };
    let r = match a.command {
        KvCommand::Put { key, value } => {
            let r = kv.put(key, value).await?;
            let m = r.new.unwrap_or_default();
            out!("OK version={} mod_index={}", m.version, m.mod_index);
            Ok(())
        }
        KvCommand::Get { key, stale, verbose } => match kv.get(key, consistency(stale)).await? {
            Some(item) => {
                out!("{}", text(&item.value));
                if verbose {
                    let m = item.meta.unwrap_or_default();
                    eprintln!(
                        "version={} mod_index={} create_index={}",
                        m.version, m.mod_index, m.create_index
                    );
                }
                Ok(())
            }
            None => bail!("key not found"),
        },
        KvCommand::Del { key } => {
            let r = kv.delete(key).await?;
            out!("{}", if r.prev.is_some() { "deleted" } else { "not found" });
            Ok(())
        }
        KvCommand::Scan { prefix: p, limit, stale } => {
            let r = if kv.groups().len() == 1 {
                client.scan(kv.groups()[0], prefix(p), limit, false, consistency(stale)).await?
            } else {
                kv.scan_prefix(p, limit, consistency(stale)).await?
            };
            for item in &r.items {
                out!("{}={}", text(&item.key), text(&item.value));
            }
            if r.more {
                eprintln!("(more keys follow; raise --limit)");
            }
            Ok(())
        }
    };
    client.close().await;
    r
}
