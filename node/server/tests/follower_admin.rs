//! Membership changes and leader transfers sent to a follower (the "Hostile input" issue, finding 7):
//! the follower passes them to the leader and returns its answer, instead of UNAVAILABLE `no-leader`
//! while it knows the leader. A request another node already forwarded is not passed on again: it is
//! answered UNAVAILABLE `not-leader` with the leader's address, so the client goes there.

mod hostile_support;

use std::time::{Duration, Instant};

use drakkar_client::pb::{self, admin_client::AdminClient};
use drakkar_client::{FORWARDED_HEADER, LEADER_HEADER, REASON_HEADER, reason};
use drakkar_server::ServerConfig;
use hostile_support::{G, Nodes};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_and_transfers_sent_to_a_follower_reach_the_leader() {
    let nodes = Nodes::start(3, ServerConfig::default()).await;
    let l = nodes.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let (f1, f2) = (&nodes.nodes[followers[0]], &nodes.nodes[followers[1]]);
    let conf = f1.host.membership(G).expect("membership").conf_index;

    // AddReplica on one follower, RemoveReplica on the other.
    let mut admin1 = AdminClient::new(f1.channel());
    let mut admin2 = AdminClient::new(f2.channel());
    let add = pb::AddReplicaRequest {
        group: 1,
        replica: 4,
        address: "127.0.0.1:9".into(),
        role: pb::Role::NonVoter as i32,
        expected_conf_index: conf,
    };
    let m = admin1.add_replica(add.clone()).await.expect("add through a follower").into_inner();
    assert!(m.members.iter().any(|x| x.replica == 4), "{m:?}");
    assert!(m.conf_index > conf, "{m:?}");
    let remove = pb::RemoveReplicaRequest { group: 1, replica: 4, expected_conf_index: m.conf_index };
    let m = admin2.remove_replica(remove).await.expect("remove through a follower").into_inner();
    assert!(!m.members.iter().any(|x| x.replica == 4) && m.removed.contains(&4), "{m:?}");

    // A request a node forwarded to a follower is not passed on: not-leader, with the leader's address.
    let mut fwd = tonic::Request::new(pb::AddReplicaRequest { replica: 5, expected_conf_index: 0, ..add });
    fwd.metadata_mut().insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    let e = admin1.add_replica(fwd).await.expect_err("forwarded twice");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let meta = |k: &str| e.metadata().get(k).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(meta(REASON_HEADER).as_deref(), Some(reason::NOT_LEADER), "{e:?}");
    assert_eq!(meta(LEADER_HEADER), Some(nodes.nodes[l].addr.clone()), "{e:?}");

    // TransferLeader to the first follower, sent to the second.
    let to = f1.replica().0;
    admin2
        .transfer_leader(pb::TransferLeaderRequest { group: 1, to })
        .await
        .expect("transfer through a follower");
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes.nodes.iter().any(|n| n.host.leader(G).ok().flatten().map(|x| x.0.0) != Some(to)) {
        assert!(Instant::now() < deadline, "leadership never moved to replica {to}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
