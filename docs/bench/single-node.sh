#!/usr/bin/env bash
# Single-node chorus against the null server, measured in one run.
#
# Builds the release binary, starts one durable chorus node on loopback
# (sync = "always", or SYNC=interval) with data in a temp dir, and measures
# PUT and GET with the same client against the in-process null server and
# against chorus, alternating ROUNDS times (default 3) so that the machine's
# noise hits both alike. Prints every run and the median ratio per operation,
# then stops the node it started.
#
#   bash docs/bench/single-node.sh [duration per run, default 15s] [concurrency, default 64]
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-15s}
concurrency=${2:-64}
rounds=${ROUNDS:-3}
cargo build --release --quiet
bin=target/release/chorus
work=$(mktemp -d)
node_pid=
trap '[ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

cat > "$work/bench.toml" <<TOML
[cluster]
name = "bench"
n = 1
r = 1
w = 1
[storage]
sync = "${SYNC:-always}"
[[nodes]]
id = "n1"
listen = "127.0.0.1:0"
data_dir = "$work/n1"
TOML
"$bin" serve --config "$work/bench.toml" --node n1 > "$work/node.out" 2> "$work/node.err" &
node_pid=$!
for _ in $(seq 100); do grep -q serving "$work/node.out" 2>/dev/null && break; sleep 0.1; done
url=$(awk '/serving on/ {print $NF}' "$work/node.out")

common=(--duration "$duration" --concurrency "$concurrency" --value-size 100 --keys 10000)
for round in $(seq "$rounds"); do
  for op in put get; do
    "$bin" bench --target null --op "$op" "${common[@]}" 2>/dev/null > "$work/null-$op-$round.json"
    "$bin" bench --url "$url" --op "$op" "${common[@]}" 2>/dev/null > "$work/chorus-$op-$round.json"
  done
done

python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
load = lambda name: json.load(open(f"{work}/{name}.json"))
print("| round | target | op | req/s | p50 ms | p99 ms | p99.9 ms | errors |")
print("|---|---|---|---|---|---|---|---|")
ratios = {"put": [], "get": []}
for r in range(1, rounds + 1):
    for op in ["put", "get"]:
        runs = {t: load(f"{t}-{op}-{r}") for t in ["null", "chorus"]}
        for t, s in runs.items():
            l = s["latency"]
            print(f"| {r} | {t} | {op} | {s['throughput_per_sec']:.0f} | {l['p50_us']/1000:.2f} "
                  f"| {l['p99_us']/1000:.2f} | {l['p999_us']/1000:.2f} | {s['errors']} |")
        ratios[op].append(runs["chorus"]["throughput_per_sec"] / runs["null"]["throughput_per_sec"])
print()
for op, rs in ratios.items():
    print(f"chorus {op.upper()} / null {op.upper()}: median {statistics.median(rs):.2f} "
          f"(runs: {', '.join(f'{x:.2f}' for x in rs)})")
PY
