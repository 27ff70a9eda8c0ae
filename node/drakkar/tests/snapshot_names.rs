//! A snapshot's data names its file in the receiving replica's snapshot directory. A sender cannot name a
//! file there: a data-less snapshot (no file streamed) whose data is a path is received as naming no file.

use drakkar_sim::harness as common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, T, fast_group};
use drakkar_raft::{GroupId, LogIndex, Message, MessageKind, ReplicaId, Snapshot, SnapshotMeta};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_less_snapshot_cannot_name_a_file() {
    let c = Cluster::new(3);
    c.start_group(1, &[1, 2, 3], fast_group());
    let g = GroupId(1);
    let leader = c.leader(1).await;
    c.hosts[&leader].propose(g, Bytes::from_static(b"a=1"), T).await.unwrap();
    let f = (1..=3u64).find(|i| *i != leader).unwrap();
    let host = &c.hosts[&f];
    // A file outside the snapshot directory (`<data>/snapshots/1/../../victim`): not a snapshot.
    let victim = c.dirs[&f].join("victim");
    std::fs::write(&victim, b"not a snapshot, and not the sender's to name").unwrap();

    let (_, term) = host.leader(g).unwrap().expect("a leader");
    let membership = host.membership(g).unwrap().membership;
    let applied = host.replica_info(g).unwrap().applied;
    let mut msg = Message::new(MessageKind::Snapshot, ReplicaId(leader), ReplicaId(f), term);
    msg.snapshot = Some(Snapshot {
        meta: SnapshotMeta { index: LogIndex(applied.0 + 100), term, membership },
        data: Bytes::from_static(b"../../victim"),
    });
    let sink = host.sink().upgrade().expect("the host's sink");
    sink.receive_snapshot(g, msg, None).expect("a data-less snapshot from the leader is received");

    // Had the path been opened as the snapshot, the replica would have failed and stopped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(host.replica_info(g).is_ok(), "the replica stopped: it read a file a sender named");
    assert_eq!(host.stale_read(g, b"a").unwrap(), Bytes::from_static(b"1"));
    assert_eq!(std::fs::read(&victim).unwrap(), b"not a snapshot, and not the sender's to name");
}
