"""Measures whichever ``sentinel`` package is installed, used the way the original's README uses
it: ``Sentinel(get_conn=..., default_ttl_ms=3000)`` and ``once(key=, fn=, kwargs=)``. The same
file runs against the original (``sentinel-coordination`` 0.5.0) and against ours, so the code
under test is identical.

    python bench.py URL LABEL [SECONDS] [THREADS]

Fresh calls use a new key each; replays cycle through keys completed before the phase. One
``Sentinel`` is shared by the threads. Every call's result is checked (a fresh call must run,
a replay must not). Prints one JSON document.
"""
import json
import os
import sys
import threading
import time

import psycopg
from sentinel import Sentinel, init_db

URL = sys.argv[1]
LABEL = sys.argv[2]
DURATION = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
THREADS = [int(t) for t in (sys.argv[4] if len(sys.argv) > 4 else "1,8").split(",")]
REPLAY_KEYS = 1000


def get_conn():
    return psycopg.connect(URL)


def receipt(n):
    return {"id": n, "status": "ok"}


def measure(threads, op):
    """Runs ``op(thread, i)`` on ``threads`` threads for DURATION: (ops/s, p50 µs, p99 µs)."""
    latencies = [[] for _ in range(threads)]
    errors = []
    barrier = threading.Barrier(threads + 1)
    clock = {}

    def worker(t):
        barrier.wait()
        deadline = clock["start"] + DURATION
        mine = latencies[t]
        i = 0
        try:
            while True:
                began = time.perf_counter()
                if began >= deadline:
                    break
                op(t, i)
                mine.append(time.perf_counter() - began)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported after the phase
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    clock["start"] = time.perf_counter()
    barrier.wait()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - clock["start"]
    if errors:
        raise errors[0]
    every = sorted(x for mine in latencies for x in mine)
    pct = lambda p: every[min(int(len(every) * p), len(every) - 1)] * 1e6 if every else 0.0  # noqa: E731
    return len(every) / elapsed, pct(0.50), pct(0.99)


def main():
    conn = get_conn()
    init_db(conn)
    conn.close()
    sentinel = Sentinel(get_conn=get_conn, default_ttl_ms=3000)
    run = f"{os.getpid()}-{time.time_ns()}"

    def call(key, n, replay):
        result = sentinel.once(key=key, fn=receipt, kwargs={"n": n})
        if not result.success or result.response != receipt(n if not replay else result.response["id"]):
            raise AssertionError(f"{key}: unexpected result {vars(result)}")
        if bool(result.cached) != replay:
            raise AssertionError(f"{key}: cached={result.cached}, expected {replay}")

    keys = [f"py-{run}-r-{j}" for j in range(REPLAY_KEYS)]
    for j, key in enumerate(keys):
        call(key, j, False)

    results = []
    for threads in THREADS:
        fresh = measure(threads, lambda t, i: call(f"py-{run}-f{threads}-{t}-{i}", i, False))
        replay = measure(threads, lambda t, i: call(keys[(t * 7919 + i) % REPLAY_KEYS], i, True))
        for phase, (ops, p50, p99) in (("fresh", fresh), ("replay", replay)):
            results.append(
                {"name": f"{LABEL}_{phase}", "concurrency": threads, "ops_per_sec": ops, "p50_us": p50, "p99_us": p99}
            )
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
