"""The Django integration, in a real minimal project on PostgreSQL (a database of its own)."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import PG_URL, _pg_reachable

PROJECT = Path(__file__).parent / "django_project"


@pytest.fixture
def project_db():
    if not _pg_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is not reachable at {PG_URL}")
        pytest.skip("PostgreSQL is not reachable")
    import psycopg

    name = "sentinel_django_" + uuid.uuid4().hex[:10]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run(db, *args, code=None, **env_vars):
    env = dict(os.environ, SENTINEL_DJANGO_DB=db, DJANGO_SETTINGS_MODULE="project.settings", **env_vars)
    command = [sys.executable, *(["-c", code] if code else ["manage.py", *args])]
    return subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120)


APP_CODE = """
import django
django.setup()
from sentinel.integrations.django import DjangoSentinel
s = DjangoSentinel(namespace="shop")
r = s.once("order-1", lambda: {"paid": 10})
assert r.success and not r.cached, r
assert s.once("order-1", lambda: 1 / 0).cached
f = s.once("order-2", lambda: 1 / 0)
assert f.uncertain, f
print("ok")
"""


def test_migrate_creates_the_schema_and_the_command_settles_keys(project_db):
    first = run(project_db, "migrate", "--noinput")
    assert first.returncode == 0, first.stderr
    again = run(project_db, "migrate", "--noinput")
    assert again.returncode == 0, again.stderr
    app = run(project_db, code=APP_CODE)
    assert app.returncode == 0 and "ok" in app.stdout, app.stderr
    listed = run(project_db, "sentinel", "--namespace", "shop", "list")
    assert listed.returncode == 0, listed.stderr
    assert "order-1\tcompleted" in listed.stdout and "order-2\tuncertain" in listed.stdout
    token = run(project_db, "sentinel", "--namespace", "shop", "reconcile", "order-2", "--reason", "checked")
    assert token.returncode == 0, token.stderr
    reset = run(project_db, "sentinel", "--namespace", "shop", "resolve", "order-2", "--reset", "--token", token.stdout.strip())
    assert reset.returncode == 0, reset.stderr
    gone = run(project_db, "sentinel", "--namespace", "shop", "inspect", "order-2")
    assert gone.returncode != 0 and "no record" in gone.stderr
    refused = run(project_db, "sentinel", "--namespace", "shop", "reconcile", "order-1")
    assert refused.returncode != 0 and "completed" in refused.stderr
    forgot = run(project_db, "sentinel", "--namespace", "shop", "forget", "order-1", "--reason", "refunded")
    assert forgot.returncode == 0, forgot.stderr
    pruned = run(project_db, "sentinel", "--namespace", "shop", "prune", "--older-than", "0")
    assert pruned.returncode == 0 and pruned.stdout.strip() == "0", pruned.stderr
    assert "order-1" not in run(project_db, "sentinel", "--namespace", "shop", "list").stdout


def test_migrate_refuses_a_database_holding_the_originals_records(project_db):
    import psycopg

    with psycopg.connect(PG_URL.rsplit("/", 1)[0] + "/" + project_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE sentinel_leases (key text PRIMARY KEY, status text, execution_result jsonb)")
        conn.execute("INSERT INTO sentinel_leases VALUES ('payment-order-1', 'completed')")
    refused = run(project_db, "migrate", "--noinput")
    assert refused.returncode != 0
    assert "1 records of the original Sentinel" in refused.stderr
    # Carried over, the completed payment replays and the migration goes through.
    imported = run(project_db, "sentinel", "import-original")
    assert imported.returncode == 0 and "completed 1," in imported.stdout, imported.stderr
    assert run(project_db, "migrate", "--noinput").returncode == 0
    shown = run(project_db, "sentinel", "inspect", "payment-order-1")
    assert shown.returncode == 0 and '"state": "completed"' in shown.stdout, shown.stderr


TASKS_CODE = """
import django
django.setup()
from project.tasks import charge
first, again = charge(7), charge(7)
assert first.success and not first.cached and again.cached, (first, again)
print(first.response)
"""


def test_a_unix_socket_host_and_a_module_level_instance_work(project_db):
    """HOST="" (libpq's default socket) reaches the same server; the project's URLconf imports a
    module-level DjangoSentinel, which must not touch the database before migrate ran."""
    migrated = run(project_db, "migrate", "--noinput", SENTINEL_DJANGO_HOST="")
    assert migrated.returncode == 0, migrated.stderr
    app = run(project_db, code=TASKS_CODE, SENTINEL_DJANGO_HOST="")
    assert app.returncode == 0 and "{'charged': 7}" in app.stdout, app.stderr
    # The record is in the project's database, whichever way it was reached.
    shown = run(project_db, "sentinel", "--namespace", "shop", "inspect", "charge-7")
    assert shown.returncode == 0 and "completed" in shown.stdout, shown.stderr
