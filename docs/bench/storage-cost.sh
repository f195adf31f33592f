#!/usr/bin/env bash
# What the store costs a request: one cluster of NODES nodes (3: N = 3,
# R = W = 2; 1: N = 1; signed peers, the shipped thread defaults) per
# storage config, each
# measured with the same `chorus bench` client, ROUNDS runs of the
# workload, server CPU per request from `--server-pid`:
#   always    the shipped config: fjall, an fsync per group commit
#   interval  fjall, acknowledged once written, fsynced every 100 ms
#   memory    the in-memory engine (tests and simulation only), no disk
# The differences bound what the fsync and the engine cost; what is left
# under `memory` is everything else a request does (HTTP, coordinator,
# peer calls, merges, Merkle trees), plus the memory engine's own copies.
#
#   bash docs/bench/storage-cost.sh [duration 8s]
#   (NODES=3 ROUNDS=3 RECORDS=100000 WORKLOAD=put VARIANTS="always interval memory";
#   BIN=path measures that binary instead of building this tree)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-8s}
rounds=${ROUNDS:-3}
records=${RECORDS:-100000}
workload=${WORKLOAD:-put}
nodes=${NODES:-3}
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; fi
bin=${BIN:-target/release/chorus}
. docs/bench/lib.sh
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT

printf 'config\tround\tops/s\tserver CPU µs/request\n'
for variant in ${VARIANTS:-always interval memory}; do
  config="$work/$variant.toml"
  chorus_config "$config" "cost-$variant" 7900 "$nodes" "$nodes"
  case $variant in
    always) ;;
    interval) sed -i 's/^sync = "always"/sync = "interval"/' "$config" ;;
    memory) sed -i 's/^sync = "always"/engine = "memory"\nsync = "interval"/' "$config" ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
  pids=()
  addresses=()
  for i in $(seq "$nodes"); do
    "$bin" serve --config "$config" --node "n$i" > /dev/null 2> "$work/$variant-n$i.log" &
    pids+=($!)
    addresses+=("http://127.0.0.1:$((7899 + i))")
  done
  urls=$(IFS=,; echo "${addresses[*]}")
  wait_healthy "${addresses[@]}"
  servers=$(IFS=,; echo "${pids[*]}")
  "$bin" bench --url "$urls" --workload put --records "$records" --duration 1s \
    --concurrency 64 --out "$work/load.json" > /dev/null 2>> "$work/bench.log"
  for round in $(seq "$rounds"); do
    "$bin" bench --url "$urls" --workload "$workload" --no-load --records "$records" \
      --duration "$duration" --concurrency 64 --value-size 100 --server-pid "$servers" \
      --out "$work/run.json" > /dev/null 2>> "$work/bench.log"
    python3 - "$work/run.json" "$variant" "$round" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))["runs"][0]
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{run['throughput_per_sec']:,.0f}\t"
      f"{run['server_cpu']['us_per_request']:.1f}")
PY
  done
  for p in "${pids[@]}"; do kill "$p"; done
  wait 2>/dev/null || true
done
