//! Real pods: a one-node Kubernetes cluster (tests/k8s/kube.py: etcd, the API server, controller manager
//! and scheduler, a kubelet on containerd with the CNI bridge, kube-proxy, a cluster DNS and a volume
//! provisioner), the node and operator images built by images/image.py from this build's binaries, the
//! chart installed with the real Helm SDK (the operator runs as a pod under its ServiceAccount), and a
//! `DrakkarCluster` applied from `examples/`. An application pod (the node image running `drakkar check`,
//! configured by the cluster's ConfigMap and client Secret, as docs/operator.md tells applications) writes
//! and reads through the client Service over TLS throughout each scenario; its history must be
//! linearizable with every acknowledged write read back at the end.
//!
//! Needs root, the Kubernetes build (tests/k8s/build-kubernetes.sh), Debian's containerd, runc,
//! containernetworking-plugins and dnsmasq-base, and the Helm SDK (`DRAKKAR_HELM_PYTHON`, as the chart
//! tests). Without them the test prints why and passes, unless `DRAKKAR_KUBE_REQUIRED` is set (`.ci/run`
//! sets it): then it fails. `DRAKKAR_KUBE_KEEP=1` leaves the cluster running afterwards
//! (`tests/k8s/kube.py down` stops it). Times of each scenario are printed (`pods:` lines).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use drakkar_e2e::drakkar_bin;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k8s_bin() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DRAKKAR_K8S_BIN") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("DRAKKAR_K8S_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("drakkar-k8s")))?;
    let bin = base.join("bin");
    bin.join("kubelet").exists().then_some(bin)
}

fn helm_python() -> Option<PathBuf> {
    std::env::var_os("DRAKKAR_HELM_PYTHON")
        .map(PathBuf::from)
        .or_else(|| Some(repo().join("target/helm-venv/bin/python")).filter(|p| p.exists()))
}

/// Why the real-pod tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    // SAFETY-free check of the effective uid through /proc (no libc dependency).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Some("not root (a kubelet, containerd and iptables need it)".into());
    }
    let bin = k8s_bin();
    if bin.as_ref().is_none_or(|b| !b.join("kubelet").exists()) {
        return Some("no Kubernetes build: run tests/k8s/build-kubernetes.sh".into());
    }
    for tool in ["/usr/bin/containerd", "/usr/sbin/runc", "/usr/sbin/dnsmasq", "/usr/lib/cni/bridge"] {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing: apt-get install containerd runc containernetworking-plugins dnsmasq-base"
            ));
        }
    }
    if helm_python().is_none() {
        return Some("no Helm SDK: set DRAKKAR_HELM_PYTHON (see operator/tests/chart.rs)".into());
    }
    None
}

/// The harness cluster, brought down on drop.
struct Kube {
    dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl Drop for Kube {
    fn drop(&mut self) {
        if std::env::var_os("DRAKKAR_KUBE_KEEP").is_some() {
            eprintln!("pods: cluster left running: export KUBECONFIG={}", self.kubeconfig.display());
            return;
        }
        if std::thread::panicking() {
            // Keep what explains the failure: every component's and pod's log.
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "for f in {0}/logs/*.log; do echo \"== $f\"; tail -n 40 \"$f\"; done; \
                     for f in $(find /var/log/pods -name '*.log' 2>/dev/null); do echo \"== $f\"; tail -n 60 \"$f\"; done",
                    self.dir.display()
                ))
                .status();
        }
        let _ = Command::new("python3")
            .arg(repo().join("tests/k8s/kube.py"))
            .args(["down", "--dir"])
            .arg(&self.dir)
            .status();
    }
}

impl Kube {
    fn up() -> Option<Kube> {
        if let Some(why) = missing() {
            assert!(
                std::env::var_os("DRAKKAR_KUBE_REQUIRED").is_none(),
                "DRAKKAR_KUBE_REQUIRED is set but {why}"
            );
            eprintln!("SKIPPED: real-pod tests: {why}");
            return None;
        }
        let bin = k8s_bin().unwrap();
        let dir = PathBuf::from(
            std::env::var("DRAKKAR_KUBE_DIR").unwrap_or_else(|_| "/tmp/drakkar-kube-test".into()),
        );
        let drakkar_dir = drakkar_bin().parent().unwrap().to_path_buf();
        let started = Instant::now();
        let kube = Kube { kubeconfig: dir.join("kubeconfig"), kubectl: bin.join("kubectl"), dir };
        let out = Command::new("python3")
            .arg(repo().join("tests/k8s/kube.py"))
            .args(["up", "--dir"])
            .arg(&kube.dir)
            .arg("--bin")
            .arg(&bin)
            .arg("--drakkar-bin")
            .arg(&drakkar_dir)
            .stdin(Stdio::null())
            .output()
            .expect("running tests/k8s/kube.py");
        assert!(
            out.status.success(),
            "kube.py up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("pods: cluster up (images imported) in {:.1} s", started.elapsed().as_secs_f64());
        Some(kube)
    }

    fn kubectl_out(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl; panics with its output when it fails.
    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_out(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, ns: &str, yaml: &str) {
        let out = self.kubectl_out(&["apply", "-n", ns, "-f", "-"], Some(yaml));
        assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn json(&self, args: &[&str]) -> Option<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl_out(&a, None);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn helm_install(&self) {
        let started = Instant::now();
        let out = Command::new(helm_python().unwrap())
            .arg(repo().join("tests/k8s/helm.py"))
            .arg("install")
            .arg(&self.kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm install failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("pods: chart installed, operator pod ready, in {:.1} s", started.elapsed().as_secs_f64());
    }

    /// Waits until `ready` holds of the DrakkarCluster, printing its status on timeout.
    fn wait_cluster(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        within: Duration,
        ready: impl Fn(&Value) -> bool,
    ) -> Duration {
        let started = Instant::now();
        let mut last = Value::Null;
        while started.elapsed() < within {
            if let Some(dk) = self.json(&["get", "-n", ns, "drakkarcluster", name]) {
                if ready(&dk) {
                    let took = started.elapsed();
                    eprintln!("pods: {ns}/{name} {what} after {:.1} s", took.as_secs_f64());
                    return took;
                }
                last = dk["status"].clone();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let pods = self.kubectl_out(&["get", "pods", "-n", ns, "-o", "wide"], None);
        let events = self.kubectl_out(&["get", "events", "-n", ns], None);
        panic!(
            "{ns}/{name} not {what} within {within:?}; status: {last:#}\npods:\n{}\nevents:\n{}",
            String::from_utf8_lossy(&pods.stdout),
            String::from_utf8_lossy(&events.stdout)
        );
    }

    /// Starts an application pod running `drakkar check` for `secs` seconds against the cluster's client
    /// Service, configured from the cluster's ConfigMap and client Secret.
    fn start_check(&self, ns: &str, cluster: &str, pod: &str, secs: u64) {
        let yaml = format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
  containers:
  - name: check
    image: ghcr.io/drakkar-io/drakkar:0.1.0
    imagePullPolicy: Never
    args: ["check", "--endpoints", "$(DRAKKAR_ENDPOINTS)", "--time", "{secs}s", "--concurrency", "4",
           "--rate", "100", "--request-timeout-ms", "3000", "--out", "/tmp/check"]
    envFrom:
    - configMapRef:
        name: {cluster}-config
    env:
    - name: DRAKKAR_LOG
      value: warn
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities:
        drop: ["ALL"]
    volumeMounts:
    - name: client-tls
      mountPath: /etc/drakkar/client
      readOnly: true
    - name: tmp
      mountPath: /tmp
  volumes:
  - name: client-tls
    secret:
      secretName: {cluster}-tls-client
  - name: tmp
    emptyDir: {{}}
"#
        );
        self.apply(ns, &yaml);
    }

    /// Waits for the check pod to finish; asserts it passed (linearizable, nothing lost) and returns
    /// its summary line.
    fn finish_check(&self, ns: &str, pod: &str, within: Duration) -> String {
        let started = Instant::now();
        let phase = loop {
            let phase = self
                .json(&["get", "-n", ns, "pod", pod])
                .and_then(|p| p["status"]["phase"].as_str().map(str::to_string))
                .unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" {
                break phase;
            }
            assert!(started.elapsed() < within, "check pod {ns}/{pod} still {phase:?} after {within:?}");
            std::thread::sleep(Duration::from_millis(500));
        };
        let logs = self.kubectl(&["logs", "-n", ns, pod]);
        assert_eq!(phase, "Succeeded", "the check pod failed:\n{logs}");
        // `drakkar check` exits non-zero unless the history is linearizable and no acknowledged write is
        // lost; the lines are checked too, so a change of its output cannot pass silently.
        let line =
            |prefix: &str| logs.lines().find(|l| l.starts_with(prefix)).unwrap_or_default().to_string();
        assert_eq!(line("checker:").split_whitespace().nth(1), Some("linearizable"), "verdict:\n{logs}");
        assert_eq!(line("lost acknowledged writes:"), "lost acknowledged writes: 0", "lost writes:\n{logs}");
        assert!(logs.lines().any(|l| l == "PASS"), "no PASS in the check pod's output:\n{logs}");
        let summary = line("operations:");
        eprintln!("pods: {ns}/{pod}: {summary}");
        summary
    }

    fn create_namespace(&self, ns: &str) {
        self.kubectl(&["create", "namespace", ns]);
    }
}

fn minimal() -> String {
    std::fs::read_to_string(repo().join("examples/cluster-minimal.yaml")).unwrap()
}

fn ready_with(replicas: i64) -> impl Fn(&Value) -> bool {
    move |dk: &Value| {
        let s = &dk["status"];
        s["phase"] == "Running"
            && s["readyReplicas"].as_i64() == Some(replicas)
            && s["replicas"].as_i64() == Some(replicas)
    }
}

fn member<'a>(dk: &'a Value, pod: &str) -> Option<&'a Value> {
    dk["status"]["members"].as_array()?.iter().find(|m| m["pod"] == pod)
}

fn leader_of_group_1(dk: &Value) -> Option<String> {
    dk["status"]["leaders"].as_array()?.iter().find(|l| l["group"] == 1)?["pod"].as_str().map(str::to_string)
}

impl Kube {
    fn uid(&self, ns: &str, kind: &str, name: &str) -> Option<String> {
        self.json(&["get", "-n", ns, kind, name])
            .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string))
    }

    fn cluster(&self, ns: &str, name: &str) -> Value {
        self.json(&["get", "-n", ns, "drakkarcluster", name]).expect("the DrakkarCluster")
    }
}

/// Install, create, scale 3 -> 5 -> 3 (the operator pod restarted in the middle of the scale-up), the
/// leader's pod deleted five times in a row, a pod lost with its volume: on real pods, with an
/// application writing and reading throughout.
#[test]
fn the_chart_and_a_cluster_run_on_real_pods() {
    let Some(kube) = Kube::up() else { return };
    kube.helm_install();

    // Create: the example exactly as users apply it.
    let ns = "pods";
    kube.create_namespace(ns);
    kube.apply(ns, &minimal());
    kube.wait_cluster(ns, "demo", "Ready after apply", Duration::from_secs(180), ready_with(3));
    kube.start_check(ns, "demo", "app-create", 15);
    kube.finish_check(ns, "app-create", Duration::from_secs(120));

    // Scale 3 -> 5 with the operator pod deleted right after the change, then back to 3.
    kube.start_check(ns, "demo", "app-scale", 60);
    std::thread::sleep(Duration::from_secs(5));
    kube.kubectl(&["scale", "-n", ns, "drakkarcluster/demo", "--replicas=5"]);
    std::thread::sleep(Duration::from_secs(1));
    kube.kubectl(&[
        "delete",
        "pod",
        "-n",
        "drakkar-system",
        "-l",
        "app.kubernetes.io/name=drakkar",
        "--wait=false",
    ]);
    kube.wait_cluster(
        ns,
        "demo",
        "scaled to 5 (operator restarted)",
        Duration::from_secs(180),
        ready_with(5),
    );
    kube.kubectl(&["scale", "-n", ns, "drakkarcluster/demo", "--replicas=3"]);
    kube.wait_cluster(ns, "demo", "scaled back to 3", Duration::from_secs(180), ready_with(3));
    kube.finish_check(ns, "app-scale", Duration::from_secs(180));

    // The leader's pod deleted five times in a row: each time another node leads, the pod comes back
    // (a new pod on the same volume) and the cluster is whole again.
    kube.start_check(ns, "demo", "app-leader", 90);
    for round in 1..=5 {
        let dk = kube.cluster(ns, "demo");
        let leader =
            leader_of_group_1(&dk).unwrap_or_else(|| panic!("no leader in the status: {:#}", dk["status"]));
        let old = kube.uid(ns, "pod", &leader).unwrap();
        let started = Instant::now();
        kube.kubectl(&["delete", "pod", "-n", ns, &leader, "--wait=false"]);
        kube.wait_cluster(
            ns,
            "demo",
            &format!("led by another pod (round {round})"),
            Duration::from_secs(60),
            |dk| leader_of_group_1(dk).is_some_and(|l| l != leader),
        );
        kube.wait_cluster(
            ns,
            "demo",
            &format!("whole again (round {round})"),
            Duration::from_secs(120),
            |dk| ready_with(3)(dk) && kube.uid(ns, "pod", &leader).is_some_and(|u| u != old),
        );
        eprintln!(
            "pods: leader {leader} replaced in {:.1} s (round {round})",
            started.elapsed().as_secs_f64()
        );
    }
    kube.finish_check(ns, "app-leader", Duration::from_secs(180));

    // A lost volume: a pod deleted together with its claim comes back empty and is replaced in the
    // groups under a new replica id.
    kube.start_check(ns, "demo", "app-lost-volume", 45);
    std::thread::sleep(Duration::from_secs(5));
    let old_claim = kube.uid(ns, "pvc", "data-demo-1").unwrap();
    let old_pod = kube.uid(ns, "pod", "demo-1").unwrap();
    let old_id = member(&kube.cluster(ns, "demo"), "demo-1").and_then(|m| m["replicaId"].as_u64());
    let started = Instant::now();
    kube.kubectl(&["delete", "-n", ns, "pvc", "data-demo-1", "--wait=false"]);
    kube.kubectl(&["delete", "-n", ns, "pod", "demo-1", "--wait=false"]);
    kube.wait_cluster(ns, "demo", "whole again after a lost volume", Duration::from_secs(180), |dk| {
        ready_with(3)(dk)
            && member(dk, "demo-1").is_some_and(|m| m["healthy"] == true && m["replicaId"].as_u64() != old_id)
            && kube.uid(ns, "pod", "demo-1").is_some_and(|u| u != old_pod)
            && kube.uid(ns, "pvc", "data-demo-1").is_some_and(|u| u != old_claim)
    });
    eprintln!("pods: lost volume replaced in {:.1} s", started.elapsed().as_secs_f64());
    kube.finish_check(ns, "app-lost-volume", Duration::from_secs(180));
}
