//! Making gRPC channels: host names resolved at every connect (never an IP cached across reconnects),
//! TCP with `TCP_NODELAY`, then TLS (rustls) when configured.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use crate::tls::ClientTls;

/// A connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum Io {
    /// Plaintext (`--insecure`).
    Plain(TcpStream),
    /// TLS.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The tower connector tonic calls for every (re)connection.
#[derive(Clone)]
pub struct Connector {
    tls: Option<Arc<dyn ClientTls>>,
    timeout: Duration,
}

impl Connector {
    /// A connector using `tls` (None: plaintext), giving up on a connection attempt after `timeout`.
    pub fn new(tls: Option<Arc<dyn ClientTls>>, timeout: Duration) -> Self {
        Connector { tls, timeout }
    }

    /// The same connector with another connection deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The deadline of one connection attempt: name resolution, TCP connect and TLS handshake.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Resolves `host` now, connects to the first address that answers, then runs the TLS handshake.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<Io> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let fut = async {
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
            let mut stream = None;
            for addr in tokio::net::lookup_host((host.as_str(), port)).await? {
                match tcp_connect(addr, SYN_RETRY).await {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            let tcp = stream.ok_or(last)?;
            tcp.set_nodelay(true)?;
            match &self.tls {
                None => Ok(Io::Plain(tcp)),
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                    let tls = tokio_rustls::TlsConnector::from(tls.config()).connect(name, tcp).await?;
                    Ok(Io::Tls(Box::new(tls)))
                }
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {host}:{port}")))?
    }
}

/// While a TCP connection attempt has no answer, another one starts this often. The kernel sends a
/// dropped SYN again only after 1 s (then 3 s, ...): on a network that lost the first SYN and has just
/// healed, a connection would wait that long. A SYN is answered by the peer's kernel, not its process,
/// so on a working network an answer takes a round trip even when the peer is busy.
pub const SYN_RETRY: Duration = Duration::from_millis(200);

/// Connects to `addr`: a new attempt (a new SYN) every `retry` while none succeeded, earlier ones still
/// waiting (a slow network still connects), the first connection wins and the others are dropped. An
/// attempt that fails outright (refused, unreachable) fails the call at once.
async fn tcp_connect(addr: std::net::SocketAddr, retry: Duration) -> io::Result<TcpStream> {
    let mut attempts = tokio::task::JoinSet::new();
    attempts.spawn(TcpStream::connect(addr));
    let mut next = tokio::time::Instant::now() + retry;
    loop {
        tokio::select! {
            done = attempts.join_next() => match done {
                Some(Ok(r)) => return r,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Err(io::Error::other("no connection attempt left")),
            },
            _ = tokio::time::sleep_until(next) => {
                attempts.spawn(TcpStream::connect(addr));
                next += retry;
            }
        }
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Io>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Io>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let port = uri.port_u16().unwrap_or(443);
            this.connect(host, port).await.map(TokioIo::new)
        })
    }
}

/// `host:port` from an endpoint written as `host:port`, `http://host:port` or `https://host:port`.
pub fn host_port(endpoint: &str) -> &str {
    let e = endpoint.trim();
    let e = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://")).unwrap_or(e);
    e.trim_end_matches('/')
}

/// HTTP/2 keepalive of a channel: when nothing came from the server for `interval`, a PING is sent, and
/// the connection is closed (failing its calls with UNAVAILABLE) if the answer takes longer than
/// `timeout`. A connection that went silent is thus noticed `interval + timeout` after its last frame,
/// instead of after TCP's retransmission timeouts (minutes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepAlive {
    /// Silence before a PING.
    pub interval: Duration,
    /// Longest wait for the PING's answer.
    pub timeout: Duration,
}

impl KeepAlive {
    /// For client applications, which may be far from the nodes: a connection silent for 20 s is dropped.
    pub const CLIENT: KeepAlive =
        KeepAlive { interval: Duration::from_secs(10), timeout: Duration::from_secs(10) };
}

/// The endpoint `endpoint` (`host:port`) with `keepalive` (also while no call is open), for
/// [`Endpoint::connect_with_connector`] (connects now) or [`Endpoint::connect_with_connector_lazy`].
pub fn endpoint(endpoint: &str, keepalive: KeepAlive) -> Result<Endpoint, crate::ClientError> {
    let uri = format!("http://{}", host_port(endpoint));
    Ok(Endpoint::from_shared(uri)
        .map_err(|e| crate::ClientError::Endpoint { endpoint: endpoint.into(), message: e.to_string() })?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        .keep_alive_while_idle(true))
}

/// A lazily connecting channel to `endpoint` (`host:port`) with [`KeepAlive::CLIENT`]; it reconnects
/// (resolving the name again) whenever the connection breaks.
pub fn channel(endpoint: &str, connector: Connector) -> Result<Channel, crate::ClientError> {
    channel_with(endpoint, connector, KeepAlive::CLIENT)
}

/// [`channel`] with another keepalive.
pub fn channel_with(
    endpoint: &str,
    connector: Connector,
    keepalive: KeepAlive,
) -> Result<Channel, crate::ClientError> {
    Ok(self::endpoint(endpoint, keepalive)?.connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A listener whose accept queue is full: Linux then drops new SYNs silently, as a partitioned
    /// network does, until the queue is drained. Returns it and the connections that fill it.
    async fn full_listener() -> (tokio::net::TcpListener, std::net::SocketAddr, Vec<TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(100), TcpStream::connect(addr)).await {
                Ok(c) => held.push(c.unwrap()),
                // No answer: the queue is full.
                Err(_) => return (listener, addr, held),
            }
            assert!(held.len() < 64, "the accept queue never filled");
        }
    }

    /// How long `tcp_connect` with `retry` takes when the SYNs are dropped until 50 ms after it starts.
    async fn connect_after_heal(retry: Duration) -> Duration {
        let (listener, addr, _held) = full_listener().await;
        let started = Instant::now();
        let connecting = tokio::spawn(tcp_connect(addr, retry));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Heal: drain the queue (and keep draining, for the retried SYNs).
        let drain = tokio::spawn(async move {
            let mut accepted = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                accepted.push(c);
            }
        });
        connecting.await.unwrap().expect("connected");
        drain.abort();
        started.elapsed()
    }

    #[tokio::test]
    async fn a_dropped_syn_is_sent_again_within_the_retry_interval() {
        // Without early retries the kernel resends the SYN after 1 s: the test can tell the difference.
        let slow = connect_after_heal(Duration::from_secs(10)).await;
        assert!(slow >= Duration::from_millis(900), "the first SYN was not dropped: {slow:?}");
        let fast = connect_after_heal(SYN_RETRY).await;
        assert!(fast < Duration::from_millis(800), "took {fast:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_fails_at_once() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let started = Instant::now();
        assert!(tcp_connect(addr, SYN_RETRY).await.is_err());
        assert!(started.elapsed() < SYN_RETRY, "{:?}", started.elapsed());
    }
}
