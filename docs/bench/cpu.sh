#!/usr/bin/env bash
# Server CPU per request of this build against an earlier one, in one run:
# two durable three-node clusters on loopback (N = 3, R = W = 2, signed
# peers, one runtime thread per node as in compare.sh), one of this build
# (`chorus3`) and one of BASE_BIN (`base3`), each measured with the same
# `chorus bench` client, workload after workload, target after target,
# round after round. A node's CPU is its process's user + system time
# (/proc/PID/stat, background threads included), read before and after
# each run by `chorus bench --server-pid`; CPU per request is the three
# nodes' sum over the requests served.
#
#   BASE_BIN=/tmp/base-target/release/chorus bash docs/bench/cpu.sh [duration 8s] [concurrency 64]
#   (ROUNDS=3 RECORDS=100000 WORKLOADS=put,c VALUE_SIZE=100 RATE=0, where
#   RATE > 0 runs open loop at that many operations a second; NEW_BIN=path
#   measures that binary instead of building this tree)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-8s}
concurrency=${2:-64}
rounds=${ROUNDS:-3}
records=${RECORDS:-100000}
workloads=${WORKLOADS:-put,c}
value_size=${VALUE_SIZE:-100}
rate=${RATE:-0}
base_bin=${BASE_BIN:?BASE_BIN names the earlier build}
if [ -z "${NEW_BIN:-}" ]; then cargo build --release --quiet; fi
. docs/bench/lib.sh
bin=${NEW_BIN:-target/release/chorus}
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT

declare -A node_pids first_port
start() {
  local name=$1 first=$2 binary=$3 i
  chorus_config "$work/$name.toml" "cpu-$name" "$first" 3 3 "" "worker_threads = 1"
  node_pids[$name]=""
  first_port[$name]=$first
  for i in 1 2 3; do
    "$binary" serve --config "$work/$name.toml" --node "n$i" > /dev/null 2> "$work/$name-n$i.log" &
    pids+=($!)
    node_pids[$name]+="$! "
  done
}
start chorus3 7600 "$bin"
start base3 7610 "$base_bin"
wait_healthy http://127.0.0.1:7600 http://127.0.0.1:7601 http://127.0.0.1:7602 \
  http://127.0.0.1:7610 http://127.0.0.1:7611 http://127.0.0.1:7612
sleep 2

urls() {
  local p=${first_port[$1]}
  echo "http://127.0.0.1:$p,http://127.0.0.1:$((p + 1)),http://127.0.0.1:$((p + 2))"
}

printf 'round\ttarget\tworkload\tops/s\tp99 ms\tserver CPU µs/request\n'
for t in chorus3 base3; do
  "$bin" bench --url "$(urls $t)" --workload put --records "$records" --duration 1s \
    --concurrency "$concurrency" --value-size "$value_size" --out "$work/load-$t.json" > /dev/null 2>> "$work/bench.log"
done
for round in $(seq "$rounds"); do
  for w in ${workloads//,/ }; do
    for t in chorus3 base3; do
      # shellcheck disable=SC2086
      "$bin" bench --url "$(urls $t)" --workload "$w" --no-load --records "$records" \
        --duration "$duration" --concurrency "$concurrency" --value-size "$value_size" \
        --server-pid "$(echo ${node_pids[$t]} | tr ' ' ',')" --rate "$rate" \
        --out "$work/$t-$w-$round.json" > /dev/null 2>> "$work/bench.log"
      python3 - "$work/$t-$w-$round.json" "$round" "$t" "$w" <<'EOF'
import json, sys
path, rnd, target, workload = sys.argv[1:]
run = json.load(open(path))["runs"][0]
print(f"{rnd}\t{target}\t{workload}\t{run['throughput_per_sec']:,.0f}\t"
      f"{run['latency']['p99_us'] / 1000:.2f}\t{run['server_cpu']['us_per_request']:.1f}")
EOF
    done
  done
done
