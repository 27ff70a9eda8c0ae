//! `DrakkarCluster.status`: what the operator observed, written only by the operator (server-side apply).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a DrakkarCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DrakkarClusterStatus {
    /// One-word summary; the conditions carry the detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods the StatefulSet runs (the `/scale` subresource reads it).
    #[serde(default)]
    pub replicas: i32,
    /// Pods whose node reports ready (caught up with its groups).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the node pods, for the `/scale` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// One entry per node pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The leader of each group, as the nodes report it (empty when not observed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaders: Vec<GroupLeader>,
    /// `Available`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Summary state of a cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[non_exhaustive]
pub enum Phase {
    /// Objects created, a majority of nodes not ready yet for the first time.
    Creating,
    /// Every node ready and up to date.
    Running,
    /// A majority is ready; a rollout, a scale or some node is still in progress.
    Progressing,
    /// Fewer than a majority of nodes are ready after the cluster had been created.
    Degraded,
    /// The spec was rejected (see the `Degraded` condition); the running cluster was left as it was.
    Invalid,
}

/// One node pod as seen by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The node's replica id in the KV groups, when known (founding members: ordinal + 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<u64>,
    /// Pod name.
    pub pod: String,
    /// Raft role in group 1, when observed through the Admin API.
    pub role: MemberRole,
    /// Whether the node votes in the groups, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voting: Option<bool>,
    /// The pod is ready (its node is caught up).
    pub healthy: bool,
}

/// Raft role of a member.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[non_exhaustive]
pub enum MemberRole {
    /// Leader of the group.
    Leader,
    /// Voting follower.
    Follower,
    /// Non-voting replica (catching up before promotion).
    NonVoting,
    /// Witness (votes, stores no data).
    Witness,
    /// A member whose node lost its data (a wiped volume): the group refuses it, and the operator replaces
    /// it under a new replica id.
    Lost,
    /// Not a member of the group (e.g. a pod added by a scale-up, not yet added to the groups).
    None,
    /// Not observed.
    Unknown,
}

/// The leader of one group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupLeader {
    /// Group id.
    pub group: u64,
    /// Leader replica id.
    pub replica_id: u64,
    /// The leader's pod, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// The condition types the operator maintains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    /// A majority of nodes is ready: the groups can serve.
    Available,
    /// The operator is moving the cluster towards its spec (creating, rolling, scaling, issuing).
    Progressing,
    /// Something needs attention: an invalid spec, nodes not ready, an unsupported feature.
    Degraded,
}

impl ConditionType {
    /// The `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Available => "Available",
            ConditionType::Progressing => "Progressing",
            ConditionType::Degraded => "Degraded",
        }
    }
}

/// `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl ConditionStatus {
    /// The `status` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    /// `True` when `b`, else `False`.
    pub fn from_bool(b: bool) -> Self {
        if b { ConditionStatus::True } else { ConditionStatus::False }
    }
}
