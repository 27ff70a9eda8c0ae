//! The status a reconcile writes (pure): phase, replica counts, members and the three conditions.
//!
//! Conditions keep their `lastTransitionTime` unless their status flips ([`set_condition`]), and every
//! condition carries the generation it describes. Availability is judged against the founding members: a
//! group needs a majority of its voters, and the founding members are the voters the operator knows of.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::crd::{ConditionStatus, ConditionType, DrakkarClusterStatus, MemberRole, MemberStatus, Phase};
use crate::names::{Names, founding_replica_id};
use crate::validate::{Founding, Problem, ProblemKind};

/// What a status is computed from.
#[derive(Clone, Debug)]
pub struct StatusInput<'a> {
    /// The cluster's names.
    pub names: &'a Names,
    /// `metadata.generation` of the cluster.
    pub generation: Option<i64>,
    /// `spec.replicas`.
    pub replicas: i32,
    /// The founding settings (those of the running StatefulSet, or of the spec for a new cluster).
    pub founding: &'a Founding,
    /// The StatefulSet as the server returned it (None: not created, e.g. a refused new cluster).
    pub statefulset: Option<&'a StatefulSet>,
    /// The node pods.
    pub pods: &'a [Pod],
    /// Why the spec was refused (empty: accepted and applied).
    pub problems: &'a [Problem],
    /// cert-manager has not issued the nodes' certificate yet.
    pub waiting_for_certificates: bool,
    /// Something outside the spec keeps the cluster from being built (an API the spec needs is not
    /// served): Degraded with its reason, and nothing progresses until it is fixed.
    pub blocked: Option<&'a Blocked>,
    /// Why the StatefulSet could not create its missing pods (its latest `FailedCreate` Event, e.g. a pod
    /// security admission refusal), when pods are missing.
    pub pods_refused: Option<&'a str>,
    /// The status before this reconcile.
    pub previous: Option<&'a DrakkarClusterStatus>,
    /// The time of this reconcile.
    pub now: Timestamp,
}

/// Why a cluster cannot be built, though its spec is valid: a condition reason and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The `Degraded` condition's reason (CamelCase).
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// The Degraded reason (and Warning Event) when the StatefulSet cannot create pods.
pub const POD_CREATION_FAILED: &str = "PodCreationFailed";

/// `s` cut to at most `max` bytes, at a character boundary, marked when cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Majority of `members` voters.
pub fn quorum(members: i32) -> i32 {
    members / 2 + 1
}

/// Returns the condition to store: `lastTransitionTime` is kept from `previous` when the status did not
/// change, and set to `now` when it did (or when there was no such condition).
pub fn set_condition(
    previous: &[Condition],
    kind: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let old = previous.iter().find(|c| c.type_ == kind.as_str());
    let last_transition_time = match old {
        Some(c) if c.status == status.as_str() => c.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: kind.as_str().into(),
        status: status.as_str().into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The status of a condition type in `status`, if present.
pub fn condition_status(status: Option<&DrakkarClusterStatus>, kind: ConditionType) -> Option<&str> {
    status?.conditions.iter().find(|c| c.type_ == kind.as_str()).map(|c| c.status.as_str())
}

fn ordinal(names: &Names, pod: &Pod) -> Option<i32> {
    pod.metadata.name.as_deref()?.strip_prefix(&format!("{}-", names.statefulset()))?.parse().ok()
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One member entry per pod, by ordinal. Replica ids are known for founding members only; roles come
/// from the Admin API, which this function does not see, so they are `Unknown`.
pub fn members(names: &Names, founding: &Founding, pods: &[Pod]) -> Vec<MemberStatus> {
    let mut with_ordinal: Vec<(i32, &Pod)> =
        pods.iter().filter_map(|p| Some((ordinal(names, p)?, p))).collect();
    with_ordinal.sort_by_key(|(o, _)| *o);
    with_ordinal
        .into_iter()
        .map(|(o, pod)| MemberStatus {
            replica_id: (o < founding.replicas).then(|| founding_replica_id(o)),
            pod: names.pod(o),
            role: MemberRole::Unknown,
            voting: None,
            healthy: pod_ready(pod),
        })
        .collect()
}

/// The status for `input`.
pub fn compute(input: &StatusInput<'_>) -> DrakkarClusterStatus {
    let sts_status = input.statefulset.and_then(|s| s.status.as_ref());
    let running = sts_status.map_or(0, |s| s.replicas);
    let ready = sts_status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = sts_status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let sts_generation = input.statefulset.and_then(|s| s.metadata.generation);
    let sts_observed = sts_status.and_then(|s| s.observed_generation);
    let revisions_match = sts_status.is_none_or(|s| {
        s.update_revision.is_none() || s.current_revision.is_none() || s.current_revision == s.update_revision
    });
    let rolled_out = input.statefulset.is_some()
        && sts_observed >= sts_generation
        && updated == input.replicas
        && ready == input.replicas
        && running == input.replicas
        && revisions_match;
    let needed = quorum(input.founding.replicas);
    let available = ready >= needed;
    let previous = input.previous;
    let was_available = condition_status(previous, ConditionType::Available) == Some("True")
        || matches!(
            previous.and_then(|s| s.phase),
            Some(Phase::Running | Phase::Progressing | Phase::Degraded)
        );

    let (degraded, degraded_reason, degraded_message) = if !input.problems.is_empty() {
        let immutable = input.problems.iter().any(|p| p.kind == ProblemKind::Immutable);
        let text: Vec<String> = input.problems.iter().map(ToString::to_string).collect();
        let reason = if immutable { "ImmutableFieldChanged" } else { "InvalidSpec" };
        (true, reason, format!("spec refused, the cluster is left as it was: {}", text.join("; ")))
    } else if let Some(b) = input.blocked {
        (true, b.reason, b.message.clone())
    } else if let Some(why) = input.pods_refused {
        (true, POD_CREATION_FAILED, format!("the StatefulSet cannot create its pods: {}", cut(why, 1024)))
    } else if !available && was_available {
        (true, "QuorumLost", format!("{ready} of {} nodes ready; {needed} are needed", input.replicas))
    } else {
        (false, "AsExpected", "no problems detected".to_string())
    };

    let (progressing, progressing_reason, progressing_message) = if !input.problems.is_empty() {
        (false, "SpecRejected", "waiting for a valid spec".to_string())
    } else if let Some(b) = input.blocked {
        (false, "Blocked", format!("nothing changes until this is fixed: {}", b.message))
    } else if input.waiting_for_certificates {
        (true, "WaitingForCertificates", "waiting for cert-manager to issue the node certificate".to_string())
    } else if !rolled_out {
        (true, "RollingOut", format!("{updated} of {} pods updated, {ready} ready", input.replicas))
    } else {
        (false, "Reconciled", format!("{} pods up to date and ready", input.replicas))
    };

    let phase = if !input.problems.is_empty() {
        Phase::Invalid
    } else if !available {
        if was_available { Phase::Degraded } else { Phase::Creating }
    } else if rolled_out {
        Phase::Running
    } else {
        Phase::Progressing
    };

    let prev_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let condition = |kind, status, reason: &str, message: String| {
        set_condition(prev_conditions, kind, status, reason, message, input.generation, input.now)
    };
    let conditions = vec![
        condition(
            ConditionType::Available,
            ConditionStatus::from_bool(available),
            if available { "QuorumReady" } else { "QuorumNotReady" },
            format!(
                "{ready} of {} nodes ready; a majority of the {} founding members is {needed}",
                input.replicas, input.founding.replicas
            ),
        ),
        condition(
            ConditionType::Progressing,
            ConditionStatus::from_bool(progressing),
            progressing_reason,
            progressing_message,
        ),
        condition(
            ConditionType::Degraded,
            ConditionStatus::from_bool(degraded),
            degraded_reason,
            degraded_message,
        ),
    ];

    DrakkarClusterStatus {
        phase: Some(phase),
        observed_generation: input.generation,
        replicas: running,
        ready_replicas: ready,
        selector: Some(input.names.selector()),
        members: members(input.names, input.founding, input.pods),
        leaders: Vec::new(),
        conditions,
    }
}
