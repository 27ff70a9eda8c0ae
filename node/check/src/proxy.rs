//! A TCP proxy for one directed link between two nodes, which a nemesis can cut.
//!
//! Node `a` is told that node `b` lives at the proxy's address, so everything `a` sends to `b` (Raft
//! streams, forwarded requests) and `b`'s answers on those connections pass through it. Cutting the link
//! closes every open connection and refuses new ones until it is healed: to both nodes it looks like
//! the peer vanished from the network.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One proxied link. Dropping it stops the proxy and closes its connections.
pub struct LinkProxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cut, rx) = watch::channel(false);
        let rx = Arc::new(rx);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                if *rx.borrow() {
                    // Cut: the connection is closed at once, as if nothing answered.
                    drop(inbound);
                    continue;
                }
                let mut watch = (*rx).clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    let mut inbound = inbound;
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Ok(LinkProxy { addr, cut, task })
    }

    /// The address to hand the sending node.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts (true) or heals (false) the link.
    pub fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.task.abort();
    }
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

    #[tokio::test]
    async fn forwards_until_cut_and_again_after_healing() {
        let proxy = LinkProxy::start(echo_server().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        proxy.set_cut(true);
        assert!(proxy.is_cut());
        // The open connection is closed...
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)));
        // ...and a new one gets nothing through.
        let mut c2 = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = c2.write_all(b"ping").await;
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), c2.read(&mut buf)).await.unwrap();
        assert!(matches!(n, Ok(0) | Err(_)));

        proxy.set_cut(false);
        let mut c3 = TcpStream::connect(proxy.addr()).await.unwrap();
        c3.write_all(b"pong").await.unwrap();
        c3.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
