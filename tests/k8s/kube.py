#!/usr/bin/env python3
"""A real one-node Kubernetes cluster on this machine, for the real-pod tests and for people.

    tests/k8s/kube.py up      [--dir D] [--bin K8S_BIN] [--drakkar-bin DIR]   # start (or reuse) it
    tests/k8s/kube.py down    [--dir D]                                        # stop it, undo everything
    tests/k8s/kube.py status  [--dir D]
    tests/k8s/kube.py images  [--dir D] [--drakkar-bin DIR]                    # rebuild + import images

Parts, all real: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a kubelet on containerd
(runc, the CNI bridge and portmap plugins), kube-proxy in iptables mode, a cluster DNS (dnsmasq answering
from a hosts file that `controllers` rewrites on every change of Pods, Services and Endpoints, seen
through watches), and a volume provisioner (the same `controllers` process binds each claim of the
`standard` StorageClass to a new hostPath PersistentVolume and deletes it with its claim). The node and
operator images are built from the `drakkar` and `drakkar-operator` binaries by images/image.py (the
Dockerfile's recipe) and imported into containerd; the chart is installed with the real Helm SDK by
`tests/k8s/helm.py` (the tests do that, or a person).

Needs root, Kubernetes binaries (tests/k8s/build-kubernetes.sh; any other version through --bin or
DRAKKAR_K8S_BIN) and Debian's containerd, runc, containernetworking-plugins, dnsmasq-base, iptables.
`up` prints the environment to use (`export KUBECONFIG=D/kubeconfig`). Everything lives under D
(default /tmp/drakkar-kube) except what the kubelet insists on (/var/log/pods), pod network namespaces
(/var/run/netns/cni-*), iptables rules and sysctls: `down` puts back each one it changed, kills only the
processes it started (recorded as their own PIDs under D/pids) and the containers it ran.

One cluster per machine: the kubelet's and kube-proxy's ports are fixed.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
DEFAULT_DIR = "/tmp/drakkar-kube"

BRIDGE = "drakkar0"
GATEWAY = "198.18.0.1"  # the host on the pod bridge: API server, kubelet, DNS
POD_CIDR = "198.18.0.0/24"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
API_PORT = 6443
NODE_NAME = "drakkar-node"
PAUSE_IMAGE = "drakkar.test/pause:3.2"
SYSCTLS = [
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.bridge.bridge-nf-call-iptables",
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
]
# Processes in start order; `down` stops them in reverse.
ORDER = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "containerd",
    "kubelet",
    "kube-proxy",
    "dnsmasq",
    "controllers",
]


def log(msg: str) -> None:
    print(f"kube: {msg}", file=sys.stderr, flush=True)


def run(args, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, text=True, capture_output=True, **kw)


def version_of(bin_dir: str) -> tuple:
    out = run([os.path.join(bin_dir, "kube-apiserver"), "--version"]).stdout  # "Kubernetes v1.20.2"
    v = out.split()[-1].lstrip("v").split("-")[0].split(".")
    return (int(v[0]), int(v[1]))


class Layout:
    """Paths under the cluster directory."""

    def __init__(self, d: str):
        self.dir = os.path.abspath(d)
        self.pids = os.path.join(self.dir, "pids")
        self.logs = os.path.join(self.dir, "logs")
        self.pki = os.path.join(self.dir, "pki")
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        self.state = os.path.join(self.dir, "state.json")
        self.containerd_sock = os.path.join(self.dir, "containerd", "containerd.sock")
        self.hosts = os.path.join(self.dir, "dns", "hosts")
        self.volumes = os.path.join(self.dir, "volumes")

    def pid_file(self, name: str) -> str:
        return os.path.join(self.pids, f"{name}.pid")

    def log_file(self, name: str) -> str:
        return os.path.join(self.logs, f"{name}.log")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie or a reused PID is not ours: check the recorded start command line too.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def read_pid(lay: Layout, name: str):
    try:
        with open(lay.pid_file(name)) as f:
            pid, cmd0 = f.read().split("\n", 1)
        pid = int(pid)
    except (OSError, ValueError):
        return None
    # The PID must still be the program we started (not a reused PID).
    try:
        exe = os.path.realpath(f"/proc/{pid}/exe")
    except OSError:
        return None
    if os.path.basename(exe) != os.path.basename(os.path.realpath(cmd0.strip())):
        return None
    return pid if alive(pid) else None


def spawn(lay: Layout, name: str, args: list, env=None) -> int:
    """Starts a detached process, its output in logs/NAME.log, its own PID in pids/NAME.pid."""
    out = open(lay.log_file(name), "ab")
    p = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, env=env
    )
    with open(lay.pid_file(name), "w") as f:
        f.write(f"{p.pid}\n{args[0]}\n")
    return p.pid


def wait_for(what: str, check, timeout: float, lay: Layout = None, name: str = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - a probe failing is the same as not ready yet
            pass
        if lay is not None and name is not None and read_pid(lay, name) is None:
            tail = open(lay.log_file(name), errors="replace").read()[-3000:]
            raise SystemExit(f"kube: {name} exited while waiting for {what}:\n{tail}")
        time.sleep(0.2)
    raise SystemExit(f"kube: timed out after {timeout:.0f}s waiting for {what}")


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------
# Certificates and kubeconfigs


def pki(lay: Layout) -> None:
    os.makedirs(lay.pki, exist_ok=True)
    p = lambda n: os.path.join(lay.pki, n)  # noqa: E731
    if os.path.exists(p("apiserver.crt")):
        return
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "30", "-subj", "/CN=drakkar-test-ca"])
    sans = ",".join([
        f"IP:{GATEWAY}", f"IP:{KUBERNETES_SERVICE_IP}", "IP:127.0.0.1", "DNS:kubernetes",
        "DNS:kubernetes.default", "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
        "DNS:localhost",
    ])
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", p("apiserver.key"), "-out", p("apiserver.csr"), "-subj", "/CN=kube-apiserver"])
    with open(p("ext.cnf"), "w") as f:
        f.write(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n")
    run(["openssl", "x509", "-req", "-in", p("apiserver.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
         "-CAcreateserial", "-out", p("apiserver.crt"), "-days", "30", "-extfile", p("ext.cnf")])
    # The service-account token signing key.
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", p("sa.key")])
    run(["openssl", "ec", "-in", p("sa.key"), "-pubout", "-out", p("sa.pub")])
    # Control-plane identities: bearer tokens (the harness's own components act as system:masters;
    # everything running in pods, the operator included, goes through its ServiceAccount and RBAC).
    token = os.urandom(16).hex()
    with open(p("tokens.csv"), "w") as f:
        f.write(f'{token},admin,admin,"system:masters"\n')
    with open(p("admin.token"), "w") as f:
        f.write(token)


def kubeconfig(lay: Layout) -> None:
    token = open(os.path.join(lay.pki, "admin.token")).read().strip()
    ca = os.path.join(lay.pki, "ca.crt")
    with open(lay.kubeconfig, "w") as f:
        f.write(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: drakkar-test\n  cluster:\n"
            f"    server: https://{GATEWAY}:{API_PORT}\n    certificate-authority: {ca}\n"
            "users:\n- name: admin\n  user:\n"
            f"    token: {token}\ncontexts:\n- name: drakkar-test\n  context:\n    cluster: drakkar-test\n"
            "    user: admin\ncurrent-context: drakkar-test\n"
        )
    os.chmod(lay.kubeconfig, 0o600)


class Api:
    """A tiny API client for the harness's own controllers and readiness checks."""

    def __init__(self, lay: Layout):
        self.base = f"https://{GATEWAY}:{API_PORT}"
        self.token = open(os.path.join(lay.pki, "admin.token")).read().strip()
        self.ctx = ssl.create_default_context(cafile=os.path.join(lay.pki, "ca.crt"))

    def request(self, method: str, path: str, body=None, timeout: float = 10, stream: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        resp = urllib.request.urlopen(req, context=self.ctx, timeout=timeout)
        return resp if stream else json.loads(resp.read() or b"null")

    def get(self, path: str):
        return self.request("GET", path)


# ---------------------------------------------------------------------------------------------------
# Host changes that `down` undoes


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def record_host_state(lay: Layout) -> None:
    if os.path.exists(lay.state):
        return
    state = {"sysctls": {}, "netns_before": sorted(os.listdir("/var/run/netns"))
             if os.path.isdir("/var/run/netns") else [],
             "var_log_pods_existed": os.path.exists("/var/log/pods"),
             "var_lib_kubelet_existed": os.path.exists("/var/lib/kubelet")}
    for key in SYSCTLS:
        try:
            state["sysctls"][key] = open(sysctl_path(key)).read().strip()
        except OSError:
            pass
    for cmd in ("iptables-save", "ip6tables-save"):
        out = run([cmd], check=False)
        if out.returncode == 0:
            with open(os.path.join(lay.dir, f"{cmd}.before"), "w") as f:
                f.write(out.stdout)
    with open(lay.state, "w") as f:
        json.dump(state, f, indent=1)


def network(lay: Layout) -> None:
    """The pod bridge with the gateway address, made before the first pod so the API server and the DNS
    can listen on it; forwarding on."""
    if run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    for key, value in [("net.ipv4.ip_forward", "1"), ("net.bridge.bridge-nf-call-iptables", "1")]:
        try:
            with open(sysctl_path(key), "w") as f:
                f.write(value)
        except OSError as e:
            log(f"cannot set {key}: {e}")


# ---------------------------------------------------------------------------------------------------
# The parts


def start_etcd(lay: Layout, ports: dict) -> None:
    if read_pid(lay, "etcd"):
        return
    c, p = ports["etcd_client"], ports["etcd_peer"]
    spawn(lay, "etcd", [
        shutil.which("etcd") or "/usr/bin/etcd", f"--data-dir={lay.dir}/etcd",
        f"--listen-client-urls=http://127.0.0.1:{c}", f"--advertise-client-urls=http://127.0.0.1:{c}",
        f"--listen-peer-urls=http://127.0.0.1:{p}", f"--initial-advertise-peer-urls=http://127.0.0.1:{p}",
        f"--initial-cluster=default=http://127.0.0.1:{p}", "--log-level=warn",
        "--listen-metrics-urls=", "--quota-backend-bytes=1073741824",
    ])
    wait_for("etcd", lambda: port_open("127.0.0.1", c), 30, lay, "etcd")


def start_apiserver(lay: Layout, bin_dir: str, ver: tuple, ports: dict) -> None:
    if not read_pid(lay, "kube-apiserver"):
        p = lambda n: os.path.join(lay.pki, n)  # noqa: E731
        args = [
            os.path.join(bin_dir, "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd_client']}",
            f"--bind-address={GATEWAY}", f"--advertise-address={GATEWAY}", f"--secure-port={API_PORT}",
            f"--tls-cert-file={p('apiserver.crt')}", f"--tls-private-key-file={p('apiserver.key')}",
            f"--client-ca-file={p('ca.crt')}", f"--token-auth-file={p('tokens.csv')}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={p('sa.pub')}", f"--service-account-signing-key-file={p('sa.key')}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--endpoint-reconciler-type=lease",
            "--kubelet-preferred-address-types=InternalIP", "--allow-privileged=true",
            "--enable-admission-plugins=NodeRestriction",
        ]
        if ver < (1, 24):
            args.append("--insecure-port=0")
        spawn(lay, "kube-apiserver", args)
    api = Api(lay)
    wait_for("the API server", lambda: api.request("GET", "/readyz", timeout=2, stream=True).read() == b"ok",
             90, lay, "kube-apiserver")


def start_controller_manager(lay: Layout, bin_dir: str, ver: tuple) -> None:
    if read_pid(lay, "kube-controller-manager"):
        return
    args = [
        os.path.join(bin_dir, "kube-controller-manager"), f"--kubeconfig={lay.kubeconfig}",
        "--controllers=*", "--leader-elect=false", f"--secure-port={free_port()}",
        "--bind-address=127.0.0.1", f"--service-account-private-key-file={lay.pki}/sa.key",
        f"--root-ca-file={lay.pki}/ca.crt", "--use-service-account-credentials=true",
        f"--cluster-signing-cert-file={lay.pki}/ca.crt", f"--cluster-signing-key-file={lay.pki}/ca.key",
    ]
    if ver < (1, 24):
        args.append("--port=0")
    spawn(lay, "kube-controller-manager", args)


def start_scheduler(lay: Layout, bin_dir: str, ver: tuple) -> None:
    if read_pid(lay, "kube-scheduler"):
        return
    args = [
        os.path.join(bin_dir, "kube-scheduler"), f"--kubeconfig={lay.kubeconfig}", "--leader-elect=false",
        f"--secure-port={free_port()}", "--bind-address=127.0.0.1",
    ]
    if ver < (1, 24):
        args.append("--port=0")
    spawn(lay, "kube-scheduler", args)


def start_containerd(lay: Layout) -> None:
    cd = os.path.join(lay.dir, "containerd")
    cni_conf = os.path.join(lay.dir, "cni")
    os.makedirs(cni_conf, exist_ok=True)
    os.makedirs(cd, exist_ok=True)
    with open(os.path.join(cni_conf, "10-drakkar.conflist"), "w") as f:
        json.dump({
            "cniVersion": "0.4.0",
            "name": "drakkar-test",
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
                 "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                          "routes": [{"dst": "0.0.0.0/0"}],
                          "dataDir": os.path.join(lay.dir, "cni-ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, f, indent=1)
    config = f"""version = 2
root = "{cd}/root"
state = "{cd}/state"
[grpc]
  address = "{lay.containerd_sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
"""
    with open(os.path.join(cd, "config.toml"), "w") as f:
        f.write(config)
    if read_pid(lay, "containerd"):
        return
    spawn(lay, "containerd", ["/usr/bin/containerd", "--config", os.path.join(cd, "config.toml")])
    wait_for("containerd", lambda: run(["ctr", "-a", lay.containerd_sock, "version"]).returncode == 0,
             30, lay, "containerd")


def ctr(lay: Layout, *args, check=True):
    return run(["ctr", "-a", lay.containerd_sock, "-n", "k8s.io", *args], check=check)


def images(lay: Layout, bin_dir: str, drakkar_bin: str) -> None:
    """Builds and imports the pause, node and operator images."""
    out = os.path.join(lay.dir, "images")
    os.makedirs(out, exist_ok=True)
    sys.path.insert(0, os.path.join(REPO, "images"))
    import image  # images/image.py

    version = None
    with open(os.path.join(REPO, "charts", "drakkar", "Chart.yaml")) as f:
        for line in f:
            if line.startswith("appVersion:"):
                version = line.split(":", 1)[1].strip().strip('"')
    pause = {"user": "65535:65535", "entrypoint": ["/usr/local/bin/pause"], "cmd": [], "ports": []}
    todo = [(pause, os.path.join(bin_dir, "pause"), PAUSE_IMAGE)]
    for name in ("node", "operator"):
        with open(os.path.join(REPO, "images", f"{name}.json")) as f:
            desc = json.load(f)
        binary = os.path.join(drakkar_bin, desc["binary"])
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"kube: {binary} is missing: build it first (cargo build --release "
                             "--bin drakkar --bin drakkar-operator) or pass --drakkar-bin")
        todo.append((desc, binary, f"{desc['repository']}:{version}"))
    for desc, binary, tag in todo:
        tar = os.path.join(out, tag.replace("/", "_").replace(":", "_") + ".tar")
        image.build(desc, binary, tag, tar)
        ctr(lay, "images", "import", tar)
        log(f"image {tag} imported")


def start_kubelet(lay: Layout, bin_dir: str, ver: tuple) -> None:
    if read_pid(lay, "kubelet"):
        return
    kd = os.path.join(lay.dir, "kubelet")
    for sub in ("root", "certs", "plugins"):
        os.makedirs(os.path.join(kd, sub), exist_ok=True)
    with open(os.path.join(kd, "resolv.conf"), "w") as f:
        f.write(f"nameserver {GATEWAY}\n")
    args = [
        os.path.join(bin_dir, "kubelet"), f"--kubeconfig={lay.kubeconfig}",
        f"--hostname-override={NODE_NAME}", f"--node-ip={GATEWAY}", f"--address={GATEWAY}",
        "--healthz-bind-address=127.0.0.1", "--read-only-port=0",
        f"--root-dir={kd}/root", f"--cert-dir={kd}/certs", f"--volume-plugin-dir={kd}/plugins",
        f"--container-runtime-endpoint=unix://{lay.containerd_sock}",
        "--cgroup-driver=cgroupfs", "--fail-swap-on=false", "--cgroups-per-qos=false",
        "--enforce-node-allocatable=", f"--cluster-dns={GATEWAY}", "--cluster-domain=cluster.local",
        f"--resolv-conf={kd}/resolv.conf", "--image-gc-high-threshold=100",
        "--image-gc-low-threshold=99", "--eviction-hard=", "--max-pods=60",
        "--runtime-request-timeout=2m", "--serialize-image-pulls=false",
    ]
    if ver < (1, 24):
        args += ["--container-runtime=remote", f"--pod-infra-container-image={PAUSE_IMAGE}"]
    spawn(lay, "kubelet", args)


def start_kube_proxy(lay: Layout, bin_dir: str) -> None:
    if read_pid(lay, "kube-proxy"):
        return
    spawn(lay, "kube-proxy", [
        os.path.join(bin_dir, "kube-proxy"), f"--kubeconfig={lay.kubeconfig}", "--proxy-mode=iptables",
        f"--cluster-cidr={POD_CIDR}", "--conntrack-max-per-core=0", f"--hostname-override={NODE_NAME}",
        f"--bind-address={GATEWAY}", "--healthz-bind-address=127.0.0.1:10256",
        "--metrics-bind-address=127.0.0.1:10249",
    ])


def start_dns(lay: Layout) -> None:
    os.makedirs(os.path.dirname(lay.hosts), exist_ok=True)
    if not os.path.exists(lay.hosts):
        open(lay.hosts, "w").close()
    if read_pid(lay, "dnsmasq"):
        return
    spawn(lay, "dnsmasq", [
        "/usr/sbin/dnsmasq", "--keep-in-foreground", "--no-daemon", "--conf-file=/dev/null",
        f"--listen-address={GATEWAY}", "--bind-interfaces", "--port=53", "--no-resolv", "--no-hosts",
        f"--addn-hosts={lay.hosts}", "--local=/cluster.local/", "--domain-needed", "--local-ttl=1",
        "--cache-size=0", "--user=root", f"--pid-file={lay.dir}/dns/dnsmasq.pid",
    ])


def start_controllers(lay: Layout) -> None:
    if read_pid(lay, "controllers"):
        return
    spawn(lay, "controllers", [sys.executable, os.path.abspath(__file__), "controllers", "--dir", lay.dir])


# ---------------------------------------------------------------------------------------------------
# The harness's controllers: cluster DNS records and the hostPath volume provisioner


PROVISIONER = "drakkar.test/hostpath"


def dns_records(pods: list, services: list, endpoints: list) -> list:
    """(address, name) pairs, the records CoreDNS's kubernetes plugin serves for these objects: a Service
    name answers its ClusterIP (headless: the addresses of its endpoints), a StatefulSet pod's
    `<hostname>.<service>.<ns>.svc` its own address, and every pod `<a-b-c-d>.<ns>.pod`."""
    zone = "cluster.local"
    records = []
    by_key = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services}
    for (ns, name), svc in by_key.items():
        ip = svc.get("spec", {}).get("clusterIP")
        if ip and ip != "None":
            records.append((ip, f"{name}.{ns}.svc.{zone}"))
    for ep in endpoints:
        ns, name = ep["metadata"]["namespace"], ep["metadata"]["name"]
        svc = by_key.get((ns, name))
        if svc is None or svc.get("spec", {}).get("clusterIP") not in ("None", None):
            continue
        for subset in ep.get("subsets") or []:
            for a in subset.get("addresses") or []:
                records.append((a["ip"], f"{name}.{ns}.svc.{zone}"))
                if a.get("hostname"):
                    records.append((a["ip"], f"{a['hostname']}.{name}.{ns}.svc.{zone}"))
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if ip and not pod.get("spec", {}).get("hostNetwork"):
            records.append((ip, f"{ip.replace('.', '-')}.{pod['metadata']['namespace']}.pod.{zone}"))
    return sorted(set(records))


def write_hosts(lay: Layout, records: list) -> bool:
    text = "".join(f"{ip} {name}\n" for ip, name in records)
    try:
        if open(lay.hosts).read() == text:
            return False
    except OSError:
        pass
    tmp = lay.hosts + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, lay.hosts)
    pid = read_pid(lay, "dnsmasq")
    if pid:
        os.kill(pid, signal.SIGHUP)  # dnsmasq rereads --addn-hosts files on SIGHUP
    return True


def provision(api: Api, lay: Layout, claims: list, volumes: list) -> None:
    """Binds each pending claim of our class to a new hostPath volume; deletes released volumes (and
    their directories) of our class, as a real dynamic provisioner with reclaimPolicy Delete."""
    bound = {(v["spec"].get("claimRef") or {}).get("uid") for v in volumes}
    for c in claims:
        spec, meta = c["spec"], c["metadata"]
        if spec.get("storageClassName", "standard") != "standard" or spec.get("volumeName"):
            continue
        if meta["uid"] in bound or meta.get("deletionTimestamp"):
            continue
        name = f"pvc-{meta['uid']}"
        path = os.path.join(lay.volumes, name)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)  # as local-path-provisioner: hostPath volumes get no fsGroup ownership
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "standard",
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
                "hostPath": {"path": path, "type": "DirectoryOrCreate"},
                "volumeMode": spec.get("volumeMode", "Filesystem"),
            },
        }
        try:
            api.request("POST", "/api/v1/persistentvolumes", pv)
            log(f"provisioned {name} for {meta['namespace']}/{meta['name']}")
        except urllib.error.HTTPError as e:
            if e.code != 409:
                log(f"provisioning {name}: {e.code} {e.read()[:300]!r}")
    for v in volumes:
        meta = v["metadata"]
        ours = (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
        if ours and v.get("status", {}).get("phase") in ("Released", "Failed") \
                and v["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            try:
                api.request("DELETE", f"/api/v1/persistentvolumes/{meta['name']}")
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    log(f"deleting {meta['name']}: {e.code}")
                    continue
            shutil.rmtree(v["spec"]["hostPath"]["path"], ignore_errors=True)
            log(f"deleted {meta['name']}")


def controllers(lay: Layout) -> None:
    """Runs until killed: watches Pods, Services, Endpoints, claims and volumes; after every change
    (and every 10 s, in case a watch broke) lists them and reconciles DNS records and volumes."""
    api = Api(lay)
    dirty = threading.Event()
    kinds = ["/api/v1/pods", "/api/v1/services", "/api/v1/endpoints", "/api/v1/persistentvolumeclaims",
             "/api/v1/persistentvolumes"]

    def watch(path: str) -> None:
        while True:
            try:
                rv = api.get(path + "?limit=1")["metadata"]["resourceVersion"]
                resp = api.request("GET", f"{path}?watch=1&resourceVersion={rv}&timeoutSeconds=300",
                                   timeout=330, stream=True)
                dirty.set()
                for line in resp:
                    if line.strip():
                        dirty.set()
            except Exception as e:  # noqa: BLE001 - reconnect on any failure
                log(f"watch {path}: {e}")
                time.sleep(1)

    for k in kinds:
        threading.Thread(target=watch, args=(k,), daemon=True).start()
    ensure_storage_class(api)
    while True:
        dirty.wait(10)
        dirty.clear()
        time.sleep(0.05)  # coalesce a burst of events into one pass
        try:
            lists = {k: api.get(k)["items"] for k in kinds}
            if write_hosts(lay, dns_records(lists["/api/v1/pods"], lists["/api/v1/services"],
                                            lists["/api/v1/endpoints"])):
                log(f"dns: {sum(1 for _ in open(lay.hosts))} records")
            provision(api, lay, lists["/api/v1/persistentvolumeclaims"], lists["/api/v1/persistentvolumes"])
        except Exception as e:  # noqa: BLE001 - the next event or tick retries
            log(f"reconcile: {e}")
            dirty.set()
            time.sleep(1)


def ensure_storage_class(api: Api) -> None:
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
          "metadata": {"name": "standard",
                       "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
          "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}
    try:
        api.request("POST", "/apis/storage.k8s.io/v1/storageclasses", sc)
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise


# ---------------------------------------------------------------------------------------------------
# Commands


def node_ready(api: Api) -> bool:
    node = api.get(f"/api/v1/nodes/{NODE_NAME}")
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


def default_drakkar_bin() -> str:
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    return os.path.join(target, "release")


def cmd_up(args) -> None:
    if os.geteuid() != 0:
        raise SystemExit("kube: needs root (a kubelet, containerd, iptables)")
    for tool in ("containerd", "runc", "ctr", "dnsmasq", "iptables", "openssl"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"kube: {tool} is missing: apt-get install containerd runc "
                             "containernetworking-plugins dnsmasq-base iptables openssl")
    bin_dir = args.bin or os.environ.get("DRAKKAR_K8S_BIN") or run(
        [os.path.join(HERE, "build-kubernetes.sh")]).stdout.strip()
    ver = version_of(bin_dir)
    lay = Layout(args.dir)
    for d in (lay.dir, lay.pids, lay.logs, lay.volumes):
        os.makedirs(d, exist_ok=True)
    t0 = time.time()
    record_host_state(lay)
    ports_file = os.path.join(lay.dir, "ports.json")
    if os.path.exists(ports_file):
        ports = json.load(open(ports_file))
    else:
        ports = {"etcd_client": free_port(), "etcd_peer": free_port()}
        json.dump(ports, open(ports_file, "w"))
    pki(lay)
    kubeconfig(lay)
    network(lay)
    start_etcd(lay, ports)
    start_apiserver(lay, bin_dir, ver, ports)
    start_controller_manager(lay, bin_dir, ver)
    start_scheduler(lay, bin_dir, ver)
    start_containerd(lay)
    if not args.no_images:
        images(lay, bin_dir, args.drakkar_bin or default_drakkar_bin())
    start_dns(lay)
    start_controllers(lay)
    start_kubelet(lay, bin_dir, ver)
    start_kube_proxy(lay, bin_dir)
    api = Api(lay)
    wait_for(f"node {NODE_NAME} Ready", lambda: node_ready(api), 120, lay, "kubelet")
    wait_for("the default ServiceAccount", lambda: api.get("/api/v1/namespaces/default/serviceaccounts/default"),
             60)
    log(f"up in {time.time() - t0:.1f}s (Kubernetes {ver[0]}.{ver[1]}, {bin_dir})")
    print(f"export KUBECONFIG={lay.kubeconfig}")


def cmd_images(args) -> None:
    bin_dir = args.bin or os.environ.get("DRAKKAR_K8S_BIN") or run(
        [os.path.join(HERE, "build-kubernetes.sh")]).stdout.strip()
    images(Layout(args.dir), bin_dir, args.drakkar_bin or default_drakkar_bin())


def kill(pid: int, grace: float) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + grace
    while time.time() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cmd_down(args) -> None:
    lay = Layout(args.dir)
    if not os.path.isdir(lay.dir):
        log(f"nothing at {lay.dir}")
        return
    # The kubelet first, so it restarts nothing; then every container it ran, through containerd.
    for name in ("controllers", "kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager"):
        pid = read_pid(lay, name)
        if pid:
            kill(pid, 5)
    if read_pid(lay, "containerd"):
        tasks = ctr(lay, "tasks", "ls", "-q", check=False).stdout.split()
        for t in tasks:
            ctr(lay, "tasks", "kill", "-s", "SIGKILL", t, check=False)
        deadline = time.time() + 10
        for t in tasks:
            while time.time() < deadline and ctr(lay, "tasks", "delete", t, check=False).returncode != 0:
                time.sleep(0.2)
        for c in ctr(lay, "containers", "ls", "-q", check=False).stdout.split():
            ctr(lay, "containers", "delete", c, check=False)
    for name in reversed(ORDER):
        pid = read_pid(lay, name)
        if pid:
            kill(pid, 10)
    # kube-proxy's own cleanup, then the saved rule sets (the kubelet's, kube-proxy's and portmap's
    # rules go with them).
    for cmd in ("iptables", "ip6tables"):
        saved = os.path.join(lay.dir, f"{cmd}-save.before")
        if os.path.exists(saved):
            with open(saved) as f:
                run([f"{cmd}-restore"], check=False, input=f.read())
    state = json.load(open(lay.state)) if os.path.exists(lay.state) else {}
    for key, value in state.get("sysctls", {}).items():
        try:
            with open(sysctl_path(key), "w") as f:
                f.write(value)
        except OSError:
            pass
    # Mounts the kubelet and containerd left (Secret tmpfs, overlay roots, pod network namespaces).
    mounts = [line.split()[1] for line in open("/proc/self/mounts")]
    for m in sorted((m for m in mounts if m.startswith(lay.dir + "/")), key=len, reverse=True):
        run(["umount", "-l", m], check=False)
    before = set(state.get("netns_before", []))
    if os.path.isdir("/var/run/netns"):
        for ns in os.listdir("/var/run/netns"):
            if ns.startswith("cni-") and ns not in before:
                run(["ip", "netns", "delete", ns], check=False)
    run(["ip", "link", "delete", BRIDGE], check=False)
    if state and not state.get("var_log_pods_existed"):
        shutil.rmtree("/var/log/pods", ignore_errors=True)
        shutil.rmtree("/var/log/containers", ignore_errors=True)
    if state and not state.get("var_lib_kubelet_existed"):
        shutil.rmtree("/var/lib/kubelet", ignore_errors=True)
    if not args.keep:
        shutil.rmtree(lay.dir, ignore_errors=True)
    log("down")


def cmd_status(args) -> None:
    lay = Layout(args.dir)
    for name in ORDER:
        pid = read_pid(lay, name)
        print(f"{name:24} {'running pid ' + str(pid) if pid else 'stopped'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "images", "controllers"):
        p = sub.add_parser(name)
        p.add_argument("--dir", default=os.environ.get("DRAKKAR_KUBE_DIR", DEFAULT_DIR))
        if name in ("up", "images"):
            p.add_argument("--bin", help="Kubernetes binaries (default: DRAKKAR_K8S_BIN, else the build)")
            p.add_argument("--drakkar-bin", help="directory holding drakkar and drakkar-operator "
                           "(default: target/release)")
        if name == "up":
            p.add_argument("--no-images", action="store_true", help="do not build and import images")
        if name == "down":
            p.add_argument("--keep", action="store_true", help="keep the directory (logs)")
    args = ap.parse_args()
    if args.cmd == "up":
        cmd_up(args)
    elif args.cmd == "down":
        cmd_down(args)
    elif args.cmd == "status":
        cmd_status(args)
    elif args.cmd == "images":
        cmd_images(args)
    else:
        controllers(Layout(args.dir))


if __name__ == "__main__":
    main()
