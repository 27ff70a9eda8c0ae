//! A 3-process cluster over TLS: writes through any node, linearizable reads on followers, forwarding,
//! kill -9 of the leader under load, restart and catch-up, SIGSTOP / SIGCONT of the leader, membership
//! changes while writes continue, a snapshot export imported into a new cluster.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drakkar_client::pb::{self, Consistency};
use drakkar_e2e::Cluster;

const T: Duration = Duration::from_secs(30);

/// Bounds a test: an e2e test that hangs fails instead.
async fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, f: F) {
    tokio::time::timeout(limit, f).await.expect("test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_any_node_and_linearizable_reads_on_followers() {
    // Node 4 runs no group: everything it receives is forwarded.
    let mut c = Cluster::new(4, 3, 2, true);
    c.start_all();
    bounded(Duration::from_secs(60), async {
        c.wait_for_leaders(T).await;
        for i in 1..=4 {
            let client = c.client_of(i);
            for g in 1..=2 {
                client
                    .put(g, format!("from-{i}"), format!("v{i}"))
                    .await
                    .unwrap_or_else(|e| panic!("put via {i}: {e}"));
            }
        }
        for g in 1..=2 {
            let leader = c.leader(g, T).await;
            for i in 1..=4 {
                let client = c.client_of(i);
                for w in 1..=4 {
                    let kv = client.get(g, format!("from-{w}"), Consistency::Linearizable).await.unwrap();
                    assert_eq!(
                        kv.map(|k| k.value),
                        Some(format!("v{w}").into()),
                        "group {g} read on node {i} (leader {leader})"
                    );
                }
            }
        }
        // Scans, transactions and deletes through a follower.
        let client = c.client_of(if c.leader(1, T).await == 1 { 2 } else { 1 });
        let r = client
            .scan(1, drakkar_client::prefix("from-"), 0, false, Consistency::Linearizable)
            .await
            .unwrap();
        assert_eq!(r.items.len(), 4);
        let txn = pb::TxnRequest {
            group: 1,
            compares: vec![pb::Compare {
                key: "from-1".into(),
                op: pb::CompareOp::Equal as i32,
                target: Some(pb::compare::Target::Value("v1".into())),
            }],
            success: vec![pb::TxnOp {
                op: Some(pb::txn_op::Op::Put(pb::PutOp { key: "txn".into(), value: "yes".into() })),
            }],
            failure: vec![],
            session: None,
        };
        assert!(client.txn(txn).await.unwrap().succeeded);
        let cas = pb::CompareAndSwapRequest {
            group: 1,
            key: "txn".into(),
            expected: Some(pb::compare_and_swap_request::Expected::ExpectedValue("no".into())),
            new: Some(pb::compare_and_swap_request::New::Delete(true)),
            session: None,
        };
        let r = client.compare_and_swap(cas).await.unwrap();
        assert!(!r.succeeded);
        assert_eq!(r.prev.map(|p| p.value), Some("yes".into()));
        assert!(client.delete(1, "txn").await.unwrap().prev.is_some());
        // Metrics and health over HTTP.
        let (status, body) = c.http_get(1, "/metrics").expect("metrics");
        assert!(status.contains("200"), "{status}");
        assert!(body.contains("drakkar_proposals"), "{body}");
        let deadline = tokio::time::Instant::now() + T;
        while !c.http_get(2, "/readyz").is_some_and(|(s, _)| s.contains("200")) {
            assert!(tokio::time::Instant::now() < deadline, "node 2 never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(c.http_get(2, "/livez").expect("livez").0.contains("200"));
    })
    .await;
}

/// What a writer saw: acknowledged unique keys, and the outcomes of its counter writes.
#[derive(Default)]
struct Seen {
    acked: BTreeSet<String>,
    /// Per writer: (acknowledged, failed) puts of its counter key `ctr-<id>`.
    counters: std::collections::BTreeMap<usize, (u64, u64)>,
}

/// Until `stop`: writes a unique key, then overwrites the writer's counter key; records the outcomes.
fn writer(
    client: drakkar_client::Client,
    id: usize,
    seen: Arc<Mutex<Seen>>,
    stop: Stop,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.is_set() {
            let key = format!("w{id}-{n:06}");
            if client.put(1, key.clone(), "x").await.is_ok() {
                seen.lock().unwrap().acked.insert(key);
            }
            let ok = client.put(1, format!("ctr-{id}"), n.to_string()).await.is_ok();
            let mut s = seen.lock().unwrap();
            let e = s.counters.entry(id).or_default();
            if ok {
                e.0 += 1
            } else {
                e.1 += 1
            }
            n += 1;
        }
    })
}

/// Exactly-once: each counter key's version (its number of applied puts) is at least the acknowledged
/// puts and at most acknowledged + failed ones. A retried put applied twice would exceed it.
async fn assert_exactly_once(c: &Cluster, node: usize, seen: &Seen) {
    let client = c.client_of(node);
    for (id, (ok, failed)) in &seen.counters {
        let kv =
            client.get(1, format!("ctr-{id}"), Consistency::Linearizable).await.unwrap().expect("counter");
        let v = kv.meta.unwrap().version;
        assert!(
            *ok <= v && v <= ok + failed,
            "writer {id}: {v} puts applied, {ok} acknowledged, {failed} failed"
        );
    }
}

/// A stop flag shared with writer tasks.
#[derive(Clone, Default)]
struct Stop(Arc<AtomicBool>);

impl Stop {
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Writer tasks over a cluster and what they saw.
struct Load {
    seen: Arc<Mutex<Seen>>,
    stop: Stop,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `n` writers, each with a client of every running node.
    fn start(c: &Cluster, n: usize) -> Load {
        let (seen, stop) = (Arc::new(Mutex::new(Seen::default())), Stop::default());
        let writers = (0..n).map(|id| writer(c.client(), id, seen.clone(), stop.clone())).collect();
        Load { seen, stop, writers }
    }

    /// Writes acknowledged so far.
    fn acked(&self) -> usize {
        self.seen.lock().unwrap().acked.len()
    }

    /// Waits until `at_least` writes were acknowledged; fails after `T` with `what`.
    async fn wait_for(&self, at_least: usize, what: &str) {
        let deadline = tokio::time::Instant::now() + T;
        while self.acked() < at_least {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the writers and returns what they saw.
    async fn finish(self) -> Seen {
        self.stop.set();
        for w in self.writers {
            w.await.unwrap();
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

async fn assert_all_present(c: &Cluster, node: usize, acked: &BTreeSet<String>) {
    let client = c.client_of(node);
    let r = client.scan(1, drakkar_client::prefix("w"), 0, true, Consistency::Linearizable).await.unwrap();
    assert!(!r.more, "more keys than one scan returns");
    let present: BTreeSet<String> =
        r.items.iter().map(|i| String::from_utf8_lossy(&i.key).into_owned()).collect();
    let lost: Vec<&String> = acked.difference(&present).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost on node {node}, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_leader_under_load_then_restart_it() {
    let mut c = Cluster::new(3, 3, 1, true);
    c.start_all();
    bounded(Duration::from_secs(90), async {
        c.wait_for_leaders(T).await;
        let load = Load::start(&c, 3);
        tokio::time::sleep(Duration::from_millis(800)).await;
        let old = c.leader(1, T).await;
        let before = load.acked();
        assert!(before > 0, "no write acknowledged before the crash");
        c.kill9(old);
        let new = c.leader(1, T).await;
        assert_ne!(new, old);
        // Writes continue under the new leader.
        load.wait_for(before + 20, "writes did not resume after the leader died").await;
        let seen = load.finish().await;
        let acked = seen.acked.clone();
        eprintln!(
            "leader {old} killed after {before} acknowledged writes; new leader {new}; {} in total",
            acked.len()
        );
        for i in (1..=3).filter(|&i| i != old) {
            assert_all_present(&c, i, &acked).await;
            assert_exactly_once(&c, i, &seen).await;
        }
        // The crashed node restarts from its data directory and catches up.
        c.start(old);
        let last = acked.iter().next_back().unwrap().clone();
        let client = c.client_of(old);
        let deadline = tokio::time::Instant::now() + T;
        loop {
            if let Ok(Some(_)) = client.get(1, last.clone(), Consistency::Stale).await {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the restarted node never caught up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_all_present(&c, old, &acked).await;
        assert_exactly_once(&c, old, &seen).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_while_writes_continue() {
    // Node 4 starts without groups; it is added to group 1, promoted, then removed.
    let mut c = Cluster::new(4, 3, 1, true);
    // Peers and clients reach the nodes by host name here; frequent snapshots and a short log make the
    // new replica catch up by a snapshot streamed over the transport.
    c.use_host_name("localhost");
    c.extra = ["--snapshot-entries", "40", "--compaction-overhead", "5"].map(String::from).to_vec();
    c.start_all();
    bounded(Duration::from_secs(90), async {
        c.wait_for_leaders(T).await;
        let admin = c.client();
        let load = Load::start(&c, 1);
        load.wait_for(60, "writes are too slow").await;
        // A snapshot exported through any node.
        let mut snap = Vec::new();
        let (index, bytes) = admin.export_snapshot(1, &mut snap).await.unwrap();
        assert!(index > 60 && bytes as usize == snap.len() && bytes > 0, "index {index}, {bytes} bytes");
        let m = admin.membership(1).await.unwrap();
        assert_eq!(m.members.len(), 3);
        let m = admin.add_replica(1, 4, &c.addr(4), pb::Role::NonVoter, m.conf_index).await.unwrap();
        assert!(m.members.iter().any(|x| x.replica == 4 && x.role == pb::Role::NonVoter as i32));
        let start =
            pb::StartGroupRequest { group: 1, replica: 4, initial_members: vec![], join: true, kind: 0 };
        admin.start_group(&c.addr(4), start).await.unwrap();
        // A stale configuration index is refused.
        let stale = admin.promote_replica(1, 4, m.conf_index - 1).await.unwrap_err();
        assert_eq!(stale.code(), Some(tonic::Code::FailedPrecondition), "{stale}");
        let m = admin.promote_replica(1, 4, m.conf_index).await.unwrap();
        assert!(m.members.iter().any(|x| x.replica == 4 && x.role == pb::Role::Voter as i32));
        // The new voter catches up and serves linearizable reads.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let last =
            load.seen.lock().unwrap().acked.iter().next_back().cloned().expect("writes were acknowledged");
        let got = c.client_of(4).get(1, last.clone(), Consistency::Linearizable).await.unwrap();
        assert!(got.is_some(), "node 4 does not see {last}");
        let log = c.procs[3].as_ref().unwrap().log();
        assert!(log.contains("snapshot received"), "node 4 caught up without a snapshot");
        let m = admin.remove_replica(1, 4, m.conf_index).await.unwrap();
        assert!(m.removed.contains(&4) && m.members.len() == 3);
        admin.stop_group(&c.addr(4), 1, true).await.unwrap();
        load.wait_for(load.acked() + 10, "writes stopped after the removal").await;
        let seen = load.finish().await;
        eprintln!("{} writes acknowledged during the membership changes", seen.acked.len());
        for i in 1..=3 {
            assert_all_present(&c, i, &seen.acked).await;
            assert_exactly_once(&c, i, &seen).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_replica_is_a_witness_forwards_reads_and_writes() {
    // Node 4 joins group 1 as a witness: it votes and stores log metadata, its state machine holds
    // nothing. Requests sent to it must be answered by a replica with data, never by the witness.
    let mut c = Cluster::new(4, 3, 1, true);
    c.start_all();
    bounded(Duration::from_secs(60), async {
        c.wait_for_leaders(T).await;
        let admin = c.client();
        admin.put(1, "wk", "before").await.unwrap();
        let m = admin.membership(1).await.unwrap();
        let m = admin.add_replica(1, 4, &c.addr(4), pb::Role::Witness, m.conf_index).await.unwrap();
        assert!(m.members.iter().any(|x| x.replica == 4 && x.role == pb::Role::Witness as i32));
        let start =
            pb::StartGroupRequest { group: 1, replica: 4, initial_members: vec![], join: true, kind: 0 };
        admin.start_group(&c.addr(4), start).await.unwrap();
        let n4 = c.client_of(4);
        // Until the witness has caught up, node 4 may answer from elsewhere or not at all; once it has,
        // every answer must be the data's.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let st = admin.status(&c.addr(4)).await.unwrap();
            if st.groups.iter().any(|g| g.group == 1 && g.applied_index >= m.conf_index) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the witness never caught up: {st:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for consistency in [Consistency::Linearizable, Consistency::Stale] {
            let got = n4.get(1, "wk", consistency).await.unwrap();
            assert_eq!(got.map(|kv| kv.value), Some("before".into()), "{consistency:?} read through node 4");
        }
        n4.put(1, "wk", "after").await.expect("a write through node 4");
        let got = n4.get(1, "wk", Consistency::Linearizable).await.unwrap();
        assert_eq!(got.map(|kv| kv.value), Some("after".into()));
        assert_eq!(
            admin.get(1, "wk", Consistency::Linearizable).await.unwrap().map(|kv| kv.value),
            Some("after".into())
        );
    })
    .await;
}

/// Found by `drakkar check --workload replicas`: right after `StartGroup{join}`, before the new witness
/// has applied its own addition, its node did not know the replica was a witness, served the request
/// itself, and answered FAILED_PRECONDITION `witness`. A node must forward from the first request on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_witness_forwards_from_its_first_request() {
    let mut c = Cluster::new(4, 3, 1, true);
    c.start_all();
    bounded(Duration::from_secs(60), async {
        c.wait_for_leaders(T).await;
        let admin = c.client();
        admin.put(1, "wk", "before").await.unwrap();
        let n4 = c.client_of(4);
        // Connected before the witness starts, so that the first reads arrive at once.
        n4.node_info(&c.addr(4)).await.unwrap();
        let m = admin.membership(1).await.unwrap();
        admin.add_replica(1, 4, &c.addr(4), pb::Role::Witness, m.conf_index).await.unwrap();
        let start =
            pb::StartGroupRequest { group: 1, replica: 4, initial_members: vec![], join: true, kind: 0 };
        admin.start_group(&c.addr(4), start).await.unwrap();
        // Concurrent reads from the first moment on: every one answered with the data.
        let reads = (0..20).map(|_| {
            let n4 = n4.clone();
            tokio::spawn(async move { n4.get(1, "wk", Consistency::Linearizable).await })
        });
        for r in reads.collect::<Vec<_>>() {
            let got = r.await.unwrap().expect("a read through the witness's node right after it started");
            assert_eq!(got.map(|kv| kv.value), Some("before".into()));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_leadership_over_and_exits_cleanly() {
    let mut c = Cluster::new(3, 3, 2, false);
    c.start_all();
    bounded(Duration::from_secs(60), async {
        c.wait_for_leaders(T).await;
        let client = c.client();
        client.put(1, "before", "1").await.unwrap();
        let leader = c.leader(1, T).await;
        let log = c.procs[leader - 1].as_ref().unwrap().log_path();
        assert!(
            c.terminate(leader, Duration::from_secs(20)),
            "node {leader} did not exit cleanly on SIGTERM"
        );
        let log = std::fs::read_to_string(log).unwrap();
        assert!(log.contains("moving leadership away") && log.contains("stopped"), "{log}");
        assert!(!log.contains("still leading"), "leadership was not handed over: {log}");
        // The others lead and serve at once; nothing was lost.
        let new = c.leader(1, T).await;
        assert_ne!(new, leader);
        client.put(1, "after", "2").await.unwrap();
        for k in ["before", "after"] {
            assert!(client.get(1, k, Consistency::Linearizable).await.unwrap().is_some(), "{k} missing");
        }
    })
    .await;
}

/// The leader of group 1 as the nodes other than `not` report it, once it is another node than `not`.
async fn leader_other_than(c: &Cluster, not: usize, within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        for i in (1..=c.nodes.len()).filter(|&i| i != not) {
            if let Ok(s) = c.client_of(i).status(&c.addr(i)).await
                && let Some(g) = s.groups.iter().find(|g| g.group == 1 && g.leader != 0)
                && let Some(n) = c.nodes.iter().find(|n| n.addr == g.leader_address)
                && n.index != not
            {
                return n.index;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no new leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_the_leader_then_sigcont() {
    let mut c = Cluster::new(3, 3, 1, true);
    c.start_all();
    bounded(Duration::from_secs(90), async {
        c.wait_for_leaders(T).await;
        let load = Load::start(&c, 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let old = c.leader(1, T).await;
        let before = load.acked();
        assert!(before > 0, "no write acknowledged before the pause");
        // A paused leader keeps its sockets open but answers nothing: the others elect a new one.
        c.signal(old, "STOP");
        let new = leader_other_than(&c, old, T).await;
        load.wait_for(before + 20, "writes did not resume while the leader was paused").await;
        // Resumed, the old leader hears of the newer term, steps down and catches up.
        c.signal(old, "CONT");
        load.wait_for(load.acked() + 20, "writes stopped after the old leader resumed").await;
        let seen = load.finish().await;
        eprintln!(
            "leader {old} paused after {before} acknowledged writes; new leader {new}; {} in total",
            seen.acked.len()
        );
        let last = seen.acked.iter().next_back().unwrap().clone();
        let got = c.client_of(old).get(1, last.clone(), Consistency::Linearizable).await.unwrap();
        assert!(got.is_some(), "the resumed node does not see {last}");
        for i in 1..=3 {
            assert_all_present(&c, i, &seen.acked).await;
            assert_exactly_once(&c, i, &seen).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_export_imported_into_a_new_cluster_gives_the_same_data() {
    export_then_import(pb::StateMachineKind::KvMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_imported_into_on_disk_kv_groups_gives_the_same_data() {
    export_then_import(pb::StateMachineKind::KvDisk).await;
}

/// Exports group 1 of one cluster (with more than one import message of incompressible data) and
/// imports it into the replicas of a new cluster, which then run it as `kind`.
async fn export_then_import(kind: pb::StateMachineKind) {
    let mut a = Cluster::new(3, 3, 1, true);
    a.start_all();
    // The new cluster's nodes found no group: the imported snapshot brings group 1.
    let mut b = Cluster::new(3, 3, 0, true);
    b.start_all();
    bounded(Duration::from_secs(90), async {
        a.wait_for_leaders(T).await;
        let ca = a.client();
        for i in 0..50 {
            ca.put(1, format!("k{i:03}"), format!("v{i}")).await.unwrap();
        }
        ca.delete(1, "k007").await.unwrap();
        // 1.5 MB that compression cannot shrink: the file needs several import messages.
        let mut rng = drakkar_raft::Rng::new(1);
        let big: Vec<u8> = (0..1_500_000).map(|_| rng.next_u64() as u8).collect();
        ca.put(1, "big", big.clone()).await.unwrap();
        let file = b.dir.path().join("group-1.snap");
        let mut f = tokio::fs::File::create(&file).await.unwrap();
        let (index, bytes) = ca.export_snapshot(1, &mut f).await.unwrap();
        drop(f);
        assert!(bytes > 1_500_000, "the export is {bytes} bytes");
        let want = ca.scan(1, drakkar_client::prefix("k"), 0, true, Consistency::Linearizable).await.unwrap();
        assert_eq!(want.items.len(), 49);

        b.wait_for_leaders(T).await;
        let cb = b.client();
        let members: Vec<pb::Member> = (1..=3)
            .map(|i| pb::Member { replica: i as u64, address: b.addr(i), role: pb::Role::Voter as i32 })
            .collect();
        for i in 1..=3 {
            let target = pb::ImportSnapshotTarget { group: 1, replica: i as u64, members: members.clone() };
            let file = tokio::fs::File::open(&file).await.unwrap();
            let r = cb.import_snapshot(&b.addr(i), target, file, |_| {}).await.unwrap();
            assert_eq!((r.index, r.bytes), (index, bytes));
        }
        // A second import while the group runs is refused, and so is a truncated file.
        let start = |i: usize| pb::StartGroupRequest {
            group: 1,
            replica: i as u64,
            initial_members: vec![],
            join: true,
            kind: kind as i32,
        };
        cb.start_group(&b.addr(1), start(1)).await.unwrap();
        let target = pb::ImportSnapshotTarget { group: 1, replica: 1, members: members.clone() };
        let f = tokio::fs::File::open(&file).await.unwrap();
        let err = cb.import_snapshot(&b.addr(1), target, f, |_| {}).await.unwrap_err();
        assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
        let whole = tokio::fs::read(&file).await.unwrap();
        let target = pb::ImportSnapshotTarget { group: 1, replica: 2, members: members.clone() };
        let cut = std::io::Cursor::new(whole[..whole.len() / 2].to_vec());
        assert!(cb.import_snapshot(&b.addr(2), target, cut, |_| {}).await.is_err(), "a truncated file");
        // The refused import changed nothing: node 2 starts from its earlier, complete import.
        for i in 2..=3 {
            cb.start_group(&b.addr(i), start(i)).await.unwrap();
        }
        for i in 1..=3 {
            let got = b
                .client_of(i)
                .scan(1, drakkar_client::prefix("k"), 0, true, Consistency::Linearizable)
                .await
                .unwrap();
            assert_eq!(got.items, want.items, "node {i} of the new cluster");
            let got = b.client_of(i).get(1, "big", Consistency::Stale).await.unwrap();
            assert!(got.is_some_and(|kv| kv.value == big), "node {i}: the large value");
        }
        // The new cluster takes writes in the imported group.
        cb.put(1, "after-import", "yes").await.unwrap();
        let got = b.client_of(3).get(1, "after-import", Consistency::Linearizable).await.unwrap();
        assert_eq!(got.map(|kv| kv.value), Some("yes".into()));
    })
    .await;
}
