//! Accepting connections: TCP, then (unless `--insecure`) the TLS handshake on its own task, so a slow or
//! hostile client never holds up the accept loop.
//!
//! Handshakes are bounded in time ([`HANDSHAKE_TIMEOUT`]) and in number, per source address
//! ([`MAX_HANDSHAKES_PER_SOURCE`]; an IPv6 source is its /64) and overall ([`MAX_HANDSHAKES`]). A new
//! connection past a bound is not turned away: the OLDEST handshake in progress (of the same source, or
//! overall) is aborted and its connection closed at once. A real handshake takes milliseconds, so only
//! connections that stall lose their place: half-open connections, however many, neither lock other
//! sources out (each source holds at most its share) nor the source's own next client (it takes the
//! place of the stalled ones).
//!
//! Open connections are bounded too, per source ([`MAX_CONNECTIONS_PER_SOURCE`]) and overall
//! ([`MAX_CONNECTIONS`]), counted from accept to close. Past a bound a new connection is closed at once
//! (established connections may be busy clients: none is taken away), logged and counted
//! (`drakkar_connections_refused_total`), so one source cannot take every connection of a node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::authz::Caller;
use crate::tls::NodeTls;

/// Longest TLS handshake (a real one takes a few round trips).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS handshakes in progress at once, overall.
pub const MAX_HANDSHAKES: usize = 256;
/// TLS handshakes in progress at once from one source address (IPv4 address, IPv6 /64).
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 32;

/// Connections open at once, overall.
pub const MAX_CONNECTIONS: usize = 8192;
/// Connections open at once from one source address (IPv4 address, IPv6 /64).
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 1024;

/// The node's open connections, by source, and how many were refused.
#[derive(Debug, Default)]
pub struct Connections {
    table: Mutex<ConnTable>,
    refused: std::sync::atomic::AtomicU64,
}

/// Invariant: `open` is the sum of `by_source`'s counts, and no count is 0.
#[derive(Debug, Default)]
struct ConnTable {
    open: usize,
    by_source: HashMap<IpAddr, usize>,
}

impl Connections {
    /// A place for a connection from `ip`, or None past [`MAX_CONNECTIONS_PER_SOURCE`] or
    /// [`MAX_CONNECTIONS`].
    fn admit(self: &Arc<Self>, ip: IpAddr, per_source: usize, max: usize) -> Option<ConnSlot> {
        let src = source(ip);
        let mut t = self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let of_source = t.by_source.get(&src).copied().unwrap_or(0);
        if t.open >= max || of_source >= per_source {
            self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        t.open += 1;
        t.by_source.insert(src, of_source + 1);
        Some(ConnSlot { table: self.clone(), src })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner).open
    }

    /// The gauges and counters in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        format!(
            "# HELP drakkar_connections_open Client and peer connections open.\n\
             # TYPE drakkar_connections_open gauge\n\
             drakkar_connections_open {}\n\
             # HELP drakkar_connections_refused_total Connections closed at accept: too many open.\n\
             # TYPE drakkar_connections_refused_total counter\n\
             drakkar_connections_refused_total {}\n",
            self.open(),
            self.refused.load(std::sync::atomic::Ordering::Relaxed)
        )
    }
}

/// A connection's place in [`Connections`], given back when the connection is dropped.
#[derive(Debug)]
struct ConnSlot {
    table: Arc<Connections>,
    src: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut t = self.table.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        t.open -= 1;
        if let Some(n) = t.by_source.get_mut(&self.src) {
            *n -= 1;
            if *n == 0 {
                t.by_source.remove(&self.src);
            }
        }
    }
}

/// The source a connection counts against: its IP address, an IPv6 one reduced to its /64 (one host
/// commonly owns a whole /64).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The TLS handshakes in progress. Invariant: `by_age` and `by_source` hold the same ids.
#[derive(Default)]
struct Handshakes {
    next: u64,
    /// Id (in start order: the first is the oldest) -> source and abort signal.
    by_age: BTreeMap<u64, (IpAddr, CancellationToken)>,
    by_source: HashMap<IpAddr, BTreeSet<u64>>,
}

impl Handshakes {
    /// Registers a handshake from `ip`, first aborting the oldest of its source if that source is at
    /// `per_source`, then the oldest overall if `max` are in progress. Returns its id and abort signal.
    fn start(&mut self, ip: IpAddr, per_source: usize, max: usize) -> (u64, CancellationToken) {
        let src = source(ip);
        let oldest_of_source = self
            .by_source
            .get(&src)
            .filter(|s| s.len() >= per_source.max(1))
            .and_then(|s| s.first().copied());
        if let Some(id) = oldest_of_source {
            self.abort(id);
        }
        if self.by_age.len() >= max.max(1)
            && let Some(id) = self.by_age.keys().next().copied()
        {
            self.abort(id);
        }
        let id = self.next;
        self.next += 1;
        let token = CancellationToken::new();
        self.by_age.insert(id, (src, token.clone()));
        self.by_source.entry(src).or_default().insert(id);
        (id, token)
    }

    fn abort(&mut self, id: u64) {
        if let Some((_, token)) = self.remove(id) {
            token.cancel();
        }
    }

    /// Forgets handshake `id` (ended, or aborted).
    fn remove(&mut self, id: u64) -> Option<(IpAddr, CancellationToken)> {
        let (src, token) = self.by_age.remove(&id)?;
        if let Some(ids) = self.by_source.get_mut(&src) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&src);
            }
        }
        Some((src, token))
    }
}

/// A handshake's place in [`Handshakes`], given up when dropped (however the handshake task ends).
struct Slot {
    table: Arc<Mutex<Handshakes>>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.table).remove(self.id);
    }
}

fn lock(m: &Mutex<Handshakes>) -> std::sync::MutexGuard<'_, Handshakes> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a request knows about its connection (in the request extensions).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The peer's socket address.
    pub remote: Option<SocketAddr>,
    /// The client certificate chain the peer presented (verified against the CA), if any.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// Who the certificate says the caller is (read once per connection).
    pub caller: Caller,
}

/// An accepted connection, holding its place among the node's [`Connections`].
pub struct ServerIo {
    stream: Stream,
    _slot: ConnSlot,
}

enum Stream {
    /// Plaintext (`--insecure`).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Connected for ServerIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match &self.stream {
            Stream::Plain(s) => {
                ConnInfo { remote: s.peer_addr().ok(), certs: None, tls: false, caller: Caller::Plaintext }
            }
            Stream::Tls(s) => {
                let (tcp, session) = s.get_ref();
                let certs = session.peer_certificates().map(|c| Arc::new(c.to_vec()));
                let caller = Caller::of_connection(true, certs.as_deref().map(Vec::as_slice));
                ConnInfo { remote: tcp.peer_addr().ok(), certs, tls: true, caller }
            }
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The stream of accepted (and, with `tls`, handshaken) connections, counted in `connections`; it ends
/// when `stop` fires.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<NodeTls>>,
    connections: Arc<Connections>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<ServerIo>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = Arc::new(Mutex::new(Handshakes::default()));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = connections.admit(peer.ip(), MAX_CONNECTIONS_PER_SOURCE, MAX_CONNECTIONS) else {
                tracing::warn!(%peer, open = connections.open(), "connection refused: too many open");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let Some(tls) = tls.clone() else {
                if tx.send(Ok(ServerIo { stream: Stream::Plain(tcp), _slot: slot })).await.is_err() {
                    return;
                }
                continue;
            };
            let (id, abort) = lock(&handshakes).start(peer.ip(), MAX_HANDSHAKES_PER_SOURCE, MAX_HANDSHAKES);
            let handshake = Slot { table: handshakes.clone(), id };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
                let done = tokio::select! {
                    _ = abort.cancelled() => {
                        // Dropping the handshake closes the connection now.
                        tracing::debug!(%peer, "TLS handshake aborted: newer connections need its place");
                        return;
                    }
                    r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                };
                drop(handshake);
                match done {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(ServerIo { stream: Stream::Tls(Box::new(s)), _slot: slot })).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    #[test]
    fn a_source_at_its_limit_loses_its_oldest_handshake_not_others() {
        let mut h = Handshakes::default();
        let a: Vec<_> = (0..3).map(|_| h.start(ip("10.0.0.1"), 3, 8)).collect();
        let b = h.start(ip("10.0.0.2"), 3, 8);
        let a4 = h.start(ip("10.0.0.1"), 3, 8);
        assert!(a[0].1.is_cancelled(), "the oldest of the full source is aborted");
        assert!(!a[1].1.is_cancelled() && !a[2].1.is_cancelled() && !a4.1.is_cancelled());
        assert!(!b.1.is_cancelled(), "another source keeps its handshake");
        assert_eq!(h.by_age.len(), 4);
        assert_eq!(h.by_source[&ip("10.0.0.1")].len(), 3);
    }

    #[test]
    fn past_the_overall_limit_the_oldest_handshake_goes() {
        let mut h = Handshakes::default();
        let first = h.start(ip("10.0.0.1"), 2, 3);
        let second = h.start(ip("10.0.0.2"), 2, 3);
        let _third = h.start(ip("10.0.0.3"), 2, 3);
        let _fourth = h.start(ip("10.0.0.4"), 2, 3);
        assert!(first.1.is_cancelled());
        assert!(!second.1.is_cancelled());
        assert_eq!(h.by_age.len(), 3);
        assert!(!h.by_source.contains_key(&ip("10.0.0.1")), "an empty source is forgotten");
        // A handshake that ended gives its place back.
        assert!(h.remove(second.0).is_some());
        assert_eq!(h.by_age.len(), 2);
        assert!(h.remove(second.0).is_none());
    }

    #[test]
    fn connections_are_bounded_per_source_and_overall_and_given_back() {
        let c = Arc::new(Connections::default());
        let a: Vec<_> = (0..2).map(|_| c.admit(ip("10.0.0.1"), 2, 3).expect("within bounds")).collect();
        assert!(c.admit(ip("10.0.0.1"), 2, 3).is_none(), "the source is at its bound");
        let b = c.admit(ip("10.0.0.2"), 2, 3).expect("another source");
        assert!(c.admit(ip("10.0.0.3"), 2, 3).is_none(), "the node is at its bound");
        assert_eq!(c.open(), 3);
        drop(b);
        let _c = c.admit(ip("10.0.0.3"), 2, 3).expect("a closed connection gives its place back");
        drop(a);
        assert_eq!(c.open(), 1);
        assert!(c.metrics_text().contains("drakkar_connections_refused_total 2"), "{}", c.metrics_text());
        assert_eq!(c.table.lock().unwrap().by_source.len(), 1, "empty sources are forgotten");
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64() {
        assert_eq!(source(ip("2001:db8:1:2:aaaa::1")), source(ip("2001:db8:1:2:bbbb::2")));
        assert_ne!(source(ip("2001:db8:1:2::1")), source(ip("2001:db8:1:3::1")));
        assert_eq!(source(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }
}
