//! The client against fake nodes: it follows a leader hint, and retries a write with the same session
//! position (so a node can apply it once).

mod fake;

use fake::serve;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drakkar_client::pb::{self, Consistency};
use drakkar_client::{Client, ClientConfig, LEADER_HEADER, REASON_HEADER, reason};
use tonic::{Request, Response, Status};

/// A fake node: `get` answers with `hint` (as UNAVAILABLE + leader hint) or a value; `put` fails the
/// first `fail_puts` times without a reason (as a broken connection would), recording every session
/// position it sees.
#[derive(Clone, Default)]
struct Fake {
    hint: Option<String>,
    fail_puts: Arc<Mutex<u32>>,
    seen: Arc<Mutex<Vec<pb::SessionRef>>>,
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Fake {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let r = req.into_inner();
        self.seen.lock().unwrap().push(r.session.expect("writes carry a session"));
        let mut fail = self.fail_puts.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(Status::unavailable("connection reset"));
        }
        Ok(Response::new(pb::PutResponse {
            prev: None,
            new: Some(pb::KeyMeta { version: 1, ..Default::default() }),
        }))
    }
    async fn get(&self, _: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        if let Some(h) = &self.hint {
            let mut s = Status::unavailable("not here");
            s.metadata_mut().insert(LEADER_HEADER, h.parse().unwrap());
            s.metadata_mut().insert(REASON_HEADER, reason::NO_LEADER.parse().unwrap());
            return Err(s);
        }
        let kv = pb::KeyValue { key: "k".into(), value: "from-leader".into(), meta: None };
        Ok(Response::new(pb::GetResponse { kv: Some(kv) }))
    }
    unimplemented_rpcs!(delete, delete_range, scan, compare_and_swap, txn);
}

#[tonic::async_trait]
impl pb::session_server::Session for Fake {
    async fn open_session(
        &self,
        _: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::OpenSessionResponse>, Status> {
        Ok(Response::new(pb::OpenSessionResponse { client_id: 77 }))
    }
    async fn close_session(
        &self,
        _: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        Ok(Response::new(pb::CloseSessionResponse {}))
    }
    unimplemented_rpcs!(propose_in_session);
}

fn config(endpoints: Vec<String>) -> ClientConfig {
    let mut c = ClientConfig::new(endpoints);
    c.retry_for = Duration::from_secs(5);
    c
}

#[tokio::test]
async fn a_leader_hint_is_followed() {
    let (leader, _l) = serve(Fake::default()).await;
    let (follower, _f) = serve(Fake { hint: Some(leader.clone()), ..Fake::default() }).await;
    // The client only knows the follower.
    let client = Client::new(config(vec![follower])).unwrap();
    let kv = client.get(1, "k", Consistency::Linearizable).await.unwrap();
    assert_eq!(kv.map(|k| k.value), Some("from-leader".into()));
}

#[tokio::test]
async fn a_retried_write_keeps_its_session_position() {
    let fake = Fake { fail_puts: Arc::new(Mutex::new(2)), ..Fake::default() };
    let (a, _a) = serve(fake.clone()).await;
    let client = Client::new(config(vec![a])).unwrap();
    client.put(1, "k", "v").await.unwrap();
    client.put(1, "k2", "v").await.unwrap();
    let seen = fake.seen.lock().unwrap().clone();
    let series: Vec<(u64, u64, u64)> = seen.iter().map(|s| (s.client_id, s.series, s.responded_to)).collect();
    // Two failed attempts and the success of write 1 reuse series 1; write 2 acknowledges it.
    assert_eq!(series, vec![(77, 1, 0), (77, 1, 0), (77, 1, 0), (77, 2, 1)]);
}

#[tokio::test]
async fn a_write_without_a_session_is_not_retried_after_an_ambiguous_failure() {
    let fake = Fake { fail_puts: Arc::new(Mutex::new(1)), ..Fake::default() };
    let (a, _a) = serve(fake.clone()).await;
    let mut cfg = config(vec![a]);
    cfg.exactly_once = false;
    let client = Client::new(cfg).unwrap();
    let err = client.put(1, "k", "v").await;
    assert!(err.is_err(), "an ambiguous failure must reach the caller");
}
