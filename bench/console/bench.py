"""Page load times of the operator console on a store of N records (default 100 000).

Populates a fresh store through the Python package (the engine itself: 99% completed with a
small JSON result, 1% left uncertain by a failing function, half of those then taken into
reconciliation; spread over
four namespaces, two events per record and more for the unsettled ones), starts the release
`sentinel serve` on it, and times each page and API call over keep-alive HTTP: the median and
the largest of R requests after one warm-up, beside a static asset of the same server as the
baseline measured in the same run. Usage: bench.py URL [N] [R] (a PostgreSQL URL gets a schema
of its own, dropped afterwards)."""

import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "target" / "release" / "sentinel"
NAMESPACES = ["payments", "webhooks", "jobs", "mail"]


def populate(url, schema, n):
    from sentinel import Sentinel

    logging.disable(logging.WARNING)  # one warning per failing function otherwise
    engines = {ns: Sentinel(url=url, schema=schema, namespace=ns) for ns in NAMESPACES}

    def one(i):
        ns = NAMESPACES[i % len(NAMESPACES)]
        key = f"{ns[:-1]}-{i:07d}"
        if i % 101 == 7:
            def fail():
                raise RuntimeError("gateway timeout")
            engines[ns].once(key, fail)
        else:
            engines[ns].once(key, lambda: {"id": i, "status": "ok", "amount_cents": 1299})
        return ns, key

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(one, range(n), chunksize=256))
    print(f"populated {n} records in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return made


def serve(url, env):
    p = subprocess.Popen([str(CLI), "--database-url", url, "serve", "--listen", "127.0.0.1:0"],
                         env=env, stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    if "console on http://" not in line:
        p.kill()
        raise SystemExit(f"serve did not start: {line}")
    threading.Thread(target=p.stderr.read, daemon=True).start()
    return p, line.split("console on ", 1)[1].split("/ ", 1)[0]


def timed(client, path, rounds):
    client.get(path).raise_for_status()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return statistics.median(times), max(times), len(r.content)


def main():
    url = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    env = dict(os.environ, SENTINEL_ACTOR="bench")
    schema = None
    if url.startswith("postgres"):
        schema = "sentinel_console_bench_" + uuid.uuid4().hex[:8]
        env["SENTINEL_PG_SCHEMA"] = schema
        subprocess.run([str(CLI), "--database-url", url, "init"], env=env, check=True, capture_output=True)
    made = populate(url, schema, n)
    uncertain = [(ns, k) for i, (ns, k) in enumerate(made) if i % 101 == 7]
    for ns, key in uncertain[: max(1, n // 100) // 2]:
        subprocess.run([str(CLI), "--database-url", url, "--namespace", ns, "reconcile", key,
                        "--reason", "bench"], env=env, check=True, capture_output=True)
    process, base = serve(url, env)
    ns, key = uncertain[-1]
    pages = [
        ("static asset (baseline)", "/assets/console.css"),
        ("overview page", "/"),
        ("list page, by key", "/records"),
        ("list page, uncertain, oldest first", "/records?state=uncertain&sort=oldest"),
        ("list page, newest first", "/records?sort=newest"),
        ("list page, key prefix", f"/records?namespace={ns}&prefix={key[:-3]}"),
        ("record page", f"/record?namespace={ns}&key={key}"),
        ("API overview", "/api/v1/overview"),
        ("API list, 500, oldest first", "/api/v1/records?sort=oldest&limit=500"),
        ("metrics", "/metrics"),
    ]
    rows = []
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            for name, path in pages:
                rows.append((name, path, *timed(c, path, rounds)))
    finally:
        process.terminate()
        process.wait(10)
        if schema:
            import psycopg
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    base_ms = rows[0][2]
    print(json.dumps({"store": url.split(":", 1)[0], "records": n, "rounds": rounds,
                      "pages": [{"name": r[0], "path": r[1], "median_ms": round(r[2], 2),
                                 "max_ms": round(r[3], 2), "bytes": r[4],
                                 "x_baseline": round(r[2] / base_ms, 1)} for r in rows]}))


if __name__ == "__main__":
    main()
