//! The StatefulSet of nodes, and the `drakkar serve` command line ([`node_args`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities as LinuxCapabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{BuildError, Input, meta};
use crate::crd::{DrakkarClusterSpec, TlsMode};
use crate::names::{FOUNDING_ANNOTATION, GRPC_PORT, HTTP_PORT, NODE_CONTAINER, Names};
use crate::validate::Founding;

/// Where the node's volume is mounted (`--data-dir`).
pub const DATA_DIR: &str = "/var/lib/drakkar";
/// Where the node's TLS Secret is mounted (`ca.crt`, `tls.crt`, `tls.key`).
pub const TLS_DIR: &str = "/etc/drakkar/tls";
/// Name of the data volume claim template (PVCs are `data-<pod>`).
pub(crate) const DATA_VOLUME: &str = "data";
pub(crate) const TLS_VOLUME: &str = "tls";
pub(crate) const TMP_VOLUME: &str = "tmp";
/// The non-root user and group the node runs as (distroless `nonroot`); the volume is group-owned by it.
const NODE_UID: i64 = 65532;

/// The arguments of the node container (its command is `drakkar`). The single place that knows the
/// `drakkar serve` flags; see docs/operator.md for the assumptions.
///
/// Invariant: `--peers` lists the founding members only, in ordinal order, with exactly the string each of
/// them advertises, because the node derives its replica id from its position in that list (position + 1)
/// and founds nothing when it is absent from it. Pods beyond the founding count start as non-members.
pub fn node_args(names: &Names, spec: &DrakkarClusterSpec, founding: &Founding) -> Vec<String> {
    let peers: Vec<String> = (0..founding.replicas).map(|i| names.advertise(&names.pod(i))).collect();
    let mut args = vec![
        "serve".to_string(),
        format!("--data-dir={DATA_DIR}"),
        format!("--listen=0.0.0.0:{GRPC_PORT}"),
        // $(POD_NAME) is expanded by the kubelet from the container's environment.
        format!("--advertise={}", names.advertise("$(POD_NAME)")),
        format!("--peers={}", peers.join(",")),
        format!("--kv-groups={}", founding.groups),
        format!("--state-machine={}", founding.state_machine.as_str()),
        format!("--metrics-listen=0.0.0.0:{HTTP_PORT}"),
    ];
    match spec.tls.mode {
        TlsMode::Disabled => args.push("--insecure".into()),
        TlsMode::Operator | TlsMode::CertManager => {
            args.push(format!("--tls-ca={TLS_DIR}/ca.crt"));
            args.push(format!("--tls-cert={TLS_DIR}/tls.crt"));
            args.push(format!("--tls-key={TLS_DIR}/tls.key"));
            // Nodes require client certificates unless told otherwise.
            if !spec.tls.require_client_cert {
                args.push("--allow-anonymous-clients".into());
            }
        }
    }
    args
}

/// The StatefulSet running the nodes.
pub fn statefulset(input: &Input<'_>, owner: &OwnerReference) -> Result<StatefulSet, BuildError> {
    let names = input.names;
    let spec = &input.cluster.spec;
    let overrides = spec.pod_template.clone().unwrap_or_default();
    let mut metadata = meta(input, names.statefulset(), owner);
    metadata.annotations =
        Some(BTreeMap::from([(FOUNDING_ANNOTATION.to_string(), serde_json::to_string(input.founding)?)]));

    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(names.labels());
    pod_labels.extend(names.selector_labels());

    let mut containers = vec![node_container(input)];
    containers.extend(overrides.containers.iter().cloned());
    // The root filesystem is read-only; /tmp is the one scratch directory.
    let mut volumes = vec![Volume {
        name: TMP_VOLUME.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    volumes.extend(overrides.volumes.iter().cloned());
    if spec.tls.mode != TlsMode::Disabled {
        volumes.push(Volume {
            name: TLS_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.tls_secret("server")),
                // Owner and group read: the node runs as NODE_UID with fsGroup NODE_UID.
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }

    let pod = PodSpec {
        affinity: Some(overrides.affinity.clone().unwrap_or_else(|| spread(names))),
        tolerations: (!overrides.tolerations.is_empty()).then(|| overrides.tolerations.clone()),
        node_selector: (!overrides.node_selector.is_empty()).then(|| overrides.node_selector.clone()),
        containers,
        volumes: Some(volumes),
        enable_service_links: Some(false),
        // The node calls no Kubernetes API: its own ServiceAccount, no token.
        service_account_name: Some(names.node_service_account()),
        automount_service_account_token: Some(false),
        // The node moves leadership away and drains requests on SIGTERM (a few seconds).
        termination_grace_period_seconds: Some(30),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NODE_UID),
            run_as_group: Some(NODE_UID),
            fs_group: Some(NODE_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    };

    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(names.labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: input.founding.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                        input.founding.storage_size.clone(),
                    ),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    Ok(StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(names.peer_service()),
            // Parallel: a lone first pod cannot become ready (no quorum), so OrderedReady would never
            // start the second one.
            pod_management_policy: Some("Parallel".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!overrides.annotations.is_empty()).then(|| overrides.annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    })
}

fn node_container(input: &Input<'_>) -> Container {
    let spec = &input.cluster.spec;
    let field_env = |name: &str, path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    };
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.into()),
        container_port: number,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    let mut mounts = vec![
        VolumeMount { name: DATA_VOLUME.into(), mount_path: DATA_DIR.into(), ..VolumeMount::default() },
        VolumeMount { name: TMP_VOLUME.into(), mount_path: "/tmp".into(), ..VolumeMount::default() },
    ];
    if spec.tls.mode != TlsMode::Disabled {
        mounts.push(VolumeMount {
            name: TLS_VOLUME.into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    Container {
        name: NODE_CONTAINER.into(),
        image: Some(spec.image.clone()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        command: Some(vec!["drakkar".into()]),
        args: Some(node_args(input.names, spec, input.founding)),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![port("grpc", GRPC_PORT), port("http", HTTP_PORT)]),
        // Ready = caught up with its groups; a pod that replays a long log is given up to 5 minutes.
        readiness_probe: Some(probe("/readyz", 5, 3)),
        liveness_probe: Some(probe("/livez", 10, 6)),
        startup_probe: Some(probe("/livez", 5, 60)),
        resources: spec.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(LinuxCapabilities {
                drop: Some(vec!["ALL".into()]),
                ..LinuxCapabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The default affinity: prefer one node pod per host, so a host failure costs one member.
fn spread(names: &Names) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(names.selector_labels()),
                        ..LabelSelector::default()
                    }),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}
