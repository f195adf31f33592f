#!/usr/bin/env bash
# chorus against its peers, the same YCSB workloads from the same client, in
# one run on this machine.
#
# Installs Debian's etcd-server and redis-server when they are missing (as
# root, with apt-get), builds the release binary, and starts on loopback,
# with data in a temp dir:
#   chorus3  three `chorus serve` processes, N = 3, R = W = 2, durable
#            (sync = "always": every acknowledged write is fsynced), with
#            the shipped default of runtime threads (three nodes on one
#            host each take their share of its cores; CHORUS_THREADS sets
#            `worker_threads` instead)
#   chorus1  one `chorus serve` process, N = 1, durable
#   chorus3all  (only when named in TARGETS) chorus3 with
#            speculative_read_ms = 0: every read asks all N replicas
#   base3    (only when named in TARGETS) chorus3 run by the binary
#            BASE_BIN, e.g. an earlier commit's build, for a before/after
#            in one run (docs/benchmarks.md shows how to build one)
#   base1    (only when named in TARGETS) chorus1 run by BASE_BIN
#   open3    (only when named in TARGETS) chorus3 without a peer secret:
#            peer requests unsigned, for what authentication costs
#   tls3     (only when named in TARGETS) chorus3 with [security.tls]
#            (certificates made here with openssl): clients and peers
#            over TLS, for what TLS costs
# Every chorus cluster but open3 signs its peer requests (BENCH_SECRET).
#   etcd     a three-member etcd cluster (Raft, fsynced log), through its
#            JSON gateway, each member with GOMAXPROCS=THREADS_PER_NODE
#   redis    one Redis, in memory (no persistence): the single-node
#            in-memory reference
#   null     the in-process null server: the machine's HTTP ceiling
# Each target is loaded with RECORDS records once, then runs the workloads
# (closed loop, CONCURRENCY connections, DURATION each), ROUNDS times,
# alternating targets so the machine's noise hits all alike. Then workloads
# B, put and C (those asked) run open-loop at half of each target's own
# measured peak, for the p99 targets. Every run also reports the server
# CPU per request: `chorus bench --server-pid` with the target's processes
# (the null server measures its own threads). docs/bench/report.py prints the tables and median ratios and,
# with WRITE_DOCS=1, writes them and the plots into docs/benchmarks.md.
# Everything started is stopped by its PID on exit.
#
#   bash docs/bench/compare.sh [duration, default 10s] [concurrency, default 64]
#   env: ROUNDS (3), RECORDS (100000), WORKLOADS (a,b,c,f,d,put), TARGETS
#        ("null chorus3 etcd redis chorus1"), WRITE_DOCS (0), KEEP (a dir for
#        the JSON and plots), RATIOS (more pairs for report.py, "a/b ..."),
#        BASE_BIN (the binary of targets base3 and base1), THREADS_PER_NODE
#        (1: GOMAXPROCS of each etcd member, so three share the cores as
#        chorus's nodes do; 0 leaves Go's default of one per core),
#        CHORUS_THREADS (unset: chorus's own default; N: `worker_threads =
#        N` for every three-node chorus, e.g. for a BASE_BIN from before
#        the default shared the cores; a BASE_BIN older than
#        `worker_threads` needs it unset; one older than [security] needs
#        BASE_SECURITY=-)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-10s}
concurrency=${2:-64}
rounds=${ROUNDS:-3}
records=${RECORDS:-100000}
workloads=${WORKLOADS:-a,b,c,f,d,put}
read -r -a targets <<< "${TARGETS:-null chorus3 etcd redis chorus1}"
base=${BASE_PORT:-7501}
etcd_base=${ETCD_BASE_PORT:-23890}
redis_port=${REDIS_PORT:-16399}
threads=${THREADS_PER_NODE:-1}
node_line=""
[ -n "${CHORUS_THREADS:-}" ] && node_line="worker_threads = $CHORUS_THREADS"

missing=()
command -v etcd > /dev/null || missing+=(etcd-server)
command -v redis-server > /dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi
cargo build --release --quiet
. docs/bench/lib.sh
bin=target/release/chorus
work=$(mktemp -d)
pids=()
# KEEP=DIR keeps the summaries and plots there.
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null
      [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$work"/*.json "$work"/*.png "$KEEP"/ 2>/dev/null
      rm -rf "$work"' EXIT

# The server processes of each target, for `chorus bench --server-pid`.
declare -A server_pids
chorus_config "$work/three.toml" compare "$base" 3 3 "" "$node_line"
chorus_config "$work/one.toml" compare $((base + 10)) 1 1
for i in 1 2 3; do
  "$bin" serve --config "$work/three.toml" --node "n$i" > /dev/null 2> "$work/chorus3-n$i.log" &
  pids+=($!)
  server_pids[chorus3]+="$! "
done
"$bin" serve --config "$work/one.toml" --node n1 > /dev/null 2> "$work/chorus1.log" &
pids+=($!)
server_pids[chorus1]=$!
# Optional three-node clusters, started only when named in TARGETS:
# start_three NAME FIRST_PORT BINARY [CLUSTER_LINE] [SECURITY] [SCHEME].
optional=()
start_three() {
  local name=$1 first=$2 binary=$3 line=${4:-} security=${5:-} scheme=${6:-http} i
  chorus_config "$work/$name.toml" "compare-$name" "$first" 3 3 "$line" "$node_line" "$security"
  for i in 1 2 3; do
    "$binary" serve --config "$work/$name.toml" --node "n$i" > /dev/null 2> "$work/$name-n$i.log" &
    pids+=($!)
    server_pids[$name]+="$! "
    optional+=("$scheme://127.0.0.1:$((first + i - 1))")
  done
}
# One CA and one certificate for 127.0.0.1, shared by the tls3 nodes.
make_certificates() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=bench-ca -keyout "$work/ca.key" -out "$work/ca.pem" 2> /dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=node \
    -keyout "$work/node.key" -out "$work/node.csr" 2> /dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > "$work/san.ext"
  openssl x509 -req -in "$work/node.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/san.ext" -out "$work/node.crt" 2> /dev/null
}
all=$((base + 20))
base3=$((base + 30))
base1=$((base + 40))
open3=$((base + 50))
tls3=$((base + 60))
named() { [[ " ${targets[*]} " == *" $1 "* ]]; }
if named chorus3all; then start_three chorus3all "$all" "$bin" "speculative_read_ms = 0"; fi
if named base3; then
  start_three base3 "$base3" "${BASE_BIN:?target base3 needs BASE_BIN}" "" "${BASE_SECURITY:-}"
fi
if named open3; then start_three open3 "$open3" "$bin" "" -; fi
if named tls3; then
  make_certificates
  start_three tls3 "$tls3" "$bin" "" "$(printf 'peer_secret = "%s"\n[security.tls]\ncert = "%s"\nkey = "%s"\nca = "%s"' \
    "$BENCH_SECRET" "$work/node.crt" "$work/node.key" "$work/ca.pem")" https
fi
if named base1; then
  chorus_config "$work/base1.toml" compare-base1 "$base1" 1 1 "" "" "${BASE_SECURITY:-}"
  "${BASE_BIN:?target base1 needs BASE_BIN}" serve --config "$work/base1.toml" --node n1 > /dev/null 2> "$work/base1.log" &
  pids+=($!)
  server_pids[base1]=$!
  optional+=("http://127.0.0.1:$base1")
fi

cluster=$(for i in 1 2 3; do printf 'e%d=http://127.0.0.1:%d,' "$i" $((etcd_base + 10 + i)); done)
etcd_env=()
[ "$threads" -gt 0 ] && etcd_env=("GOMAXPROCS=$threads")
for i in 1 2 3; do
  env "${etcd_env[@]}" etcd --name "e$i" --data-dir "$work/etcd$i" --log-level error \
    --listen-client-urls "http://127.0.0.1:$((etcd_base + i))" \
    --advertise-client-urls "http://127.0.0.1:$((etcd_base + i))" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_base + 10 + i))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_base + 10 + i))" \
    --initial-cluster "${cluster%,}" --initial-cluster-state new \
    > "$work/etcd$i.log" 2>&1 &
  pids+=($!)
  server_pids[etcd]+="$! "
done
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  > "$work/redis.log" 2>&1 &
pids+=($!)
server_pids[redis]=$!

wait_healthy "http://127.0.0.1:$base" "http://127.0.0.1:$((base + 1))" "http://127.0.0.1:$((base + 2))" \
  "http://127.0.0.1:$((base + 10))" "http://127.0.0.1:$((etcd_base + 1))"
if [ ${#optional[@]} -gt 0 ]; then CHORUS_CA="$work/ca.pem" wait_healthy "${optional[@]}"; fi
# The ring settles (every node knows every other) before the load.
sleep 2

three() {
  local s=${2:-http}
  echo "--url $s://127.0.0.1:$1,$s://127.0.0.1:$(($1 + 1)),$s://127.0.0.1:$(($1 + 2))"
}
# The bench client trusts the tls3 CA (the CLI reads CHORUS_CA).
env_for() { [ "$1" = tls3 ] && echo "CHORUS_CA=$work/ca.pem"; true; }
args_for() {
  case $1 in
    null) echo "--target null" ;;
    chorus3) echo "--url http://127.0.0.1:$base,http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2))" ;;
    chorus1) echo "--url http://127.0.0.1:$((base + 10))" ;;
    chorus3all) three "$all" ;;
    base3) three "$base3" ;;
    open3) three "$open3" ;;
    tls3) three "$tls3" https ;;
    base1) echo "--url http://127.0.0.1:$base1" ;;
    etcd) echo "--target etcd --url http://127.0.0.1:$((etcd_base + 1)),http://127.0.0.1:$((etcd_base + 2)),http://127.0.0.1:$((etcd_base + 3))" ;;
    redis) echo "--target redis --url redis://127.0.0.1:$redis_port" ;;
  esac
}
# `--server-pid` with the target's processes, comma separated (none for null).
pid_args() {
  local p=${server_pids[$1]:-}
  p=$(echo $p | tr ' ' ',')
  [ -n "$p" ] && echo "--server-pid $p"
  true
}
common=(--duration "$duration" --concurrency "$concurrency" --value-size 100 --records "$records")
for round in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    load=()
    # Loaded once; the null server lives in each bench process, so always.
    [ "$round" -gt 1 ] && [ "$t" != null ] && load=(--no-load)
    # shellcheck disable=SC2046
    env $(env_for "$t") "$bin" bench $(args_for "$t") $(pid_args "$t") --label "$t" --workload "$workloads" "${load[@]}" "${common[@]}" \
      --out "$work/$t-$round.json" > /dev/null 2>> "$work/bench.log"
    echo "round $round: $t done" >&2
  done
done
# Workloads B, put and C open-loop at half of each target's own closed-loop
# peak of that workload (those among the workloads).
for w in b put c; do
  [[ ",$workloads," == *,$w,* ]] || continue
  for t in "${targets[@]}"; do
    peak=$(python3 -c "import json,sys; print(int(max(r['throughput_per_sec'] for i in range(1, $rounds + 1) for r in json.load(open(f'$work/$t-{i}.json'))['runs'] if r['workload'] == '$w')))")
    load=(--no-load)
    [ "$t" = null ] && load=()
    # shellcheck disable=SC2046
    env $(env_for "$t") "$bin" bench $(args_for "$t") $(pid_args "$t") --label "$t" --workload "$w" --rate $((peak / 2)) "${load[@]}" "${common[@]}" \
      --out "$work/$t-${w}50.json" > /dev/null 2>> "$work/bench.log"
    echo "$w at half of $peak/s: $t done" >&2
  done
done
export COMPARE_COMMAND="ROUNDS=$rounds RECORDS=$records WRITE_DOCS=1 bash docs/bench/compare.sh $duration $concurrency"
python3 docs/bench/report.py "$work" "$rounds" "${targets[@]}"
