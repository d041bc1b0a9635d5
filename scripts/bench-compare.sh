#!/usr/bin/env bash
# veritrace against etcd on this machine, in one run (docs/performance.md):
#
#  1. a 3-member etcd cluster on 127.0.0.1 (Debian package etcd-server, installed with
#     apt-get when missing; data under a temp dir), measured with `veritrace bench-etcd`:
#     puts of 256-byte values through etcd's JSON gateway, each client one put at a time;
#  2. a 3-validator veritrace devnet (every block a synced Raft log append on every node, whose
#     ledger write the synced log replays after a crash; every validator verifying every
#     record's signature when it applies the block), measured with `veritrace bench`:
#     signed inspection reports and ship/receive pairs, one per request, each waited for
#     until committed;
#  3. one table: clients, etcd puts/s, veritrace records/s, ratio, both p99 latencies; and
#     the commit latency at half of veritrace's peak rate, offered open-loop (`--rate`);
#  4. on the ledger those runs left, 16 clients each: records in batches of 100, range
#     issuance (codes/s), trace queries and bundles verified offline (p50/p99), then the
#     catch-up of node-3 started again with no data (bounded at 120 s), and the peak
#     resident memory (VmHWM) of every etcd and node process.
# Everything started is stopped and removed at the end, also on failure or Ctrl-C.
#
# Usage: scripts/bench-compare.sh [--duration SECS] [--clients "1 16 100 1000"] [--batch K]
#                                 [--profile release|dev]
# Builds the workspace's binaries with cargo first, in the release profile by default (etcd
# is Debian's release build; on a machine that has only built the tests, the first release
# build compiles RocksDB again, about 20 minutes on 2 cores); `--profile dev` measures the
# binaries the tests use. CARGO_TARGET_DIR is honoured.
set -euo pipefail

DURATION=10
CLIENTS="1 16 100 1000"
BATCH=1
PROFILE=release
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --batch) BATCH="$2"; shift 2 ;;
        --profile) PROFILE="$2"; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

# Cargo's flag for the profile, and the directory its binaries land in.
case "$PROFILE" in
    release) PROFILE_FLAG=(--release); PROFILE_DIR=release ;;
    dev) PROFILE_FLAG=(); PROFILE_DIR=debug ;;
    *) echo "--profile must be release or dev, not: $PROFILE" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The same set-up as the tests and the demo: packages, and the shared target directory
# (building into ./target instead would compile RocksDB again).
source "$ROOT/scripts/setup.sh"
TARGET=$CARGO_TARGET_DIR
# The devnet starts the veritrace-node beside this veritrace (the same profile).
VT="$TARGET/$PROFILE_DIR/veritrace"

echo "== building (cargo build --workspace --bins ${PROFILE_FLAG[*]})"
(cd "$ROOT" && cargo build --workspace --bins --locked "${PROFILE_FLAG[@]}")

if ! command -v etcd >/dev/null 2>&1; then
    echo "== installing etcd-server (apt-get)"
    apt-cache policy etcd-server | sed -n '1,3p'
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get install -y --no-install-recommends etcd-server >/dev/null
fi
ETCD=$(command -v etcd)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/veritrace-bench-compare.XXXXXX")
ETCD_PIDS=()
DEVNET="$WORK/devnet"
cleanup() {
    set +e
    for pid in "${ETCD_PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${ETCD_PIDS[@]}"; do
        wait "$pid" 2>/dev/null
    done
    if [ -f "$DEVNET/devnet.json" ]; then
        "$VT" devnet down --dir "$DEVNET" --purge >/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Six free TCP ports on 127.0.0.1 (asked of the kernel, then released).
read -r -a PORTS <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')"

echo "== starting a 3-member etcd cluster ($("$ETCD" --version | head -1))"
CLUSTER=""
for i in 0 1 2; do
    CLUSTER+="${CLUSTER:+,}e$i=http://127.0.0.1:${PORTS[$((3 + i))]}"
done
ENDPOINTS=""
for i in 0 1 2; do
    cp=${PORTS[$i]}
    pp=${PORTS[$((3 + i))]}
    ENDPOINTS+="${ENDPOINTS:+,}http://127.0.0.1:$cp"
    "$ETCD" --name "e$i" --data-dir "$WORK/etcd-$i" \
        --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
        --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
        --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token "bench-$$" \
        --quota-backend-bytes 8589934592 >"$WORK/etcd-$i.log" 2>&1 &
    ETCD_PIDS+=($!)
done
for i in 0 1 2; do
    for _ in $(seq 1 100); do
        if curl -sf "http://127.0.0.1:${PORTS[$i]}/health" | grep -q '"health":"true"'; then
            break
        fi
        sleep 0.2
    done
    curl -sf "http://127.0.0.1:${PORTS[$i]}/health" | grep -q '"health":"true"' ||
        { echo "etcd member e$i is not healthy:" >&2; tail -20 "$WORK/etcd-$i.log" >&2; exit 1; }
done

declare -A E_RATE E_P99 E_ERR V_RATE V_P99 V_ERR
echo "== etcd: warm-up (4 clients, 2 s, not reported)"
"$VT" --json bench-etcd --endpoints "$ENDPOINTS" --clients 4 --duration 2 >/dev/null || true
for n in $CLIENTS; do
    echo "== etcd: $n clients, $DURATION s"
    line=$("$VT" --json bench-etcd --endpoints "$ENDPOINTS" --clients "$n" --duration "$DURATION" | tail -1 || true)
    echo "$line"
    E_RATE[$n]=$(jq -r '.puts_per_s // "error"' <<<"$line")
    E_P99[$n]=$(jq -r '.latency_ms.p99 // "-"' <<<"$line")
    E_ERR[$n]=$(jq -r '.errors // "-"' <<<"$line")
done
ETCD_HWM=()
for i in 0 1 2; do
    ETCD_HWM+=("e$i $(awk '/VmHWM/ {print $2 " " $3}' "/proc/${ETCD_PIDS[$i]}/status")")
done
for pid in "${ETCD_PIDS[@]}"; do kill "$pid"; done
for pid in "${ETCD_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
ETCD_PIDS=()

echo "== starting a 3-validator veritrace devnet"
"$VT" devnet up --dir "$DEVNET" --validators 3 --observers 0 --net loopback >/dev/null
echo "== veritrace: warm-up (4 clients, 2 s, not reported)"
"$VT" --json bench --dir "$DEVNET" --clients 4 --duration 2 >/dev/null || true
for n in $CLIENTS; do
    echo "== veritrace: $n clients, batch $BATCH, $DURATION s"
    line=$("$VT" --json bench --dir "$DEVNET" --clients "$n" --duration "$DURATION" --batch "$BATCH" | tail -1 || true)
    echo "$line"
    V_RATE[$n]=$(jq -r '.records_per_s // "error"' <<<"$line")
    V_P99[$n]=$(jq -r '.latency_ms.p99 // "-"' <<<"$line")
    V_ERR[$n]=$(jq -r '.errors // "-"' <<<"$line")
done

# Commit latency at half of the peak: the best rate above, halved, offered open-loop (evenly
# spaced, latency counted from when each request was due) with as many clients as the
# largest run, so that the pace is kept.
PEAK=$(printf '%s\n' "${V_RATE[@]}" | awk '$1 + 0 == $1 && $1 > m { m = $1 } END { print m + 0 }')
HALF_CLIENTS=$(printf '%s\n' $CLIENTS | sort -n | tail -1)
HALF_RATE=$(awk -v p="$PEAK" 'BEGIN { printf "%.0f", p / 2 }')
HALF=""
if [ "$HALF_RATE" -gt 0 ]; then
    echo "== veritrace: half of the peak, $HALF_RATE records/s offered by $HALF_CLIENTS clients, $DURATION s"
    line=$("$VT" --json bench --dir "$DEVNET" --clients "$HALF_CLIENTS" --duration "$DURATION" --batch "$BATCH" \
        --rate "$HALF_RATE" --timeline 0.25 | tail -1 || true)
    echo "$line"
    HALF=$(jq -r '"\(.records_per_s | floor) records/s committed of \(.offered_per_s | floor) offered: p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, errors \(.errors); 0.25-s slices with p99 over 50 ms: \([.timeline.slices[] | select((.p99_ms // 0) > 50)] | length) of \(.timeline.slices | length)"' <<<"$line" || echo "error")
fi

# Lower-priority figures, on the ledger the runs above left (its size is printed).
LOG_SIZE=$("$VT" --json devnet status --dir "$DEVNET" | jq -r '[.nodes[].log_size] | max')
EXTRA=()
extra() { # LABEL ARGS...: one more `veritrace bench` run, 16 clients, its JSON line kept
    local label="$1"; shift
    echo "== veritrace: $label"
    local line
    line=$("$VT" --json bench --dir "$DEVNET" --clients 16 --duration "$DURATION" "$@" | tail -1 || true)
    echo "$line"
    EXTRA+=("$(jq -r --arg l "$label" '"| \($l) | \(.records_per_s // .traces_per_s // .bundles_per_s // "error" | if type == "number" then floor else . end)\(if .codes_per_s then " (\(.codes_per_s | floor) codes/s)" else "" end) | \(.latency_ms.p50) | \(.latency_ms.p99) | \(.errors) |"' <<<"$line")")
}
extra "records, --batch 100" --batch 100
extra "range issuance (6,000 codes per record)" --workload issue
extra "trace query (first page)" --workload trace
extra "bundle fetched and verified offline" --workload bundle

# A fresh node catching up: node-3 killed, its data deleted, started again; timed until its
# height reaches the leader's at the restart.
echo "== veritrace: catch-up of a wiped node-3"
"$VT" devnet kill --dir "$DEVNET" node-3 >/dev/null
rm -rf "$DEVNET/nodes/node-3/data"
TARGET_HEIGHT=$("$VT" --json devnet status --dir "$DEVNET" | jq -r '[.nodes[].height] | max')
T0=$(date +%s.%N)
"$VT" devnet up --dir "$DEVNET" >/dev/null
CATCHUP_TIMEOUT_S=120
CATCHUP=""
while [ -z "$CATCHUP" ]; do
    n3=$("$VT" --json devnet status --dir "$DEVNET" | jq -c '.nodes[] | select(.node_id == "node-3")')
    h=$(jq -r '.height // 0' <<<"$n3")
    now=$(date +%s.%N)
    if [ "${h:-0}" -ge "$TARGET_HEIGHT" ]; then
        CATCHUP=$(awk -v a="$T0" -v b="$now" 'BEGIN { printf "%.2f s", b - a }')
    elif awk -v a="$T0" -v b="$now" -v t="$CATCHUP_TIMEOUT_S" 'BEGIN { exit !(b - a > t) }'; then
        CATCHUP="not within $CATCHUP_TIMEOUT_S s: node-3 at height $h, Raft $(jq -r '.raft_role' <<<"$n3") in term $(jq -r '.term' <<<"$n3")"
    else
        sleep 0.2
    fi
done
SNAPSHOT_LINES=$(grep -ci "snapshot" "$DEVNET/nodes/node-3/node.log" || true)
echo "catch-up of node-3 to height $TARGET_HEIGHT: $CATCHUP (lines of node-3's log naming a snapshot: $SNAPSHOT_LINES)"

NODE_HWM=()
while read -r node pid; do
    NODE_HWM+=("$node $(awk '/VmHWM/ {print $2 " " $3}' "/proc/$pid/status")")
done < <("$VT" --json devnet status --dir "$DEVNET" | jq -r '.nodes[] | "\(.node_id) \(.pid)"')

echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "command: scripts/bench-compare.sh --duration $DURATION --clients \"$CLIENTS\" --batch $BATCH --profile $PROFILE"
echo
echo "| clients | etcd puts/s | veritrace records/s | ratio (veritrace / etcd) | etcd p99 ms | veritrace p99 ms | errors (etcd / veritrace) |"
echo "|---:|---:|---:|---:|---:|---:|---|"
for n in $CLIENTS; do
    ratio=$(awk -v v="${V_RATE[$n]}" -v e="${E_RATE[$n]}" 'BEGIN { if (e + 0 > 0 && v + 0 == v) printf "%.2f", v / e; else print "-" }')
    printf '| %s | %.0f | %.0f | %s | %s | %s | %s / %s |\n' "$n" "${E_RATE[$n]}" "${V_RATE[$n]}" "$ratio" \
        "${E_P99[$n]}" "${V_P99[$n]}" "${E_ERR[$n]}" "${V_ERR[$n]}" 2>/dev/null ||
        echo "| $n | ${E_RATE[$n]} | ${V_RATE[$n]} | $ratio | ${E_P99[$n]} | ${V_P99[$n]} | ${E_ERR[$n]} / ${V_ERR[$n]} |"
done
echo
echo "half of the peak ($PEAK records/s), open-loop: ${HALF:-not measured}"
echo
echo "On the same ledger afterwards (log size $LOG_SIZE records), 16 clients, $DURATION s each:"
echo
echo "| measure | per second | p50 ms | p99 ms | errors |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${EXTRA[@]}"
echo
echo "catch-up of a wiped node-3 (started again with no data) to height $TARGET_HEIGHT: $CATCHUP; lines of its log naming a snapshot: $SNAPSHOT_LINES"
echo "peak resident memory (VmHWM): etcd ${ETCD_HWM[*]}; veritrace ${NODE_HWM[*]}" | sed 's/ kB/ kB,/g; s/,;/;/; s/,$//'
