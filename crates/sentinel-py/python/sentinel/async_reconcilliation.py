"""The original's module path (its spelling): ``AsyncReconcile``."""

from .async_reconciliation import AsyncReconcile

__all__ = ["AsyncReconcile"]
