#!/usr/bin/env bash
# Page load times of the operator console with N records (default 100 000) on SQLite and on
# PostgreSQL: bench/console/run.sh [PG_URL] [N] [ROUNDS]. Needs scripts/python-test's virtualenv
# (the package populates the store) and builds the release `sentinel`. Prints one JSON line per
# store; BENCHMARKS.md has the table.
set -euo pipefail
cd "$(dirname "$0")/../.."
pg=${1:-postgresql://postgres@127.0.0.1:5432/test}
n=${2:-100000}
rounds=${3:-20}
cargo build -q --release -p sentinel-cli
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
target/py-venv/bin/python bench/console/bench.py "sqlite://$dir/console.db" "$n" "$rounds"
target/py-venv/bin/python bench/console/bench.py "$pg" "$n" "$rounds"
