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
            Sentinel(get_conn=get_conn)
        conn = get_conn()
        with pytest.raises(OriginalRecordsFound):
            init_db(conn)
        conn.close()
        s = Sentinel(get_conn=get_conn, ignore_original_records=True)
        assert s.once(f"k-{uuid.uuid4().hex}", lambda: 1).success
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
