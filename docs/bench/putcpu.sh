#!/usr/bin/env bash
# What a change costs a PUT: server CPU per request of two builds, BIN_A
# ("old") and BIN_B ("new"), alternating ROUNDS times, each round on a
# fresh durable three-node cluster (N = 3, R = W = 2, signed peers) with
# 20,000 records, 64 workers, 15 s of workload `put`.
#
#   BIN_A=/tmp/chorus-old BIN_B=target/release/chorus bash docs/bench/putcpu.sh
#   (ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/../.."
. docs/bench/lib.sh
rounds=${ROUNDS:-3}
for round in $(seq "$rounds"); do
  for label in old new; do
    bin=$([ $label = old ] && echo "$BIN_A" || echo "$BIN_B")
    work=$(mktemp -d); pids=()
    chorus_config "$work/cluster.toml" putcpu 7700 3 3
    start_nodes "$bin" "$work/cluster.toml" 3 7700
    server_pids=$(IFS=,; echo "${pids[*]}")
    "$bin" bench --url "$urls" --workload put --records 20000 --duration 15s --concurrency 64 \
      --server-pid "$server_pids" --out "$work/put.json" > /dev/null 2>> "$work/bench.log"
    python3 - "$work/put.json" "$round" "$label" <<'PY'
import json, sys
path, rnd, label = sys.argv[1:]
run = json.load(open(path))["runs"][0]
print(f"| {rnd} | {label} | {run['throughput_per_sec']:,.0f} | {run['latency']['p99_us']/1000:.2f} | {run['server_cpu']['us_per_request']:.1f} |")
PY
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
    rm -rf "$work"
  done
done
