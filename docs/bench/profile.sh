#!/usr/bin/env bash
# Where a request's time goes on a three-node chorus cluster (N = 3,
# R = W = 2, durable): a flamegraph per workload of the node that
# coordinates, and a table of CPU per request by part of the path.
#
# Needs Debian's linux-perf (installed when missing, as root) and inferno
# (`cargo install inferno`, for the flamegraph SVGs). Builds the release
# binary (it keeps symbols: `debug = 1`), starts three `chorus serve` on
# loopback, loads RECORDS records, then for each workload (default put and
# c) runs `chorus bench` against n1 alone for DURATION while `perf record`
# samples n1 (cpu-clock, with call graphs: this VM has no hardware
# counters), and reads every node's CPU time from /proc. Writes
# `<out>/<workload>-n1.svg` and prints the table. Stops what it started.
#
#   bash docs/bench/profile.sh [out dir, default docs/bench/flamegraphs] [duration, default 10s]
#   env: RECORDS (100000), WORKLOADS ("put c"), BASE_PORT, FOLDED=1 (keep the folded stacks)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-docs/bench/flamegraphs}
duration=${2:-10s}
records=${RECORDS:-100000}
read -r -a workloads <<< "${WORKLOADS:-put c}"
base=${BASE_PORT:-7521}
command -v perf > /dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf > /dev/null
}
command -v inferno-flamegraph > /dev/null || cargo install --quiet inferno
cargo build --release --quiet
. docs/bench/lib.sh
bin=target/release/chorus
work=$(mktemp -d)
mkdir -p "$out"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT

chorus_config "$work/three.toml" profile "$base" 3 3
for i in 1 2 3; do
  "$bin" serve --config "$work/three.toml" --node "n$i" > /dev/null 2> "$work/n$i.log" &
  pids+=($!)
done
node_pids=("${pids[@]}")
url="http://127.0.0.1:$base"
wait_healthy "$url" "http://127.0.0.1:$((base + 1))" "http://127.0.0.1:$((base + 2))"
sleep 2
"$bin" bench --url "$url" --workload c --records "$records" --duration 1s > /dev/null 2>&1

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime, in clock ticks
hz=$(getconf CLK_TCK)
for w in "${workloads[@]}"; do
  before=(); for p in "${node_pids[@]}"; do before+=("$(cpu "$p")"); done
  perf record -F 499 -e cpu-clock --call-graph dwarf,32768 -p "${node_pids[0]}" -o "$work/$w.data" -- sleep "${duration%s}" \
    > /dev/null 2>&1 &
  perf_pid=$!
  "$bin" bench --url "$url" --workload "$w" --no-load --records "$records" --duration "$duration" \
    --concurrency 64 --value-size 100 > "$work/$w.json" 2> /dev/null
  wait "$perf_pid" || true
  after=(); for p in "${node_pids[@]}"; do after+=("$(cpu "$p")"); done
  perf script -i "$work/$w.data" 2> /dev/null | inferno-collapse-perf > "$work/$w.folded"
  [ -n "${FOLDED:-}" ] && cp "$work/$w.folded" "$out/$w-n1.folded"
  inferno-flamegraph --minwidth 1.0 --title "chorus n1, workload $w, 3 nodes N=3 R=W=2" < "$work/$w.folded" > "$out/$w-n1.svg"
  ticks=()
  for i in 0 1 2; do ticks+=($((after[i] - before[i]))); done
  python3 docs/bench/categories.py "$work/$w.folded" "$work/$w.json" "$hz" "${ticks[@]}"
done
