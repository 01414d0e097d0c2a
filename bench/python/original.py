"""Measures the original Python package (sentinel-coordination 0.5.0) the way its README uses
it: one new connection per call, single-threaded; fresh `once` calls, then replays.

Run through run.sh, which makes the virtualenv. Prints one JSON document.
"""
import json
import sys
import time
import uuid

import psycopg
from sentinel import Sentinel, init_db

URL = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/test"
DURATION = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0


def get_conn():
    return psycopg.connect(URL)


def receipt(n):
    return {"id": n, "status": "ok"}


def measure(label, op):
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < DURATION:
        op(count)
        count += 1
    elapsed = time.perf_counter() - started
    return {"name": label, "concurrency": 1, "ops_per_sec": count / elapsed}


def main():
    conn = get_conn()
    init_db(conn)
    conn.close()
    sentinel = Sentinel(get_conn=get_conn, default_ttl_ms=3000)
    run = uuid.uuid4().hex[:8]
    fresh = measure(
        "python_original_fresh",
        lambda i: sentinel.once(key=f"py-{run}-{i}", fn=receipt, kwargs={"n": i}),
    )
    replay = measure(
        "python_original_replay",
        lambda i: sentinel.once(key=f"py-{run}-{i % 500}", fn=receipt, kwargs={"n": i}),
    )
    print(json.dumps({"results": [fresh, replay]}))


if __name__ == "__main__":
    main()
