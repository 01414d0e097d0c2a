#!/usr/bin/env bash
# Per-operation breakdown of the SQLite store against its floor (issue 13). SQLite runs inside
# the process, so one count covers everything: instructions of the whole sentinel-bench
# process under callgrind, and system calls under strace, each for N1 and N2 operations of one
# phase at one caller, the difference divided by N2 - N1; allocations per op from --ops.
# Usage: bench/breakdown/sqlite.sh [N1] [N2] [PHASES]   (defaults 300 1300, all four phases)
# Prints one JSON line per phase.
set -euo pipefail
cd "$(dirname "$0")/../.."
n1=${1:-300}
n2=${2:-1300}
phases=${3:-sqlite_floor_fresh,sqlite_fresh,sqlite_floor_replay,sqlite_replay}
cargo build -q --release -p sentinel-bench
bench=target/release/sentinel-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for phase in ${phases//,/ }; do
  declare -A instr calls
  for n in "$n1" "$n2"; do
    valgrind --tool=callgrind -q --callgrind-out-file="$work/cg.$n" \
      "$bench" --only sqlite --phases "$phase" --callers 1 --rounds 1 --ops "$n" --json >/dev/null
    instr[$n]=$(sed -n 's/^summary: //p' "$work/cg.$n")
    strace -f -c -o "$work/st.$n" \
      "$bench" --only sqlite --phases "$phase" --callers 1 --rounds 1 --ops "$n" --json >/dev/null
    calls[$n]=$(awk '$NF == "total" {print $4}' "$work/st.$n")
  done
  "$bench" --only sqlite --phases "$phase" --callers 1 --rounds 1 --ops "$n2" --json >"$work/native.json"
  python3 - "$phase" "$n1" "$n2" "${instr[$n1]}" "${instr[$n2]}" "${calls[$n1]}" "${calls[$n2]}" \
    "$work/native.json" <<'PY'
import json, sys
phase, n1, n2, i1, i2, c1, c2, native = sys.argv[1:]
n1, n2, i1, i2, c1, c2 = map(int, (n1, n2, i1, i2, c1, c2))
row = next(r for r in json.load(open(native))["results"] if r["name"] == phase)
print(json.dumps({
    "phase": phase,
    "instructions_per_op": round((i2 - i1) / (n2 - n1)),
    "syscalls_per_op": round((c2 - c1) / (n2 - n1), 2),
    "allocs_per_op": row.get("allocs_per_op"),
}))
PY
  unset instr calls
done
