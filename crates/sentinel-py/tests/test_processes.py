"""At most once across threads and processes, counted outside Sentinel: racing threads each with
a Sentinel of its own, processes racing on one SQLite file, a process SIGKILLed mid-function,
and a function that holds the GIL inside C for several ttls."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from sentinel import Sentinel


def test_racing_threads_each_with_its_own_sentinel_run_it_once(store):
    url, schema = store
    threads = 8
    ran, answered, results = [], [], [None] * threads
    answers = threading.Condition()
    barrier = threading.Barrier(threads)

    def charge():
        ran.append(1)
        # Hold the key until every other thread has had its answer: they truly overlapped.
        with answers:
            assert answers.wait_for(lambda: len(answered) >= threads - 1, timeout=30)
        return {"charged": True}

    def worker(i):
        s = Sentinel(url=url, schema=schema)
        barrier.wait()
        results[i] = s.once("race", charge)
        with answers:
            answered.append(i)
            answers.notify_all()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert len(ran) == 1
    fresh = [r for r in results if r is not None and r.success and not r.cached]
    alive = [r for r in results if r is not None and r.execution_alive]
    assert len(fresh) == 1 and len(alive) == threads - 1, [vars(r) for r in results if r]
    assert Sentinel(url=url, schema=schema).once("race", lambda: pytest.fail("ran again")).response == {"charged": True}


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from sentinel import Sentinel
    url, schema, key, ledger, mode = sys.argv[1:6]
    s = Sentinel(url=url, schema=None if schema == "-" else schema)

    def work():
        with open(ledger, "a") as f:
            f.write(key + "\\n")
        print("started", flush=True)
        if mode == "hang":
            time.sleep(3600)
        time.sleep(1.0)  # a window for the other processes, not a synchronisation
        return {"by": sys.argv[0]}

    if mode == "race":
        sys.stdin.readline()  # the parent's "go" to every process at once
    r = s.once(key, work, ttl_ms=300)
    print(json.dumps({"success": r.success, "cached": r.cached, "alive": r.execution_alive, "uncertain": r.uncertain}), flush=True)
    """
)


def child(url, schema, key, ledger, mode):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, schema or "-", key, str(ledger), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_process_killed_mid_function_leaves_the_key_uncertain(kind, tmp_path, request):
    if kind == "sqlite":
        url, schema = f"sqlite://{tmp_path}/killed.db", None
    else:
        url, schema = request.getfixturevalue("pg_store")
    ledger = tmp_path / "ledger"
    victim = child(url, schema, "payment-1", ledger, "hang")
    try:
        assert victim.stdout.readline().strip() == "started", victim.stderr.read()
    finally:
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
    s = Sentinel(url=url, schema=schema)
    deadline = time.monotonic() + 20
    while True:  # alive until its lease (300 ms) runs out, then uncertain: never re-run
        r = s.once("payment-1", lambda: pytest.fail("a killed payment ran again"))
        if not r.execution_alive:
            break
        assert time.monotonic() < deadline, "the dead worker's lease never expired"
        time.sleep(0.05)
    assert r.uncertain and not r.success and r.reconcile is not None
    assert ledger.read_text().splitlines() == ["payment-1"]
    record = s.inspect("payment-1")
    assert record is not None and record.state == "uncertain"


def test_processes_racing_on_one_sqlite_file_run_it_once(tmp_path):
    url = f"sqlite://{tmp_path}/shared.db"
    Sentinel(url=url).inspect("warm-up")  # the schema exists before the race
    ledger = tmp_path / "ledger"
    procs = [child(url, None, "nightly", ledger, "race") for _ in range(4)]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outcomes.append(json.loads(out.strip().splitlines()[-1]))
    assert ledger.read_text().splitlines() == ["nightly"]
    fresh = [o for o in outcomes if o["success"] and not o["cached"]]
    assert len(fresh) == 1, outcomes
    assert all(o["success"] or o["alive"] for o in outcomes), outcomes
    assert Sentinel(url=url).once("nightly", lambda: pytest.fail("ran again")).cached


def test_a_function_holding_the_gil_in_c_keeps_its_lease(store):
    """``sum(range(n))`` runs in C without releasing the GIL; for three ttls nothing in Python
    runs (the switch interval is raised past the run, so not even between the calls), yet the
    heartbeat (Sentinel's Rust thread) keeps the lease. The lease is 1 s, not shorter: a 300 ms
    one leaves each renewal 140 ms, which an fsync under a busy disk can exceed."""
    import sys

    url, schema = store
    n = 2_000_000
    while True:  # one call of about 300 ms
        began = time.perf_counter()
        sum(range(n))
        took = time.perf_counter() - began
        if took > 0.1:
            break
        n *= 4
    n = int(n * 0.3 / took)
    s = Sentinel(url=url, schema=schema)

    def in_c():
        before = sys.getswitchinterval()
        sys.setswitchinterval(30.0)
        try:
            end = time.perf_counter() + 3.0
            while time.perf_counter() < end:
                sum(range(n))
        finally:
            sys.setswitchinterval(before)
        return __import__("sentinel").current_execution().lease_lost_reason

    r = s.once("in-c", in_c, ttl_ms=1000)
    assert r.success and r.response is None, (r, r.exception)
