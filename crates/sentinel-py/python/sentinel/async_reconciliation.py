"""``AsyncReconcile``: the operator actions of ``Reconcile``, awaitable."""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, Awaitable, Callable, Optional

from . import _engine, _native
from .reconciliation import Reconcile
from .result import OperationResult


class AsyncReconcile:
    """``await reconcile(key)``, ``await force_complete(key, result)``, ``await reset(key)``."""

    def __init__(self, engine: Callable[[], Awaitable[Any]], namespace: Optional[str] = "default") -> None:
        # A coroutine function returning the process's current engine — or, as the original was
        # made, ``AsyncReconcile(get_conn, namespace)`` with a psycopg connection factory.
        self._engine = engine
        self.namespace = namespace or "default"

    async def _sync(self) -> Reconcile:
        got = self._engine()
        if inspect.isawaitable(got):
            got = await got
        if isinstance(got, _native.Engine):
            return Reconcile(got, self.namespace)
        url = _engine.url_from_connection(got)
        closed = got.close()
        if inspect.isawaitable(closed):
            await closed

        async def current() -> "_native.Engine":
            return await asyncio.get_running_loop().run_in_executor(_engine.executor(), _engine.engine, url)

        self._engine = current
        return Reconcile(await current(), self.namespace)

    async def __call__(self, key: str, reason: Optional[str] = None, force: bool = False) -> int:
        """``await sentinel.reconcile(key)``: takes an uncertain key into reconciliation and
        returns the operator's fencing token; raises ``Refused`` or ``NotFound``."""
        sync = await self._sync()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_engine.executor(), functools.partial(sync, key, reason=reason, force=force))

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> OperationResult:
        sync = await self._sync()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_engine.executor(), functools.partial(getattr(sync, name), *args, **kwargs))

    async def reconcile(self, key: str, reason: Optional[str] = None, force: bool = False) -> OperationResult:
        """Takes an uncertain key into reconciliation."""
        return await self._call("reconcile", key, reason=reason, force=force)

    async def force_complete(self, key: str, execution_result: Any = None, reason: Optional[str] = None) -> OperationResult:
        """It did happen: the key is completed with ``execution_result``."""
        return await self._call("force_complete", key, execution_result, reason=reason)

    async def reset(self, key: str, reason: Optional[str] = None) -> OperationResult:
        """It did not happen: the next caller runs the work."""
        return await self._call("reset", key, reason=reason)
