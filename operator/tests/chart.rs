//! The Helm chart, rendered and linted by the real Helm v4 SDK (PyPI `helm-python-sdk`, driven by
//! `charts/drakkar/tests/render.py`), the rendered objects parsed into Kubernetes types and checked.
//!
//! Python with the SDK is found through `DRAKKAR_HELM_PYTHON` (set by `.ci/run`), else
//! `target/helm-venv/bin/python`. Without either, the tests print why and pass, unless `CI` is set:
//! then they fail. Set up a developer machine with:
//!
//! ```sh
//! python3 -m venv target/helm-venv && target/helm-venv/bin/pip install helm-python-sdk==0.2.2
//! ```

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use drakkar_operator::crdgen::crd_value;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DRAKKAR_HELM_PYTHON") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "DRAKKAR_HELM_PYTHON={} does not exist", p.display());
        return Some(p);
    }
    let venv = repo().join("target/helm-venv/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but DRAKKAR_HELM_PYTHON is not: .ci/run must install helm-python-sdk and export it"
    );
    eprintln!(
        "SKIPPED: no Helm SDK. Install it with `python3 -m venv target/helm-venv && \
         target/helm-venv/bin/pip install helm-python-sdk==0.2.2`, or set DRAKKAR_HELM_PYTHON"
    );
    None
}

struct Rendered {
    lint: Value,
    schema_error: Option<String>,
    render_error: Option<String>,
    notes: String,
    objects: Vec<Value>,
}

impl Rendered {
    fn kinds(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.objects.iter().map(|o| o["kind"].as_str().unwrap().to_string()).collect();
        v.sort();
        v
    }

    fn find(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one<T: serde::de::DeserializeOwned>(&self, kind: &str) -> T {
        let found = self.find(kind);
        assert_eq!(found.len(), 1, "one {kind} expected");
        serde_json::from_value(found[0].clone()).unwrap_or_else(|e| panic!("{kind} does not parse: {e}"))
    }
}

fn render(python: &Path, values: Value) -> Rendered {
    let mut child = Command::new(python)
        .arg(repo().join("charts/drakkar/tests/render.py"))
        .arg(repo().join("charts/drakkar"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the Helm SDK");
    let request = json!({"values": values, "name": "dk", "namespace": "drakkar-system"});
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "render.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(result["helm"].as_str().unwrap().starts_with("v4."), "Helm v4 expected: {}", result["helm"]);
    let mut objects = Vec::new();
    let mut notes = String::new();
    for (path, text) in result["manifests"].as_object().cloned().unwrap_or_default() {
        let text = text.as_str().unwrap();
        if path.ends_with("NOTES.txt") {
            notes = text.to_string();
            continue;
        }
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}\n{text}"));
        objects.extend(docs.into_iter().filter(|d| !d.is_null()));
    }
    let text = |v: &Value| v.as_str().map(str::to_string);
    Rendered {
        lint: result["lint"].clone(),
        schema_error: text(&result["schema_error"]),
        render_error: text(&result["render_error"]),
        notes,
        objects,
    }
}

/// The first path where `a` and `b` differ, numbers compared by value (Helm writes `9` where serde
/// writes `9.0`).
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            (x.as_f64() != y.as_f64()).then(|| format!("{path}: {x} != {y}"))
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let (l, r) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                first_difference(l, r, &format!("{path}.{k}"))
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (l, r))| first_difference(l, r, &format!("{path}[{i}]"))),
        _ => (a != b).then(|| format!("{path}: {a} != {b}")),
    }
}

/// Lint findings of severity warning (2) or error (3).
fn lint_problems(r: &Rendered) -> Vec<String> {
    r.lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64().unwrap_or(3) >= 2)
        .map(|m| format!("{}: {}", m["path"], m["error"]))
        .collect()
}

#[test]
fn default_install() {
    let Some(py) = helm_python() else { return };
    let r = render(&py, json!({}));
    assert_eq!(lint_problems(&r), Vec::<String>::new());
    assert_eq!((r.schema_error.as_deref(), r.render_error.as_deref()), (None, None));
    assert_eq!(
        r.kinds(),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    for o in &r.objects {
        assert_eq!(o["metadata"]["labels"]["app.kubernetes.io/instance"], "dk", "{}", o["kind"]);
        if o["kind"] != "CustomResourceDefinition"
            && o["kind"] != "ClusterRole"
            && o["kind"] != "ClusterRoleBinding"
        {
            assert_eq!(o["metadata"]["namespace"], "drakkar-system", "{}", o["kind"]);
        }
    }

    // The CRD is the generated one, kept on uninstall.
    let crd = r.find("CustomResourceDefinition")[0];
    let generated = crd_value().unwrap();
    assert_eq!(first_difference(&crd["spec"], &generated["spec"], "spec"), None);
    assert_eq!(crd["metadata"]["name"], generated["metadata"]["name"]);
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");

    let deploy: Deployment = r.one("Deployment");
    let pod = deploy.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let sa = r.find("ServiceAccount")[0]["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(pod.service_account_name.as_deref(), Some(sa.as_str()));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("ghcr.io/drakkar-io/drakkar-operator:0.1.0"));
    let env: BTreeSet<&str> = c.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
    assert!(env.contains("POD_NAME") && env.contains("POD_NAMESPACE"));
    assert_eq!(
        c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap().path.as_deref(),
        Some("/healthz")
    );
    assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
    let args = c.args.clone().unwrap();
    assert!(args.contains(&"--leader-election=true".to_string()));
    assert!(!args.iter().any(|a| a.starts_with("--namespace")));
    assert!(r.notes.contains("every namespace"));

    // Leases only in the release namespace.
    let role: Role = r.one("Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some("drakkar-system"));
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].resources.as_deref(), Some(&["leases".to_string()][..]));
    let binding = r.find("ClusterRoleBinding")[0];
    assert_eq!(binding["subjects"][0]["name"], sa.as_str());
    assert_eq!(binding["subjects"][0]["namespace"], "drakkar-system");
}

/// Every call the reconciler makes is allowed, nothing broader (no wildcards, no deletes of owned objects).
#[test]
fn cluster_role_is_least_privilege() {
    let Some(py) = helm_python() else { return };
    let r = render(&py, json!({}));
    let role: ClusterRole = r.one("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        for g in rule.api_groups.unwrap_or_default() {
            for res in rule.resources.clone().unwrap_or_default() {
                for v in &rule.verbs {
                    assert!(g != "*" && res != "*" && v != "*", "wildcard in {g}/{res}/{v}");
                    granted.insert(format!("{g}/{res}/{v}"));
                }
            }
        }
    }
    let needed = [
        "drakkar.io/drakkarclusters/get",
        "drakkar.io/drakkarclusters/list",
        "drakkar.io/drakkarclusters/watch",
        "drakkar.io/drakkarclusters/patch",
        "drakkar.io/drakkarclusters/status/patch",
        "drakkar.io/drakkarclusters/finalizers/update",
        "apps/statefulsets/get",
        "apps/statefulsets/list",
        "apps/statefulsets/watch",
        "apps/statefulsets/patch",
        "/services/patch",
        "/configmaps/patch",
        "/serviceaccounts/patch",
        "/secrets/list",
        "/secrets/get",
        "/secrets/patch",
        "/pods/list",
        "/events/list",
        "/persistentvolumeclaims/deletecollection",
        "policy/poddisruptionbudgets/patch",
        "cert-manager.io/certificates/patch",
        "events.k8s.io/events/create",
        "events.k8s.io/events/patch",
    ];
    for n in needed {
        assert!(granted.contains(n), "the ClusterRole lacks {n}");
    }
    let deletes: Vec<&String> = granted.iter().filter(|g| g.ends_with("/delete")).collect();
    assert!(deletes.is_empty(), "the operator deletes nothing itself: {deletes:?}");
}

#[test]
fn crds_can_be_left_out_or_not_kept() {
    let Some(py) = helm_python() else { return };
    let r = render(&py, json!({"crds": {"enabled": false}}));
    assert!(r.find("CustomResourceDefinition").is_empty());
    assert!(r.notes.contains("crds.enabled=false"));
    let r = render(&py, json!({"crds": {"keep": false}}));
    let crd = r.find("CustomResourceDefinition")[0];
    assert!(crd["metadata"].get("annotations").is_none(), "{}", crd["metadata"]);
}

#[test]
fn one_watched_namespace_narrows_the_grant() {
    let Some(py) = helm_python() else { return };
    let r = render(&py, json!({"watchNamespace": "apps", "leaderElection": {"enabled": false}}));
    assert_eq!(lint_problems(&r), Vec::<String>::new());
    assert!(r.find("ClusterRoleBinding").is_empty());
    let binding: RoleBinding = r.one("RoleBinding");
    assert_eq!(binding.metadata.namespace.as_deref(), Some("apps"));
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert!(r.find("Role").is_empty(), "no Lease permissions without leader election");
    let deploy: Deployment = r.one("Deployment");
    let args = deploy.spec.unwrap().template.spec.unwrap().containers[0].args.clone().unwrap();
    assert!(args.contains(&"--namespace=apps".to_string()));
    assert!(args.contains(&"--leader-election=false".to_string()));
}

#[test]
fn bad_values_are_refused() {
    let Some(py) = helm_python() else { return };
    for (values, needle) in [
        (json!({"replicaCount": -1}), "/replicaCount"),
        (json!({"logFormat": "xml"}), "/logFormat"),
        (json!({"image": {"pullPolicy": "Sometimes"}}), "/image/pullPolicy"),
        (json!({"watchNamespace": "Not_A_Namespace"}), "/watchNamespace"),
        (json!({"unknownKey": 1}), "unknownKey"),
    ] {
        let r = render(&py, values.clone());
        let err = r.schema_error.unwrap_or_else(|| panic!("{values} accepted"));
        assert!(err.contains(needle), "{values}: {err}");
    }
    let r = render(&py, json!({"replicaCount": 2, "leaderElection": {"enabled": false}}));
    assert!(r.render_error.unwrap_or_default().contains("leaderElection"), "two leaders must be refused");
    let r = render(&py, json!({"replicaCount": 2}));
    assert_eq!(r.render_error, None);
}

/// The chart passes only flags the operator binary has.
#[test]
fn chart_flags_exist_in_the_operator_binary() {
    let Some(py) = helm_python() else { return };
    let help = Command::new(env!("CARGO_BIN_EXE_drakkar-operator")).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let r = render(&py, json!({"watchNamespace": "apps"}));
    let deploy: Deployment = r.one("Deployment");
    let c = &deploy.spec.unwrap().template.spec.unwrap().containers[0];
    for arg in c.args.clone().unwrap() {
        let flag = arg.split('=').next().unwrap();
        assert!(help.contains(flag), "{flag} is not an operator flag:\n{help}");
    }
}
