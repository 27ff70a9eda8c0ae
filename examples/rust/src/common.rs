//! What every example shares: its command line, starting NodeHosts (three in one process, or one per
//! process on the network), waiting for a leader or for replicas to catch up, the console of the
//! three-process mode, and the byte format the state machines' snapshots use.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use drakkar::statemachine::SmError;
use drakkar::transport::InProcessNetwork;
use drakkar::{
    GroupConfig, GroupId, MemberRole, MembershipChange, NodeError, NodeHost, NodeHostConfig, ReplicaId,
    StartMode, StateMachineBox,
};
use drakkar_server::peer::{GrpcTransport, TransportConfig};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// How long a request of the examples may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// An example's command line: `--replica-id N` runs one replica in this process (start 1, 2 and 3 in
/// three terminals); without it the example runs all three replicas in this process and exits.
#[derive(Clone, Debug)]
pub struct Options {
    /// This process's replica (None: all three in one process).
    pub replica_id: Option<u64>,
    /// Where the data lives.
    pub data_dir: PathBuf,
    /// The port of replica 1 in the three-process mode; replica N listens on `port + N - 1`.
    pub port: u16,
    /// Start the replica as a new member joining the group (to be added with `add N` on the leader).
    pub join: bool,
}

impl Options {
    /// Parses `--replica-id N`, `--data-dir DIR`, `--port P` and `--join` from the process's arguments.
    pub fn from_args(example: &str, port: u16) -> Result<Options> {
        let mut o = Options {
            replica_id: None,
            data_dir: std::env::temp_dir().join(format!("drakkar-{example}")),
            port,
            join: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let mut value = || args.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--replica-id" => o.replica_id = Some(value()?.parse().context("--replica-id")?),
                "--data-dir" => o.data_dir = value()?.into(),
                "--port" => o.port = value()?.parse().context("--port")?,
                "--join" => o.join = true,
                _ => bail!("usage: {example} [--replica-id 1|2|3 [--join]] [--data-dir DIR] [--port P]"),
            }
        }
        Ok(o)
    }

    /// The address of replica `id` in the three-process mode.
    pub fn address(&self, id: u64) -> String {
        format!("127.0.0.1:{}", u64::from(self.port) + id - 1)
    }
}

/// Replicas 1, 2 and 3 at `address(1)`, `address(2)`, `address(3)`: the founding members.
pub fn members(address: impl Fn(u64) -> String) -> BTreeMap<ReplicaId, String> {
    (1..=3).map(|id| (ReplicaId(id), address(id))).collect()
}

/// The address of NodeHost `id` in the one-process mode (never dialled: the in-process network routes
/// by it).
pub fn local_address(id: u64) -> String {
    format!("127.0.0.1:{}", 7000 + id)
}

// ANCHOR: in_process
/// Starts NodeHost `id` of an in-process network, storing under `dir/node-<id>`. Calling it again after
/// [`NodeHost::close`] restarts that NodeHost on the same data.
pub fn start_local_host(net: &InProcessNetwork, dir: &Path, id: u64) -> Result<NodeHost> {
    let address = local_address(id);
    let cfg = NodeHostConfig::new(dir.join(format!("node-{id}")), address.clone());
    let host = NodeHost::new(cfg, net.transport())?;
    net.register(&address, host.sink());
    Ok(host)
}
// ANCHOR_END: in_process

// ANCHOR: networked
/// Starts this process's NodeHost on the network: it listens at `address` for its peers (plaintext:
/// fine on 127.0.0.1; give `serve_peers` a `NodeTls` elsewhere) and sends to them over gRPC. Cancel
/// the token to stop serving.
pub async fn start_networked_host(dir: &Path, address: &str) -> Result<(NodeHost, CancellationToken)> {
    let stop = CancellationToken::new();
    let transport =
        GrpcTransport::new(tokio::runtime::Handle::current(), None, TransportConfig::default(), stop.clone());
    let host = NodeHost::new(NodeHostConfig::new(dir, address), Arc::new(transport.clone()))?;
    transport.set_local(host.sink());
    let listener = tokio::net::TcpListener::bind(address).await?;
    tokio::spawn(drakkar_server::serve_peers(host.clone(), listener, None, stop.clone()));
    Ok((host, stop))
}
// ANCHOR_END: networked

/// Waits until `host` knows a leader of `group`; returns it.
pub async fn wait_for_leader(host: &NodeHost, group: GroupId) -> Result<ReplicaId> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some((leader, _term)) = host.leader(group)? {
            return Ok(leader);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("group {group} elected no leader within {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The NodeHost of `hosts` that runs the leader of `group` (`hosts[i]` runs replica `i + 1`).
pub async fn leader_host(hosts: &[NodeHost], group: GroupId) -> Result<&NodeHost> {
    let leader = wait_for_leader(&hosts[0], group).await?;
    let i = usize::try_from(leader.0 - 1)?;
    hosts.get(i).with_context(|| format!("the leader {leader} is not one of these hosts"))
}

/// Waits until the replica of `group` on `host` applied `index`.
pub async fn wait_applied(host: &NodeHost, group: GroupId, index: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while host.replica_info(group)?.applied.0 < index {
        if tokio::time::Instant::now() > deadline {
            bail!("group {group} on {} did not apply index {index} in time", host.info().address);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Waits until every replica of `group` on `hosts` applied what the most advanced one applied (each
/// acknowledged proposal was applied on the replica it went through, so that covers them all).
pub async fn wait_all_applied(hosts: &[NodeHost], group: GroupId) -> Result<()> {
    let mut index = 0;
    for h in hosts {
        index = index.max(h.replica_info(group)?.applied.0);
    }
    for h in hosts {
        wait_applied(h, group, index).await?;
    }
    Ok(())
}

/// Runs one replica of each of `groups` in this process, on the network, with a console on standard
/// input: a line is proposed as a command, except `get Q` (a linearizable read of query `Q`), `stale Q`
/// (a stale read), `add N` / `remove N` (membership, on the leader), `snapshot` and `quit`.
pub async fn run_process(
    o: &Options,
    groups: &[GroupId],
    gcfg: GroupConfig,
    mut state_machine: impl FnMut(GroupId, ReplicaId) -> Result<StateMachineBox>,
) -> Result<()> {
    let id = o.replica_id.context("--replica-id")?;
    let dir = o.data_dir.join(format!("replica-{id}"));
    let (host, stop) = start_networked_host(&dir, &o.address(id)).await?;
    for &g in groups {
        let mode = if o.join { StartMode::Joining } else { StartMode::Founding(members(|i| o.address(i))) };
        host.start_replica(g, ReplicaId(id), mode, state_machine(g, ReplicaId(id))?, gcfg.clone())?;
    }
    println!("replica {id} listening at {}; data in {}", o.address(id), dir.display());
    println!(
        "type a command (e.g. `set k v`), `get Q`, `stale Q`, `add N`, `remove N`, `snapshot` or `quit`"
    );
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l?,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(line) = line else { break };
        let line = line.trim();
        if line == "quit" {
            break;
        }
        if !line.is_empty() {
            // The first group takes the console's requests.
            match console(&host, groups[0], o, line).await {
                Ok(answer) => println!("{answer}"),
                Err(e) => println!("error: {e:#}"),
            }
        }
    }
    stop.cancel();
    host.close();
    Ok(())
}

/// Serves one console line (see [`run_process`]).
async fn console(host: &NodeHost, group: GroupId, o: &Options, line: &str) -> Result<String> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let id = || rest.trim().parse::<u64>().context("a replica id");
    let done = |r: std::result::Result<drakkar::statemachine::SmResult, NodeError>| match r {
        Err(NodeError::NoLeader { .. }) => bail!("not the leader: run it on the leader's console"),
        r => Ok(format!("done at log index {}", r?.value)),
    };
    Ok(match word {
        "get" => text(&host.read(group, Bytes::copy_from_slice(rest.as_bytes()), TIMEOUT).await?),
        "stale" => text(&host.stale_read(group, rest.as_bytes())?),
        "snapshot" => format!("snapshot at index {}", host.request_snapshot(group, None, TIMEOUT).await?),
        "add" => {
            let (replica, address) = (ReplicaId(id()?), o.address(id()?));
            let add = MembershipChange::Add { replica, address, role: MemberRole::Voter };
            done(change(host, group, add).await)?
        }
        "remove" => done(change(host, group, MembershipChange::Remove(ReplicaId(id()?))).await)?,
        _ => {
            let r = host.propose(group, Bytes::copy_from_slice(line.as_bytes()), TIMEOUT).await?;
            format!(
                "ok (result {}{})",
                r.value,
                if r.data.is_empty() { String::new() } else { format!(", {}", text(&r.data)) }
            )
        }
    })
}

/// Proposes a membership change and waits for it (refused with `NoLeader` unless this is the leader).
async fn change(
    host: &NodeHost,
    group: GroupId,
    change: MembershipChange,
) -> std::result::Result<drakkar::statemachine::SmResult, NodeError> {
    host.change_membership(group, change, 0)?.wait(TIMEOUT).await
}

/// Bytes shown as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes one length-prefixed field of a snapshot (u32 little-endian length, then the bytes).
pub fn write_field(w: &mut dyn Write, b: &[u8]) -> Result<(), SmError> {
    let len = u32::try_from(b.len()).map_err(|_| SmError::Other("a field over 4 GiB".into()))?;
    w.write_all(&len.to_le_bytes())?;
    Ok(w.write_all(b)?)
}

/// Reads one field written by [`write_field`]; None at the end of the stream.
pub fn read_field(r: &mut dyn Read) -> Result<Option<Vec<u8>>, SmError> {
    let mut len = [0; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut b = vec![0; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut b)?;
    Ok(Some(b))
}

/// Reads a key and its value written by two [`write_field`] calls; None at the end of the stream.
pub fn read_pair(r: &mut dyn Read) -> Result<Option<(String, String)>, SmError> {
    let Some(k) = read_field(r)? else { return Ok(None) };
    let v = read_field(r)?.ok_or_else(|| SmError::Other("a key without its value".into()))?;
    let utf8 = |b: Vec<u8>| String::from_utf8(b).map_err(|_| SmError::Other("not UTF-8".into()));
    Ok(Some((utf8(k)?, utf8(v)?)))
}

/// A command of the key-value examples, as typed: `set KEY VALUE`, `del KEY` or `incr KEY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Sets a key.
    Set(String, String),
    /// Deletes a key.
    Del(String),
    /// Adds one to a key's number (0 when absent).
    Incr(String),
}

impl Command {
    /// Parses a command; None for anything else (applied as a no-op that answers an error, identically
    /// on every replica: a state machine must never fail on a user's bad input).
    pub fn parse(cmd: &[u8]) -> Option<Command> {
        let s = std::str::from_utf8(cmd).ok()?;
        let mut f = s.splitn(3, ' ');
        match (f.next()?, f.next()?, f.next()) {
            ("set", k, Some(v)) => Some(Command::Set(k.into(), v.into())),
            ("del", k, None) => Some(Command::Del(k.into())),
            ("incr", k, None) => Some(Command::Incr(k.into())),
            _ => None,
        }
    }

    /// The command as typed.
    pub fn encode(&self) -> Bytes {
        Bytes::from(match self {
            Command::Set(k, v) => format!("set {k} {v}"),
            Command::Del(k) => format!("del {k}"),
            Command::Incr(k) => format!("incr {k}"),
        })
    }
}
