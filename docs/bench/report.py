"""Tables and median ratios from `chorus bench` JSON summaries.

    python3 docs/bench/report.py WORK ROUNDS TARGET...

WORK holds `<target>-<round>.json` (one summary per target and round, each
with a run per workload) and, when compare.sh made them, `<target>-b50.json`,
`-put50.json` and `-c50.json` (those workloads open loop at half the
target's peak). Each run may carry the servers' CPU per request
(`server_cpu`), the figure of merit: it is read as a ratio to the null
server's in the same round. Prints the tables;
with WRITE_DOCS=1 also writes them between the `compare` markers of
docs/benchmarks.md and copies the plots of chorus3's first round into
docs/bench/plots/. Used by compare.sh and antientropy-cost.sh.
"""

import datetime
import json
import os
import shutil
import statistics
import sys

DOCS = os.path.join(os.path.dirname(__file__), "..", "benchmarks.md")
PLOTS = os.path.join(os.path.dirname(__file__), "plots")
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"

# Throughput: (name, numerator target, denominator target, workload,
# lowest ratio met, goal).
TARGETS = [
    ("chorus3 put/s ÷ etcd put/s (3 nodes each)", "chorus3", "etcd", "put", 4.0, 8.0),
]

# Server CPU per request ÷ the null server's, same round: (name, target,
# workload, highest ratio met, goal). Issue 21's table.
CPU_TARGETS = [
    ("chorus3 put (N=3, R=W=2)", "chorus3", "put", 8.0, 5.0),
    ("chorus3 C (GET)", "chorus3", "C", 4.0, 2.5),
    ("chorus1 put", "chorus1", "put", 3.0, 2.0),
    ("chorus1 C (GET)", "chorus1", "C", 2.0, 1.5),
]

# p99 at half the peak, open loop (the `<target>-<w>50.json` runs):
# highest p99 met and goal, in ms, for chorus3.
P99_TARGET = (3.0, 2.0)


def load(work, name):
    path = os.path.join(work, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def ms(us):
    return f"{us / 1000:.2f}"


def cpu_cell(server):
    """The servers' CPU per request in all, then each process's when there are several."""
    if not server:
        return "-"
    each = server.get("us_per_request_each", [])
    parts = f" ({' + '.join(f'{x:.1f}' for x in each)})" if len(each) > 1 else ""
    return f"{server['us_per_request']:.1f}{parts}"


def runs_by_workload(summary):
    return {r["workload"].upper() if len(r["workload"]) == 1 else r["workload"]: r for r in summary["runs"]}


def main(work, rounds, targets):
    out = []
    say = out.append
    per = {}  # (target, workload) -> [ops/s per round]
    cpu = {}  # (target, workload) -> {round: server CPU µs per request}
    say("| round | target | workload | keys | ops/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/req |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    for r in range(1, rounds + 1):
        for t in targets:
            s = load(work, f"{t}-{r}")
            if s is None:
                continue
            for w, run in runs_by_workload(s).items():
                per.setdefault((t, w), []).append(run["throughput_per_sec"])
                lat = run["latency"]
                server = run.get("server_cpu")
                if server:
                    cpu.setdefault((t, w), {})[r] = server["us_per_request"]
                say(f"| {r} | {t} | {w} | {run['distribution']} | {run['throughput_per_sec']:,.0f} "
                    f"| {ms(lat['p50_us'])} | {ms(lat['p99_us'])} | {ms(lat['p999_us'])} | {run['errors']} "
                    f"| {cpu_cell(server)} |")
    workloads = []
    for (_, w) in per:
        if w not in workloads:
            workloads.append(w)
    say("")
    say("Median ops/s over the rounds:")
    say("")
    say("| workload | " + " | ".join(targets) + " |")
    say("|---|" + "---|" * len(targets))
    med = {k: statistics.median(v) for k, v in per.items()}
    for w in workloads:
        say(f"| {w} | " + " | ".join(f"{med[(t, w)]:,.0f}" if (t, w) in med else "" for t in targets) + " |")
    if cpu:
        say("")
        say("Median server CPU per request (µs; user + system of every server process, "
            "background threads included, over the requests served):")
        say("")
        say("| workload | " + " | ".join(targets) + " |")
        say("|---|" + "---|" * len(targets))
        for w in workloads:
            cells = [f"{statistics.median(cpu[(t, w)].values()):.1f}" if (t, w) in cpu else "" for t in targets]
            say(f"| {w} | " + " | ".join(cells) + " |")
        say("")
        say("Server CPU per request ÷ the null server's, per round (the figure of merit):")
        say("")
        say("| ratio | median (rounds) | floor | goal | |")
        say("|---|---|---|---|---|")
        for name, t, w, bound, goal in CPU_TARGETS:
            if (t, w) not in cpu or ("null", w) not in cpu:
                continue
            ratios = [v / cpu[("null", w)][r] for r, v in sorted(cpu[(t, w)].items())
                      if cpu[("null", w)].get(r)]
            if not ratios:
                continue
            m = statistics.median(ratios)
            verdict = ("goal met" if m <= goal else "met" if m <= bound
                       else f"**missed** by {(m / bound - 1) * 100:.0f}%")
            say(f"| {name} | **{m:.2f}** ({', '.join(f'{x:.2f}' for x in ratios)}) "
                f"| ≤ {bound} | ≤ {goal} | {verdict} |")
    say("")
    say("| ratio | median (rounds) | floor | goal | |")
    say("|---|---|---|---|---|")
    for name, a, b, w, bound, goal in TARGETS:
        if (a, w) not in per or (b, w) not in per:
            continue
        ratios = [x / y for x, y in zip(per[(a, w)], per[(b, w)])]
        m = statistics.median(ratios)
        verdict = ("goal met" if m >= goal else "met" if m >= bound
                   else f"**missed** by {(1 - m / bound) * 100:.0f}%")
        say(f"| {name} | **{m:.2f}** ({', '.join(f'{x:.2f}' for x in ratios)}) | ≥ {bound} | ≥ {goal} | {verdict} |")
    # RATIOS="state/off ...": any pair of targets, per workload.
    for pair in os.environ.get("RATIOS", "").split():
        a, b = pair.split("/")
        for w in workloads:
            if (a, w) in per and (b, w) in per:
                ratios = [x / y for x, y in zip(per[(a, w)], per[(b, w)])]
                say(f"| {a} {w} / {b} {w} | **{statistics.median(ratios):.2f}** "
                    f"({', '.join(f'{x:.2f}' for x in ratios)}) | | |")
    half = [(t, w, load(work, f"{t}-{w}50")) for w in ["b", "put", "c"] for t in targets]
    half = [(t, w, s) for t, w, s in half if s]
    if half:
        floor, goal = P99_TARGET
        say("")
        say("Open loop at half of each target's best closed-loop throughput of the workload "
            "(latency counted from when each operation was due):")
        say("")
        say("| target | workload | rate/s | ops/s | p50 ms | p99 ms | p99.9 ms | errors "
            "| server CPU µs/req | p99 target |")
        say("|---|---|---|---|---|---|---|---|---|---|")
        for t, w, s in half:
            run = s["runs"][0]
            lat = run["latency"]
            server = run.get("server_cpu")
            verdict = ""
            if t == "chorus3" and w in ("put", "c"):
                p99 = lat["p99_us"] / 1000
                verdict = (f"≤ {floor} ms: " + ("goal met" if p99 <= goal else "met" if p99 <= floor
                                                else f"**missed** by {p99 / floor - 1:.0%}"))
            say(f"| {t} | {w.upper() if len(w) == 1 else w} | {run['rate_per_sec']:,} "
                f"| {run['throughput_per_sec']:,.0f} | {ms(lat['p50_us'])} "
                f"| {ms(lat['p99_us'])} | {ms(lat['p999_us'])} | {run['errors']} "
                f"| {cpu_cell(server)} | {verdict} |")
    text = "\n".join(out)
    print(text)
    if os.environ.get("WRITE_DOCS") == "1":
        write_docs(work, targets, text)


def write_docs(work, targets, text):
    plots = []
    os.makedirs(PLOTS, exist_ok=True)
    for name in ["chorus3-1-a", "chorus3-b50-b", "etcd-1-a"]:
        for kind in ["throughput", "latency"]:
            src = os.path.join(work, f"{name}-{kind}.png")
            if os.path.exists(src):
                dst = f"compare-{name}-{kind}.png"
                shutil.copy(src, os.path.join(PLOTS, dst))
                plots.append(f"![{name} {kind}](bench/plots/{dst})")
    stamp = datetime.date.today().isoformat()
    section = "\n".join([
        BEGIN,
        f"Measured {stamp} with `{os.environ.get('COMPARE_COMMAND', 'bash docs/bench/compare.sh')}`"
        f" (targets: {', '.join(targets)}):",
        "",
        text,
        "",
        *plots,
        END,
    ])
    doc = open(DOCS).read()
    if BEGIN in doc and END in doc:
        doc = doc[:doc.index(BEGIN)] + section + doc[doc.index(END) + len(END):]
    else:
        doc += "\n" + section + "\n"
    open(DOCS, "w").write(doc)
    print(f"wrote {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
