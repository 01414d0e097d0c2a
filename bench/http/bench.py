"""The HTTP middleware benchmark: both example servers of HTTP.md, with and without the
Idempotency-Key middleware, on PostgreSQL and SQLite, loaded with wrk on loopback; then the
statements each request costs, counted on the wire by the counting proxy.

Run it through bench/http/run.sh, which builds what it needs:
    python bench/http/bench.py --pg URL --seconds S --rounds R
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple
from contextlib import contextmanager

import httpx

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "bench" / "http" / "request.lua"
RUST_SERVER = ROOT / "target" / "release" / "examples" / "server"
COUNT_PROXY = ROOT / "target" / "release" / "examples" / "count-proxy"
BODY = b'{"amount":5,"currency":"eur"}'


def server_command(kind: str, url: str, bare: bool) -> List[str]:
    """The command that serves the example app of `kind` (rust or python) on `url`."""
    if kind == "rust":
        cmd = [str(RUST_SERVER)]
    else:
        cmd = [sys.executable, "-m", "sentinel.integrations.asgi.example"]
    cmd += ["--listen", "127.0.0.1:0", "--database-url", url]
    if bare:
        cmd.append("--no-middleware")
    return cmd


@contextmanager
def serving(kind: str, url: str, bare: bool, env: Dict[str, str]) -> Iterator[str]:
    """Starts a server and yields its base URL once it has announced its address."""
    proc = subprocess.Popen(
        server_command(kind, url, bare),
        stdout=subprocess.PIPE,
        env={**os.environ, **env},
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            raise SystemExit(f"the {kind} server did not start (exit {proc.wait()}): {line!r}")
        yield line.split()[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def post(client: httpx.Client, key: str) -> None:
    r = client.post("/payments", content=BODY, headers={"Idempotency-Key": key, "Content-Type": "application/json"})
    if r.status_code != 201:
        raise SystemExit(f"POST /payments answered {r.status_code}: {r.text[:200]}")


def wrk(base: str, connections: int, seconds: int, mode: str, arg: str) -> Dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA), base, "--", mode, arg],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["errors"] or result["non_2xx"]:
        raise SystemExit(f"wrk saw errors ({mode}, {connections} connections): {result}")
    return {
        "rps": result["requests"] / result["seconds"],
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
    }


def stores(pg: str, scratch: Path) -> Iterator[Tuple[str, str, Dict[str, str]]]:
    """Each store a new one: a PostgreSQL schema or a SQLite file of its own."""
    yield "postgres", pg, {"SENTINEL_PG_SCHEMA": "bench_http_" + uuid.uuid4().hex[:10]}
    yield "sqlite", f"sqlite://{scratch / (uuid.uuid4().hex + '.db')}", {}


def drop_schemas(pg: str) -> None:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_http_%'").fetchall()
        for (name,) in rows:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def load(args: argparse.Namespace, scratch: Path) -> List[Dict[str, object]]:
    rows: List[Dict[str, object]] = []
    for round_ in range(1, args.rounds + 1):
        for kind in ("rust", "python"):
            for store, url, env in stores(args.pg, scratch):
                print(f"round {round_}/{args.rounds}: {kind} on {store}", file=sys.stderr)
                for bare in (True, False):
                    with serving(kind, url, bare, env) as base:
                        replay_key = "replay-" + uuid.uuid4().hex
                        with httpx.Client(base_url=base) as client:
                            for i in range(50):  # warm: connections, caches, the JIT-less rest
                                post(client, f"warm-{uuid.uuid4().hex}")
                            post(client, replay_key)
                        for c in args.connections:
                            modes = [("bare", "fresh", uuid.uuid4().hex)] if bare else [
                                ("fresh", "fresh", uuid.uuid4().hex),
                                ("replay", "replay", replay_key),
                            ]
                            for name, mode, arg in modes:
                                r = wrk(base, c, args.seconds, mode, arg)
                                rows.append({"server": kind, "store": store, "mode": name, "c": c, **r})
    return rows


def counts(proxy: "subprocess.Popen[str]") -> Dict[str, int]:
    assert proxy.stdin is not None and proxy.stdout is not None
    proxy.stdin.write("\n")
    proxy.stdin.flush()
    return json.loads(proxy.stdout.readline())


def statements(args: argparse.Namespace) -> List[Dict[str, object]]:
    """Statements per request on the wire, after a warm-up, over sequential requests."""
    proxy = subprocess.Popen([str(COUNT_PROXY), args.pg_addr], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proxy.stdout is not None
    addr = proxy.stdout.readline().split()[-1]
    dbname = args.pg.rsplit("/", 1)[-1]
    url = f"postgres://postgres@{addr}/{dbname}"
    n = 200
    rows: List[Dict[str, object]] = []
    try:
        for kind in ("rust", "python"):
            for bare in (True, False):
                env = {"SENTINEL_PG_SCHEMA": "bench_http_" + uuid.uuid4().hex[:10]}
                with serving(kind, url, bare, env) as base, httpx.Client(base_url=base) as client:
                    replay_key = "replay-" + uuid.uuid4().hex
                    for i in range(20):
                        post(client, f"warm-{uuid.uuid4().hex}")
                    post(client, replay_key)
                    before = counts(proxy)
                    for i in range(n):
                        post(client, f"fresh-{uuid.uuid4().hex}")
                    middle = counts(proxy)
                    for i in range(n):
                        post(client, replay_key)
                    after = counts(proxy)
                fresh = {k: (middle[k] - before[k]) / n for k in before}
                replay = {k: (after[k] - middle[k]) / n for k in before}
                rows.append({"server": kind, "middleware": not bare, "fresh": fresh, "replay": replay})
    finally:
        assert proxy.stdin is not None
        proxy.stdin.close()
        proxy.wait(10)
    return rows


def summary(rows: List[Dict[str, object]], wire: List[Dict[str, object]], args: argparse.Namespace) -> str:
    out = [
        f"{args.rounds} rounds of {args.seconds} s per cell, medians; wrk -t1 -cC on loopback, "
        "POST /payments with a 29-byte JSON body; bare = the same app with --no-middleware.",
        "",
        "| server | store | C | bare req/s | fresh req/s (× bare) | replay req/s (× bare) "
        "| p50 bare / fresh / replay ms | p99 bare / fresh / replay ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    def med(server: str, store: str, mode: str, c: int, field: str) -> float:
        return statistics.median(float(r[field]) for r in rows  # type: ignore[arg-type]
                                 if (r["server"], r["store"], r["mode"], r["c"]) == (server, store, mode, c))
    for server in ("rust", "python"):
        for store in ("postgres", "sqlite"):
            for c in args.connections:
                b, f, r = (med(server, store, m, c, "rps") for m in ("bare", "fresh", "replay"))
                p50 = " / ".join(f"{med(server, store, m, c, 'p50_ms'):.2f}" for m in ("bare", "fresh", "replay"))
                p99 = " / ".join(f"{med(server, store, m, c, 'p99_ms'):.2f}" for m in ("bare", "fresh", "replay"))
                out.append(f"| {server} | {store} | {c} | {b:,.0f} | {f:,.0f} ({f / b:.2f}) | {r:,.0f} ({r / b:.2f}) | {p50} | {p99} |")
    out += [
        "",
        "Statements per request on the wire (PostgreSQL, through the counting proxy, 200 sequential "
        "requests after a warm-up):",
        "",
        "| server | middleware | fresh | replay |",
        "| --- | --- | ---: | ---: |",
    ]
    for w in wire:
        fresh, replay = w["fresh"], w["replay"]
        out.append(
            f"| {w['server']} | {'yes' if w['middleware'] else 'no'} | "
            f"{fresh['statements']:.2f} | {replay['statements']:.2f} |"  # type: ignore[index]
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    args = parser.parse_args()
    host = args.pg.split("@", 1)[-1].split("/", 1)[0]
    args.pg_addr = host if ":" in host else host + ":5432"
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    scratch = Path(tempfile.mkdtemp(prefix="sentinel-bench-http-"))
    try:
        wire = statements(args)
        rows = load(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        drop_schemas(args.pg)
    print(summary(rows, wire, args))


if __name__ == "__main__":
    main()
