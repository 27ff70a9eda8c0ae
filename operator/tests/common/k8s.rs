//! A real Kubernetes API server for tests: etcd, kube-apiserver and kube-controller-manager started on
//! 127.0.0.1 with free ports (binaries from `tests/k8s/build-kubernetes.sh`), stopped on drop. Or any
//! cluster: `DRAKKAR_TEST_KUBECONFIG` points at its kubeconfig.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A running control plane (or a borrowed cluster).
pub struct TestCluster {
    /// The client, as the `system:masters` user.
    pub client: Client,
    /// Kubeconfig file of that user.
    pub kubeconfig: PathBuf,
    processes: Vec<(String, Child)>,
    dir: Option<tempfile::TempDir>,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, child) in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("DRAKKAR_K8S_KEEP").is_some()
            && let Some(dir) = self.dir.take()
        {
            eprintln!("control plane files kept in {}", dir.keep().display());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the binaries are: `DRAKKAR_K8S_BIN`, else the build script's cache when it was built.
fn bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DRAKKAR_K8S_BIN") {
        return Some(PathBuf::from(d));
    }
    let cache = std::env::var_os("DRAKKAR_K8S_CACHE").map(PathBuf::from).or_else(|| {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("drakkar-k8s"))
    })?;
    let bin = cache.join("bin");
    bin.join("kube-apiserver").exists().then_some(bin)
}

fn spawn(dir: &Path, name: &str, program: &Path, args: &[String]) -> (String, Child) {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    (name.to_string(), child)
}

async fn client_from(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

impl TestCluster {
    /// Starts a control plane, or connects to `DRAKKAR_TEST_KUBECONFIG`. `None` (with the reason printed)
    /// when neither is available and `DRAKKAR_K8S_REQUIRED` is unset; panics when it is set.
    pub async fn start() -> Option<TestCluster> {
        if let Some(kc) = std::env::var_os("DRAKKAR_TEST_KUBECONFIG") {
            let kubeconfig = PathBuf::from(kc);
            let client = client_from(&kubeconfig).await;
            return Some(TestCluster { client, kubeconfig, processes: Vec::new(), dir: None });
        }
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("DRAKKAR_K8S_REQUIRED").is_none(),
                "DRAKKAR_K8S_REQUIRED is set but no kube-apiserver was found: run tests/k8s/build-kubernetes.sh"
            );
            eprintln!(
                "SKIPPED: no Kubernetes API server. Build one with tests/k8s/build-kubernetes.sh (then these tests \
                 find it), or set DRAKKAR_TEST_KUBECONFIG to a cluster's kubeconfig"
            );
            return None;
        };
        Some(Self::launch(&bin).await)
    }

    async fn launch(bin: &Path) -> TestCluster {
        let dir = tempfile::Builder::new().prefix("drakkar-k8s-").tempdir().unwrap();
        let d = dir.path();
        let (etcd_client, etcd_peer, api, kcm) = (free_port(), free_port(), free_port(), free_port());
        let token = "drakkar-test-token";
        std::fs::write(d.join("tokens.csv"), format!("{token},admin,admin,\"system:masters\"\n")).unwrap();
        // The service-account signing key: an ECDSA key from rcgen (ES256 tokens).
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(d.join("sa.key"), key.serialize_pem()).unwrap();
        std::fs::write(d.join("sa.pub"), key.public_key_pem()).unwrap();
        let kubeconfig = d.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{api}\n    \
                 insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  \
                 context:\n    cluster: test\n    user: admin\ncurrent-context: test\n"
            ),
        )
        .unwrap();
        let s = |v: &str| v.to_string();
        let p = |path: &Path| path.display().to_string();
        let mut processes = Vec::new();
        let etcd = which("etcd").unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
        processes.push(spawn(
            d,
            "etcd",
            &etcd,
            &[
                format!("--data-dir={}", p(&d.join("etcd"))),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                s("--log-level=warn"),
            ],
        ));
        processes.push(spawn(
            d,
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                s("--bind-address=127.0.0.1"),
                s("--advertise-address=127.0.0.1"),
                format!("--secure-port={api}"),
                s("--insecure-port=0"),
                format!("--cert-dir={}", p(&d.join("certs"))),
                format!("--token-auth-file={}", p(&d.join("tokens.csv"))),
                s("--authorization-mode=RBAC"),
                s("--service-account-issuer=https://kubernetes.default.svc"),
                format!("--service-account-key-file={}", p(&d.join("sa.pub"))),
                format!("--service-account-signing-key-file={}", p(&d.join("sa.key"))),
                s("--service-cluster-ip-range=10.96.0.0/16"),
                s("--endpoint-reconciler-type=none"),
                s("--disable-admission-plugins=ServiceAccount"),
                s("--enable-priority-and-fairness=false"),
            ],
        ));
        let client = client_from(&kubeconfig).await;
        let mut cluster = TestCluster { client, kubeconfig: kubeconfig.clone(), processes, dir: Some(dir) };
        cluster.wait_ready().await;
        let d = cluster.dir.as_ref().unwrap().path().to_path_buf();
        cluster.processes.push(spawn(
            &d,
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", p(&kubeconfig)),
                s("--controllers=*"),
                s("--leader-elect=false"),
                s("--port=0"),
                format!("--secure-port={kcm}"),
                s("--bind-address=127.0.0.1"),
                format!("--service-account-private-key-file={}", p(&d.join("sa.key"))),
            ],
        ));
        cluster
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for (name, child) in &mut self.processes {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = self.dir.as_ref().map(|d| d.path().join(format!("{name}.log"))).unwrap();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: String = text
                        .lines()
                        .rev()
                        .take(30)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    panic!("{name} exited ({status}):\n{tail}");
                }
            }
            let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(self.client.clone());
            if ns.get_opt("default").await.is_ok_and(|n| n.is_some()) {
                return;
            }
            assert!(Instant::now() < deadline, "the API server did not become ready in 60 s");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.exists())
}

/// `repo()/rel`.
pub fn repo_file(rel: &str) -> PathBuf {
    repo().join(rel)
}
