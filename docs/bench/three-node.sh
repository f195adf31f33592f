#!/usr/bin/env bash
# A three-node chorus cluster against the null server and a three-member
# etcd cluster, measured in one run.
#
# Builds the release binary, starts `chorus dev` (three durable nodes in one
# process, N = 3, R = W = 2) and, when Debian's etcd-server is installed, a
# three-member etcd cluster (each member fsyncs its Raft log), all on
# loopback with data in a temp dir. Then it measures PUT and GET with the
# same client against the null server, chorus (node n1) and etcd (member
# e1, through its JSON gateway), alternating ROUNDS times (default 3) so the
# machine's noise hits all alike. Prints every run and the median ratios,
# then stops what it started.
#
#   bash docs/bench/three-node.sh [duration per run, default 10s] [concurrency, default 64]
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-10s}
concurrency=${2:-64}
rounds=${ROUNDS:-3}
base=${BASE_PORT:-7401}
etcd_base=${ETCD_BASE_PORT:-23790}
cargo build --release --quiet
bin=target/release/chorus
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT

"$bin" dev --base-port "$base" --data "$work/chorus" > "$work/dev.out" 2> "$work/dev.err" &
pids+=($!)
targets=(null chorus)
if command -v etcd > /dev/null; then
  cluster=$(for i in 1 2 3; do printf 'e%d=http://127.0.0.1:%d,' "$i" $((etcd_base + 10 + i)); done)
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/etcd$i" --log-level error \
      --listen-client-urls "http://127.0.0.1:$((etcd_base + i))" \
      --advertise-client-urls "http://127.0.0.1:$((etcd_base + i))" \
      --listen-peer-urls "http://127.0.0.1:$((etcd_base + 10 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_base + 10 + i))" \
      --initial-cluster "${cluster%,}" --initial-cluster-state new \
      > "$work/etcd$i.log" 2>&1 &
    pids+=($!)
  done
  targets+=(etcd)
else
  echo "etcd not installed (apt-get install etcd-server): measuring null and chorus only" >&2
fi
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$base/health" > /dev/null 2>&1 \
    && { [ "${targets[2]:-}" != etcd ] || curl -sf "http://127.0.0.1:$((etcd_base + 1))/health" > /dev/null 2>&1; } \
    && break
  sleep 0.2
done

common=(--duration "$duration" --concurrency "$concurrency" --value-size 100 --keys 10000)
for round in $(seq "$rounds"); do
  for op in put get; do
    for t in "${targets[@]}"; do
      case $t in
        null) args=(--target null) ;;
        chorus) args=(--url "http://127.0.0.1:$base") ;;
        etcd) args=(--target etcd --url "http://127.0.0.1:$((etcd_base + 1))") ;;
      esac
      "$bin" bench "${args[@]}" --op "$op" "${common[@]}" 2>/dev/null > "$work/$t-$op-$round.json"
    done
  done
done

python3 - "$work" "$rounds" "${targets[@]}" <<'PY'
import json, statistics, sys
work, rounds, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
load = lambda name: json.load(open(f"{work}/{name}.json"))
print("| round | target | op | req/s | p50 ms | p99 ms | p99.9 ms | errors |")
print("|---|---|---|---|---|---|---|---|")
ratios = {}
for r in range(1, rounds + 1):
    for op in ["put", "get"]:
        runs = {t: load(f"{t}-{op}-{r}") for t in targets}
        for t, s in runs.items():
            l = s["latency"]
            print(f"| {r} | {t} | {op} | {s['throughput_per_sec']:.0f} | {l['p50_us']/1000:.2f} "
                  f"| {l['p99_us']/1000:.2f} | {l['p999_us']/1000:.2f} | {s['errors']} |")
        rate = {t: s["throughput_per_sec"] for t, s in runs.items()}
        ratios.setdefault(f"chorus {op.upper()} / null", []).append(rate["chorus"] / rate["null"])
        if "etcd" in rate:
            ratios.setdefault(f"chorus {op.upper()} / etcd", []).append(rate["chorus"] / rate["etcd"])
print()
for name, rs in ratios.items():
    print(f"{name}: median {statistics.median(rs):.2f} (runs: {', '.join(f'{x:.2f}' for x in rs)})")
PY
