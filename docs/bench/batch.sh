#!/usr/bin/env bash
# What a batch saves: server CPU per operation of single requests against
# the same operations sent BATCH at a time in `POST /batch`, on one
# durable three-node cluster of this build as shipped (N = 3, R = W = 2,
# signed peers), one `chorus bench` client, alternating round by round.
# Each op of a batch counts as one request (its latency is its batch's).
#
#   bash docs/bench/batch.sh [duration 8s]
#   (ROUNDS=3 RECORDS=100000 WORKLOADS=c,put BATCH=100 CONCURRENCY=64
#   BATCH_CONCURRENCY=4, the workers sending batches; STORAGE=always,
#   interval or memory as in threads.sh; BIN=path measures that binary
#   instead of building this tree)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-8s}
rounds=${ROUNDS:-3}
records=${RECORDS:-100000}
workloads=${WORKLOADS:-c,put}
batch=${BATCH:-100}
concurrency=${CONCURRENCY:-64}
batch_concurrency=${BATCH_CONCURRENCY:-4}
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; fi
bin=${BIN:-target/release/chorus}
. docs/bench/lib.sh
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
loaded_cluster "$bin" "$work" batch "$records"

printf '| round | workload | ops per request | workers | ops/s | p99 ms (per request) | server CPU µs/op |\n|---|---|---|---|---|---|---|\n'
for round in $(seq "$rounds"); do
  for w in ${workloads//,/ }; do
    for mode in single batch; do
      if [ "$mode" = single ]; then n=1; c=$concurrency; else n=$batch; c=$batch_concurrency; fi
      "$bin" bench --url "$urls" --workload "$w" --no-load --records "$records" \
        --duration "$duration" --concurrency "$c" --batch "$n" \
        --server-pid "$server_pids" --out "$work/$w-$mode-$round.json" > /dev/null 2>> "$work/bench.log"
      python3 - "$work/$w-$mode-$round.json" "$round" "$w" "$n" "$c" <<'EOF'
import json, sys
path, rnd, workload, n, c = sys.argv[1:]
run = json.load(open(path))["runs"][0]
print(f"| {rnd} | {workload} | {n} | {c} | {run['throughput_per_sec']:,.0f} | "
      f"{run['latency']['p99_us'] / 1000:.2f} | {run['server_cpu']['us_per_request']:.1f} |")
EOF
    done
  done
done
