//! The built-in KV state machines under a NodeHost: the on-disk KV reopens at its applied index after a
//! restart and serves the data it had; the in-memory KV behind the same API.

use drakkar_sim::harness as common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Cluster, T, fast_group};
use drakkar::{StartMode, StateMachineBox};
use drakkar_kv::{Command, DiskKv, MemKv, Query, QueryResult};
use drakkar_raft::{GroupId, ReplicaId};

fn put(k: &str, v: &str) -> Bytes {
    Command::Put { key: Bytes::from(k.to_string()), value: Bytes::from(v.to_string()) }.encode().unwrap()
}

fn get(k: &str) -> Bytes {
    Query::Get { key: Bytes::from(k.to_string()) }.encode().unwrap()
}

fn value(raw: Bytes) -> Option<Bytes> {
    match QueryResult::decode(&raw).unwrap() {
        QueryResult::Get(kv) => kv.map(|kv| kv.value),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_kv_reopens_at_its_applied_index() {
    let mut c = Cluster::new(3);
    let disk =
        |c: &Cluster, i: u64| StateMachineBox::on_disk(Arc::new(DiskKv::new(c.dirs[&i].join("kv.redb"))));
    let members = Cluster::members([1, 2, 3]);
    for i in 1..=3 {
        c.hosts[&i]
            .start_replica(
                GroupId(1),
                ReplicaId(i),
                StartMode::Founding(members.clone()),
                disk(&c, i),
                fast_group(),
            )
            .unwrap();
    }
    let l = c.leader(1).await;
    for n in 0..40 {
        c.hosts[&l].propose(GroupId(1), put(&format!("k{n}"), &format!("v{n}")), T).await.unwrap();
    }
    c.hosts[&1].request_snapshot(GroupId(1), None, T).await.unwrap();
    for n in 40..60 {
        c.hosts[&l].propose(GroupId(1), put(&format!("k{n}"), &format!("v{n}")), T).await.unwrap();
    }
    c.hosts[&1].read(GroupId(1), get("k59"), T).await.unwrap();
    let applied_before = c.hosts[&1].replica_info(GroupId(1)).map(|i| i.applied).unwrap();

    c.hosts[&1].close();
    c.hosts.remove(&1);
    // The store reopens where it left off (durable up to at least the snapshot it synced for).
    let kv = DiskKv::new(c.dirs[&1].join("kv.redb"));
    let reopened = kv.open_db().unwrap();
    assert!(
        reopened.0 >= 40 && reopened <= applied_before,
        "reopened at {reopened}, applied was {applied_before}"
    );
    drop(kv);
    let h1 = c.start_host(1);
    h1.start_replica(GroupId(1), ReplicaId(1), StartMode::Joining, disk(&c, 1), fast_group()).unwrap();
    assert_eq!(value(h1.read(GroupId(1), get("k59"), T).await.unwrap()), Some(Bytes::from_static(b"v59")));
    assert_eq!(value(h1.stale_read(GroupId(1), &get("k3")).unwrap()), Some(Bytes::from_static(b"v3")));
    // The restarted replica keeps up with new writes.
    c.hosts[&2].propose(GroupId(1), put("after", "restart"), T).await.unwrap();
    assert_eq!(
        value(h1.read(GroupId(1), get("after"), T).await.unwrap()),
        Some(Bytes::from_static(b"restart"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_kv_as_a_concurrent_state_machine() {
    let c = Cluster::new(3);
    let members = Cluster::members([1, 2, 3]);
    for i in 1..=3 {
        let sm = StateMachineBox::concurrent(Arc::new(MemKv::new()));
        c.hosts[&i]
            .start_replica(GroupId(7), ReplicaId(i), StartMode::Founding(members.clone()), sm, fast_group())
            .unwrap();
    }
    let l = c.leader(7).await;
    c.hosts[&l].propose(GroupId(7), put("x", "1"), T).await.unwrap();
    for i in 1..=3 {
        assert_eq!(
            value(c.hosts[&i].read(GroupId(7), get("x"), T).await.unwrap()),
            Some(Bytes::from_static(b"1"))
        );
    }
    // A malformed command is a logical failure, not a crash: the replica keeps serving.
    let r = c.hosts[&l].propose(GroupId(7), Bytes::from_static(b"\xff\xff garbage"), T).await.unwrap();
    assert_ne!(r.value, 0);
    c.hosts[&l].propose(GroupId(7), put("y", "2"), T).await.unwrap();
    assert_eq!(
        value(c.hosts[&1].read(GroupId(7), get("y"), T).await.unwrap()),
        Some(Bytes::from_static(b"2"))
    );
}
