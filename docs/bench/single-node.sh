#!/usr/bin/env bash
# Single-node chorus against the null server, in one run on this machine.
# Builds the release binary, starts one durable chorus node (sync = "always")
# on loopback with data in a temp dir, runs PUT and GET against the null
# server and against chorus with the same client, prints the ratios, and
# stops the node it started. SYNC=interval benchmarks the other sync policy.

#
#   bash docs/bench/single-node.sh [duration, default 15s] [concurrency, default 64]
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-15s}
concurrency=${2:-64}
cargo build --release --quiet
bin=target/release/chorus
work=$(mktemp -d)
trap 'kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

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
run() { "$bin" bench "$@" "${common[@]}" 2>/dev/null; }
run --target null --op put > "$work/null-put.json"
run --url "$url" --op put > "$work/chorus-put.json"
run --target null --op get > "$work/null-get.json"
run --url "$url" --op get > "$work/chorus-get.json"

python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
r = {n: json.load(open(f"{w}/{n}.json")) for n in ["null-put", "chorus-put", "null-get", "chorus-get"]}
print("| target | op | req/s | p50 ms | p99 ms | p99.9 ms | errors |")
print("|---|---|---|---|---|---|---|")
for n, s in r.items():
    l = s["latency"]
    print(f"| {s['target']} | {s['op']} | {s['throughput_per_sec']:.0f} | {l['p50_us']/1000:.2f} | {l['p99_us']/1000:.2f} | {l['p999_us']/1000:.2f} | {s['errors']} |")
for op in ["put", "get"]:
    ratio = r[f"chorus-{op}"]["throughput_per_sec"] / r[f"null-{op}"]["throughput_per_sec"]
    print(f"\nchorus {op.upper()} / null {op.upper()} = {ratio:.2f}")
PY
