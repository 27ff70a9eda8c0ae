//! Network namespaces for `drakkar check --local --netns`: each node in its own namespace, so network
//! faults are packet filters (iptables) rather than proxies that reset connections.
//!
//! ```text
//!   host (the check's clients, 198.19.N.1)
//!     └─ bridge dkcN ─┬─ veth ─ namespace drakkar-check-N-1 (eth0 198.19.N.11) node-1
//!                     ├─ veth ─ namespace drakkar-check-N-2 (eth0 198.19.N.12) node-2
//!                     └─ ...
//! ```
//!
//! - Addresses come from 198.19.0.0/16 (RFC 2544 benchmarking space, routed nowhere; the other half,
//!   198.18.0.0/16, holds the Kubernetes harness's 198.18.0.0/24), one /24 per topology: `N` is 1 to
//!   254, skipping any /24 a route of the host overlaps. Creating the bridge `dkcN` claims `N`, so
//!   concurrent runs (tests run in parallel) never share one.
//! - Faults are rules in a chain of its own (`drakkar-check`, jumped to from `INPUT`) in the namespace
//!   that *receives* the packets. Dropping on receipt keeps every fault silent to the sender: a packet
//!   dropped in a sender's `OUTPUT` would fail its `connect()` with `EPERM` at once, which no real network
//!   does. [`NetFault`] says which packets each fault drops.
//! - Everything is removed on drop (the namespaces, which takes their veths and rules, then the bridge).
//!   The caller kills the processes in the namespaces first.
//! - Needs root (`CAP_NET_ADMIN`), `ip` (iproute2) and `iptables`.

use std::net::Ipv4Addr;
use std::process::Command;

/// The first two octets of every address used here.
pub const PREFIX: [u8; 2] = [198, 19];
/// The host's address in a topology is `198.19.N.1`; node `i` (from 0) is `198.19.N.(NODE_BASE + 1 + i)`.
pub const NODE_BASE: u8 = 10;
/// The chain holding a namespace's fault rules.
const CHAIN: &str = "drakkar-check";

/// What went wrong setting up or changing a topology.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// Namespaces and packet filters need root.
    #[error("--netns needs root (CAP_NET_ADMIN): it creates network namespaces, a bridge and iptables rules")]
    NotRoot,
    /// A command this module runs is not installed.
    #[error("--netns needs the `{0}` command (apt-get install iproute2 iptables)")]
    Missing(&'static str),
    /// Every /24 of 198.19.0.0/16 is taken by a route or another topology.
    #[error("no free 198.19.N.0/24 for a topology (every N is routed or has a dkcN bridge)")]
    NoSubnet,
    /// A node index outside the topology.
    #[error("no node {0} in this topology")]
    NoNode(usize),
    /// A command failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and stderr, or why it did not start.
        output: String,
    },
}

/// A network fault on one node, as packets dropped (or refused) on receipt. "Peers" are the other nodes
/// of the topology; the host (the check's clients) is not a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetFault {
    /// Every packet between the node and its peers dropped, both ways; the host still reaches it.
    SilentPartition,
    /// Every packet to and from the node dropped, the host's too.
    Isolate,
    /// Packets from the peers to the node dropped (inbound cut); the node's own packets still arrive.
    InboundCut,
    /// Packets from the node to its peers dropped (outbound cut); theirs still reach it.
    OutboundCut,
    /// TCP between the node and its peers refused with a reset, both ways (what the proxies of
    /// `partition` do without namespaces: connections break at once).
    ResetPartition,
}

/// One node's place in the topology.
#[derive(Debug)]
struct NodeNet {
    ns: String,
    ip: Ipv4Addr,
}

/// A bridge and one namespace per node. Dropping it removes them.
#[derive(Debug)]
pub struct Topology {
    subnet: u8,
    bridge: String,
    nodes: Vec<NodeNet>,
}

/// Runs `program args`, an error with its stderr if it fails.
fn run(program: &str, args: &[&str]) -> Result<(), NetnsError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetnsError::Command { command: command.clone(), output: e.to_string() })?;
    if !out.status.success() {
        let output = format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        return Err(NetnsError::Command { command, output });
    }
    Ok(())
}

/// Whether this process runs as root (effective uid 0, from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
            .unwrap_or(false)
    })
}

/// Whether `program` can be started (it is on the PATH).
fn installed(program: &str) -> bool {
    Command::new(program).arg("-V").output().is_ok() || Command::new(program).arg("help").output().is_ok()
}

/// Checks what [`Topology::create`] needs: root, `ip` and `iptables`.
pub fn preflight() -> Result<(), NetnsError> {
    if !is_root() {
        return Err(NetnsError::NotRoot);
    }
    for p in ["ip", "iptables"] {
        if !installed(p) {
            return Err(NetnsError::Missing(p));
        }
    }
    Ok(())
}

/// The third octets the host's routes already cover within 198.19.0.0/16 (`ip -4 route`).
fn routed_subnets() -> Result<Vec<u8>, NetnsError> {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map_err(|e| NetnsError::Command { command: "ip -4 route".into(), output: e.to_string() })?;
    Ok(taken_subnets(&String::from_utf8_lossy(&out.stdout)))
}

/// The third octets `N` of the 198.19.N.0/24 that the routes of `ip -4 route` output overlap. A route's
/// destination is its first word after an optional type (`local`, `broadcast`, ...); `default` covers
/// nothing here (it is how every address not routed elsewhere leaves).
fn taken_subnets(routes: &str) -> Vec<u8> {
    let base = u32::from_be_bytes([PREFIX[0], PREFIX[1], 0, 0]);
    let mut taken = Vec::new();
    for line in routes.lines() {
        let mut words = line.split_whitespace();
        let mut dest = words.next().unwrap_or("");
        if matches!(
            dest,
            "unicast"
                | "local"
                | "broadcast"
                | "multicast"
                | "blackhole"
                | "unreachable"
                | "prohibit"
                | "throw"
        ) {
            dest = words.next().unwrap_or("");
        }
        let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
        let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u32>()) else { continue };
        if len > 32 {
            continue;
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let net = u32::from(addr) & mask;
        // The /24s of 198.19.0.0/16 this route overlaps.
        for n in 0..=255u32 {
            let sub = base | (n << 8);
            let overlaps = if len <= 24 { sub & mask == net } else { net & 0xffff_ff00 == sub };
            if overlaps && !taken.contains(&(n as u8)) {
                taken.push(n as u8);
            }
        }
    }
    taken
}

impl Topology {
    /// Creates a bridge on the host and `nodes` namespaces attached to it, each with its loopback up
    /// and an empty fault chain. Everything made so far is removed if a step fails.
    pub fn create(nodes: usize) -> Result<Topology, NetnsError> {
        preflight()?;
        if nodes == 0 || nodes > 200 {
            return Err(NetnsError::NoNode(nodes));
        }
        let taken = routed_subnets()?;
        // Spread concurrent runs over the range; creating the bridge is what claims a subnet.
        let seed = std::process::id() as usize
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as usize);
        let mut claimed = None;
        for k in 0..254usize {
            let n = (1 + (seed + k) % 254) as u8;
            if taken.contains(&n) {
                continue;
            }
            let bridge = format!("dkc{n}");
            if run("ip", &["link", "add", &bridge, "type", "bridge"]).is_ok() {
                claimed = Some((n, bridge));
                break;
            }
        }
        let Some((subnet, bridge)) = claimed else { return Err(NetnsError::NoSubnet) };
        // From here on, dropping `topo` removes what exists.
        let mut topo = Topology { subnet, bridge, nodes: Vec::new() };
        let host = format!("{}/24", topo.host_ip());
        run("ip", &["addr", "add", &host, "dev", &topo.bridge])?;
        run("ip", &["link", "set", &topo.bridge, "up"])?;
        for i in 0..nodes {
            let ns = format!("drakkar-check-{subnet}-{}", i + 1);
            let ip = topo.addr(i);
            run("ip", &["netns", "add", &ns])?;
            topo.nodes.push(NodeNet { ns: ns.clone(), ip });
            let (outer, inner) = (format!("dkc{subnet}n{}", i + 1), format!("dkc{subnet}p{}", i + 1));
            run("ip", &["link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
            run("ip", &["link", "set", &inner, "netns", &ns])?;
            run("ip", &["link", "set", &outer, "master", &topo.bridge])?;
            run("ip", &["link", "set", &outer, "up"])?;
            let exec = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns];
                all.extend_from_slice(args);
                run("ip", &all)
            };
            exec(&["ip", "link", "set", &inner, "name", "eth0"])?;
            exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            exec(&["ip", "link", "set", "eth0", "up"])?;
            exec(&["ip", "link", "set", "lo", "up"])?;
            exec(&["iptables", "-w", "-N", CHAIN])?;
            exec(&["iptables", "-w", "-A", "INPUT", "-j", CHAIN])?;
        }
        Ok(topo)
    }

    fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(PREFIX[0], PREFIX[1], self.subnet, NODE_BASE + 1 + i as u8)
    }

    /// The host's address on the bridge (where the check's clients come from).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(PREFIX[0], PREFIX[1], self.subnet, 1)
    }

    /// Node `i`'s address.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        self.nodes[i].ip
    }

    /// Node `i`'s namespace.
    pub fn namespace(&self, i: usize) -> &str {
        &self.nodes[i].ns
    }

    /// Nodes (namespaces) in the topology.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// A command that runs `program` in node `i`'s namespace (`ip netns exec` executes it in place: the
    /// child's process id is the program's).
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.nodes[i].ns]).arg(program);
        c
    }

    /// Adds `rule` (iptables arguments after `-A CHAIN`) in node `i`'s namespace.
    fn add_rule(&self, i: usize, rule: &[&str]) -> Result<(), NetnsError> {
        let mut args = vec!["netns", "exec", &self.nodes[i].ns, "iptables", "-w", "-A", CHAIN];
        args.extend_from_slice(rule);
        run("ip", &args)
    }

    /// Applies `fault` to node `node`, adding to any fault already applied.
    pub fn apply(&self, node: usize, fault: NetFault) -> Result<(), NetnsError> {
        if node >= self.nodes.len() {
            return Err(NetnsError::NoNode(node));
        }
        let me = self.nodes[node].ip.to_string();
        let peers: Vec<usize> = (0..self.nodes.len()).filter(|&j| j != node).collect();
        let drop_from = |at: usize, from: &str| self.add_rule(at, &["-s", from, "-j", "DROP"]);
        let reset_from = |at: usize, from: &str| {
            // Not the resets themselves: both sides refuse each other, and a reset refused is dropped.
            let rule = ["-p", "tcp", "!", "--tcp-flags", "RST", "RST", "-s", from];
            self.add_rule(at, &[&rule[..], &["-j", "REJECT", "--reject-with", "tcp-reset"]].concat())
        };
        match fault {
            NetFault::SilentPartition => {
                for &j in &peers {
                    drop_from(node, &self.nodes[j].ip.to_string())?;
                    drop_from(j, &me)?;
                }
            }
            NetFault::Isolate => {
                // Everything arriving on its veth (the host's packets too), and its packets at the peers.
                self.add_rule(node, &["-i", "eth0", "-j", "DROP"])?;
                for &j in &peers {
                    drop_from(j, &me)?;
                }
            }
            NetFault::InboundCut => {
                for &j in &peers {
                    drop_from(node, &self.nodes[j].ip.to_string())?;
                }
            }
            NetFault::OutboundCut => {
                for &j in &peers {
                    drop_from(j, &me)?;
                }
            }
            NetFault::ResetPartition => {
                for &j in &peers {
                    reset_from(node, &self.nodes[j].ip.to_string())?;
                    reset_from(j, &me)?;
                }
            }
        }
        Ok(())
    }

    /// Removes every fault (flushes every namespace's fault chain). Tries every namespace, and returns
    /// the first error.
    pub fn heal(&self) -> Result<(), NetnsError> {
        let mut first = Ok(());
        for n in &self.nodes {
            let r = run("ip", &["netns", "exec", &n.ns, "iptables", "-w", "-F", CHAIN]);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (i, n) in self.nodes.iter().enumerate() {
            // The host's end of the veth first: that deletes the pair even if a process still holds the
            // namespace. Then the namespace, with its rules.
            let _ = run("ip", &["link", "delete", &format!("dkc{}n{}", self.subnet, i + 1)]);
            if let Err(e) = run("ip", &["netns", "delete", &n.ns]) {
                tracing::warn!(error = %e, "removing a network namespace");
            }
        }
        if let Err(e) = run("ip", &["link", "delete", &self.bridge]) {
            tracing::warn!(error = %e, "removing the bridge");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Stdio};
    use std::time::{Duration, Instant};

    const PORT: u16 = 7777;

    /// A TCP listener on node `i`'s address, in its namespace (the kernel completes handshakes without
    /// an accept). Killed on drop.
    struct Listener(Child);

    impl Listener {
        fn start(t: &Topology, i: usize) -> Listener {
            // The interpreter itself (`python3` may be a wrapper script that would outlive a kill).
            let exe = Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3");
            let exe = String::from_utf8(exe.stdout).unwrap();
            let py = format!(
                "import socket, time\ns = socket.socket()\ns.bind(('{}', {PORT}))\ns.listen(64)\ntime.sleep(60)",
                t.ip(i)
            );
            let child = t
                .command(i, std::path::Path::new(exe.trim()))
                .args(["-c", &py])
                .stdin(Stdio::null())
                .spawn()
                .expect("python3 in a namespace");
            Listener(child)
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// How a connection from `from` (the host: `None`) to node `to` ends within 1 s.
    #[derive(Debug, PartialEq, Eq)]
    enum Reach {
        Connected,
        /// Refused or reset at once.
        Refused,
        /// No answer (the packets were dropped).
        Silent,
    }

    fn reach(t: &Topology, from: Option<usize>, to: usize) -> Reach {
        let script = format!("exec 3<>/dev/tcp/{}/{PORT}", t.ip(to));
        let mut c = match from {
            None => Command::new("timeout"),
            Some(i) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", t.namespace(i), "timeout"]);
                c
            }
        };
        let started = Instant::now();
        let status = c.args(["1", "bash", "-c", &script]).stderr(Stdio::null()).status().unwrap();
        match status.code() {
            Some(0) => Reach::Connected,
            // `timeout` exits 124 when it had to stop the attempt.
            Some(124) => Reach::Silent,
            _ if started.elapsed() < Duration::from_millis(900) => Reach::Refused,
            _ => Reach::Silent,
        }
    }

    /// Packets dropped so far by node `i`'s fault chain.
    fn dropped(t: &Topology, i: usize) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", t.namespace(i), "iptables", "-w", "-L", CHAIN, "-v", "-x", "-n"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    #[test]
    fn routes_that_overlap_a_subnet_take_it() {
        let routes = "default via 10.0.0.1 dev eth0\n\
                      10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.5\n\
                      198.19.7.0/24 dev dkc7 proto kernel scope link src 198.19.7.1\n\
                      local 198.19.9.1 dev dkc9 table local proto kernel scope host src 198.19.9.1\n\
                      198.19.32.0/22 via 10.0.0.9 dev eth0\n\
                      198.18.0.0/24 dev k8s0\n";
        let mut t = taken_subnets(routes);
        t.sort_unstable();
        assert_eq!(t, [7, 9, 32, 33, 34, 35]);
        // A route covering the whole range (or more) takes every subnet.
        assert_eq!(taken_subnets("198.16.0.0/12 via 10.0.0.1 dev eth0").len(), 256);
        assert!(taken_subnets("198.20.0.0/16 dev x\nblackhole 198.18.5.0/24").is_empty());
    }

    #[test]
    fn faults_cut_what_they_name_and_heal() {
        if !is_root() {
            eprintln!("SKIPPED: network namespaces need root");
            return;
        }
        let t = Topology::create(3).unwrap();
        let _l: Vec<Listener> = (0..3).map(|i| Listener::start(&t, i)).collect();
        // Everyone reaches everyone once the listeners are up.
        let up = Instant::now() + Duration::from_secs(10);
        for i in 0..3 {
            while reach(&t, None, i) != Reach::Connected {
                assert!(Instant::now() < up, "the listener of node {i} did not start");
            }
        }
        let all_ok = |t: &Topology| {
            [(None, 0), (Some(1), 0), (Some(0), 1), (Some(1), 2)].map(|(f, to)| reach(t, f, to))
        };
        assert_eq!(all_ok(&t), [Reach::Connected, Reach::Connected, Reach::Connected, Reach::Connected]);
        use Reach::*;
        // (fault on node 0) -> host to 0, 1 to 0, 0 to 1, 1 to 2 (untouched).
        let cases = [
            (NetFault::SilentPartition, [Connected, Silent, Silent, Connected]),
            (NetFault::Isolate, [Silent, Silent, Silent, Connected]),
            // TCP needs both directions: a one-way cut stops connections either way, but only the
            // receiving side named drops packets (checked below).
            (NetFault::InboundCut, [Connected, Silent, Silent, Connected]),
            (NetFault::OutboundCut, [Connected, Silent, Silent, Connected]),
            (NetFault::ResetPartition, [Connected, Refused, Refused, Connected]),
        ];
        for (fault, want) in cases {
            let before: Vec<u64> = (0..3).map(|i| dropped(&t, i)).collect();
            t.apply(0, fault).unwrap();
            assert_eq!(all_ok(&t), want, "{fault:?}");
            let grew: Vec<bool> = (0..3).map(|i| dropped(&t, i) > before[i]).collect();
            match fault {
                NetFault::InboundCut => assert_eq!(grew, [true, false, false], "{fault:?}"),
                // Node 0 connected to node 1 only.
                NetFault::OutboundCut => assert_eq!(grew, [false, true, false], "{fault:?}"),
                _ => {}
            }
            t.heal().unwrap();
            assert_eq!(all_ok(&t), [Connected, Connected, Connected, Connected], "healed {fault:?}");
        }
        let (bridge, ns) = (t.bridge().to_string(), t.namespace(0).to_string());
        drop(_l);
        drop(t);
        let links = Command::new("ip").args(["link", "show", &bridge]).output().unwrap();
        assert!(!links.status.success(), "the bridge is left");
        let spaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&spaces.stdout).contains(&ns), "a namespace is left");
    }
}
