"""What ``once`` returns: the original's ``OnceResult``, with ``reconcile`` set when uncertain."""

from __future__ import annotations

from typing import Any, Optional


class OperationResult:
    """The answer of an operator action: ``success`` and, when it applied, ``status``."""

    def __init__(self, success: bool, status: Optional[str] = None) -> None:
        self.success = success
        self.status = status

    def __repr__(self) -> str:
        return f"OperationResult(success={self.success!r}, status={self.status!r})"


class OnceResult:
    """The outcome of one ``once`` call.

    Exactly one of ``success``, ``execution_alive`` (another worker holds a live lease) and
    ``uncertain`` (a worker died mid-execution, or the function failed: an operator must say
    what happened) is true.
    """

    def __init__(
        self,
        success: bool = False,
        status: Optional[str] = None,
        response: Any = None,
        cached: bool = False,
        exception: Optional[BaseException] = None,
        execution_alive: Optional[bool] = None,
        uncertain: bool = False,
        reconcile: Any = None,
        fencing_token: Optional[int] = None,
        reason: Optional[str] = None,
    ) -> None:
        self.success = success
        self.status = status
        self.response = response
        self.cached = cached
        self.exception = exception
        self.execution_alive = execution_alive
        self.uncertain = uncertain
        self.reconcile = reconcile
        self.fencing_token = fencing_token
        self.reason = reason

    def __repr__(self) -> str:
        return (
            f"OnceResult(success={self.success!r}, status={self.status!r}, "
            f"cached={self.cached!r}, execution_alive={self.execution_alive!r}, "
            f"uncertain={self.uncertain!r}, reason={self.reason!r})"
        )


class InspectResult:
    """The original's view of one lease (``sentinel.core.inspect`` returned it); ``Sentinel.inspect``
    returns the richer ``sentinel.records.Record``, and ``InspectResult.from_record`` converts."""

    def __init__(
        self,
        key: str,
        owner_id: Optional[str],
        fencing_token: int,
        status: str,
        lease_alive: bool,
        lease_expires_at: Any,
        lease_updated_at: Any,
        hard_expires_at: Any,
        execution_result: Any = None,
    ) -> None:
        self.key = key
        self.owner_id = owner_id
        self.fencing_token = fencing_token
        self.status = status
        self.lease_alive = lease_alive
        self.lease_expires_at = lease_expires_at
        self.lease_updated_at = lease_updated_at
        self.hard_expires_at = hard_expires_at
        self.execution_result = execution_result

    @classmethod
    def from_record(cls, record: Any) -> "InspectResult":
        """The original's shape of a ``Record``."""
        return cls(
            record.key,
            record.owner,
            record.fencing_token,
            record.state,
            record.state == "running",
            record.lease_expires_at,
            record.updated_at,
            record.hard_expires_at,
            record.result,
        )
