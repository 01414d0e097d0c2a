"""The errors Sentinel raises, all under ``SentinelError``."""

from __future__ import annotations

from typing import Any, Optional

from ._native import (
    FingerprintMismatch,
    InvalidInput,
    NotFound,
    Refused,
    SchemaMissing,
    SentinelError,
    ShuttingDown,
    StoreUnavailable,
)
from ._native import NotRecorded as _NativeNotRecorded


class NotRecorded(_NativeNotRecorded):
    """The function ran but its outcome could not be stored; the key is left uncertain.

    ``value`` is what the function returned, ``fencing_token`` the execution's token.
    """

    def __init__(self, message: str, value: Any = None, fencing_token: Optional[int] = None) -> None:
        super().__init__(message)
        self.value = value
        self.fencing_token = fencing_token


class OriginalRecordsFound(SentinelError):
    """The database still holds records of the original Sentinel (table ``sentinel_leases``).
    This engine keeps its own tables and does not read those: their completed keys would run
    again. Review them first; pass ``ignore_original_records=True`` once they may be ignored."""


class RecordedFailure(SentinelError):
    """A failure recorded under ``on_failure="record"``, replayed: ``error`` is what was stored
    (``{"type": ..., "message": ...}``)."""

    def __init__(self, error: Any) -> None:
        super().__init__(f"a recorded failure replayed: {error!r}")
        self.error = error


__all__ = [
    "SentinelError",
    "StoreUnavailable",
    "InvalidInput",
    "FingerprintMismatch",
    "NotRecorded",
    "SchemaMissing",
    "Refused",
    "NotFound",
    "ShuttingDown",
    "RecordedFailure",
    "OriginalRecordsFound",
]
