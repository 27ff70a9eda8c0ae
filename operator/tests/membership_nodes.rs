//! `GrpcMembership::converge` against real `drakkar serve` processes on loopback (TLS, 2 KV groups):
//! a scale-up from 3 to 5 voters (non-voters added, started, promoted once caught up), a scale-down back
//! to 3 (the leader hands over first, members removed), and a pod that comes back after its removal
//! (its stale replica deleted, then added under a fresh id). Data written before stays readable on
//! every member. And a pod whose volume was wiped: its old replicas, refused by their groups, are removed,
//! deleted and replaced under fresh ids.

use std::time::Duration;

use drakkar_client::pb::{self, Consistency};
use drakkar_e2e::Cluster;
use drakkar_operator::admin::{
    ClientTls, Convergence, GrpcMembership, MemberChange, MemberPlan, Membership, Step, Target,
};
use drakkar_operator::crd::{MemberRole, StateMachine};

const GROUPS: u64 = 2;

/// Every node of `c`, with the client certificate.
fn target(c: &Cluster) -> Target {
    let read = |f: &str| std::fs::read_to_string(c.certs().join(f)).unwrap();
    Target {
        endpoints: (1..=c.nodes.len()).map(|i| c.addr(i)).collect(),
        groups: GROUPS as u32,
        tls: Some(ClientTls { ca: read("ca.pem"), cert: read("admin.pem"), key: read("admin-key.pem") }),
    }
}

/// Node `i`'s role in group 1 as the operator observes it.
async fn observed_role(c: &Cluster, i: usize) -> MemberRole {
    let obs = GrpcMembership { timeout: Duration::from_secs(3) }.observe(&target(c)).await.unwrap().unwrap();
    obs.members.iter().find(|m| m.address == c.addr(i)).map_or(MemberRole::None, |m| m.role)
}

/// Converges until no group is pending; returns every change made.
async fn converge(c: &Cluster, voters: &[usize], within: Duration) -> Vec<MemberChange> {
    let target = target(c);
    let plan = MemberPlan {
        voters: voters.iter().map(|&i| c.addr(i)).collect(),
        state_machine: StateMachine::Memory,
    };
    let membership = GrpcMembership { timeout: Duration::from_secs(3) };
    let deadline = tokio::time::Instant::now() + within;
    let mut all = Vec::new();
    loop {
        let Convergence { changes, pending, errors } = membership.converge(&target, &plan).await.unwrap();
        for e in &errors {
            eprintln!("(retried) {e}");
        }
        for ch in &changes {
            eprintln!("{ch}");
        }
        all.extend(changes);
        if pending.is_empty() {
            return all;
        }
        assert!(tokio::time::Instant::now() < deadline, "groups {pending:?} did not converge: {errors:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every group has exactly `voters` (by address) as voters, and the replica ids they run there.
async fn assert_voters(c: &Cluster, voters: &[usize]) -> Vec<pb::MembershipResponse> {
    let client = c.client();
    let mut out = Vec::new();
    for g in 1..=GROUPS {
        let m = client.membership(g).await.unwrap();
        let mut got: Vec<(String, i32)> = m.members.iter().map(|x| (x.address.clone(), x.role)).collect();
        got.sort();
        let mut want: Vec<(String, i32)> =
            voters.iter().map(|&i| (c.addr(i), pb::Role::Voter as i32)).collect();
        want.sort();
        assert_eq!(got, want, "group {g}");
        out.push(m);
    }
    out
}

async fn assert_data(c: &Cluster, nodes: &[usize], keys: u64) {
    for &i in nodes {
        let client = c.client_of(i);
        for g in 1..=GROUPS {
            for k in 0..keys {
                let got = client.get(g, format!("k{k}"), Consistency::Linearizable).await.unwrap();
                assert_eq!(got.map(|kv| kv.value), Some(format!("v{k}").into()), "node {i}, group {g}, k{k}");
            }
        }
    }
}

/// `nodes` nodes, the first `founders` founding every group, each group holding `k0..k20`.
async fn cluster_with_data(nodes: usize, founders: usize) -> Cluster {
    let mut c = Cluster::new(nodes, founders, GROUPS, true);
    c.start_all();
    c.wait_for_leaders(Duration::from_secs(30)).await;
    let client = c.client();
    for g in 1..=GROUPS {
        for k in 0..20 {
            client.put(g, format!("k{k}"), format!("v{k}")).await.unwrap();
        }
    }
    c
}

fn count(changes: &[MemberChange], f: impl Fn(&Step) -> bool) -> usize {
    changes.iter().filter(|c| f(&c.step)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_scale_down_and_a_returning_pod_against_real_nodes() {
    tokio::time::timeout(Duration::from_secs(150), async {
        // Nodes 4 and 5 start without groups, like pods beyond the founding members.
        let c = cluster_with_data(5, 3).await;
        let client = c.client();
        let within = Duration::from_secs(40);

        // Scale up to 5: each new node joins every group as a non-voter, then is promoted.
        let up = converge(&c, &[1, 2, 3, 4, 5], within).await;
        assert_eq!(count(&up, |s| matches!(s, Step::Add { .. })), 2 * GROUPS as usize, "{up:?}");
        assert_eq!(count(&up, |s| matches!(s, Step::Promote { .. })), 2 * GROUPS as usize, "{up:?}");
        let ms = assert_voters(&c, &[1, 2, 3, 4, 5]).await;
        assert_data(&c, &[4, 5], 20).await;

        // Make node 5 the leader of group 1: the scale-down must hand leadership over before removing it.
        let id5 = ms[0].members.iter().find(|m| m.address == c.addr(5)).unwrap().replica;
        client.transfer_leader(1, id5).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while client.membership(1).await.unwrap().leader != id5 {
            if tokio::time::Instant::now() >= deadline {
                for i in 1..=5 {
                    eprintln!("node {i}: {:?}", c.client_of(i).status(&c.addr(i)).await.map(|s| s.groups));
                }
                panic!("the transfer to node 5 (replica {id5}) did not happen");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let down = converge(&c, &[1, 2, 3], within).await;
        assert!(count(&down, |s| matches!(s, Step::TransferLeader { .. })) >= 1, "{down:?}");
        assert_eq!(count(&down, |s| matches!(s, Step::Remove { .. })), 2 * GROUPS as usize, "{down:?}");
        let ms = assert_voters(&c, &[1, 2, 3]).await;
        for m in &ms {
            assert_eq!(m.removed.len(), 2, "group {}: {:?}", m.group, m.removed);
        }
        for g in 1..=GROUPS {
            client.put(g, "after-down", "yes").await.unwrap();
        }

        // Node 4 comes back (its old replicas, removed, still run there): cleared, then added anew.
        let back = converge(&c, &[1, 2, 3, 4], within).await;
        assert_eq!(count(&back, |s| matches!(s, Step::Clear { .. })), GROUPS as usize, "{back:?}");
        let ms = assert_voters(&c, &[1, 2, 3, 4]).await;
        for m in &ms {
            let id = m.members.iter().find(|x| x.address == c.addr(4)).unwrap().replica;
            assert!(m.removed.iter().all(|r| *r < id), "group {}: a fresh id, not {id}", m.group);
        }
        assert_data(&c, &[1, 4], 20).await;
        let got = c.client_of(4).get(1, "after-down", Consistency::Linearizable).await.unwrap();
        assert!(got.is_some(), "node 4 did not catch up");
        // Converged: another pass changes nothing.
        assert!(converge(&c, &[1, 2, 3, 4], within).await.is_empty());
    })
    .await
    .expect("the test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_pod_is_replaced_under_fresh_ids() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let mut c = cluster_with_data(3, 3).await;
        // Node 2 loses its volume: it comes back empty and founds the groups again under its old ids,
        // which its peers refuse (they know another incarnation behind them).
        c.kill9(2);
        std::fs::remove_dir_all(&c.nodes[1].data_dir).unwrap();
        c.start(2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = c.client_of(2).status(&c.addr(2)).await;
            let refused = status.as_ref().is_ok_and(|s| {
                s.groups.len() == GROUPS as usize
                    && s.groups.iter().all(|g| g.state == pb::ReplicaState::IdReused as i32 && g.replica == 2)
            });
            // Ready all the same: the operator only acts on ready nodes.
            let ready = c.http_get(2, "/readyz").is_some_and(|(line, _)| line.contains("200"));
            if refused && ready {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "node 2 not refused and ready: {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        assert_eq!(observed_role(&c, 2).await, MemberRole::Lost);

        let healed = converge(&c, &[1, 2, 3], Duration::from_secs(60)).await;
        for (what, f) in [
            ("RemoveLost", (|s: &Step| matches!(s, Step::RemoveLost { .. })) as fn(&Step) -> bool),
            ("Clear", |s| matches!(s, Step::Clear { .. })),
            ("Add", |s| matches!(s, Step::Add { .. })),
            ("Promote", |s| matches!(s, Step::Promote { .. })),
        ] {
            assert_eq!(count(&healed, f), GROUPS as usize, "{what}: {healed:?}");
        }
        let ms = assert_voters(&c, &[1, 2, 3]).await;
        for m in &ms {
            let id = m.members.iter().find(|x| x.address == c.addr(2)).unwrap().replica;
            assert_eq!(m.removed, vec![2], "group {}", m.group);
            assert!(id > 3, "group {}: a fresh id, not {id}", m.group);
        }
        assert_data(&c, &[2], 20).await;
        assert!(matches!(observed_role(&c, 2).await, MemberRole::Leader | MemberRole::Follower));
        assert!(converge(&c, &[1, 2, 3], Duration::from_secs(10)).await.is_empty());
    })
    .await
    .expect("the test exceeded its time bound");
}
