"""``Reconcile``: the original's operator actions on uncertain keys."""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any, Callable, Optional, TypeVar

from . import _engine as _engines
from . import _native
from .result import OperationResult

T = TypeVar("T")


def _actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "python"
    return f"{user}@{socket.gethostname()}"


def _no_constant(name: str) -> Any:
    raise _native.InvalidInput(f"the result is not JSON: {name} has no JSON form")


def result_text(value: Any, json_strings: bool = False) -> Optional[str]:
    """A result an operator supplies, as the JSON text to store (None for no result).

    With ``json_strings`` a string is JSON text, as the original's ``force_complete`` took it
    (one that does not parse is stored as a JSON string); psycopg's ``Json``/``Jsonb`` wrappers
    are unwrapped. NaN, infinities and what JSON cannot hold are ``InvalidInput``.
    """
    if type(value).__module__.startswith("psycopg") and hasattr(value, "obj"):
        value = value.obj
    if value is None:
        return None
    if json_strings and isinstance(value, str):
        try:
            json.loads(value, parse_constant=_no_constant)
            return value
        except ValueError:
            pass  # not JSON text: the string itself is the value
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise _native.InvalidInput(f"the result cannot be stored as JSON: {e}") from None


class Reconcile:
    """Operator actions on one namespace's keys, as the original offered them.

    A key may be given as the original stored it, ``"namespace:key"``: it is looked up as
    given first, then without the prefix (see ``docs/design.md`` §7).
    """

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

    def _on(self, key: str, action: Callable[[str, str], T]) -> T:
        """``action(namespace, key)`` on the key as given, then on the original's stored form."""
        forms = list(_engines.original_key_forms(self.namespace, key))
        for namespace, name in forms[:-1]:
            try:
                return action(namespace, name)
            except _native.NotFound:
                continue
        return action(*forms[-1])

    def __call__(self, key: str, reason: Optional[str] = None, force: bool = False) -> int:
        """``sentinel.reconcile(key)``: takes an uncertain key into reconciliation and returns the
        operator's fencing token (check it on ``resolve``); raises ``Refused`` or ``NotFound``."""
        engine = self._engine
        token = self._on(key, lambda ns, k: engine.reconcile(ns, k, _actor(), reason=reason, force=force))
        self.last_token = token
        return token

    def reconcile(self, key: str, reason: Optional[str] = None, force: bool = False) -> OperationResult:
        """Takes an uncertain key into reconciliation (this operator now holds it)."""
        try:
            self(key, reason=reason, force=force)
        except (_native.Refused, _native.NotFound):
            return OperationResult(False)
        return OperationResult(True, "reconciling")

    def force_complete(self, key: str, execution_result: Any = None, reason: Optional[str] = None) -> OperationResult:
        """It did happen: the key is completed with ``execution_result`` (a JSON string, as the
        original took, or any JSON-serialisable object) and replays it from now on. A result
        JSON cannot hold raises ``InvalidInput``."""
        text = result_text(execution_result, json_strings=True)
        return self._settle(key, True, text, reason, "completed")

    def reset(self, key: str, reason: Optional[str] = None) -> OperationResult:
        """It did not happen: the record goes, and the next caller runs the work."""
        return self._settle(key, False, None, reason, "reset")

    def _settle(self, key: str, complete: bool, text: Optional[str], reason: Optional[str], status: str) -> OperationResult:
        engine = self._engine
        try:
            self._on(key, lambda ns, k: engine.resolve(ns, k, _actor(), complete, result=text, reason=reason))
        except (_native.Refused, _native.NotFound):
            return OperationResult(False)
        return OperationResult(True, status)
