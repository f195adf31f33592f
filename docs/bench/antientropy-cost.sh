#!/usr/bin/env bash
# What keeping Merkle trees costs the write path, measured in one run.
#
# Starts two durable single-node chorus processes on loopback, one with
# antientropy.mode = "state" (every write updates its range's Merkle tree)
# and one with "off", and measures PUT and GET against each in turn,
# ROUNDS times (default 3), so that the machine's noise hits both alike.
# Prints every run and the median ratio state / off per operation, then
# stops the nodes it started.
#
#   bash docs/bench/antientropy-cost.sh [duration per run, default 10s] [concurrency, default 64]
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-10s}
concurrency=${2:-64}
rounds=${ROUNDS:-3}
cargo build --release --quiet
bin=target/release/chorus
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT

declare -A url
for mode in state off; do
  cat > "$work/$mode.toml" <<TOML
[cluster]
name = "bench-$mode"
n = 1
r = 1
w = 1
[antientropy]
mode = "$mode"
[[nodes]]
id = "n1"
listen = "127.0.0.1:0"
data_dir = "$work/$mode"
TOML
  "$bin" serve --config "$work/$mode.toml" --node n1 > "$work/$mode.out" 2> "$work/$mode.err" &
  pids+=($!)
  for _ in $(seq 100); do grep -q serving "$work/$mode.out" 2>/dev/null && break; sleep 0.1; done
  url[$mode]=$(awk '/serving on/ {print $NF}' "$work/$mode.out")
done

common=(--duration "$duration" --concurrency "$concurrency" --value-size 100 --records 10000
        --workload put,c --distribution uniform)
for round in $(seq "$rounds"); do
  for mode in state off; do
    "$bin" bench --url "${url[$mode]}" --label "$mode" "${common[@]}" \
      --out "$work/$mode-$round.json" > /dev/null 2>&1
  done
done
RATIOS="state/off" python3 docs/bench/report.py "$work" "$rounds" state off
