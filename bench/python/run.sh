#!/usr/bin/env bash
# Installs the original Python package in a throwaway virtualenv and measures it, then runs
# the Rust harness's PostgreSQL section right after, so both come from the same machine state.
#   bench/python/run.sh [DATABASE_URL] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
url="${1:-postgresql://postgres@127.0.0.1:5432/test}"
secs="${2:-5}"
venv="${TMPDIR:-/tmp}/sentinel-original-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q 'sentinel-coordination==0.5.0' 'psycopg[binary]'
"$venv/bin/python" original.py "$url" "$secs"
cd ../..
cargo run -q --release -p sentinel-bench -- --database-url "${url/postgresql:/postgres:}" \
  --duration "${secs}s" --rounds 1 --only pg --phases sentinel_fresh,sentinel_replay --json
