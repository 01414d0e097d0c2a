"""The original's heartbeat manager hooks. Here the heartbeat lives in each Rust engine, on
Sentinel's own thread; these keep the original's calls working."""

from __future__ import annotations

from typing import Any, Callable, Optional

from . import _engine


class HeartbeatManager:
    """What ``get_manager`` returns: the process's engines keep their own heartbeats, so there
    is nothing to start; ``stop()`` is ``shutdown_manager()``."""

    def stop(self) -> None:
        """Shuts down every engine this process created."""
        shutdown_manager()


_manager = HeartbeatManager()


def get_manager(get_conn: Optional[Callable[[], Any]] = None, owns_connection: bool = True) -> HeartbeatManager:
    """The original's accessor; the arguments are accepted and not needed."""
    return _manager


def shutdown_manager() -> None:
    """Shuts down and forgets every engine this process created (tests call it between cases)."""
    _engine.shutdown_all()
