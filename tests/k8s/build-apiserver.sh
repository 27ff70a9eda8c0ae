#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager (Kubernetes 1.20.2) from Debian's `kubernetes`
# source package, offline, into a cache directory, once; later runs print the cached bin dir at once.
#
#   tests/k8s/build-apiserver.sh        # prints the directory holding the two binaries
#
# Cache: $DRAKKAR_K8S_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/drakkar-k8s. Needs root for apt-get
# (Debian's golang-go 1.19, etcd-server and build tools). About 5 minutes of build on 2 cores.
set -euo pipefail

CACHE="${DRAKKAR_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drakkar-k8s}"
BIN="$CACHE/bin"
if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" ]]; then
  echo "$BIN"
  exit 0
fi
log() { echo "build-apiserver: $*" >&2; }

need=()
for pkg in golang-go etcd-server rsync jq make golang-github-modern-go-reflect2-dev dpkg-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  log "installing ${need[*]}"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
fi

mkdir -p "$CACHE/src" "$CACHE/apt/lists/partial" "$CACHE/apt/sources.list.d"
# A private apt configuration with deb-src entries made from the machine's own sources, so the
# machine's apt setup is left untouched.
shopt -s nullglob
src_lists=(/etc/apt/sources.list.d/*.sources)
one_line=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list)
shopt -u nullglob
rm -f "$CACHE"/apt/sources.list.d/*
if ((${#src_lists[@]})); then
  sed 's/^Types:.*/Types: deb-src/' "${src_lists[@]}" > "$CACHE/apt/sources.list.d/src.sources"
fi
for f in "${one_line[@]}"; do
  if [[ -f "$f" ]]; then
    sed -n 's/^deb \(.*\)/deb-src \1/p' "$f" >> "$CACHE/apt/sources.list.d/src.list"
  fi
done
[[ -n "$(ls -A "$CACHE/apt/sources.list.d")" ]] || { log "no apt sources to derive deb-src from"; exit 1; }
apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$CACHE/apt/sources.list.d"
          -o "Dir::State::Lists=$CACHE/apt/lists")
cd "$CACHE/src"
if ! ls kubernetes_*.dsc >/dev/null 2>&1; then
  log "fetching the kubernetes source package"
  apt-get "${apt_opts[@]}" update -q >&2
  apt-get "${apt_opts[@]}" source --download-only kubernetes >&2
fi
rm -rf tree
dpkg-source --no-check -x kubernetes_*.dsc tree >&2

# The vendored reflect2 1.0.1 crashes on Go >= 1.18 as soon as a custom object is decoded: use Debian's.
r2=tree/vendor/github.com/modern-go/reflect2
rm -f "$r2"/*.go "$r2"/*.s
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$r2"/
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$r2"/ 2>/dev/null || true

log "building (a few minutes)"
(cd tree && GOPROXY=off KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2)
mkdir -p "$BIN"
cp tree/_output/bin/kube-apiserver tree/_output/bin/kube-controller-manager "$BIN"/
rm -rf tree
echo "$BIN"
