"""``DjangoSentinel``: Sentinel on the Django project's PostgreSQL database.

The URL is ``settings.SENTINEL["DATABASE_URL"]``, else derived from ``DATABASES[using]``; the
schema is ``settings.SENTINEL["SCHEMA"]`` (default ``sentinel``). Sentinel commits on its own
connections: a ``once`` inside ``transaction.atomic()`` is not rolled back with it (it records
work that happened; a rollback cannot undo a payment).
"""

from __future__ import annotations

from typing import Any, Dict, Optional
from urllib.parse import quote

from ..sentinel import Sentinel


def _settings() -> Dict[str, Any]:
    from django.conf import settings

    return dict(getattr(settings, "SENTINEL", {}) or {})


def database_url(using: str = "default") -> str:
    """The URL of the store: ``SENTINEL["DATABASE_URL"]``, else the PostgreSQL database
    ``DATABASES[using]`` describes."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    configured = _settings().get("DATABASE_URL")
    if configured:
        return str(configured)
    db = settings.DATABASES[using]
    if "postgresql" not in db.get("ENGINE", ""):
        raise ImproperlyConfigured(
            f"Sentinel needs PostgreSQL: DATABASES[{using!r}] uses {db.get('ENGINE')!r}; "
            "set SENTINEL = {'DATABASE_URL': ...} to use another store"
        )
    user = quote(str(db.get("USER") or ""), safe="")
    password = db.get("PASSWORD") or ""
    auth = f"{user}:{quote(str(password), safe='')}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "localhost"
    port = db.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{quote(str(db['NAME']), safe='')}"


def schema() -> Optional[str]:
    """The PostgreSQL schema of Sentinel's tables (``SENTINEL["SCHEMA"]``)."""
    value = _settings().get("SCHEMA")
    return None if value is None else str(value)


class DjangoSentinel(Sentinel):
    """``DjangoSentinel(default_ttl_ms=3000, namespace=None, using="default")``."""

    def __init__(self, default_ttl_ms: int = 3000, namespace: Optional[str] = None, using: str = "default") -> None:
        self.using = using
        super().__init__(
            default_ttl_ms=default_ttl_ms,
            namespace=namespace,
            url=database_url(using),
            schema=schema(),
        )
