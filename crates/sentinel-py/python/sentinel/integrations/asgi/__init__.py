"""``IdempotencyMiddleware``: the HTTP ``Idempotency-Key`` contract for any ASGI app (FastAPI,
Starlette, bare ASGI), on the same engine and with the same wire behaviour as the Rust tower
layer — a key claimed through one is replayed by the other.

::

    from sentinel.integrations.asgi import IdempotencyMiddleware
    app = IdempotencyMiddleware(app, url="postgres://…", namespace="payments")
    # FastAPI / Starlette: app.add_middleware(IdempotencyMiddleware, url="postgres://…")

A claimed request's handler finds its claim (fencing token, namespace, record key) at
``scope["sentinel.claim"]`` and, for Starlette, ``request.state.idempotency_claim``.
"""

from __future__ import annotations

from .middleware import Claim, IdempotencyMiddleware, parse_key

__all__ = ["IdempotencyMiddleware", "Claim", "parse_key"]
