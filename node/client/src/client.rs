//! [`Client`]: calls with retries across endpoints, leader hints, and sessions for exactly-once writes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::Channel;

use crate::connect::{self, Connector};
use crate::error::{ClientError, reason};
use crate::pb;
use crate::session::SessionState;
use crate::tls::ClientTls;

/// How a [`Client`] connects and retries.
#[derive(Clone)]
pub struct ClientConfig {
    /// Node addresses, `host:port` (an `http://` or `https://` prefix is accepted and ignored: TLS is
    /// used exactly when `tls` is set).
    pub endpoints: Vec<String>,
    /// TLS (None: plaintext, for nodes run with `--insecure`).
    pub tls: Option<Arc<dyn ClientTls>>,
    /// Deadline of one attempt (sent as `grpc-timeout`).
    pub request_timeout: Duration,
    /// Total time spent retrying one call across endpoints.
    pub retry_for: Duration,
    /// Deadline of one connection attempt (resolve, TCP, TLS).
    pub connect_timeout: Duration,
    /// Make writes exactly-once: each group's writes go through a client session, so a write retried after
    /// a timeout or a lost connection is applied once. Without it, writes are retried only when the node
    /// proves they never entered the log. A write whose session is gone (`session-unknown`) after an
    /// attempt that may have been applied fails with [`ClientError::OutcomeUnknown`] (see [`Client::write`]).
    pub exactly_once: bool,
}

impl ClientConfig {
    /// Defaults for these endpoints: plaintext, 5 s attempts, 15 s of retries, exactly-once writes.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            request_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(3),
            exactly_once: true,
        }
    }

    /// With TLS.
    #[must_use]
    pub fn with_tls(mut self, tls: Arc<dyn ClientTls>) -> Self {
        self.tls = Some(tls);
        self
    }
}

struct Inner {
    cfg: ClientConfig,
    connector: Connector,
    channels: Mutex<HashMap<String, Channel>>,
    /// Where the last successful call of a group went, or the leader a node pointed to.
    preferred: Mutex<HashMap<u64, String>>,
    sessions: tokio::sync::Mutex<HashMap<u64, Arc<Mutex<SessionState>>>>,
    next: AtomicUsize,
}

/// A Drakkar client. Cheap to clone (a handle); safe to share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A request with its deadline.
pub fn request<M>(msg: M, timeout: Duration) -> tonic::Request<M> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Client {
    /// A client for `cfg`. Connections are made lazily, on first use.
    pub fn new(cfg: ClientConfig) -> Result<Client, ClientError> {
        if cfg.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let endpoints: Vec<String> =
            cfg.endpoints.iter().map(|e| connect::host_port(e).to_string()).collect();
        let connector = Connector::new(cfg.tls.clone(), cfg.connect_timeout);
        let cfg = ClientConfig { endpoints, ..cfg };
        let inner = Inner {
            cfg,
            connector,
            channels: Mutex::new(HashMap::new()),
            preferred: Mutex::new(HashMap::new()),
            sessions: tokio::sync::Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        };
        Ok(Client { inner: Arc::new(inner) })
    }

    /// The configured endpoints (`host:port`).
    pub fn endpoints(&self) -> &[String] {
        &self.inner.cfg.endpoints
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.cfg
    }

    /// The channel to `endpoint` (created on first use; it reconnects by itself).
    pub fn channel(&self, endpoint: &str) -> Result<Channel, ClientError> {
        let mut chans = lock(&self.inner.channels);
        if let Some(c) = chans.get(endpoint) {
            return Ok(c.clone());
        }
        let c = connect::channel(endpoint, self.inner.connector.clone())?;
        chans.insert(endpoint.to_string(), c.clone());
        Ok(c)
    }

    fn pick(&self, group: Option<u64>, start: usize, attempt: usize) -> String {
        if let Some(g) = group
            && let Some(p) = lock(&self.inner.preferred).get(&g)
        {
            return p.clone();
        }
        let eps = &self.inner.cfg.endpoints;
        eps[(start + attempt) % eps.len()].clone()
    }

    fn prefer(&self, group: Option<u64>, endpoint: Option<&str>) {
        let Some(g) = group else { return };
        let mut p = lock(&self.inner.preferred);
        match endpoint {
            Some(e) => p.insert(g, e.to_string()),
            None => p.remove(&g),
        };
    }

    /// Calls `f` with a channel and the attempt deadline, retrying on other endpoints (or the leader a
    /// node named) while the error is retryable (see [`ClientError::retryable`]) and
    /// [`ClientConfig::retry_for`] lasts.
    pub async fn call<T, F, Fut>(&self, group: Option<u64>, idempotent: bool, f: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_tracked(group, idempotent, f).await.map_err(|failed| failed.error)
    }

    /// [`Client::call`], also telling, when it fails, whether an attempt before the last one may have been
    /// applied.
    async fn call_tracked<T, F, Fut>(
        &self,
        group: Option<u64>,
        idempotent: bool,
        mut f: F,
    ) -> Result<T, Failed>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let cfg = &self.inner.cfg;
        let deadline = tokio::time::Instant::now() + cfg.retry_for;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0usize;
        let mut backoff = Duration::from_millis(25);
        // The first failed attempt that does not prove the request was left unapplied.
        let mut maybe_applied: Option<ClientError> = None;
        loop {
            let endpoint = self.pick(group, start, attempt);
            let result = match self.channel(&endpoint) {
                Ok(ch) => f(ch, cfg.request_timeout).await,
                Err(error) => return Err(Failed { error, maybe_applied }),
            };
            let (err, not_applied) = match result {
                Ok(r) => {
                    self.prefer(group, Some(&endpoint));
                    return Ok(r.into_inner());
                }
                Err(status) => {
                    let err = ClientError::from_status(&status, &endpoint);
                    let not_applied = never_sent(&status) || err.never_entered();
                    (err, not_applied)
                }
            };
            let now = tokio::time::Instant::now();
            if !err.retryable(idempotent) || now >= deadline {
                return Err(Failed { error: err, maybe_applied });
            }
            tracing::debug!(%endpoint, error = %err, "retrying");
            let hint = err.leader_hint().map(str::to_string);
            if !not_applied && maybe_applied.is_none() {
                maybe_applied = Some(err);
            }
            match hint {
                Some(leader) if leader != endpoint => self.prefer(group, Some(&leader)),
                _ => {
                    self.prefer(group, None);
                    attempt += 1;
                    tokio::time::sleep(backoff.min(deadline - now)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Calls `f` on one endpoint, once.
    pub async fn call_at<T, F, Fut>(&self, endpoint: &str, f: F) -> Result<T, ClientError>
    where
        F: FnOnce(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let endpoint = connect::host_port(endpoint);
        let ch = self.channel(endpoint)?;
        f(ch, self.inner.cfg.request_timeout)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ClientError::from_status(&s, endpoint))
    }

    /// The session used for writes to `group`, opened on first use.
    async fn session(&self, group: u64) -> Result<Arc<Mutex<SessionState>>, ClientError> {
        let mut sessions = self.inner.sessions.lock().await;
        if let Some(s) = sessions.get(&group) {
            return Ok(s.clone());
        }
        let id = self.open_session(group).await?;
        let s = Arc::new(Mutex::new(SessionState::new(id)));
        sessions.insert(group, s.clone());
        Ok(s)
    }

    /// Opens a session on `group` (Session.OpenSession); returns its id.
    /// The id is chosen here, once, so retries of the call after a lost answer register one session.
    pub async fn open_session(&self, group: u64) -> Result<u64, ClientError> {
        let client_id = random_session_id();
        let r = self
            .call(Some(group), true, |ch, t| async move {
                pb::session_client::SessionClient::new(ch)
                    .open_session(request(pb::OpenSessionRequest { group, client_id }, t))
                    .await
            })
            .await?;
        Ok(r.client_id)
    }

    /// Closes a session (Session.CloseSession).
    pub async fn close_session(&self, group: u64, client_id: u64) -> Result<(), ClientError> {
        self.call(Some(group), true, |ch, t| async move {
            pb::session_client::SessionClient::new(ch)
                .close_session(request(pb::CloseSessionRequest { group, client_id }, t))
                .await
        })
        .await
        .map(|_| ())
    }

    /// Closes every session this client opened (best effort).
    pub async fn close(&self) {
        let sessions: Vec<(u64, u64)> = {
            let mut s = self.inner.sessions.lock().await;
            s.drain().map(|(g, st)| (g, lock(&st).client_id())).collect()
        };
        for (g, id) in sessions {
            if let Err(e) = self.close_session(g, id).await {
                tracing::debug!(group = g, error = %e, "closing a session failed");
            }
        }
    }

    /// Runs a write on `group`: in a session when [`ClientConfig::exactly_once`] (every retry reuses the
    /// same series id, so it applies once), otherwise plain. `f` gets the session position to put in the
    /// request.
    ///
    /// When the session is gone (`session-unknown`) the write runs again in a new session only if no
    /// earlier attempt of it may have been applied (each one was refused before it could enter the log, or
    /// never left the client); otherwise it fails with [`ClientError::OutcomeUnknown`].
    pub async fn write<T, F, Fut>(&self, group: u64, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel, Duration, Option<pb::SessionRef>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if !self.inner.cfg.exactly_once {
            return self.call(Some(group), false, |ch, t| f(ch, t, None)).await;
        }
        let mut reopened = false;
        loop {
            let state = self.session(group).await?;
            let sref = lock(&state).begin();
            let series = sref.series;
            let r = self.call_tracked(Some(group), true, |ch, t| f(ch, t, Some(sref))).await;
            // Answered or abandoned: either way this series is never retried again.
            lock(&state).complete(series);
            let Failed { error, maybe_applied } = match r {
                Ok(v) => return Ok(v),
                Err(failed) => failed,
            };
            if error.reason() != Some(reason::SESSION_UNKNOWN) {
                // A refusal proves only that the last attempt was not applied: with an earlier attempt
                // that may have been, the caller must not take it for "not applied" and write again.
                return Err(match maybe_applied {
                    Some(earlier) if error.never_entered() => {
                        ClientError::OutcomeUnknown { earlier: Box::new(earlier), last: Box::new(error) }
                    }
                    _ => error,
                });
            }
            // The last attempt was not applied, but an earlier one may have been before the session went
            // away: running the write again, in a new session, could apply it twice.
            if let Some(earlier) = maybe_applied {
                return Err(ClientError::OutcomeUnknown {
                    earlier: Box::new(earlier),
                    last: Box::new(error),
                });
            }
            if reopened {
                return Err(error);
            }
            // No attempt of this write was applied: open a new session and run it there.
            let mut sessions = self.inner.sessions.lock().await;
            if sessions.get(&group).is_some_and(|s| Arc::ptr_eq(s, &state)) {
                sessions.remove(&group);
            }
            reopened = true;
        }
    }
}

/// A failed [`Client::call_tracked`].
struct Failed {
    /// The error that ended the call (the last attempt's, or one that made no attempt).
    error: ClientError,
    /// The first earlier attempt's error, when that attempt may have been applied: it failed in a way that
    /// does not prove the request never entered the log (a timeout, a lost connection, a node stopping).
    maybe_applied: Option<ClientError>,
}

/// Whether `status` is the client's own report of a connection that could not be made (refused,
/// unreachable, TLS handshake failed): the request was never sent. A status received from a node has no
/// source, so a node cannot claim this.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A random non-zero session id (std's randomly keyed hasher over the time and a process-wide counter).
fn random_session_id() -> u64 {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::collections::hash_map::RandomState::new().hash_one((
        n,
        std::process::id(),
        std::time::SystemTime::now(),
    )) | 1
}
