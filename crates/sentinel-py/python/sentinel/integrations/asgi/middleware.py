"""The ASGI middleware; the decisions it shares with the tower layer are in docs/design.md §8."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, Iterable, List, MutableMapping, Optional, Sequence, Tuple

from ... import _native
from ...async_sentinel import _off_loop

logger = logging.getLogger("sentinel")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the problem types are documented; the last path segment names the outcome.
PROBLEM_BASE = "https://example.invalid/sentinel/problems/"
MAX_KEY_LEN = 255
_MAX_SCOPE_LEN = 200
_STORED_HEADERS = (b"content-type", b"location", b"etag", b"content-location")

_PROBLEMS = {
    "key-missing": (400, "Idempotency-Key required", "this endpoint requires an Idempotency-Key header"),
    "key-invalid": (400, "Invalid Idempotency-Key", "the Idempotency-Key header is not a valid key"),
    "body-unreadable": (400, "Request body unreadable", "the request body could not be read"),
    "request-too-large": (413, "Request body too large", "the request body is larger than this endpoint accepts"),
    "fingerprint-mismatch": (
        422,
        "Idempotency-Key reused with another request",
        "this Idempotency-Key was used with a different request; use a new key",
    ),
    "in-progress": (
        409,
        "Request in progress",
        "a request with this Idempotency-Key is still being processed; retry later",
    ),
    "outcome-unknown": (
        409,
        "Outcome unknown",
        "an earlier request with this Idempotency-Key stopped before its outcome was known; it will "
        "not be run again until an operator resolves it",
    ),
    "store-unavailable": (
        503,
        "Idempotency store unavailable",
        "the request was not processed because its idempotency could not be checked; retry later",
    ),
}


@dataclass(frozen=True)
class Claim:
    """What a claimed request's handler learns: pass ``fencing_token`` downstream."""

    fencing_token: int
    namespace: str
    key: str


class KeyError_(ValueError):
    """A field value that is not a key; ``detail`` never echoes it."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


_MALFORMED = (
    'the Idempotency-Key must be one string ("...") or token of visible ASCII characters, '
    "without a list or parameters"
)


def parse_key(value: bytes) -> str:
    """One ``Idempotency-Key`` field value as a key: an RFC 8941 sf-string or a bare token, 1–255
    visible ASCII characters; raises ``ValueError`` (with a ``detail``) otherwise."""
    value = value.strip(b" \t")
    if not value:
        raise KeyError_("the Idempotency-Key is empty")
    quoted = value[:1] == b'"'
    if quoted:
        out = bytearray()
        i, n = 1, len(value)
        while True:
            if i >= n:
                raise KeyError_(_MALFORMED)  # unterminated
            c = value[i]
            if c == 0x5C:  # backslash
                if i + 1 >= n or value[i + 1] not in (0x22, 0x5C):
                    raise KeyError_(_MALFORMED)
                out.append(value[i + 1])
                i += 2
            elif c == 0x22:
                i += 1
                break
            elif 0x20 <= c <= 0x7E:
                out.append(c)
                i += 1
            else:
                raise KeyError_(_MALFORMED)
            if len(out) > MAX_KEY_LEN:
                raise KeyError_("the Idempotency-Key is longer than 255 characters")
        if i != n:
            raise KeyError_(_MALFORMED)  # a list or parameters follow
        key = bytes(out)
    else:
        key = value
    if not key:
        raise KeyError_("the Idempotency-Key is empty")
    if len(key) > MAX_KEY_LEN:
        raise KeyError_("the Idempotency-Key is longer than 255 characters")
    if any(not (0x21 <= c <= 0x7E) or (not quoted and c in b',;"') for c in key):
        raise KeyError_(_MALFORMED)
    return key.decode("ascii")


def _problem(name: str, retry_after: Optional[int] = None) -> Tuple[int, List[Tuple[bytes, bytes]], bytes]:
    status, title, detail = _PROBLEMS[name]
    body = json.dumps({"type": PROBLEM_BASE + name, "title": title, "status": status, "detail": detail}).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"cache-control", b"no-store")]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    return status, headers, body


async def _respond(send: Send, status: int, headers: List[Tuple[bytes, bytes]], body: bytes) -> None:
    headers = headers + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _replay(value: Any) -> Tuple[int, List[Tuple[bytes, bytes]], bytes]:
    """The replay of a stored value (a stored response, or JSON an operator stored by hand)."""
    replayed = [(b"idempotent-replayed", b"true")]
    if value is None:
        return 204, replayed, b""
    if isinstance(value, dict) and isinstance(value.get("status"), int) and isinstance(value.get("headers"), list):
        if "body" in value:
            body = str(value["body"]).encode()
        elif "body_base64" in value:
            body = base64.b64decode(value["body_base64"])
        else:
            body = b""
        headers = [(str(n).encode("latin-1"), str(v).encode("latin-1")) for n, v in value["headers"]]
        return value["status"], headers + replayed, body
    return 200, [(b"content-type", b"application/json")] + replayed, json.dumps(value).encode()


def _authorization_scope(scope: Scope) -> Optional[str]:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return "auth-" + hashlib.sha256(value).hexdigest()[:32]
    return None


def _scope_part(principal: Optional[str]) -> str:
    if principal is None:
        return "anonymous"
    if not principal or len(principal.encode()) > _MAX_SCOPE_LEN or any(ord(c) < 0x20 or ord(c) == 0x7F for c in principal):
        return "sha256-" + hashlib.sha256(principal.encode()).hexdigest()[:32]
    return principal.replace("%", "%25").replace("/", "%2F")


def _fingerprint(scope: Scope, body: bytes, headers: Sequence[bytes]) -> bytes:
    """The tower layer's fingerprint: method, raw path, query, SHA-256 of the body, headers,
    each length-prefixed — the same request gives the same fingerprint through either."""
    h = hashlib.sha256()

    def field(b: bytes) -> None:
        h.update(struct.pack(">Q", len(b)))
        h.update(b)

    field(scope["method"].encode())
    field(scope.get("raw_path") or scope["path"].encode())
    field(scope.get("query_string", b""))
    field(hashlib.sha256(body).digest())
    for name in headers:
        field(name)
        for n, v in scope.get("headers", ()):
            if n == name:
                field(v)
    return h.digest()


class IdempotencyMiddleware:
    """Runs each keyed request's handler at most once per principal and key, across every
    process on the store, and replays its response to retries (``Idempotent-Replayed: true``).

    Options, as the tower layer's: ``methods`` (POST, PATCH), ``optional_paths`` or
    ``key_policy(scope) -> "required" | "optional" | "exempt"``, ``principal(scope) -> str |
    None`` (default: a hash of ``Authorization``), ``namespace`` (``http``),
    ``fingerprint_headers``, ``stored_headers``, ``stored_status(status) -> bool`` (200–499),
    ``server_errors`` (``"release"`` or ``"record"``), ``max_request_body`` and
    ``max_response_body`` (1 MiB each), ``ttl`` (seconds), ``wait`` (seconds: a retry waits for
    the first instead of 409), ``retention`` (24 h), ``fail_open`` (False: 503 when the store
    does not answer). The store is ``url=`` (and ``schema=``), or an ``engine=`` of one's own.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        url: Optional[str] = None,
        schema: Optional[str] = None,
        engine: Optional["_native.Engine"] = None,
        namespace: str = "http",
        methods: Iterable[str] = ("POST", "PATCH"),
        optional_paths: Iterable[str] = (),
        key_policy: Optional[Callable[[Scope], str]] = None,
        principal: Optional[Callable[[Scope], Optional[str]]] = None,
        fingerprint_headers: Iterable[str] = (),
        stored_headers: Iterable[str] = (),
        stored_status: Callable[[int], bool] = lambda s: 200 <= s < 500,
        server_errors: str = "release",
        max_request_body: int = 1 << 20,
        max_response_body: int = 1 << 20,
        ttl: float = 10.0,
        wait: Optional[float] = None,
        retention: float = 24 * 3600.0,
        fail_open: bool = False,
    ) -> None:
        if engine is None and url is None:
            raise ValueError("IdempotencyMiddleware needs url= (or engine=)")
        if url is not None:
            _native.check_url(url)
        if server_errors not in ("release", "record"):
            raise ValueError('server_errors must be "release" or "record"')
        self.app = app
        self.url, self.schema, self._engine = url, schema, engine
        self.namespace = namespace
        self.methods = {m.upper() for m in methods}
        optional = frozenset(optional_paths)
        self.key_policy = key_policy or (lambda scope: "optional" if scope.get("path") in optional else "required")
        self.principal = principal or _authorization_scope
        self.fingerprint_headers = [h.lower().encode() for h in fingerprint_headers]
        extra = [h.lower().encode() for h in stored_headers]
        self.stored_headers = [h for h in dict.fromkeys(_STORED_HEADERS + tuple(extra)) if h != b"set-cookie"]
        self.stored_status = stored_status
        self.record_server_errors = server_errors == "record"
        self.max_request_body, self.max_response_body = max_request_body, max_response_body
        self.ttl_ms = max(100, int(ttl * 1000))
        self.wait, self.retention, self.fail_open = wait, retention, fail_open

    async def _store(self) -> "_native.Engine":
        if self._engine is None:
            # The result cap fits a stored response of max_response_body once encoded.
            made = await _off_loop(
                functools.partial(
                    _native.Engine, self.url, pg_schema=self.schema, max_result_bytes=max(8 << 20, 8 * self.max_response_body)
                )
            )
            if self._engine is None:
                self._engine = made
        return self._engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.methods:
            return await self.app(scope, receive, send)
        policy = self.key_policy(scope)
        if policy == "exempt":
            return await self.app(scope, receive, send)
        values = [v for n, v in scope.get("headers", ()) if n == b"idempotency-key"]
        if not values:
            if policy == "optional":
                return await self.app(scope, receive, send)
            return await _respond(send, *_problem("key-missing"))
        if len(values) > 1:
            return await _respond(send, *_problem("key-invalid"))
        try:
            client_key = parse_key(values[0])
        except ValueError:
            return await _respond(send, *_problem("key-invalid"))
        body = await self._read_body(scope, receive)
        if isinstance(body, str):
            if body:
                await _respond(send, *_problem(body))
            return
        record_key = f"{_scope_part(self.principal(scope))}/{client_key}"
        try:
            engine = await self._store()
            begun = await _off_loop(
                functools.partial(
                    engine.begin,
                    record_key,
                    namespace=self.namespace,
                    ttl_ms=self.ttl_ms,
                    fingerprint=_fingerprint(scope, body, self.fingerprint_headers),
                    wait_s=self.wait,
                    retain_s=self.retention,
                )
            )
        except _native.FingerprintMismatch:
            return await _respond(send, *_problem("fingerprint-mismatch"))
        except _native.InvalidInput:
            return await _respond(send, *_problem("key-invalid"))
        except _native.SentinelError as e:
            if self.fail_open:
                logger.warning("the idempotency store did not answer (%s); running without a claim (fail open)", e)
                return await self.app(scope, _replaying(body, receive), send)
            logger.warning("the idempotency store did not answer (%s); the request was not run", e)
            return await _respond(send, *_problem("store-unavailable", retry_after=1))
        if isinstance(begun, dict):
            return await _respond(send, *_settled(begun))
        await self._run(scope, receive, send, body, begun)

    async def _read_body(self, scope: Scope, receive: Receive) -> Any:
        """The whole request body; a problem name when it is refused, "" when the client left."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > self.max_request_body:
                        return "request-too-large"
                except ValueError:
                    return "body-unreadable"
        chunks: List[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return ""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_body:
                return "request-too-large"
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _run(self, scope: Scope, receive: Receive, send: Send, body: bytes, execution: "_native.Execution") -> None:
        claim = Claim(execution.fencing_token, execution.namespace, execution.key)
        scope = dict(scope)
        scope["sentinel.claim"] = claim
        scope["state"] = dict(scope.get("state") or {}, idempotency_claim=claim)
        capture = _Capture(self, execution, send)
        try:
            await self.app(scope, _replaying(body, receive), capture.send)
        except BaseException as exc:
            if not capture.finished:
                reason = "cancelled" if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)) else "panicked"
                await asyncio.shield(capture.abandon(reason))
            raise
        if not capture.finished:
            # The app returned without finishing its response: nobody can say what it did.
            await capture.abandon("cancelled")


def _settled(outcome: Dict[str, Any]) -> Tuple[int, List[Tuple[bytes, bytes]], bytes]:
    kind = outcome["kind"]
    if kind == "completed":
        return _replay(json.loads(outcome["value"]))
    if kind == "completed_without_result":
        return _replay(None)
    if kind == "failed" and outcome.get("replayed"):
        return _replay(json.loads(outcome["error"]))
    if kind == "running":
        expires = outcome.get("lease_expires_at")
        secs = max(1, int(-(-(expires - time.time()) // 1))) if expires else 1
        return _problem("in-progress", retry_after=secs)
    return _problem("outcome-unknown")


def _replaying(body: bytes, receive: Receive) -> Receive:
    """The buffered body, once, then the server's own messages (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _Capture:
    """The ``send`` the app gets: the response streams on, and is stored up to the cap; the
    outcome is written before the last body message goes out."""

    def __init__(self, middleware: IdempotencyMiddleware, execution: "_native.Execution", send: Send) -> None:
        self.m, self.execution, self._send = middleware, execution, send
        self.storing = False
        self.finished = False
        self.status = 0
        self.headers: List[Tuple[str, str]] = []
        self.chunks: List[bytes] = []
        self.size = 0
        self.overflowed = False

    async def abandon(self, reason: str) -> None:
        if not self.finished:
            self.finished = True
            await _off_loop(functools.partial(self.execution.abandon, reason))

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            if self.status >= 500:
                self.storing = self.m.record_server_errors
            else:
                self.storing = self.m.stored_status(self.status)
            if not self.storing:
                self.finished = True
                await _off_loop(self.execution.release)
            else:
                wanted = self.m.stored_headers
                for n, v in message.get("headers", ()):
                    n = bytes(n).lower()
                    if n in wanted:
                        try:
                            self.headers.append((n.decode("ascii"), bytes(v).decode("ascii")))
                        except UnicodeDecodeError:
                            pass
        elif message["type"] == "http.response.body" and self.storing and not self.finished:
            chunk = bytes(message.get("body", b""))
            self.size += len(chunk)
            if not self.overflowed:
                if self.size > self.m.max_response_body:
                    self.overflowed, self.chunks = True, []
                else:
                    self.chunks.append(chunk)
            if not message.get("more_body", False):
                await self._complete()
        await self._send(message)

    async def _complete(self) -> None:
        self.finished = True
        key = self.execution.key
        if self.overflowed:
            logger.warning(
                "%s: the response body is over the storage cap (%d bytes): it went to the client whole, "
                "and the key is left uncertain for an operator (it is never stored truncated)",
                key,
                self.m.max_response_body,
            )
            await _off_loop(functools.partial(self.execution.abandon, "not_recorded"))
            return
        body = b"".join(self.chunks)
        stored: Dict[str, Any] = {"status": self.status, "headers": [list(h) for h in self.headers]}
        try:
            stored["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            stored["body_base64"] = base64.b64encode(body).decode("ascii")
        try:
            await _off_loop(functools.partial(self.execution.complete, json.dumps(stored)))
        except _native.SentinelError as e:
            logger.warning("%s: the response was not stored (%s); the key is uncertain", key, e)
