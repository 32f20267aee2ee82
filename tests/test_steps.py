"""redis_ckpt.steps: ordering, results, resume, idempotency keys, commit_every, fencing, and a
worker killed with SIGKILL whose run another process finishes (also examples/steps_resume.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from redis_ckpt import FencedError, LeaseHeldError, LeaseLostError, UnsupportedTypeError
from redis_ckpt.steps import StepPlanError, StepRunner, describe, is_step_state

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent


def recording_runner(store, run_id, calls, names=("a", "b", "c"), fail=None, **kw):
    runner = StepRunner(store, run_id, **kw)
    for name in names:
        def step(ctx, name=name):
            calls.append((name, ctx.idempotency_key, dict(ctx.results), ctx.index))
            if fail is not None and fail(name):
                raise RuntimeError(f"{name} failed")
            return {"name": name, "inputs": ctx.inputs, "n": len(ctx.results)}
        runner.add(name, step)
    return runner


def test_steps_run_in_order_with_the_results_before_them(store):
    calls = []
    runner = recording_runner(store, "job", calls)
    results = runner.run({"x": 1})
    assert [c[0] for c in calls] == ["a", "b", "c"]
    assert [c[3] for c in calls] == [1, 2, 3]
    assert calls[2][2] == {"a": results["a"], "b": results["b"]}
    assert results["c"] == {"name": "c", "inputs": {"x": 1}, "n": 2}
    st = runner.status()
    assert st.completed == ("a", "b", "c") and st.pending == () and st.finished and st.next_step is None
    assert st.results == results and st.inputs == {"x": 1}
    assert {h["owner"] for h in st.history.values()} == {store.owner}
    assert isinstance(st.history["a"]["finished_at"], datetime)
    assert store.info("job").lease_state == "released"  # the next worker need not wait


def test_decorator_and_add_and_plan_checks(store):
    runner = StepRunner(store, "deco")

    @runner.step("one")
    def one(ctx):
        return Decimal("1.10")

    runner.add("two", lambda ctx: ctx.results["one"] * 2)
    assert runner.steps == ("one", "two")
    with pytest.raises(ValueError):
        runner.add("one", lambda ctx: None)
    results = runner.run()
    assert results == {"one": Decimal("1.10"), "two": Decimal("2.20")} and type(results["two"]) is Decimal
    with pytest.raises(ValueError):
        StepRunner(store, "bad {id}")
    with pytest.raises(ValueError):
        StepRunner(store, "x", commit_every=0)


def test_resume_continues_at_the_first_step_not_completed(store):
    calls = []
    failing = {"b"}
    runner = recording_runner(store, "job", calls, fail=lambda n: n in failing)
    with pytest.raises(RuntimeError, match="b failed"):
        runner.run({"x": 1})
    st = runner.status()
    assert st.completed == ("a",) and st.pending == ("b", "c") and not st.finished
    failing.clear()
    other_worker = recording_runner(store, "job", calls, owner="worker-2")
    results = other_worker.run()  # no inputs: those of the first run are used
    assert [c[0] for c in calls] == ["a", "b", "b", "c"]
    assert results["c"]["inputs"] == {"x": 1}
    st = other_worker.status()
    assert st.history["a"]["owner"] == store.owner and st.history["c"]["owner"] == "worker-2"
    assert st.history["c"]["token"] > st.history["a"]["token"]
    calls.clear()
    assert other_worker.run() == results and calls == []  # a finished run only returns its results


def test_idempotency_keys_are_stable_per_step_and_run(store):
    calls = []
    failing = {"b"}
    runner = recording_runner(store, "idem", calls, fail=lambda n: n in failing)
    with pytest.raises(RuntimeError):
        runner.run()
    failing.clear()
    runner.run()
    keys = {}
    for name, key, _, _ in calls:
        keys.setdefault(name, set()).add(key)
    assert all(len(v) == 1 for v in keys.values()), keys  # "b" ran twice with one key
    assert len({next(iter(v)) for v in keys.values()}) == 3
    assert all(k.startswith("idem:") for v in keys.values() for k in v)
    # a run deleted and started again is a new run: new keys
    store.delete("idem")
    calls.clear()
    recording_runner(store, "idem", calls).run()
    assert not {c[1] for c in calls} & {k for v in keys.values() for k in v}


def test_commit_every_n_steps_and_always_at_the_end(store):
    for every, expected_commits in ((1, 5), (2, 3), (10, 1)):
        run = f"every-{every}"
        runner = recording_runner(store, run, [], names=("a", "b", "c", "d", "e"), commit_every=every)
        runner.run()
        assert store.info(run).generation == 1 + expected_commits  # + the plan committed first
        metas = [g.metadata for g in store.generations(run)]
        assert metas[0]["completed"] == 5


def test_a_failing_step_keeps_the_progress_made_before_it(store):
    calls = []
    runner = recording_runner(store, "keep", calls, names=("a", "b", "c", "d"), commit_every=10,
                              fail=lambda n: n == "c")
    with pytest.raises(RuntimeError):
        runner.run()
    assert runner.status().completed == ("a", "b")


def test_an_unsupported_result_fails_the_step_naming_it(store):
    runner = StepRunner(store, "types")
    runner.add("fine", lambda ctx: {"when": datetime(2026, 1, 1)})
    runner.add("bad", lambda ctx: {"handle": object()})
    with pytest.raises(UnsupportedTypeError) as bad:
        runner.run()
    assert "bad" in bad.value.path and "handle" in bad.value.path
    assert runner.status().completed == ("fine",)


def test_the_plan_may_grow_but_completed_steps_may_not_move(store):
    calls = []
    recording_runner(store, "plan", calls, names=("a", "b")).run({"v": 1})
    grown = recording_runner(store, "plan", calls, names=("a", "b", "c"))
    assert grown.status().pending == ("c",)
    grown.run()
    assert [c[0] for c in calls] == ["a", "b", "c"]
    with pytest.raises(StepPlanError):
        recording_runner(store, "plan", calls, names=("b", "a", "c")).run()
    with pytest.raises(StepPlanError):
        recording_runner(store, "plan", calls, names=("a", "b", "c", "d")).run({"v": 2})  # other inputs


def test_status_refuses_a_plan_that_does_not_fit_the_run_as_run_does(store):
    """status() of a runner whose completed steps were renamed or removed said finished=True
    (or listed a pending step) where run() refuses the plan: both raise StepPlanError."""
    recording_runner(store, "fit", [], names=("a", "b", "c")).run()
    for names in (("a", "b"), ("a", "x", "c"), ("b", "a", "c")):  # removed, renamed, moved
        runner = recording_runner(store, "fit", [], names=names)
        with pytest.raises(StepPlanError):
            runner.status()
        with pytest.raises(StepPlanError):
            runner.run()
    assert recording_runner(store, "fit", [], names=("a", "b", "c", "d")).status().pending == ("d",)


def test_describe_reads_a_step_state_and_nothing_else(store):
    assert describe({"step": 3}) is None and not is_step_state([1])
    assert StepRunner(store, "never").status() is None
    runner = recording_runner(store, "d", [], fail=lambda n: n == "c")
    with pytest.raises(RuntimeError):
        runner.run()
    ck = store.load("d")
    st = describe(ck.state, run_id="d", generation=ck.generation)
    assert is_step_state(ck.state)
    assert (st.completed, st.pending, st.next_step, st.finished) == (("a", "b"), ("c",), "c", False)
    d = st.as_dict()
    assert d["completed"] == ["a", "b"] and d["pending"] == ["c"] and d["generation"] == ck.generation
    assert set(d["results"]) == {"a", "b"}


def test_a_second_worker_waits_while_the_first_heartbeats_through_a_long_step(store):
    started = threading.Event()

    def slow(ctx):
        started.set()
        time.sleep(2.5)  # > ttl: only the background heartbeat keeps the lease
        return 1

    first = StepRunner(store, "hb", ttl=1.0)  # renewed every ~0.33 s: slack for a loaded CI box
    first.add("slow", slow)
    t = threading.Thread(target=first.run)
    t.start()
    started.wait(5)
    time.sleep(1.5)  # past the ttl
    second = StepRunner(store, "hb", owner="second", ttl=1.0, acquire_timeout=0)
    second.add("slow", slow)
    with pytest.raises(LeaseHeldError):
        second.run()
    t.join()
    assert first.status().finished


def test_a_worker_that_lost_its_run_is_fenced_at_its_next_commit(store):
    release = threading.Event()
    outcome = {}

    def stuck(ctx):
        release.wait(10)  # a GC pause / partition, without heartbeats
        return "stale"

    first = StepRunner(store, "fence", ttl=0.3, heartbeat=False)
    first.add("a", lambda ctx: "a").add("b", stuck)

    def run_first():
        try:
            first.run()
        except FencedError as exc:
            outcome["fenced"] = exc

    t = threading.Thread(target=run_first)
    t.start()
    time.sleep(0.2)
    second = StepRunner(store, "fence", owner="second", ttl=5, acquire_timeout=5)
    second.add("a", lambda ctx: "a").add("b", lambda ctx: "fresh")
    assert second.run() == {"a": "a", "b": "fresh"}  # waited out the first worker's lease
    release.set()
    t.join()
    assert "fenced" in outcome
    assert second.status().results["b"] == "fresh"


@pytest.mark.parametrize("commit_every", [1, 2])
def test_kill_9_of_a_worker_another_finishes_the_run(store, durable_server, tmp_path, commit_every):
    log = tmp_path / "steps.log"
    run = f"crash-{commit_every}"

    def spawn(owner):
        return subprocess.Popen([sys.executable, "-m", "tests.workers.step_worker", durable_server.url, store.namespace,
                                 run, owner, str(log), str(commit_every)], cwd=ROOT, stderr=subprocess.PIPE, text=True)

    def lines():
        return log.read_text().splitlines() if log.exists() else []

    first = spawn("first")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(line.startswith("s4 ") for line in lines()):
            time.sleep(0.02)
    finally:
        first.kill()  # inside s4: s1..s3 completed, committed up to s3 (or s2 with commit_every=2)
        first.communicate(timeout=30)
    second = spawn("second")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    started = [line.split() for line in lines() if not line.startswith("done")]
    by_first = [s for s, _, who in started if who == "first"]
    by_second = [s for s, _, who in started if who == "second"]
    assert by_first == ["s1", "s2", "s3", "s4"]
    # what was committed is not run again; what was not (s3 with commit_every=2) is, with the same key
    assert by_second == (["s4"] if commit_every == 1 else ["s3", "s4"])
    keys = {}
    for s, key, _ in started:
        keys.setdefault(s, set()).add(key)
    assert all(len(v) == 1 for v in keys.values())
    st = StepRunner(store, run).status()
    assert st.finished and st.completed == ("s1", "s2", "s3", "s4")
    assert st.results["s4"] == {"step": "s4", "by": "second", "seen": ["s1", "s2", "s3"]}
    assert st.history["s2"]["owner"] == "first"


def test_example_survives_kill_9_and_finishes_on_another_worker(durable_server, client, namespace):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "steps_resume.py"), "--url", durable_server.url,
                           "--namespace", namespace], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
    assert "already charged" in proc.stdout


# --------------------------------------------------------------------------- AsyncStepRunner


def test_async_runner_runs_resumes_and_shares_the_run_with_the_sync_one(durable_server, namespace, store):
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.steps import AsyncStepRunner

    calls = []

    async def scenario():
        astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        runner = AsyncStepRunner(astore, "async-job", ttl=5)

        @runner.step("fetch")
        async def fetch(ctx):
            calls.append(("fetch", ctx.idempotency_key))
            await asyncio.sleep(0.01)
            await ctx.heartbeat()
            return {"rows": 3}

        @runner.step("parse")
        async def parse(ctx):
            calls.append(("parse", ctx.idempotency_key))
            raise RuntimeError("parse failed")

        with pytest.raises(RuntimeError, match="parse failed"):
            await runner.run({"url": "u"})
        st = await runner.status()
        assert st.completed == ("fetch",) and st.pending == ("parse",) and st.inputs == {"url": "u"}
        assert (await astore.info("async-job")).lease_state == "released"
        await astore.close()

    asyncio.run(scenario())
    # the sync runner resumes the run the async one started: same plan, same state, same keys
    sync = StepRunner(store, "async-job", owner="sync-worker")
    sync.add("fetch", lambda ctx: calls.append(("fetch-again", None)))
    sync.add("parse", lambda ctx: calls.append(("parse", ctx.idempotency_key)) or ctx.results["fetch"]["rows"] * 2)
    assert sync.run() == {"fetch": {"rows": 3}, "parse": 6}
    assert [c[0] for c in calls] == ["fetch", "parse", "parse"]
    assert calls[1][1] == calls[2][1]  # the re-run step kept its idempotency key


def test_async_runner_waits_for_a_live_lease_and_its_stale_commit_is_fenced(durable_server, namespace, store):
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.steps import AsyncStepRunner

    async def scenario():
        astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        release = asyncio.Event()

        async def stuck(ctx):
            await release.wait()  # a pause, without heartbeats
            return "stale"

        first = AsyncStepRunner(astore, "afence", ttl=0.3, heartbeat=False)
        first.add("a", lambda ctx: "a").add("b", stuck)
        task = asyncio.create_task(first.run())
        await asyncio.sleep(0.1)
        impatient = AsyncStepRunner(astore, "afence", owner="impatient", ttl=5, acquire_timeout=0)
        impatient.add("a", lambda ctx: "a").add("b", lambda ctx: "fresh")
        with pytest.raises(LeaseHeldError):
            await impatient.run()
        second = AsyncStepRunner(astore, "afence", owner="second", ttl=5, acquire_timeout=5)
        second.add("a", lambda ctx: "a").add("b", lambda ctx: "fresh")
        assert await second.run() == {"a": "a", "b": "fresh"}  # waited out the first worker's lease
        release.set()
        with pytest.raises(FencedError):
            await task
        assert (await second.status()).results["b"] == "fresh"
        await astore.close()

    asyncio.run(scenario())


def test_async_runner_heartbeats_through_a_long_step(durable_server, namespace):
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.steps import AsyncStepRunner

    async def scenario():
        astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)

        async def slow(ctx):
            await asyncio.sleep(2.5)  # > ttl: only the background heartbeat keeps the lease
            return 1

        first = AsyncStepRunner(astore, "ahb", ttl=1.0)  # renewed every ~0.33 s: slack for a loaded CI box
        first.add("slow", slow)
        task = asyncio.create_task(first.run())
        await asyncio.sleep(1.5)  # past the ttl
        second = AsyncStepRunner(astore, "ahb", owner="second", ttl=1.0, acquire_timeout=0)
        second.add("slow", slow)
        with pytest.raises(LeaseHeldError):
            await second.run()
        assert await task == {"slow": 1}
        assert (await first.status()).finished
        await astore.close()

    asyncio.run(scenario())


def test_a_bad_run_id_is_refused_when_the_runner_is_made(store):
    from redis_ckpt import InvalidRunIdError
    from redis_ckpt.steps import AsyncStepRunner

    for bad in ("", "a{b}", "x" * 201, 42):
        with pytest.raises(InvalidRunIdError):
            StepRunner(store, bad)
        with pytest.raises(InvalidRunIdError):
            AsyncStepRunner(store, bad)
    assert store.runs() == []  # nothing was written


def test_without_a_heartbeat_the_lease_is_renewed_between_steps_that_do_not_commit(store):
    """heartbeat=False renews between steps; with commit_every > 1 it renewed only after a
    commit, so steps each well under the ttl let the lease lapse between two commits: another
    worker took the run over and the first one's next commit was fenced."""
    runner = StepRunner(store, "slow-steps", owner="w", ttl=0.6, commit_every=3, heartbeat=False)
    taken: list[bool] = []

    def slow(ctx):
        time.sleep(0.35)  # each step well under the ttl, two of them past it
        return ctx.step

    def try_to_take_over(ctx):
        try:
            store.acquire("slow-steps", owner="other", ttl=5)
            taken.append(True)
        except LeaseHeldError:
            pass
        return "done"

    runner.add("a", slow).add("b", slow).add("c", try_to_take_over)
    assert runner.run() == {"a": "a", "b": "b", "c": "done"}
    assert not taken


def test_an_async_run_cancelled_while_its_heartbeat_stops_ends_cancelled(durable_server, namespace):
    """run() stops its heartbeat task and awaits it; a cancellation of run() itself arriving
    then was taken for the heartbeat's own and swallowed: run() returned as if never
    cancelled."""
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.steps import AsyncStepRunner

    async def scenario():
        astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        runner = AsyncStepRunner(astore, "cancelled-job", ttl=5)
        runner.add("a", lambda ctx: 1)
        stopping = asyncio.Event()

        async def slow_to_stop():  # a heartbeat that takes a while to stop
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                stopping.set()
                await asyncio.sleep(0.5)
                raise

        runner._keep_alive = slow_to_stop
        task = asyncio.create_task(runner.run())
        await stopping.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await astore.close()

    asyncio.run(scenario())


def test_a_blocking_plain_step_in_the_async_runner_keeps_its_lease(durable_server, namespace, store):
    """A plain (non-async) step ran on the event loop: blocking past the ttl it stalled the
    heartbeat task too, another worker took the run over mid-step and the step's commit was
    fenced. A plain step runs in a worker thread; ctx.heartbeat() works from there too."""
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.steps import AsyncStepRunner

    taken: list[str] = []

    def blocking(ctx):
        time.sleep(2.5)  # > ttl: only the background heartbeat keeps the lease
        try:
            store.acquire("aplain", owner="other", ttl=5)
            taken.append("other")
        except LeaseHeldError:
            pass
        ctx.heartbeat()  # renews now, from the step's thread
        return ctx.step

    async def scenario():
        astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        runner = AsyncStepRunner(astore, "aplain", ttl=1.0)  # renewed every ~0.33 s: slack for a loaded CI box
        runner.add("a", blocking).add("b", blocking)
        assert await runner.run() == {"a": "a", "b": "b"}
        await astore.close()

    asyncio.run(scenario())
    assert not taken


def test_a_cancelled_async_run_lets_its_plain_step_finish_before_it_releases(durable_server, namespace, store):
    """A worker thread cannot be stopped: a cancelled run() waits for its plain step to end
    before it releases the lease (else another worker could run the step alongside it)."""
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.steps import AsyncStepRunner

    events: list[str] = []
    started = threading.Event()

    def blocking(ctx):
        started.set()
        time.sleep(0.5)
        events.append("step ended")
        return 1

    async def scenario():
        astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        runner = AsyncStepRunner(astore, "aplain-cancel", ttl=5)
        runner.add("a", blocking)
        task = asyncio.create_task(runner.run())
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        events.append("run ended")
        assert (await astore.info("aplain-cancel")).lease_state == "released"
        assert (await runner.status()).pending == ("a",)  # the step's result is dropped
        await astore.close()

    asyncio.run(scenario())
    assert events == ["step ended", "run ended"]


def test_an_async_heartbeat_whose_renewal_loses_the_cancellation_still_stops(durable_server, namespace):
    """run() stops its heartbeat by cancelling it; a cancellation arriving during a renewal
    came out of it as a renewal error (seen with a step that had blocked the loop), the
    heartbeat logged it and went on, and run() waited for it forever."""
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.steps import AsyncStepRunner

    async def scenario():
        astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        runner = AsyncStepRunner(astore, "lost-cancel", ttl=0.3)
        renewing = asyncio.Event()

        async def renewal_that_loses_the_cancel():
            first = not renewing.is_set()
            renewing.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if first:  # once: the heartbeat left running must still end when the test does
                    raise LeaseLostError("lost-cancel", token=1, holder=None, holder_token=None) from None
                raise

        async def step(ctx):
            await renewing.wait()
            return 1

        runner._renew = renewal_that_loses_the_cancel
        runner.add("a", step)
        assert await asyncio.wait_for(runner.run(), 10) == {"a": 1}  # the guard: a hang fails, not blocks
        await astore.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_heartbeat_that_dies_of_a_bug_neither_fails_the_run_nor_keeps_the_lease(
        durable_server, namespace, store, caplog, flavour):
    """A renewal failing with an error that is not a CheckpointError (a bug: a TypeError)
    replaced an async run's result (its steps committed) and skipped the release; the sync
    runner's heartbeat thread died with it, unlogged. Both now log it (ERROR, with its
    traceback), keep renewing, return the run's result and release the lease."""
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore
    from redis_ckpt.steps import AsyncStepRunner

    tried = threading.Event()

    def broken_renew():
        tried.set()
        raise TypeError("a bug in the renewal")

    async def abroken_renew():
        broken_renew()

    if flavour == "sync":
        runner = StepRunner(store, "hb-bug", ttl=3)  # the heartbeat renews every second
        runner._renew = broken_renew
        runner.add("a", lambda ctx: tried.wait(30) and 1)
        with caplog.at_level("ERROR", logger="redis_ckpt.steps"):
            assert runner.run() == {"a": 1}
    else:
        async def scenario():
            astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
            arunner = AsyncStepRunner(astore, "hb-bug", ttl=3)
            arunner._renew = abroken_renew

            async def step(ctx):
                while not tried.is_set():
                    await asyncio.sleep(0.01)
                return 1

            arunner.add("a", step)
            try:
                return await asyncio.wait_for(arunner.run(), 30)
            finally:
                await astore.close()

        with caplog.at_level("ERROR", logger="redis_ckpt.steps"):
            assert asyncio.run(scenario()) == {"a": 1}
    assert store.load("hb-bug").state["finished"]
    assert store.events("hb-bug")[-1].kind == "release"  # the lease was let go
    assert any(r.levelname == "ERROR" and r.exc_info and r.exc_info[0] is TypeError for r in caplog.records)
