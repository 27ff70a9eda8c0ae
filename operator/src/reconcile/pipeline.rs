//! The two ends of the pipeline that talk to the API server: read, then apply and status. The middle
//! (validate, build, status computation) is pure and lives in other modules.
//!
//! Request order of a reconcile (the mock API tests assert it):
//! 1. GET the StatefulSet (founding settings, current state);
//! 2. refused spec: (running cluster, `operator` TLS: LIST the TLS Secrets, PATCH those to renew), LIST
//!    pods, PATCH status, POST the Warning Event; stop;
//! 3. `operator` TLS: LIST the TLS Secrets, PATCH (apply) those to issue;
//! 4. PATCH (apply) the nodes' ServiceAccount, ConfigMap, peer Service, client Service,
//!    PodDisruptionBudget, cert-manager Certificates (then GET the server Secret), StatefulSet;
//! 5. LIST pods, (membership seam: GET the operator's TLS Secret), PATCH status, POST Events.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{BLOCKED_REQUEUE, BUSY_REQUEUE, Context, Error, MEMBERSHIP_REQUEUE, SETTLED_REQUEUE};
use crate::admin::{ClientTls, MemberPlan, Observation, Step, Target};
use crate::build::{self, Input, certificate_resource, owner_ref, server_names};
use crate::crd::{
    ConditionStatus, ConditionType, DrakkarCluster, DrakkarClusterStatus, MemberRole, Phase, ReclaimPolicy,
    TlsMode,
};
use crate::names::{FIELD_MANAGER, FOUNDING_ANNOTATION, Names, TLS_ROLE_LABEL};
use crate::status::{Blocked, POD_CREATION_FAILED, StatusInput, compute, condition_status, set_condition};
use crate::tls;
use crate::validate::{Founding, ProblemKind, validate};

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Server-side applies `obj` (the operator owns every field it sets, and takes them back when changed).
async fn ssa<K>(api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + std::fmt::Debug,
{
    api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj)).await
}

/// The founding settings recorded on a StatefulSet the operator created.
fn founding_of(sts: &StatefulSet) -> Option<Founding> {
    let raw = sts.metadata.annotations.as_ref()?.get(FOUNDING_ANNOTATION)?;
    serde_json::from_str(raw).ok()
}

/// An Event whose `action` ends with a digest of its note. kube's recorder merges repeats of one
/// (type, action, reason) into a series that keeps the first occurrence's note, so a note that changed
/// must make a new Event (otherwise `kubectl describe` shows `Scaled (x2)` with the first scale's
/// numbers); a true repeat, same note, still counts up its series.
fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    let digest = crate::hash::fingerprint(note.as_bytes());
    let action = format!("{action}-{}", &digest[..8]);
    Event { type_, reason: reason.into(), note: Some(note), action, secondary: None }
}

async fn publish(ctx: &Context, dk: &DrakkarCluster, events: &[Event]) {
    let reference = dk.object_ref(&());
    for e in events {
        // An Event that cannot be stored must not fail the reconcile: the status carries the same facts.
        if let Err(err) = ctx.recorder.publish(e, &reference).await {
            tracing::warn!(reason = %e.reason, error = %err, "could not publish an Event");
        }
    }
}

async fn patch_status(
    api: &Api<DrakkarCluster>,
    name: &str,
    status: &DrakkarClusterStatus,
) -> Result<(), Error> {
    let body = json!({ "apiVersion": "drakkar.io/v1alpha1", "kind": "DrakkarCluster", "status": status });
    api.patch_status(name, &apply_params(), &Patch::Apply(&body)).await?;
    Ok(())
}

async fn list_pods(api: &Api<Pod>, names: &Names) -> Result<Vec<Pod>, Error> {
    Ok(api.list(&ListParams::default().labels(&names.selector())).await?.items)
}

/// The Apply branch: read, validate, build, apply, status.
pub(super) async fn apply_cluster(dk: &DrakkarCluster, ctx: &Context) -> Result<Action, Error> {
    let names = ctx.names(dk)?;
    let ns = names.namespace.as_str();
    let client = &ctx.client;
    let now = (ctx.clock)();
    let clusters: Api<DrakkarCluster> = Api::namespaced(client.clone(), ns);
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);

    // Read.
    let observed = sts_api.get_opt(&names.statefulset()).await?;
    let founded = observed.as_ref().and_then(founding_of);
    if observed.is_some() && founded.is_none() {
        tracing::warn!(cluster = %names.cluster, "the StatefulSet has no founding annotation; using the spec");
    }
    let new_generation = dk.status.as_ref().and_then(|s| s.observed_generation) != dk.metadata.generation;

    // Validate.
    let problems = validate(dk, founded.as_ref());
    let founding = founded.clone().unwrap_or_else(|| Founding::from_spec(dk));
    let previous = dk.status.as_ref();
    if !problems.is_empty() {
        // The running cluster keeps valid certificates while its spec is refused.
        let mut events = Vec::new();
        if let Some(sts) = observed.as_ref().filter(|_| founding.tls_mode == TlsMode::Operator) {
            let running = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(founding.replicas);
            events.extend(issue_certificates(ctx, &secrets, &names, &owner_ref(dk)?, running, now).await?);
        }
        let pods = list_pods(&pods_api, &names).await?;
        let status = compute(&StatusInput {
            names: &names,
            generation: dk.metadata.generation,
            replicas: dk.spec.replicas,
            founding: &founding,
            statefulset: observed.as_ref(),
            pods: &pods,
            problems: &problems,
            waiting_for_certificates: false,
            blocked: None,
            pods_refused: None,
            previous,
            now,
        });
        patch_status(&clusters, &names.cluster, &status).await?;
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let text = text.join("; ");
        if new_generation {
            let immutable = problems.iter().any(|p| p.kind == ProblemKind::Immutable);
            let reason = if immutable { "ImmutableFieldChange" } else { "InvalidSpec" };
            events.insert(0, event(EventType::Warning, reason, "Validate", format!("spec refused: {text}")));
        }
        publish(ctx, dk, &events).await;
        return Err(Error::InvalidSpec(text));
    }

    // Build and apply.
    let owner = owner_ref(dk)?;
    let mut events = Vec::new();
    let kept = kept_replicas(&names, dk.spec.replicas, previous);
    if dk.spec.tls.mode == TlsMode::Operator {
        events.extend(issue_certificates(ctx, &secrets, &names, &owner, kept, now).await?);
    }
    let mut desired = build::build(&Input {
        cluster: dk,
        names: &names,
        founding: &founding,
        capabilities: &ctx.capabilities,
    })?;
    if let Some(spec) = desired.statefulset.spec.as_mut() {
        spec.replicas = Some(kept);
    }
    ssa(&Api::<ServiceAccount>::namespaced(client.clone(), ns), &desired.service_account).await?;
    ssa(&Api::<ConfigMap>::namespaced(client.clone(), ns), &desired.config_map).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    ssa(&services, &desired.peer_service).await?;
    ssa(&services, &desired.client_service).await?;
    match &desired.pdb {
        Some(pdb) => {
            ssa(&Api::<PodDisruptionBudget>::namespaced(client.clone(), ns), pdb).await?;
        }
        None if observed.is_none() => events.push(event(
            EventType::Warning,
            "PodDisruptionBudgetUnsupported",
            "Apply",
            "the API server does not serve policy/v1 PodDisruptionBudgets (Kubernetes < 1.21): node drains \
             are not limited to a minority of the nodes"
                .into(),
        )),
        None => {}
    }
    let mut waiting_for_certificates = false;
    if !desired.certificates.is_empty() {
        let certs: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &certificate_resource());
        for c in &desired.certificates {
            match certs.patch(&c.name_any(), &apply_params(), &Patch::Apply(c)).await {
                // The resource type itself is not served: cert-manager is not installed (yet).
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    let blocked = Blocked {
                        reason: "CertManagerMissing",
                        message: "spec.tls.mode is certManager, but this API server does not serve \
                                  cert-manager.io/v1 Certificates: install cert-manager (its CRDs), or use \
                                  tls.mode operator"
                            .into(),
                    };
                    return blocked_cluster(ctx, dk, &names, &founding, observed.as_ref(), &blocked, now)
                        .await;
                }
                r => {
                    r?;
                }
            }
        }
        let server = secrets.get_opt(&names.tls_secret("server")).await?;
        let issued = server
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .is_some_and(|d| d.contains_key("tls.crt") && d.contains_key("tls.key"));
        waiting_for_certificates = !issued;
    }
    // The pods cannot start without their certificate: the StatefulSet waits for it.
    let live = if waiting_for_certificates {
        observed.clone()
    } else {
        Some(ssa(&sts_api, &desired.statefulset).await?)
    };

    // Status.
    let pods = list_pods(&pods_api, &names).await?;
    let pods_refused = match live.as_ref().filter(|sts| pods_missing(sts)) {
        Some(_) => pod_creation_failure(ctx, &names, now).await,
        None => None,
    };
    let mut status = compute(&StatusInput {
        names: &names,
        generation: dk.metadata.generation,
        replicas: dk.spec.replicas,
        founding: &founding,
        statefulset: live.as_ref(),
        pods: &pods,
        problems: &[],
        waiting_for_certificates,
        blocked: None,
        pods_refused: pods_refused.as_deref(),
        previous,
        now,
    });
    let (membership_events, membership_pending) =
        manage_membership(ctx, dk, &names, &mut status, &secrets).await;
    patch_status(&clusters, &names.cluster, &status).await?;

    // Events of this step.
    if observed.is_none() && live.is_some() {
        events.push(event(
            EventType::Normal,
            "Created",
            "Apply",
            format!(
                "created StatefulSet {} with {} replicas, {} {} group(s)",
                names.statefulset(),
                dk.spec.replicas,
                founding.groups,
                founding.state_machine.as_str()
            ),
        ));
    }
    let observed_replicas = observed.as_ref().and_then(|s| s.spec.as_ref()).and_then(|s| s.replicas);
    if let Some(before) = observed_replicas.filter(|r| *r != dk.spec.replicas) {
        events.push(event(
            EventType::Normal,
            "Scaled",
            "Apply",
            format!("StatefulSet scaled from {before} to {} replicas", dk.spec.replicas),
        ));
    }
    let was = |kind| condition_status(previous, kind);
    let is = |kind| condition_status(Some(&status), kind);
    if is(ConditionType::Available) == Some("True") && was(ConditionType::Available) != Some("True") {
        events.push(event(
            EventType::Normal,
            "Available",
            "Observe",
            "a majority of the nodes is ready".into(),
        ));
    }
    let degraded_by = |s: Option<&DrakkarClusterStatus>| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == ConditionType::Degraded.as_str()))
            .filter(|c| c.status == "True")
            .map(|c| c.reason.clone())
    };
    if degraded_by(Some(&status)).as_deref() == Some(POD_CREATION_FAILED)
        && (new_generation || degraded_by(previous).as_deref() != Some(POD_CREATION_FAILED))
    {
        let note = pods_refused.clone().unwrap_or_default();
        events.push(event(EventType::Warning, POD_CREATION_FAILED, "Observe", note));
    }
    if status.phase == Some(Phase::Degraded) && previous.and_then(|s| s.phase) != Some(Phase::Degraded) {
        events.push(event(
            EventType::Warning,
            "QuorumLost",
            "Observe",
            "fewer than a majority of nodes are ready".into(),
        ));
    }
    events.extend(membership_events);
    if new_generation && dk.spec.backup.is_some() {
        events.push(event(
            EventType::Warning,
            "BackupNotImplemented",
            "Apply",
            "spec.backup is accepted but scheduled backups are not implemented yet".into(),
        ));
    }
    publish(ctx, dk, &events).await;

    Ok(match status.phase {
        _ if membership_pending => Action::requeue(MEMBERSHIP_REQUEUE),
        Some(Phase::Running) => Action::requeue(SETTLED_REQUEUE),
        _ => Action::requeue(BUSY_REQUEUE),
    })
}

/// Whether the StatefulSet controller has seen the current StatefulSet and still runs fewer pods than it
/// asks for: pods it could not create (or has not created yet).
fn pods_missing(sts: &StatefulSet) -> bool {
    let (Some(spec), Some(st)) = (sts.spec.as_ref(), sts.status.as_ref()) else { return false };
    st.observed_generation >= sts.metadata.generation && st.replicas < spec.replicas.unwrap_or(1)
}

/// How recent a `FailedCreate` Event must be to explain missing pods.
const FAILED_CREATE_WINDOW: k8s_openapi::jiff::SignedDuration =
    k8s_openapi::jiff::SignedDuration::from_mins(10);

/// The message of the StatefulSet's latest `FailedCreate` Event of the last [`FAILED_CREATE_WINDOW`]
/// (the StatefulSet controller's account of a pod it could not create: admission refusals, quota). A
/// failed lookup is logged and reads as none.
async fn pod_creation_failure(
    ctx: &Context,
    names: &Names,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<String> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let fields = format!(
        "involvedObject.kind=StatefulSet,involvedObject.name={},reason=FailedCreate",
        names.statefulset()
    );
    let list = match api.list(&ListParams::default().fields(&fields)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::info!(cluster = %names.cluster, error = %e, "could not read the StatefulSet's Events");
            return None;
        }
    };
    let when = |e: &k8s_openapi::api::core::v1::Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.first_timestamp.as_ref().map(|t| t.0))
    };
    list.items
        .iter()
        .filter_map(|e| Some((when(e)?, e)))
        .filter(|(t, _)| now.duration_since(*t) <= FAILED_CREATE_WINDOW)
        .max_by_key(|(t, _)| *t)
        .and_then(|(_, e)| e.message.clone())
}

/// A valid spec that cannot be built (see [`Blocked`]): the status says why (`Degraded`, with the
/// blocker's reason), a Warning Event says it once per generation (or when the reason is new), and the
/// cluster is looked at again after [`BLOCKED_REQUEUE`].
async fn blocked_cluster(
    ctx: &Context,
    dk: &DrakkarCluster,
    names: &Names,
    founding: &Founding,
    observed: Option<&StatefulSet>,
    blocked: &Blocked,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<Action, Error> {
    let pods = list_pods(&Api::namespaced(ctx.client.clone(), &names.namespace), names).await?;
    let previous = dk.status.as_ref();
    let status = compute(&StatusInput {
        names,
        generation: dk.metadata.generation,
        replicas: dk.spec.replicas,
        founding,
        statefulset: observed,
        pods: &pods,
        problems: &[],
        waiting_for_certificates: false,
        blocked: Some(blocked),
        pods_refused: None,
        previous,
        now,
    });
    patch_status(&Api::namespaced(ctx.client.clone(), &names.namespace), &names.cluster, &status).await?;
    let new_generation = previous.and_then(|s| s.observed_generation) != dk.metadata.generation;
    let degraded_reason = |s: Option<&DrakkarClusterStatus>| {
        s?.conditions.iter().find(|c| c.type_ == ConditionType::Degraded.as_str()).map(|c| c.reason.clone())
    };
    if new_generation || degraded_reason(previous).as_deref() != Some(blocked.reason) {
        let e = event(EventType::Warning, blocked.reason, "Apply", blocked.message.clone());
        publish(ctx, dk, &[e]).await;
    }
    Ok(Action::requeue(BLOCKED_REQUEUE))
}

/// `operator` TLS mode: (re-)issues what [`tls::plan`] says for a cluster of `replicas` pods and returns
/// the Event to publish, if anything was issued.
async fn issue_certificates(
    ctx: &Context,
    secrets: &Api<Secret>,
    names: &Names,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    replicas: i32,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<Option<Event>, Error> {
    let existing = secrets
        .list(&ListParams::default().labels(&format!("{},{TLS_ROLE_LABEL}", names.owned_selector())))
        .await?
        .items;
    let issued = tls::plan(names, &server_names(names, replicas), &existing, owner, now)?;
    for i in &issued {
        ssa(secrets, &i.secret).await?;
    }
    ctx.metrics.certificates_issued(issued.len() as u64);
    if issued.is_empty() {
        return Ok(None);
    }
    // One Event per reconcile: Events with the same reason are merged into a series that keeps only the
    // first note.
    let what: Vec<String> =
        issued.iter().map(|i| format!("{} ({})", i.role.as_str(), i.reason.as_str())).collect();
    Ok(Some(event(
        EventType::Normal,
        "CertificatesIssued",
        "IssueCertificates",
        format!("certificates issued: {}", what.join(", ")),
    )))
}

/// Folds what the Admin API reports into `status`, then moves the groups' membership one step towards
/// the spec (nothing when the seam does not observe, or the spec is refused). Returns the Events of the
/// changes and whether membership changes are still under way.
async fn manage_membership(
    ctx: &Context,
    dk: &DrakkarCluster,
    names: &Names,
    status: &mut DrakkarClusterStatus,
    secrets: &Api<Secret>,
) -> (Vec<Event>, bool) {
    if !ctx.membership.observes() {
        return (Vec::new(), false);
    }
    let tls = if dk.spec.tls.mode == TlsMode::Disabled {
        None
    } else {
        match secrets.get_opt(&names.tls_secret("operator")).await {
            Ok(Some(s)) => client_tls(&s),
            _ => None,
        }
    };
    let target = Target {
        // Ready pods only: the others would each cost a timeout.
        endpoints: status.members.iter().filter(|m| m.healthy).map(|m| names.advertise(&m.pod)).collect(),
        groups: dk.spec.groups,
        tls,
    };
    match ctx.membership.observe(&target).await {
        Ok(Some(obs)) => fold_observation(names, status, obs),
        Ok(None) => {}
        Err(e) => tracing::info!(cluster = %names.cluster, error = %e, "membership not observed"),
    }
    let plan = MemberPlan {
        voters: (0..dk.spec.replicas).map(|o| names.advertise(&names.pod(o))).collect(),
        state_machine: dk.spec.state_machine,
    };
    let outcome = match ctx.membership.converge(&target, &plan).await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(cluster = %names.cluster, error = %e, "membership not changed");
            return (Vec::new(), false);
        }
    };
    let mut events: Vec<Event> = outcome
        .changes
        .iter()
        .map(|c| {
            if let Step::RemoveLost { .. } = c.step {
                return event(EventType::Warning, "LostReplicaRemoved", "ChangeMembership", c.to_string());
            }
            let reason = match c.step {
                Step::TransferLeader { .. } => "LeaderTransferred",
                Step::Remove { .. } | Step::RemoveLost { .. } => "MemberRemoved",
                Step::Clear { .. } => "StaleReplicaDeleted",
                Step::Start { .. } => "ReplicaStarted",
                Step::Add { .. } => "MemberAdded",
                Step::Promote { .. } => "MemberPromoted",
            };
            event(EventType::Normal, reason, "ChangeMembership", c.to_string())
        })
        .collect();
    if !outcome.errors.is_empty() {
        let note = outcome.errors.join("; ");
        events.push(event(EventType::Warning, "MembershipChangeFailed", "ChangeMembership", note));
    }
    if !outcome.pending.is_empty() {
        let groups: Vec<String> = outcome.pending.iter().map(u64::to_string).collect();
        let message = format!(
            "changing the membership of group(s) {} towards {} voters: {}",
            groups.join(", "),
            plan.voters.len(),
            if outcome.changes.is_empty() {
                "waiting (catching up, leader or node unavailable)".to_string()
            } else {
                outcome.changes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            }
        );
        let previous = dk.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
        let now = (ctx.clock)();
        mark_progressing(status, previous, "MembershipChanging", message, dk.metadata.generation, now);
    }
    (events, !outcome.pending.is_empty())
}

/// Roles, voting and replica ids of the pods, matched to group 1's members by address.
fn fold_observation(names: &Names, status: &mut DrakkarClusterStatus, obs: Observation) {
    for m in &mut status.members {
        let address = names.advertise(&m.pod);
        match obs.members.iter().find(|x| x.address == address) {
            Some(x) => {
                m.replica_id = Some(x.replica_id);
                m.role = x.role;
                m.voting =
                    Some(matches!(x.role, MemberRole::Leader | MemberRole::Follower | MemberRole::Witness));
            }
            None => {
                m.replica_id = None;
                m.role = MemberRole::None;
                m.voting = Some(false);
            }
        }
    }
    status.leaders = obs.leaders;
    for l in &mut status.leaders {
        l.pod = status.members.iter().find(|m| m.replica_id == Some(l.replica_id)).map(|m| m.pod.clone());
    }
}

/// Sets the Progressing condition (and a Running phase to Progressing); `previous`: the conditions of the
/// last status, which keep their transition time.
fn mark_progressing(
    status: &mut DrakkarClusterStatus,
    previous: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: k8s_openapi::jiff::Timestamp,
) {
    let updated = set_condition(
        previous,
        ConditionType::Progressing,
        ConditionStatus::True,
        reason,
        message,
        generation,
        now,
    );
    status.conditions.retain(|c| c.type_ != updated.type_);
    status.conditions.push(updated);
    if status.phase == Some(Phase::Running) {
        status.phase = Some(Phase::Progressing);
    }
}

/// How many pods the StatefulSet keeps: the spec's count, or more while pods beyond it are still members
/// of group 1 (as the last status observed them). A scale-down removes members first and shrinks the
/// StatefulSet after, so the groups never lose a majority to pods deleted before their removal.
pub fn kept_replicas(names: &Names, spec_replicas: i32, previous: Option<&DrakkarClusterStatus>) -> i32 {
    let still_member = |m: &crate::crd::MemberStatus| {
        matches!(
            m.role,
            MemberRole::Leader | MemberRole::Follower | MemberRole::NonVoting | MemberRole::Witness
        )
    };
    previous
        .into_iter()
        .flat_map(|s| s.members.iter())
        .filter(|m| still_member(m))
        .filter_map(|m| m.pod.strip_prefix(&format!("{}-", names.statefulset()))?.parse::<i32>().ok())
        .map(|o| o + 1)
        .fold(spec_replicas, i32::max)
}

fn client_tls(secret: &Secret) -> Option<ClientTls> {
    let get = |k: &str| {
        let bytes = secret.data.as_ref()?.get(k)?;
        String::from_utf8(bytes.0.clone()).ok()
    };
    Some(ClientTls { ca: get("ca.crt")?, cert: get("tls.crt")?, key: get("tls.key")? })
}

/// The Cleanup branch: owned objects go with the cluster (owner references); the volumes are deleted
/// unless `storage.reclaimPolicy` is `Retain`.
pub(super) async fn cleanup(dk: &DrakkarCluster, ctx: &Context) -> Result<Action, Error> {
    let names = ctx.names(dk)?;
    let note = match dk.spec.storage.reclaim_policy {
        ReclaimPolicy::Delete => {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
            pvcs.delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&names.owned_selector()),
            )
            .await?;
            ("VolumesDeleted", "the node volumes are deleted with the cluster (reclaimPolicy Delete)")
        }
        ReclaimPolicy::Retain => (
            "VolumesRetained",
            "the node volumes are kept (reclaimPolicy Retain); delete their claims by hand",
        ),
    };
    publish(ctx, dk, &[event(EventType::Normal, note.0, "Cleanup", note.1.into())]).await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn a_changed_note_is_a_new_event_and_a_repeat_is_the_same() {
        let a = event(EventType::Normal, "Scaled", "Scale", "StatefulSet scaled from 3 to 5 replicas".into());
        let b = event(EventType::Normal, "Scaled", "Scale", "StatefulSet scaled from 5 to 3 replicas".into());
        let again =
            event(EventType::Normal, "Scaled", "Scale", "StatefulSet scaled from 3 to 5 replicas".into());
        // The recorder keys a series on (type, action, reason, ...): the note must show in the action.
        assert_ne!(a.action, b.action, "two different scalings would merge into one series");
        assert_eq!(a.action, again.action, "a true repeat must count up its series");
        assert!(a.action.starts_with("Scale-") && a.action.len() <= 128, "{}", a.action);
    }
}
