//! `drakkar admin members|add|promote|remove|transfer|status|snapshot|import|start|stop`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use drakkar_client::pb;

use super::{ClientArgs, SmArg};

/// `drakkar admin`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Voter,
    NonVoter,
    Witness,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// A group's members, leader and configuration index.
    Members {
        /// The group.
        #[arg(long)]
        group: u64,
    },
    /// Add a replica to a group (then start it on its node with `admin start --join`).
    Add {
        /// The group.
        #[arg(long)]
        group: u64,
        /// The new replica's id (never used before in this group).
        #[arg(long)]
        replica: u64,
        /// host:port of its node.
        #[arg(long)]
        address: String,
        /// Its role.
        #[arg(long, value_enum, default_value = "non-voter")]
        role: RoleArg,
        /// The configuration index last seen (0: any).
        #[arg(long, default_value_t = 0)]
        expected_conf_index: u64,
    },
    /// Promote a non-voter to voter.
    Promote {
        /// The group.
        #[arg(long)]
        group: u64,
        /// The replica.
        #[arg(long)]
        replica: u64,
        /// The configuration index last seen (0: any).
        #[arg(long, default_value_t = 0)]
        expected_conf_index: u64,
    },
    /// Remove a replica from a group.
    Remove {
        /// The group.
        #[arg(long)]
        group: u64,
        /// The replica.
        #[arg(long)]
        replica: u64,
        /// The configuration index last seen (0: any).
        #[arg(long, default_value_t = 0)]
        expected_conf_index: u64,
    },
    /// Move a group's leadership to a voter.
    Transfer {
        /// The group.
        #[arg(long)]
        group: u64,
        /// The voter to lead.
        #[arg(long)]
        to: u64,
    },
    /// Every node's identity and groups (or one node's with --endpoint).
    Status {
        /// Only this node.
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// Export a snapshot of a group to a file.
    Snapshot {
        /// The group.
        #[arg(long)]
        group: u64,
        /// Output file.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Install an exported snapshot as one node's replica of a group, with a new membership (repair a
    /// group that lost its quorum, or seed a new cluster). Run it on every new member, then `admin start
    /// --join` on each.
    Import {
        /// The node.
        #[arg(long)]
        endpoint: String,
        /// The group.
        #[arg(long)]
        group: u64,
        /// The replica id on that node.
        #[arg(long)]
        replica: u64,
        /// The new membership `id=host:port`, comma separated (voters; includes --replica).
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        /// The exported snapshot (`admin snapshot --out`).
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Start a replica of a KV group on one node.
    Start {
        /// The node.
        #[arg(long)]
        endpoint: String,
        /// The group.
        #[arg(long)]
        group: u64,
        /// The replica id on that node.
        #[arg(long)]
        replica: u64,
        /// Founding members `id=host:port`, comma separated (omit with --join).
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// The replica was added with `admin add`: it learns everything from the leader.
        #[arg(long)]
        join: bool,
        /// State machine.
        #[arg(long, value_enum, default_value = "memory")]
        state_machine: SmArg,
    },
    /// Stop a replica on one node.
    Stop {
        /// The node.
        #[arg(long)]
        endpoint: String,
        /// The group.
        #[arg(long)]
        group: u64,
        /// Also delete its data (only once it was removed from the group).
        #[arg(long)]
        remove_data: bool,
    },
}

fn print_members(m: &pb::MembershipResponse) {
    out!("group {} conf_index {} leader {} term {}", m.group, m.conf_index, m.leader, m.term);
    for x in &m.members {
        let role = pb::Role::try_from(x.role).map(|r| r.as_str_name()).unwrap_or("?");
        let lead = if x.replica == m.leader { " (leader)" } else { "" };
        out!(
            "  replica {} {} {}{lead}",
            x.replica,
            x.address,
            role.trim_start_matches("ROLE_").to_lowercase()
        );
    }
    if !m.removed.is_empty() {
        out!("  removed: {:?}", m.removed);
    }
}

/// `id=host:port` voters.
fn parse_members(members: &[String]) -> Result<Vec<pb::Member>> {
    let mut out = Vec::new();
    for m in members {
        let Some((id, addr)) = m.split_once('=') else { bail!("--members takes id=host:port, got {m}") };
        let id: u64 = id.parse().with_context(|| format!("replica id in {m}"))?;
        out.push(pb::Member { replica: id, address: addr.to_string(), role: pb::Role::Voter as i32 });
    }
    Ok(out)
}

/// A byte progress bar on stderr (hidden when stderr is not a terminal).
fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let style =
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

pub async fn run(a: AdminArgs) -> Result<()> {
    let c = a.client.client()?;
    match a.command {
        AdminCommand::Members { group } => print_members(&c.membership(group).await?),
        AdminCommand::Add { group, replica, address, role, expected_conf_index } => {
            let role = match role {
                RoleArg::Voter => pb::Role::Voter,
                RoleArg::NonVoter => pb::Role::NonVoter,
                RoleArg::Witness => pb::Role::Witness,
            };
            print_members(&c.add_replica(group, replica, &address, role, expected_conf_index).await?);
        }
        AdminCommand::Promote { group, replica, expected_conf_index } => {
            print_members(&c.promote_replica(group, replica, expected_conf_index).await?);
        }
        AdminCommand::Remove { group, replica, expected_conf_index } => {
            print_members(&c.remove_replica(group, replica, expected_conf_index).await?);
        }
        AdminCommand::Transfer { group, to } => {
            c.transfer_leader(group, to).await?;
            out!("transfer of group {group} to replica {to} requested");
        }
        AdminCommand::Status { endpoint } => {
            let endpoints = match endpoint {
                Some(e) => vec![e],
                None => c.endpoints().to_vec(),
            };
            for e in endpoints {
                match c.status(&e).await {
                    Ok(s) => {
                        let n = s.node.unwrap_or_default();
                        out!(
                            "node {} incarnation {} version {} ready {}",
                            n.address,
                            n.incarnation,
                            n.version,
                            n.ready
                        );
                        for g in s.groups {
                            if g.state != pb::ReplicaState::Running as i32 {
                                out!("  group {} replica {} STOPPED: {}", g.group, g.replica, g.stop_reason);
                                continue;
                            }
                            out!(
                                "  group {} replica {} leader {} term {} applied {} members {} {}",
                                g.group,
                                g.replica,
                                g.leader,
                                g.term,
                                g.applied_index,
                                g.members,
                                g.kind
                            );
                        }
                    }
                    Err(err) => out!("node {e}: unreachable: {err}"),
                }
            }
        }
        AdminCommand::Snapshot { group, out } => {
            let mut f =
                tokio::fs::File::create(&out).await.with_context(|| format!("creating {}", out.display()))?;
            let bar = progress_bar(0);
            let (index, bytes) = c
                .export_snapshot_with_progress(group, &mut f, |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .await?;
            f.sync_all().await?;
            bar.finish_and_clear();
            out!("group {group}: snapshot at index {index}, {bytes} bytes, written to {}", out.display());
        }
        AdminCommand::Import { endpoint, group, replica, members, file } => {
            let f =
                tokio::fs::File::open(&file).await.with_context(|| format!("opening {}", file.display()))?;
            let bar = progress_bar(f.metadata().await?.len());
            let target = pb::ImportSnapshotTarget { group, replica, members: parse_members(&members)? };
            let b = bar.clone();
            let r = c.import_snapshot(&endpoint, target, f, move |sent| b.set_position(sent)).await?;
            bar.finish_and_clear();
            out!(
                "group {group}: snapshot at index {} ({} bytes) installed as replica {replica} on {endpoint}; \
                 start it with `admin start --join`",
                r.index,
                r.bytes
            );
        }
        AdminCommand::Start { endpoint, group, replica, members, join, state_machine } => {
            let initial = parse_members(&members)?;
            let kind = match state_machine {
                SmArg::Memory => pb::StateMachineKind::KvMemory,
                SmArg::Disk => pb::StateMachineKind::KvDisk,
            };
            let req =
                pb::StartGroupRequest { group, replica, initial_members: initial, join, kind: kind as i32 };
            c.start_group(&endpoint, req).await?;
            out!("group {group}: replica {replica} started on {endpoint}");
        }
        AdminCommand::Stop { endpoint, group, remove_data } => {
            c.stop_group(&endpoint, group, remove_data).await?;
            out!("group {group}: stopped on {endpoint}");
        }
    }
    Ok(())
}
