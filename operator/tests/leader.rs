//! Lease leader election: the decision (pure) and the requests against a scripted API server.

#[path = "common/apiserver.rs"]
mod apiserver;

use std::time::Duration;

use drakkar_operator::leader::{Decision, LeaderElector, LeaseConfig, decide};
use http::{Method, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde_json::json;

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/drakkar-operator";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn lease(holder: Option<&str>, renewed: &str) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": "drakkar-operator", "namespace": "ops", "resourceVersion": "7"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed,
                 "acquireTime": "2026-11-25T11:00:00.000000Z", "leaseTransitions": 2}
    }))
    .unwrap()
}

#[test]
fn decisions() {
    let now = t("2026-11-25T12:00:00Z");
    assert_eq!(decide(&lease(None, "2026-11-25T11:59:59.000000Z"), "a", now), Decision::Acquire);
    assert_eq!(decide(&lease(Some("a"), "2026-11-25T11:00:00.000000Z"), "a", now), Decision::Renew);
    assert_eq!(
        decide(&lease(Some("b"), "2026-11-25T11:59:50.000000Z"), "a", now),
        Decision::Follow { holder: "b".into() }
    );
    assert_eq!(
        decide(&lease(Some("b"), "2026-11-25T11:59:44.000000Z"), "a", now),
        Decision::Acquire,
        "expired"
    );
}

fn elector(client: kube::Client) -> LeaderElector {
    LeaderElector::new(
        Api::namespaced(client, "ops"),
        LeaseConfig {
            name: "drakkar-operator".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        },
    )
}

#[tokio::test]
async fn creates_a_missing_lease() {
    let (client, mut server) = apiserver::pair();
    let script = tokio::spawn(async move {
        server.expect(Method::GET, PATH).await.not_found();
        let seen = server.expect(Method::POST, "/apis/coordination.k8s.io/v1/namespaces/ops/leases").await;
        assert_eq!(seen.body["spec"]["holderIdentity"], "a");
        assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 15);
        assert_eq!(seen.body["spec"]["leaseTransitions"], 0);
        let body = seen.body.clone();
        seen.reply(StatusCode::CREATED, &body);
    });
    assert!(elector(client).try_acquire_or_renew(t("2026-11-25T12:00:00Z")).await.unwrap());
    script.await.unwrap();
}

#[tokio::test]
async fn takes_over_an_expired_lease_with_optimistic_concurrency() {
    let (client, mut server) = apiserver::pair();
    let script = tokio::spawn(async move {
        let old = serde_json::to_value(lease(Some("b"), "2026-11-25T11:00:00.000000Z")).unwrap();
        server.expect(Method::GET, PATH).await.ok(&old);
        let seen = server.expect(Method::PUT, PATH).await;
        assert_eq!(seen.body["metadata"]["resourceVersion"], "7", "the replace is conditional");
        assert_eq!(seen.body["spec"]["holderIdentity"], "a");
        assert_eq!(seen.body["spec"]["leaseTransitions"], 3);
        // Another replica won the race.
        seen.reply(StatusCode::CONFLICT, &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "modified"}));
    });
    assert!(!elector(client).try_acquire_or_renew(t("2026-11-25T12:00:00Z")).await.unwrap());
    script.await.unwrap();
}

#[tokio::test]
async fn follows_a_live_holder_without_writing() {
    let (client, mut server) = apiserver::pair();
    let script = tokio::spawn(async move {
        let live = serde_json::to_value(lease(Some("b"), "2026-11-25T11:59:58.000000Z")).unwrap();
        server.expect(Method::GET, PATH).await.ok(&live);
        // Dropping the server makes any further request fail, which fails the unwrap below.
    });
    assert!(!elector(client).try_acquire_or_renew(t("2026-11-25T12:00:00Z")).await.unwrap());
    script.await.unwrap();
}

#[tokio::test]
async fn release_clears_the_holder() {
    let (client, mut server) = apiserver::pair();
    let script = tokio::spawn(async move {
        let mine = serde_json::to_value(lease(Some("a"), "2026-11-25T11:59:58.000000Z")).unwrap();
        server.expect(Method::GET, PATH).await.ok(&mine);
        let seen = server.expect(Method::PUT, PATH).await;
        assert!(seen.body["spec"].get("holderIdentity").is_none(), "{}", seen.body);
        assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 1);
        seen.echo();
    });
    elector(client).release().await.unwrap();
    script.await.unwrap();
}
