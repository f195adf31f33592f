#!/usr/bin/env bash
# What waiting watchers cost a node: WATCHERS watches of distinct keys
# held on n1 of a durable three-node cluster of this build as shipped
# (N = 3, R = W = 2, signed peers), over HTTP/2 connections of 150 streams,
# measured with `chorus bench --watchers` (src/bench/watchers.rs): n1's
# resident memory per watcher, its CPU while they wait beside its CPU
# before they came, and the time from a write to its watcher's answer.
#
#   bash docs/bench/watchers.sh [duration 30s]
#   (WATCHERS=10000 NOTIFY=1000; BIN=path measures that binary instead of
#   building this tree)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-30s}
watchers=${WATCHERS:-10000}
notify=${NOTIFY:-1000}
if [ -z "${BIN:-}" ]; then cargo build --release --quiet; fi
bin=${BIN:-target/release/chorus}
. docs/bench/lib.sh
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
chorus_config "$work/cluster.toml" watchers 7700 3 3
start_nodes "$bin" "$work/cluster.toml" 3 7700
sleep 2
"$bin" bench --url http://127.0.0.1:7700 --server-pid "${pids[0]}" \
  --watchers "$watchers" --notify "$notify" --duration "$duration" > "$work/watchers.json"
