"""Tables and median ratios from `chorus bench` JSON summaries.

    python3 docs/bench/report.py WORK ROUNDS TARGET...

WORK holds `<target>-<round>.json` (one summary per target and round, each
with a run per workload) and, when compare.sh made them, `<target>-b50.json`
(workload B, open loop at half the target's B peak). Prints the tables;
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

# (name, numerator target, denominator target, workload, lowest ratio met)
TARGETS = [
    ("chorus3 A / etcd A (3 nodes each)", "chorus3", "etcd", "A", 8.0),
    ("chorus3 C / null C", "chorus3", "null", "C", 0.45),
    ("chorus1 C / null C (one node)", "chorus1", "null", "C", 0.75),
    ("chorus1 put / null put (one node)", "chorus1", "null", "put", 0.60),
]


def load(work, name):
    path = os.path.join(work, f"{name}.json")
    return json.load(open(path)) if os.path.exists(path) else None


def ms(us):
    return f"{us / 1000:.2f}"


def runs_by_workload(summary):
    return {r["workload"].upper() if len(r["workload"]) == 1 else r["workload"]: r for r in summary["runs"]}


def main(work, rounds, targets):
    out = []
    say = out.append
    per = {}  # (target, workload) -> [ops/s per round]
    say("| round | target | workload | keys | ops/s | p50 ms | p99 ms | p99.9 ms | errors |")
    say("|---|---|---|---|---|---|---|---|---|")
    for r in range(1, rounds + 1):
        for t in targets:
            s = load(work, f"{t}-{r}")
            if s is None:
                continue
            for w, run in runs_by_workload(s).items():
                per.setdefault((t, w), []).append(run["throughput_per_sec"])
                lat = run["latency"]
                say(f"| {r} | {t} | {w} | {run['distribution']} | {run['throughput_per_sec']:,.0f} "
                    f"| {ms(lat['p50_us'])} | {ms(lat['p99_us'])} | {ms(lat['p999_us'])} | {run['errors']} |")
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
    say("")
    say("| ratio | median (rounds) | target | |")
    say("|---|---|---|---|")
    for name, a, b, w, bound in TARGETS:
        if (a, w) not in per or (b, w) not in per:
            continue
        ratios = [x / y for x, y in zip(per[(a, w)], per[(b, w)])]
        m = statistics.median(ratios)
        verdict = "met" if m >= bound else f"**missed** by {(1 - m / bound) * 100:.0f}%"
        say(f"| {name} | **{m:.2f}** ({', '.join(f'{x:.2f}' for x in ratios)}) | ≥ {bound} | {verdict} |")
    # RATIOS="state/off ...": any pair of targets, per workload.
    for pair in os.environ.get("RATIOS", "").split():
        a, b = pair.split("/")
        for w in workloads:
            if (a, w) in per and (b, w) in per:
                ratios = [x / y for x, y in zip(per[(a, w)], per[(b, w)])]
                say(f"| {a} {w} / {b} {w} | **{statistics.median(ratios):.2f}** "
                    f"({', '.join(f'{x:.2f}' for x in ratios)}) | | |")
    b50 = [(t, load(work, f"{t}-b50")) for t in targets]
    b50 = [(t, s) for t, s in b50 if s]
    if b50:
        say("")
        say("Workload B, open loop at half of each target's best closed-loop B throughput "
            "(latency counted from when each operation was due):")
        say("")
        say("| target | rate/s | ops/s | p50 ms | p99 ms | p99.9 ms | errors | p99 target |")
        say("|---|---|---|---|---|---|---|---|")
        for t, s in b50:
            run = s["runs"][0]
            lat = run["latency"]
            verdict = ""
            if t == "chorus3":
                verdict = "≤ 5 ms: " + ("met" if lat["p99_us"] <= 5000 else
                                        f"**missed** by {lat['p99_us'] / 5000 - 1:.0%}")
            say(f"| {t} | {run['rate_per_sec']:,} | {run['throughput_per_sec']:,.0f} | {ms(lat['p50_us'])} "
                f"| {ms(lat['p99_us'])} | {ms(lat['p999_us'])} | {run['errors']} | {verdict} |")
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
