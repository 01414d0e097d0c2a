"""The ASGI middleware, driven in-process through the ASGI protocol, for what the wire cannot
show: an app that raises, a task cancelled mid-handler (the client went away), 1 GiB bodies with
flat memory, waiting instead of 409, the claim in the scope, the key syntax. The black-box suite
(tests/http at the repository's root) runs the example server on loopback."""

import asyncio
import json
import tracemalloc

import pytest

from sentinel.integrations.asgi import IdempotencyMiddleware, parse_key

MIB = 1 << 20
GIB = 1 << 30


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def request(path="/pay", key="k", method="POST", headers=()):
    h = [(b"content-type", b"application/json"), *headers]
    if key is not None:
        h.append((b"idempotency-key", key.encode()))
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"", "headers": h}


def body_of(chunks):
    """A receive() that yields ``chunks`` (an iterable of bytes), then waits for a disconnect."""
    it = iter(chunks)
    state = {"pulled": 0, "done": False}

    async def receive():
        if not state["done"]:
            try:
                chunk = next(it)
            except StopIteration:
                state["done"] = True
                return {"type": "http.request", "body": b"", "more_body": False}
            state["pulled"] += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": True}
        await asyncio.Event().wait()

    return receive, state


async def call(mw, scope, chunks=(b"{}",)):
    """Runs one request; returns (status, headers dict, body bytes)."""
    receive, _ = body_of(chunks)
    out = {"body": b""}

    async def send(m):
        if m["type"] == "http.response.start":
            out["status"], out["headers"] = m["status"], {bytes(n): bytes(v) for n, v in m["headers"]}
        else:
            out["body"] += m.get("body", b"")

    await mw(scope, receive, send)
    return out["status"], out["headers"], out["body"]


def make(store, app, **kwargs):
    url, schema = store
    return IdempotencyMiddleware(app, url=url, schema=schema, **kwargs)


def record(mw, key):
    return mw._engine.inspect("http", f"anonymous/{key}")


def test_key_syntax_follows_sf_string_and_tokens():
    assert parse_key(b'"abc-1"') == parse_key(b"abc-1") == parse_key(b"  abc-1 ") == "abc-1"
    assert parse_key(b'"a\\"b\\\\c"') == 'a"b\\c'
    assert parse_key(b"a" * 255) == "a" * 255
    for bad in [b"", b'""', b"a" * 256, b'"' + b"a" * 256 + b'"', b'"a", "b"', b"a, b", b'"a";x=1', b"a;x=1", b'"a b"', b"a b", b'"abc', b'"a\\nb"', "\"caf\u00e9\"".encode(), b"a\x7fb"]:
        with pytest.raises(ValueError):
            parse_key(bad)


def test_an_app_that_raises_leaves_the_key_uncertain_and_the_exception_goes_on(store):
    runs = []

    async def app(scope, receive, send):
        runs.append(1)
        raise RuntimeError("on purpose")

    mw = make(store, app)

    async def main():
        with pytest.raises(RuntimeError, match="on purpose"):
            await call(mw, request(key="boom"))
        return await call(mw, request(key="boom"))

    status, headers, body = run(main())
    assert status == 409 and json.loads(body)["type"].endswith("/outcome-unknown")
    assert headers[b"content-type"] == b"application/problem+json"
    r = record(mw, "boom")
    assert (r["state"], r["reason"]) == ("uncertain", "panicked")
    assert runs == [1]


def test_a_task_cancelled_mid_handler_leaves_the_key_uncertain(store):
    """The server cancels the app's task when the client goes away mid-handler."""
    runs, ev = [], {}

    async def app(scope, receive, send):
        runs.append(1)
        ev["inside"].set()
        await asyncio.Event().wait()

    mw = make(store, app)

    async def main():
        ev["inside"] = asyncio.Event()  # made on the test's own loop
        task = asyncio.ensure_future(call(mw, request(key="gone")))
        await ev["inside"].wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await call(mw, request(key="gone"))

    status, _, body = run(main())
    assert status == 409 and b"outcome-unknown" in body
    assert record(mw, "gone")["reason"] == "cancelled"
    assert runs == [1]



def test_a_one_gib_response_streams_with_flat_memory_and_is_never_stored_truncated(store):
    chunk = b"x" * 65536

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
        for i in range(GIB // len(chunk)):
            await send({"type": "http.response.body", "body": chunk, "more_body": i + 1 < GIB // len(chunk)})

    mw = make(store, app)
    received = {"n": 0}

    async def main():
        receive, _ = body_of([b""])

        async def send(m):
            received["n"] += len(m.get("body", b""))

        tracemalloc.start()
        try:
            await mw(request(key="big"), receive, send)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak = run(main())
    assert received["n"] == GIB
    assert peak < 16 * MIB, f"{peak} bytes at the peak for a 1 GiB body"
    r = record(mw, "big")
    assert (r["state"], r["reason"]) == ("uncertain", "not_recorded")


def test_a_one_gib_request_body_is_refused_after_the_cap_not_read_whole(store):
    runs = []

    async def app(scope, receive, send):
        runs.append(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = make(store, app)
    chunk = b"y" * 65536

    async def main():
        receive, state = body_of(chunk for _ in range(GIB // len(chunk)))
        out = {}

        async def send(m):
            out.setdefault("status", m.get("status"))

        await mw(request(key="up"), receive, send)
        exact = await call(mw, request(key="up"), [chunk] * (MIB // len(chunk)))
        return out["status"], state["pulled"], exact[0]

    status, pulled, exact = run(main())
    assert status == 413 and pulled <= MIB + len(chunk)
    assert exact == 200 and runs == [1]  # nothing was claimed by the refused one


def test_a_waiting_middleware_replays_the_first_response_instead_of_409(store):
    runs, ev = [], {}

    async def app(scope, receive, send):
        runs.append(scope["sentinel.claim"].fencing_token)
        ev["started"].set()
        await ev["go"].wait()
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": f"payment {len(runs)}".encode()})

    mw = make(store, app, wait=20)

    async def main():
        ev["started"], ev["go"] = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(call(mw, request(key="w")))
        await ev["started"].wait()
        second = asyncio.ensure_future(call(mw, request(key="w")))
        ev["go"].set()
        return await first, await second

    first, second = run(main())
    assert first[0] == second[0] == 201 and first[2] == second[2]
    assert second[1][b"idempotent-replayed"] == b"true"
    assert len(runs) == 1



def test_the_handler_finds_its_claim_in_the_scope_and_the_state(store):
    seen = {}

    async def app(scope, receive, send):
        seen["claim"] = scope.get("sentinel.claim")
        seen["state"] = scope.get("state", {}).get("idempotency_claim")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    mw = make(store, app, optional_paths=["/open"])
    run(call(mw, request(key="t")))
    assert seen["claim"] is seen["state"] and seen["claim"].key == "anonymous/t" and seen["claim"].fencing_token >= 1
    run(call(mw, request(path="/open", key=None)))
    assert seen["claim"] is None
    status, headers, _ = run(call(mw, request(key="t")))
    assert status == 200 and headers[b"idempotent-replayed"] == b"true"
