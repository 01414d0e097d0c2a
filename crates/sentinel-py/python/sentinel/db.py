"""``init_db``: create or upgrade Sentinel's schema (idempotent, safe concurrently)."""

from __future__ import annotations

from typing import Any, Optional

from . import _engine


def init_db(conn_or_url: Any, schema: Optional[str] = None, ignore_original_records: bool = False) -> None:
    """Runs Sentinel's migrations on the store a URL names, or on the server a psycopg 3
    connection is connected to (the connection is left open). A connection's database that
    still holds the original package's records is refused (see ``OriginalRecordsFound``)."""
    if isinstance(conn_or_url, str):
        url = conn_or_url
    else:
        if not ignore_original_records:
            _engine.refuse_original_records(conn_or_url)
        url = _engine.url_from_connection(conn_or_url)
    _engine.engine(url, schema).migrate()


async def async_init_db(conn_or_url: Any, schema: Optional[str] = None) -> None:
    """``init_db`` for asyncio: a URL or a psycopg (async) connection, migrated off the loop."""
    import asyncio

    url = conn_or_url if isinstance(conn_or_url, str) else _engine.url_from_connection(conn_or_url)
    loop = asyncio.get_running_loop()
    engine = await loop.run_in_executor(_engine.executor(), _engine.engine, url, schema)
    await loop.run_in_executor(_engine.executor(), engine.migrate)
