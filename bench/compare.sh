#!/usr/bin/env bash
# Drakkar vs etcd on this machine, with the same load generator (`drakkar bench`), the same durability
# (fsync on both), TLS on both, three members each on 127.0.0.1 with free ports; the workloads run
# alternately (drakkar, etcd, drakkar, etcd, ...). Then the embedded driver (3 replicas, 48 groups) and
# 10,000 idle groups. Writes the table with ratios into docs/performance.md (between the markers).
#
#   bench/compare.sh [--rounds N] [--secs S] [--warmup S] [--groups G] [--out FILE] [--no-build]
#
# Needs: cargo, python3; etcd (installs Debian's etcd-server with apt-get when missing and run as root).
# Environment: DRAKKAR_BIN (use this binary instead of building target/release/drakkar).
set -euo pipefail

ROUNDS=2 SECS=10 WARMUP=2 NGROUPS=12 BUILD=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/docs/performance.md"
CMDLINE="bench/compare.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --groups) NGROUPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

log() { echo "compare.sh: $*" >&2; }

if ! command -v etcd >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    log "installing etcd-server (Debian)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server >&2 ||
      { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server >&2; }
    # The package starts a single-member etcd on 2379/2380; ours uses other ports, stop it anyway.
    (systemctl stop etcd || service etcd stop || true) >/dev/null 2>&1
  else
    log "etcd is not installed and this is not root: apt-get install etcd-server"; exit 1
  fi
fi

if [ -n "${DRAKKAR_BIN:-}" ]; then
  BIN=$DRAKKAR_BIN
else
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/drakkar"
  if [ "$BUILD" = 1 ]; then
    log "building drakkar (release)"
    (cd "$ROOT" && cargo build --release -q -p drakkar-cli --bin drakkar)
  fi
fi
[ -x "$BIN" ] || { log "no drakkar binary at $BIN"; exit 1; }

W=$(mktemp -d /tmp/drakkar-compare.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT

# Nine free loopback ports: 3 drakkar, 3 etcd client, 3 etcd peer.
read -r -a P <<<"$(python3 -c '
import socket
s=[socket.socket() for _ in range(9)]
for x in s: x.bind(("127.0.0.1",0))
print(" ".join(str(x.getsockname()[1]) for x in s))
for x in s: x.close()')"

"$BIN" cert dev --out "$W/certs" --nodes 3 >/dev/null
C=$W/certs

# etcd: 3 members, TLS for clients and peers, default durability (fdatasync of the WAL per batch).
CLUSTER="e1=https://127.0.0.1:${P[6]},e2=https://127.0.0.1:${P[7]},e3=https://127.0.0.1:${P[8]}"
ETCD_EPS="127.0.0.1:${P[3]},127.0.0.1:${P[4]},127.0.0.1:${P[5]}"
for i in 1 2 3; do
  cp=${P[$((i + 2))]} pp=${P[$((i + 5))]}
  etcd --name "e$i" --data-dir "$W/etcd$i" \
    --listen-client-urls "https://127.0.0.1:$cp" --advertise-client-urls "https://127.0.0.1:$cp" \
    --listen-peer-urls "https://127.0.0.1:$pp" --initial-advertise-peer-urls "https://127.0.0.1:$pp" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token drakkar-compare \
    --cert-file "$C/node-$i.pem" --key-file "$C/node-$i-key.pem" --trusted-ca-file "$C/ca.pem" \
    --peer-cert-file "$C/node-$i.pem" --peer-key-file "$C/node-$i-key.pem" \
    --peer-trusted-ca-file "$C/ca.pem" --peer-client-cert-auth \
    --logger zap --log-level error >"$W/etcd$i.log" 2>&1 &
  PIDS+=($!) ETCD_PIDS+="${ETCD_PIDS:+,}$!"
done

# drakkar: 3 nodes, TLS, NGROUPS KV groups (in-memory KV state machine; every Raft round fsynced).
DK_EPS="127.0.0.1:${P[0]},127.0.0.1:${P[1]},127.0.0.1:${P[2]}"
for i in 1 2 3; do
  DRAKKAR_LOG=warn "$BIN" serve --data-dir "$W/drakkar$i" --listen "127.0.0.1:${P[$((i - 1))]}" \
    --peers "$DK_EPS" --kv-groups "$NGROUPS" \
    --tls-ca "$C/ca.pem" --tls-cert "$C/node-$i.pem" --tls-key "$C/node-$i-key.pem" >"$W/drakkar$i.log" 2>&1 &
  PIDS+=($!) DK_PIDS+="${DK_PIDS:+,}$!"
done

JSON=$W/results.jsonl
COMMON=(--secs "$SECS" --warmup "$WARMUP" --json "$JSON" --keys 10000 --value-size 16 --connections 4)
# Mutual TLS on both: etcd with --trusted-ca-file requires client certificates.
# The admin role: --spread-leaders transfers leaderships.
ID=(--ca "$C/ca.pem" --cert "$C/admin.pem" --key "$C/admin-key.pem")
A() { "$BIN" bench grpc --endpoints "$DK_EPS" "${ID[@]}" --spread-leaders --label drakkar \
        --watch-pid "$DK_PIDS" "${COMMON[@]}" "$@"; }
B() { "$BIN" bench etcd --endpoints "$ETCD_EPS" "${ID[@]}" --label etcd \
        --watch-pid "$ETCD_PIDS" "${COMMON[@]}" "$@"; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$ROUNDS"); do
  log "round $r of $ROUNDS"
  A --workload put --in-flight 1 --groups 1
  B --workload put --in-flight 1
  A --workload put --in-flight 256 --groups 1,"$NGROUPS"
  B --workload put --in-flight 256
  A --workload get --in-flight 256 --groups "$NGROUPS"
  B --workload get --in-flight 256
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done

log "embedded: 3 replicas, 48 groups"
DRAKKAR_LOG=warn "$BIN" bench embedded --dir "$W" --groups 48 --in-flight 256,2048 \
  --secs "$SECS" --warmup "$WARMUP" --json "$W/embedded.jsonl"
log "10,000 idle groups"
DRAKKAR_LOG=warn "$BIN" bench idle --dir "$W" --groups 10000 --secs "$SECS" --json "$W/idle.jsonl"

MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), \
$(free -g | awk '/Mem:/{print $2}') GB RAM, $(uname -sr), /tmp on $(df -T /tmp | awk 'NR==2{print $2" ("$1")"}')"
VERSIONS="drakkar $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'), \
$(etcd --version | head -1)"

python3 - "$JSON" "$W/embedded.jsonl" "$W/idle.jsonl" "$OUT" <<EOF
import json, statistics, sys, datetime
runs, emb, idle, out = sys.argv[1:5]
rows = [json.loads(l) for l in open(runs)]
def pick(label, workload, inflight, groups=None):
    return [r for r in rows if r["driver"] == label and r["workload"] == workload
            and r["in_flight"] == inflight and (groups is None or r["groups"] == groups)]
def med(rs, k):
    return statistics.median(r[k] for r in rs) if rs else float("nan")
def ms(us): return f"{us/1000:.2f}"
lines = []
lines.append("| workload | in flight | drakkar groups | drakkar ops/s | etcd ops/s | ratio | drakkar p50 / p99 ms | etcd p50 / p99 ms | p50 ratio | p99 ratio | server CPU drakkar / etcd (% of a core) |")
lines.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
for wl, inflight, groups in [("put", 1, 1), ("put", 256, 1), ("put", 256, $NGROUPS), ("get-linearizable", 256, $NGROUPS)]:
    a, b = pick("drakkar", wl, inflight, groups), pick("etcd", wl, inflight)
    if not a or not b: continue
    ao, bo = med(a, "ops_per_sec"), med(b, "ops_per_sec")
    a50, a99, b50, b99 = med(a, "p50_us"), med(a, "p99_us"), med(b, "p50_us"), med(b, "p99_us")
    ac = med(a, "server_cpu_percent"); bc = med(b, "server_cpu_percent")
    spread = lambda rs: "-".join(f"{r['ops_per_sec']:,.0f}" for r in rs)
    lines.append(f"| {wl} | {inflight} | {groups} | {ao:,.0f} ({spread(a)}) | {bo:,.0f} ({spread(b)}) | **{ao/bo:.2f}x** | "
                 f"{ms(a50)} / {ms(a99)} | {ms(b50)} / {ms(b99)} | {a50/b50:.2f} | {a99/b99:.2f} | {ac:.0f} / {bc:.0f} |")
errs = sum(r["errors"] for r in rows)
e = [json.loads(l) for l in open(emb)]
i = [json.loads(l) for l in open(idle)]
sec = []
sec.append("<!-- compare.sh begin -->")
sec.append(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {'''$MACHINE'''}; {'''$VERSIONS'''}. "
           f"Load average before / after the A-B runs: {'''$LOAD_BEFORE'''} / {'''$LOAD_AFTER'''}.")
sec.append("")
sec.append("\`\`\`")
sec.append("$CMDLINE")
sec.append("\`\`\`")
sec.append("")
sec.append(f"$ROUNDS rounds; each cell is the median of the rounds (every round's ops/s in brackets); "
           f"$SECS s measured after $WARMUP s of warm-up per run; 16 B values, 10,000 keys, 4 HTTP/2 "
           f"connections per node; {errs} errors in all runs.")
sec.append("")
sec += lines
sec.append("")
sec.append("Embedded (\`drakkar bench embedded --groups 48\`: 3 NodeHosts in one process, counter state machine, fsync on):")
sec.append("")
sec.append("| in flight | writes/s | p50 ms | p99 ms | p999 ms | CPU (% of a core) |")
sec.append("|--:|--:|--:|--:|--:|--:|")
for r in e:
    sec.append(f"| {r['in_flight']} | {r['ops_per_sec']:,.0f} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | {ms(r['p999_us'])} | {r['cpu_percent']:.0f} |")
sec.append("")
for r in i:
    sec.append(f"Idle (\`drakkar bench idle --groups {r['groups']}\`): RSS {r['rss_mib']:.0f} MiB "
               f"({r['rss_before_mib']:.0f} MiB before the groups), CPU {r['cpu_percent']:.1f} % of one core over {r['seconds']:.0f} s.")
sec.append("<!-- compare.sh end -->")
text = open(out).read() if __import__("os").path.exists(out) else "# Performance\n"
b, e_ = "<!-- compare.sh begin -->", "<!-- compare.sh end -->"
block = "\n".join(sec)
if b in text and e_ in text:
    text = text[:text.index(b)] + block + text[text.index(e_) + len(e_):]
else:
    text = text.rstrip("\n") + "\n\n## Drakkar vs etcd (bench/compare.sh)\n\n" + block + "\n"
open(out, "w").write(text)
print(block)
EOF
log "results in $OUT"
