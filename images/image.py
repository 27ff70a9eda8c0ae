"""Writes a container image as a Docker-format archive (what `docker save` writes and
`ctr images import` loads) from a root filesystem made by images/rootfs.sh and an image description
(images/node.json, images/operator.json). No registry and no Docker engine are needed.

Usage: python3 images/image.py DESCRIPTION.json BINARY TAG OUT.tar

The description's user, entrypoint, cmd and ports are the image config; the Dockerfile states the same
(operator/tests/build.rs compares them), so the images the tests run and the ones users build agree.
The archive is reproducible: fixed modification times, sorted entries, root-owned files.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def layer_tar(rootfs: str) -> bytes:
    """A tar of rootfs with deterministic metadata; /var/lib/drakkar belongs to the drakkar user."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(rootfs):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, rootfs)
            entries = ([] if rel_dir == "." else [rel_dir]) + [
                os.path.normpath(os.path.join(rel_dir, f)) for f in sorted(filenames)
            ]
            for rel in entries:
                info = tar.gettarinfo(os.path.join(rootfs, rel), arcname=rel)
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if rel == "var/lib/drakkar":
                    info.uid = info.gid = 65532
                if info.isreg():
                    with open(os.path.join(rootfs, rel), "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def build(description: dict, binary: str, tag: str, out: str) -> str:
    """Builds the archive; returns the image's config digest."""
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = os.path.join(tmp, "rootfs")
        subprocess.run([os.path.join(HERE, "rootfs.sh"), binary, rootfs], check=True)
        layer = layer_tar(rootfs)
    diff_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": description["user"],
            "Entrypoint": description["entrypoint"],
            "Cmd": description["cmd"] or None,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "ExposedPorts": {f"{p}/tcp": {} for p in description["ports"]},
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "images/rootfs.sh"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    manifest = [
        {"Config": f"{config_digest}.json", "RepoTags": [tag], "Layers": [f"{diff_id}/layer.tar"]}
    ]
    with tarfile.open(out, mode="w") as tar:
        for name, data in [
            (f"{diff_id}/layer.tar", layer),
            (f"{config_digest}.json", config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return config_digest


def main() -> None:
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    with open(sys.argv[1]) as f:
        description = json.load(f)
    digest = build(description, sys.argv[2], sys.argv[3], sys.argv[4])
    print(f"{sys.argv[3]} sha256:{digest} -> {sys.argv[4]}")


if __name__ == "__main__":
    main()
