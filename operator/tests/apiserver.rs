//! End to end against a real Kubernetes API server (see `common/k8s.rs` for where it comes from; skipped
//! with a printed reason when there is none). One scenario in numbered steps, because starting the
//! control plane is the expensive part:
//!
//! 1. the chart, rendered by the Helm SDK, installs (CRD, RBAC, Deployment ...);
//! 2. the operator runs in-process as the chart's ServiceAccount (impersonated), so RBAC is the chart's;
//! 3. examples are applied: every owned object appears with its owner reference, status and conditions;
//! 4. bad specs are rejected by the schema; a spec only the operator can refuse gets `Invalid`;
//! 5. an immutable change is refused with a condition and an Event;
//! 6. the `/scale` subresource scales a cluster (and refuses to shrink below the founding members);
//! 7. deleting a cluster runs the cleanup and garbage collection removes its objects.

mod common;

use std::future::Future;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::k8s::{TestCluster, repo_file};
use drakkar_operator::DrakkarCluster;
use drakkar_operator::reconcile::{self, Context};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

const OPERATOR_NS: &str = "drakkar-system";

async fn eventually<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The chart's objects as rendered by the Helm SDK (None without the SDK: the CRD file is used).
fn render_chart() -> Option<Vec<Value>> {
    let python = std::env::var_os("DRAKKAR_HELM_PYTHON")
        .map(std::path::PathBuf::from)
        .or_else(|| Some(repo_file("target/helm-venv/bin/python")).filter(|p| p.exists()))?;
    let mut child = Command::new(python)
        .arg(repo_file("charts/drakkar/tests/render.py"))
        .arg(repo_file("charts/drakkar"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let request = json!({"values": {}, "name": "dk", "namespace": OPERATOR_NS});
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result["render_error"].is_null(), "{}", result["render_error"]);
    let mut objects = Vec::new();
    for (path, text) in result["manifests"].as_object().unwrap() {
        if !path.ends_with(".txt") {
            let docs: Vec<Value> = serde_saphyr::from_multiple(text.as_str().unwrap()).unwrap();
            objects.extend(docs.into_iter().filter(|d| !d.is_null()));
        }
    }
    Some(objects)
}

/// Creates `obj` through discovery (any kind the server serves).
async fn create_any(client: &Client, discovery: &Discovery, obj: &Value) {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), obj["apiVersion"].as_str().unwrap().to_string()),
    };
    let kind = obj["kind"].as_str().unwrap();
    let (ar, caps) = discovery
        .groups()
        .find(|g| g.name() == group)
        .and_then(|g| g.versioned_resources(&version).into_iter().find(|(r, _)| r.kind == kind))
        .unwrap_or_else(|| panic!("the server does not serve {group}/{version} {kind}"));
    let api: Api<DynamicObject> = match (caps.scope, obj["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        (kube::discovery::Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    let dynamic: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    api.create(&PostParams::default(), &dynamic).await.unwrap_or_else(|e| panic!("creating {kind}: {e}"));
}

async fn install(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": OPERATOR_NS}})).unwrap(),
        )
        .await
        .unwrap();
    let objects = match render_chart() {
        Some(o) => o,
        None => {
            eprintln!("no Helm SDK: installing the CRD file and no RBAC");
            let text = std::fs::read_to_string(repo_file("crds/drakkarcluster.yaml")).unwrap();
            serde_saphyr::from_multiple::<Value>(&text)
                .unwrap()
                .into_iter()
                .filter(|d| !d.is_null())
                .collect()
        }
    };
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    // The CRD first, then everything else.
    let (crds, rest): (Vec<&Value>, Vec<&Value>) =
        objects.iter().partition(|o| o["kind"] == "CustomResourceDefinition");
    for o in crds {
        create_any(client, &discovery, o).await;
    }
    for o in rest {
        create_any(client, &discovery, o).await;
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    eventually("the CRD is established", Duration::from_secs(30), || async {
        let crd = crds.get("drakkarclusters.drakkar.io").await.ok()?;
        let established =
            crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

/// A client acting as the chart's ServiceAccount (when the chart was installed), else as the admin.
async fn operator_client(k8s: &TestCluster, chart: bool) -> Client {
    let kc = kube::config::Kubeconfig::read_from(&k8s.kubeconfig).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    if chart {
        config.auth_info.impersonate =
            Some(format!("system:serviceaccount:{OPERATOR_NS}:dk-drakkar-operator"));
    }
    drakkar_operator::identify(&mut config);
    Client::try_from(config).unwrap()
}

fn example(name: &str) -> DrakkarCluster {
    let text = std::fs::read_to_string(repo_file(&format!("examples/{name}"))).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn condition(dk: &DrakkarCluster, kind: &str) -> Option<(String, String)> {
    let c = dk.status.as_ref()?.conditions.iter().find(|c| c.type_ == kind)?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn events_with_reason(client: &Client, ns: &str, reason: &str) -> usize {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_against_a_real_api_server() {
    let Some(k8s) = TestCluster::start().await else { return };
    let admin = k8s.client.clone();
    let version = admin.apiserver_version().await.unwrap();
    eprintln!("API server {}", version.git_version);

    // 1. Install.
    install(&admin).await;
    let chart = render_chart().is_some();

    // 2. The operator, in-process, with the chart's permissions.
    let ns = "apps";
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
        .await
        .unwrap();
    let client = operator_client(&k8s, chart).await;
    let capabilities = drakkar_operator::discovery::discover(&client).await;
    eprintln!("capabilities: {capabilities:?}");
    let ctx =
        Arc::new(Context::new(client.clone(), Some("e2e".into()), "cluster.local", capabilities.clone()));
    let stop = tokio_util::sync::CancellationToken::new();
    let controller = {
        let stop = stop.clone();
        tokio::spawn(
            async move { reconcile::controller(ctx, None, async move { stop.cancelled().await }).await },
        )
    };

    // 3. Examples.
    let clusters: Api<DrakkarCluster> = Api::namespaced(admin.clone(), ns);
    for file in ["cluster-dev.yaml", "cluster-minimal.yaml"] {
        clusters
            .create(&PostParams::default(), &example(file))
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let dev = eventually("dev has a status", Duration::from_secs(60), || async {
        let dk = clusters.get("dev").await.ok()?;
        (dk.status.as_ref()?.observed_generation == dk.metadata.generation).then_some(dk)
    })
    .await;
    assert_eq!(dev.finalizers(), ["drakkar.io/cleanup"]);

    // The finalizer is the operator's field like everything else it writes (not `unknown`'s).
    let managers: Vec<(String, String)> = dev
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.to_string().contains("f:finalizers")))
        .map(|m| (m.manager.clone().unwrap_or_default(), m.operation.clone().unwrap_or_default()))
        .collect();
    assert!(
        !managers.is_empty() && managers.iter().all(|(m, _)| m == drakkar_operator::names::FIELD_MANAGER),
        "the finalizer's managers: {managers:?}"
    );
    assert_eq!(
        condition(&dev, "Available"),
        Some(("False".into(), "QuorumNotReady".into())),
        "no kubelet: pods stay Pending"
    );
    assert_eq!(condition(&dev, "Progressing").map(|c| c.0), Some("True".into()));
    assert_eq!(
        dev.status.as_ref().unwrap().selector.as_deref(),
        Some(
            "app.kubernetes.io/component=node,app.kubernetes.io/instance=dev,app.kubernetes.io/name=drakkar"
        )
    );
    let uid = dev.uid().unwrap();
    let owned_by_dev = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|r| r.uid == uid && r.controller == Some(true)))
    };
    let sts = Api::<StatefulSet>::namespaced(admin.clone(), ns).get("dev").await.unwrap();
    assert!(owned_by_dev(&sts.metadata));
    let services: Api<Service> = Api::namespaced(admin.clone(), ns);
    for name in ["dev", "dev-peer"] {
        assert!(owned_by_dev(&services.get(name).await.unwrap().metadata), "{name}");
    }
    assert!(owned_by_dev(
        &Api::<ConfigMap>::namespaced(admin.clone(), ns).get("dev-config").await.unwrap().metadata
    ));
    if capabilities.pdb_v1 {
        let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> = Api::namespaced(admin.clone(), ns);
        assert!(owned_by_dev(&pdbs.get("dev").await.unwrap().metadata));
    } else {
        eventually("a PodDisruptionBudgetUnsupported Event per cluster", Duration::from_secs(20), || async {
            (events_with_reason(&admin, ns, "PodDisruptionBudgetUnsupported").await == 2).then_some(())
        })
        .await;
    }
    // The StatefulSet controller creates the pod and its claim (Pending: there is no kubelet).
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), ns);
    eventually("the StatefulSet controller creates data-dev-0", Duration::from_secs(30), || async {
        pvcs.get_opt("data-dev-0").await.ok().flatten()
    })
    .await;
    // Operator TLS: the four Secrets, owned by the cluster.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let demo = clusters.get("demo").await.unwrap();
    for role in ["ca", "server", "operator", "client"] {
        let s = eventually("a TLS Secret", Duration::from_secs(30), || async {
            secrets.get_opt(&format!("demo-tls-{role}")).await.ok().flatten()
        })
        .await;
        assert!(
            s.metadata.owner_references.unwrap().iter().any(|r| Some(&r.uid) == demo.metadata.uid.as_ref())
        );
    }
    assert!(events_with_reason(&admin, ns, "Created").await >= 2);

    // 4. The schema rejects what it can express; the operator refuses the rest.
    let raw: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), ns, &ApiResource::erase::<DrakkarCluster>(&()));
    for (spec, needle) in [
        (json!({"image": "x", "replicas": 4}), "spec.replicas"),
        (json!({"replicas": 3}), "spec.image"),
        (json!({"image": "x", "stateMachine": "tape"}), "spec.stateMachine"),
        (json!({"image": "x", "storage": {"size": "-1Gi"}}), "spec.storage.size"),
    ] {
        let mut obj =
            DynamicObject::new("bad", &ApiResource::erase::<DrakkarCluster>(&())).data(json!({"spec": spec}));
        obj.metadata.namespace = Some(ns.into());
        let err = raw.create(&PostParams::default(), &obj).await.expect_err("the API server must reject it");
        assert!(err.to_string().contains(needle), "{spec}: {err}");
    }
    let mut no_issuer = example("cluster-dev.yaml");
    no_issuer.metadata.name = Some("noissuer".into());
    no_issuer.spec.tls.mode = drakkar_operator::crd::TlsMode::CertManager;
    clusters.create(&PostParams::default(), &no_issuer).await.unwrap();
    let refused = eventually("noissuer is refused", Duration::from_secs(30), || async {
        let dk = clusters.get("noissuer").await.ok()?;
        (dk.status.as_ref()?.phase == Some(drakkar_operator::crd::Phase::Invalid)).then_some(dk)
    })
    .await;
    assert_eq!(condition(&refused, "Degraded"), Some(("True".into(), "InvalidSpec".into())));
    assert!(Api::<StatefulSet>::namespaced(admin.clone(), ns).get_opt("noissuer").await.unwrap().is_none());

    // 5. An immutable change.
    clusters
        .patch("dev", &PatchParams::default(), &Patch::Merge(json!({"spec": {"groups": 8}})))
        .await
        .unwrap();
    let changed = eventually("dev refuses the new group count", Duration::from_secs(30), || async {
        let dk = clusters.get("dev").await.ok()?;
        (dk.status.as_ref()?.observed_generation == dk.metadata.generation).then_some(dk)
    })
    .await;
    assert_eq!(condition(&changed, "Degraded"), Some(("True".into(), "ImmutableFieldChanged".into())));
    eventually("an ImmutableFieldChange Event", Duration::from_secs(10), || async {
        (events_with_reason(&admin, ns, "ImmutableFieldChange").await > 0).then_some(())
    })
    .await;
    let sts = Api::<StatefulSet>::namespaced(admin.clone(), ns).get("dev").await.unwrap();
    let args = sts.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.contains(&"--kv-groups=1".to_string()), "the running cluster was left alone: {args:?}");

    // 6. The scale subresource: demo grows to 5; the StatefulSet follows, the server certificate is
    //    re-issued for the new names.
    let server_cert = secrets.get("demo-tls-server").await.unwrap().data.unwrap()["tls.crt"].clone();
    clusters
        .patch_scale("demo", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}})))
        .await
        .unwrap();
    let scaled = eventually("demo reports the scale-up", Duration::from_secs(30), || async {
        let dk = clusters.get("demo").await.ok()?;
        (dk.status.as_ref()?.observed_generation == dk.metadata.generation).then_some(dk)
    })
    .await;
    assert_eq!(scaled.spec.replicas, 5);
    // No pod runs here (no kubelet): no node to add to the groups, nothing degraded, the rollout goes on.
    assert_eq!(condition(&scaled, "Degraded"), Some(("False".into(), "AsExpected".into())));
    assert_eq!(condition(&scaled, "Progressing").map(|c| c.0), Some("True".into()));
    let sts = Api::<StatefulSet>::namespaced(admin.clone(), ns).get("demo").await.unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(5));
    let reissued = secrets.get("demo-tls-server").await.unwrap().data.unwrap()["tls.crt"].clone();
    assert_ne!(reissued, server_cert, "the server certificate covers the new pods");
    let scale = clusters.get_scale("demo").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    assert!(scale.status.unwrap().selector.unwrap_or_default().contains("app.kubernetes.io/instance=demo"));
    // Shrinking below the founding members is refused.
    clusters
        .patch_scale("demo", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}})))
        .await
        .unwrap();
    let refused = eventually("demo refuses to shrink", Duration::from_secs(30), || async {
        let dk = clusters.get("demo").await.ok()?;
        (dk.status.as_ref()?.observed_generation == dk.metadata.generation).then_some(dk)
    })
    .await;
    assert_eq!(condition(&refused, "Degraded"), Some(("True".into(), "ImmutableFieldChanged".into())));
    let sts = Api::<StatefulSet>::namespaced(admin.clone(), ns).get("demo").await.unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(5), "the StatefulSet was left alone");

    // 6b. certManager mode on a server without cert-manager: Degraded, saying so, once; no StatefulSet.
    clusters.create(&PostParams::default(), &example("cluster-cert-manager.yaml")).await.unwrap();
    let secure = eventually("secure is blocked", Duration::from_secs(60), || async {
        let dk = clusters.get("secure").await.ok()?;
        (condition(&dk, "Degraded")?.1 == "CertManagerMissing").then_some(dk)
    })
    .await;
    assert_eq!(condition(&secure, "Degraded").map(|c| c.0), Some("True".into()));
    assert_eq!(condition(&secure, "Progressing").map(|c| c.1), Some("Blocked".into()));
    assert!(Api::<StatefulSet>::namespaced(admin.clone(), ns).get_opt("secure").await.unwrap().is_none());
    assert_eq!(events_with_reason(&admin, ns, "CertManagerMissing").await, 1);

    // 7. Deletion: cleanup, then garbage collection.
    clusters.delete("dev", &DeleteParams::default()).await.unwrap();
    eventually("dev is gone", Duration::from_secs(30), || async {
        clusters.get_opt("dev").await.ok()?.is_none().then_some(())
    })
    .await;
    let sts_api: Api<StatefulSet> = Api::namespaced(admin.clone(), ns);
    eventually("its StatefulSet is garbage-collected", Duration::from_secs(60), || async {
        sts_api.get_opt("dev").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("its volume claims are deleted", Duration::from_secs(60), || async {
        let left = pvcs.list(&ListParams::default().labels("app.kubernetes.io/instance=dev")).await.ok()?;
        // A claim still used by a (Pending) pod keeps its protection finalizer until the pod is gone.
        left.items.iter().all(|p| p.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    assert!(events_with_reason(&admin, ns, "VolumesDeleted").await > 0);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), controller).await.expect("the controller stops").unwrap();
}

/// `GET path` on 127.0.0.1:port; None when nothing answers.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

struct OperatorProcess(std::process::Child);

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_operator(k8s: &TestCluster, identity: &str, port: u16, logs: &std::path::Path) -> OperatorProcess {
    let log = std::fs::File::create(logs.join(format!("operator-{identity}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_drakkar-operator"))
        .env("KUBECONFIG", &k8s.kubeconfig)
        .env("RUST_LOG", "info")
        .args([
            format!("--http-listen=127.0.0.1:{port}"),
            format!("--identity={identity}"),
            "--lease-namespace=default".into(),
            "--lease-name=e2e-operator".into(),
            "--log-format=text".into(),
            "--observe-members=false".into(),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    OperatorProcess(child)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn is_leader(port: u16) -> Option<bool> {
    let metrics = http_get(port, "/metrics").await?;
    let value = metrics.lines().find_map(|l| l.strip_prefix("drakkar_operator_leader "))?;
    Some(value.trim() == "1")
}

/// The operator binary: two replicas, one Lease; the leader hands over on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_binary_elects_one_leader_and_hands_over_on_sigterm() {
    let Some(k8s) = TestCluster::start().await else { return };
    let admin = k8s.client.clone();
    let text = std::fs::read_to_string(repo_file("crds/drakkarcluster.yaml")).unwrap();
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).unwrap();
    Api::<CustomResourceDefinition>::all(admin.clone()).create(&PostParams::default(), &crd).await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(admin.clone(), "default");
    let holder = || async {
        let lease = leases.get_opt("e2e-operator").await.ok()??;
        lease.spec?.holder_identity
    };

    let (port_a, port_b) = (free_port(), free_port());
    let mut a = start_operator(&k8s, "a", port_a, logs.path());
    eventually("a is ready and leads", Duration::from_secs(30), || async {
        let ready = http_get(port_a, "/readyz").await?.starts_with("HTTP/1.1 200");
        (ready && is_leader(port_a).await? && holder().await.as_deref() == Some("a")).then_some(())
    })
    .await;
    let b = start_operator(&k8s, "b", port_b, logs.path());
    eventually("b is ready", Duration::from_secs(30), || async {
        http_get(port_b, "/readyz").await?.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(is_leader(port_b).await, Some(false), "b waits while a renews");
    assert_eq!(holder().await.as_deref(), Some("a"));

    // SIGTERM: a stops, releases the Lease, exits 0; b takes over well before the Lease would expire.
    let status = Command::new("kill").args(["-TERM", &a.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exited = eventually("a exits", Duration::from_secs(20), || {
        let done = a.0.try_wait().unwrap();
        async move { done }
    })
    .await;
    assert!(exited.success(), "a exited with {exited}: see {}", logs.path().display());
    eventually("b leads", Duration::from_secs(20), || async {
        (is_leader(port_b).await? && holder().await.as_deref() == Some("b")).then_some(())
    })
    .await;
    drop(b);
}
