"""Installs or uninstalls the drakkar chart on a cluster with the real Helm v4 SDK
(pip install helm-python-sdk==0.2.2), as `helm install --wait` would.

    python tests/k8s/helm.py install KUBECONFIG [RELEASE] [NAMESPACE] [VALUES_JSON]
    python tests/k8s/helm.py uninstall KUBECONFIG [RELEASE] [NAMESPACE]

Defaults: release `drakkar`, namespace `drakkar-system` (created). Prints the release status as JSON.
Used by the real-pod tests (tests/tests/pods.rs) and by people on the harness cluster (tests/k8s/kube.py).
"""

import json
import os
import sys

import helm_python as helm

CHART = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "charts", "drakkar")


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("install", "uninstall"):
        sys.exit(__doc__)
    action, kubeconfig = sys.argv[1], sys.argv[2]
    release = sys.argv[3] if len(sys.argv) > 3 else "drakkar"
    namespace = sys.argv[4] if len(sys.argv) > 4 else "drakkar-system"
    config = helm.Config(kubeconfig_path=kubeconfig, namespace=namespace)
    if action == "install":
        values = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
        rel = config.install(
            os.path.abspath(CHART), release, values, namespace=namespace, create_namespace=True,
            wait="watcher", timeout=180,
        )
    else:
        rel = config.uninstall(release, wait="watcher", timeout=180)
    rel = rel.get("release", rel) if isinstance(rel, dict) else {}
    info = rel.get("info")
    status = info.get("status") if isinstance(info, dict) else info
    json.dump({"name": release, "namespace": namespace, "version": rel.get("version"), "status": status},
              sys.stdout)
    print()


if __name__ == "__main__":
    main()
