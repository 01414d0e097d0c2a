"""Stores for the tests: memory, a SQLite file of the test's own, and a PostgreSQL schema of the
test's own on the test server (SENTINEL_TEST_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/test).
With CI=true a test that cannot reach PostgreSQL fails; elsewhere it is skipped."""

import os
import uuid

import pytest

import sentinel.heartbeat_config

PG_URL = os.environ.get("SENTINEL_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")


def _pg_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001
        return False


def _pg_schema():
    if not _pg_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}; start it with scripts/services")
        pytest.skip("PostgreSQL is not reachable")
    schema = "sentinel_py_" + uuid.uuid4().hex[:12]
    sentinel.init_db(PG_URL, schema=schema)
    return schema


def _drop(schema):
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request, tmp_path):
    """(url, schema) of a fresh store."""
    if request.param == "memory":
        yield ("memory:", None)
    elif request.param == "sqlite":
        yield (f"sqlite://{tmp_path}/sentinel.db", None)
    else:
        schema = _pg_schema()
        yield (PG_URL, schema)
        _drop(schema)
    sentinel.heartbeat_config.shutdown_manager()


@pytest.fixture
def pg_store():
    """(url, schema) of a fresh PostgreSQL schema."""
    schema = _pg_schema()
    yield (PG_URL, schema)
    _drop(schema)
    sentinel.heartbeat_config.shutdown_manager()
