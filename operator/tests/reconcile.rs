//! The reconciler against a scripted API server: each test lists the exact requests one reconcile makes,
//! in order, with the answers, and checks the outcome. A request the script does not expect fails the
//! test (the script asserts it, or the reconciler gets no answer and returns a transport error).

#[path = "common/apiserver.rs"]
mod apiserver;
mod common;

use std::sync::Arc;
use std::time::Duration;

use apiserver::{ApiServer, pair};
use drakkar_operator::DrakkarCluster;
use drakkar_operator::build::{Capabilities, Input, build};
use drakkar_operator::names::Names;
use drakkar_operator::reconcile::{
    BLOCKED_REQUEUE, BUSY_REQUEUE, Context, Error, FINALIZER, SETTLED_REQUEUE, backoff, error_policy,
    reconcile,
};
use drakkar_operator::validate::Founding;
use http::{Method, StatusCode};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

const NOW: &str = "2026-11-25T12:00:00Z";
const EARLIER: &str = "2026-11-20T08:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn cluster(fixture: &str) -> DrakkarCluster {
    let mut dk = common::load(&common::fixture(fixture));
    dk.metadata.finalizers = Some(vec![FINALIZER.into()]);
    dk.metadata.generation = Some(1);
    dk
}

fn context(client: kube::Client, caps: Capabilities) -> Arc<Context> {
    Arc::new(Context::new(client, Some("test".into()), "cluster.local", caps).with_clock(Arc::new(now)))
}

/// Runs one reconcile against `script` (which answers every request), with a deadline.
async fn run<F, Fut>(
    dk: DrakkarCluster,
    caps: Capabilities,
    script: F,
) -> (Result<Action, Error>, Arc<Context>)
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (client, server) = pair();
    let ctx = context(client, caps);
    let verifier = tokio::spawn(script(server));
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(dk), ctx.clone()))
        .await
        .expect("reconcile timed out");
    tokio::time::timeout(Duration::from_secs(10), verifier)
        .await
        .expect("script timed out")
        .expect("script failed");
    (result, ctx)
}

fn sts_path(ns: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/statefulsets/{name}")
}

fn status_path(ns: &str, name: &str) -> String {
    format!("/apis/drakkar.io/v1alpha1/namespaces/{ns}/drakkarclusters/{name}/status")
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == kind).unwrap()
}

/// The StatefulSet the builders produce for `dk`, as the server would return it with `ready` pods.
fn running_sts(dk: &DrakkarCluster, ready: i32) -> Value {
    let names = Names::new(dk.metadata.name.as_deref().unwrap(), "default", "cluster.local");
    let founding = Founding::from_spec(dk);
    let caps = Capabilities::default();
    let desired =
        build(&Input { cluster: dk, names: &names, founding: &founding, capabilities: &caps }).unwrap();
    let mut sts = serde_json::to_value(&desired.statefulset).unwrap();
    sts["metadata"]["generation"] = json!(1);
    sts["status"] = json!({
        "replicas": dk.spec.replicas, "readyReplicas": ready, "updatedReplicas": dk.spec.replicas,
        "currentRevision": "r1", "updateRevision": "r1", "observedGeneration": 1,
    });
    sts
}

fn pod(name: &str, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

/// The `dev` cluster's node ServiceAccount, ConfigMap, peer and client Services and PodDisruptionBudget,
/// applied in that order.
async fn expect_dev_objects(server: &mut ApiServer) {
    for path in [
        "/api/v1/namespaces/default/serviceaccounts/dev-node",
        "/api/v1/namespaces/default/configmaps/dev-config",
        "/api/v1/namespaces/default/services/dev-peer",
        "/api/v1/namespaces/default/services/dev",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/dev",
    ] {
        server.expect_apply(path).await;
    }
}

/// Answers the pod list and the status patch; returns the status written.
async fn expect_pods_and_status(server: &mut ApiServer, name: &str, pods: Vec<Value>) -> Value {
    let seen = server.expect(Method::GET, "/api/v1/namespaces/default/pods").await;
    assert_eq!(
        seen.param("labelSelector").as_deref(),
        Some(format!("app.kubernetes.io%2Fcomponent%3Dnode%2Capp.kubernetes.io%2Finstance%3D{name}%2Capp.kubernetes.io%2Fname%3Ddrakkar").as_str())
    );
    seen.ok(&list("PodList", pods));
    let seen = server.expect(Method::PATCH, &status_path("default", name)).await;
    seen.assert_apply();
    assert_eq!(seen.body["apiVersion"], "drakkar.io/v1alpha1");
    assert_eq!(seen.body["kind"], "DrakkarCluster");
    let status = seen.body["status"].clone();
    seen.ok(&json!({"apiVersion": "drakkar.io/v1alpha1", "kind": "DrakkarCluster",
                    "metadata": {"name": name, "namespace": "default"}, "spec": {"image": "x"}, "status": status}));
    status
}

#[tokio::test]
async fn a_new_cluster_first_gets_the_finalizer() {
    let mut dk = cluster("valid/insecure.yaml");
    dk.metadata.finalizers = None;
    let (result, _) = run(dk, Capabilities::default(), |mut server: ApiServer| async move {
        let seen = server
            .expect(Method::PATCH, "/apis/drakkar.io/v1alpha1/namespaces/default/drakkarclusters/dev")
            .await;
        assert_eq!(seen.content_type, "application/json-patch+json");
        assert_eq!(
            seen.body,
            json!([{"op": "test", "path": "/metadata/finalizers", "value": null},
                   {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}])
        );
        let mut answer = serde_json::to_value(common::load(&common::fixture("valid/insecure.yaml"))).unwrap();
        answer["metadata"]["finalizers"] = json!([FINALIZER]);
        seen.ok(&answer);
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_new_cluster_gets_every_object_then_its_status() {
    let dk = cluster("valid/insecure.yaml");
    let (result, ctx) = run(dk, Capabilities::default(), |mut server: ApiServer| async move {
        server.expect(Method::GET, &sts_path("default", "dev")).await.not_found();
        let sa = server.expect_apply("/api/v1/namespaces/default/serviceaccounts/dev-node").await;
        assert_eq!(sa["automountServiceAccountToken"], false);
        let cm = server.expect_apply("/api/v1/namespaces/default/configmaps/dev-config").await;
        assert_eq!(cm["data"]["DRAKKAR_INSECURE"], "true");
        let peer = server.expect_apply("/api/v1/namespaces/default/services/dev-peer").await;
        assert_eq!(peer["spec"]["publishNotReadyAddresses"], true);
        server.expect_apply("/api/v1/namespaces/default/services/dev").await;
        let pdb = server.expect_apply("/apis/policy/v1/namespaces/default/poddisruptionbudgets/dev").await;
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        let sts = server.expect_apply(&sts_path("default", "dev")).await;
        assert_eq!(sts["metadata"]["ownerReferences"][0]["kind"], "DrakkarCluster");
        assert_eq!(sts["spec"]["replicas"], 3);
        let status = expect_pods_and_status(&mut server, "dev", vec![]).await;
        assert_eq!(status["phase"], "Creating");
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status["readyReplicas"], 0);
        assert_eq!(
            status["selector"],
            "app.kubernetes.io/component=node,app.kubernetes.io/instance=dev,app.kubernetes.io/name=drakkar"
        );
        let available = condition(&status, "Available");
        assert_eq!((&available["status"], &available["reason"]), (&json!("False"), &json!("QuorumNotReady")));
        assert_eq!(available["lastTransitionTime"], NOW);
        assert_eq!(available["observedGeneration"], 1);
        assert_eq!(condition(&status, "Progressing")["reason"], "RollingOut");
        assert_eq!(condition(&status, "Degraded")["status"], "False");
        let created = server.expect_event("default", "Created").await;
        assert_eq!(created["type"], "Normal");
        assert_eq!(created["note"], "created StatefulSet dev with 3 replicas, 4 memory group(s)");
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(BUSY_REQUEUE));
    let metrics = ctx.metrics.encode().unwrap();
    assert!(metrics.contains("drakkar_operator_reconciles_total{outcome=\"ok\"} 1"), "{metrics}");
}

#[tokio::test]
async fn operator_tls_issues_the_certificates_before_the_nodes_start() {
    let mut dk = cluster("valid/minimal.yaml");
    dk.metadata.namespace = Some("default".into());
    let (result, ctx) = run(dk, Capabilities::default(), |mut server: ApiServer| async move {
        server.expect(Method::GET, &sts_path("default", "demo")).await.not_found();
        let seen = server.expect(Method::GET, "/api/v1/namespaces/default/secrets").await;
        assert_eq!(
            seen.param("labelSelector").as_deref(),
            Some("app.kubernetes.io%2Finstance%3Ddemo%2Capp.kubernetes.io%2Fmanaged-by%3Ddrakkar-operator%2Cdrakkar.io%2Ftls")
        );
        seen.ok(&list("SecretList", vec![]));
        for role in ["ca", "server", "operator", "client"] {
            let secret = server.expect_apply(&format!("/api/v1/namespaces/default/secrets/demo-tls-{role}")).await;
            assert_eq!(secret["metadata"]["labels"]["drakkar.io/tls"], role);
            assert_eq!(secret["metadata"]["ownerReferences"][0]["name"], "demo");
        }
        server.expect_apply("/api/v1/namespaces/default/serviceaccounts/demo-node").await;
        server.expect_apply("/api/v1/namespaces/default/configmaps/demo-config").await;
        server.expect_apply("/api/v1/namespaces/default/services/demo-peer").await;
        server.expect_apply("/api/v1/namespaces/default/services/demo").await;
        server.expect_apply("/apis/policy/v1/namespaces/default/poddisruptionbudgets/demo").await;
        let sts = server.expect_apply(&sts_path("default", "demo")).await;
        let args = sts["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
        assert!(args.contains(&json!("--tls-ca=/etc/drakkar/tls/ca.crt")));
        assert!(!args.contains(&json!("--allow-anonymous-clients")), "client certificates are required");
        expect_pods_and_status(&mut server, "demo", vec![]).await;
        let e = server.expect_event("default", "CertificatesIssued").await;
        assert_eq!(
            e["note"],
            "certificates issued: ca (missing), server (missing), operator (missing), client (missing)"
        );
        server.expect_event("default", "Created").await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(BUSY_REQUEUE));
    assert!(ctx.metrics.encode().unwrap().contains("drakkar_operator_certificates_issued_total 4"));
}

/// A settled cluster: everything applied again (idempotent), status Running, no Events.
#[tokio::test]
async fn a_running_cluster_keeps_its_condition_times_and_emits_nothing() {
    let mut dk = cluster("valid/insecure.yaml");
    let sts = running_sts(&dk, 3);
    let previous = json!({
        "phase": "Running", "observedGeneration": 1, "replicas": 3, "readyReplicas": 3,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "QuorumReady", "message": "", "lastTransitionTime": EARLIER, "observedGeneration": 1},
            {"type": "Progressing", "status": "False", "reason": "Reconciled", "message": "", "lastTransitionTime": EARLIER, "observedGeneration": 1},
            {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "", "lastTransitionTime": EARLIER, "observedGeneration": 1}
        ]
    });
    dk.status = Some(serde_json::from_value(previous).unwrap());
    let (result, _) = run(dk, Capabilities::default(), |mut server: ApiServer| async move {
        server.expect(Method::GET, &sts_path("default", "dev")).await.ok(&sts);
        expect_dev_objects(&mut server).await;
        let seen = server.expect(Method::PATCH, &sts_path("default", "dev")).await;
        seen.assert_apply();
        seen.ok(&sts);
        let pods = vec![pod("dev-0", true), pod("dev-1", true), pod("dev-2", true)];
        let status = expect_pods_and_status(&mut server, "dev", pods).await;
        assert_eq!(status["phase"], "Running");
        for kind in ["Available", "Progressing", "Degraded"] {
            assert_eq!(condition(&status, kind)["lastTransitionTime"], EARLIER, "{kind} did not flip");
        }
        assert_eq!(condition(&status, "Progressing")["reason"], "Reconciled");
        let members = status["members"].as_array().unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(members[2], json!({"replicaId": 3, "pod": "dev-2", "role": "Unknown", "healthy": true}));
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(SETTLED_REQUEUE));
}

/// Pods the cluster refuses to create (pod security admission): the StatefulSet's `FailedCreate` Event
/// becomes the Degraded reason, with its message, and a Warning Event.
#[tokio::test]
async fn pods_the_cluster_refuses_to_create_are_degraded_with_the_reason() {
    let dk = cluster("valid/insecure.yaml");
    let mut sts = running_sts(&dk, 0);
    sts["status"]["replicas"] = json!(0);
    let refusal = "create Pod dev-0 in StatefulSet dev failed error: pods \"dev-0\" is forbidden: violates \
                   PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"app\")";
    let (result, _) = run(dk, Capabilities::default(), move |mut server: ApiServer| async move {
        server.expect(Method::GET, &sts_path("default", "dev")).await.ok(&sts);
        expect_dev_objects(&mut server).await;
        server.expect(Method::PATCH, &sts_path("default", "dev")).await.ok(&sts);
        server.expect(Method::GET, "/api/v1/namespaces/default/pods").await.ok(&list("PodList", vec![]));
        let seen = server.expect(Method::GET, "/api/v1/namespaces/default/events").await;
        let fields = seen.param("fieldSelector").unwrap();
        assert!(fields.contains("reason%3DFailedCreate") && fields.contains("involvedObject.name%3Ddev"), "{fields}");
        let old = json!({"metadata": {"name": "e0"}, "involvedObject": {"kind": "StatefulSet", "name": "dev"},
                         "reason": "FailedCreate", "message": "an hour-old refusal", "lastTimestamp": EARLIER});
        let new = json!({"metadata": {"name": "e1"}, "involvedObject": {"kind": "StatefulSet", "name": "dev"},
                         "reason": "FailedCreate", "message": refusal, "lastTimestamp": "2026-11-25T11:59:00Z"});
        seen.ok(&list("EventList", vec![old, new]));
        let seen = server.expect(Method::PATCH, &status_path("default", "dev")).await;
        let status = seen.body["status"].clone();
        seen.ok(&json!({"apiVersion": "drakkar.io/v1alpha1", "kind": "DrakkarCluster",
                        "metadata": {"name": "dev", "namespace": "default"}, "spec": {"image": "x"}, "status": status}));
        let degraded = condition(&status, "Degraded");
        assert_eq!((degraded["status"].as_str(), degraded["reason"].as_str()), (Some("True"), Some("PodCreationFailed")));
        assert!(degraded["message"].as_str().unwrap().contains("violates PodSecurity"), "{degraded}");
        assert_eq!(condition(&status, "Progressing")["reason"], "RollingOut");
        let e = server.expect_event("default", "PodCreationFailed").await;
        assert_eq!(e["type"], "Warning");
        assert!(e["note"].as_str().unwrap().contains("allowPrivilegeEscalation"), "{e}");
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(BUSY_REQUEUE));
}

#[tokio::test]
async fn losing_quorum_flips_available_and_says_so() {
    let mut dk = cluster("valid/insecure.yaml");
    let sts = running_sts(&dk, 1);
    dk.status = Some(
        serde_json::from_value(json!({
            "phase": "Running", "observedGeneration": 1,
            "conditions": [{"type": "Available", "status": "True", "reason": "QuorumReady", "message": "", "lastTransitionTime": EARLIER}]
        }))
        .unwrap(),
    );
    let (result, _) = run(dk, Capabilities::default(), |mut server: ApiServer| async move {
        server.expect(Method::GET, &sts_path("default", "dev")).await.ok(&sts);
        expect_dev_objects(&mut server).await;
        server.expect(Method::PATCH, &sts_path("default", "dev")).await.ok(&sts);
        let pods = vec![pod("dev-0", true), pod("dev-1", false), pod("dev-2", false)];
        let status = expect_pods_and_status(&mut server, "dev", pods).await;
        assert_eq!(status["phase"], "Degraded");
        let available = condition(&status, "Available");
        assert_eq!((&available["status"], &available["lastTransitionTime"]), (&json!("False"), &json!(NOW)));
        assert_eq!(condition(&status, "Degraded")["reason"], "QuorumLost");
        server.expect_event("default", "QuorumLost").await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(BUSY_REQUEUE));
}

#[tokio::test]
async fn an_immutable_change_is_refused_with_a_condition_and_an_event() {
    let founded = cluster("valid/insecure.yaml");
    let sts = running_sts(&founded, 3);
    let mut dk = founded.clone();
    dk.spec.groups = 8;
    dk.metadata.generation = Some(2);
    dk.status = Some(serde_json::from_value(json!({"phase": "Running", "observedGeneration": 1})).unwrap());
    let (result, ctx) = run(dk.clone(), Capabilities::default(), |mut server: ApiServer| async move {
        server.expect(Method::GET, &sts_path("default", "dev")).await.ok(&sts);
        // Nothing is applied: straight to the status.
        let pods = vec![pod("dev-0", true), pod("dev-1", true), pod("dev-2", true)];
        let status = expect_pods_and_status(&mut server, "dev", pods).await;
        assert_eq!(status["phase"], "Invalid");
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["readyReplicas"], 3, "the running cluster is still reported");
        let degraded = condition(&status, "Degraded");
        assert_eq!(
            (&degraded["status"], &degraded["reason"]),
            (&json!("True"), &json!("ImmutableFieldChanged"))
        );
        assert!(degraded["message"].as_str().unwrap().contains("spec.groups: cannot change from 4 to 8"));
        assert_eq!(condition(&status, "Progressing")["reason"], "SpecRejected");
        assert_eq!(condition(&status, "Available")["status"], "True");
        let e = server.expect_event("default", "ImmutableFieldChange").await;
        assert_eq!(e["type"], "Warning");
    })
    .await;
    let err = result.unwrap_err();
    assert!(err.is_permanent(), "{err}");
    // No retry storm: the next look is the settled period away (for renewals), or the next change.
    assert_eq!(error_policy(Arc::new(dk), &err, ctx.clone()), Action::requeue(SETTLED_REQUEUE));
    assert!(ctx.metrics.encode().unwrap().contains("outcome=\"invalid_spec\"} 1"));
}

#[tokio::test]
async fn cert_manager_mode_waits_for_the_secret_before_the_statefulset() {
    let dk = cluster("valid/certmanager.yaml");
    let (result, _) = run(dk, Capabilities::default(), |mut server: ApiServer| async move {
        server.expect(Method::GET, &sts_path("default", "cm")).await.not_found();
        server.expect_apply("/api/v1/namespaces/default/serviceaccounts/cm-node").await;
        server.expect_apply("/api/v1/namespaces/default/configmaps/cm-config").await;
        server.expect_apply("/api/v1/namespaces/default/services/cm-peer").await;
        server.expect_apply("/api/v1/namespaces/default/services/cm").await;
        server.expect_apply("/apis/policy/v1/namespaces/default/poddisruptionbudgets/cm").await;
        for role in ["server", "operator", "client"] {
            let c = server
                .expect_apply(&format!(
                    "/apis/cert-manager.io/v1/namespaces/default/certificates/cm-tls-{role}"
                ))
                .await;
            assert_eq!(c["spec"]["issuerRef"]["name"], "internal-ca");
        }
        server.expect(Method::GET, "/api/v1/namespaces/default/secrets/cm-tls-server").await.not_found();
        let status = expect_pods_and_status(&mut server, "cm", vec![]).await;
        assert_eq!(status["phase"], "Creating");
        assert_eq!(condition(&status, "Progressing")["reason"], "WaitingForCertificates");
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(BUSY_REQUEUE));
}

/// The cert-manager cluster's objects up to its first Certificate, which the server does not serve.
async fn expect_cert_manager_missing(server: &mut ApiServer) {
    server.expect(Method::GET, &sts_path("default", "cm")).await.not_found();
    for path in [
        "/api/v1/namespaces/default/serviceaccounts/cm-node",
        "/api/v1/namespaces/default/configmaps/cm-config",
        "/api/v1/namespaces/default/services/cm-peer",
        "/api/v1/namespaces/default/services/cm",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/cm",
    ] {
        server.expect_apply(path).await;
    }
    // What an API server without cert-manager's CRDs answers.
    let seen = server
        .expect(Method::PATCH, "/apis/cert-manager.io/v1/namespaces/default/certificates/cm-tls-server")
        .await;
    seen.reply(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                "message": "the server could not find the requested resource"}),
    );
}

#[tokio::test]
async fn cert_manager_mode_without_cert_manager_is_degraded_with_one_event_per_generation() {
    let dk = cluster("valid/certmanager.yaml");
    let (result, _) = run(dk.clone(), Capabilities::default(), |mut server: ApiServer| async move {
        expect_cert_manager_missing(&mut server).await;
        let status = expect_pods_and_status(&mut server, "cm", vec![]).await;
        assert_eq!(status["phase"], "Creating");
        let degraded = condition(&status, "Degraded");
        assert_eq!(
            (degraded["status"].as_str(), degraded["reason"].as_str()),
            (Some("True"), Some("CertManagerMissing"))
        );
        assert!(degraded["message"].as_str().unwrap().contains("install cert-manager"), "{degraded}");
        assert_eq!(condition(&status, "Progressing")["reason"], "Blocked");
        let e = server.expect_event("default", "CertManagerMissing").await;
        assert_eq!(e["type"], "Warning");
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(BLOCKED_REQUEUE), "no error backoff loop");

    // The next look at the same generation says it again in status, without another Event.
    let mut again = dk;
    let (result, _) = {
        let generation = again.metadata.generation;
        again.status = Some(serde_json::from_value(json!({
            "phase": "Creating", "observedGeneration": generation,
            "conditions": [{"type": "Degraded", "status": "True", "reason": "CertManagerMissing", "message": "x",
                            "lastTransitionTime": "2026-11-25T12:00:00Z"}]
        })).unwrap());
        run(again, Capabilities::default(), |mut server: ApiServer| async move {
            expect_cert_manager_missing(&mut server).await;
            let status = expect_pods_and_status(&mut server, "cm", vec![]).await;
            assert_eq!(condition(&status, "Degraded")["reason"], "CertManagerMissing");
            let extra = tokio::time::timeout(Duration::from_millis(300), server.next()).await;
            assert!(extra.is_err(), "a second Event for the same generation and reason");
        })
        .await
    };
    assert_eq!(result.unwrap(), Action::requeue(BLOCKED_REQUEUE));
}

#[tokio::test]
async fn a_server_without_policy_v1_gets_no_budget_and_an_event() {
    let dk = cluster("valid/insecure.yaml");
    let (result, _) = run(dk, Capabilities { pdb_v1: false }, |mut server: ApiServer| async move {
        server.expect(Method::GET, &sts_path("default", "dev")).await.not_found();
        server.expect_apply("/api/v1/namespaces/default/serviceaccounts/dev-node").await;
        server.expect_apply("/api/v1/namespaces/default/configmaps/dev-config").await;
        server.expect_apply("/api/v1/namespaces/default/services/dev-peer").await;
        server.expect_apply("/api/v1/namespaces/default/services/dev").await;
        server.expect_apply(&sts_path("default", "dev")).await;
        expect_pods_and_status(&mut server, "dev", vec![]).await;
        let e = server.expect_event("default", "PodDisruptionBudgetUnsupported").await;
        assert_eq!(e["type"], "Warning");
        server.expect_event("default", "Created").await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(BUSY_REQUEUE));
}

fn deleting(fixture: &str) -> DrakkarCluster {
    let mut dk = cluster(fixture);
    dk.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    dk
}

async fn expect_finalizer_removed(server: &mut ApiServer, name: &str) {
    let seen = server
        .expect(
            Method::PATCH,
            &format!("/apis/drakkar.io/v1alpha1/namespaces/default/drakkarclusters/{name}"),
        )
        .await;
    assert_eq!(
        seen.body,
        json!([{"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
               {"op": "remove", "path": "/metadata/finalizers/0"}])
    );
    let answer = json!({"apiVersion": "drakkar.io/v1alpha1", "kind": "DrakkarCluster",
                        "metadata": {"name": name, "namespace": "default"}, "spec": {"image": "x"}});
    seen.ok(&answer);
}

#[tokio::test]
async fn deleting_a_cluster_deletes_its_volumes_then_the_finalizer() {
    let (result, _) =
        run(deleting("valid/insecure.yaml"), Capabilities::default(), |mut server: ApiServer| async move {
            let seen =
                server.expect(Method::DELETE, "/api/v1/namespaces/default/persistentvolumeclaims").await;
            assert_eq!(
                seen.param("labelSelector").as_deref(),
                Some(
                    "app.kubernetes.io%2Finstance%3Ddev%2Capp.kubernetes.io%2Fmanaged-by%3Ddrakkar-operator"
                )
            );
            seen.ok(&list("PersistentVolumeClaimList", vec![]));
            server.expect_event("default", "VolumesDeleted").await;
            expect_finalizer_removed(&mut server, "dev").await;
        })
        .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn retained_volumes_are_left_alone() {
    let mut dk = deleting("valid/insecure.yaml");
    dk.spec.storage.reclaim_policy = drakkar_operator::crd::ReclaimPolicy::Retain;
    let (result, _) = run(dk, Capabilities::default(), |mut server: ApiServer| async move {
        server.expect_event("default", "VolumesRetained").await;
        expect_finalizer_removed(&mut server, "dev").await;
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn transient_errors_back_off_and_reset_after_success() {
    let dk = cluster("valid/insecure.yaml");
    let (client, mut server) = pair();
    let ctx = context(client, Capabilities::default());
    let dk = Arc::new(dk);
    let script = tokio::spawn(async move {
        for _ in 0..3 {
            let seen = server.expect(Method::GET, &sts_path("default", "dev")).await;
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd unavailable"});
            seen.reply(StatusCode::INTERNAL_SERVER_ERROR, &status);
        }
        server
    });
    let mut delays = Vec::new();
    for _ in 0..3 {
        let err = reconcile(dk.clone(), ctx.clone()).await.unwrap_err();
        assert!(!err.is_permanent(), "{err}");
        delays.push(error_policy(dk.clone(), &err, ctx.clone()));
    }
    let mut server = script.await.unwrap();
    assert_eq!(delays, [1, 2, 4].map(|s| Action::requeue(Duration::from_secs(s))));
    assert!(ctx.metrics.encode().unwrap().contains("outcome=\"error\"} 3"));

    // A success resets the count: the next failure waits 1 s again.
    let ok = tokio::spawn(async move {
        server.expect(Method::GET, &sts_path("default", "dev")).await.not_found();
        expect_dev_objects(&mut server).await;
        server.expect_apply(&sts_path("default", "dev")).await;
        expect_pods_and_status(&mut server, "dev", vec![]).await;
        server.expect_event("default", "Created").await;
        server.expect(Method::GET, &sts_path("default", "dev")).await.reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503, "message": "busy"}),
        );
    });
    reconcile(dk.clone(), ctx.clone()).await.unwrap();
    let err = reconcile(dk.clone(), ctx.clone()).await.unwrap_err();
    ok.await.unwrap();
    assert_eq!(error_policy(dk, &err, ctx), Action::requeue(Duration::from_secs(1)));
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let secs: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    assert_eq!(backoff(u32::MAX).as_secs(), 300);
}

/// A Membership that reports fixed roles, as the Admin API would, and promotes replica 3.
struct Reported;

fn addr(pod: &str) -> String {
    format!("{pod}.dev-peer.default.svc.cluster.local:7000")
}

impl drakkar_operator::admin::Membership for Reported {
    fn observe<'a>(
        &'a self,
        target: &'a drakkar_operator::admin::Target,
    ) -> futures::future::BoxFuture<
        'a,
        Result<Option<drakkar_operator::admin::Observation>, drakkar_operator::admin::AdminError>,
    > {
        use drakkar_operator::admin::ObservedMember;
        use drakkar_operator::crd::{GroupLeader, MemberRole};
        assert_eq!(target.endpoints[0], addr("dev-0"));
        assert_eq!(target.groups, 4);
        assert!(target.tls.is_none(), "TLS is disabled in this cluster");
        let member = |replica_id, pod: &str, role| ObservedMember { replica_id, address: addr(pod), role };
        Box::pin(async move {
            Ok(Some(drakkar_operator::admin::Observation {
                // Pod dev-2 runs replica 7 (it came back after a scale-down under a fresh id).
                members: vec![
                    member(1, "dev-0", MemberRole::Follower),
                    member(2, "dev-1", MemberRole::Leader),
                    member(7, "dev-2", MemberRole::NonVoting),
                ],
                leaders: vec![GroupLeader { group: 1, replica_id: 2, pod: None }],
            }))
        })
    }

    fn converge<'a>(
        &'a self,
        target: &'a drakkar_operator::admin::Target,
        plan: &'a drakkar_operator::admin::MemberPlan,
    ) -> futures::future::BoxFuture<
        'a,
        Result<drakkar_operator::admin::Convergence, drakkar_operator::admin::AdminError>,
    > {
        use drakkar_operator::admin::{Convergence, MemberChange, Step};
        assert_eq!(target.endpoints.len(), 3);
        assert_eq!(plan.voters, ["dev-0", "dev-1", "dev-2"].map(addr));
        Box::pin(async {
            Ok(Convergence {
                changes: vec![MemberChange {
                    group: 1,
                    step: Step::Promote { replica: 7, address: addr("dev-2") },
                }],
                pending: vec![1, 2],
                errors: vec!["group 2: reading the membership: unavailable".into()],
            })
        })
    }
}

#[tokio::test]
async fn what_the_admin_api_reports_goes_into_the_members_and_changes_become_events() {
    let dk = cluster("valid/insecure.yaml");
    let sts = running_sts(&dk, 3);
    let (client, mut server) = pair();
    let ctx = Arc::new(
        Context::new(client, None, "cluster.local", Capabilities::default())
            .with_clock(Arc::new(now))
            .with_membership(Arc::new(Reported)),
    );
    let script = tokio::spawn(async move {
        server.expect(Method::GET, &sts_path("default", "dev")).await.ok(&sts);
        expect_dev_objects(&mut server).await;
        server.expect(Method::PATCH, &sts_path("default", "dev")).await.ok(&sts);
        let pods = vec![pod("dev-0", true), pod("dev-1", true), pod("dev-2", true)];
        let status = expect_pods_and_status(&mut server, "dev", pods).await;
        let roles: Vec<(&Value, &Value, &Value)> = status["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (&m["replicaId"], &m["role"], &m["voting"]))
            .collect();
        assert_eq!(
            roles,
            [
                (&json!(1), &json!("Follower"), &json!(true)),
                (&json!(2), &json!("Leader"), &json!(true)),
                (&json!(7), &json!("NonVoting"), &json!(false))
            ]
        );
        assert_eq!(status["leaders"], json!([{"group": 1, "replicaId": 2, "pod": "dev-1"}]));
        let progressing = condition(&status, "Progressing");
        assert_eq!(progressing["status"], "True");
        assert_eq!(progressing["reason"], "MembershipChanging");
        assert_eq!(status["phase"], "Progressing");
        server.expect_event("default", "Available").await;
        let e = server.expect_event("default", "MemberPromoted").await;
        assert_eq!(e["note"], format!("group 1: promoted replica 7 ({}) to voter", addr("dev-2")));
        let e = server.expect_event("default", "MembershipChangeFailed").await;
        assert_eq!(e["type"], "Warning");
    });
    let action = reconcile(Arc::new(dk), ctx).await.unwrap();
    script.await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(5)), "membership changes are followed closely");
}

/// A scale-down shrinks the StatefulSet only once the pods beyond the new size left the groups.
#[test]
fn the_statefulset_keeps_pods_that_are_still_members() {
    use drakkar_operator::crd::{DrakkarClusterStatus, MemberRole, MemberStatus};
    use drakkar_operator::reconcile::kept_replicas;
    let names = Names::new("dev", "default", "cluster.local");
    let member = |o: i32, role| MemberStatus {
        replica_id: Some(o as u64 + 1),
        pod: format!("dev-{o}"),
        role,
        voting: None,
        healthy: true,
    };
    let status = |roles: &[MemberRole]| DrakkarClusterStatus {
        members: roles.iter().enumerate().map(|(o, r)| member(o as i32, *r)).collect(),
        ..Default::default()
    };
    use MemberRole::{Follower, Leader, NonVoting, None as Gone, Unknown};
    assert_eq!(kept_replicas(&names, 3, None), 3);
    assert_eq!(
        kept_replicas(&names, 3, Some(&status(&[Leader, Follower, Follower, Follower, NonVoting]))),
        5
    );
    assert_eq!(kept_replicas(&names, 3, Some(&status(&[Leader, Follower, Follower, Follower, Gone]))), 4);
    assert_eq!(kept_replicas(&names, 3, Some(&status(&[Leader, Follower, Follower, Gone, Gone]))), 3);
    // Not observed (no Admin API access): the spec decides.
    assert_eq!(kept_replicas(&names, 3, Some(&status(&[Unknown; 5]))), 3);
    // Growing is never held back.
    assert_eq!(kept_replicas(&names, 5, Some(&status(&[Leader, Follower, Follower]))), 5);
}

/// A refused spec leaves the cluster alone, but its certificates are still renewed.
#[tokio::test]
async fn certificates_are_renewed_while_a_spec_is_refused() {
    use drakkar_operator::build::server_names;
    use drakkar_operator::tls;
    let mut founded = cluster("valid/minimal.yaml");
    founded.metadata.namespace = Some("default".into());
    let sts = running_sts(&founded, 3);
    let names = Names::new("demo", "default", "cluster.local");
    let owner = drakkar_operator::build::owner_ref(&founded).unwrap();
    // Issued 70 days ago: 20 days left, inside the 30-day renewal margin.
    let issued_at = now() - k8s_openapi::jiff::SignedDuration::from_hours(24 * 70);
    let existing: Vec<Value> = tls::plan(&names, &server_names(&names, 3), &[], &owner, issued_at)
        .unwrap()
        .into_iter()
        .map(|i| serde_json::to_value(i.secret).unwrap())
        .collect();
    let mut dk = founded.clone();
    dk.spec.groups = 2;
    dk.metadata.generation = Some(2);
    let (result, _) = run(dk, Capabilities::default(), |mut server: ApiServer| async move {
        server.expect(Method::GET, &sts_path("default", "demo")).await.ok(&sts);
        server
            .expect(Method::GET, "/api/v1/namespaces/default/secrets")
            .await
            .ok(&list("SecretList", existing));
        for role in ["server", "operator", "client"] {
            server.expect_apply(&format!("/api/v1/namespaces/default/secrets/demo-tls-{role}")).await;
        }
        let status = expect_pods_and_status(&mut server, "demo", vec![]).await;
        assert_eq!(condition(&status, "Degraded")["reason"], "ImmutableFieldChanged");
        server.expect_event("default", "ImmutableFieldChange").await;
        let e = server.expect_event("default", "CertificatesIssued").await;
        assert_eq!(
            e["note"],
            "certificates issued: server (expiring), operator (expiring), client (expiring)"
        );
    })
    .await;
    assert!(result.unwrap_err().is_permanent());
}
