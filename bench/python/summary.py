"""Medians over rounds of bench/python/run.sh's JSON lines, as a Markdown table with ratios."""
import json
import statistics
import sys
from collections import defaultdict

samples = defaultdict(list)
with open(sys.argv[1]) as f:
    for line in f:
        if line.strip():
            for r in json.loads(line)["results"]:
                samples[(r["name"], r["concurrency"])].append(r)


def median(name, threads, field="ops_per_sec"):
    rows = samples.get((name, threads))
    return statistics.median(r[field] for r in rows) if rows else float("nan")


rounds = max((len(v) for v in samples.values()), default=0)
print(f"medians of {rounds} rounds\n")
print("| phase | threads | original ops/s | ours ops/s | ours / original | Rust blocking ops/s | Rust / ours | ours p50 / p99 µs | Rust p50 / p99 µs |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for phase in ("fresh", "replay"):
    for threads in sorted({t for (_, t) in samples}):
        orig = median(f"python_original_{phase}", threads)
        ours = median(f"python_ours_{phase}", threads)
        rust = median(f"rust_blocking_{phase}", threads)
        lat = lambda name: f"{median(name, threads, 'p50_us'):.0f} / {median(name, threads, 'p99_us'):.0f}"  # noqa: E731
        print(
            f"| {phase} | {threads} | {orig:,.0f} | {ours:,.0f} | {ours / orig:.1f}× | {rust:,.0f} | "
            f"{rust / ours:.2f}× | {lat(f'python_ours_{phase}')} | {lat(f'rust_blocking_{phase}')} |"
        )
