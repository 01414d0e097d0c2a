"""``Reconcile``: the original's operator actions on uncertain keys."""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any, Optional

from . import _engine as _engines
from . import _native
from .result import OperationResult


def _actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "python"
    return f"{user}@{socket.gethostname()}"


class Reconcile:
    """Operator actions on one namespace's keys, as the original offered them."""

    def __init__(self, engine: Any, namespace: Optional[str] = "default") -> None:
        # An engine, or a callable returning the process's current one (so that after fork()
        # or shutdown_manager() a fresh engine is used, never a dead one) — or, as the original
        # was made, ``Reconcile(get_conn, namespace)`` with a psycopg connection factory.
        self._get = engine if callable(engine) else (lambda: engine)
        self.namespace = namespace or "default"
        self.last_token: Optional[int] = None

    @property
    def _engine(self) -> "_native.Engine":
        got = self._get()
        if isinstance(got, _native.Engine):
            return got
        # The original's get_conn: the engine for the server the connection names, from now on.
        try:
            url = _engines.url_from_connection(got)
        finally:
            try:
                got.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._get = lambda: _engines.engine(url)
        return self._get()

    def __call__(self, key: str, reason: Optional[str] = None, force: bool = False) -> int:
        """``sentinel.reconcile(key)``: takes an uncertain key into reconciliation and returns the
        operator's fencing token (check it on ``resolve``); raises ``Refused`` or ``NotFound``."""
        token = self._engine.reconcile(self.namespace, key, _actor(), reason=reason, force=force)
        self.last_token = token
        return token

    def reconcile(self, key: str, reason: Optional[str] = None, force: bool = False) -> OperationResult:
        """Takes an uncertain key into reconciliation (this operator now holds it)."""
        try:
            self.last_token = self._engine.reconcile(
                self.namespace, key, _actor(), reason=reason, force=force
            )
        except (_native.Refused, _native.NotFound):
            return OperationResult(False)
        return OperationResult(True, "reconciling")

    def force_complete(self, key: str, execution_result: Any = None, reason: Optional[str] = None) -> OperationResult:
        """It did happen: the key is completed with ``execution_result`` (a JSON string, as the
        original took, or any JSON-serialisable object) and replays it from now on."""
        if execution_result is None:
            text = None
        elif isinstance(execution_result, str):
            try:
                json.loads(execution_result)
                text = execution_result
            except ValueError:
                text = json.dumps(execution_result)
        else:
            text = json.dumps(execution_result, allow_nan=False)
        try:
            self._engine.resolve(self.namespace, key, _actor(), True, result=text, reason=reason)
        except (_native.Refused, _native.NotFound):
            return OperationResult(False)
        return OperationResult(True, "completed")

    def reset(self, key: str, reason: Optional[str] = None) -> OperationResult:
        """It did not happen: the record goes, and the next caller runs the work."""
        try:
            self._engine.resolve(self.namespace, key, _actor(), False, reason=reason)
        except (_native.Refused, _native.NotFound):
            return OperationResult(False)
        return OperationResult(True, "reset")
