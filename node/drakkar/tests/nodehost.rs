//! NodeHost end to end: three NodeHosts in one process on the in-process network, real files.

use drakkar_sim::harness as common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, T, fast_group};
use drakkar::{GroupMembership, MembershipChange, NodeError, NodeHost, StartMode};
use drakkar_raft::{GroupId, MemberRole, ReplicaId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_and_read_on_every_replica() {
    let c = Cluster::new(3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    let r = c.hosts[&l].propose(GroupId(1), Bytes::from_static(b"a=1"), T).await.unwrap();
    assert_eq!(r.value, 1);
    // Proposals through followers are forwarded to the leader.
    for i in 1..=3u64 {
        let cmd = Bytes::from(format!("k{i}=v{i}"));
        c.hosts[&i].propose(GroupId(1), cmd, T).await.unwrap();
    }
    // Linearizable reads on every replica see every acknowledged write.
    for i in 1..=3u64 {
        let v = c.hosts[&i].read(GroupId(1), Bytes::from_static(b"k3"), T).await.unwrap();
        assert_eq!(v, Bytes::from_static(b"v3"), "replica {i}");
    }
    assert!(c.hosts[&1].metrics_text().contains("drakkar_proposals_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_on_three_hosts() {
    let c = Cluster::new(3);
    for g in 1..=20 {
        c.start_group(g, &[1, 2, 3], fast_group());
    }
    for g in 1..=20 {
        let l = c.leader(g).await;
        c.hosts[&l].propose(GroupId(g), Bytes::from(format!("g={g}")), T).await.unwrap();
    }
    for g in 1..=20 {
        let v = c.hosts[&1].read(GroupId(g), Bytes::from_static(b"g"), T).await.unwrap();
        assert_eq!(v, Bytes::from(g.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_apply_a_retried_proposal_once() {
    let c = Cluster::new(3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    let h = &c.hosts[&l];
    let mut s = h.open_session(GroupId(1), None, T).await.unwrap();
    let first = h.propose_in_session(&s, Bytes::from_static(b"x=1"), T).await.unwrap();
    // A retry (same series id) returns the first result and does not apply again.
    let again = h.propose_in_session(&s, Bytes::from_static(b"x=1"), T).await.unwrap();
    assert_eq!(first, again);
    s.proposal_completed();
    let next = h.propose_in_session(&s, Bytes::from_static(b"y=2"), T).await.unwrap();
    assert_eq!(next.value, first.value + 1, "exactly one update between them");
    h.close_session(s.clone(), T).await.unwrap();
    assert!(h.propose_in_session(&s, Bytes::from_static(b"z=3"), T).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_recovers_from_snapshot_and_log() {
    let mut c = Cluster::new(3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    for i in 0..30 {
        c.hosts[&l].propose(GroupId(1), Bytes::from(format!("k{i}=v{i}")), T).await.unwrap();
    }
    let idx = c.hosts[&1].request_snapshot(GroupId(1), None, T).await.unwrap();
    assert!(idx.0 >= 30);
    for i in 30..40 {
        c.hosts[&l].propose(GroupId(1), Bytes::from(format!("k{i}=v{i}")), T).await.unwrap();
    }
    // Restart host 1 from its data directory.
    c.hosts[&1].close();
    c.hosts.remove(&1);
    let h1 = c.start_host(1);
    h1.start_replica(GroupId(1), ReplicaId(1), drakkar::StartMode::Joining, common::sm(), fast_group())
        .unwrap();
    let v = h1.read(GroupId(1), Bytes::from_static(b"k39"), T).await.unwrap();
    assert_eq!(v, Bytes::from_static(b"v39"));
    assert_eq!(h1.stale_read(GroupId(1), b"k5").unwrap(), Bytes::from_static(b"v5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_replica_that_catches_up_by_snapshot() {
    let mut c = Cluster::new(3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    for i in 0..50 {
        c.hosts[&l].propose(GroupId(1), Bytes::from(format!("k{i}=v{i}")), T).await.unwrap();
    }
    // Compact the leader's log so the new replica needs a snapshot.
    c.hosts[&l].request_snapshot(GroupId(1), None, T).await.unwrap();
    let h4 = c.start_host(4);
    let add =
        MembershipChange::Add { replica: ReplicaId(4), address: common::addr(4), role: MemberRole::NonVoter };
    let m = change(&c.hosts[&l], add, 0).await.unwrap();
    assert!(m.membership.non_voters.contains(&ReplicaId(4)));
    h4.start_replica(GroupId(1), ReplicaId(4), drakkar::StartMode::Joining, common::sm(), fast_group())
        .unwrap();
    // Stale conf-change index: refused.
    let stale = change(&c.hosts[&l], MembershipChange::Promote(ReplicaId(4)), 1).await;
    assert!(matches!(stale, Err(NodeError::StaleConfChange { .. })), "{stale:?}");
    let m = change(&c.hosts[&l], MembershipChange::Promote(ReplicaId(4)), m.conf_index).await.unwrap();
    assert!(m.membership.voters.contains(&ReplicaId(4)));
    let v = h4.read(GroupId(1), Bytes::from_static(b"k49"), T).await.unwrap();
    assert_eq!(v, Bytes::from_static(b"v49"));
    let removed = change(&c.hosts[&l], MembershipChange::Remove(ReplicaId(4)), 0).await.unwrap();
    assert!(removed.membership.removed.contains(&ReplicaId(4)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_transfer_and_leader_loss() {
    let mut c = Cluster::new(3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    let target = if l == 1 { 2 } else { 1 };
    c.hosts[&l].transfer_leader(GroupId(1), ReplicaId(target)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.hosts[&target].leader(GroupId(1)).unwrap().map(|x| x.0.0) != Some(target) {
        assert!(std::time::Instant::now() < deadline, "transfer did not complete");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.hosts[&target].propose(GroupId(1), Bytes::from_static(b"before=1"), T).await.unwrap();
    // Lose the leader: the others elect a new one and keep every acknowledged write.
    c.hosts[&target].close();
    c.hosts.remove(&target);
    let l2 = c.leader(1).await;
    assert_ne!(l2, target);
    let v = c.hosts[&l2].read(GroupId(1), Bytes::from_static(b"before"), T).await.unwrap();
    assert_eq!(v, Bytes::from_static(b"1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_cannot_rejoin_under_its_old_id() {
    let mut c = Cluster::new(3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    c.hosts[&l].propose(GroupId(1), Bytes::from_static(b"a=1"), T).await.unwrap();
    // Host 3 loses its disk and comes back empty, claiming to be replica 3 of a new group.
    c.hosts[&3].close();
    c.hosts.remove(&3);
    std::fs::remove_dir_all(&c.dirs[&3]).unwrap();
    let h3 = c.start_host(3);
    let members = Cluster::members([1, 2, 3]);
    h3.start_replica(
        GroupId(1),
        ReplicaId(3),
        drakkar::StartMode::Founding(members),
        common::sm(),
        fast_group(),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match h3.propose(GroupId(1), Bytes::from_static(b"b=2"), Duration::from_millis(200)).await {
            Err(NodeError::ReplicaIdReused { replica, .. }) => {
                assert_eq!(replica, ReplicaId(3));
                break;
            }
            other => {
                assert!(other.is_err(), "a wiped replica must never get a write accepted: {other:?}");
                assert!(std::time::Instant::now() < deadline, "the reused id was never detected: {other:?}");
            }
        }
    }
    // The healthy majority keeps working and kept its data.
    let l = c.leader(1).await;
    assert_ne!(l, 3);
    let v = c.hosts[&l].read(GroupId(1), Bytes::from_static(b"a"), T).await.unwrap();
    assert_eq!(v, Bytes::from_static(b"1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_groups_on_one_nodehost() {
    let c = Cluster::new(1);
    let cfg = drakkar::GroupConfig { election_ticks: 5, ..fast_group() };
    for g in 1..=1000 {
        c.start_group(g, &[1], cfg.clone());
    }
    for g in 1..=1000u64 {
        c.hosts[&1].propose(GroupId(g), Bytes::from(format!("g={g}")), T).await.unwrap();
    }
    for g in [1u64, 500, 1000] {
        let v = c.hosts[&1].read(GroupId(g), Bytes::from_static(b"g"), T).await.unwrap();
        assert_eq!(v, Bytes::from(g.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_leaders_membership_and_snapshots() {
    use drakkar::Event;
    let c = Cluster::new(3);
    let mut ev = c.hosts[&1].events();
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    for i in 0..10 {
        c.hosts[&l].propose(GroupId(1), Bytes::from(format!("k{i}=v")), T).await.unwrap();
    }
    c.hosts[&1].read(GroupId(1), Bytes::from_static(b"k9"), T).await.unwrap();
    let idx = c.hosts[&1].request_snapshot(GroupId(1), None, T).await.unwrap();
    let add = MembershipChange::Add {
        replica: ReplicaId(9),
        address: "node-9:7000".into(),
        role: MemberRole::NonVoter,
    };
    change(&c.hosts[&l], add, 0).await.unwrap();
    let (mut leader, mut membership, mut snapshot, mut compacted) = (false, false, false, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !(leader && membership && snapshot && compacted) {
        let e = tokio::time::timeout_at(deadline, ev.recv()).await.expect("events arrive").expect("no lag");
        match e {
            Event::LeaderChanged { group: GroupId(1), leader: Some(_), .. } => leader = true,
            Event::MembershipChanged { membership: m, .. } if m.non_voters.contains(&ReplicaId(9)) => {
                membership = true
            }
            Event::SnapshotCreated { index, .. } if index == idx => snapshot = true,
            Event::LogCompacted { .. } => compacted = true,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_snapshot_repairs_a_group_that_lost_quorum() {
    let mut c = Cluster::new(3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    for i in 0..20 {
        c.hosts[&l].propose(GroupId(1), Bytes::from(format!("k{i}=v{i}")), T).await.unwrap();
    }
    c.hosts[&1].read(GroupId(1), Bytes::from_static(b"k19"), T).await.unwrap();
    let export = c.dirs[&1].join("backup.snap");
    c.hosts[&1].request_snapshot(GroupId(1), Some(&export), T).await.unwrap();
    // Hosts 2 and 3 are gone for good: the group has no quorum.
    for i in [2, 3] {
        c.hosts[&i].close();
        c.hosts.remove(&i);
    }
    assert!(
        c.hosts[&1]
            .propose(GroupId(1), Bytes::from_static(b"x=1"), Duration::from_millis(300))
            .await
            .is_err()
    );
    c.hosts[&1].stop_replica(GroupId(1)).await.unwrap();
    // Repair: the survivor and two new replicas on new hosts, all from the exported snapshot.
    let members = Cluster::members([1, 4, 5]);
    for i in [4, 5] {
        c.start_host(i);
    }
    for i in [1, 4, 5] {
        c.hosts[&i]
            .import_snapshot(
                GroupId(1),
                ReplicaId(i),
                &export,
                members.clone(),
                drakkar::snapshot::read_through,
            )
            .unwrap();
        c.hosts[&i]
            .start_replica(GroupId(1), ReplicaId(i), drakkar::StartMode::Joining, common::sm(), fast_group())
            .unwrap();
    }
    let l = c.leader(1).await;
    assert!([1, 4, 5].contains(&l));
    c.hosts[&l].propose(GroupId(1), Bytes::from_static(b"after=repair"), T).await.unwrap();
    for i in [1, 4, 5] {
        let h = &c.hosts[&i];
        assert_eq!(
            h.read(GroupId(1), Bytes::from_static(b"k19"), T).await.unwrap(),
            Bytes::from_static(b"v19")
        );
        assert_eq!(
            h.read(GroupId(1), Bytes::from_static(b"after"), T).await.unwrap(),
            Bytes::from_static(b"repair")
        );
        let m = h.membership(GroupId(1)).unwrap();
        assert!(m.membership.removed.contains(&ReplicaId(2)) && m.membership.removed.contains(&ReplicaId(3)));
    }
    // An imported snapshot of another group, or a corrupt one, is refused.
    let wrong = c.hosts[&1].import_snapshot(
        GroupId(2),
        ReplicaId(1),
        &export,
        members.clone(),
        drakkar::snapshot::read_through,
    );
    assert!(wrong.is_err());
}

async fn propose(h: &drakkar::NodeHost, cmd: &'static str) -> drakkar::Result<()> {
    h.propose(GroupId(1), Bytes::from_static(cmd.as_bytes()), T).await.map(drop)
}

/// A log store write that fails (a full disk: the append stops short) stops the NodeHost for good: the
/// proposal is not acknowledged, `failure()` says why, nothing later is acknowledged even once the disk
/// has room again, and a new NodeHost on the same data recovers every acknowledged write and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_log_write_stops_the_host_until_a_restart_recovers_it() {
    use drakkar::transport::InProcessNetwork;
    use drakkar::{NodeHost, NodeHostConfig, StartMode};
    use drakkar_logdb::fs::MemFs;
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let fs = Arc::new(MemFs::new());
    let net = InProcessNetwork::new();
    let open = || {
        let mut cfg = NodeHostConfig::new(tmp.path(), common::addr(1));
        cfg.tick_interval = Duration::from_millis(5);
        cfg.log_fs = Some(fs.clone());
        let h = NodeHost::new(cfg, net.transport()).unwrap();
        net.register(&common::addr(1), h.sink());
        h
    };
    let solo = || StartMode::Founding(common::Cluster::members([1]));
    // Opens the host, starts its single-replica group and waits until `cmd` is acknowledged.
    let start = async |cmd: &'static str| {
        let h = open();
        h.start_replica(GroupId(1), ReplicaId(1), solo(), common::sm(), fast_group()).unwrap();
        let deadline = std::time::Instant::now() + T;
        while propose(&h, cmd).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the host never took a write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        h
    };
    let h = start("a=1").await;
    assert_eq!(h.info().failure, None);

    fs.fail_appends_after(0, 7);
    assert!(propose(&h, "b=2").await.is_err(), "acknowledged though it was not written");
    let why = h.info().failure.expect("the failure is reported");
    assert!(why.contains("log store"), "{why}");
    fs.clear_faults();
    assert!(propose(&h, "c=3").await.is_err(), "acknowledged after the log store failed");
    h.close();

    // A restart (power loss included) recovers what was durable.
    fs.crash_clean();
    let h = start("d=4").await;
    assert_eq!(h.info().failure, None);
    assert_eq!(h.read(GroupId(1), Bytes::from_static(b"a"), T).await.unwrap(), Bytes::from_static(b"1"));
    assert_eq!(h.read(GroupId(1), Bytes::from_static(b"c"), T).await.unwrap(), Bytes::new(), "c was refused");
    h.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_fails_fast_when_the_host_is_told_to() {
    // A replica whose two peers never start: no leader is ever elected.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = drakkar::NodeHostConfig::new(dir.path(), common::addr(1));
    cfg.tick_interval = Duration::from_millis(5);
    cfg.no_leader_wait = Some(Duration::from_millis(100));
    let net = drakkar::transport::InProcessNetwork::new();
    let h = drakkar::NodeHost::new(cfg, net.transport()).unwrap();
    net.register(&common::addr(1), h.sink());
    let members = common::Cluster::members([1, 2, 3]);
    h.start_replica(GroupId(1), ReplicaId(1), StartMode::Founding(members), common::sm(), fast_group())
        .unwrap();
    let started = std::time::Instant::now();
    let r = h.propose(GroupId(1), Bytes::from_static(b"x=1"), Duration::from_secs(30)).await;
    assert!(matches!(r, Err(NodeError::NoLeader { .. })), "{r:?}");
    let r = h.read(GroupId(1), Bytes::from_static(b"x"), Duration::from_secs(30)).await;
    assert!(matches!(r, Err(NodeError::NoLeader { .. })), "{r:?}");
    // Both answered long before their 30 s timeouts (the wait is 100 ms; the bound leaves room for a
    // loaded machine).
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    h.close();
}

/// A linearizable read on a follower whose leader dies before answering its read-index request is
/// asked again at the next leader, within the read's deadline, instead of waiting the deadline out (the
/// request went to a leader that will never answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_sent_to_a_lost_leader_is_asked_again_at_the_next() {
    let mut c = Cluster::new(3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let l = c.leader(1).await;
    let f = if l == 1 { 2 } else { 1 };
    c.hosts[&f].propose(GroupId(1), Bytes::from_static(b"k=1"), T).await.unwrap();
    // The follower knows the leader.
    let deadline = std::time::Instant::now() + T;
    while c.hosts[&f].leader(GroupId(1)).unwrap().map(|x| x.0.0) != Some(l) {
        assert!(std::time::Instant::now() < deadline, "the follower never learned the leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The leader dies; the read's request goes to it at once (the follower still believes in it for an
    // election timeout, 50 ms here).
    c.hosts[&l].close();
    c.hosts.remove(&l);
    let started = std::time::Instant::now();
    let timeout = Duration::from_secs(10);
    let v = c.hosts[&f].read(GroupId(1), Bytes::from_static(b"k"), timeout).await.unwrap();
    assert_eq!(v, Bytes::from_static(b"1"));
    // A new leader is elected within a few election timeouts; the read must not wait for its deadline.
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// Proposes `change` to group 1 through `host` and waits until it is applied: the membership after it.
async fn change(
    host: &NodeHost,
    change: MembershipChange,
    expected_conf_index: u64,
) -> drakkar::Result<GroupMembership> {
    host.change_membership(GroupId(1), change, expected_conf_index)?.wait(T).await?;
    host.membership(GroupId(1))
}
