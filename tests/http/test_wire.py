"""Every row of HTTP.md, on the wire: each example server on loopback, on SQLite and on
PostgreSQL, counting real executions in the ledger file."""

import json
import socket
import threading
import time
import uuid

import httpx
import pytest

from conftest import PG_URL

PROBLEM = "application/problem+json"


def key():
    return f"k-{uuid.uuid4().hex}"


def post(client, path, k=None, body=b"{}", headers=(), **kwargs):
    h = [("content-type", "application/json"), *headers]
    if k is not None:
        h.append(("idempotency-key", k))
    return client.post(path, content=body, headers=h, **kwargs)


def assert_problem(response, status, name):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["cache-control"] == "no-store"
    problem = response.json()
    assert problem["type"].rsplit("/", 1)[1] == name
    assert problem["status"] == status
    return problem


def test_the_first_request_runs_once_and_every_retry_replays_it(server):
    k = key()
    with server.client() as c:
        first = post(c, "/payments", k, b'{"amount": 5}')
        assert first.status_code == 201
        assert "idempotent-replayed" not in first.headers
        assert "set-cookie" in first.headers
        for _ in range(3):
            again = post(c, "/payments", k, b'{"amount": 5}')
            assert again.status_code == 201
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content  # byte for byte
            for h in ("content-type", "location", "etag"):
                assert again.headers[h] == first.headers[h]
            assert "set-cookie" not in again.headers  # one client's session never reaches another
    assert len(server.executions("POST /payments")) == 1


def test_a_string_and_a_bare_token_are_the_same_key(server):
    k = key()
    with server.client() as c:
        assert post(c, "/payments", k).status_code == 201
        quoted = post(c, "/payments", f'"{k}"')
        assert quoted.headers.get("idempotent-replayed") == "true"
    assert len(server.executions()) == 1


@pytest.mark.parametrize(
    "value",
    [b"", b'""', b"a" * 256, b'"a", "b"', b"a, b", b'"a b"', b'"a";p=1', b"caf\xe9", b'"unterminated'],
    ids=["empty", "empty-string", "256", "list", "bare-list", "space", "parameters", "non-ascii", "unterminated"],
)
def test_a_bad_key_is_400_and_runs_nothing(server, value):
    with server.client() as c:
        r = c.post("/payments", content=b"{}", headers=[("idempotency-key", value)])
        assert_problem(r, 400, "key-invalid")
        if len(value.strip()) > 3:
            assert value.decode("latin-1").strip() not in r.text  # never echoed
    assert server.executions() == []


def test_two_key_fields_are_400_and_a_255_character_key_is_accepted(server):
    with server.client() as c:
        r = c.post("/payments", content=b"{}", headers=[("idempotency-key", "a"), ("idempotency-key", "b")])
        assert_problem(r, 400, "key-invalid")
        longest = "x" * 254 + uuid.uuid4().hex[:1]
        assert post(c, "/payments", longest).status_code == 201
    assert len(server.executions()) == 1


def test_a_required_route_refuses_no_key_and_an_optional_one_runs_every_time(server):
    with server.client() as c:
        assert_problem(post(c, "/payments"), 400, "key-missing")
        a, b = post(c, "/optional"), post(c, "/optional")
        assert (a.status_code, b.status_code) == (201, 201)
        assert a.json()["id"] != b.json()["id"] and not a.json()["claimed"]
        k = key()
        keyed = [post(c, "/optional", k) for _ in range(2)]
        assert keyed[0].json()["claimed"] and keyed[1].headers["idempotent-replayed"] == "true"
    assert len(server.executions("POST /optional")) == 3
    assert server.executions("POST /payments") == []


def test_other_methods_pass_through_even_with_a_key(server):
    k = key()
    with server.client() as c:
        created = post(c, "/payments", k)
        location = created.headers["location"]
        for _ in range(2):
            read = c.get(location, headers={"idempotency-key": k})
            assert read.status_code == 200 and "idempotent-replayed" not in read.headers
            assert read.json()["id"] == created.json()["id"]


def test_one_principal_never_sees_anothers_response_or_running_request(server):
    k = key()
    alice = {"authorization": "Bearer alice"}
    bob = {"authorization": "Bearer bob"}
    with server.client(headers=alice) as a, server.client(headers=bob) as b:
        slow = {}
        t = threading.Thread(target=lambda: slow.update(r=post(a, "/payments?sleep_ms=1500", k)))
        t.start()
        server.wait_for_execution(1)
        # While alice's request runs, bob's with the same key is his own: it runs.
        overlapped = t.is_alive()
        mine = post(b, "/payments?sleep_ms=1500", k)
        t.join()
        assert overlapped, "bob's request did not overlap alice's"
        assert mine.status_code == 201 and "idempotent-replayed" not in mine.headers
        assert mine.json()["id"] != slow["r"].json()["id"]
        assert post(b, "/payments?sleep_ms=1500", k).json()["id"] == mine.json()["id"]
        assert post(a, "/payments?sleep_ms=1500", k).json()["id"] == slow["r"].json()["id"]
    assert len(server.executions()) == 2


def test_the_same_key_with_another_request_is_422_and_runs_nothing(server):
    k = key()
    with server.client() as c:
        assert post(c, "/payments", k, b'{"amount": 5}').status_code == 201
        assert_problem(post(c, "/payments", k, b'{"amount": 6}'), 422, "fingerprint-mismatch")
        assert_problem(post(c, "/payments?sleep_ms=1", k, b'{"amount": 5}'), 422, "fingerprint-mismatch")
        assert_problem(post(c, "/reject", k, b'{"amount": 5}'), 422, "fingerprint-mismatch")
    assert len(server.executions()) == 1


def test_a_body_over_the_cap_is_413_before_any_claim_and_the_cap_itself_is_accepted(server):
    k = key()
    with server.client() as c:
        assert_problem(post(c, "/payments", k, b"x" * ((1 << 20) + 1)), 413, "request-too-large")
        assert server.executions() == []
        # Nothing was claimed: the same key now runs, with a body of exactly the cap.
        assert post(c, "/payments", k, b"x" * (1 << 20)).status_code == 201
    assert len(server.executions()) == 1


def test_a_retry_while_the_first_runs_is_409_in_progress_then_a_replay(server):
    k = key()
    with server.client() as c, server.client() as other:
        first = {}
        t = threading.Thread(target=lambda: first.update(r=post(c, "/payments?sleep_ms=2000", k)))
        t.start()
        server.wait_for_execution(1)
        busy = post(other, "/payments?sleep_ms=2000", k)
        overlapped = t.is_alive()  # the first had not answered when the retry was refused
        problem = assert_problem(busy, 409, "in-progress")
        assert int(busy.headers["retry-after"]) >= 1
        assert k not in json.dumps(problem)
        t.join()
        assert overlapped, "the retry did not overlap the first request"
        assert first["r"].status_code == 201
        replay = post(other, "/payments?sleep_ms=2000", k)
        assert replay.headers["idempotent-replayed"] == "true" and replay.content == first["r"].content
    assert len(server.executions()) == 1


def test_a_5xx_passes_through_and_the_next_retry_runs(server):
    k = key()
    with server.client() as c:
        for _ in range(2):
            r = post(c, "/fail", k)
            assert r.status_code == 500 and "idempotent-replayed" not in r.headers
    assert len(server.executions("POST /fail")) == 2


def test_a_4xx_is_stored_and_replayed(server):
    k = key()
    with server.client() as c:
        first = post(c, "/reject", k)
        again = post(c, "/reject", k)
    assert first.status_code == again.status_code == 400
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() == {"error": "card_declined"}
    assert len(server.executions("POST /reject")) == 1


def test_a_panicking_handler_is_never_run_again(server):
    k = key()
    with server.client() as c:
        try:
            first = post(c, "/panic", k)
            assert first.status_code == 500
        except httpx.HTTPError:
            pass  # the connection was closed: what a panicking handler's client sees
    with server.client() as c:
        for _ in range(2):
            assert_problem(post(c, "/panic", k), 409, "outcome-unknown")
    assert len(server.executions("POST /panic")) == 1


def test_a_response_over_the_storage_cap_streams_whole_and_is_never_stored(server):
    k = key()
    n = 2 * (1 << 20) + 7
    with server.client() as c:
        with c.stream("POST", f"/big?bytes={n}", headers={"idempotency-key": k}) as r:
            assert r.status_code == 200
            got = sum(len(chunk) for chunk in r.iter_bytes())
        assert got == n
        assert_problem(post(c, f"/big?bytes={n}", k, b""), 409, "outcome-unknown")
    assert len(server.executions("POST /big")) == 1


def test_a_large_response_under_the_cap_replays_byte_for_byte(server):
    k = key()
    n = 900 * 1024
    with server.client() as c:
        first = post(c, f"/big?bytes={n}", k, b"")
        again = post(c, f"/big?bytes={n}", k, b"")
    assert len(first.content) == n and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert len(server.executions("POST /big")) == 1


def test_a_server_killed_mid_handler_never_runs_it_again_until_an_operator_resets_it(make_server):
    server = make_server(ttl="1s")
    k = key()
    with server.client() as c:
        t = threading.Thread(target=lambda: pytest.raises(httpx.HTTPError, post, c, "/payments?sleep_ms=60000", k))
        t.start()
        server.wait_for_execution(1)
        server.kill()
        t.join(30)
    server.start()  # the same store, a new process
    seen = set()
    with server.client() as c:
        deadline = time.monotonic() + 30
        while True:
            r = post(c, "/payments?sleep_ms=60000", k)
            assert r.status_code == 409, r.text  # never run again
            name = r.json()["type"].rsplit("/", 1)[1]
            seen.add(name)
            if name == "outcome-unknown":
                break
            assert name == "in-progress"  # the dead server's lease has not expired yet
            assert time.monotonic() < deadline, "the key never turned uncertain"
            time.sleep(0.2)
        assert len(server.executions()) == 1
        # The operator checked with the provider: the payment did not happen.
        record = f"anonymous/{k}"
        shown = server.cli("inspect", record)
        assert shown.returncode == 0 and "uncertain" in shown.stdout, shown
        assert server.cli("reconcile", record, "--reason", "provider has no charge").returncode == 0
        reset = server.cli("resolve", "--reset", record, "--reason", "provider has no charge")
        assert reset.returncode == 0, reset.stderr
        # The next retry runs the work: the second execution, by the operator's decision.
        after = post(c, "/payments?sleep_ms=1", k)
        assert after.status_code == 201 and "idempotent-replayed" not in after.headers
    assert len(server.executions()) == 2


class Proxy:
    """A TCP relay in front of PostgreSQL; ``cut()`` closes it and every connection."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while self.open:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", 5432))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        self.open = False
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked on it
        except OSError:
            pass
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_a_store_outage_is_503_and_runs_nothing(make_server):
    """PostgreSQL behind a relay that is cut (the embedded store has no network to fail)."""
    proxy = Proxy()
    server = make_server(url_override=PG_URL.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"))
    with server.client() as c:
        assert post(c, "/payments", key()).status_code == 201
        proxy.cut()
        r = post(c, "/payments", key())
        assert_problem(r, 503, "store-unavailable")
        assert int(r.headers["retry-after"]) >= 1
    assert len(server.executions()) == 1
