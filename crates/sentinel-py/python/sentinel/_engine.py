"""The engines this process created, shared by URL, and how a psycopg connection names one."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, Optional, Tuple
from urllib.parse import quote

from . import _native

_lock = threading.Lock()
_engines: Dict[Tuple[str, Optional[str]], _native.Engine] = {}
#: A lock per engine being made (its connecting happens under it, outside ``_lock``).
_making: Dict[Tuple[str, Optional[str]], threading.Lock] = {}
_pid = os.getpid()
_executor: Optional[ThreadPoolExecutor] = None

#: Threads AsyncSentinel's store work runs on (waits included): its own pool, so that
#: ``once(..., wait=...)`` calls never take the event loop's default executor from the
#: application, and many of them wait side by side.
EXECUTOR_THREADS = 64


def _after_fork_in_child() -> None:
    """The parent's engines and executor have no threads here, and the lock may have been held
    at fork(): start over (the old engines are dropped, never shut down, from the child)."""
    global _lock, _pid, _executor
    _lock = threading.Lock()
    _engines.clear()
    _making.clear()
    _executor = None
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def engine(url: str, schema: Optional[str] = None) -> _native.Engine:
    """The process's engine for ``url`` (and PostgreSQL ``schema``), created on first use.

    Connecting holds a lock of that URL's own, never the one every lookup takes: a server
    that is slow to answer delays only its own callers. After ``fork()`` the parent's engines
    (their threads did not survive it) are forgotten and rebuilt in the child.
    """
    found = cached(url, schema)  # the common case: no lock
    if found is not None:
        return found
    with _lock:
        _forget_parents()
        making = _making.setdefault((url, schema), threading.Lock())
    with making:
        found = cached(url, schema)
        if found is None:
            found = _native.Engine(url, pg_schema=schema)
            with _lock:
                _forget_parents()
                _engines[(url, schema)] = found
                _making.pop((url, schema), None)
        return found


def _forget_parents() -> None:
    """Under ``_lock``: drops what a parent process made, once this is a forked child."""
    global _pid
    if os.getpid() != _pid:
        _engines.clear()
        _making.clear()
        _pid = os.getpid()


def cached(url: Optional[str], schema: Optional[str] = None) -> Optional[_native.Engine]:
    """The process's engine for ``url``, if it was made already (never connects)."""
    if url is None or os.getpid() != _pid:
        return None
    return _engines.get((url, schema))


def executor() -> ThreadPoolExecutor:
    """The pool AsyncSentinel's store work runs on, made on first use (and again after fork)."""
    global _executor
    found = _executor
    if found is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(EXECUTOR_THREADS, thread_name_prefix="sentinel-async")
            found = _executor
    return found


def shutdown_all() -> None:
    """Shuts down and forgets every engine this process created."""
    with _lock:
        engines = list(_engines.values())
        _engines.clear()
    for e in engines:
        e.shutdown()


def url_from_connection(conn: Any) -> str:
    """A ``postgres://`` URL for the server a psycopg 3 connection is connected to.

    ``conn.info.dsn`` leaves the password out; ``conn.info.password`` has it.
    """
    info = conn.info
    # TLS and timeouts the connection was made with carry over (psycopg reports the
    # parameters that differ from the defaults).
    try:
        params = info.get_parameters()
    except Exception:  # noqa: BLE001 - an older psycopg
        params = {}
    return postgres_url(info.user, getattr(info, "password", None), info.host, info.port, info.dbname, params)


def postgres_url(
    user: Optional[str], password: Optional[str], host: Optional[str], port: Any, dbname: str, params: Dict[str, Any]
) -> str:
    """A ``postgres://`` URL from libpq-style parts: quoted, IPv6 hosts bracketed, a Unix
    socket directory as a ``host`` parameter, ``sslmode`` and ``connect_timeout`` kept."""
    user_q = quote(user or "", safe="")
    auth = f"{user_q}:{quote(password, safe='')}@" if password else (f"{user_q}@" if user_q else "")
    host = host or "localhost"
    query = [f"{k}={quote(str(params[k]), safe='')}" for k in ("sslmode", "connect_timeout") if params.get(k)]
    if host.startswith("/"):
        # A Unix socket directory: a libpq-style host parameter.
        query.append(f"host={quote(host, safe='')}")
        host = "localhost"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    tail = f"?{'&'.join(query)}" if query else ""
    return f"postgres://{auth}{host}:{port or 5432}/{quote(str(dbname), safe='')}{tail}"


def original_key_forms(namespace: str, key: str) -> Iterator[Tuple[str, str]]:
    """The (namespace, key) pairs an operator's ``key`` may name, the key as given first.

    The original stored ``f"{namespace}:{key}"``, and its operators typed that form
    (``Reconcile(get_conn, "payments").reconcile("payments:order-1")``, ``sen inspect
    payments:order-1``); here the namespace is a part of the key of its own, so the prefix is
    stripped — from the namespace's own keys, or, in the default namespace, at the first colon.
    """
    yield namespace, key
    if namespace != "default":
        prefix = namespace + ":"
        if key.startswith(prefix) and len(key) > len(prefix):
            yield namespace, key[len(prefix) :]
    else:
        ns, _, rest = key.partition(":")
        if ns and rest:
            yield ns, rest


def original_records(conn: Any) -> int:
    """How many records of the original Sentinel (0.5, table ``sentinel_leases`` on the
    connection's search path) the database holds; 0 when there is no such table."""
    # Only a transaction this check opens is rolled back: the caller's own work stays.
    idle_before = getattr(getattr(conn, "info", None), "transaction_status", 0) == 0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('sentinel_leases') IS NOT NULL")
            row = cur.fetchone()
            if not row or not row[0]:
                return 0
            cur.execute("SELECT count(*) FROM sentinel_leases")
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        if idle_before:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - an autocommit connection
                pass


def original_records_found(n: int, how_to_ignore: str = "pass ignore_original_records=True") -> Exception:
    """The error for a database holding ``n`` of the original Sentinel's records."""
    from .errors import OriginalRecordsFound

    return OriginalRecordsFound(
        f"this database holds {n} records of the original Sentinel (table sentinel_leases); "
        "this engine keeps its own tables and does not read them, so their completed keys "
        "would run again. Carry them over with sentinel.import_original(conn, namespaces=[...]) "
        f"(it renames the table afterwards), or check them, then {how_to_ignore}"
    )


def refuse_original_records(conn: Any) -> None:
    """Raises ``OriginalRecordsFound`` when the original's records are there."""
    n = original_records(conn)
    if n:
        raise original_records_found(n)


def resolve_url(
    get_conn: Optional[Callable[[], Any]],
    url: Optional[str],
    owns_connection: bool = True,
    ignore_original_records: bool = False,
) -> str:
    """The URL a Sentinel works on: ``url=``, else derived once from ``get_conn()`` (refusing
    a database that still holds the original Sentinel's records, unless told to ignore them)."""
    if url is not None:
        return url
    if get_conn is None:
        raise ValueError("No database connection provider found: pass get_conn= or url=.")
    conn = get_conn()
    try:
        if not ignore_original_records:
            refuse_original_records(conn)
        return url_from_connection(conn)
    finally:
        if owns_connection:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
