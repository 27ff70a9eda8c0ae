//! A session write answered `session-unknown` runs again in a new session only when no earlier attempt
//! of it may have been applied; otherwise the client reports that its outcome is unknown, instead of
//! applying it a second time.

mod fake;

use fake::serve;
use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drakkar_client::pb;
use drakkar_client::{Client, ClientConfig, ClientError, LEADER_HEADER, REASON_HEADER, reason};
use tonic::{Code, Request, Response, Status};

/// What the fake node does with one Put attempt.
#[derive(Clone, Debug)]
enum Step {
    /// Applies the write (once per session position) and answers OK.
    Apply,
    /// Applies the write, then answers UNAVAILABLE without a reason, as a connection lost after the
    /// proposal would.
    ApplyThenUnavailable,
    /// Applies the write, then answers only after this long (past the client's attempt deadline).
    ApplyThenStall(Duration),
    /// Refuses before proposing: UNAVAILABLE `no-leader`, naming this address as the leader.
    NoLeader(String),
    /// FAILED_PRECONDITION `session-unknown`, as the real server answers a write on a session it no
    /// longer knows; not applied.
    SessionUnknown,
}

/// A fake node: Put attempts follow `script` (then [`Step::Apply`]); it records every Put's session
/// position, every write it applied, and every OpenSession.
#[derive(Clone, Default)]
struct Fake {
    script: Arc<Mutex<VecDeque<Step>>>,
    puts: Arc<Mutex<Vec<pb::SessionRef>>>,
    /// (session, series) of every write applied; a position is applied once, as the real group does.
    applied: Arc<Mutex<BTreeSet<(u64, u64)>>>,
    /// The session ids asked for, one per OpenSession call.
    opened: Arc<Mutex<Vec<u64>>>,
}

impl Fake {
    fn scripted(steps: impl IntoIterator<Item = Step>) -> Self {
        Fake { script: Arc::new(Mutex::new(steps.into_iter().collect())), ..Fake::default() }
    }

    fn apply(&self, s: &pb::SessionRef) {
        self.applied.lock().unwrap().insert((s.client_id, s.series));
    }

    fn puts(&self) -> usize {
        self.puts.lock().unwrap().len()
    }

    fn applied(&self) -> usize {
        self.applied.lock().unwrap().len()
    }

    fn opened(&self) -> usize {
        self.opened.lock().unwrap().len()
    }
}

fn ok() -> Response<pb::PutResponse> {
    Response::new(pb::PutResponse { prev: None, new: Some(pb::KeyMeta { version: 1, ..Default::default() }) })
}

fn with_reason(mut s: Status, r: &str) -> Status {
    s.metadata_mut().insert(REASON_HEADER, r.parse().unwrap());
    s
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Fake {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let session = req.into_inner().session.expect("writes carry a session");
        self.puts.lock().unwrap().push(session);
        let step = self.script.lock().unwrap().pop_front().unwrap_or(Step::Apply);
        match step {
            Step::Apply => {
                self.apply(&session);
                Ok(ok())
            }
            Step::ApplyThenUnavailable => {
                self.apply(&session);
                Err(Status::unavailable("connection reset"))
            }
            Step::ApplyThenStall(d) => {
                self.apply(&session);
                tokio::time::sleep(d).await;
                Ok(ok())
            }
            Step::NoLeader(leader) => {
                let mut s = with_reason(Status::unavailable("no leader here"), reason::NO_LEADER);
                s.metadata_mut().insert(LEADER_HEADER, leader.parse().unwrap());
                Err(s)
            }
            Step::SessionUnknown => {
                Err(with_reason(Status::failed_precondition("session unknown"), reason::SESSION_UNKNOWN))
            }
        }
    }
    unimplemented_rpcs!(get, delete, delete_range, scan, compare_and_swap, txn);
}

#[tonic::async_trait]
impl pb::session_server::Session for Fake {
    async fn open_session(
        &self,
        req: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        let client_id = req.into_inner().client_id;
        self.opened.lock().unwrap().push(client_id);
        Ok(Response::new(pb::OpenSessionResponse { client_id }))
    }
    async fn close_session(
        &self,
        _: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        Ok(Response::new(pb::CloseSessionResponse {}))
    }
    unimplemented_rpcs!(propose_in_session);
}

fn client(endpoint: &str) -> Client {
    let mut c = ClientConfig::new([endpoint]);
    c.request_timeout = Duration::from_millis(300);
    c.retry_for = Duration::from_secs(5);
    Client::new(c).unwrap()
}

/// The client's verdict on a write whose first attempt was applied but not answered, and whose second
/// attempt found the session gone.
async fn applied_then_session_unknown(first: Step) {
    let fake = Fake::scripted([first, Step::SessionUnknown]);
    let (addr, _stop) = serve(fake.clone()).await;
    let err = client(&addr).put(1, "k", "v").await.expect_err("the outcome is not known");
    match &err {
        ClientError::OutcomeUnknown { earlier, last } => {
            assert_eq!(last.reason(), Some(reason::SESSION_UNKNOWN), "{err}");
            assert!(earlier.retryable(true), "the earlier attempt was retried: {err}");
        }
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(fake.applied(), 1, "the write was applied once");
    assert_eq!(fake.puts(), 2, "no attempt of the write after session-unknown");
    assert_eq!(fake.opened(), 1, "no new session was opened to run the write again");
}

#[tokio::test]
async fn an_unanswered_attempt_then_session_unknown_is_an_unknown_outcome() {
    applied_then_session_unknown(Step::ApplyThenUnavailable).await;
}

#[tokio::test]
async fn a_timed_out_attempt_then_session_unknown_is_an_unknown_outcome() {
    applied_then_session_unknown(Step::ApplyThenStall(Duration::from_millis(1500))).await;
}

#[tokio::test]
async fn session_unknown_on_the_first_attempt_reopens_the_session() {
    let fake = Fake::scripted([Step::SessionUnknown]);
    let (addr, _stop) = serve(fake.clone()).await;
    client(&addr).put(1, "k", "v").await.expect("the write runs in a new session");
    let puts = fake.puts.lock().unwrap().clone();
    let opened = fake.opened.lock().unwrap().clone();
    assert_eq!(opened.len(), 2, "one session, then a new one");
    assert_ne!(opened[0], opened[1]);
    assert_eq!(puts.iter().map(|s| s.client_id).collect::<Vec<_>>(), opened, "a put in each session");
    assert_eq!(fake.applied(), 1, "applied once");
}

#[tokio::test]
async fn refusals_before_sending_then_session_unknown_reopen_the_session() {
    // A leader hint to an address nobody listens on: that attempt's connection is refused, nothing sent.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let fake = Fake::scripted([Step::NoLeader(dead), Step::SessionUnknown]);
    let (addr, _stop) = serve(fake.clone()).await;
    client(&addr).put(1, "k", "v").await.expect("no attempt was applied: the write runs in a new session");
    // no-leader, (refused at the hinted address), session-unknown, then the write in the new session.
    assert_eq!(fake.puts(), 3);
    assert_eq!(fake.opened(), 2);
    assert_eq!(fake.applied(), 1);
}

#[tokio::test]
async fn other_failures_reach_the_caller_unchanged() {
    // Without a session-unknown answer nothing changes: the last attempt's failure reaches the caller as
    // the node's status.
    let fake = Fake::scripted([Step::ApplyThenUnavailable]);
    let (addr, _stop) = serve(fake.clone()).await;
    let mut cfg = ClientConfig::new([addr.as_str()]);
    cfg.retry_for = Duration::ZERO;
    let err = Client::new(cfg).unwrap().put(1, "k", "v").await.expect_err("one attempt, failed");
    assert_eq!(err.code(), Some(Code::Unavailable), "{err:?}");
    assert_eq!(fake.puts(), 1);
}

#[tokio::test]
async fn a_refusal_after_an_unanswered_attempt_is_an_unknown_outcome() {
    // The first attempt is applied and its answer lost; every later one is refused before proposing
    // (no leader) until the client gives up. The refusal says nothing of the first attempt.
    let fake = Fake::scripted([Step::ApplyThenUnavailable]);
    let (addr, _stop) = serve(fake.clone()).await;
    fake.script.lock().unwrap().extend(std::iter::repeat_n(Step::NoLeader(addr.clone()), 1000));
    let mut cfg = ClientConfig::new([addr.as_str()]);
    cfg.request_timeout = Duration::from_millis(300);
    cfg.retry_for = Duration::from_secs(1);
    let err = Client::new(cfg).unwrap().put(1, "k", "v").await.expect_err("the outcome is not known");
    match &err {
        ClientError::OutcomeUnknown { last, .. } => {
            assert_eq!(last.reason(), Some(reason::NO_LEADER), "{err}");
        }
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(fake.applied(), 1, "the write was applied once");
}
