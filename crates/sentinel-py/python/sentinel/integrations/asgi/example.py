"""The example payments API of the HTTP contract, a bare ASGI app behind
``IdempotencyMiddleware``, served by uvicorn (``pip install uvicorn``)::

    python -m sentinel.integrations.asgi.example --listen 127.0.0.1:8080 --database-url sqlite://payments.db

``SENTINEL_EXAMPLE_LEDGER=FILE`` appends one line per real execution of a handler before it
answers; ``SENTINEL_PG_SCHEMA`` puts the records in another PostgreSQL schema. The routes are the
Rust example's (``cargo run -p sentinel-tower --example server``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import socket
import sys
import time
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qs

from ... import _native
from . import IdempotencyMiddleware

_ids = itertools.count()
_payments: Dict[str, Dict[str, Any]] = {}
_ledger: Optional[int] = None


def _record(scope: Dict[str, Any], route: str) -> None:
    """The side effect: one line, one write (O_APPEND), before the handler answers."""
    if _ledger is None:
        return
    key = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"idempotency-key"), "-")
    claim = scope.get("sentinel.claim")
    token = claim.fencing_token if claim else 0
    os.write(_ledger, f"{route} key={key} token={token} pid={os.getpid()}\n".encode())


def _fresh_id() -> str:
    return f"pay_{time.time_ns():x}{next(_ids):x}{os.getpid():x}"


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        m = await receive()
        chunks.append(m.get("body", b""))
        if not m.get("more_body"):
            return b"".join(chunks)


async def _answer(send: Any, status: int, body: bytes, headers: List[Tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Dict[str, Any], receive: Any, send: Any) -> None:
    """The routes of HTTP.md's example app."""
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            if m["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif m["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    method, path = scope["method"], scope["path"]
    query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    json_type = [(b"content-type", b"application/json")]
    if method == "POST" and path == "/payments":
        _record(scope, "POST /payments")
        request = await _body(receive)
        if "sleep_ms" in query:
            await asyncio.sleep(int(query["sleep_ms"]) / 1000)
        pid = _fresh_id()
        claim = scope.get("sentinel.claim")
        payment = {
            "id": pid,
            "status": "succeeded",
            "request": request.decode("utf-8", "replace"),
            "fencing_token": claim.fencing_token if claim else None,
        }
        _payments[pid] = payment
        headers = json_type + [
            (b"location", f"/payments/{pid}".encode()),
            (b"etag", f'"{pid}"'.encode()),
            (b"set-cookie", f"session={pid}; HttpOnly".encode()),
        ]
        return await _answer(send, 201, json.dumps(payment).encode(), headers)
    found = re.fullmatch(r"/payments/([^/]+)", path)
    if method == "GET" and found:
        payment = _payments.get(found.group(1))
        if payment is None:
            return await _answer(send, 404, b"no such payment", [(b"content-type", b"text/plain")])
        return await _answer(send, 200, json.dumps(payment).encode(), json_type)
    if method == "POST" and path == "/fail":
        _record(scope, "POST /fail")
        return await _answer(send, 500, b"the provider failed", [(b"content-type", b"text/plain")])
    if method == "POST" and path == "/reject":
        _record(scope, "POST /reject")
        return await _answer(send, 400, b'{"error":"card_declined"}', json_type)
    if method == "POST" and path == "/panic":
        _record(scope, "POST /panic")
        raise RuntimeError("the handler raised (on purpose)")
    if method == "POST" and path == "/big":
        _record(scope, "POST /big")
        left = int(query.get("bytes", "0"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"), (b"content-length", str(left).encode())],
            }
        )
        chunk = b"x" * 65536
        while left > 0:
            n = min(left, len(chunk))
            left -= n
            await send({"type": "http.response.body", "body": chunk[:n], "more_body": left > 0})
        if int(query.get("bytes", "0")) == 0:
            await send({"type": "http.response.body", "body": b""})
        return
    if method == "POST" and path == "/optional":
        _record(scope, "POST /optional")
        body = json.dumps({"id": _fresh_id(), "claimed": "sentinel.claim" in scope}).encode()
        return await _answer(send, 201, body, json_type)
    await _answer(send, 404, b"not found", [(b"content-type", b"text/plain")])


def _duration(text: str) -> float:
    found = re.fullmatch(r"(\d+)(ms|s|m)", text)
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r}: write 10s, 500ms or 2m")
    n, unit = int(found.group(1)), found.group(2)
    return n / 1000 if unit == "ms" else n * (60 if unit == "m" else 1)


def _address(text: str) -> Tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write HOST:PORT")
    return host.strip("[]"), int(port)


def main(argv: Optional[List[str]] = None) -> int:
    """Serves the example app; returns the exit status."""
    global _ledger
    parser = argparse.ArgumentParser(
        prog="python -m sentinel.integrations.asgi.example",
        description="The example payments API of Sentinel's HTTP contract, behind IdempotencyMiddleware.",
    )
    parser.add_argument("--listen", type=_address, default=("127.0.0.1", 8080), help="HOST:PORT to listen on")
    parser.add_argument("--database-url", default=os.environ.get("SENTINEL_DATABASE_URL"), help="postgres://…, sqlite://FILE or memory:")
    parser.add_argument("--namespace", default="http", help="the namespace of the records (default http)")
    parser.add_argument("--ttl", type=_duration, default=10.0, help="the lease of a running request (default 10s)")
    parser.add_argument(
        "--no-middleware",
        action="store_true",
        help="serve the same routes without IdempotencyMiddleware (the benchmark's baseline)",
    )
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url is required (or SENTINEL_DATABASE_URL)")
    try:
        import uvicorn
    except ImportError:
        print("the example needs uvicorn: pip install uvicorn", file=sys.stderr)
        return 1
    try:
        engine = _native.Engine(args.database_url, pg_schema=os.environ.get("SENTINEL_PG_SCHEMA"), max_result_bytes=8 << 20)
        engine.migrate()
    except _native.SentinelError as e:
        print(f"example: {e}", file=sys.stderr)
        return 1
    ledger = os.environ.get("SENTINEL_EXAMPLE_LEDGER")
    if ledger:
        _ledger = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    wrapped: Any = (
        app
        if args.no_middleware
        else IdempotencyMiddleware(app, engine=engine, namespace=args.namespace, ttl=args.ttl, optional_paths=["/optional"])
    )
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it the head and the body of a response meet Nagle and delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET6 if ":" in args.listen[0] else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(args.listen)
    sock.listen(1024)  # before the address is announced: a client may connect at once
    host, port = sock.getsockname()[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    server = uvicorn.Server(uvicorn.Config(wrapped, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
