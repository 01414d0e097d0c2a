"""What the black-box suites (tests/http, tests/console) share: where the stores and the
``sentinel`` command are, a store of the test's own (a SQLite file or a PostgreSQL schema), and
the rule that with CI=true a missing service fails a test instead of skipping it."""

import os
import socket
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("SENTINEL_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
CLI = ROOT / "target" / "debug" / "sentinel"


def missing(what):
    """Fails (CI=true) or skips the test: ``what`` it needs is not there."""
    if os.environ.get("CI") == "true":
        pytest.fail(what)
    pytest.skip(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_reachable():
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001
        return False


@contextmanager
def fresh_store(kind, tmp_path, prefix):
    """(url, extra environment) of a new store of ``kind``, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite://{tmp_path}/{prefix}.db", {}
        return
    if not pg_reachable():
        missing(f"PostgreSQL is not reachable at {PG_URL}; start it with scripts/services")
    schema = f"sentinel_{prefix}_" + uuid.uuid4().hex[:12]
    try:
        yield PG_URL, {"SENTINEL_PG_SCHEMA": schema}
    finally:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
