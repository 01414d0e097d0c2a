"""``AsyncSentinel``: ``await once(...)`` on an asyncio event loop.

Store work runs on a worker thread (the GIL released while it waits), so the event loop never
blocks and calls under ``asyncio.gather`` overlap; ``fn`` runs on the loop — a coroutine
function is awaited, a plain function called. Cancelling the awaiting task while ``fn`` runs
leaves the key uncertain (reason ``cancelled``) before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import weakref
from typing import Any, Awaitable, Callable, Dict, Optional, Union

from . import _engine, _native
from .async_reconciliation import AsyncReconcile
from .execution import CurrentExecution, _current
from .result import OnceResult
from .sentinel import (
    _millis,
    begin_options,
    completed,
    encode,
    fail,
    failed,
    not_recorded,
    settled,
    typed,
    warn_if_lease_lost,
)


async def _off_loop(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs blocking store work on one of Sentinel's own worker threads."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_engine.executor(), functools.partial(fn, *args, **kwargs))


async def _refuse_original_records(conn: Any) -> None:
    """``refuse_original_records`` for a connection that may be a psycopg AsyncConnection."""
    if not inspect.iscoroutinefunction(getattr(conn, "execute", None)):
        await _off_loop(_engine.refuse_original_records, conn)
        return
    cur = await conn.execute("SELECT to_regclass('sentinel_leases') IS NOT NULL")
    exists = (await cur.fetchone() or [False])[0]
    n = 0
    if exists:
        cur = await conn.execute("SELECT count(*) FROM sentinel_leases")
        n = int((await cur.fetchone() or [0])[0])
    await conn.rollback()
    if n:
        raise _engine.original_records_found(n)


class _Claim:
    """A claim made on a worker thread for a task that may be cancelled meanwhile.

    The task's cancellation propagates at once — not when the claim returns, which under
    ``wait=`` may be long after — and what the claim acquires for a task that has gone is
    released (``fn`` never ran), on the worker thread or when the result reaches the loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gone = False
        self._handed = False

    def begin(self, engine: "_native.Engine", key: str, options: Dict[str, Any]) -> Any:
        """Runs on a worker thread: the claim, released here if its task has gone."""
        got = engine.begin(key, **options)
        if isinstance(got, dict):
            return got
        with self._lock:
            gone = self._gone
            self._handed = not gone
        if gone:
            got.release()
            return None
        return got

    def abandon(self, claim: "asyncio.Future[Any]") -> None:
        """On the loop, when the task is cancelled: whatever the claim acquires is released."""
        with self._lock:
            self._gone = True
            handed = self._handed
        if handed:
            claim.add_done_callback(_release_unused)


def _release_unused(claim: "asyncio.Future[Any]") -> None:
    if claim.cancelled() or claim.exception() is not None:
        return
    late = claim.result()
    if late is not None and not isinstance(late, dict):
        _engine.executor().submit(late.release)


class AsyncSentinel:
    """The original's ``AsyncSentinel``: ``get_conn`` may be an async function returning a
    psycopg ``AsyncConnection`` (or a plain one); or pass ``url=``. The URL is derived on first
    use."""

    def __init__(
        self,
        get_conn: Optional[Callable[[], Any]] = None,
        default_ttl_ms: int = 3000,
        namespace: Optional[str] = None,
        owns_connection: bool = True,
        *,
        url: Optional[str] = None,
        schema: Optional[str] = None,
        ignore_original_records: bool = False,
    ) -> None:
        if get_conn is None and url is None:
            raise ValueError("No database connection provider found: pass get_conn= or url=.")
        if url is not None:
            _native.check_url(url)
        self.default_ttl_ms = _millis("default_ttl_ms", default_ttl_ms)
        self.namespace = namespace or "default"
        self.get_conn = get_conn
        self.owns_connection = owns_connection
        self.ignore_original_records = ignore_original_records
        self.url = url
        self.schema = schema
        self.reconcile = AsyncReconcile(self._engine, self.namespace)
        # One URL derivation at a time per loop, so that many first calls under
        # asyncio.gather open one connection, not one each.
        self._url_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = (
            weakref.WeakKeyDictionary()
        )

    async def _resolve_url(self) -> str:
        if self.url is not None:
            return self.url
        loop = asyncio.get_running_loop()
        lock = self._url_locks.setdefault(loop, asyncio.Lock())
        async with lock:
            if self.url is not None:
                return self.url
            assert self.get_conn is not None
            conn = self.get_conn()
            if inspect.isawaitable(conn):
                conn = await conn
            try:
                if not self.ignore_original_records:
                    await _refuse_original_records(conn)
                self.url = _engine.url_from_connection(conn)
            finally:
                if self.owns_connection:
                    closed = conn.close()
                    if inspect.isawaitable(closed):
                        await closed
            return self.url

    async def _engine(self) -> "_native.Engine":
        found = _engine.cached(self.url, self.schema)
        if found is not None:
            return found
        url = await self._resolve_url()
        return await _off_loop(_engine.engine, url, self.schema)

    async def once(
        self,
        key: str,
        fn: Callable[..., Union[Any, Awaitable[Any]]],
        ttl_ms: Optional[int] = None,
        hard_ttl_ms: Optional[int] = None,
        kwargs: Optional[Dict[str, Any]] = None,
        *,
        on_failure: str = "uncertain",
        fingerprint: Union[bytes, str, None] = None,
        wait: Optional[float] = None,
        retain_for: Optional[float] = None,
        result_type: Any = None,
    ) -> OnceResult:
        """Awaits ``fn(**kwargs)`` at most once for ``key``; the same results as
        ``Sentinel.once``."""
        options = begin_options(
            self, key, fn, kwargs, ttl_ms, hard_ttl_ms, on_failure, fingerprint, wait, retain_for
        )
        engine = await self._engine()
        # Shielded: should this task be cancelled while the claim is in flight, the claim still
        # lands, and what it acquired is released (fn never ran) rather than left uncertain.
        handoff = _Claim()
        claim = asyncio.ensure_future(_off_loop(handoff.begin, engine, key, options))
        try:
            begun = await asyncio.shield(claim)
        except asyncio.CancelledError:
            handoff.abandon(claim)
            raise
        if isinstance(begun, dict):
            result = settled(begun, self.reconcile)
        else:
            result = await self._run(begun, fn, kwargs or {})
        return typed(result, result_type)

    async def _run(self, execution: "_native.Execution", fn: Callable[..., Any], kwargs: Dict[str, Any]) -> OnceResult:
        marker = _current.set(
            CurrentExecution(execution.key, execution.namespace, execution.fencing_token, execution)
        )
        try:
            try:
                value = fn(**kwargs)
                if inspect.isawaitable(value):
                    value = await value
            finally:
                _current.reset(marker)
        except Exception as exc:  # noqa: BLE001 - the user's function may raise anything
            outcome = await _off_loop(fail, execution, exc)
            result = failed(execution, outcome, exc, self.reconcile)
            if result is None:
                raise
            return result
        except BaseException:
            # Cancelled or interrupted mid-function: the mark is written before it propagates.
            await asyncio.shield(_off_loop(execution.abandon, "cancelled"))
            raise
        try:
            warn_if_lease_lost(execution)
            text = await _off_loop(encode, execution, value)
            outcome = await _off_loop(execution.complete, text)
        except _native.NotRecorded as exc:
            raise not_recorded(execution, value, exc) from exc
        except BaseException:
            await asyncio.shield(_off_loop(execution.abandon, "not_recorded"))
            raise
        return completed(text, outcome)
