# Helpers the bench scripts source (not run on its own).

# chorus_config FILE NAME FIRST_PORT COUNT N [LINE] [NODE_LINE]: a durable
# cluster config (sync = "always") named NAME of COUNT nodes on loopback
# from FIRST_PORT, N replicas and majority quorums, with each node's data
# beside FILE; LINE is one more [cluster] key (e.g. "speculative_read_ms =
# 0"), NODE_LINE one more key of every [[nodes]] (e.g. "worker_threads = 1").
chorus_config() {
  local file=$1 name=$2 first=$3 count=$4 n=$5 extra=${6:-} node_extra=${7:-} i
  printf '[cluster]\nname = "%s"\nn = %d\nr = %d\nw = %d\n%s\n\n[storage]\nsync = "always"\n' \
    "$name" "$n" $((n / 2 + 1)) $((n / 2 + 1)) "$extra" > "$file"
  for i in $(seq "$count"); do
    printf '\n[[nodes]]\nid = "n%d"\nlisten = "127.0.0.1:%d"\ndata_dir = "%s"\n%s\n' \
      "$i" $((first + i - 1)) "${file%.toml}-n$i" "$node_extra" >> "$file"
  done
}

# wait_healthy URL...: until every URL's /health answers (at most 30 s).
wait_healthy() {
  local url
  for _ in $(seq 150); do
    for url in "$@"; do
      curl -sf "$url/health" > /dev/null 2>&1 || continue 2
    done
    return 0
  done
  echo "not healthy after 30 s: $*" >&2
  return 1
}
