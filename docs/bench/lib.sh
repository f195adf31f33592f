# Helpers the bench scripts source (not run on its own).

# The peer secret of every benchmarked cluster: peers sign each request,
# as a real cluster's do.
BENCH_SECRET=${BENCH_SECRET:-$(head -c 32 /dev/urandom | base64)}

# chorus_config FILE NAME FIRST_PORT COUNT N [LINE] [NODE_LINE] [SECURITY]:
# a durable cluster config (sync = "always") named NAME of COUNT nodes on
# loopback from FIRST_PORT, N replicas and majority quorums, with each
# node's data beside FILE; LINE is one more [cluster] key (e.g.
# "speculative_read_ms = 0"), NODE_LINE one more key of every [[nodes]]
# (e.g. "worker_threads = 1"), SECURITY the body of [security] (default:
# the peer secret BENCH_SECRET; "-" leaves the section out, for binaries
# from before it existed or to measure unsigned peers).
chorus_config() {
  local file=$1 name=$2 first=$3 count=$4 n=$5 extra=${6:-} node_extra=${7:-} i
  local security=${8:-peer_secret = \"$BENCH_SECRET\"}
  printf '[cluster]\nname = "%s"\nn = %d\nr = %d\nw = %d\n%s\n\n[storage]\nsync = "always"\n' \
    "$name" "$n" $((n / 2 + 1)) $((n / 2 + 1)) "$extra" > "$file"
  [ "$security" = - ] || printf '\n[security]\n%s\n' "$security" >> "$file"
  for i in $(seq "$count"); do
    printf '\n[[nodes]]\nid = "n%d"\nlisten = "127.0.0.1:%d"\ndata_dir = "%s"\n%s\n' \
      "$i" $((first + i - 1)) "${file%.toml}-n$i" "$node_extra" >> "$file"
  done
}

# wait_healthy URL...: until every URL's /health answers (at most 30 s);
# https URLs are checked against the CA file in CHORUS_CA.
wait_healthy() {
  local url
  for _ in $(seq 150); do
    for url in "$@"; do
      curl -sf ${CHORUS_CA:+--cacert "$CHORUS_CA"} "$url/health" > /dev/null 2>&1 || continue 2
    done
    return 0
  done
  echo "not healthy after 30 s: $*" >&2
  return 1
}

# storage_variant FILE: applies STORAGE (always, the default: fsync per
# write; interval: fsync every 100 ms; memory: the in-memory engine) to
# the config chorus_config wrote.
storage_variant() {
  case ${STORAGE:-always} in
    always) ;;
    interval) sed -i 's/^sync = "always"/sync = "interval"/' "$1" ;;
    memory) sed -i 's/^sync = "always"/engine = "memory"/' "$1" ;;
    *) echo "STORAGE is always, interval or memory" >&2; return 2 ;;
  esac
}

# start_nodes BIN CONFIG COUNT FIRST_PORT: runs nodes n1..nCOUNT of CONFIG
# (logs beside it), appends their PIDs to the array `pids` (which the
# caller's trap ends), sets `urls` to their comma-separated URLs and
# returns once every one answers /health.
start_nodes() {
  local bin=$1 config=$2 count=$3 first=$4 i list=()
  for i in $(seq "$count"); do
    "$bin" serve --config "$config" --node "n$i" > /dev/null 2> "${config%.toml}-n$i.log" &
    pids+=($!)
    list+=("http://127.0.0.1:$((first + i - 1))")
  done
  wait_healthy "${list[@]}"
  urls=$(IFS=,; echo "${list[*]}")
}

# loaded_cluster BIN DIR NAME RECORDS: a durable three-node cluster of BIN
# on ports 7700-7702 as compare.sh configures it (STORAGE applied), with
# RECORDS records loaded; sets `pids`, `urls` and `server_pids`.
loaded_cluster() {
  local bin=$1 dir=$2 name=$3 records=$4
  chorus_config "$dir/cluster.toml" "$name" 7700 3 3
  storage_variant "$dir/cluster.toml"
  start_nodes "$bin" "$dir/cluster.toml" 3 7700
  server_pids=$(IFS=,; echo "${pids[*]}")
  "$bin" bench --url "$urls" --workload put --records "$records" --duration 1s \
    --out "$dir/load.json" > /dev/null 2>> "$dir/bench.log"
  sleep 2
}
