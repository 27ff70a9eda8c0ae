//! A TCP proxy in front of one node, through which every other node reaches it, and which a nemesis can
//! cut per sending node.
//!
//! Every founding node advertises its proxy's address, and every node lists the founding nodes' proxies
//! in `--peers`: all nodes agree on every member's address (a node takes Raft traffic only from a
//! member's recorded address), and everything between nodes (Raft streams, snapshots, forwarded
//! requests) passes through the receiver's proxy. Clients talk to the nodes' real addresses.
//!
//! The proxy tells which node opened a connection by the owner of the connecting socket (Linux:
//! `/proc/net/tcp` gives the socket's inode, `/proc/<pid>/fd` the process holding it). Cutting the link
//! from node `i` closes its open connections and refuses new ones until healed: to both nodes it looks
//! like the peer vanished from the network. A connection whose sender is not identified (not a node of
//! the cluster, or not on Linux) is cut only when every link into the node is.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The process id of each node of the cluster, by node index (`None`: not running). The cluster updates
/// it as it starts and kills nodes; proxies read it to tell who connected.
pub type Pids = Arc<Mutex<Vec<Option<u32>>>>;

/// Which senders are cut off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Cuts {
    /// Every sender, identified or not.
    all: bool,
    /// These nodes.
    from: BTreeSet<usize>,
}

impl Cuts {
    fn blocks(&self, sender: Option<usize>) -> bool {
        self.all || sender.is_some_and(|s| self.from.contains(&s))
    }
}

/// The proxy in front of one node. Dropping it stops the proxy and closes its connections.
pub struct NodeProxy {
    addr: SocketAddr,
    cuts: watch::Sender<Cuts>,
    unidentified: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl NodeProxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to `target`, telling senders
    /// apart by `pids`.
    pub async fn start(target: SocketAddr, pids: Pids) -> std::io::Result<NodeProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cuts, rx) = watch::channel(Cuts::default());
        let unidentified = Arc::new(AtomicU64::new(0));
        let counter = unidentified.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, peer)) = listener.accept().await else { continue };
                let (mut watch, pids, counter) = (rx.clone(), pids.clone(), counter.clone());
                tokio::spawn(async move {
                    let found = tokio::task::spawn_blocking(move || sender_of(peer, addr, &pids)).await;
                    let sender = match found {
                        Ok(Sender::Node(i)) => Some(i),
                        // Its sender exited (a node killed a moment ago): nothing to forward.
                        Ok(Sender::Gone) => return,
                        Ok(Sender::Unknown) | Err(_) => {
                            counter.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, proxy = %addr, "a connection from an unidentified sender");
                            None
                        }
                    };
                    // Cut: the connection is closed at once, as if nothing answered.
                    if watch.borrow_and_update().blocks(sender) {
                        return;
                    }
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    let mut inbound = inbound;
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|c| c.blocks(sender)) => {}
                    }
                });
            }
        });
        Ok(NodeProxy { addr, cuts, unidentified, task })
    }

    /// The address the node advertises and its peers dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts (true) or heals (false) the link from node `from` to this proxy's node.
    pub fn set_cut_from(&self, from: usize, cut: bool) {
        self.cuts.send_modify(|c| {
            if cut {
                c.from.insert(from);
            } else {
                c.from.remove(&from);
            }
        });
    }

    /// Cuts (true) or heals (false) every link into this proxy's node, from any sender.
    pub fn set_cut_all(&self, cut: bool) {
        self.cuts.send_modify(|c| c.all = cut);
    }

    /// Heals every link into this proxy's node.
    pub fn heal(&self) {
        self.cuts.send_replace(Cuts::default());
    }

    /// Whether a connection from node `from` (`None`: an unidentified sender) would be cut.
    pub fn is_cut_from(&self, from: Option<usize>) -> bool {
        self.cuts.borrow().blocks(from)
    }

    /// Connections whose sender could not be identified so far.
    pub fn unidentified(&self) -> u64 {
        self.unidentified.load(Ordering::Relaxed)
    }
}

impl Drop for NodeProxy {
    fn drop(&mut self) {
        self.cuts.send_replace(Cuts { all: true, from: BTreeSet::new() });
        self.task.abort();
    }
}

/// Who opened a connection.
enum Sender {
    /// Node `i` (an index into the [`Pids`]).
    Node(usize),
    /// Nobody holds the connecting socket any more: its process exited.
    Gone,
    /// Some process that is not a node, or no way to tell (no `/proc`).
    Unknown,
}

/// The node (index into `pids`) that holds the connecting end of the connection from `peer` to
/// `local`. The connecting process holds its socket while the connection is open; a miss is retried
/// once (a node started a moment ago may not be in `pids` yet).
fn sender_of(peer: SocketAddr, local: SocketAddr, pids: &Mutex<Vec<Option<u32>>>) -> Sender {
    let mut gone = false;
    for attempt in 0..2 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let inode = match socket_inode(peer, local) {
            Err(_) => return Sender::Unknown,
            // No such socket, or one no process holds (inode 0): the sender closed it or exited.
            Ok(None | Some(0)) => {
                gone = true;
                continue;
            }
            Ok(Some(inode)) => inode,
        };
        gone = false;
        let pids = pids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let link = format!("socket:[{inode}]");
        let holds = |pid: u32| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()))
            })
        };
        if let Some(i) = pids.iter().position(|p| p.is_some_and(holds)) {
            return Sender::Node(i);
        }
    }
    if gone { Sender::Gone } else { Sender::Unknown }
}

/// The inode of the TCP socket whose local address is `peer` and remote address `local`, from
/// `/proc/net/tcp` (IPv4; addresses are printed as the native-endian `u32` of the network-order bytes);
/// `Ok(None)` when there is no such socket, an error when the table cannot be read.
fn socket_inode(peer: SocketAddr, local: SocketAddr) -> std::io::Result<Option<u64>> {
    let (SocketAddr::V4(peer), SocketAddr::V4(local)) = (peer, local) else {
        return Err(std::io::Error::other("only IPv4 sockets are looked up"));
    };
    let hex =
        |a: std::net::SocketAddrV4| format!("{:08X}:{:04X}", u32::from_ne_bytes(a.ip().octets()), a.port());
    let (want_local, want_remote) = (hex(peer), hex(local));
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    Ok(table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == want_local && f[2] == want_remote).then(|| f[9].parse().ok()).flatten()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn echoes(c: &mut TcpStream, msg: &[u8; 4]) -> bool {
        let mut buf = [0u8; 4];
        let round = async {
            c.write_all(msg).await?;
            c.read_exact(&mut buf).await
        };
        matches!(tokio::time::timeout(Duration::from_secs(5), round).await, Ok(Ok(_))) && &buf == msg
    }

    async fn closed(c: &mut TcpStream) -> bool {
        let mut buf = [0u8; 4];
        let _ = c.write_all(b"ping").await;
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await.unwrap();
        matches!(n, Ok(0) | Err(_))
    }

    #[tokio::test]
    async fn cuts_the_identified_sender_until_healed() {
        // This test process plays node 1 (node 0 is not running).
        let pids: Pids = Arc::new(Mutex::new(vec![None, Some(std::process::id())]));
        let proxy = NodeProxy::start(echo_server().await, pids).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut c, b"ping").await);
        assert_eq!(proxy.unidentified(), 0, "the sender is found by its socket");

        // Cutting another node's link changes nothing for this one.
        proxy.set_cut_from(0, true);
        assert!(echoes(&mut c, b"ping").await);
        assert!(proxy.is_cut_from(Some(0)) && !proxy.is_cut_from(Some(1)) && !proxy.is_cut_from(None));

        // Cutting its own closes the open connection, and a new one gets nothing through.
        proxy.set_cut_from(1, true);
        assert!(closed(&mut c).await);
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(closed(&mut c2).await);

        proxy.heal();
        let mut c3 = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(echoes(&mut c3, b"pong").await);

        // Cutting every link cuts unidentified senders too.
        let stranger = NodeProxy::start(echo_server().await, Arc::new(Mutex::new(vec![]))).await.unwrap();
        let mut c4 = TcpStream::connect(stranger.addr()).await.unwrap();
        assert!(echoes(&mut c4, b"ping").await);
        assert_eq!(stranger.unidentified(), 1);
        stranger.set_cut_from(0, true);
        assert!(echoes(&mut c4, b"ping").await);
        stranger.set_cut_all(true);
        assert!(closed(&mut c4).await);
    }
}
