"""Sentinel: run work that is not safe to retry at most once per key, across processes.

``from sentinel import Sentinel`` as with the original package; the engine is Rust.
"""

from .db import init_db
from .errors import SentinelError
from .execution import current_execution
from .result import OnceResult, OperationResult
from .sentinel import Sentinel

__all__ = [
    "Sentinel",
    "init_db",
    "current_execution",
    "OnceResult",
    "OperationResult",
    "SentinelError",
]
