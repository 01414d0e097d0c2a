"""The original's heartbeat manager hook: here the heartbeat lives in each Rust engine."""

from __future__ import annotations

from . import _engine


def shutdown_manager() -> None:
    """Shuts down and forgets every engine this process created (tests call it between cases)."""
    _engine.shutdown_all()
