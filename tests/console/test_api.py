"""The console's JSON API, /metrics and the server itself, against a real ``sentinel serve`` on
SQLite and PostgreSQL: every endpoint, the auth refusals, and bad input."""

import json
import os
import re
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from conftest import CLI, USERS

JSON = {"content-type": "application/json"}


def error_code(response):
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"], body
    return body["error"]["code"]


def test_overview_counts_states_and_names_the_oldest_uncertain_key(console):
    console.complete("paid-1", namespace="payments")
    console.complete("paid-2", namespace="payments")
    console.make_uncertain("charge-9", namespace="payments")
    console.complete("mail-1", namespace="mail")
    with console.client() as c:
        o = c.get("/api/v1/overview").json()
    counts = {(x["namespace"], x["state"]): x["count"] for x in o["counts"]}
    assert counts == {("payments", "completed"): 2, ("payments", "uncertain"): 1, ("mail", "completed"): 1}
    assert o["uncertain"] == 1
    oldest = o["oldest_uncertain"]
    assert (oldest["namespace"], oldest["key"]) == ("payments", "charge-9")
    assert oldest["age_seconds"] >= 0
    kinds = [(e["key"], e["event"]) for e in o["recent_events"]]
    assert kinds[0] == ("mail-1", "completed"), "newest first"
    assert ("charge-9", "acquired") in kinds


def test_records_filter_by_state_namespace_and_prefix_and_page_by_age(console):
    for k in ["order-3", "order-1", "refund-1", "order-2"]:
        console.complete(k, namespace="shop")
    console.complete("order-9", namespace="other")
    console.make_uncertain("order-4", namespace="shop")
    with console.client() as c:
        def keys(**params):
            r = c.get("/api/v1/records", params=params)
            assert r.status_code == 200, r.text
            return [x["key"] for x in r.json()["records"]], r.json()["next"]

        assert keys(namespace="shop", prefix="order-")[0] == ["order-1", "order-2", "order-3", "order-4"]
        assert keys(namespace="shop", state="uncertain")[0] == ["order-4"]
        assert keys(prefix="order-9")[0] == ["order-9"]
        assert keys(namespace="shop", prefix="ORDER")[0] == [], "the prefix is literal and case-sensitive"
        assert keys(prefix="order_")[0] == [], "no LIKE wildcards"

        for sort, expected in [("key", ["order-1", "order-2", "order-3", "order-4", "refund-1"]),
                               ("oldest", ["order-3", "order-1", "refund-1", "order-2", "order-4"]),
                               ("newest", ["order-4", "order-2", "refund-1", "order-1", "order-3"])]:
            seen, after = [], None
            while True:
                params = dict(namespace="shop", sort=sort, limit="2")
                if after:
                    params["after"] = after
                page, after = keys(**params)
                seen += page
                if after is None:
                    break
            assert seen == expected, sort


def test_a_record_comes_with_its_history(console):
    console.complete("report-1", "sh", "-c", "echo '{\"rows\": 3}'")
    with console.client() as c:
        r = c.get("/api/v1/record", params={"key": "report-1"})
        assert r.status_code == 200
        body = r.json()
        assert body["record"]["state"] == "completed"
        assert body["record"]["result"]["exit_code"] == 0
        assert body["record"]["result"]["stdout"] == '{"rows": 3}\n'
        assert [e["event"] for e in body["history"]] == ["acquired", "completed"]

        missing = c.get("/api/v1/record", params={"key": "never-ran"})
        assert missing.status_code == 404 and error_code(missing) == "not_found"
        no_key = c.get("/api/v1/record")
        assert no_key.status_code == 400 and error_code(no_key) == "invalid"


def test_reconcile_then_reset_lets_the_next_run_execute_again(console):
    ledger = console.make_uncertain("pay-7")
    assert ledger.read_text().splitlines() == ["ran"]
    with console.client("alice") as c:
        r = c.post("/api/v1/reconcile", json={"key": "pay-7", "reason": "PSP shows no charge"})
        assert r.status_code == 200, r.text
        token = r.json()["fencing_token"]
        assert r.json()["record"]["state"] == "reconciling"
        assert r.json()["record"]["operator"] == "alice"

        blocked = console.cli("run", "--key", "pay-7", "--", "sh", "-c", f"echo ran >> {ledger}", check=False)
        assert blocked.returncode == 76, "a reconciling key does not run"

        r = c.post("/api/v1/resolve", json={"key": "pay-7", "reason": "not charged", "outcome": "reset",
                                             "expected_token": token})
        assert r.status_code == 200, r.text
        assert r.json()["record"] is None
        history = c.get("/api/v1/record", params={"key": "pay-7"}).json()["history"]
    assert [e["event"] for e in history][-2:] == ["reconciling", "reset"]
    assert history[-1]["actor"] == "alice" and history[-1]["reason"] == "not charged"
    assert history[-2]["reason"] == "PSP shows no charge"

    console.cli("run", "--key", "pay-7", "--", "sh", "-c", f"echo ran >> {ledger}")
    assert ledger.read_text().splitlines() == ["ran", "ran"], "reset: the next caller ran it again"


def test_resolve_as_completed_stores_the_result_and_nothing_runs_again(console):
    ledger = console.make_uncertain("ship-1")
    with console.client("carol") as c:
        token = c.post("/api/v1/reconcile", json={"key": "ship-1", "reason": "check"}).json()["fencing_token"]
        result = {"exit_code": 0, "signal": None, "stdout": "shipped\n", "stderr": "", "encoding": "utf-8",
                  "truncated": False, "bytes_total": 8}
        r = c.post("/api/v1/resolve", json={"key": "ship-1", "reason": "carrier confirms", "outcome": "complete",
                                             "result": result, "expected_token": token})
        assert r.status_code == 200, r.text
        assert r.json()["record"]["state"] == "completed"
        assert r.json()["record"]["result"] == result
    replay = console.cli("run", "--key", "ship-1", "--", "sh", "-c", f"echo ran >> {ledger}")
    assert replay.stdout == "shipped\n"
    assert ledger.read_text().splitlines() == ["ran"], "completed: replayed, not run"


def test_a_second_operator_cannot_trample_the_first(console):
    console.make_uncertain("pay-8")
    with console.client("alice") as alice, console.client("carol") as carol:
        mine = alice.post("/api/v1/reconcile", json={"key": "pay-8", "reason": "mine"}).json()["fencing_token"]
        again = carol.post("/api/v1/reconcile", json={"key": "pay-8", "reason": "also mine"})
        assert again.status_code == 409 and error_code(again) == "refused"
        taken = carol.post("/api/v1/reconcile", json={"key": "pay-8", "reason": "alice is away", "force": True})
        assert taken.status_code == 200
        assert taken.json()["fencing_token"] > mine
        stale = alice.post("/api/v1/resolve", json={"key": "pay-8", "reason": "done", "outcome": "reset",
                                                     "expected_token": mine})
        assert stale.status_code == 409 and error_code(stale) == "refused"
        record = alice.get("/api/v1/record", params={"key": "pay-8"}).json()["record"]
    assert record["state"] == "reconciling" and record["operator"] == "carol"


def test_forget_takes_only_completed_records(console):
    console.complete("job-1")
    console.make_uncertain("job-2")
    with console.client() as c:
        refused = c.post("/api/v1/forget", json={"key": "job-2", "reason": "try"})
        assert refused.status_code == 409 and error_code(refused) == "refused"
        gone = c.post("/api/v1/forget", json={"key": "job-1", "reason": "rerun the report"})
        assert gone.status_code == 200 and gone.json()["record"] is None
        empty_ns = c.post("/api/v1/forget", json={"namespace": "", "key": "job-2", "reason": "x"})
        assert empty_ns.status_code == 409, "an empty namespace is the default one, as in the pages"
        absent = c.post("/api/v1/forget", json={"key": "nothing-here", "reason": "x"})
        assert absent.status_code == 404 and error_code(absent) == "not_found"
    assert console.inspect("job-1") is None


def test_a_viewer_reads_but_may_not_act(console):
    console.make_uncertain("pay-9")
    with console.client("victor") as v:
        assert v.get("/api/v1/me").json() == {"name": "victor", "role": "viewer"}
        assert v.get("/api/v1/overview").status_code == 200
        assert v.get("/metrics").status_code == 200
        for path, body in [("/api/v1/reconcile", {"key": "pay-9", "reason": "x"}),
                           ("/api/v1/resolve", {"key": "pay-9", "reason": "x", "outcome": "reset"}),
                           ("/api/v1/forget", {"key": "pay-9", "reason": "x"})]:
            r = v.post(path, json=body)
            assert r.status_code == 403 and error_code(r) == "forbidden", path
    assert console.inspect("pay-9")["state"] == "uncertain"


@pytest.mark.parametrize("path", ["/", "/records", "/api/v1/overview", "/api/v1/records", "/metrics",
                                  "/api/v1/openapi.json", "/assets/console.css"])
def test_without_valid_credentials_everything_is_refused(console, path):
    with console.client(None) as c:
        none = c.get(path)
        wrong = c.get(path, auth=("alice", "not-alices-secret-at-all"))
        swapped = c.get(path, auth=("victor", USERS["alice"][1]))
        bearer = c.get(path, headers={"authorization": "Bearer " + USERS["victor"][1]})
    for r in (none, wrong, swapped):
        assert r.status_code == 401, (path, r.status_code)
        assert r.headers["www-authenticate"].startswith("Basic")
    assert bearer.status_code == 200, "a user's secret is also its Bearer token"


def test_writes_from_another_site_are_refused(console):
    console.make_uncertain("pay-10")
    with console.client("alice") as c:
        r = c.post("/api/v1/reconcile", json={"key": "pay-10", "reason": "x"},
                   headers={"origin": "http://attacker.example"})
        assert r.status_code == 403 and error_code(r) == "cross_site"
        # A form post (what a foreign page can send without CORS) is not JSON: refused too.
        r = c.post("/api/v1/reconcile", content="key=pay-10&reason=x",
                   headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415
        r = c.post("/action", data={"action": "reconcile", "key": "pay-10", "reason": "x", "csrf": "forged"})
        assert r.status_code == 403
        r = c.post("/api/v1/reconcile", json={"key": "pay-10", "reason": "x"},
                   headers={"sec-fetch-site": "cross-site"})
        assert r.status_code == 403 and error_code(r) == "cross_site"
        # A real form token does not help a foreign page either.
        page = c.get("/confirm", params={"action": "reconcile", "key": "pay-10"}).text
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        form = {"action": "reconcile", "key": "pay-10", "reason": "x", "csrf": token}
        r = c.post("/action", data=form, headers={"origin": "http://attacker.example"})
        assert r.status_code == 403
    assert console.inspect("pay-10")["state"] == "uncertain"


@pytest.mark.parametrize("params,needle", [
    ({"state": "happy"}, "unknown state"),
    ({"sort": "sideways"}, "unknown sort"),
    ({"after": "not-a-cursor"}, "cursor"),
    ({"limit": "0"}, "limit"),
    ({"limit": "100000"}, "limit"),
    ({"prefix": "x" * 600}, "key"),
    ({"namespace": "bad\u0001ns"}, "namespace"),
])
def test_bad_list_parameters_are_a_clear_400(console, params, needle):
    with console.client() as c:
        r = c.get("/api/v1/records", params=params)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


@pytest.mark.parametrize("path,body,status,needle", [
    ("/api/v1/reconcile", {"key": "k"}, 400, "reason is required"),
    ("/api/v1/reconcile", {"key": "k", "reason": "   "}, 400, "reason is required"),
    ("/api/v1/reconcile", {"reason": "x"}, 422, "key"),
    ("/api/v1/reconcile", {"key": "k", "reason": "x", "colour": "red"}, 422, "colour"),
    ("/api/v1/reconcile", {"key": "k", "reason": "x", "outcome": "reset"}, 400, "reconcile takes"),
    ("/api/v1/resolve", {"key": "k", "reason": "x"}, 400, "outcome"),
    ("/api/v1/resolve", {"key": "k", "reason": "x", "outcome": "maybe"}, 400, "outcome"),
    ("/api/v1/resolve", {"key": "k", "reason": "x", "outcome": "reset", "result": 1}, 400, "result"),
    ("/api/v1/resolve", {"key": "k", "reason": "x", "outcome": "reset", "expected_token": -1}, 422, "expected_token"),
    ("/api/v1/resolve", {"key": "k", "reason": "x", "outcome": "reset", "expected_token": 2**63}, 400, "token"),
    ("/api/v1/forget", {"key": "", "reason": "x"}, 400, "key"),
    ("/api/v1/forget", {"key": "k", "reason": "x", "force": True}, 400, "forget takes"),
])
def test_bad_action_bodies_are_refused_with_the_reason(console, path, body, status, needle):
    with console.client() as c:
        r = c.post(path, json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"], r.text


def test_a_body_that_is_not_json_is_refused(console):
    with console.client() as c:
        r = c.post("/api/v1/forget", content=b"{not json", headers=JSON)
        assert r.status_code == 400 and error_code(r) == "invalid"
        r = c.post("/api/v1/forget", content=b'{"key": "k", "reason": "x"}')
        assert r.status_code == 415


def test_metrics_are_prometheus_text_of_the_store(console):
    console.complete("a", namespace="payments")
    console.make_uncertain("b", namespace="payments")
    with console.client("victor") as c:
        r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = r.text.splitlines()
    assert 'sentinel_records{namespace="payments",state="completed"} 1' in lines
    assert 'sentinel_records{namespace="payments",state="uncertain"} 1' in lines
    assert 'sentinel_records{namespace="payments",state="running"} 0' in lines
    age = [l for l in lines if l.startswith("sentinel_oldest_uncertain_age_seconds ")]
    assert len(age) == 1 and float(age[0].split()[1]) > 0
    for line in lines:
        assert line.startswith("#") or re.fullmatch(r'[a-z_]+(\{[^}]*\})? [0-9.]+', line), line


def test_the_openapi_document_describes_every_endpoint(console):
    with console.client() as c:
        doc = c.get("/api/v1/openapi.json").json()
        assert doc["openapi"].startswith("3.1")
        for path, methods in doc["paths"].items():
            for method in methods:
                r = c.request(method.upper(), path, json={} if method == "post" else None)
                assert r.status_code != 404 or path == "/api/v1/record", (method, path, r.status_code)
                assert r.status_code != 405, (method, path)
        # And nothing the router serves under /api/v1 is left out of it.
        for path in ["/api/v1/me", "/api/v1/overview", "/api/v1/records", "/api/v1/record",
                     "/api/v1/reconcile", "/api/v1/resolve", "/api/v1/forget"]:
            assert path in doc["paths"], path
        unknown = c.get("/api/v1/nothing")
        assert unknown.status_code == 404 and error_code(unknown) == "not_found"


def test_secrets_never_reach_pages_logs_or_errors(console, tmp_path):
    console.make_uncertain("pay-11")
    with console.client() as c:
        texts = [c.get(p).text for p in ["/", "/records", "/record?key=pay-11",
                                         "/confirm?action=reconcile&key=pay-11", "/api/v1/overview",
                                         "/api/v1/records", "/metrics", "/api/v1/me"]]
        texts.append(c.post("/api/v1/forget", json={"key": "pay-11", "reason": "x"}).text)
    texts.append("".join(console.stderr_lines))
    for secret in [s for _, s in USERS.values()]:
        for t in texts:
            assert secret not in t
    if console.store_kind == "postgres":
        # A password in the URL (trust auth ignores it) is redacted in what serve prints.
        url = console.url.replace("postgres@", "postgres:hunter2-db-password@")
        serve = subprocess.Popen([str(CLI), "--database-url", url, "serve", "--listen", "127.0.0.1:0"],
                                 env=console.env, stderr=subprocess.PIPE, text=True)
        first = []
        reader = threading.Thread(target=lambda: first.append(serve.stderr.readline()), daemon=True)
        reader.start()
        reader.join(60)
        serve.terminate()
        serve.wait(10)
        assert first, "sentinel serve printed nothing"
        line = first[0]
        assert "console on http://127.0.0.1:" in line and "hunter2" not in line, line


def test_serve_refuses_an_open_address_without_auth_and_a_bad_auth_file(console, tmp_path):
    base = [str(CLI), "--database-url", console.url, "serve"]
    open_addr = subprocess.run(base + ["--listen", "0.0.0.0:0"], env=console.env, capture_output=True,
                               text=True, timeout=30)
    assert open_addr.returncode == 2
    assert "without --auth-file" in open_addr.stderr
    bad = tmp_path / "bad.auth"
    bad.write_text("alice operator correct-horse-battery-staple\nbob another-long-secret-1 viewer\n")
    refused = subprocess.run(base + ["--auth-file", str(bad)], env=console.env, capture_output=True,
                             text=True, timeout=30)
    assert refused.returncode == 2
    assert "line 2" in refused.stderr and "must be viewer or operator" in refused.stderr
    assert "another-long-secret" not in refused.stderr
    absent = subprocess.run(base + ["--auth-file", str(tmp_path / "nope")], env=console.env,
                            capture_output=True, text=True, timeout=30)
    assert absent.returncode == 2 and "cannot read auth file" in absent.stderr
    origin = subprocess.run(base + ["--allowed-origin", "ops.example.com"], env=console.env,
                            capture_output=True, text=True, timeout=30)
    assert origin.returncode == 2 and "--allowed-origin" in origin.stderr
