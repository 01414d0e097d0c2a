"""The HTTP black-box suite's servers: each example app of HTTP.md started on loopback, on a
SQLite file or a PostgreSQL schema of the test's own, with a ledger file counting the real
executions of its handlers. With CI=true a store or a server that cannot be reached fails the
test; it never skips."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stores import CLI, PG_URL, ROOT, free_port, fresh_store, missing  # noqa: E402

__all__ = ["PG_URL"]

#: How each implementation's example server is started (HTTP.md: the same routes and options).
SERVERS = {
    "rust": [str(ROOT / "target" / "debug" / "examples" / "server")],
    "python": [sys.executable, "-m", "sentinel.integrations.asgi.example"],
}


class Server:
    """One example server process; ``kill()`` is SIGKILL, ``start()`` again on the same store."""

    def __init__(self, command, url, env, ledger, ttl="10s"):
        self.command, self.url, self.env, self.ledger, self.ttl = command, url, env, ledger, ttl
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.stderr = b""

    def start(self):
        args = self.command + ["--listen", f"127.0.0.1:{self.port}", "--database-url", self.url, "--ttl", self.ttl]
        self.process = subprocess.Popen(
            args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
        )
        # Ready when it says so (a signal, not a sleep): its first line names the address.
        ready = threading.Event()
        line = []

        def read():
            line.append(self.process.stdout.readline())
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or not line[0].startswith(b"listening on"):
            self.process.kill()
            _, err = self.process.communicate(timeout=10)
            pytest.fail(f"the server did not start: {line} {err.decode(errors='replace')[-2000:]}")
        return self

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def executions(self, route=None):
        """The ledger's lines: one per real execution of a handler."""
        if not self.ledger.exists():
            return []
        lines = self.ledger.read_text().splitlines()
        return [l for l in lines if route is None or l.startswith(route + " ")]

    def wait_for_execution(self, n, timeout=30):
        """Blocks until the ledger holds ``n`` lines (the handler has started its side effect)."""
        deadline = time.monotonic() + timeout
        while len(self.executions()) < n:
            if time.monotonic() > deadline:
                pytest.fail(f"the ledger never reached {n} lines: {self.executions()}")
            time.sleep(0.01)

    def client(self, **kwargs):
        return httpx.Client(base_url=self.base, timeout=60, **kwargs)

    def cli(self, *args):
        """The ``sentinel`` command on the server's store, in its namespace."""
        if not CLI.exists():
            missing(f"{CLI} is missing: scripts/test builds it")
        return subprocess.run(
            [str(CLI), "--database-url", self.url, "--namespace", "http", *args],
            env=self.env, capture_output=True, text=True, timeout=60,
        )


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """(url, extra environment) of a fresh store."""
    with fresh_store(request.param, tmp_path, "http") as s:
        yield s


@pytest.fixture(params=sorted(SERVERS))
def implementation(request):
    command = SERVERS[request.param]
    if not Path(command[0]).exists() and command[0] != sys.executable:
        missing(f"{command[0]} is missing: scripts/http-test builds it")
    return command


@pytest.fixture
def make_server(implementation, store, tmp_path):
    """Starts servers of this implementation on this store (several share the store)."""
    url, extra = store
    ledger = tmp_path / "ledger"
    env = dict(os.environ, SENTINEL_EXAMPLE_LEDGER=str(ledger), RUST_BACKTRACE="0", **extra)
    started = []

    def make(ttl="10s", url_override=None):
        s = Server(implementation, url_override or url, env, ledger, ttl)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def server(make_server):
    return make_server()
