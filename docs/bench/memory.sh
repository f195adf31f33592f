#!/usr/bin/env bash
# Memory of one durable chorus node: resident bytes per stored key, and
# whether RSS grows under a constant load.
#
# Builds the release binary and starts one `chorus serve` (N = 1, durable,
# the default caches: 32 MiB of blocks, 32 MiB of rows) on loopback with data in a temp dir.
#  1. Loads RECORDS records (default 1,000,000) of 100-byte values and reads
#     the node's RSS (VmRSS) before and after: RSS per key, against the
#     stored data (key + value bytes) plus the engine's cache.
#  2. Runs workload A open-loop at RATE operations a second (default 5000)
#     for SOAK (default 10m), reading RSS every 10 s: after warm-up (the
#     first minute) it must not keep growing.
# Prints both as Markdown, then stops the node by its PID.
#
#   bash docs/bench/memory.sh
#   env: RECORDS, RATE, SOAK, PORT
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${RECORDS:-1000000}
rate=${RATE:-5000}
soak=${SOAK:-10m}
port=${PORT:-7591}
cargo build --release --quiet
. docs/bench/lib.sh
bin=target/release/chorus
work=$(mktemp -d)
node=
trap '[ -n "$node" ] && kill "$node" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
chorus_config "$work/one.toml" memory "$port" 1 1
"$bin" serve --config "$work/one.toml" --node n1 > /dev/null 2> "$work/node.log" &
node=$!
wait_healthy "http://127.0.0.1:$port"
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$node/status"; }
url="http://127.0.0.1:$port"

before=$(rss)
"$bin" bench --url "$url" --workload c --records "$records" --duration 5s --concurrency 64 \
  --value-size 100 > "$work/load.json" 2> "$work/load.err"
after=$(rss)
disk=$(du -sb "$work/one-n1" | cut -f1)

# The soak: RSS every 10 s while the bench runs.
( while kill -0 "$node" 2>/dev/null; do echo "$(date +%s) $(rss)"; sleep 10; done ) > "$work/rss.txt" &
sampler=$!
"$bin" bench --url "$url" --workload a --no-load --records "$records" --rate "$rate" \
  --duration "$soak" --concurrency 64 --value-size 100 > "$work/soak.json" 2> "$work/soak.err"
kill "$sampler" 2>/dev/null || true

python3 - "$work" "$records" "$before" "$after" "$disk" "$rate" "$soak" <<'PY'
import json, sys
work, records, before, after, disk, rate, soak = sys.argv[1:]
records, before, after, disk = int(records), int(before), int(after), int(disk)
key_bytes = sum(len(f"bench-{i}") for i in range(records))
data = key_bytes + 100 * records
cache = 64 * 2**20
load = json.load(open(f"{work}/load.json"))["load"]
print(f"| records | value bytes | stored data (keys + values) | RSS before | RSS after load | RSS per key | bound: 2 × data + cache | on disk |")
print("|---|---|---|---|---|---|---|---|")
mib = lambda b: f"{b / 2**20:,.0f} MiB"
bound = 2 * data + cache
print(f"| {records:,} | 100 | {mib(data)} | {mib(before)} | {mib(after)} | {after / records:,.0f} B "
      f"| {mib(bound)}: {'within' if after <= bound else '**over**'} | {mib(disk)} |")
print(f"\nLoaded at {load['records_per_sec']:,.0f} records/s, {load['errors']} errors.\n")
samples = [tuple(map(int, l.split())) for l in open(f"{work}/rss.txt") if len(l.split()) == 2]
t0 = samples[0][0]
soak_run = json.load(open(f"{work}/soak.json"))["runs"][0]
print(f"Soak: workload A at {rate}/s for {soak}: {soak_run['requests']:,} operations, "
      f"{soak_run['errors']} errors, p99 {soak_run['latency']['p99_us'] / 1000:.2f} ms.\n")
print("| minute | RSS |")
print("|---|---|")
for t, r in samples:
    if (t - t0) % 60 < 10:
        print(f"| {(t - t0) / 60:.0f} | {mib(r)} |")
warm = [r for t, r in samples if t - t0 >= 60]
if len(warm) >= 2:
    first, last, peak = warm[0], warm[-1], max(warm)
    print(f"\nAfter the first minute: {mib(first)} → {mib(last)} (peak {mib(peak)}), "
          f"{(last - first) / first * 100:+.1f}%.")
PY
