//! What every service does first: admission, deadline, routing; and the NodeHost calls they share. Also
//! [`guarded`], which every client service is wrapped in: the status codes of what tonic decides before a
//! handler runs.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use drakkar_client::{REASON_HEADER, pb, reason};
use drakkar_raft::GroupId;
use tokio::sync::OwnedSemaphorePermit;
use tokio_stream::Stream;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::service::AxumBody;
use tonic::{Code, Status};

use super::ServerState;
use super::status::{self, invalid, to_status, with_reason};
use crate::authz::{Authz, Caller};
use crate::incoming::ConnInfo;
use drakkar::statemachine::SmResult;
use drakkar::{NodeError, Session};
use drakkar_kv::{Command, CommandResult, Query, QueryResult};

/// One request's admission slot, deadline, and whether a node forwarded it.
pub(super) struct Call {
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) timeout: Duration,
    pub(super) forwarded: bool,
}

/// Where a request for a group is served.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// A replica runs here.
    Local,
    /// Another node must serve it.
    Forward,
}

impl ServerState {
    pub(super) fn begin<T>(&self, req: &tonic::Request<T>) -> Result<Call, Status> {
        let permit = self.admit()?;
        Ok(Call {
            _permit: permit,
            timeout: status::deadline(req, self.cfg.default_timeout, self.cfg.max_timeout),
            forwarded: status::is_forwarded(req),
        })
    }

    /// Routes a request on `group`; `kv`: it needs the built-in KV state machine. A witness replica holds
    /// no data: a node whose replica is one routes like a node without a replica, and so does a node
    /// whose joining replica has not applied its own addition yet (it may turn out a witness).
    pub(super) fn route(&self, group: GroupId, kv: bool, call: &Call) -> Result<Route, Status> {
        if matches!(self.host.replica_info(group).map(|i| i.serves_data), Ok(true)) {
            if kv && self.kv_kind(group).is_none() {
                return Err(with_reason(
                    Code::FailedPrecondition,
                    format!("group {group} does not run the built-in KV state machine"),
                    reason::NOT_KV,
                ));
            }
            return Ok(Route::Local);
        }
        if call.forwarded {
            // Only one hop: the forwarding node tries the next candidate.
            return Err(to_status(NodeError::GroupNotFound(group), &self.host, group));
        }
        Ok(Route::Forward)
    }

    /// Proposes `cmd` (in a session if given) and waits for its result.
    pub(super) async fn propose(
        &self,
        group: GroupId,
        cmd: Bytes,
        session: Option<pb::SessionRef>,
        timeout: Duration,
    ) -> Result<SmResult, Status> {
        let r = match session {
            Some(s) => {
                let s = Session::resume(group, s.client_id, s.series, s.responded_to);
                self.host.propose_in_session(&s, cmd, timeout).await
            }
            None => self.host.propose(group, cmd, timeout).await,
        };
        r.map_err(|e| to_status(e, &self.host, group))
    }

    /// Runs a query, linearizable or stale.
    pub(super) async fn query(
        &self,
        group: GroupId,
        query: Bytes,
        consistency: i32,
        timeout: Duration,
    ) -> Result<Bytes, Status> {
        let r = match pb::Consistency::try_from(consistency) {
            Ok(pb::Consistency::Linearizable) => self.host.read(group, query, timeout).await,
            Ok(pb::Consistency::Stale) => self.host.stale_read(group, &query),
            Err(_) => return Err(invalid(format!("unknown consistency {consistency}"))),
        };
        r.map_err(|e| to_status(e, &self.host, group))
    }

    /// Proposes a KV command; a command the state machine rejects is INVALID_ARGUMENT.
    pub(super) async fn propose_kv(
        &self,
        group: GroupId,
        cmd: &Command,
        session: Option<pb::SessionRef>,
        timeout: Duration,
    ) -> Result<CommandResult, Status> {
        let bytes = cmd.encode().map_err(|e| invalid(e.to_string()))?;
        let r = self.propose(group, bytes, session, timeout).await?;
        match CommandResult::decode(&r.data) {
            Ok(CommandResult::Rejected { reason }) => Err(invalid(reason)),
            Ok(res) => Ok(res),
            Err(e) => Err(status::internal(format!("undecodable KV result: {e}"))),
        }
    }

    /// Runs a KV query.
    pub(super) async fn query_kv(
        &self,
        group: GroupId,
        q: &Query,
        consistency: i32,
        timeout: Duration,
    ) -> Result<QueryResult, Status> {
        let bytes = q.encode().map_err(|e| invalid(e.to_string()))?;
        let r = self.query(group, bytes, consistency, timeout).await?;
        QueryResult::decode(&r).map_err(|e| status::internal(format!("undecodable KV answer: {e}")))
    }
}

/// A KV result of the wrong kind for the command (a bug, never bad input).
pub(super) fn unexpected(what: &str, r: impl std::fmt::Debug) -> Status {
    status::internal(format!("unexpected KV result for {what}: {r:?}"))
}

/// The share of a request's `grpc-timeout` after which [`Guarded`] answers DEADLINE_EXCEEDED: after the
/// handlers' own deadline ([`status::deadline`], 0.95), before tonic's (1.0, answered CANCELLED "Timeout
/// expired").
const GUARD_DEADLINE: f64 = 0.98;

/// `svc` wrapped in [`Guarded`], with the node's deadlines: `default` for a request without
/// `grpc-timeout`, and no request longer than `max`.
pub(super) fn guarded<S>(svc: S, default: Duration, max: Duration) -> Guarded<S> {
    Guarded { inner: svc, deadlines: Some(Deadlines { default, max }), budget: None, authz: None }
}

/// `svc` wrapped in [`Guarded`] for its status codes only: a request runs as long as its `grpc-timeout`
/// says, or without end when it has none (the Raft service's streams live as long as the connection).
pub(super) fn guarded_codes<S>(svc: S) -> Guarded<S> {
    Guarded { inner: svc, deadlines: None, budget: None, authz: None }
}

/// The bytes of request messages a node receives at once ([`crate::ServerConfig::max_in_flight_bytes`]),
/// across every connection: a message's announced length is taken from it when its frame header
/// arrives, and given back when the next message of the stream begins or the request body is dropped.
/// A message that does not fit is refused (RESOURCE_EXHAUSTED, `busy`) before its bytes are buffered.
#[derive(Debug)]
pub struct ByteBudget {
    bytes: Arc<tokio::sync::Semaphore>,
    limit: u64,
    refused: AtomicU64,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<ByteBudget> {
        let permits = limit.min(tokio::sync::Semaphore::MAX_PERMITS as u64) as usize;
        Arc::new(ByteBudget {
            bytes: Arc::new(tokio::sync::Semaphore::new(permits)),
            limit,
            refused: AtomicU64::new(0),
        })
    }

    /// `n` bytes of the budget, held until the permit drops; None (counted) when they are not free.
    fn take(&self, n: usize) -> Option<OwnedSemaphorePermit> {
        let taken = u32::try_from(n).ok().and_then(|n| self.bytes.clone().try_acquire_many_owned(n).ok());
        if taken.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        taken
    }

    /// Bytes of the budget free now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// The refusal counter in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        format!(
            "# HELP drakkar_request_bytes_refused_total Requests refused: their message did not fit the bytes \
             the node receives at once ({} bytes).\n\
             # TYPE drakkar_request_bytes_refused_total counter\n\
             drakkar_request_bytes_refused_total {}\n",
            self.limit,
            self.refused.load(Ordering::Relaxed)
        )
    }
}

/// The methods whose requests are streams as long as the data they carry: without `grpc-timeout`, they get
/// the longest deadline, not the default (docs/api.md, ImportSnapshot).
const LONG_STREAMS: &[&str] = &["/drakkar.v1.Admin/ImportSnapshot"];

/// The node's request deadlines (docs/api.md: 10 s when absent, at most 60 s).
#[derive(Clone, Copy, Debug)]
struct Deadlines {
    default: Duration,
    max: Duration,
}

impl Deadlines {
    /// When the guard ends a request on `path` whose `grpc-timeout` is `asked`: 98 % of it, at most
    /// `max`; without one, the default (or `max` for the [`LONG_STREAMS`]). A handler's own deadline
    /// ([`status::deadline`]: 95 % of `asked`, the default, at most `max`) is never later.
    fn of(self, path: &str, asked: Option<Duration>) -> Duration {
        let absent = if LONG_STREAMS.contains(&path) { self.max } else { self.default };
        asked.map_or(absent, |t| t.mul_f64(GUARD_DEADLINE)).min(self.max)
    }
}

/// A service behind the node's authorization (with [`Guarded::with_authz`]: a caller without the role an
/// RPC needs is answered at once, see [`crate::authz`]), with tonic's own answers put right (docs/api.md):
/// - a request still running at 98 % of its `grpc-timeout` is answered DEADLINE_EXCEEDED (and its handler
///   dropped), where tonic would answer CANCELLED "Timeout expired" at 100 %; with the node's deadlines
///   ([`guarded`]), also one still running at its default deadline when it has no `grpc-timeout` (a
///   request whose body never ends, which no handler sees), or at the longest deadline;
/// - a request body that ends inside a message (truncated) is INVALID_ARGUMENT, where tonic answers
///   INTERNAL "Unexpected EOF";
/// - a compressed message is INVALID_ARGUMENT (the node negotiates no compression), where tonic answers
///   INTERNAL "protocol error";
/// - a unary request without a message is INVALID_ARGUMENT, where tonic answers INTERNAL "Missing request
///   message.";
/// - a call this node made for the request (forwarding) that ran out of the request's deadline is
///   DEADLINE_EXCEEDED, where tonic's client answers CANCELLED "Timeout expired".
///
/// Undecodable messages are the codec's part ([`drakkar_client::codec`]).
#[derive(Clone, Debug)]
pub struct Guarded<S> {
    inner: S,
    /// None: the request's own `grpc-timeout` only.
    deadlines: Option<Deadlines>,
    /// The node's request byte budget (None: unbounded here, e.g. the Raft service's own limits).
    budget: Option<Arc<ByteBudget>>,
    /// Who may call what, checked before anything else (None: everyone).
    authz: Option<Arc<Authz>>,
}

impl<S> Guarded<S> {
    /// Request messages take their length from `budget` while they are received.
    pub(super) fn with_budget(mut self, budget: Arc<ByteBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Requests are answered only for callers `authz` lets call them (see [`crate::authz`]).
    pub(super) fn with_authz(mut self, authz: Arc<Authz>) -> Self {
        self.authz = Some(authz);
        self
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if let Some(authz) = &self.authz {
            // Every connection the server accepts carries its ConnInfo; a request without one is anonymous.
            static ANONYMOUS: Caller = Caller::Anonymous;
            // Borrowed from the connection: no copy of the subject per request.
            let caller = req.extensions().get::<ConnInfo>().map_or(&ANONYMOUS, |i| &i.caller);
            let forwarded = req.headers().contains_key(drakkar_client::FORWARDED_HEADER);
            if let Err(status) = authz.check(caller, req.uri().path(), forwarded) {
                tracing::debug!(path = req.uri().path(), error = %status.message(), "RPC refused");
                // Cut like every answer: a certificate subject may be long.
                return Box::pin(async move { Ok(short_trailers(status.into_http())) });
            }
        }
        let asked = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(status::parse_grpc_timeout);
        let deadline = match self.deadlines {
            Some(d) => Some(d.of(req.uri().path(), asked)),
            None => asked.map(|t| t.mul_f64(GUARD_DEADLINE)),
        };
        let budget = self.budget.clone();
        let req = req.map(|b| {
            let framing = Framing::new(AxumBody::new(b).into_data_stream()).with_budget(budget);
            Body::new(AxumBody::from_stream(framing))
        });
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = match deadline {
                None => fut.await?,
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r?,
                    Err(_) => {
                        let msg = format!("the request did not complete within its deadline of {t:?}");
                        return Ok(Status::deadline_exceeded(msg).into_http());
                    }
                },
            };
            Ok(short_trailers(documented_codes(resp)))
        })
    }
}

/// tonic's answers that the server puts right, as their headers carry them (`grpc-message` is
/// percent-encoded): a unary request without a message (INTERNAL), and a deadline tonic enforced
/// (CANCELLED), here or on a call this node made for the request (forwarding to another node).
static MISSING: LazyLock<Option<http::HeaderValue>> =
    LazyLock::new(|| grpc_message(Status::internal("Missing request message.")));
static TIMEOUT: LazyLock<Option<http::HeaderValue>> =
    LazyLock::new(|| grpc_message(Status::cancelled(tonic::TimeoutExpired(()).to_string())));

fn grpc_message(s: Status) -> Option<http::HeaderValue> {
    s.into_http::<Body>().headers().get("grpc-message").cloned()
}

/// `resp` with tonic's INTERNAL for a missing message made INVALID_ARGUMENT, and its CANCELLED for an
/// expired deadline made DEADLINE_EXCEEDED.
fn documented_codes(mut resp: http::Response<Body>) -> http::Response<Body> {
    if let Some(short) = resp.headers().get("grpc-message").and_then(|m| shortened(m.as_bytes())) {
        resp.headers_mut().insert("grpc-message", short);
    }
    let h = resp.headers();
    let (status, message) = (h.get("grpc-status").map(|v| v.as_bytes()), h.get("grpc-message"));
    let (code, text, why) = match status {
        Some(b"13") if message == MISSING.as_ref() => {
            ("3", "the%20request%20holds%20no%20message", Some(reason::INVALID))
        }
        Some(b"1") if message == TIMEOUT.as_ref() => {
            ("4", "the%20request%20did%20not%20complete%20within%20its%20deadline", None)
        }
        _ => return resp,
    };
    let h = resp.headers_mut();
    h.insert("grpc-status", http::HeaderValue::from_static(code));
    h.insert("grpc-message", http::HeaderValue::from_static(text));
    if let Some(w) = why {
        h.insert(REASON_HEADER, http::HeaderValue::from_static(w));
    }
    resp
}

/// The longest `grpc-message` the node sends, percent-encoded. A status message is an HTTP/2 header: one
/// quoting a large input (a 2 MiB sender address) exceeded the client's header list limit and broke its
/// whole connection, failing every call on it.
const MAX_STATUS_MESSAGE: usize = 1024;

/// `resp` whose trailers' `grpc-message` (a stream's status, or one sent after data) is cut as in
/// [`shortened`]: a server-reflection `NotFound` quoted a 64 KiB symbol there, past the client's header
/// list limit, and the client closed the connection with every call on it.
fn short_trailers(resp: http::Response<Body>) -> http::Response<Body> {
    use http_body_util::BodyExt;
    resp.map(|body| {
        Body::new(body.map_frame(|frame| match frame.into_trailers() {
            Ok(mut trailers) => {
                if let Some(short) = trailers.get("grpc-message").and_then(|m| shortened(m.as_bytes())) {
                    trailers.insert("grpc-message", short);
                }
                http_body::Frame::trailers(trailers)
            }
            Err(frame) => frame,
        }))
    })
}

/// A `grpc-message` longer than [`MAX_STATUS_MESSAGE`] cut to it, marker ` (cut)` included (never inside
/// a `%XX` escape nor a UTF-8 character); None when it is short enough.
fn shortened(m: &[u8]) -> Option<http::HeaderValue> {
    if m.len() <= MAX_STATUS_MESSAGE {
        return None;
    }
    const MARK: &[u8] = b"%20(cut)";
    let mut cut = MAX_STATUS_MESSAGE - MARK.len();
    if let Some(p) = m[cut - 2..cut].iter().position(|&b| b == b'%') {
        cut = cut - 2 + p;
    }
    // Nor inside a UTF-8 character: back off while the escape at `cut` is a continuation byte (its lead,
    // also escaped, comes before it).
    let continuation = |i: usize| {
        let hex = m.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        m[i] == b'%' && hex.and_then(|h| u8::from_str_radix(h, 16).ok()).is_some_and(|b| b & 0xc0 == 0x80)
    };
    while cut >= 3 && continuation(cut) {
        cut -= 3;
    }
    let mut v = m[..cut].to_vec();
    v.extend_from_slice(MARK);
    http::HeaderValue::from_bytes(&v).ok()
}

/// A request body's data, checked for gRPC framing (a flag byte and a 4-byte big-endian length, then the
/// message): a body that ends inside a frame, or a frame whose flag is not 0 (uncompressed: the node
/// negotiates no compression), ends with INVALID_ARGUMENT instead; one whose message does not fit the
/// node's [`ByteBudget`] ends with RESOURCE_EXHAUSTED.
struct Framing<S> {
    inner: S,
    /// A frame's flag was not 0: the body ends with INVALID_ARGUMENT, nothing more is passed on.
    compressed: bool,
    /// The budget messages take their length from (None: no budget).
    budget: Option<Arc<ByteBudget>>,
    /// The current message's share of the budget.
    held: Option<OwnedSemaphorePermit>,
    /// A message did not fit the budget: the body ends with RESOURCE_EXHAUSTED.
    over_budget: bool,
    /// The current frame header: its bytes seen so far (0..5).
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message still to come.
    body_left: usize,
    done: bool,
}

impl<S> Framing<S> {
    fn new(inner: S) -> Self {
        Framing {
            inner,
            compressed: false,
            budget: None,
            held: None,
            over_budget: false,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
            done: false,
        }
    }

    fn with_budget(mut self, budget: Option<Arc<ByteBudget>>) -> Self {
        self.budget = budget;
        self
    }

    fn account(&mut self, mut b: &[u8]) {
        while !b.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(b.len());
                self.body_left -= n;
                b = &b[n..];
                continue;
            }
            let n = (5 - self.header_len).min(b.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&b[..n]);
            self.header_len += n;
            b = &b[n..];
            if self.header_len == 5 {
                let [flag, l0, l1, l2, l3] = self.header;
                self.compressed |= flag != 0;
                self.body_left = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
                self.header_len = 0;
                // The previous message was received whole: its share goes back before this one's is taken.
                self.held = None;
                if let Some(b) = &self.budget {
                    self.held = b.take(self.body_left);
                    self.over_budget |= self.held.is_none();
                }
            }
        }
    }
}

impl<S, E> Stream for Framing<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<tonic::codegen::StdError>,
{
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(data))) => {
                self.account(&data);
                if self.compressed {
                    self.done = true;
                    let msg = "a compressed message: this node accepts no compression (no grpc-encoding)";
                    return Poll::Ready(Some(Err(status::invalid(msg))));
                }
                if self.over_budget {
                    self.done = true;
                    self.held = None;
                    let msg = "the node is receiving too many request bytes at once; retry later";
                    return Poll::Ready(Some(Err(with_reason(Code::ResourceExhausted, msg, reason::BUSY))));
                }
                Poll::Ready(Some(Ok(data)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The request body broke off (its stream or connection failed): tonic's code for the
                // HTTP/2 reason (CANCELLED for a cancelled stream), UNAVAILABLE where it would answer
                // INTERNAL or UNKNOWN, which docs/api.md keeps for the node's own failures.
                let s = Status::from_error(e.into());
                Poll::Ready(Some(Err(match s.code() {
                    Code::Internal | Code::Unknown => {
                        Status::unavailable(format!("the request body broke off: {}", s.message()))
                    }
                    _ => s,
                })))
            }
            Poll::Ready(None) => {
                self.done = true;
                if self.header_len == 0 && self.body_left == 0 {
                    return Poll::Ready(None);
                }
                let msg = "the request body ends inside a message (truncated)";
                Poll::Ready(Some(Err(status::invalid(msg))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that never answers, or answers with `status`.
    #[derive(Clone)]
    struct Answer(Option<Code>, &'static str);

    impl Service<http::Request<Body>> for Answer {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _req: http::Request<Body>) -> Self::Future {
            let Answer(code, msg) = self.clone();
            Box::pin(async move {
                match code {
                    Some(c) => Ok(Status::new(c, msg).into_http()),
                    None => std::future::pending().await,
                }
            })
        }
    }

    async fn status_of(svc: Answer, timeout: Option<&str>) -> Status {
        let mut req = http::Request::builder().uri("/drakkar.v1.Kv/Get");
        if let Some(t) = timeout {
            req = req.header("grpc-timeout", t);
        }
        let resp = guarded(svc, DEFAULT, MAX).call(req.body(Body::empty()).unwrap()).await.unwrap();
        Status::from_header_map(resp.headers()).unwrap()
    }

    const DEFAULT: Duration = Duration::from_millis(300);
    const MAX: Duration = Duration::from_millis(600);

    /// Regression: a request without `grpc-timeout` whose body never ended (so no handler ever ran) was
    /// never answered; nor one whose `grpc-timeout` was past the 60 s cap before it.
    #[tokio::test]
    async fn the_guard_ends_requests_at_the_default_and_the_longest_deadline() {
        let started = std::time::Instant::now();
        let s = status_of(Answer(None, ""), None).await;
        assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
        let took = started.elapsed();
        assert!(took >= DEFAULT && took < DEFAULT + Duration::from_millis(150), "{took:?}");
        let started = std::time::Instant::now();
        let s = status_of(Answer(None, ""), Some("1H")).await;
        assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
        let took = started.elapsed();
        assert!(took >= MAX && took < MAX + Duration::from_millis(150), "{took:?}");
        // An import stream without grpc-timeout gets the longest deadline; a Raft stream has none.
        let d = Deadlines { default: DEFAULT, max: MAX };
        assert_eq!(d.of("/drakkar.v1.Admin/ImportSnapshot", None), MAX);
        assert_eq!(d.of("/drakkar.v1.Kv/Put", None), DEFAULT);
        assert_eq!(d.of("/drakkar.v1.Kv/Put", Some(Duration::from_millis(100))), Duration::from_millis(98));
        let mut raft = guarded_codes(Answer(None, ""));
        let req = http::Request::builder().uri("/drakkar.v1.Raft/SendMessages").body(Body::empty()).unwrap();
        let never = tokio::time::timeout(MAX * 2, raft.call(req)).await;
        assert!(never.is_err(), "a Raft stream without grpc-timeout was ended");
    }

    /// A status message quoting a large input is cut before it becomes a header no client takes.
    #[tokio::test]
    async fn long_status_messages_are_cut() {
        let long: &'static str = Box::leak(format!("bad {}", "\u{e9}".repeat(100_000)).into_boxed_str());
        let s = status_of(Answer(Some(Code::PermissionDenied), long), None).await;
        assert_eq!(s.code(), Code::PermissionDenied);
        assert!(
            s.message().starts_with("bad \u{e9}\u{e9}") && s.message().ends_with(" (cut)"),
            "{:?}",
            s.message()
        );
        assert!(s.message().len() < MAX_STATUS_MESSAGE, "{}", s.message().len());
        for n in 1000..1030 {
            let m = format!("{}%C3%A9", "a".repeat(n));
            let v = shortened(m.as_bytes()).unwrap_or_else(|| http::HeaderValue::from_str(&m).unwrap());
            let text = v.to_str().unwrap();
            assert!(!text.trim_end_matches("%20(cut)").ends_with('%'), "{text}");
        }
    }

    /// Regression: a status in the trailers (after data, or of a stream) was not cut.
    #[tokio::test]
    async fn long_status_messages_in_trailers_are_cut() {
        use http_body_util::BodyExt;
        let long = format!("symbol {} not found", "a".repeat(65_000));
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("5"));
        trailers.insert("grpc-message", http::HeaderValue::from_str(&long).unwrap());
        let frames = vec![
            Ok::<_, Status>(http_body::Frame::data(Bytes::from_static(b"data"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        let body = Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)));
        let resp = short_trailers(http::Response::new(body));
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"data"));
        let m = trailers.get("grpc-message").unwrap();
        assert!(m.len() <= MAX_STATUS_MESSAGE && m.to_str().unwrap().ends_with("%20(cut)"), "{m:?}");
        assert_eq!(trailers.get("grpc-status").unwrap(), "5");
    }

    /// Regression: a request body that broke off (HTTP/2 error) was answered INTERNAL.
    #[tokio::test]
    async fn a_broken_request_body_is_unavailable() {
        use tokio_stream::StreamExt;
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "h2 protocol error");
        let body: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from_static(&[0, 0, 0])), Err(broken)];
        let mut f = Framing::new(tokio_stream::iter(body));
        assert!(f.next().await.unwrap().is_ok());
        let e = f.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }

    /// Regression: a message with the compressed flag set was INTERNAL "protocol error".
    #[tokio::test]
    async fn a_compressed_message_is_invalid_argument() {
        use tokio_stream::StreamExt;
        let body: Vec<Result<Bytes, Infallible>> = vec![Ok(Bytes::from_static(&[1, 0, 0, 0, 2, 8, 1]))];
        let mut f = Framing::new(tokio_stream::iter(body));
        let e = f.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(f.next().await.is_none());
        // The same frame uncompressed passes as it is.
        let body: Vec<Result<Bytes, Infallible>> = vec![Ok(Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]))];
        let mut f = Framing::new(tokio_stream::iter(body));
        assert_eq!(f.next().await.unwrap().unwrap(), Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1]));
        assert!(f.next().await.is_none());
    }

    #[tokio::test]
    async fn the_guard_answers_its_deadline_and_puts_tonics_codes_right() {
        let started = std::time::Instant::now();
        let s = status_of(Answer(None, ""), Some("100m")).await;
        assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
        // At 98 ms (timers tick in milliseconds): tonic's own, at 100 ms, polls this one first.
        assert!(started.elapsed() < Duration::from_millis(150), "{:?}", started.elapsed());
        let s = status_of(Answer(Some(Code::Internal), "Missing request message."), None).await;
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert_eq!(s.metadata().get(REASON_HEADER).unwrap(), reason::INVALID);
        let s = status_of(Answer(Some(Code::Cancelled), "Timeout expired"), Some("5S")).await;
        assert_eq!(s.code(), Code::DeadlineExceeded, "{s:?}");
        // Other answers pass unchanged.
        for (code, msg) in [(Code::Internal, "disk on fire"), (Code::Cancelled, "client went away")] {
            let s = status_of(Answer(Some(code), msg), None).await;
            assert_eq!((s.code(), s.message()), (code, msg));
        }
    }

    #[tokio::test]
    async fn messages_take_their_length_from_the_byte_budget_while_received() {
        use tokio_stream::StreamExt;
        let frame = |len: u8| {
            let mut f = vec![0, 0, 0, 0, len];
            f.extend(std::iter::repeat_n(7u8, usize::from(len)));
            Ok::<Bytes, Infallible>(Bytes::from(f))
        };
        let budget = ByteBudget::new(250);
        // Two messages of 100 bytes being received fit; a third does not, and is answered busy.
        let mut a = Framing::new(tokio_stream::iter(vec![frame(100)])).with_budget(Some(budget.clone()));
        let mut b = Framing::new(tokio_stream::iter(vec![frame(100)])).with_budget(Some(budget.clone()));
        assert!(a.next().await.unwrap().is_ok());
        assert!(b.next().await.unwrap().is_ok());
        assert_eq!(budget.available(), 50);
        let mut c = Framing::new(tokio_stream::iter(vec![frame(100)])).with_budget(Some(budget.clone()));
        let e = c.next().await.unwrap().unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_eq!(e.metadata().get(REASON_HEADER).unwrap(), reason::BUSY);
        assert!(c.next().await.is_none());
        assert!(budget.metrics_text().contains("drakkar_request_bytes_refused_total 1"));
        // A finished body gives its share back; so does the next message of a stream.
        drop(a);
        assert_eq!(budget.available(), 150);
        let mut d =
            Framing::new(tokio_stream::iter(vec![frame(100), frame(20)])).with_budget(Some(budget.clone()));
        assert!(d.next().await.unwrap().is_ok());
        assert!(d.next().await.unwrap().is_ok());
        assert_eq!(budget.available(), 130, "the second message replaced the first's share");
        drop((b, d));
        assert_eq!(budget.available(), 250);
    }

    #[test]
    fn framing_tracks_message_boundaries() {
        let mut f = Framing::new(());
        f.account(&[0, 0, 0, 0, 3, 1, 2]);
        assert_eq!((f.header_len, f.body_left), (0, 1));
        f.account(&[3, 0, 0]);
        assert_eq!((f.header_len, f.body_left), (2, 0));
        f.account(&[0, 0, 0]);
        assert_eq!((f.header_len, f.body_left), (0, 0), "an empty message is a whole frame");
    }
}
