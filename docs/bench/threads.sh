#!/usr/bin/env bash
# Where a cluster's CPU goes, thread by thread: starts a durable cluster of
# NODES nodes on loopback (config as compare.sh writes it, N = NODES,
# shipped defaults otherwise),
# loads RECORDS records, runs one `chorus bench` workload, and prints the
# run's throughput, p99 and server CPU per request, the p99 the nodes
# themselves measured (chorus_request_duration_seconds, from the arrival of
# a request's head to its answer), then each kind of server thread's CPU
# time, context switches and time spent runnable but waiting for a core
# over the run (summed over the nodes; from /proc/PID/task/*/stat, status
# and schedstat).
#
#   bash docs/bench/threads.sh [duration 15s] [concurrency 64]
#   (BIN=target/release/chorus NODES=3 WORKLOAD=put RATE=4000 RECORDS=100000
#   STORAGE=always, where RATE > 0 runs open loop at that many operations a
#   second and 0 closed loop; BIN is built from this tree when not given;
#   STORAGE=interval fsyncs every 100 ms instead of per write, and
#   STORAGE=memory uses the in-memory engine: what the disk costs)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-15s}
concurrency=${2:-64}
workload=${WORKLOAD:-put}
rate=${RATE:-4000}
records=${RECORDS:-100000}
nodes=${NODES:-3}
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; fi
bin=${BIN:-target/release/chorus}
. docs/bench/lib.sh
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
chorus_config "$work/cluster.toml" threads 7700 "$nodes" "$nodes"
storage_variant "$work/cluster.toml"
start_nodes "$bin" "$work/cluster.toml" "$nodes" 7700
"$bin" bench --url "$urls" --workload put --records "$records" --duration 1s \
  --concurrency "$concurrency" --out "$work/load.json" > /dev/null 2>> "$work/bench.log"
sleep 2
# One line per thread: process, thread name, CPU ticks, context switches,
# ns waiting on a run queue, times run.
threads() {
  local p t
  for p in "${pids[@]}"; do
    for t in /proc/"$p"/task/*; do
      echo "$p/${t##*/} $(tr ' ' _ < "$t/comm") $(awk '{print $14 + $15}' "$t/stat") \
        $(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status") \
        $(awk '{print $2, $3}' "$t/schedstat")"
    done
  done
}
# The nodes' own request histograms.
scrape() {
  local u
  for u in ${urls//,/ }; do curl -s "$u/metrics" | grep '^chorus_request_duration_seconds_bucket'; done
}
threads > "$work/before"
scrape > "$work/metrics-before"
"$bin" bench --url "$urls" --workload "$workload" --no-load --records "$records" \
  --duration "$duration" --concurrency "$concurrency" --rate "$rate" \
  --server-pid "$(IFS=,; echo "${pids[*]}")" --out "$work/run.json" > /dev/null 2>> "$work/bench.log"
threads > "$work/after"
scrape > "$work/metrics-after"
python3 - "$work" "$(getconf CLK_TCK)" <<'PY'
import collections, json, re, sys
work, hz = sys.argv[1:]
def read(path):
    return {t: (name, int(cpu), int(switches), int(waited), int(runs))
            for t, name, cpu, switches, waited, runs in (line.split() for line in open(path))}
before, after = read(f"{work}/before"), read(f"{work}/after")
run = json.load(open(f"{work}/run.json"))["runs"][0]
requests = max(run["requests"], 1)
cpu, switches = collections.Counter(), collections.Counter()
waited, runs = collections.Counter(), collections.Counter()
for t, (name, c, s, w, r) in after.items():
    _, c0, s0, w0, r0 = before.get(t, (name, 0, 0, 0, 0))
    cpu[name] += c - c0
    switches[name] += s - s0
    waited[name] += w - w0
    runs[name] += r - r0
# The servers' p99: bucket counts of the workload's operations over the
# run, all nodes together (the bucket bound at or above the 99th).
def buckets(path):
    counts = collections.Counter()
    for line in open(path):
        m = re.match(r'chorus_request_duration_seconds_bucket\{op="([a-z]+)",le="([^"]+)"\} (\S+)', line)
        if m and m[1] in ("get", "put"):
            counts[float(m[2])] += float(m[3])
    return counts
b0, b1 = buckets(f"{work}/metrics-before"), buckets(f"{work}/metrics-after")
delta = sorted((le, b1[le] - b0.get(le, 0)) for le in b1)
total = delta[-1][1] if delta else 0
served = next((le for le, n in delta if total and n >= 0.99 * total), float("nan"))
print(f"{run['workload']}: {run['throughput_per_sec']:,.0f} ops/s, "
      f"p99 {run['latency']['p99_us'] / 1000:.2f} ms (the nodes' own: ≤ {served * 1000:g} ms), "
      f"server CPU {run['server_cpu']['us_per_request']:.1f} µs/request\n")
print("| threads | CPU µs/request | context switches/request | run-queue wait µs/request | µs waited per run |")
print("|---|---|---|---|---|")
for name, ticks in cpu.most_common():
    if ticks or switches[name]:
        print(f"| {name} | {ticks / int(hz) / requests * 1e6:.1f} | {switches[name] / requests:.2f} "
              f"| {waited[name] / 1e3 / requests:.1f} | {waited[name] / 1e3 / max(runs[name], 1):.1f} |")
PY
