"""The operator API's results: records and events as dataclasses."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Optional


def _time(seconds: Optional[float]) -> Optional[datetime]:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=timezone.utc)


@dataclass(frozen=True)
class Record:
    """One key's record, as the store has it (running with an expired lease reads uncertain)."""

    namespace: str
    key: str
    state: str
    fencing_token: int
    owner: Optional[str]
    operator: Optional[str]
    reason: Optional[str]
    result: Any
    result_kind: Optional[str]
    lease_expires_at: Optional[datetime]
    hard_expires_at: Optional[datetime]
    created_at: Optional[datetime]
    updated_at: Optional[datetime]
    completed_at: Optional[datetime]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Record":
        result = d.get("result")
        return cls(
            namespace=d["namespace"],
            key=d["key"],
            state=d["state"],
            fencing_token=d["fencing_token"],
            owner=d.get("owner"),
            operator=d.get("operator"),
            reason=d.get("reason"),
            result=None if result is None else json.loads(result),
            result_kind=d.get("result_kind"),
            lease_expires_at=_time(d.get("lease_expires_at")),
            hard_expires_at=_time(d.get("hard_expires_at")),
            created_at=_time(d.get("created_at")),
            updated_at=_time(d.get("updated_at")),
            completed_at=_time(d.get("completed_at")),
        )


@dataclass(frozen=True)
class Event:
    """One transition of a key: what, under which token, who and why."""

    event: str
    fencing_token: int
    actor: Optional[str]
    reason: Optional[str]
    at: Optional[datetime]

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Event":
        return cls(d["event"], d["fencing_token"], d.get("actor"), d.get("reason"), _time(d.get("at")))


def convert(value: Any, result_type: Any) -> Any:
    """Decodes a stored JSON value into ``result_type``: a dataclass, a pydantic model, or any
    callable taking the value."""
    if result_type is None:
        return value
    if dataclasses.is_dataclass(result_type) and isinstance(value, dict):
        return result_type(**value)
    validate = getattr(result_type, "model_validate", None)
    if callable(validate):
        return validate(value)
    return result_type(value)
