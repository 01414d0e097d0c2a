"""``DjangoSentinel``: Sentinel on the Django project's PostgreSQL database.

The URL is ``settings.SENTINEL["DATABASE_URL"]``, else derived from ``DATABASES[using]``; the
schema is ``settings.SENTINEL["SCHEMA"]`` (default ``sentinel``). Sentinel commits on its own
connections: a ``once`` inside ``transaction.atomic()`` is not rolled back with it (it records
work that happened; a rollback cannot undo a payment).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .._engine import postgres_url, url_from_connection
from ..sentinel import Sentinel


def _settings() -> Dict[str, Any]:
    from django.conf import settings

    return dict(getattr(settings, "SENTINEL", {}) or {})


def database_url(using: str = "default") -> str:
    """The URL of the store: ``SENTINEL["DATABASE_URL"]``, else the PostgreSQL database
    ``DATABASES[using]`` describes (its ``OPTIONS`` ``sslmode`` and ``connect_timeout`` too).
    An empty or ``/…`` ``HOST`` is a Unix socket: its directory comes from Django's own
    connection, as libpq resolved it."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    configured = _settings().get("DATABASE_URL")
    if configured:
        return str(configured)
    if using not in settings.DATABASES:
        raise ImproperlyConfigured(f"Sentinel: there is no DATABASES[{using!r}]")
    db = settings.DATABASES[using]
    if connections[using].vendor != "postgresql":
        raise ImproperlyConfigured(
            f"Sentinel needs PostgreSQL: DATABASES[{using!r}] uses {db.get('ENGINE')!r}; "
            "set SENTINEL = {'DATABASE_URL': ...} to use another store"
        )
    host = str(db.get("HOST") or "")
    if not host or host.startswith("/"):
        connection = connections[using]
        connection.ensure_connection()
        return url_from_connection(connection.connection)
    password = db.get("PASSWORD")
    return postgres_url(
        str(db.get("USER") or ""), str(password) if password else None, host, db.get("PORT"), db["NAME"], db.get("OPTIONS") or {}
    )


def schema() -> Optional[str]:
    """The PostgreSQL schema of Sentinel's tables (``SENTINEL["SCHEMA"]``)."""
    value = _settings().get("SCHEMA")
    return None if value is None else str(value)


class DjangoSentinel(Sentinel):
    """``DjangoSentinel(default_ttl_ms=3000, namespace=None, using="default")``.

    Nothing is read from the database when it is made (a module-level instance imports while
    ``manage.py migrate`` has not run yet); the store is found on first use."""

    def __init__(self, default_ttl_ms: int = 3000, namespace: Optional[str] = None, using: str = "default") -> None:
        self.using = using
        self.get_conn = None
        self.owns_connection = False
        self.ignore_original_records = True  # the migration checked, once, for the project
        self._url = None
        self._setup(default_ttl_ms, namespace, schema())

    def _derive_url(self) -> str:
        return database_url(self.using)
