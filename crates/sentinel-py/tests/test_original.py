"""The original package's documented usage, as its users wrote it, against PostgreSQL: the
default schema, psycopg connections from get_conn, the reading pattern of its README."""

import asyncio
import os
import uuid

import psycopg
import pytest

import sentinel.heartbeat_config
from conftest import PG_URL, _pg_reachable


@pytest.fixture(autouse=True)
def postgres():
    if not _pg_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
        pytest.skip("PostgreSQL is not reachable")
    yield
    sentinel.heartbeat_config.shutdown_manager()


def test_the_originals_getting_started_runs_unchanged():
    from sentinel import Sentinel, init_db

    def get_conn():
        return psycopg.connect(PG_URL)

    conn = get_conn()
    init_db(conn)
    conn.close()

    sentinel = Sentinel(get_conn=get_conn, default_ttl_ms=3000)
    charged = []

    def process_payment(amount, customer_id):
        charged.append((amount, customer_id))
        return {"ok": True, "payment_id": "pay_123"}

    key = f"payment-order-{uuid.uuid4().hex}"  # unique per run: the schema is shared

    def handle():
        result = sentinel.once(
            key=key,
            fn=process_payment,
            kwargs={"amount": 99_00, "customer_id": "cus_abc"},
            ttl_ms=3000,
            hard_ttl_ms=30000,
        )
        if result.execution_alive:
            return "busy"
        elif result.uncertain:
            return "uncertain"
        else:
            return result.response

    assert handle() == {"ok": True, "payment_id": "pay_123"}
    assert handle() == {"ok": True, "payment_id": "pay_123"}
    assert charged == [(99_00, "cus_abc")]


def test_the_originals_async_usage_runs_unchanged():
    from sentinel import AsyncSentinel, async_init_db

    async def get_conn():
        return await psycopg.AsyncConnection.connect(PG_URL)

    async def process_payment(amount, customer_id):
        await asyncio.sleep(0)
        return {"ok": True, "amount": amount}

    async def main():
        conn = await get_conn()
        await async_init_db(conn)
        await conn.close()
        sentinel = AsyncSentinel(get_conn=get_conn, default_ttl_ms=3000)
        key = f"payment-order-{uuid.uuid4().hex}"
        first = await sentinel.once(
            key=key,
            fn=process_payment,
            kwargs={"amount": 99_00, "customer_id": "cus_abc"},
            ttl_ms=3000,
            hard_ttl_ms=30000,
        )
        again = await sentinel.once(key=key, fn=process_payment, kwargs={"amount": 1, "customer_id": "x"})
        return first, again

    first, again = asyncio.run(main())
    assert first.response == again.response == {"ok": True, "amount": 99_00}
    assert again.cached


def test_an_engine_made_before_fork_is_rebuilt_in_the_child(tmp_path):
    from sentinel import Sentinel

    s = Sentinel(url=f"sqlite://{tmp_path}/fork.db")
    assert s.once("before", lambda: 1).success  # the parent's engine is running
    pid = os.fork()
    if pid == 0:  # the child: its inherited engine has no threads; a new one is made
        ok = s.once("in-child", lambda: 2).response == 2 and s.once("before", lambda: 9).response == 1
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert s.once("in-child", lambda: 3).response == 2


def test_a_database_with_the_originals_records_is_refused_until_reviewed():
    """Swapping packages must not re-run what the original completed: its table is not read
    here, so a database that still holds it is refused until someone says it may be ignored."""
    from sentinel import Sentinel, init_db
    from sentinel.errors import OriginalRecordsFound

    schema = "orig_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"CREATE TABLE {schema}.sentinel_leases (key text PRIMARY KEY, status text)")
        admin.execute(f"INSERT INTO {schema}.sentinel_leases VALUES ('payment-order-1', 'completed')")

    def get_conn():
        return psycopg.connect(PG_URL, options=f"-c search_path={schema}")

    try:
        with pytest.raises(OriginalRecordsFound, match="1 records of the original"):
            Sentinel(get_conn=get_conn).once("payment-order-1", lambda: pytest.fail("ran again"))
        conn = get_conn()
        with pytest.raises(OriginalRecordsFound):
            init_db(conn)
        conn.close()
        s = Sentinel(get_conn=get_conn, ignore_original_records=True)
        assert s.once(f"k-{uuid.uuid4().hex}", lambda: 1).success
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def test_the_constructor_never_connects_and_the_url_is_derived_once():
    """A module-level Sentinel (the original's usage) imports with the database down; the first
    call derives the URL, later calls reuse it."""
    from sentinel import Sentinel

    opened = []

    def get_conn():
        opened.append(1)
        return psycopg.connect(PG_URL)

    s = Sentinel(get_conn=get_conn)
    assert opened == []
    key = f"lazy-{uuid.uuid4().hex}"
    assert s.once(key, lambda: 1).success
    assert s.once(key, lambda: pytest.fail("ran again")).cached
    assert opened == [1]


def test_the_originals_operator_objects_take_its_get_conn():
    """``Reconcile(get_conn, namespace)`` / ``AsyncReconcile(get_conn, namespace)``, as the
    original made them, taking keys in the original's stored form ``"ns:key"``, and
    ``sentinel.logging`` / ``heartbeat_config.get_manager``."""
    from sentinel import Sentinel
    from sentinel.async_reconcilliation import AsyncReconcile
    from sentinel.heartbeat_config import get_manager
    from sentinel.logging import logger
    from sentinel.reconciliation import Reconcile

    assert logger.name == "sentinel"
    assert get_manager() is get_manager(lambda: None)
    s = Sentinel(get_conn=lambda: psycopg.connect(PG_URL), namespace="ops")
    key = f"op-{uuid.uuid4().hex}"
    assert s.once(key, lambda: 1 / 0).uncertain
    sync = Reconcile(lambda: psycopg.connect(PG_URL), namespace="ops")
    assert sync.reconcile(f"ops:{key}").success
    assert sync.force_complete(f"ops:{key}", '{"done": true}').success
    assert s.once(key, lambda: pytest.fail("ran again")).response == {"done": True}

    other = f"op-{uuid.uuid4().hex}"
    assert s.once(other, lambda: 1 / 0).uncertain

    async def operate():
        async def get_conn():
            return await psycopg.AsyncConnection.connect(PG_URL)

        r = AsyncReconcile(get_conn, namespace="ops")
        assert (await r.reconcile(f"ops:{other}")).success
        assert (await r.reset(other)).success  # the key as our own API names it, too

    asyncio.run(operate())
    assert s.once(other, lambda: "ran").response == "ran"


def test_sen_inspects_and_shows_history(tmp_path):
    """The original's ``sen`` command, reading DATABASE_URL."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from sentinel import Sentinel

    sen = Path(sys.executable).parent / "sen"
    assert sen.exists() or shutil.which("sen"), "the sen console script is installed with the package"
    url = f"sqlite://{tmp_path}/sen.db"
    assert Sentinel(url=url).once("payment-order-789", lambda: {"ok": True}).success
    env = dict(os.environ, DATABASE_URL=url)
    shown = subprocess.run([str(sen), "inspect", "payment-order-789"], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "status:           completed" in shown.stdout and "{'ok': True}" in shown.stdout
    history = subprocess.run([str(sen), "history", "payment-order-789", "--limit", "20"], env=env, capture_output=True, text=True, timeout=60)
    assert history.returncode == 0, history.stderr
    assert "(2 events)" in history.stdout and "completed" in history.stdout
    missing = subprocess.run([str(sen), "inspect", "nope"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 0 and "No lease found for key: nope" in missing.stdout
    assert Sentinel(url=url, namespace="payments").once("order-7", lambda: 7).success
    prefixed = subprocess.run([str(sen), "inspect", "payments:order-7"], env=env, capture_output=True, text=True, timeout=60)
    assert prefixed.returncode == 0 and "execution_result: 7" in prefixed.stdout, prefixed.stdout
    unset = subprocess.run([str(sen), "inspect", "k"], env={k: v for k, v in env.items() if k != "DATABASE_URL"}, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert unset.returncode == 1 and "No DATABASE_URL found" in unset.stderr


def test_import_original_carries_its_records_over():
    """Completed records replay with their result (nothing runs again), executing and
    reconciling ones are uncertain, claimed-but-not-started ones run; the table is renamed and
    the database is no longer refused."""
    from sentinel import Sentinel, import_original

    schema = "orig_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(
            f"CREATE TABLE {schema}.sentinel_leases (key text PRIMARY KEY, owner_id text NOT NULL, "
            "lease_expires_at timestamptz NOT NULL, execution_result jsonb, status text NOT NULL, "
            "fencing_token bigint NOT NULL DEFAULT 1)"
        )
        rows = [
            ("payments:order-1", "completed", '{"payment_id": "pay_1"}'),
            ("payments:order-2", "executing", None),
            ("payments:order-3", "claimed", None),
            ("report-9", "completed", None),
            ("payments:order-4", "reconciling", None),
        ]
        for key, status, result in rows:
            admin.execute(
                f"INSERT INTO {schema}.sentinel_leases VALUES (%s, 'w', now(), %s, %s)", (key, result, status)
            )

    def get_conn():
        return psycopg.connect(PG_URL, options=f"-c search_path={schema}")

    try:
        conn = get_conn()
        report = import_original(conn, namespaces=["payments"], schema=schema)
        conn.close()
        assert (report.completed, report.uncertain, report.not_started) == (2, 2, 1)
        assert report.renamed_to and report.renamed_to.startswith("sentinel_leases_imported_")
        # The database is no longer refused, and what the original did is not done again.
        s = Sentinel(get_conn=get_conn, namespace="payments", schema=schema)
        again = s.once("order-1", lambda: pytest.fail("a completed payment ran again"))
        assert again.cached and again.response == {"payment_id": "pay_1"}
        assert s.once("order-2", lambda: pytest.fail("an uncertain payment ran")).uncertain
        assert s.once("order-4", lambda: pytest.fail("an uncertain payment ran")).uncertain
        assert s.once("order-3", lambda: "ran").response == "ran"
        plain = Sentinel(get_conn=get_conn, schema=schema)
        assert plain.once("report-9", lambda: pytest.fail("ran again")).cached
        # Again: nothing left to import.
        conn = get_conn()
        assert import_original(conn, schema=schema).completed == 0
        conn.close()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def test_checking_for_the_originals_records_keeps_the_callers_transaction():
    """init_db(conn) on a connection with uncommitted work of the caller's leaves it there."""
    from sentinel import init_db

    table = "app_" + uuid.uuid4().hex[:10]
    conn = psycopg.connect(PG_URL)
    try:
        conn.execute(f"CREATE TABLE {table} (id int)")
        init_db(conn)
        conn.commit()
        with psycopg.connect(PG_URL) as other:
            assert other.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]
    finally:
        conn.close()
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP TABLE IF EXISTS {table}")


def test_the_originals_internal_modules_say_what_to_use_instead():
    """``sentinel.core``, ``sentinel.lease`` … were the original's Python engine: importing one
    is an ImportError naming what replaces it, and our own modules still import."""
    import importlib

    for name in ("core", "async_core", "lease", "once", "heartbeat", "events", "schema", "utils"):
        with pytest.raises(ImportError, match="Sentinel|init_db|engine") as raised:
            importlib.import_module(f"sentinel.{name}")
        assert raised.value.name == f"sentinel.{name}"
    assert importlib.import_module("sentinel.db").init_db
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("sentinel.no_such_module")


def test_force_complete_refuses_what_json_cannot_hold(store):
    """The original's JSON text and psycopg's Json wrapper are stored as their value; NaN and
    what JSON cannot encode are InvalidInput, and the key stays reconciling for another try."""
    from psycopg.types.json import Json

    from sentinel import Sentinel
    from sentinel.errors import InvalidInput

    url, schema = store
    s = Sentinel(url=url, schema=schema)
    for key in ("a", "b"):
        assert s.once(key, lambda: 1 / 0).uncertain
        assert s.reconcile.reconcile(key).success
    for bad in ("NaN", '{"x": Infinity}', float("nan"), {1, 2}, object()):
        with pytest.raises(InvalidInput):
            s.reconcile.force_complete("a", bad)
    assert s.inspect("a").state == "reconciling"
    assert s.reconcile.force_complete("a", Json({"refund": 5})).success
    assert s.once("a", lambda: pytest.fail("ran again")).response == {"refund": 5}
    assert s.reconcile.force_complete("b", "not json").success
    assert s.once("b", lambda: pytest.fail("ran again")).response == "not json"
    with pytest.raises(InvalidInput):
        s.resolve("a", complete=True, result=float("inf"))
