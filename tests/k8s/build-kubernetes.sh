#!/usr/bin/env bash
# Builds the Kubernetes 1.20.2 binaries (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy, kubectl) from Debian's `kubernetes` source package, offline, into a cache directory, once;
# later runs print the cached bin dir at once.
#
#   tests/k8s/build-kubernetes.sh        # prints the directory holding the binaries
#
# Cache: $DRAKKAR_K8S_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/drakkar-k8s. Needs root for apt-get
# (Debian's golang-go 1.19, etcd-server and build tools). About 10 minutes of build on 2 cores.
set -euo pipefail

CACHE="${DRAKKAR_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/drakkar-k8s}"
BIN="$CACHE/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
missing=()
for b in "${BINARIES[@]}"; do
  [[ -x "$BIN/$b" ]] || missing+=("$b")
done
if ((${#missing[@]} == 0)) && [[ -x "$BIN/pause" ]]; then
  echo "$BIN"
  exit 0
fi
log() { echo "build-kubernetes: $*" >&2; }

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

what=()
for b in "${missing[@]}"; do what+=("cmd/$b"); done
log "building ${missing[*]} (several minutes)"
if ((${#what[@]})); then
  (cd tree && GOPROXY=off KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean \
    make WHAT="${what[*]}" >&2)
fi
mkdir -p "$BIN"
for b in "${missing[@]}"; do cp "tree/_output/bin/$b" "$BIN"/; done
# The pause container: the tree's own pause.c, static, for the sandbox image tests/k8s builds.
if [[ ! -x "$BIN/pause" ]]; then
  gcc -Os -static -o "$BIN/pause" tree/build/pause/linux/pause.c
fi
rm -rf tree
echo "$BIN"
