#!/usr/bin/env bash
# The Python package against the original (sentinel-coordination 0.5.0) and against the Rust
# blocking facade, in one run on one machine. The same bench.py runs unchanged on both Python
# packages (each in a virtualenv of its own, each on a database of its own); the Rust side
# mirrors it. Rounds alternate the three so that drift on a noisy machine hits each alike, and
# the summary gives medians and ratios.
#   bench/python/run.sh [SERVER_URL] [SECONDS] [ROUNDS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
server="${1:-postgresql://postgres@127.0.0.1:5432}"
secs="${2:-3}"
rounds="${3:-3}"
cd "$root"

original="${TMPDIR:-/tmp}/sentinel-original-venv"
ours="$root/target/bench-py-venv"
[ -x "$original/bin/python" ] || python3 -m venv "$original"
"$original/bin/python" -m pip install -q 'sentinel-coordination==0.5.0' 'psycopg[binary]'
[ -x "$ours/bin/python" ] || python3 -m venv "$ours"
"$ours/bin/python" -m pip install -q maturin 'psycopg[binary]'
# A release build, as users get from pip.
PATH="$ours/bin:$PATH" "$ours/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall crates/sentinel-py
cargo build -q --release -p sentinel-bench --bin blocking

# Fresh databases: the original's tables beside ours would (rightly) make ours refuse to start.
"$ours/bin/python" - "$server" <<'PY'
import sys, psycopg
with psycopg.connect(f"{sys.argv[1]}/postgres", autocommit=True) as c:
    for db in ("sentinel_bench_original", "sentinel_bench_ours", "sentinel_bench_rust"):
        c.execute(f"DROP DATABASE IF EXISTS {db}")
        c.execute(f"CREATE DATABASE {db}")
PY

out="$(mktemp)"
for round in $(seq "$rounds"); do
  echo "round $round/$rounds" >&2
  "$original/bin/python" bench/python/bench.py "$server/sentinel_bench_original" python_original "$secs" >>"$out"
  "$ours/bin/python" bench/python/bench.py "$server/sentinel_bench_ours" python_ours "$secs" >>"$out"
  target/release/blocking --database-url "${server/postgresql:/postgres:}/sentinel_bench_rust" --duration "$secs" >>"$out"
done
python3 bench/python/summary.py "$out"
rm -f "$out"
