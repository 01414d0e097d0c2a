"""The console suite's fixtures: a real ``sentinel serve`` on a store of the test's own (SQLite
file or PostgreSQL schema) with an auth file of three users, the ``sentinel`` command on the
same store, and keys made uncertain the way production makes them: by killing a ``sentinel
run`` mid-command."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stores import CLI, ROOT, fresh_store, missing  # noqa: E402

#: name → (role, secret) of the auth file every console of the suite is started with.
USERS = {
    "alice": ("operator", "alice-secret-0123456789"),
    "carol": ("operator", "carol-secret-0123456789"),
    "victor": ("viewer", "victor-secret-0123456789"),
}
SCREENSHOTS = ROOT / "target" / "console-screenshots"


class Console:
    """One ``sentinel serve`` process and the ``sentinel`` command on its store."""

    def __init__(self, url, env, tmp_path):
        self.url, self.env, self.tmp = url, env, tmp_path
        self.auth_file = tmp_path / "console.auth"
        self.auth_file.write_text(
            "# name role secret\n"
            + "".join(f"{n} {role} {secret}\n" for n, (role, secret) in USERS.items())
        )
        self.process = None
        self.base = None
        self.stderr_lines = []

    def start(self, *extra):
        if not CLI.exists():
            missing(f"{CLI} is missing: scripts/console-test builds it")
        args = [str(CLI), "--database-url", self.url, "serve", "--listen", "127.0.0.1:0",
                "--auth-file", str(self.auth_file), *extra]
        self.process = subprocess.Popen(args, env=self.env, stderr=subprocess.PIPE, cwd=ROOT)
        # Ready when it says where it listens (a signal, not a sleep).
        ready = threading.Event()

        def read():
            for raw in self.process.stderr:
                self.stderr_lines.append(raw.decode(errors="replace"))
                ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(60) or "console on http://" not in self.stderr_lines[0]:
            self.process.kill()
            pytest.fail(f"sentinel serve did not start: {self.stderr_lines}")
        line = self.stderr_lines[0]
        self.base = line.split("console on ", 1)[1].split("/ ", 1)[0]
        return self

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def client(self, user="alice", **kwargs):
        auth = None if user is None else (user, USERS[user][1])
        return httpx.Client(base_url=self.base, auth=auth, timeout=30, **kwargs)

    def cli(self, *args, namespace="default", check=True):
        done = subprocess.run(
            [str(CLI), "--database-url", self.url, "--namespace", namespace, *args],
            env=self.env, capture_output=True, text=True, timeout=60,
        )
        if check and done.returncode != 0:
            pytest.fail(f"sentinel {' '.join(args)} exited {done.returncode}: {done.stderr}")
        return done

    def inspect(self, key, namespace="default"):
        done = self.cli("inspect", key, "--json", namespace=namespace, check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def complete(self, key, *command, namespace="default"):
        """A key completed by ``sentinel run`` (``true`` unless a command is given)."""
        self.cli("run", "--key", key, "--", *(command or ["true"]), namespace=namespace)

    def make_uncertain(self, key, namespace="default", ledger=None):
        """Kills a ``sentinel run`` while its command runs; waits until the lease has expired
        and the key reads as uncertain. The command appends a line to ``ledger`` when it starts,
        so a test can count real executions."""
        # File names of their own: a key may hold any character, `/` included.
        ledger = ledger or self.tmp / f"ledger-{uuid.uuid4().hex}"
        started = self.tmp / f"started-{uuid.uuid4().hex}"
        script = 'echo ran >> "$LEDGER"; touch "$STARTED"; exec sleep 120'
        run = subprocess.Popen(
            [str(CLI), "--database-url", self.url, "--namespace", namespace, "run", "--key", key,
             "--ttl", "1s", "--", "sh", "-c", script],
            env=dict(self.env, LEDGER=str(ledger), STARTED=str(started)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not started.exists():
            assert run.poll() is None, "sentinel run exited before its command started"
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.01)
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        # The lease (1s) has to run out on the store's clock; poll the state it derives.
        deadline = time.monotonic() + 30
        while (self.inspect(key, namespace) or {}).get("state") != "uncertain":
            assert time.monotonic() < deadline, f"{key} never became uncertain"
            time.sleep(0.05)
        return ledger


@pytest.fixture(params=["sqlite", "postgres"])
def console(request, tmp_path):
    """A running console on a fresh store, with the schema in place."""
    with fresh_store(request.param, tmp_path, "console") as (url, extra):
        env = dict(os.environ, RUST_BACKTRACE="0", SENTINEL_ACTOR="cli-operator", **extra)
        c = Console(url, env, tmp_path)
        c.cli("init")
        c.start()
        c.store_kind = request.param
        try:
            yield c
        finally:
            c.stop()
