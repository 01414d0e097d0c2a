"""``current_execution()``: the running call's key, namespace, token and lease state."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Optional

_current: contextvars.ContextVar[Optional["CurrentExecution"]] = contextvars.ContextVar(
    "sentinel_current_execution", default=None
)


@dataclass(frozen=True)
class CurrentExecution:
    """The execution the calling code runs inside."""

    key: str
    namespace: str
    fencing_token: int
    _handle: Any

    @property
    def lease_lost(self) -> bool:
        """True once the lease is lost: stop, the work may run elsewhere after an operator."""
        return bool(self._handle.lease_lost)


def current_execution() -> Optional[CurrentExecution]:
    """The execution ``fn`` runs inside, or None outside ``once``."""
    return _current.get()
