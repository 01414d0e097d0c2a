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

    @property
    def lease_lost_reason(self) -> Optional[str]:
        """Why the lease was lost — ``"fenced"`` (another owner or an operator holds the key),
        ``"ceiling_passed"`` (the hard ttl), ``"renewals_failing"`` (the store did not answer
        the heartbeat in time), ``"stopped"`` (Sentinel shut down) — or None while it is held."""
        return self._handle.lease_lost_reason


def current_execution() -> Optional[CurrentExecution]:
    """The execution ``fn`` runs inside, or None outside ``once``."""
    return _current.get()
