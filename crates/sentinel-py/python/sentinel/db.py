"""``init_db``: create or upgrade Sentinel's schema (idempotent, safe concurrently)."""

from __future__ import annotations

from typing import Any, Optional

from . import _engine


def init_db(conn_or_url: Any, schema: Optional[str] = None) -> None:
    """Runs Sentinel's migrations on the store a URL names, or on the server a psycopg 3
    connection is connected to (the connection is left open)."""
    url = conn_or_url if isinstance(conn_or_url, str) else _engine.url_from_connection(conn_or_url)
    _engine.engine(url, schema).migrate()
