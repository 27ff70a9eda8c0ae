//! A local cluster of `drakkar serve` processes for `drakkar check --local`, with the handles the
//! nemeses need: kill -9 and restart, SIGSTOP / SIGCONT, a TCP proxy in front of every founding node
//! whose links can be cut per sending node, and a spare node for membership changes.
//!
//! Every node gets its own TLS certificate from a development CA (`drakkar cert dev`). With proxies, a
//! founding node listens on its real address but advertises its proxy's, and every node's `--peers`
//! lists the proxies: the nodes agree on each other's addresses, everything between them passes through
//! the receiver's proxy, and cutting links there partitions them (see [`crate::proxy`]); clients talk
//! to the real addresses.
//! Nodes start through [`crate::process`], their logs appended to `DIR/node-N.log`; every process is
//! killed (by its PID) when the cluster is dropped. `DIR/nodes.txt` lists each node's address and
//! Prometheus metrics URL. For the disk-full nemesis each node's data directory is its own small tmpfs
//! (mounted here, which needs root; unmounted when the cluster is dropped), so filling one node's disk
//! is quick and touches nothing else.
//!
//! For the slow-disk and power-loss nemeses ([`LocalOptions::lazyfs`]) each node's data directory is a
//! [`drakkar_lazyfs`] mount (FUSE, served by threads of this process; needs root and `/dev/fuse`) of
//! `DIR/node-N.disk`: fsyncs can be delayed, and unsynced writes discarded when the node is killed.
//! The mounts are unmounted when the cluster is dropped, after its processes are killed.
//!
//! With [`LocalOptions::netns`] (root), each node runs in its own network namespace instead
//! ([`crate::netns`]): it listens on its own address (`198.19.N.11`, `.12`, ...; port 7100, metrics
//! 9100), its certificate names that address, there are no proxies, and network faults are packet
//! filters ([`LocalCluster::net_fault`]). The namespaces and the bridge are removed when the cluster is
//! dropped, after its processes are killed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use drakkar_client::{Client, ClientConfig, pb, tls};
use drakkar_lazyfs::{LazyMount, PowerLoss};

use crate::netns::{NetFault, Topology};
use crate::process::{LOG_FILTER_VAR, Launch, NodeProcess};
use crate::proxy::{NodeProxy, Pids};

/// What to start.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The `drakkar` binary (normally `std::env::current_exe()`).
    pub exe: PathBuf,
    /// Working directory: certificates, data directories, logs.
    pub dir: PathBuf,
    /// Founding nodes.
    pub nodes: usize,
    /// KV groups.
    pub groups: u64,
    /// `memory` or `disk`.
    pub state_machine: String,
    /// Raft tick in milliseconds.
    pub tick_ms: u64,
    /// Start a spare node (not a founding member) for membership changes.
    pub spare: bool,
    /// Route the traffic between nodes through a cuttable proxy in front of each founding node (for
    /// partitions); otherwise nodes talk directly.
    pub proxies: bool,
    /// Put each node's data directory on its own tmpfs of this many bytes (for the disk-full nemesis;
    /// needs root to mount).
    pub disk_limit: Option<u64>,
    /// Put each node's data directory on its own [`drakkar_lazyfs`] mount (for the slow-disk and
    /// power-loss nemeses; needs root and `/dev/fuse`). With `disk_limit` too, the tmpfs holds the
    /// backing directory.
    pub lazyfs: bool,
    /// Start a replica node (after the spare, never faulted) that [`LocalCluster::add_replica_roles`]
    /// gives a non-voter and a witness replica, for the `replicas` workload.
    pub replica_node: bool,
    /// Run each node in its own network namespace (needs root; see [`crate::netns`]). Takes the place
    /// of the proxies: partitions are then packet filters.
    pub netns: bool,
}

/// A node's client port inside its own network namespace.
const NETNS_PORT: u16 = 7100;
/// A node's metrics port inside its own network namespace.
const NETNS_METRICS_PORT: u16 = 9100;

/// A node of the cluster: how it is started and, while it runs, its process.
struct Node {
    data_dir: PathBuf,
    /// Where the data directory's files really are, when it is a [`drakkar_lazyfs`] mount.
    backing: Option<PathBuf>,
    addr: SocketAddr,
    launch: Launch,
    process: Option<NodeProcess>,
}

impl Node {
    fn name(&self) -> &str {
        self.launch.name()
    }

    fn spawn(&mut self) -> Result<()> {
        self.process = Some(self.launch.spawn()?);
        Ok(())
    }

    fn signal(&self, signal: &str) -> Result<()> {
        let Some(p) = &self.process else { bail!("{} is not running", self.name()) };
        Ok(p.signal(signal)?)
    }

    /// SIGKILL and reap (what dropping the process does).
    fn kill9(&mut self) {
        self.process = None;
    }
}

/// Replica id of the replica node's non-voter (founding replicas are 1..=nodes, the membership
/// nemesis' from 100).
const REPLICA_NON_VOTER: u64 = 50;
/// Replica id of the replica node's witness.
const REPLICA_WITNESS: u64 = 51;

/// The replica node of a local cluster and what it holds.
#[derive(Clone, Debug)]
pub struct ReplicaNode {
    /// Its name (`node-5`).
    pub name: String,
    /// Its client address.
    pub addr: String,
    /// Per group: the replica id and its role there.
    pub replicas: Vec<(u64, u64, pb::Role)>,
    /// Whether it reported itself ready within 5 s of catching up.
    pub ready: bool,
}

/// A running local cluster.
pub struct LocalCluster {
    opts: LocalOptions,
    certs: PathBuf,
    nodes: Vec<Node>,
    /// The proxy in front of each founding node (empty without proxies).
    proxies: Vec<NodeProxy>,
    /// The proxy in front of the replica node (with proxies), so that isolating a founding node cuts
    /// its links to the replica node too: otherwise an isolated leader could still send to the
    /// replica node's witness (and not hear back), a one-way link instead of a partition.
    replica_proxy: Option<NodeProxy>,
    /// Each node's process id, for the proxies to tell senders apart.
    pids: Pids,
    /// tmpfs mounts made here, unmounted on drop.
    mounts: Vec<PathBuf>,
    /// The namespaces of the nodes (with `netns`); dropped after the processes are killed.
    topology: Option<Topology>,
    /// Each node's lazy filesystem (with `lazyfs`), unmounted after the processes are killed.
    disks: Vec<LazyMount>,
}

/// A proxy in front of `target` whose own port is none of `ports` (which the nodes are about to bind).
async fn start_proxy(target: SocketAddr, pids: &Pids, ports: &[SocketAddr]) -> Result<NodeProxy> {
    loop {
        let p = NodeProxy::start(target, pids.clone()).await.context("starting a proxy")?;
        if !ports.contains(&p.addr()) {
            return Ok(p);
        }
    }
}

/// `n` distinct free ports of 127.0.0.1 (all held open while choosing, so none repeats).
fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port"))
        .collect::<Result<_>>()?;
    held.iter().map(|l| l.local_addr().context("a free port")).collect()
}

impl LocalCluster {
    /// Creates the certificates, proxies and nodes, and waits until every group has a leader and every
    /// founding node is caught up (up to 60 s).
    pub async fn start(opts: LocalOptions) -> Result<LocalCluster> {
        if opts.nodes == 0 || opts.groups == 0 {
            bail!("a local cluster needs at least one node and one group");
        }
        std::fs::create_dir_all(&opts.dir).with_context(|| format!("creating {}", opts.dir.display()))?;
        let certs = opts.dir.join("certs");
        let total = opts.nodes + usize::from(opts.spare) + usize::from(opts.replica_node);
        let topology = if opts.netns { Some(Topology::create(total)?) } else { None };
        let (ports, metrics_addrs) = match &topology {
            Some(t) => {
                issue_certs(&opts.exe, &certs, t)?;
                let at = |port| (0..total).map(|i| SocketAddr::from((t.ip(i), port))).collect::<Vec<_>>();
                (at(NETNS_PORT), at(NETNS_METRICS_PORT))
            }
            None => {
                let out = Command::new(&opts.exe)
                    .args(["cert", "dev", "--out"])
                    .arg(&certs)
                    .args(["--nodes", &total.to_string()])
                    .output()
                    .context("running `drakkar cert dev`")?;
                if !out.status.success() {
                    bail!("`drakkar cert dev` failed: {}", String::from_utf8_lossy(&out.stderr));
                }
                // Client ports, then metrics ports.
                let mut ports = free_addrs(2 * total)?;
                let metrics = ports.split_off(total);
                (ports, metrics)
            }
        };
        let addrs = &ports[..];
        // The nodes, then this process (its clients may follow a leader hint to a proxy).
        let mut known = vec![None; total];
        known.push(Some(std::process::id()));
        let pids: Pids = Arc::new(std::sync::Mutex::new(known));
        let mut proxies = Vec::new();
        for addr in addrs.iter().take(opts.nodes).filter(|_| opts.proxies && !opts.netns) {
            // A proxy's own port must not be one the nodes are about to bind.
            let proxy = loop {
                let p = NodeProxy::start(*addr, pids.clone()).await.context("starting a proxy")?;
                if !ports.contains(&p.addr()) && !metrics_addrs.contains(&p.addr()) {
                    break p;
                }
            };
            proxies.push(proxy);
        }
        let replica_index = opts.nodes + usize::from(opts.spare);
        let replica_proxy = match opts.proxies && !opts.netns && opts.replica_node {
            true => Some(start_proxy(addrs[replica_index], &pids, &ports).await?),
            false => None,
        };
        // What the nodes call each other: the proxies, if any.
        let advertised: Vec<String> = (0..total)
            .map(|i| match (&replica_proxy, proxies.get(i)) {
                (Some(p), _) if i == replica_index => p.addr().to_string(),
                (_, Some(p)) => p.addr().to_string(),
                _ => addrs[i].to_string(),
            })
            .collect();
        let peers = advertised[..opts.nodes].join(",");
        let mut nodes = Vec::new();
        let mut metrics_lines = String::new();
        for (i, addr) in addrs.iter().enumerate() {
            let name = format!("node-{}", i + 1);
            let data_dir = opts.dir.join(&name);
            let mut args: Vec<String> = [
                "serve",
                "--data-dir",
                &data_dir.display().to_string(),
                "--listen",
                &addr.to_string(),
                "--advertise",
                &advertised[i],
                "--peers",
                &peers,
                "--kv-groups",
                &opts.groups.to_string(),
                "--state-machine",
                &opts.state_machine,
                "--tick-ms",
                &opts.tick_ms.to_string(),
                "--tls-ca",
                &certs.join("ca.pem").display().to_string(),
                "--tls-cert",
                &certs.join(format!("{name}.pem")).display().to_string(),
                "--tls-key",
                &certs.join(format!("{name}-key.pem")).display().to_string(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let metrics = metrics_addrs[i];
            args.extend(["--metrics-listen".to_string(), metrics.to_string()]);
            metrics_lines.push_str(&format!("{name} {addr} http://{metrics}/metrics\n"));
            // Appended to: a restarted node keeps its earlier lines.
            let mut launch = Launch::new(&name, &opts.exe, opts.dir.join(format!("{name}.log")))
                .args(args)
                .append_log(true);
            if let Some(t) = &topology {
                launch = launch.netns(t.namespace(i));
            }
            if std::env::var_os(LOG_FILTER_VAR).is_none() {
                launch = launch.log_filter("info");
            }
            let backing = opts.lazyfs.then(|| opts.dir.join(format!("{name}.disk")));
            nodes.push(Node { data_dir, backing, addr: *addr, launch, process: None });
        }
        // Where to look while it runs: `name address metrics-url` per node.
        std::fs::write(opts.dir.join("nodes.txt"), metrics_lines).context("writing nodes.txt")?;
        let mut cluster = LocalCluster {
            opts,
            certs,
            nodes,
            proxies,
            replica_proxy,
            pids,
            mounts: Vec::new(),
            topology,
            disks: Vec::new(),
        };
        if let Some(limit) = cluster.opts.disk_limit {
            cluster.mount_disks(limit)?;
        }
        if cluster.opts.lazyfs {
            cluster.mount_lazyfs()?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.nodes[i].spawn()?;
            cluster.note_pid(i);
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// The founding nodes' client addresses.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes[..self.opts.nodes].iter().map(|n| n.addr.to_string()).collect()
    }

    /// Founding nodes.
    pub fn founding(&self) -> usize {
        self.opts.nodes
    }

    /// The spare node's address, when there is one.
    pub fn spare(&self) -> Option<String> {
        self.opts.spare.then(|| self.nodes[self.opts.nodes].addr.to_string())
    }

    /// The CA certificate clients trust.
    pub fn ca(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    /// A client of these endpoints with the cluster's CA and its admin certificate (the checker plays the
    /// operator too: it adds replicas).
    pub fn client_config(&self, endpoints: Vec<String>) -> Result<ClientConfig> {
        let identity = (self.certs.join("admin.pem"), self.certs.join("admin-key.pem"));
        let c = tls::client_config_from_files(&self.ca(), Some((&identity.0, &identity.1)))?;
        Ok(ClientConfig::new(endpoints).with_tls(Arc::new(Arc::new(c))))
    }

    /// The name of node `i` (`node-1`, ...).
    pub fn name(&self, i: usize) -> &str {
        self.nodes[i].name()
    }

    /// Records node `i`'s process id (or its absence) for the proxies.
    fn note_pid(&self, i: usize) {
        let pid = self.nodes[i].process.as_ref().map(NodeProcess::pid);
        self.pids.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = pid;
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill9();
        self.note_pid(i);
    }

    /// Starts node `i` again with the same flags and data directory.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.nodes[i].kill9();
        let spawned = self.nodes[i].spawn();
        self.note_pid(i);
        spawned
    }

    /// SIGSTOP node `i`.
    pub fn pause(&self, i: usize) -> Result<()> {
        self.nodes[i].signal("STOP")
    }

    /// SIGCONT node `i`.
    pub fn resume(&self, i: usize) -> Result<()> {
        self.nodes[i].signal("CONT")
    }

    /// Cuts every link to and from founding node `i`, with connection resets: nothing reaches its
    /// proxy, and its connections to the other nodes' proxies are closed (with namespaces: TCP between
    /// it and its peers refused with resets, [`NetFault::ResetPartition`]). Clients still reach it.
    pub fn isolate(&self, i: usize) -> Result<()> {
        if let Some(t) = &self.topology {
            return Ok(t.apply(i, NetFault::ResetPartition)?);
        }
        if self.proxies.is_empty() {
            bail!("the cluster was started without proxies: no partition possible");
        }
        for (j, p) in self.proxies.iter().enumerate() {
            if j == i {
                p.set_cut_all(true);
            } else {
                p.set_cut_from(i, true);
            }
        }
        if let Some(p) = &self.replica_proxy {
            p.set_cut_from(i, true);
        }
        Ok(())
    }

    /// Applies a packet-filter fault to node `i` (needs [`LocalOptions::netns`]).
    pub fn net_fault(&self, i: usize, fault: NetFault) -> Result<()> {
        let Some(t) = &self.topology else {
            bail!("{fault:?} needs the nodes in network namespaces (--netns)")
        };
        Ok(t.apply(i, fault)?)
    }

    /// Whether the nodes run in network namespaces.
    pub fn netns(&self) -> bool {
        self.topology.is_some()
    }

    /// Heals every link (the proxies' and the packet filters').
    pub fn heal(&self) -> Result<()> {
        self.proxies.iter().chain(&self.replica_proxy).for_each(NodeProxy::heal);
        if let Some(t) = &self.topology {
            t.heal()?;
        }
        Ok(())
    }

    /// Connections through the proxies whose sender was neither a node nor this process (expected 0:
    /// such a connection escapes a partition of its sender).
    pub fn unidentified_connections(&self) -> u64 {
        self.proxies.iter().chain(&self.replica_proxy).map(NodeProxy::unidentified).sum()
    }

    /// Mounts a tmpfs of `limit` bytes on every node's data directory.
    fn mount_disks(&mut self, limit: u64) -> Result<()> {
        for n in &self.nodes {
            let dir = n.backing.as_ref().unwrap_or(&n.data_dir);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={limit},mode=0700"), "drakkar-check"])
                .arg(dir)
                .output()
                .context("running mount (the disk-full nemesis needs root and mount)")?;
            if !out.status.success() {
                bail!(
                    "the disk-full nemesis gives each node a small tmpfs, which needs root: mount {} failed: {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            self.mounts.push(dir.clone());
        }
        Ok(())
    }

    /// Mounts a [`drakkar_lazyfs`] view of every node's backing directory on its data directory.
    fn mount_lazyfs(&mut self) -> Result<()> {
        for n in &self.nodes {
            let Some(backing) = &n.backing else { continue };
            std::fs::create_dir_all(backing).with_context(|| format!("creating {}", backing.display()))?;
            let disk = LazyMount::mount(backing, &n.data_dir).with_context(|| {
                format!(
                    "the slow-disk and power-loss nemeses put each node's data directory on a FUSE \
                     filesystem, which needs root and /dev/fuse: mounting {} failed",
                    n.data_dir.display()
                )
            })?;
            self.disks.push(disk);
        }
        Ok(())
    }

    fn disk(&self, i: usize) -> Result<&LazyMount> {
        self.disks.get(i).context("the nodes' data directories are not on drakkar-lazyfs mounts")
    }

    /// Delays every fsync of node `i` by `delay` from now on (`Duration::ZERO`: heals).
    pub fn slow_disk(&self, i: usize, delay: Duration) -> Result<()> {
        self.disk(i)?.set_fsync_delay(delay);
        Ok(())
    }

    /// Node `i` loses power: its disk stops taking writes, the node is killed (SIGKILL, reaped), and
    /// everything it wrote but did not fsync is discarded. Start it again with
    /// [`LocalCluster::restart`].
    pub fn power_loss(&mut self, i: usize) -> Result<PowerLoss> {
        let disk = self.disk(i)?;
        disk.cut_power();
        self.nodes[i].kill9();
        self.note_pid(i);
        let disk = self.disk(i)?;
        let lost = disk.restore_power();
        lost.with_context(|| format!("discarding the unsynced writes of {}", self.nodes[i].name()))
    }

    fn ballast(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.join("drakkar-check-ballast")
    }

    /// Fills node `i`'s disk (its tmpfs) until writes fail with "no space left"; returns the bytes added.
    pub fn fill_disk(&self, i: usize) -> Result<u64> {
        use std::io::Write;
        let Some(limit) = self.opts.disk_limit else { bail!("the nodes' disks are not limited") };
        let path = self.ballast(i);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let mut written = 0u64;
        // Large chunks, then pages, so that not even a page is left.
        for chunk in [1usize << 20, 4096] {
            let buf = vec![0u8; chunk];
            while written <= limit {
                match f.write(&buf) {
                    Ok(0) => break,
                    Ok(n) => written += n as u64,
                    Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                    Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
                }
            }
        }
        Ok(written)
    }

    /// Frees what [`LocalCluster::fill_disk`] took.
    pub fn free_disk(&self, i: usize) -> Result<()> {
        let path = self.ballast(i);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }

    /// How node `i` ended, if it exited by itself (it is not running and was not killed here).
    pub fn exited(&mut self, i: usize) -> Option<String> {
        let status = self.nodes[i].process.as_mut()?.exit_status()?;
        self.nodes[i].process = None;
        self.note_pid(i);
        Some(status.to_string())
    }

    /// The replica node's index and address, when there is one.
    fn replica_node(&self) -> Option<(usize, String)> {
        let i = self.opts.nodes + usize::from(self.opts.spare);
        self.opts.replica_node.then(|| (i, self.nodes[i].addr.to_string()))
    }

    /// Gives the replica node a non-voter replica of `groups[0]` and a witness replica of `groups[1]`
    /// (when there is a second group), through the Admin API (`AddReplica`, then `StartGroup` with
    /// `join`), and waits until it applied its own addition in every group (so it knows its roles).
    /// Returns the node's name, its address, per group its replica id and role, and whether it then
    /// reported itself ready within 5 s.
    pub async fn add_replica_roles(&self, groups: &[u64]) -> Result<ReplicaNode> {
        let Some((i, addr)) = self.replica_node() else { bail!("the local cluster has no replica node") };
        // Members know it by the address it advertises (its proxy's, with proxies); clients use its own.
        let advertised = self.replica_proxy.as_ref().map_or_else(|| addr.clone(), |p| p.addr().to_string());
        let mut cfg = self.client_config(self.endpoints())?;
        cfg.request_timeout = Duration::from_secs(3);
        cfg.retry_for = Duration::from_secs(20);
        let admin = Client::new(cfg)?;
        let kind = if self.opts.state_machine == "disk" {
            pb::StateMachineKind::KvDisk
        } else {
            pb::StateMachineKind::KvMemory
        };
        let roles = [(REPLICA_NON_VOTER, pb::Role::NonVoter), (REPLICA_WITNESS, pb::Role::Witness)];
        let mut replicas = Vec::new();
        // Per group, the configuration index of the replica's addition.
        let mut added = Vec::new();
        for (&group, (replica, role)) in groups.iter().zip(roles) {
            let m = admin
                .add_replica(group, replica, &advertised, role, 0)
                .await
                .with_context(|| format!("adding replica {replica} of group {group} as {role:?}"))?;
            let req = pb::StartGroupRequest {
                group,
                replica,
                initial_members: vec![],
                join: true,
                kind: kind as i32,
            };
            admin
                .start_group(&addr, req)
                .await
                .with_context(|| format!("starting replica {replica} of group {group} on {addr}"))?;
            replicas.push((group, replica, role));
            added.push((group, m.conf_index));
        }
        // Until a joining replica has applied its own addition it does not know its role (a witness
        // would not know to forward): wait for that, per group, as an operator would.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = admin.status(&addr).await;
            let caught_up = status.as_ref().is_ok_and(|st| {
                added.iter().all(|&(group, conf_index)| {
                    st.groups.iter().any(|g| g.group == group && g.leader != 0 && g.conf_index >= conf_index)
                })
            });
            if caught_up {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the replica node {addr} did not catch up within 30 s: {status:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Its readiness (`/readyz`, `NodeInfo.ready`), as a load balancer would see it: probed by the
        // node every second.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let ready = loop {
            match admin.node_info(&addr).await {
                Ok(info) if info.ready => break true,
                _ if tokio::time::Instant::now() > deadline => break false,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        Ok(ReplicaNode { name: self.nodes[i].name().to_string(), addr, replicas, ready })
    }

    /// Node logs, for a report.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.launch.log_path().to_path_buf()).collect()
    }

    /// Waits until every founding node reports itself ready (every group it runs has a leader and it
    /// caught up).
    pub async fn wait_ready(&self, within: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut cfg = self.client_config(self.endpoints())?;
        cfg.request_timeout = Duration::from_secs(2);
        let client = Client::new(cfg)?;
        loop {
            let mut not_ready = Vec::new();
            for (i, ep) in self.endpoints().iter().enumerate() {
                match client.node_info(ep).await {
                    Ok(info) if info.ready && info.kv_groups.len() as u64 >= self.opts.groups => {}
                    Ok(_) => not_ready.push(format!("{} ({ep}) not caught up", self.nodes[i].name())),
                    Err(e) => not_ready.push(format!("{} ({ep}): {e}", self.nodes[i].name())),
                }
            }
            if not_ready.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the local cluster is not ready after {within:?}: {} (logs in {})",
                    not_ready.join(", "),
                    self.opts.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A CA, per node a certificate naming its namespace address (and loopback), and an admin certificate,
/// with `drakkar cert`.
fn issue_certs(exe: &Path, certs: &Path, t: &Topology) -> Result<()> {
    let drakkar = |args: &[String]| -> Result<()> {
        let out = Command::new(exe).args(args).output().context("running `drakkar cert`")?;
        if !out.status.success() {
            bail!("`drakkar {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    };
    let dir = certs.display().to_string();
    drakkar(&["cert".into(), "ca".into(), "--out".into(), dir.clone()])?;
    let n = t.nodes();
    for (i, name) in (0..n).map(|i| (i, format!("node-{}", i + 1))).chain([(n, "admin".to_string())]) {
        let mut args: Vec<String> =
            ["cert", "issue", "--ca-dir", &dir, "--name", &name].map(String::from).into();
        if i < n {
            args.extend(["--san".into(), format!("{},localhost,127.0.0.1", t.ip(i))]);
        } else {
            args.extend(["--kind".into(), "admin".into()]);
        }
        drakkar(&args)?;
    }
    Ok(())
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            // A stopped process dies of SIGKILL too.
            n.kill9();
        }
        // The lazy filesystems before the tmpfs that may hold their backing directories.
        for d in self.disks.drain(..) {
            if let Err(e) = d.unmount() {
                tracing::warn!(error = %e, "unmounting a lazy filesystem");
            }
        }
        for m in &self.mounts {
            if !Command::new("umount").arg(m).status().is_ok_and(|s| s.success()) {
                // Still busy (a process in its last moments): detach it now, freed once unused.
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
        }
    }
}
