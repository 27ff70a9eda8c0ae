//! Exactly-once sessions under a NodeHost, at their limits: more unacknowledged results than a session
//! keeps, expiry in log time, retried registrations, and retries after a restart of an on-disk state
//! machine; and plain proposals delivered twice between nodes.

use drakkar_sim::harness as common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Cluster, T, fast_group};
use drakkar::session::MAX_PENDING_PER_SESSION;
use drakkar::{GroupConfig, NodeError, Session, StartMode, StateMachineBox};
use drakkar_kv::{Command, CommandResult, DiskKv};
use drakkar_raft::{GroupId, ReplicaId};
use drakkar_sim::{NetFaults, SimNetwork};

const G: GroupId = GroupId(1);

fn single(cfg: GroupConfig) -> Cluster {
    let c = Cluster::new(1);
    c.start_group(1, &[1], cfg);
    c
}

/// The count of updates the test state machine applied.
async fn updates(c: &Cluster) -> u64 {
    let raw = c.hosts[&1].read(G, Bytes::from_static(b"#updates"), T).await.unwrap();
    String::from_utf8(raw.to_vec()).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_past_the_per_session_limit_is_refused_never_applied_twice() {
    let c = single(fast_group());
    let _ = c.leader(1).await;
    let h = &c.hosts[&1];
    let mut s = h.open_session(G, None, T).await.unwrap();
    let first = s.clone();
    // Series 1 is answered but, as for a request whose answer was lost, never acknowledged; 4,096 more
    // writes of the session follow, every one unacknowledged (responded_to stays 0).
    // Series 1 first, then the others all at once (in any order: only the smallest result is evicted).
    h.propose_in_session(&s, Bytes::from_static(b"k0=v"), T).await.unwrap();
    let mut pending = Vec::new();
    for n in 1..=MAX_PENDING_PER_SESSION as u64 {
        s = Session::resume(G, s.client_id(), s.series() + 1, s.responded_to());
        let (h, s) = (h.clone(), s.clone());
        pending.push(tokio::spawn(async move {
            h.propose_in_session(&s, Bytes::from(format!("k{n}=v")), T).await
        }));
    }
    let mut results = Vec::new();
    for p in pending {
        results.push(p.await.unwrap().unwrap());
    }
    let before = updates(&c).await;
    assert_eq!(before, MAX_PENDING_PER_SESSION as u64 + 1);
    // The late retry of series 1: its result was evicted. It must not be applied again.
    match h.propose_in_session(&first, Bytes::from_static(b"k0=v"), T).await {
        Err(NodeError::SessionResultForgotten) => {}
        other => panic!("a retry of an evicted series: {other:?}"),
    }
    assert_eq!(updates(&c).await, before, "the retry was applied a second time");
    // Series 2's result is still kept: its retry gets the first application's result.
    let second = Session::resume(G, first.client_id(), 2, first.responded_to());
    assert_eq!(h.propose_in_session(&second, Bytes::from_static(b"k1=v"), T).await.unwrap(), results[0]);
    assert_eq!(updates(&c).await, before, "the retry of series 2 was applied again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_session_expires_in_log_time() {
    let c = single(GroupConfig { session_ttl_entries: 20, ..fast_group() });
    let _ = c.leader(1).await;
    let h = &c.hosts[&1];
    let idle = h.open_session(G, None, T).await.unwrap();
    let mut busy = h.open_session(G, None, T).await.unwrap();
    for n in 0..30 {
        h.propose_in_session(&busy, Bytes::from(format!("b{n}=1")), T).await.unwrap();
        busy.proposal_completed();
    }
    // `idle` was last used more than 20 entries ago: gone, and its write is not applied.
    let before = updates(&c).await;
    match h.propose_in_session(&idle, Bytes::from_static(b"late=1"), T).await {
        Err(NodeError::SessionUnknown) => {}
        other => panic!("a write in an expired session: {other:?}"),
    }
    assert_eq!(updates(&c).await, before);
    match h.close_session(idle, T).await {
        Err(NodeError::SessionUnknown) => {}
        other => panic!("closing an expired session: {other:?}"),
    }
    // `busy` was used all along.
    h.propose_in_session(&busy, Bytes::from_static(b"still=1"), T).await.unwrap();
    h.close_session(busy, T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_registration_opens_one_session_and_keeps_its_results() {
    let c = single(fast_group());
    let _ = c.leader(1).await;
    let h = &c.hosts[&1];
    let s = h.open_session(G, Some(0xABCD), T).await.unwrap();
    assert_eq!(s.client_id(), 0xABCD);
    let first = h.propose_in_session(&s, Bytes::from_static(b"x=1"), T).await.unwrap();
    // The answer to the registration was lost, say: the retry registers nothing new and forgets nothing.
    let again = h.open_session(G, Some(0xABCD), T).await.unwrap();
    assert_eq!(again.client_id(), s.client_id());
    assert_eq!(h.propose_in_session(&s, Bytes::from_static(b"x=1"), T).await.unwrap(), first);
    assert_eq!(updates(&c).await, 1);
    assert!(matches!(h.open_session(G, Some(0), T).await, Err(NodeError::InvalidArgument(_))));
}

fn put(k: &str, v: &str) -> Bytes {
    Command::Put { key: Bytes::from(k.to_string()), value: Bytes::from(v.to_string()) }.encode().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_restart_of_the_on_disk_kv_gets_the_first_result() {
    let mut c = Cluster::new(1);
    let disk = |c: &Cluster| StateMachineBox::on_disk(Arc::new(DiskKv::new(c.dirs[&1].join("kv.redb"))));
    let members = Cluster::members([1]);
    c.hosts[&1].start_replica(G, ReplicaId(1), StartMode::Founding(members), disk(&c), fast_group()).unwrap();
    let _ = c.leader(1).await;
    let h = c.hosts[&1].clone();
    h.propose(G, put("k", "v1"), T).await.unwrap();
    let s = h.open_session(G, None, T).await.unwrap();
    let first = h.propose_in_session(&s, put("k", "v2"), T).await.unwrap();
    let CommandResult::Put { prev: Some(prev), .. } = CommandResult::decode(&first.data).unwrap() else {
        panic!("a put over a key answers its previous version");
    };
    // A snapshot before the session write would let the log replay it; none is taken (snapshot_entries
    // 0), and the store syncs on close: after the restart the write is in the store, not applied again.
    h.close();
    drop(h);
    c.hosts.remove(&1);
    let h = c.start_host(1);
    h.start_replica(G, ReplicaId(1), StartMode::Joining, disk(&c), fast_group()).unwrap();
    let _ = c.leader(1).await;
    let retry = h.propose_in_session(&s, put("k", "v2"), T).await.unwrap();
    assert_eq!(retry, first, "the retry after a restart gets the first application's result");
    match CommandResult::decode(&retry.data).unwrap() {
        CommandResult::Put { prev: Some(p), .. } => assert_eq!(p, prev),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_plain_proposal_delivered_twice_is_applied_once() {
    let c = Cluster::on(SimNetwork::realtime(7).expect("network thread"), 3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    let follower = (1..=3).find(|&i| i != l).unwrap();
    // Every batch between the nodes is now delivered twice: each proposal the follower forwards reaches
    // the leader, and its log, twice.
    c.net.set_faults(NetFaults { dup_pct: 100, ..NetFaults::default() });
    for n in 0..20 {
        c.hosts[&follower].propose(G, Bytes::from(format!("p{n}=1")), T).await.unwrap();
    }
    c.net.set_faults(NetFaults::default());
    let raw = c.hosts[&l].read(G, Bytes::from_static(b"#updates"), T).await.unwrap();
    assert_eq!(String::from_utf8(raw.to_vec()).unwrap(), "20", "plain proposals applied more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_proposals_after_a_replica_restart_on_the_same_host_are_applied() {
    let c = single(fast_group());
    let _ = c.leader(1).await;
    let h = &c.hosts[&1];
    for n in 0..3 {
        h.propose(G, Bytes::from(format!("a{n}=1")), T).await.unwrap();
    }
    // The replica restarts inside the same NodeHost: its new proposals must not be taken for copies of
    // the ones made before (they get a new origin).
    h.stop_replica(G).await.unwrap();
    h.start_replica(G, ReplicaId(1), StartMode::Joining, common::sm(), fast_group()).unwrap();
    let _ = c.leader(1).await;
    h.propose(G, Bytes::from_static(b"b=1"), T).await.unwrap();
    assert_eq!(updates(&c).await, 4);
}
