"""Sentinel: run work that is not safe to retry at most once per key, across processes.

``from sentinel import Sentinel`` as with the original package; the engine is Rust.
"""

from . import _dropped
from .async_sentinel import AsyncSentinel
from .db import async_init_db, init_db
from .errors import SentinelError
from .execution import current_execution
from .importer import ImportReport, import_original
from .result import OnceResult, OperationResult
from .sentinel import Sentinel

_dropped.install()

__all__ = [
    "Sentinel",
    "AsyncSentinel",
    "init_db",
    "async_init_db",
    "current_execution",
    "import_original",
    "ImportReport",
    "OnceResult",
    "OperationResult",
    "SentinelError",
]
