#!/usr/bin/env bash
# Per-operation cost breakdown of Sentinel against the floor (issue 13), in instructions, which
# the noise of these shared machines does not move:
#   client: the whole sentinel-bench process under callgrind, one caller, run for N1 and for N2
#           operations of one phase; (I(N2) - I(N1)) / (N2 - N1) is the client's cost of one op;
#   server: the same two runs against a private PostgreSQL cluster started under callgrind
#           (autovacuum off): what every client backend did in PostgresMain less its start-up
#           (InitPostgres), summed, the same difference (postmaster, checkpointer and writers
#           follow timers and are left out);
#   wire and heap: statements and bytes per op through the counting proxy, and allocations per
#           op in the whole client process (sentinel-bench --ops).
# Usage: bench/breakdown/run.sh [N1] [N2] [PHASES]   (defaults 300 1300, all four phases)
# Prints one JSON line per phase; bench/breakdown/table.py turns them into BENCHMARKS.md's table.
set -euo pipefail
cd "$(dirname "$0")/../.."
n1=${1:-300}
n2=${2:-1300}
phases=${3:-floor_fresh,sentinel_fresh,floor_replay,sentinel_replay}
cargo build -q --release -p sentinel-bench
bench=target/release/sentinel-bench
work=$(mktemp -d)
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
port=55432
cleanup() {
  "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# A private cluster (trust auth, fsync and synchronous_commit on as on the shared one), started
# under callgrind: each backend is a fork of the postmaster and writes its own profile on exit.
# initdb and postgres refuse to run as root: run them as the postgres user.
mkdir -p "$work/pg" "$work/cg"
chown -R postgres "$work"
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
run_pg "$pgbin/initdb" -A trust -U postgres -D "$work/pg" >/dev/null
start_pg() {
  rm -f "$work"/cg/*
  run_pg valgrind --tool=callgrind --trace-children=yes --callgrind-out-file="$work/cg/%p" \
    -q "$pgbin/postgres" -D "$work/pg" -p "$port" -k "$work" -c listen_addresses=127.0.0.1 \
    -c max_connections=50 -c shared_buffers=64MB -c autovacuum=off >"$work/pg.log" 2>&1 &
  for _ in $(seq 1 240); do
    "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    sleep 0.5
  done
  "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port" || { cat "$work/pg.log" >&2; exit 1; }
  psql -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "create database test" 2>/dev/null || true
  # The processes that are not client backends (postmaster, checkpointer, writers, launchers):
  # their work follows timers, not operations, so they are left out of the count.
  { head -n 1 "$work/pg/postmaster.pid"
    psql -At -h 127.0.0.1 -p "$port" -U postgres -d postgres \
      -c "select pid from pg_stat_activity where backend_type <> 'client backend'"
  } >"$work/background.pids"
}
stop_pg() {
  # A fast shutdown lets every process write its profile.
  run_pg "$pgbin/pg_ctl" -D "$work/pg" -m fast -w -t 300 stop >/dev/null
}
server_instructions() {
  # A forked backend's profile also holds what the postmaster had counted before the fork, and
  # every connection pays its start-up: count what each client backend did in PostgresMain,
  # less InitPostgres (its start-up), so that neither the fork's timing nor the number of
  # connections the pool happened to open moves the figure.
  local sum=0
  for f in "$work"/cg/*; do
    grep -qx "$(basename "$f")" "$work/background.pids" && continue
    local out main init
    out=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null)
    main=$(awk '/\?\?\?:PostgresMain /{gsub(",","",$1); print $1; exit}' <<<"$out")
    init=$(awk '/\?\?\?:InitPostgres /{gsub(",","",$1); print $1; exit}' <<<"$out")
    [ -n "$main" ] || continue
    sum=$((sum + main - ${init:-0}))
  done
  echo "$sum"
}
client_instructions() {
  sed -n 's/^summary: //p' "$1"
}

pg_url="postgres://postgres@127.0.0.1:$port/test"
for phase in ${phases//,/ }; do
  declare -A client server
  for n in "$n1" "$n2"; do
    start_pg
    valgrind --tool=callgrind -q --callgrind-out-file="$work/client.$n" \
      "$bench" --database-url "$pg_url" --only pg --phases "$phase" --callers 1 --rounds 1 \
      --ops "$n" --json >"$work/client.$n.json"
    stop_pg
    client[$n]=$(client_instructions "$work/client.$n")
    server[$n]=$(server_instructions)
    if [ -n "${SENTINEL_BREAKDOWN_KEEP:-}" ]; then
      mkdir -p "$SENTINEL_BREAKDOWN_KEEP/$phase.$n"
      cp "$work"/cg/* "$work/background.pids" "$SENTINEL_BREAKDOWN_KEEP/$phase.$n/"
    fi
  done
  # Wire and heap figures from a run at native speed against the shared server.
  "$bench" --only pg --phases "$phase" --callers 1 --rounds 1 --ops "$n2" --json >"$work/native.json"
  python3 - "$phase" "$n1" "$n2" "${client[$n1]}" "${client[$n2]}" "${server[$n1]}" \
    "${server[$n2]}" "$work/native.json" <<'PY'
import json, sys
phase, n1, n2, c1, c2, s1, s2, native = sys.argv[1:]
n1, n2, c1, c2, s1, s2 = map(int, (n1, n2, c1, c2, s1, s2))
row = next(r for r in json.load(open(native))["results"] if r["name"] == phase)
print(json.dumps({
    "phase": phase,
    "client_instructions_per_op": round((c2 - c1) / (n2 - n1)),
    "server_instructions_per_op": round((s2 - s1) / (n2 - n1)),
    "statements_per_op": row.get("statements_per_op"),
    "bytes_sent_per_op": row.get("bytes_sent_per_op"),
    "bytes_received_per_op": row.get("bytes_received_per_op"),
    "allocs_per_op": row.get("allocs_per_op"),
}))
PY
  unset client server
done
