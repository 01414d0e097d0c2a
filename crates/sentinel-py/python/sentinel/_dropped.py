"""The original's internal modules that have no counterpart here: importing one raises an
``ImportError`` that says what to use instead (rather than a bare "No module named")."""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any, Optional, Sequence

_ENGINE = (
    "was the original's Python engine; this package's engine is Rust and keeps its own SQL, "
    "leases and heartbeat. Use Sentinel.once / AsyncSentinel.once (and Sentinel.inspect / "
    "history / reconcile for what an operator reads and does)"
)

#: The original's module, and why it has none here.
DROPPED = {
    "core": _ENGINE,
    "async_core": _ENGINE,
    "helper": _ENGINE,
    "async_helper": _ENGINE,
    "once": _ENGINE,
    "async_once": _ENGINE,
    "lease": _ENGINE,
    "heartbeat": _ENGINE + "; heartbeat_config.shutdown_manager() stops the engines",
    "events": "held the original's event rows; Sentinel.history(key) returns the events",
    "schema": "held the original's SQL; sentinel.init_db(conn_or_url) runs this engine's migrations",
    "utils": "held the original's helpers; owners are named by the engine (host:pid)",
}


class _DroppedModules(importlib.abc.MetaPathFinder):
    """Refuses ``import sentinel.<dropped>`` with the reason."""

    def find_spec(self, fullname: str, path: Optional[Sequence[str]], target: Any = None) -> None:
        package, _, name = fullname.rpartition(".")
        if package == __package__ and name in DROPPED:
            raise ImportError(
                f"{fullname} {DROPPED[name]}. See docs/design.md §7 for what changed.", name=fullname
            )
        return None


def install() -> None:
    """Adds the finder once (it is a no-op for every other module)."""
    if not any(isinstance(f, _DroppedModules) for f in sys.meta_path):
        sys.meta_path.append(_DroppedModules())
