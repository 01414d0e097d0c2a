"""AsyncSentinel: the same contract on an asyncio event loop, which it never blocks."""

import asyncio
import threading
import time

import pytest

from sentinel import AsyncSentinel


def make(store, **kwargs):
    url, schema = store
    return AsyncSentinel(url=url, schema=schema, **kwargs)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_coroutine_runs_once_and_replays(store):
    s = make(store)
    calls = []

    async def charge(order_id):
        calls.append(order_id)
        await asyncio.sleep(0)
        return {"order": order_id}

    async def main():
        first = await s.once("c", charge, kwargs={"order_id": 3})
        again = await s.once("c", charge, kwargs={"order_id": 3})
        return first, again

    first, again = run(main())
    assert calls == [3]
    assert first.success and not first.cached and again.cached
    assert first.response == again.response == {"order": 3}


def test_a_plain_function_works_too(store):
    s = make(store)
    assert run(s.once("plain", lambda: [1, 2])).response == [1, 2]


def test_calls_under_gather_overlap(store):
    """Each function waits for the other to have started: they can only both finish if the
    two calls run at the same time, so the loop was never blocked."""
    s = make(store)

    async def main():
        started = {"a": asyncio.Event(), "b": asyncio.Event()}

        async def step(me, other):
            started[me].set()
            await started[other].wait()
            return me

        return await asyncio.gather(
            s.once("a", step, kwargs={"me": "a", "other": "b"}),
            s.once("b", step, kwargs={"me": "b", "other": "a"}),
        )

    a, b = run(main())
    assert (a.response, b.response) == ("a", "b")


def test_cancelling_the_task_mid_function_leaves_the_key_uncertain(store):
    s = make(store)

    async def main():
        inside = asyncio.Event()

        async def slow():
            inside.set()
            await asyncio.sleep(30)

        task = asyncio.ensure_future(s.once("cancel-me", slow))
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await s.once("cancel-me", lambda: pytest.fail("a cancelled key ran again"))

    r = run(main())
    assert r.uncertain and r.reason == "cancelled"


def test_an_exception_leaves_the_key_uncertain_and_the_operator_settles_it(store):
    s = make(store)
    raised = RuntimeError("provider timeout")

    async def charge():
        raise raised

    async def main():
        r = await s.once("x", charge)
        assert r.exception is raised and r.uncertain
        assert (await s.reconcile.reconcile("x")).success
        assert (await s.reconcile.force_complete("x", {"ok": True})).success
        return await s.once("x", charge)

    assert run(main()).response == {"ok": True}


def test_waiting_calls_leave_the_default_executor_to_the_application(store):
    """``wait=`` calls run on Sentinel's own threads: more of them than the loop's default
    executor has threads still leave it free, and all of them replay once the key settles."""
    url, schema = store

    async def scenario():
        s = AsyncSentinel(url=url, schema=schema)
        started, finish = asyncio.Event(), asyncio.Event()

        async def slow():
            started.set()
            await finish.wait()
            return "paid"

        owner = asyncio.ensure_future(s.once("slow", slow))
        await started.wait()
        waiters = [asyncio.ensure_future(s.once("slow", lambda: pytest.fail("ran twice"), wait=30)) for _ in range(12)]
        # Each waiter blocks one of Sentinel's threads (the pool grows a thread per blocked call).
        deadline = time.monotonic() + 10
        while sum(t.name.startswith("sentinel-async") for t in threading.enumerate()) < 12:
            assert time.monotonic() < deadline, "the waits did not move to Sentinel's own threads"
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: "free"), timeout=10) == "free"
        finish.set()
        assert (await owner).response == "paid"
        replays = await asyncio.wait_for(asyncio.gather(*waiters), timeout=30)
        assert all(r.cached and r.response == "paid" for r in replays)

    asyncio.run(scenario())


def test_await_reconcile_returns_the_operators_token(store):
    url, schema = store

    async def scenario():
        s = AsyncSentinel(url=url, schema=schema)
        failed = await s.once("broken", lambda: 1 / 0)
        assert failed.uncertain
        token = await s.reconcile("broken", reason="checked the ledger")
        assert token > failed.fencing_token
        assert (await s.reconcile.reset("broken")).success
        assert (await s.once("broken", lambda: "ran")).response == "ran"

    asyncio.run(scenario())


def test_cancelling_a_waiting_claim_propagates_at_once_and_releases_what_it_gets_later(store):
    """A task cancelled while its claim waits (``wait=``) on another worker's key is cancelled
    at once, not when the wait ends; when the key is then released, the claim that acquires it
    for the task that has gone releases it (its fn never ran) instead of leaving it uncertain."""
    from sentinel import Sentinel

    url, schema = store
    holder = Sentinel(url=url, schema=schema)
    inside, let_go = threading.Event(), threading.Event()
    ran = []

    def hold():
        inside.set()
        let_go.wait(30)
        raise RuntimeError("the holder gives the key back")

    def holding():
        with pytest.raises(RuntimeError, match="gives the key back"):
            holder.once("k", hold, on_failure="release")

    held = threading.Thread(target=holding)
    held.start()
    assert inside.wait(30)
    s = make(store)

    async def main():
        waiter = asyncio.ensure_future(s.once("k", lambda: ran.append("cancelled task"), wait=30))
        await asyncio.sleep(0)  # the task runs to its claim (the engine is made already)
        began = time.monotonic()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        cancelled_in = time.monotonic() - began
        let_go.set()
        await asyncio.get_running_loop().run_in_executor(None, held.join)
        # The late claim acquires the key and gives it back: this call waits for that, then runs.
        after = await s.once("k", lambda: ran.append("next caller") or "ran", wait=30)
        return cancelled_in, after

    cancelled_in, after = run(main())
    assert cancelled_in < 5, f"the cancellation waited {cancelled_in:.1f} s for the claim"
    assert after.success and after.response == "ran"
    assert ran == ["next caller"]
