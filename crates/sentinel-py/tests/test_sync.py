"""The original Sentinel's synchronous API on the Rust engine, against every store."""

import json
import threading
import time

import pytest

import sentinel
from sentinel import Sentinel
from sentinel.errors import NotRecorded


def make(store, **kwargs):
    url, schema = store
    # memory: is one store per engine; every Sentinel of a test shares the process's engine.
    return Sentinel(url=url, schema=schema, **kwargs)


def test_runs_once_and_replays_the_stored_json(store):
    s = make(store)
    calls = []

    def charge(order_id):
        calls.append(order_id)
        return {"order": order_id, "pair": (1, 2)}

    first = s.once("charge-1", charge, kwargs={"order_id": 1})
    again = s.once(key="charge-1", fn=charge, kwargs={"order_id": 1})
    assert calls == [1]
    assert first.success and not first.cached and first.execution_alive is None
    assert again.success and again.cached
    # The first caller sees the stored JSON too, not the Python object.
    assert first.response == again.response == {"order": 1, "pair": [1, 2]}


def test_none_is_a_stored_value(store):
    s = make(store)
    assert s.once("nothing", lambda: None).response is None
    replay = s.once("nothing", lambda: pytest.fail("ran twice"))
    assert replay.success and replay.cached and replay.response is None


def test_an_exception_leaves_the_key_uncertain_and_reaches_the_caller(store):
    s = make(store)
    raised = ValueError("card declined")
    runs = []

    def charge():
        runs.append(1)
        raise raised

    r = s.once("charge-2", charge)
    assert r.exception is raised
    assert r.uncertain and not r.success and r.execution_alive is False
    assert r.reconcile is not None
    later = s.once("charge-2", charge)
    assert later.uncertain and later.exception is None and len(runs) == 1


def test_exactly_one_of_success_alive_uncertain(store):
    s = make(store)
    holding = threading.Event()
    release = threading.Event()
    results = {}

    def slow():
        holding.set()
        release.wait(10)
        return "done"

    worker = threading.Thread(target=lambda: results.setdefault("owner", s.once("k", slow)))
    worker.start()
    assert holding.wait(10)
    alive = s.once("k", lambda: pytest.fail("ran while another worker held the key"))
    release.set()
    worker.join(10)
    failed = s.once("f", lambda: 1 / 0)
    for r in (results["owner"], alive, failed, s.once("k", slow)):
        assert [bool(r.success), bool(r.execution_alive), bool(r.uncertain)].count(True) == 1, r
    assert alive.execution_alive is True and alive.response is None


def test_the_operator_completes_or_resets_an_uncertain_key(store):
    s = make(store)
    s.once("a", lambda: 1 / 0)
    s.once("b", lambda: 1 / 0)
    assert s.reconcile.reconcile("a").success
    assert s.reconcile.force_complete("a", '{"refund": 5}').success
    assert s.once("a", lambda: pytest.fail("resolved keys replay")).response == {"refund": 5}
    assert s.reconcile.reconcile("b").success
    assert s.reconcile.reset("b").success
    assert s.once("b", lambda: "ran again").response == "ran again"
    # Refused actions say so instead of raising.
    assert not s.reconcile.reconcile("a").success
    assert not s.reconcile.reset("missing").success


def test_a_result_that_is_not_json_is_not_recorded(store):
    s = make(store)
    with pytest.raises(NotRecorded) as caught:
        s.once("odd", lambda: {1, 2})
    assert caught.value.value == {1, 2} and caught.value.fencing_token > 0
    later = s.once("odd", lambda: pytest.fail("ran twice"))
    assert later.uncertain and later.reason == "not_recorded"


def test_keyboard_interrupt_leaves_the_key_uncertain_and_propagates(store):
    s = make(store)

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        s.once("ctrl-c", interrupted)
    r = s.once("ctrl-c", lambda: pytest.fail("an interrupted key ran again"))
    assert r.uncertain and r.reason == "cancelled"


def test_a_python_loop_holding_the_gil_keeps_its_lease(store):
    """With the switch interval raised past the run, the pure-Python loop keeps the GIL for
    three ttls of 1 s (no other Python thread could run): the heartbeat is Rust's and needs
    none."""
    import sys

    s = make(store)

    def busy():
        before = sys.getswitchinterval()
        sys.setswitchinterval(30.0)
        try:
            end = time.monotonic() + 3.0
            n = 0
            while time.monotonic() < end:
                n += 1
        finally:
            sys.setswitchinterval(before)
        assert n > 0
        return sentinel.current_execution().lease_lost_reason

    r = s.once("busy", busy, ttl_ms=1000)
    assert r.success and r.response is None, (r, r.exception)
    assert s.inspect("busy").state == "completed"


def test_current_execution_names_the_call(store):
    s = make(store, namespace="billing")
    seen = {}

    def fn():
        e = sentinel.current_execution()
        seen.update(key=e.key, namespace=e.namespace, token=e.fencing_token)
        return 1

    r = s.once("inv-9", fn)
    assert seen == {"key": "inv-9", "namespace": "billing", "token": r.fencing_token}
    assert sentinel.current_execution() is None


def test_namespaces_are_part_of_the_key(store):
    a = make(store, namespace="a")
    ab = make(store, namespace="a:b")
    assert a.once("b:c", lambda: "a").response == "a"
    assert ab.once("c", lambda: "ab").response == "ab"


def test_bad_input_is_a_clear_error(store):
    s = make(store)
    with pytest.raises(sentinel.errors.InvalidInput, match="key"):
        s.once("", lambda: 1)
    with pytest.raises(sentinel.errors.InvalidInput, match="on_failure"):
        s.once("k", lambda: 1, on_failure="sometimes")


def test_get_conn_gives_the_url_of_its_connection(pg_store):
    url, schema = pg_store
    import psycopg

    opened = []

    def get_conn():
        conn = psycopg.connect(url)
        opened.append(conn)
        return conn

    s = Sentinel(get_conn, schema=schema)
    assert s.once("via-conn", lambda: json.loads("[1]")).response == [1]
    assert opened and all(c.closed for c in opened)


def test_result_type_decodes_fresh_and_replayed_results(store):
    import dataclasses

    @dataclasses.dataclass
    class Receipt:
        id: int
        amount: int

    s = make(store)
    fresh = s.once("r", lambda: {"id": 1, "amount": 250}, result_type=Receipt)
    replay = s.once("r", lambda: pytest.fail("ran twice"), result_type=Receipt)
    assert fresh.response == replay.response == Receipt(1, 250)


def test_the_decorator_derives_the_key_from_the_arguments(store):
    s = make(store)
    charged = []

    @s.once_fn(key=lambda order_id, amount: f"charge-{order_id}")
    def charge(order_id, amount):
        charged.append(order_id)
        return amount

    assert charge(7, 100).response == 100
    assert charge(order_id=7, amount=100).cached
    assert charged == [7]


def test_the_operator_api_inspects_and_settles_with_token_checks(store):
    s = make(store)
    s.once("pay", lambda: 1 / 0)
    record = s.inspect("pay")
    assert record.state == "uncertain" and record.reason == "failed"
    first = s.reconcile("pay")
    second = s.reconcile("pay", force=True)  # another operator takes over
    assert second > first
    with pytest.raises(sentinel.errors.Refused):
        s.resolve("pay", complete=True, result={"paid": True}, token=first)
    s.resolve("pay", complete=True, result={"paid": True}, token=second, reason="provider says paid")
    assert s.once("pay", lambda: pytest.fail("ran again")).response == {"paid": True}
    events = [e.event for e in s.history("pay")]
    assert events == ["acquired", "uncertain", "reconciling", "reconciling", "resolved"]
    assert [r.key for r in s.list(state="completed")] == ["pay"]
    s.forget("pay")
    assert s.inspect("pay") is None


def test_a_fingerprint_guards_the_key(store):
    s = make(store)
    assert s.once("fp", lambda: 1, fingerprint="amount=100").success
    assert s.once("fp", lambda: 2, fingerprint="amount=100").response == 1
    with pytest.raises(sentinel.errors.FingerprintMismatch):
        s.once("fp", lambda: 3, fingerprint="amount=999")


def test_wait_blocks_until_the_owner_finishes_then_replays(store):
    s = make(store)
    inside = threading.Event()
    go = threading.Event()

    def slow():
        inside.set()
        go.wait(10)
        return "done"

    owner = threading.Thread(target=lambda: s.once("w", slow))
    owner.start()
    assert inside.wait(10)
    threading.Timer(0.2, go.set).start()
    waited = s.once("w", lambda: pytest.fail("a waiter ran it"), wait=10)
    owner.join(10)
    assert waited.success and waited.cached and waited.response == "done"


def test_a_lost_lease_is_logged(store, caplog):
    s = make(store)

    def outlives_its_ceiling():
        end = time.monotonic() + 5
        while not sentinel.current_execution().lease_lost and time.monotonic() < end:
            time.sleep(0.01)
        return "late"

    with caplog.at_level("WARNING", logger="sentinel"):
        s.once("late", outlives_its_ceiling, ttl_ms=200, hard_ttl_ms=300)
    assert any("lease was lost" in r.getMessage() for r in caplog.records)


def test_store_errors_are_typed(tmp_path):
    import socket

    with socket.socket() as free:  # a port nobody listens on any more
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(sentinel.errors.StoreUnavailable, match="connection refused") as refused:
        Sentinel(url=f"postgres://postgres:s3cret@127.0.0.1:{port}/test").once("k", lambda: 1)
    assert "s3cret" not in str(refused.value) and "s3cret" not in repr(refused.value)
    with pytest.raises(sentinel.errors.InvalidInput):
        Sentinel(url="mysql://nope")


def test_a_record_written_from_python_is_read_by_the_cli(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    cli = Path(__file__).resolve().parents[3] / "target" / "debug" / "sentinel"
    if not cli.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{cli} is missing: scripts/test builds it before the Python tests")
        pytest.skip("the sentinel command is not built")
    url = f"sqlite://{tmp_path}/shared.db"
    s = Sentinel(url=url, namespace="jobs")
    assert s.once("nightly", lambda: {"rows": 3}).success
    shown = subprocess.run(
        [str(cli), "--database-url", url, "--namespace", "jobs", "inspect", "nightly", "--json"],
        capture_output=True, text=True, timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["state"] == "completed"
    # And the other way: a key the CLI ran replays in Python.
    ran = subprocess.run(
        [str(cli), "--database-url", url, "--namespace", "jobs", "run", "--key", "cli-job", "--", "echo", "hi"],
        capture_output=True, text=True, timeout=30,
    )
    assert ran.returncode == 0, ran.stderr
    replay = s.once("cli-job", lambda: pytest.fail("the CLI's run ran again"))
    assert replay.cached and replay.response["stdout"] == "hi\n"


def test_a_missing_schema_says_how_to_create_it(pg_store):
    url, _ = pg_store
    with pytest.raises(sentinel.errors.SchemaMissing, match="init"):
        Sentinel(url=url, schema="sentinel_never_made").once("k", lambda: 1)


def test_result_type_takes_a_pydantic_model(store):
    import pydantic  # installed by scripts/python-test

    class Receipt(pydantic.BaseModel):
        id: int
        note: str

    s = make(store)
    fresh = s.once("p", lambda: {"id": 2, "note": "ok"}, result_type=Receipt)
    replay = s.once("p", lambda: pytest.fail("ran twice"), result_type=Receipt)
    assert fresh.response == replay.response == Receipt(id=2, note="ok")


def test_the_decorators_key_may_take_some_of_the_arguments(store):
    s = make(store)

    @s.once_fn(key=lambda order_id: f"charge-{order_id}")
    def charge(order_id, amount):
        return amount

    assert charge(8, amount=5).response == 5
    assert charge(8, amount=6).cached


def test_reconcile_after_fork_uses_the_childs_engine(tmp_path):
    import os

    s = Sentinel(url=f"sqlite://{tmp_path}/fork-reconcile.db")
    s.once("u", lambda: 1 / 0)
    pid = os.fork()
    if pid == 0:
        ok = s.reconcile.reconcile("u").success and s.reconcile.reset("u").success
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert s.once("u", lambda: "again").response == "again"


def test_a_gevent_like_interrupt_leaves_the_key_uncertain(store):
    class Timeout(BaseException):
        """Like gevent.Timeout: not an Exception."""

    s = make(store)

    def interrupted():
        raise Timeout

    with pytest.raises(Timeout):
        s.once("gevent", interrupted)
    r = s.once("gevent", lambda: pytest.fail("ran again"))
    assert r.uncertain and r.reason == "cancelled"


def test_a_huge_failure_message_is_cut_not_lost(store):
    s = make(store)

    def loud():
        raise ValueError("x" * 2_000_000)

    with pytest.raises(ValueError):
        s.once("loud", loud, on_failure="record")
    with pytest.raises(sentinel.errors.RecordedFailure) as replay:
        s.once("loud", loud, on_failure="record")
    assert replay.value.error["type"] == "ValueError"
    assert len(replay.value.error["message"]) <= 16 * 1024


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s: s.once(42, lambda: 1), "key must be a str"),
        (lambda s: s.once("k", "not callable"), "fn must be callable"),
        (lambda s: s.once("k", lambda **kw: 1, kwargs=[1, 2]), "kwargs must be a dict"),
        (lambda s: s.once("k", lambda: 1, ttl_ms="3000"), "ttl_ms must be a non-negative number"),
        (lambda s: s.once("k", lambda: 1, ttl_ms=-5), "ttl_ms must be a non-negative number"),
        (lambda s: s.once("k", lambda: 1, ttl_ms=float("nan")), "ttl_ms must be a non-negative number"),
        (lambda s: s.once("k", lambda: 1, ttl_ms=True), "ttl_ms must be a non-negative number"),
        (lambda s: s.once("k", lambda: 1, ttl_ms=10), "ttl"),
        (lambda s: s.once("k", lambda: 1, hard_ttl_ms=[1]), "hard_ttl_ms must be"),
        (lambda s: s.once("k", lambda: 1, on_failure=3), "on_failure must be a str"),
        (lambda s: s.once("k", lambda: 1, fingerprint=3), "fingerprint must be bytes or str"),
        (lambda s: s.once("k", lambda: 1, wait="long"), "wait must be a number"),
        (lambda s: s.once("", lambda: 1), "key"),
    ],
)
def test_bad_arguments_are_invalid_input_and_claim_nothing(store, call, message):
    s = make(store)
    with pytest.raises(sentinel.errors.InvalidInput, match=message):
        call(s)
    assert s.inspect("k") is None
    assert s.once("k", lambda: "fine").response == "fine"


def test_the_originals_number_forms_are_accepted(store):
    """The original took any number of milliseconds and raised a hard ttl below the ttl to it."""
    s = make(store)
    r = s.once("floaty", lambda: 1, ttl_ms=1500.0, hard_ttl_ms=100)
    assert r.success
    record = s.inspect("floaty")
    assert record is not None and record.state == "completed"


def test_a_bad_url_fails_at_construction_without_connecting():
    with pytest.raises(sentinel.errors.InvalidInput, match="unknown database URL"):
        Sentinel(url="mysql://nope")
    with pytest.raises(ValueError, match="get_conn= or url="):
        Sentinel()


def test_a_coroutine_function_is_refused_before_a_claim(store):
    s = make(store)

    async def charge():
        return 1

    with pytest.raises(sentinel.errors.InvalidInput, match="AsyncSentinel"):
        s.once("k", charge)
    assert s.inspect("k") is None


def test_a_server_slow_to_answer_delays_only_its_own_callers(tmp_path):
    """Making an engine connects under a lock of that URL's own: while one thread waits on a
    server that accepts but never answers, another opens its SQLite engine."""
    import socket

    from sentinel import _engine

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted = threading.Event()
    held = []

    def accept():
        conn, _ = silent.accept()
        held.append(conn)  # kept open, never answered
        accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    port = silent.getsockname()[1]
    slow = threading.Thread(
        target=lambda: pytest.raises(
            sentinel.errors.SentinelError, _engine.engine, f"postgres://postgres@127.0.0.1:{port}/test?connect_timeout=5"
        ),
        daemon=True,
    )
    slow.start()
    try:
        assert accepted.wait(10), "the engine never connected to the silent server"
        assert _engine.engine(f"sqlite://{tmp_path}/fast.db") is not None
        assert slow.is_alive(), "the SQLite engine waited for the silent server"
    finally:
        for c in held:
            c.close()
        silent.close()
        slow.join(30)
