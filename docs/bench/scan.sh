#!/usr/bin/env bash
# What a scan costs per key read against a GET of one key: workload C
# (single GETs, zipfian) against workload E (95% scans of 1 to 100 keys
# from a zipfian start, 5% inserts) at the same R, on one durable
# three-node cluster of this build as shipped (N = 3, R = W = 2, signed
# peers), one `chorus bench` client, alternating round by round. A scan
# counts once per key it returned, so server CPU per request is per key
# read in both; E's 5% of inserts are 0.1% of its keys and stay in.
#
#   bash docs/bench/scan.sh [duration 8s]
#   (ROUNDS=3 RECORDS=100000 CONCURRENCY=64 SCAN_CONCURRENCY=16, the
#   workers sending scans; STORAGE=always, interval or memory as in
#   threads.sh; BIN=path measures that binary instead of building this tree)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-8s}
rounds=${ROUNDS:-3}
records=${RECORDS:-100000}
concurrency=${CONCURRENCY:-64}
scan_concurrency=${SCAN_CONCURRENCY:-16}
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; fi
bin=${BIN:-target/release/chorus}
. docs/bench/lib.sh
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
loaded_cluster "$bin" "$work" scan "$records"

printf '| round | workload | workers | keys read/s | p99 ms (per request) | server CPU µs/key | E / C |\n|---|---|---|---|---|---|---|\n'
for round in $(seq "$rounds"); do
  for w in c e; do
    if [ "$w" = c ]; then c=$concurrency; else c=$scan_concurrency; fi
    "$bin" bench --url "$urls" --workload "$w" --no-load --records "$records" \
      --duration "$duration" --concurrency "$c" \
      --server-pid "$server_pids" --out "$work/$w-$round.json" > /dev/null 2>> "$work/bench.log"
  done
  python3 - "$work/c-$round.json" "$work/e-$round.json" "$round" "$concurrency" "$scan_concurrency" <<'PY'
import json, sys
c_path, e_path, rnd, cc, ec = sys.argv[1:]
c = json.load(open(c_path))["runs"][0]
e = json.load(open(e_path))["runs"][0]
ratio = e["server_cpu"]["us_per_request"] / c["server_cpu"]["us_per_request"]
for name, run, workers, extra in (("C", c, cc, ""), ("E", e, ec, f"{ratio:.3f}")):
    print(f"| {rnd} | {name} | {workers} | {run['throughput_per_sec']:,.0f} | "
          f"{run['latency']['p99_us'] / 1000:.2f} | {run['server_cpu']['us_per_request']:.1f} | {extra} |")
PY
done
