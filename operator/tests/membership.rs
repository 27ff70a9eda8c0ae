//! `GrpcMembership` against fake nodes: two tonic Admin servers on loopback answering as a real node
//! would, so the client glue (calls, role mapping, the highest-term leader rule) is exercised end to end.

use std::time::{Duration, Instant};

use drakkar_client::pb::{self, admin_server};
use drakkar_operator::admin::{GrpcMembership, Membership, Observation, ObservedMember, Target};
use drakkar_operator::crd::{GroupLeader, MemberRole};
use tonic::{Request, Response, Status};

/// A node that knows group 1's membership and reports `groups` as (group, leader, term).
struct FakeNode {
    groups: Vec<(u64, u64, u64)>,
}

fn no<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not used by the observer"))
}

#[tonic::async_trait]
impl admin_server::Admin for FakeNode {
    async fn add_replica(
        &self,
        _: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        no()
    }
    async fn promote_replica(
        &self,
        _: Request<pb::PromoteReplicaRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        no()
    }
    async fn remove_replica(
        &self,
        _: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        no()
    }
    async fn transfer_leader(
        &self,
        _: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        no()
    }
    async fn get_membership(
        &self,
        req: Request<pb::GetMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        assert_eq!(req.into_inner().group, 1);
        let member = |replica, role: pb::Role| pb::Member {
            replica,
            address: format!("n{replica}:7000"),
            role: role as i32,
        };
        Ok(Response::new(pb::MembershipResponse {
            group: 1,
            conf_index: 3,
            members: vec![
                member(1, pb::Role::Voter),
                member(2, pb::Role::Voter),
                member(3, pb::Role::NonVoter),
            ],
            removed: vec![],
            leader: 2,
            term: 7,
        }))
    }
    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let groups = self
            .groups
            .iter()
            .map(|&(group, leader, term)| pb::GroupStatus { group, leader, term, ..Default::default() })
            .collect();
        Ok(Response::new(pb::StatusResponse { node: None, groups }))
    }
    type ExportSnapshotStream = tokio_stream::Empty<Result<pb::SnapshotChunk, Status>>;
    async fn export_snapshot(
        &self,
        _: Request<pb::ExportSnapshotRequest>,
    ) -> Result<Response<Self::ExportSnapshotStream>, Status> {
        no()
    }
    async fn import_snapshot(
        &self,
        _: Request<tonic::Streaming<pb::ImportSnapshotChunk>>,
    ) -> Result<Response<pb::ImportSnapshotResponse>, Status> {
        no()
    }
    async fn start_group(
        &self,
        _: Request<pb::StartGroupRequest>,
    ) -> Result<Response<pb::StartGroupResponse>, Status> {
        no()
    }
    async fn stop_group(
        &self,
        _: Request<pb::StopGroupRequest>,
    ) -> Result<Response<pb::StopGroupResponse>, Status> {
        no()
    }
    async fn node_info(
        &self,
        _: Request<pb::NodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfoResponse>, Status> {
        no()
    }
}

async fn serve(node: FakeNode) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(admin_server::AdminServer::new(node))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr.to_string()
}

#[tokio::test]
async fn roles_and_leaders_come_from_the_nodes() {
    // Node a saw group 2's old leader (term 4); node b the new one (term 5). Group 3 has no leader.
    let a = serve(FakeNode { groups: vec![(1, 2, 7), (2, 1, 4), (3, 0, 2)] }).await;
    let b = serve(FakeNode { groups: vec![(1, 2, 7), (2, 3, 5)] }).await;
    let target = Target { endpoints: vec![a, b], groups: 3, tls: None };
    let observed = GrpcMembership::default().observe(&target).await.unwrap();
    let member =
        |replica_id, role| ObservedMember { replica_id, address: format!("n{replica_id}:7000"), role };
    assert_eq!(
        observed,
        Some(Observation {
            members: vec![
                member(1, MemberRole::Follower),
                member(2, MemberRole::Leader),
                member(3, MemberRole::NonVoting)
            ],
            leaders: vec![
                GroupLeader { group: 1, replica_id: 2, pod: None },
                GroupLeader { group: 2, replica_id: 3, pod: None },
            ],
        })
    );
}

#[tokio::test]
async fn nothing_to_ask_observes_nothing_and_silence_is_an_error() {
    let membership = GrpcMembership { timeout: Duration::from_millis(300) };
    let none = Target { endpoints: vec![], groups: 1, tls: None };
    assert_eq!(membership.observe(&none).await.unwrap(), None);
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = Target { endpoints: vec![format!("127.0.0.1:{port}")], groups: 1, tls: None };
    let started = Instant::now();
    assert!(membership.observe(&dead).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout: {:?}", started.elapsed());
}
