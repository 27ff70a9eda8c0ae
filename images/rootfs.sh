#!/usr/bin/env sh
# The one recipe for the root filesystem of Drakkar's images: used by the Dockerfile's build stage and by
# the real-pod test harness (tests/k8s/kube.py, through images/image.py), so what the tests run is what
# users build.
#
#   images/rootfs.sh BINARY OUT_DIR
#
# OUT_DIR receives /usr/local/bin/<binary name>, the shared libraries `ldd` lists for it (libc, libgcc_s,
# the loader) at their own paths, /etc/passwd and /etc/group with the user drakkar (uid/gid 65532, what
# the StatefulSet, the chart and the image config run as), name-service configuration, the CA bundle of
# the build machine (for object-store backups over TLS), and an empty /tmp (mode 1777). Nothing else: the
# containers run with a read-only root filesystem and write only to their volumes.
set -eu
bin="$1"
out="$2"
[ -x "$bin" ] || { echo "rootfs.sh: $bin is not an executable" >&2; exit 1; }
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp" "$out/var/lib/drakkar"
chmod 1777 "$out/tmp"
cp "$bin" "$out/usr/local/bin/"
chmod 0755 "$out/usr/local/bin/$(basename "$bin")"
# Every shared object the binary loads, at the path the loader looks for it.
ldd "$bin" 2>/dev/null | awk '/=> \// { print $3 } /^\t\// { print $1 }' | while read -r lib; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done
cat > "$out/etc/passwd" <<'PW'
root:x:0:0:root:/root:/usr/sbin/nologin
drakkar:x:65532:65532:drakkar:/var/lib/drakkar:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
PW
cat > "$out/etc/group" <<'GR'
root:x:0:
drakkar:x:65532:
nogroup:x:65534:
GR
printf 'hosts: files dns\n' > "$out/etc/nsswitch.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$out/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
fi
