//! The CRD manifest, generated from the Rust types ([`crd::DrakkarCluster`]).
//!
//! Descriptions inside embedded Kubernetes types (affinity, tolerations, containers, volumes, resources) are
//! removed: they repeat the Kubernetes API reference and would push the CRD past the 256 KiB that
//! `kubectl apply` can store in its last-applied annotation. Their structure and validation are kept.

use kube::CustomResourceExt;
use serde_json::Value;

use crate::crd;

/// Path of the committed CRD manifest, relative to the repository root.
pub const CRD_PATH: &str = "crds/drakkarcluster.yaml";
/// The Helm chart's copy (the chart cannot read files outside its directory).
pub const CHART_CRD_PATH: &str = "charts/drakkar/files/crds/drakkarcluster.yaml";

/// Schema paths (under `spec.properties`) whose nested descriptions are dropped.
const EMBEDDED: &[&[&str]] = &[
    &["resources"],
    &["podTemplate", "affinity"],
    &["podTemplate", "tolerations"],
    &["podTemplate", "containers"],
    &["podTemplate", "volumes"],
];

/// Errors producing the manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrdError {
    /// The CRD did not convert to JSON.
    #[error("serializing the CRD: {0}")]
    Json(#[from] serde_json::Error),
    /// The CRD did not convert to YAML.
    #[error("writing the CRD as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
    /// The generated CRD lacks the expected schema layout.
    #[error("unexpected CRD layout: {0}")]
    Layout(&'static str),
}

/// The `DrakkarCluster` CustomResourceDefinition as a JSON value, trimmed as described above.
pub fn crd_value() -> Result<Value, CrdError> {
    let mut v = serde_json::to_value(crd::DrakkarCluster::crd())?;
    let spec = v
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties")
        .ok_or(CrdError::Layout("no spec properties in the schema"))?;
    for path in EMBEDDED {
        let mut node = &mut *spec;
        for (i, key) in path.iter().enumerate() {
            let next = node.get_mut(*key).ok_or(CrdError::Layout("an embedded type is missing"))?;
            node = if i + 1 < path.len() {
                next.get_mut("properties").ok_or(CrdError::Layout("an embedded type has no properties"))?
            } else {
                next
            };
        }
        strip_nested_descriptions(node);
    }
    let schema = v
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema")
        .ok_or(CrdError::Layout("no openAPIV3Schema"))?;
    kubernetes_integer_formats(schema);
    Ok(v)
}

/// Rewrites schemars' `uint32` / `uint64` integer formats, which Kubernetes does not know (current API
/// servers warn `unrecognized format "uint32"` on every apply), as `int64` with the bounds the unsigned
/// type implies: `minimum` at least 0 and, for `uint32`, `maximum` at most 2^32 - 1. A `uint64` above
/// 2^63 - 1 could not be stored by the API server anyway (it keeps integers as int64).
fn kubernetes_integer_formats(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let limit = match map.get("format").and_then(Value::as_str) {
                Some("uint32") => Some(Some(f64::from(u32::MAX))),
                Some("uint64") => Some(None),
                _ => None,
            };
            if let Some(max) = limit {
                map.insert("format".into(), "int64".into());
                let min = map.get("minimum").and_then(Value::as_f64).unwrap_or(0.0).max(0.0);
                map.insert("minimum".into(), min.into());
                if let Some(max) = max {
                    let max = map.get("maximum").and_then(Value::as_f64).unwrap_or(max).min(max);
                    map.insert("maximum".into(), max.into());
                }
            }
            map.values_mut().for_each(kubernetes_integer_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(kubernetes_integer_formats),
        _ => {}
    }
}

/// Removes `description` from every schema below `schema` (its own description stays).
fn strip_nested_descriptions(schema: &mut Value) {
    fn walk(v: &mut Value, top: bool) {
        match v {
            Value::Object(map) => {
                if !top {
                    map.remove("description");
                }
                for (key, child) in map.iter_mut() {
                    // `properties` maps field names to schemas: a field may itself be called
                    // "description", so recurse into the values, never treat the map as a schema.
                    if key == "properties" {
                        if let Value::Object(fields) = child {
                            fields.values_mut().for_each(|f| walk(f, false));
                        }
                    } else if key != "enum" && key != "default" {
                        walk(child, false);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, false)),
            _ => {}
        }
    }
    walk(schema, true);
}

/// The manifest text written to [`CRD_PATH`] and [`CHART_CRD_PATH`].
pub fn crd_yaml() -> Result<String, CrdError> {
    let yaml = serde_saphyr::to_string(&crd_value()?)?;
    Ok(format!("# Generated by `cargo run -p drakkar-operator --bin crdgen`: do not edit.\n---\n{yaml}"))
}
