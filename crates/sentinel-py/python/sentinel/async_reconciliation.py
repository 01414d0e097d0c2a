"""``AsyncReconcile``: the operator actions of ``Reconcile``, awaitable."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Awaitable, Callable, Optional

from . import _native
from .reconciliation import Reconcile
from .result import OperationResult


class AsyncReconcile:
    """``await reconcile(key)``, ``await force_complete(key, result)``, ``await reset(key)``."""

    def __init__(self, engine: Callable[[], Awaitable["_native.Engine"]], namespace: str = "default") -> None:
        self._engine = engine
        self.namespace = namespace

    async def _sync(self) -> Reconcile:
        return Reconcile(await self._engine(), self.namespace)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> OperationResult:
        sync = await self._sync()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(getattr(sync, name), *args, **kwargs))

    async def reconcile(self, key: str, reason: Optional[str] = None, force: bool = False) -> OperationResult:
        """Takes an uncertain key into reconciliation."""
        return await self._call("reconcile", key, reason=reason, force=force)

    async def force_complete(self, key: str, execution_result: Any = None, reason: Optional[str] = None) -> OperationResult:
        """It did happen: the key is completed with ``execution_result``."""
        return await self._call("force_complete", key, execution_result, reason=reason)

    async def reset(self, key: str, reason: Optional[str] = None) -> OperationResult:
        """It did not happen: the next caller runs the work."""
        return await self._call("reset", key, reason=reason)
