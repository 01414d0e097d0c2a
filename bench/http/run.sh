#!/usr/bin/env bash
# The HTTP middleware benchmark (BENCHMARKS.md, "HTTP middleware"): both example servers, with
# and without the Idempotency-Key middleware, on PostgreSQL and SQLite, under wrk on loopback,
# plus the statements per request counted on the wire. Release builds throughout.
#   bench/http/run.sh [PG_URL] [SECONDS] [ROUNDS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
pg="${1:-postgresql://postgres@127.0.0.1:5432/test}"
secs="${2:-5}"
rounds="${3:-3}"
cd "$root"

if ! command -v wrk >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -q wrk >/dev/null
fi
scripts/services
cargo build -q --release -p sentinel-tower --example server
cargo build -q --release -p sentinel-testkit --example count-proxy

venv="$root/target/bench-py-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q maturin 'psycopg[binary]' uvicorn httpx
PATH="$venv/bin:$PATH" "$venv/bin/python" -m pip install -q --no-build-isolation --no-deps --force-reinstall crates/sentinel-py

"$venv/bin/python" bench/http/bench.py --pg "$pg" --seconds "$secs" --rounds "$rounds"
