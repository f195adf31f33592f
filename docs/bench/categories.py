"""CPU per request by part of the path, from a perf profile.

    python3 docs/bench/categories.py FOLDED BENCH_JSON HZ TICKS_N1 TICKS_N2 TICKS_N3

FOLDED is `perf script | inferno-collapse-perf` of the coordinating node
(one line per stack: frames root-first, `;`-separated, then a count). Each
sample goes to the part named by the leaf-most frame that matches one
(so a `malloc` called from the JSON encoder counts as allocation, the
kernel's TCP send under hyper's write counts as the network). TICKS are
each node's CPU time over the run (utime + stime from /proc, in 1/HZ s);
with the run's request count they turn shares into microseconds per
request. Prints a Markdown table. Used by profile.sh.
"""

import json
import re
import sys

# Leaf-most match wins; within a frame, the first pattern in this list.
PARTS = [
    ("fsync (group commit)", r"fdatasync|fsync|sync_file|jbd2|blkdev|virtblk|blk_mq"),
    ("journal write (kernel)", r"vfs_write|ext4_file_write|generic_perform_write|ext4_"),
    ("allocation", r"\bmi_|mimalloc|_mi_|malloc|realloc|\bfree\b|cfree|memmove|memcpy"),
    ("storage engine (fjall)", r"fjall|lsm_tree|value_log|crossbeam_skiplist"),
    ("Merkle trees (blake3)", r"blake3|merkle"),
    ("versions and merge", r"chorus::version::(siblings|dot|clock)|crdts"),
    ("encoding (postcard, JSON, contexts, base64)", r"postcard|serde_json|base64|chorus::version::context|serde::"),
    ("peer transport: HTTP/2, streams (fan-out)", r"\bh2::|chorus::peer"),
    ("client HTTP/1 (parse, write)", r"hyper::proto::h1|httparse|hyper::"),
    ("routing and API layer", r"axum|matchit|chorus::api|tower"),
    ("coordinator and replica", r"chorus::coordinator|chorus::replica|chorus::store"),
    ("metrics", r"metrics|chorus::metrics"),
    ("kernel network (send, receive, poll)", r"tcp_|sock_|sys_sendto|sys_recvfrom|ep_poll|epoll|sendmsg|recvmsg|__send|__recv|writev|net_rx|skb|ip_|loopback"),
    ("scheduling (context switches, futex, tokio)", r"tokio::|futex|parking_lot|schedule|wake"),
]
COMPILED = [(name, re.compile(p)) for name, p in PARTS]


def part_of(frames):
    for frame in reversed(frames):
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    return "other"


def main(folded, bench, hz, *ticks):
    samples = {}
    total = 0
    for line in open(folded):
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        part = part_of(stack.split(";"))
        samples[part] = samples.get(part, 0) + n
    run = json.load(open(bench))["runs"][0]
    requests = max(run["requests"], 1)
    hz = int(hz)
    cpu = [int(t) / hz for t in ticks]
    per_request = [c / requests * 1e6 for c in cpu]
    print(f"\nWorkload {run['workload']}: {run['throughput_per_sec']:,.0f} ops/s, "
          f"p50 {run['latency']['p50_us'] / 1000:.2f} ms, p99 {run['latency']['p99_us'] / 1000:.2f} ms; "
          f"CPU per request: n1 {per_request[0]:.1f} µs (coordinator), "
          f"n2 {per_request[1]:.1f} µs, n3 {per_request[2]:.1f} µs "
          f"({total:,} ns of n1 sampled)\n")
    print("| part of n1's path | share of n1's CPU | µs per request |")
    print("|---|---|---|")
    for part, n in sorted(samples.items(), key=lambda kv: -kv[1]):
        share = n / max(total, 1)
        print(f"| {part} | {share * 100:.1f}% | {share * per_request[0]:.1f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
