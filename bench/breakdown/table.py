"""Turns bench/breakdown/run.sh's JSON lines (stdin) into BENCHMARKS.md's table: each cost of
one operation, Sentinel beside the floor, and the ratio."""

import json
import sys

rows = {r["phase"]: r for r in map(json.loads, filter(str.strip, sys.stdin))}
fields = [
    ("client instructions", "client_instructions_per_op", "{:,.0f}"),
    ("server instructions (client backends)", "server_instructions_per_op", "{:,.0f}"),
    ("statements", "statements_per_op", "{:.2f}"),
    ("bytes client → server", "bytes_sent_per_op", "{:,.0f}"),
    ("bytes server → client", "bytes_received_per_op", "{:,.0f}"),
    ("heap allocations (client process)", "allocs_per_op", "{:.1f}"),
]
print("| per operation | floor fresh | Sentinel fresh | × | floor replay | Sentinel replay | × |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for label, key, fmt in fields:
    cells = [label]
    for kind in ("fresh", "replay"):
        f = rows.get(f"floor_{kind}", {}).get(key)
        s = rows.get(f"sentinel_{kind}", {}).get(key)
        cells.append(fmt.format(f) if f is not None else "")
        cells.append(fmt.format(s) if s is not None else "")
        cells.append(f"{s / f:.2f}" if f and s is not None else "")
    print("| " + " | ".join(cells) + " |")
