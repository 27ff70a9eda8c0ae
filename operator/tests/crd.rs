//! The committed CRD matches the Rust types, and its schema carries the validation `kubectl apply`
//! relies on.

use drakkar_operator::crdgen::{CHART_CRD_PATH, CRD_PATH, crd_value, crd_yaml};
use serde_json::{Value, json};

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn committed_crds_are_current() {
    let generated = crd_yaml().unwrap();
    for path in [CRD_PATH, CHART_CRD_PATH] {
        let committed = std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            committed == generated,
            "{path} is stale: run `cargo run -p drakkar-operator --bin crdgen -- {CRD_PATH} {CHART_CRD_PATH}` \
             and commit both"
        );
    }
}

#[test]
fn committed_crd_parses_as_the_generated_object() {
    let committed = std::fs::read_to_string(repo_file(CRD_PATH)).unwrap();
    let parsed: Value = serde_saphyr::from_str(&committed).unwrap();
    assert_eq!(parsed, crd_value().unwrap());
}

fn spec_props() -> Value {
    crd_value().unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

#[test]
fn names_scope_subresources_and_columns() {
    let crd = crd_value().unwrap();
    assert_eq!(crd["metadata"]["name"], "drakkarclusters.drakkar.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["dk"]));
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["subresources"]["status"], json!({}));
    assert_eq!(v["subresources"]["scale"]["specReplicasPath"], ".spec.replicas");
    assert_eq!(v["subresources"]["scale"]["statusReplicasPath"], ".status.replicas");
    let columns: Vec<&str> = v["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Ready", "Replicas", "Phase", "Age"]);
}

#[test]
fn schema_validation() {
    let spec = spec_props();
    assert_eq!(spec["required"], json!(["image"]));
    let p = &spec["properties"];
    assert_eq!(p["replicas"]["enum"], json!([1, 3, 5, 7, 9]));
    assert_eq!(p["replicas"]["default"], json!(3));
    assert_eq!(p["groups"]["minimum"], json!(1.0));
    assert_eq!(p["groups"]["maximum"], json!(1024.0));
    assert_eq!(p["stateMachine"]["enum"], json!(["memory", "disk"]));
    assert_eq!(p["imagePullPolicy"]["enum"], json!(["Always", "IfNotPresent", "Never"]));
    assert_eq!(p["tls"]["properties"]["mode"]["enum"], json!(["operator", "certManager", "disabled"]));
    assert_eq!(p["tls"]["properties"]["issuerRef"]["required"], json!(["name"]));
    assert_eq!(p["storage"]["properties"]["size"]["type"], "string");
    assert!(p["storage"]["properties"]["size"]["pattern"].is_string());
    assert_eq!(p["storage"]["properties"]["reclaimPolicy"]["enum"], json!(["Delete", "Retain"]));
}

#[test]
fn embedded_kubernetes_types_keep_structure_without_descriptions() {
    let p = &spec_props()["properties"];
    let containers = &p["podTemplate"]["properties"]["containers"];
    assert!(containers["description"].is_string(), "our own description stays");
    assert_eq!(containers["items"]["required"], json!(["name"]));
    assert!(containers["items"]["description"].is_null());
    assert!(containers["items"]["properties"]["image"]["description"].is_null());
    assert!(containers["items"]["properties"]["ports"].is_object());
    let text = crd_yaml().unwrap();
    assert!(text.len() < 200_000, "the CRD must fit kubectl's last-applied annotation: {} bytes", text.len());
}

/// Every `format` in the schema is one the Kubernetes API server recognizes: an unknown one (schemars'
/// `uint32`, `uint64`) makes current API servers print `Warning: unrecognized format` on every apply of
/// the CRD. Unsigned fields keep their bounds as `minimum` / `maximum`.
#[test]
fn every_format_is_one_kubernetes_knows() {
    const KNOWN: &[&str] = &[
        "int32",
        "int64",
        "float",
        "double",
        "byte",
        "binary",
        "date",
        "date-time",
        "password",
        "byte",
        "uuid",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "uri",
        "duration",
        "cidr",
        "mac",
    ];
    fn walk(v: &Value, path: &str, found: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(f) = map.get("format").and_then(Value::as_str) {
                    if !KNOWN.contains(&f) {
                        found.push(format!("{path}: {f}"));
                    }
                    if f == "int64"
                        && map.get("type") == Some(&json!("integer"))
                        && path.contains("replicaId")
                    {
                        assert!(map["minimum"].as_f64() == Some(0.0), "{path}: unsigned without minimum 0");
                    }
                }
                for (k, child) in map {
                    walk(child, &format!("{path}/{k}"), found);
                }
            }
            Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, c)| walk(c, &format!("{path}/{i}"), found))
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(&crd_value().unwrap(), "", &mut found);
    assert!(found.is_empty(), "formats Kubernetes does not know: {found:#?}");
    let groups = &spec_props()["properties"]["groups"];
    assert_eq!(
        (groups["format"].as_str(), groups["minimum"].as_f64(), groups["maximum"].as_f64()),
        (Some("int64"), Some(1.0), Some(1024.0))
    );
}
