//! Typed KV, state machine and admin calls on a [`Client`].

use bytes::Bytes;

use crate::client::{Client, request};
use crate::error::ClientError;
use crate::pb::{self, Consistency};

type Kv = pb::kv_client::KvClient<tonic::transport::Channel>;
type Sm = pb::state_machine_client::StateMachineClient<tonic::transport::Channel>;
type Admin = pb::admin_client::AdminClient<tonic::transport::Channel>;

/// A key range: every key starting with `prefix`.
pub fn prefix(prefix: impl Into<Bytes>) -> pb::KeyRange {
    pb::KeyRange { kind: Some(pb::key_range::Kind::Prefix(prefix.into())) }
}

/// A key range: keys in `[start, end)` (`end` None: unbounded).
pub fn span(start: impl Into<Bytes>, end: Option<Bytes>) -> pb::KeyRange {
    pb::KeyRange { kind: Some(pb::key_range::Kind::Span(pb::Span { start: start.into(), end })) }
}

impl Client {
    /// Writes `key` in `group`.
    pub async fn put(
        &self,
        group: u64,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<pb::PutResponse, ClientError> {
        let (key, value) = (key.into(), value.into());
        self.write(group, |ch, t, session| {
            let req = pb::PutRequest { group, key: key.clone(), value: value.clone(), session };
            async move { Kv::new(ch).put(request(req, t)).await }
        })
        .await
    }

    /// Reads `key` in `group`.
    pub async fn get(
        &self,
        group: u64,
        key: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Option<pb::KeyValue>, ClientError> {
        let key = key.into();
        let r = self
            .call(Some(group), true, |ch, t| {
                let req = pb::GetRequest { group, key: key.clone(), consistency: consistency as i32 };
                async move { Kv::new(ch).get(request(req, t)).await }
            })
            .await?;
        Ok(r.kv)
    }

    /// Deletes `key` in `group`.
    pub async fn delete(&self, group: u64, key: impl Into<Bytes>) -> Result<pb::DeleteResponse, ClientError> {
        let key = key.into();
        self.write(group, |ch, t, session| {
            let req = pb::DeleteRequest { group, key: key.clone(), session };
            async move { Kv::new(ch).delete(request(req, t)).await }
        })
        .await
    }

    /// Deletes every key of `range` in `group`; returns how many.
    pub async fn delete_range(&self, group: u64, range: pb::KeyRange) -> Result<u64, ClientError> {
        let r = self
            .write(group, |ch, t, session| {
                let req = pb::DeleteRangeRequest { group, range: Some(range.clone()), session };
                async move { Kv::new(ch).delete_range(request(req, t)).await }
            })
            .await?;
        Ok(r.deleted)
    }

    /// Reads keys of `range` in order (at most `limit`; 0: the server's maximum).
    pub async fn scan(
        &self,
        group: u64,
        range: pb::KeyRange,
        limit: u32,
        keys_only: bool,
        consistency: Consistency,
    ) -> Result<pb::ScanResponse, ClientError> {
        self.call(Some(group), true, |ch, t| {
            let req = pb::ScanRequest {
                group,
                range: Some(range.clone()),
                limit,
                keys_only,
                consistency: consistency as i32,
            };
            async move { Kv::new(ch).scan(request(req, t)).await }
        })
        .await
    }

    /// A compare-and-swap (`req.session` is filled in by the client).
    pub async fn compare_and_swap(
        &self,
        req: pb::CompareAndSwapRequest,
    ) -> Result<pb::CompareAndSwapResponse, ClientError> {
        self.write(req.group, |ch, t, session| {
            let req = pb::CompareAndSwapRequest { session, ..req.clone() };
            async move { Kv::new(ch).compare_and_swap(request(req, t)).await }
        })
        .await
    }

    /// A transaction (`req.session` is filled in by the client).
    pub async fn txn(&self, req: pb::TxnRequest) -> Result<pb::TxnResponse, ClientError> {
        self.write(req.group, |ch, t, session| {
            let req = pb::TxnRequest { session, ..req.clone() };
            async move { Kv::new(ch).txn(request(req, t)).await }
        })
        .await
    }

    /// Proposes a raw command to `group`'s state machine; returns its result.
    pub async fn propose(
        &self,
        group: u64,
        command: impl Into<Bytes>,
    ) -> Result<pb::ProposeResponse, ClientError> {
        let command = command.into();
        self.write(group, |ch, t, session| {
            let req = pb::ProposeRequest { group, command: command.clone(), session };
            async move { Sm::new(ch).propose(request(req, t)).await }
        })
        .await
    }

    /// Runs a raw query against `group`'s state machine.
    pub async fn read(
        &self,
        group: u64,
        query: impl Into<Bytes>,
        consistency: Consistency,
    ) -> Result<Bytes, ClientError> {
        let query = query.into();
        let r = self
            .call(Some(group), true, |ch, t| {
                let req = pb::ReadRequest { group, query: query.clone(), consistency: consistency as i32 };
                async move { Sm::new(ch).read(request(req, t)).await }
            })
            .await?;
        Ok(r.data)
    }

    /// The membership and leader of `group`.
    pub async fn membership(&self, group: u64) -> Result<pb::MembershipResponse, ClientError> {
        self.call(Some(group), true, |ch, t| async move {
            Admin::new(ch).get_membership(request(pb::GetMembershipRequest { group }, t)).await
        })
        .await
    }

    /// Adds a replica to `group` (see Admin.AddReplica).
    pub async fn add_replica(
        &self,
        group: u64,
        replica: u64,
        address: &str,
        role: pb::Role,
        expected_conf_index: u64,
    ) -> Result<pb::MembershipResponse, ClientError> {
        let address = address.to_string();
        self.call(Some(group), false, |ch, t| {
            let req = pb::AddReplicaRequest {
                group,
                replica,
                address: address.clone(),
                role: role as i32,
                expected_conf_index,
            };
            async move { Admin::new(ch).add_replica(request(req, t)).await }
        })
        .await
    }

    /// Promotes a non-voter of `group` to voter.
    pub async fn promote_replica(
        &self,
        group: u64,
        replica: u64,
        expected_conf_index: u64,
    ) -> Result<pb::MembershipResponse, ClientError> {
        self.call(Some(group), false, |ch, t| {
            let req = pb::PromoteReplicaRequest { group, replica, expected_conf_index };
            async move { Admin::new(ch).promote_replica(request(req, t)).await }
        })
        .await
    }

    /// Removes a replica from `group`.
    pub async fn remove_replica(
        &self,
        group: u64,
        replica: u64,
        expected_conf_index: u64,
    ) -> Result<pb::MembershipResponse, ClientError> {
        self.call(Some(group), false, |ch, t| {
            let req = pb::RemoveReplicaRequest { group, replica, expected_conf_index };
            async move { Admin::new(ch).remove_replica(request(req, t)).await }
        })
        .await
    }

    /// Asks `group`'s leader to hand leadership to replica `to`.
    pub async fn transfer_leader(&self, group: u64, to: u64) -> Result<(), ClientError> {
        self.call(Some(group), true, |ch, t| async move {
            Admin::new(ch).transfer_leader(request(pb::TransferLeaderRequest { group, to }, t)).await
        })
        .await
        .map(|_| ())
    }

    /// The status of the node at `endpoint` and of every group it runs.
    pub async fn status(&self, endpoint: &str) -> Result<pb::StatusResponse, ClientError> {
        self.call_at(endpoint, |ch, t| async move {
            Admin::new(ch).status(request(pb::StatusRequest {}, t)).await
        })
        .await
    }

    /// The identity of the node at `endpoint`.
    pub async fn node_info(&self, endpoint: &str) -> Result<pb::NodeInfoResponse, ClientError> {
        self.call_at(endpoint, |ch, t| async move {
            Admin::new(ch).node_info(request(pb::NodeInfoRequest {}, t)).await
        })
        .await
    }

    /// Starts a replica of a KV group on the node at `endpoint`.
    pub async fn start_group(&self, endpoint: &str, req: pb::StartGroupRequest) -> Result<(), ClientError> {
        self.call_at(endpoint, |ch, t| async move { Admin::new(ch).start_group(request(req, t)).await })
            .await
            .map(|_| ())
    }

    /// Stops the replica of `group` on the node at `endpoint`.
    pub async fn stop_group(&self, endpoint: &str, group: u64, remove_data: bool) -> Result<(), ClientError> {
        self.call_at(endpoint, |ch, t| async move {
            Admin::new(ch).stop_group(request(pb::StopGroupRequest { group, remove_data }, t)).await
        })
        .await
        .map(|_| ())
    }
}
