"""redis_ckpt.langgraph: LangGraph's own conformance suite on real servers and a cluster,
behaviour parity with LangGraph's InMemorySaver, fencing per invocation, thread TTL, the
DeltaChannel history, and a graph killed with SIGKILL resuming at once on another process
(examples/langgraph_resume.py). Worker processes handing threads over: test_langgraph_workers.py."""

from __future__ import annotations

import asyncio
import operator
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest
import redis

try:
    from langgraph.channels.delta import DeltaChannel
    from langgraph.checkpoint.conformance import checkpointer_test, validate
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt

    from redis_ckpt.integrations.langgraph.invocations import RUNTIME_KEY
    from redis_ckpt.langgraph import RedisCkptSaver, thread_run_id
except ImportError as missing:  # pragma: no cover - depends on the environment
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        raise ImportError(f"CI must install the langgraph extra (pip install -e '.[langgraph]'): {missing}") from missing
    pytest.skip(f"langgraph is not installed: {missing}", allow_module_level=True)

from redis_ckpt import (
    CheckpointStore,
    ConflictError,
    FencedError,
    FrameError,
)
from redis_ckpt.aio import AsyncCheckpointStore

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
EXTENDED_CLAIMED = {"copy_thread", "prune", "delete_for_runs"}
SUITE_TESTS = 81  # langgraph-checkpoint-conformance 0.0.2: every test, base and extended


def counts(report: Any) -> tuple[int, int, int]:
    """(passed, failed, skipped) tests of a conformance report."""
    rs = report.results.values()
    return sum(r.tests_passed for r in rs), sum(r.tests_failed for r in rs), sum(r.tests_skipped for r in rs)


def cfg(thread: str, ns: str = "", cid: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if cid is not None:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def checkpoint(cid: str | None = None, values: dict[str, Any] | None = None, versions: dict[str, Any] | None = None):
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

    return generate_checkpoint(checkpoint_id=cid, channel_values=values or {}, channel_versions=versions or {})


# --------------------------------------------------------------------------- conformance


def conformance_report(url, namespace, flavour, name):
    """Run langgraph-checkpoint-conformance against savers on ``url`` (a sync or an async store)."""

    @checkpointer_test(name=name)
    async def factory():
        if flavour == "sync-store":
            store = CheckpointStore.from_url(url, namespace=namespace)
            yield RedisCkptSaver(store)
            store.close()
        else:
            astore = await AsyncCheckpointStore.from_url(url, namespace=namespace)
            yield RedisCkptSaver(async_store=astore)
            await astore.close()

    return asyncio.run(validate(factory))


@pytest.mark.parametrize("flavour", ["sync-store", "async-store"])
def test_conformance_suite(durable_server, client, namespace, flavour):
    """langgraph-checkpoint-conformance: every base capability, and every extended one we claim."""
    report = conformance_report(durable_server.url, namespace, flavour, f"RedisCkptSaver[{flavour}]")
    report.print_report()
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert report.passed_all_base(), failures
    assert report.passed_all(), failures
    assert counts(report) == (SUITE_TESTS, 0, 0)
    detected = {name for name, r in report.results.items() if r.detected}
    assert detected >= EXTENDED_CLAIMED | {"put", "put_writes", "get_tuple", "list", "delete_thread"}
    assert all(report.results[c].passed is True for c in EXTENDED_CLAIMED)


@pytest.mark.slow  # a 3-primary cluster per engine
@pytest.mark.parametrize("flavour", ["sync-store", "async-store"])
def test_conformance_suite_on_a_cluster(cluster, flavour):
    """The same suite on Redis Cluster: a thread's keys share one slot, the cross-thread run
    index lives in the run's own slot, threads are listed over every primary."""
    namespace = "lg" + uuid.uuid4().hex[:8]
    report = conformance_report(cluster.url(), namespace, flavour, f"RedisCkptSaver[cluster, {flavour}]")
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert report.passed_all_base() and report.passed_all(), failures
    assert counts(report) == (SUITE_TESTS, 0, 0)


# --------------------------------------------------------------------------- parity with InMemorySaver


class S(TypedDict):
    log: Annotated[list, operator.add]
    n: int


def build_graph(checkpointer: Any) -> Any:
    def sub_a(s: S) -> dict[str, Any]:
        return {"log": ["sub_a"]}

    sub = StateGraph(S)
    sub.add_node("sub_a", sub_a)
    sub.add_edge(START, "sub_a")
    sub.add_edge("sub_a", END)

    def a(s: S) -> dict[str, Any]:
        return {"log": ["a"], "n": s["n"] + 1}

    def b(s: S) -> dict[str, Any]:
        return {"log": [f"b:{interrupt('need input')}"]}

    g = StateGraph(S)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_node("c1", lambda s: {"log": ["c1"]})
    g.add_node("c2", lambda s: {"log": ["c2"]})
    g.add_node("sub", sub.compile())
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c1")
    g.add_edge("b", "c2")
    g.add_edge("c1", "sub")
    g.add_edge("c2", "sub")
    g.add_edge("sub", END)
    return g.compile(checkpointer=checkpointer)


def transcript(graph: Any, thread: str) -> list[Any]:
    """What a user of the graph sees: outputs, interrupts, state, history, a replayed fork."""
    c = {"configurable": {"thread_id": thread}}
    out: list[Any] = []
    first = graph.invoke({"log": [], "n": 0}, c)
    out.append((first["log"], first["n"], [i.value for i in first["__interrupt__"]]))
    out.append(graph.get_state(c).next)
    out.append(graph.invoke(Command(resume="yes"), c))
    history = list(graph.get_state_history(c))
    out.append([(h.values, h.next, h.metadata["step"], h.metadata["source"], h.parent_config is not None)
                for h in history])
    fork = graph.invoke(None, history[-3].config)
    out.append((fork["log"], fork["n"]))
    out.append(len(list(graph.get_state_history(c))))
    return out


async def atranscript(graph: Any, thread: str) -> list[Any]:
    c = {"configurable": {"thread_id": thread}}
    out: list[Any] = []
    first = await graph.ainvoke({"log": [], "n": 0}, c)
    out.append((first["log"], first["n"], [i.value for i in first["__interrupt__"]]))
    out.append((await graph.aget_state(c)).next)
    out.append(await graph.ainvoke(Command(resume="yes"), c))
    history = [h async for h in graph.aget_state_history(c)]
    out.append([(h.values, h.next, h.metadata["step"], h.metadata["source"], h.parent_config is not None)
                for h in history])
    fork = await graph.ainvoke(None, history[-3].config)
    out.append((fork["log"], fork["n"]))
    out.append(len([h async for h in graph.aget_state_history(c)]))
    return out


def test_graph_behaves_as_with_the_in_memory_saver(durable_server, client, namespace):
    expected = transcript(build_graph(InMemorySaver()), "t")
    with CheckpointStore.from_url(durable_server.url, namespace=namespace) as store:
        saver = RedisCkptSaver(store)
        assert transcript(build_graph(saver), "t") == expected
        # another process (a new saver) sees the same state and history
        c = {"configurable": {"thread_id": "t"}}
        other = build_graph(RedisCkptSaver(store))
        mine = build_graph(saver)
        assert other.get_state(c) == mine.get_state(c)
        assert list(other.get_state_history(c)) == list(mine.get_state_history(c))


def test_async_graph_behaves_as_with_the_in_memory_saver(durable_server, client, namespace):
    async def main() -> tuple[list[Any], list[Any]]:
        expected = await atranscript(build_graph(InMemorySaver()), "t")
        astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        try:
            got = await atranscript(build_graph(RedisCkptSaver(async_store=astore)), "t")
        finally:
            await astore.close()
        return expected, got

    expected, got = asyncio.run(main())
    assert got == expected


# --------------------------------------------------------------------------- invocations, in one process


class Run:
    """One LangGraph invocation as the saver sees it: LangGraph puts one run-scoped object
    (``Runtime.control``) in the config of every saver call of a run; the worker-process
    tests (test_langgraph_workers.py) drive real graphs."""

    def __init__(self) -> None:
        self.runtime = SimpleNamespace(control=object())

    def cfg(self, thread: str, ns: str = "", cid: str | None = None) -> dict[str, Any]:
        c = cfg(thread, ns, cid)
        c["configurable"][RUNTIME_KEY] = self.runtime
        return c


def put(saver: RedisCkptSaver, thread: str, parent: str | None = None, value: str = "v", run: Run | None = None) -> str:
    cp = checkpoint(values={"x": value}, versions={"x": saver.get_next_version(None, None)})
    config = run.cfg(thread, cid=parent) if run else cfg(thread, cid=parent)
    saver.put(config, cp, {"source": "loop", "step": 0}, cp["channel_versions"])
    return cp["id"]


def visible_ids(saver: RedisCkptSaver, thread: str) -> list[str]:
    return [t.checkpoint["id"] for t in saver.list(cfg(thread))]


def stored_checkpoint_ids(client, store, thread: str) -> set[str]:
    """Every checkpoint id the thread's index holds on the server (what any reader can see)."""
    members = client.zrange(f"{store.namespace}:{{{thread_run_id(thread)}}}:lg:ix", 0, -1)
    return {m.partition(b"\x00")[2].decode() for m in members}


def test_a_newer_invocation_continues_the_thread_at_once_and_the_older_one_is_fenced_for_good(store, client):
    a, b = RedisCkptSaver(store, owner="a"), RedisCkptSaver(store, owner="b")
    ra, rb = Run(), Run()
    assert a.get_tuple(ra.cfg("t")) is None
    first = put(a, "t", run=ra)  # A's first write claims the thread
    assert b.get_tuple(rb.cfg("t")).checkpoint["id"] == first
    second = put(b, "t", first, "from-b", run=rb)  # B continues at once: no lease to wait for
    with pytest.raises(FencedError) as fenced:
        a.put_writes(ra.cfg("t", cid=first), [("x", "late")], "task-a")
    assert fenced.value.token < fenced.value.fence and fenced.value.by == "b"
    assert "another invocation" in str(fenced.value)
    a.get_tuple(ra.cfg("t"))  # reading again does not let the fenced invocation write again
    with pytest.raises(FencedError):
        put(a, "t", second, "from-a", run=ra)
    for reader in (a, b, RedisCkptSaver(store)):
        assert visible_ids(reader, "t") == [second, first]
        latest = reader.get_tuple(cfg("t"))
        assert latest.checkpoint["channel_values"] == {"x": "from-b"} and latest.pending_writes == []
        assert reader.get_tuple(cfg("t", cid=first)).pending_writes == []
    assert stored_checkpoint_ids(client, store, "t") == {first, second}
    events = store.events(thread_run_id("t"))
    assert [e.kind for e in events if e.kind in ("acquire", "takeover")] == ["acquire", "takeover"]
    # the server refused once; the invocation's later writes are refused without being sent
    assert sum(e.kind == "fenced" and e.get_int("token") == fenced.value.token for e in events) == 1
    # A's next invocation reads the newest state and continues
    ra2 = Run()
    a.get_tuple(ra2.cfg("t"))
    third = put(a, "t", second, run=ra2)
    assert visible_ids(b, "t") == [third, second, first]


def test_an_invocation_whose_view_is_stale_fails_at_its_first_write_and_stores_nothing(store, client):
    saver = RedisCkptSaver(store)
    first = put(saver, "t")
    ra, rb = Run(), Run()
    assert saver.get_tuple(ra.cfg("t")).checkpoint["id"] == first
    assert saver.get_tuple(rb.cfg("t")).checkpoint["id"] == first
    by_a = put(saver, "t", first, "a", run=ra)
    stale = checkpoint(values={"x": "b"}, versions={"x": saver.get_next_version(None, None)})
    with pytest.raises(ConflictError) as conflict:
        saver.put(rb.cfg("t", cid=first), stale, {"source": "loop", "step": 1}, stale["channel_versions"])
    assert conflict.value.expected < conflict.value.actual
    with pytest.raises(ConflictError):  # and it stays refused: never a fork
        saver.put_writes(rb.cfg("t", cid=first), [("x", "late")], "task-b")
    assert stored_checkpoint_ids(client, store, "t") == {first, by_a}
    assert saver.get_tuple(cfg("t", cid=first)).pending_writes == []
    assert any(e.kind == "conflict" for e in store.events(thread_run_id("t")))


def test_concurrent_first_writes_of_one_invocation_share_its_claim(store):
    saver = RedisCkptSaver(store)
    cid = put(saver, "t")
    run = Run()
    saver.get_tuple(run.cfg("t"))
    threads = [threading.Thread(target=saver.put_writes,
                                args=(run.cfg("t", cid=cid), [("ch", i), ("other", -i)], f"task-{i}"))
               for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writes = saver.get_tuple(cfg("t")).pending_writes
    assert sorted(writes) == sorted([(f"task-{i}", "ch", i) for i in range(12)] + [(f"task-{i}", "other", -i) for i in range(12)])
    assert [e.kind for e in store.events(thread_run_id("t"))].count("acquire") == 1
    put(saver, "t", cid, run=run)  # the invocation goes on with its one claim


def writes_in_background(saver: RedisCkptSaver, config: dict[str, Any], writes: list[tuple[str, Any]],
                         task: str) -> tuple[threading.Thread, list[BaseException | None]]:
    """put_writes in a thread of its own (as LangGraph's background executor does); returns
    once the writes wait in the saver's outbox for the superstep's put."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            saver.put_writes(config, writes, task)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    t = threading.Thread(target=run)
    before = len(saver._outbox._open)
    t.start()
    deadline = time.monotonic() + 5
    while len(saver._outbox._open) == before and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0001)
    return t, outcome


def test_a_supersteps_writes_go_with_its_put_in_one_round_trip(store):
    saver = RedisCkptSaver(store)
    saver._outbox.linger_s = 10.0  # the put below comes within the wait, however loaded the machine
    run = Run()
    saver.get_tuple(run.cfg("t"))
    first = put(saver, "t", run=run)
    with round_trips() as sent:
        t, outcome = writes_in_background(saver, run.cfg("t", cid=first), [("x", "w")], "task-1")
        assert t.is_alive()  # waiting for the put
        second = put(saver, "t", first, run=run)
        t.join()
    assert outcome == [None] and sent[0] == 1  # one script call, one WAITAOF: both stored
    assert saver.get_tuple(cfg("t", cid=first)).pending_writes == [("task-1", "x", "w")]
    assert visible_ids(saver, "t") == [second, first]
    saver._outbox.linger_s = 0.003
    saver.put_writes(run.cfg("t", cid=second), [("x", "alone")], "task-2")  # no put follows: sent after the wait
    assert saver.get_tuple(cfg("t")).pending_writes == [("task-2", "x", "alone")]


@pytest.mark.parametrize("channel", ["__interrupt__", "__error__"])
def test_writes_after_which_no_put_comes_do_not_wait_for_one(durable_server, store, namespace, channel):
    # LangGraph ends the superstep without a checkpoint after an interrupt or an error: the
    # invocation's last writes (and those that joined them) go at once, not after the wait
    saver = RedisCkptSaver(store)
    saver._outbox.linger_s = 30.0  # longer than the join below: only a send without the wait passes
    run = Run()
    saver.get_tuple(run.cfg("t"))
    first = put(saver, "t", run=run)
    other, other_outcome = writes_in_background(saver, run.cfg("t", cid=first), [("x", "done")], "task-1")
    last, outcome = writes_in_background(saver, run.cfg("t", cid=first), [(channel, "stop")], "task-2")
    last.join(10)
    other.join(10)
    assert not last.is_alive() and not other.is_alive()
    assert outcome == [None] and other_outcome == [None]
    assert sorted(saver.get_tuple(cfg("t")).pending_writes) == [("task-1", "x", "done"), ("task-2", channel, "stop")]

    async def main() -> None:
        astore = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace)
        asaver = RedisCkptSaver(async_store=astore)
        asaver._outbox.linger_s = 30.0
        arun = Run()
        await asaver.aget_tuple(arun.cfg("a"))
        cp = checkpoint(values={"x": "v"}, versions={"x": asaver.get_next_version(None, None)})
        await asaver.aput(arun.cfg("a"), cp, {"source": "loop", "step": 0}, cp["channel_versions"])
        await asyncio.wait_for(asaver.aput_writes(arun.cfg("a", cid=cp["id"]), [(channel, "stop")], "task"), 10)
        assert (await asaver.aget_tuple(cfg("a"))).pending_writes == [("task", channel, "stop")]
        await astore.close()

    asyncio.run(main())


def test_a_refused_put_refuses_the_writes_that_rode_with_it(store, client):
    saver = RedisCkptSaver(store)
    run, newer = Run(), Run()
    saver.get_tuple(run.cfg("t"))
    first = put(saver, "t", run=run)
    saver.get_tuple(newer.cfg("t"))
    put(saver, "t", first, run=newer)
    t, outcome = writes_in_background(saver, run.cfg("t", cid=first), [("x", "late")], "task")
    with pytest.raises(FencedError):
        put(saver, "t", first, run=run)
    t.join()
    assert len(outcome) == 1 and isinstance(outcome[0], FencedError)
    assert saver.get_tuple(cfg("t", cid=first)).pending_writes == []


def test_revoke_and_standalone_writes_fence_a_running_invocation(store):
    saver = RedisCkptSaver(store)
    run = Run()
    saver.get_tuple(run.cfg("t"))
    first = put(saver, "t", run=run)
    store.revoke(thread_run_id("t"))
    with pytest.raises(FencedError) as revoked:
        put(saver, "t", first, run=run)
    assert "revoked or deleted" in str(revoked.value)
    run2 = Run()
    saver.get_tuple(run2.cfg("t"))
    second = put(saver, "t", first, run=run2)
    third = put(saver, "t", second)  # a standalone write (update_state) continues the thread too ...
    with pytest.raises(FencedError):  # ... and fences the invocation that was running
        put(saver, "t", second, run=run2)
    assert visible_ids(saver, "t") == [third, second, first]


def test_a_put_sends_and_stores_only_the_channels_that_changed(store, client):
    saver = RedisCkptSaver(store)
    big = "x" * 20_000
    parent = None
    for i in range(60):
        cp = checkpoint(values={"counter": i, "big": big}, versions={"counter": i + 1, "big": 1})
        new_versions = {"counter": i + 1, "big": 1} if i == 0 else {"counter": i + 1}
        saver.put(cfg("long", cid=parent), cp, {"source": "loop", "step": i}, new_versions)
        parent = cp["id"]
    assert saver.get_tuple(cfg("long")).checkpoint["channel_values"] == {"counter": 59, "big": big}
    assert saver.get_tuple(cfg("long", cid=parent)).checkpoint["channel_values"]["big"] == big
    base = f"{store.namespace}:{{{thread_run_id('long')}}}:lg:"
    values = client.hgetall(base + "v")
    assert len(values) == 61 and sum(len(v) for v in values.values()) < 2 * len(big)
    assert max(len(r) for r in client.hvals(base + "cp")) < 2000  # a record holds no value


def test_damage_to_a_stored_value_or_record_is_detected(store, client):
    saver = RedisCkptSaver(store)
    put(saver, "t")
    base = f"{store.namespace}:{{{thread_run_id('t')}}}:lg:"
    for key in (base + "v", base + "cp"):
        (field, blob), = client.hgetall(key).items()
        client.hset(key, field, blob[:-20] + bytes([blob[-20] ^ 0x40]) + blob[-19:])
        with pytest.raises(FrameError) as damaged:
            saver.get_tuple(cfg("t"))
        assert damaged.value.reason.value == "checksum"
        client.hset(key, field, blob)
    assert saver.get_tuple(cfg("t")).checkpoint["channel_values"] == {"x": "v"}


def test_thread_ids_of_any_shape(store):
    saver = RedisCkptSaver(store)
    odd = ["with space", "{braces}", "ünïcödé/π", "x" * 500, "a:b:c", "42"]
    for t in odd:
        put(saver, t, value=t)
    for t in odd:
        assert saver.get_tuple(cfg(t)).checkpoint["channel_values"] == {"x": t}
    listed = {tup.config["configurable"]["thread_id"] for tup in saver.list(None)}
    assert listed == set(odd)
    assert len({thread_run_id(t) for t in odd}) == len(odd)


def test_names_with_nul_are_refused_before_anything_is_sent(store, client):
    saver = RedisCkptSaver(store)
    cp = checkpoint(values={"x": 1}, versions={"x": 1})
    for config, versions in ((cfg("t", "bad\x00ns"), {"x": 1}), (cfg("t"), {"x\x00y": 1})):
        with pytest.raises(ValueError):
            saver.put(config, cp, {}, versions)
    with pytest.raises(ValueError):
        saver.put_writes(cfg("t", cid="c\x00d"), [("x", 1)], "task")
    assert not list(client.scan_iter(f"{store.namespace}:{{lg*"))


def test_prune_keeps_what_the_latest_checkpoint_refers_to_and_delete_leaves_nothing(store, client):
    saver = RedisCkptSaver(store)
    cp1 = checkpoint(values={"a": 1, "b": "kept"}, versions={"a": 1, "b": 1})
    saver.put(cfg("t"), cp1, {"step": 0}, {"a": 1, "b": 1})
    cp2 = checkpoint(values={"a": 2, "b": "kept"}, versions={"a": 2, "b": 1})
    saver.put(cfg("t", cid=cp1["id"]), cp2, {"step": 1}, {"a": 2})  # b is still cp1's value
    saver.put_writes(cfg("t", cid=cp1["id"]), [("a", "old")], "task")
    saver.prune(["t"], strategy="keep_latest")
    assert visible_ids(saver, "t") == [cp2["id"]]
    assert saver.get_tuple(cfg("t")).checkpoint["channel_values"] == {"a": 2, "b": "kept"}
    base = f"{store.namespace}:{{{thread_run_id('t')}}}:lg:"
    assert len(client.hkeys(base + "v")) == 2 and not client.exists(base + "w")
    saver.delete_thread("t")
    run = thread_run_id("t")
    left = sorted(k.decode() for k in client.scan_iter(f"{store.namespace}:{{{run}}}:*"))
    assert left == [f"{store.namespace}:{{{run}}}:events", f"{store.namespace}:{{{run}}}:fence"]
    assert saver.get_tuple(cfg("t")) is None
    fresh = put(saver, "t")  # a deleted thread can be used again
    assert visible_ids(saver, "t") == [fresh]


def test_delete_for_runs_keeps_what_later_checkpoints_of_other_runs_refer_to(store, client):
    saver = RedisCkptSaver(store)
    cp1 = checkpoint(values={"a": 1, "b": "from-run-1"}, versions={"a": 1, "b": 1})
    saver.put(cfg("t"), cp1, {"step": 0, "run_id": "run-1"}, {"a": 1, "b": 1})
    cp2 = checkpoint(values={"a": 2, "b": "from-run-1"}, versions={"a": 2, "b": 1})
    saver.put(cfg("t", cid=cp1["id"]), cp2, {"step": 1, "run_id": "run-2"}, {"a": 2})  # b: cp1's value
    saver.put_writes(cfg("t", cid=cp1["id"]), [("a", "w1")], "task")
    other = checkpoint(values={"z": 0}, versions={"z": 1})
    saver.put(cfg("u", "child:1"), other, {"step": 0, "run_id": "run-1"}, {"z": 1})
    saver.delete_for_runs(["run-1"])
    assert visible_ids(saver, "t") == [cp2["id"]]
    assert saver.get_tuple(cfg("t", cid=cp1["id"])) is None
    assert saver.get_tuple(cfg("t")).checkpoint["channel_values"] == {"a": 2, "b": "from-run-1"}
    assert saver.get_tuple(cfg("u", "child:1")) is None
    assert not client.exists(f"{store.namespace}:lgrun:{{run-1}}")
    saver.delete_thread("t")
    assert client.smembers(f"{store.namespace}:lgrun:{{run-2}}") == set()
    saver.delete_for_runs(["run-2", "never"])  # nothing left to do
    assert saver.get_tuple(cfg("t")) is None
    saver.delete_thread("never-written")  # leaves no tombstone
    assert not list(client.scan_iter(f"{store.namespace}:{{{thread_run_id('never-written')}}}:*"))


def test_the_saver_runs_on_the_in_memory_store():
    """CheckpointStore.in_memory() (fakeredis, for users' own tests) runs the saver's scripts."""
    store = CheckpointStore.in_memory(namespace="lg-test")
    expected = transcript(build_graph(InMemorySaver()), "t")
    assert transcript(build_graph(RedisCkptSaver(store)), "t") == expected


# --------------------------------------------------------------------------- retention


def thread_keys(client, store, thread: str) -> list[bytes]:
    return sorted(client.scan_iter(f"{store.namespace}:{{{thread_run_id(thread)}}}:*"))


def claims(store, thread: str) -> list[int]:
    return [e.get_int("token") for e in store.events(thread_run_id(thread)) if e.kind in ("acquire", "takeover")]


@pytest.mark.parametrize("spec", [{"default_ttl": 0}, {"default_ttl": -1}, {"default_ttl": "1"}, {"ttl": 1},
                                  {"default_ttl": 1, "refresh_on_read": "yes"}, 5])
def test_a_bad_thread_ttl_is_refused(store, spec):
    with pytest.raises(ValueError):
        RedisCkptSaver(store, thread_ttl=spec)


def test_a_thread_expires_whole_after_its_ttl_and_its_tokens_are_never_reused(store, client):
    saver = RedisCkptSaver(store, thread_ttl={"default_ttl": 2 / 60})  # 2 s: room for a slow fsync between writes
    run = Run()
    saver.get_tuple(run.cfg("t"))
    first = put(saver, "t", run=run)
    saver.put_writes(run.cfg("t", cid=first), [("x", 1)], "task")
    put(saver, "t", first, run=run)
    keys = thread_keys(client, store, "t")
    assert {k.decode().rpartition(":")[2] for k in keys} == {"fence", "events", "meta", "ix", "cp", "v", "wi", "w", "ns"}
    expiry = {client.pexpiretime(k) for k in keys}  # data, indexes, fence and events: one expiry
    assert len(expiry) == 1 and expiry.pop() > 0
    (token,) = claims(store, "t")
    deadline = time.monotonic() + 10
    while thread_keys(client, store, "t") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert thread_keys(client, store, "t") == []
    assert saver.get_tuple(cfg("t")) is None and visible_ids(saver, "t") == []
    with pytest.raises(FencedError) as expired:  # the invocation that ran before the expiry stays out
        saver.put_writes(run.cfg("t", cid=first), [("x", 2)], "task")
    assert "expired" in str(expired.value)
    # the refusal's audit event made a new events stream: it expires too, never left behind
    assert [k.decode().rpartition(":")[2] for k in thread_keys(client, store, "t")] == ["events"]
    assert 0 < client.pttl(thread_keys(client, store, "t")[0]) <= 2000 * 17 / 16
    run2 = Run()
    saver.get_tuple(run2.cfg("t"))
    put(saver, "t", run=run2)
    assert claims(store, "t")[0] > token  # the fence went with the data; tokens still only grow


def test_refresh_on_read_keeps_a_thread_alive_and_reads_without_it_do_not(store, client):
    # a TTL of 2 s read every 0.25 s: a stall of up to 1.75 s between two reads (a slow fsync of
    # the refresh on a shared machine) still finds the thread alive
    reader = RedisCkptSaver(store, thread_ttl={"default_ttl": 2 / 60, "refresh_on_read": True})
    writer = RedisCkptSaver(store, thread_ttl={"default_ttl": 2 / 60})
    put(writer, "kept")
    put(writer, "dropped")
    for _ in range(16):  # 4 s, twice the TTL
        time.sleep(0.25)
        assert reader.get_tuple(cfg("kept")) is not None
        writer.get_tuple(cfg("dropped"))
    assert reader.get_tuple(cfg("kept")) is not None
    assert writer.get_tuple(cfg("dropped")) is None and thread_keys(client, store, "dropped") == []


def one_expiry(client, store, thread: str) -> int:
    """The thread's one expiry (ms since the epoch), every key of it checked to share it."""
    expiry = {client.pexpiretime(k) for k in thread_keys(client, store, thread)}
    assert len(expiry) == 1, expiry
    return expiry.pop()


def test_writes_and_reads_soon_after_a_refresh_leave_the_expiry_alone_and_keys_they_make_share_it(store, client):
    """A thread's expiry moves only once it has fallen 1/16 of the TTL behind: a read then
    writes nothing (no fsync for the reply to wait on), a write does not expire every key
    again, and keys a write creates get the thread's expiry as it stands."""
    ttl_ms = 16 * 60_000  # 16 min: the expiry may fall 1 min behind
    saver = RedisCkptSaver(store, thread_ttl={"default_ttl": ttl_ms / 60_000, "refresh_on_read": True})
    run = Run()
    saver.get_tuple(run.cfg("t"))
    start = time.time() * 1000
    first = put(saver, "t", run=run)
    set_at = one_expiry(client, store, "t")
    assert start + ttl_ms <= set_at <= time.time() * 1000 + ttl_ms * 17 / 16  # at least the TTL from the write
    client.config_resetstat()
    assert saver.get_tuple(cfg("t")) is not None
    saver.put_writes(run.cfg("t", cid=first), [("x", 1)], "task")  # makes the writes' keys
    put(saver, "t", first, run=run)
    assert one_expiry(client, store, "t") == set_at  # not moved, and the new keys share it
    assert {k.decode().rpartition(":")[2] for k in thread_keys(client, store, "t")} >= {"wi", "w"}
    assert "cmdstat_pexpire" not in client.info("commandstats")  # only the new keys got one (PEXPIREAT)


def test_a_thread_expiry_moves_once_it_falls_behind_and_follows_a_lower_ttl(store, client):
    ttl_ms = 1600  # 1.6 s: the expiry may fall 100 ms behind
    saver = RedisCkptSaver(store, thread_ttl={"default_ttl": ttl_ms / 60_000, "refresh_on_read": True})
    put(saver, "t")
    first = one_expiry(client, store, "t")
    time.sleep(0.3)
    read_at = time.time() * 1000
    assert saver.get_tuple(cfg("t")) is not None
    assert one_expiry(client, store, "t") >= read_at + ttl_ms > first  # a read past the slack moves it
    lower = RedisCkptSaver(store, thread_ttl={"default_ttl": 1})  # 1 min, far below the expiry of 16 min
    put(RedisCkptSaver(store, thread_ttl={"default_ttl": 16}), "u")
    before = time.time() * 1000
    put(lower, "u")
    assert before + 60_000 <= one_expiry(client, store, "u") <= time.time() * 1000 + 60_000 * 17 / 16


def test_delete_for_runs_finds_the_run_in_a_copy_of_its_thread(store, client):
    saver = RedisCkptSaver(store)
    cp = checkpoint(values={"x": 1}, versions={"x": 1})
    saver.put(cfg("t"), cp, {"step": 1, "run_id": "run-c"}, {"x": 1})
    saver.copy_thread("t", "t-copy")
    assert visible_ids(saver, "t-copy") == [cp["id"]]
    saver.delete_for_runs(["run-c"])
    assert visible_ids(saver, "t") == [] and visible_ids(saver, "t-copy") == []


def test_delete_for_runs_finds_a_run_that_kept_its_thread_alive_past_the_ttl(store, client):
    """The cross-thread index of a LangGraph run (what delete_for_runs looks in) is kept as
    long as the run writes, and outlives the thread the run's last write kept alive."""
    ttl_ms = 1600
    saver = RedisCkptSaver(store, thread_ttl={"default_ttl": ttl_ms / 60_000})
    parent, step = None, 0
    end = time.monotonic() + 2 * ttl_ms / 1000  # the run writes for twice the TTL
    while time.monotonic() < end:
        step += 1
        cp = checkpoint(values={"x": step}, versions={"x": step})
        saver.put(cfg("t", cid=parent), cp, {"step": step, "run_id": "long-run"}, {"x": step})
        parent = cp["id"]
        time.sleep(0.2)
    index = f"{store.namespace}:lgrun:{{long-run}}"
    assert client.smembers(index) == {b"t"}
    assert client.pexpiretime(index) > one_expiry(client, store, "t")  # the index outlives the thread
    saver.delete_for_runs(["long-run"])
    assert visible_ids(saver, "t") == []


def test_a_saver_without_a_ttl_keeps_the_run_index_of_a_thread_it_makes_permanent(store, client):
    cp = checkpoint(values={"x": 1}, versions={"x": 1})
    RedisCkptSaver(store, thread_ttl={"default_ttl": 5}).put(cfg("t"), cp, {"step": 1, "run_id": "run-p"}, {"x": 1})
    assert client.pttl(f"{store.namespace}:lgrun:{{run-p}}") > 0
    RedisCkptSaver(store).put(cfg("t", cid=cp["id"]), checkpoint(values={"x": 2}, versions={"x": 2}),
                              {"step": 2, "run_id": "run-p"}, {"x": 2})
    assert all(client.pttl(k) == -1 for k in thread_keys(client, store, "t"))
    assert client.pttl(f"{store.namespace}:lgrun:{{run-p}}") == -1  # as long as thread t: for good


def test_a_saver_without_a_ttl_makes_an_expiring_thread_permanent_as_a_whole(store, client):
    put(RedisCkptSaver(store, thread_ttl={"default_ttl": 5}), "t")
    assert all(client.pttl(k) > 0 for k in thread_keys(client, store, "t"))
    put(RedisCkptSaver(store), "t")
    assert all(client.pttl(k) == -1 for k in thread_keys(client, store, "t"))


# --------------------------------------------------------------------------- DeltaChannel


def extend(state: list, writes: list) -> list:
    return state + [x for w in writes for x in w]


class DS(TypedDict):
    log: Annotated[list, DeltaChannel(extend, snapshot_frequency=5)]
    n: int


def delta_graph(checkpointer: Any) -> Any:
    g = StateGraph(DS)
    g.add_node("step", lambda s: {"log": [f"e{s['n']}"], "n": s["n"] + 1})
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: "step" if s["n"] % 12 else END)
    return g.compile(checkpointer=checkpointer)


@contextmanager
def round_trips() -> Iterator[list[int]]:
    """Count the sends on every sync connection (one send is one round trip)."""
    cls = redis.connection.AbstractConnection
    original = cls.send_packed_command
    sent = [0]

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        original(self, command, check_health)

    cls.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        cls.send_packed_command = original  # type: ignore[method-assign]


def test_delta_channel_state_in_two_round_trips_and_prune_keeps_its_chain(store):
    saver = RedisCkptSaver(store)
    graph, memory = delta_graph(saver), delta_graph(InMemorySaver())
    c = {"configurable": {"thread_id": "d"}}
    for g in (graph, memory):
        g.invoke({"log": ["start"], "n": 0}, c)
    expected = memory.get_state(c).values
    assert len(expected["log"]) == 13
    with round_trips() as sent:
        state = graph.get_state(c)
    assert state.values == expected and sent[0] <= 2
    before = visible_ids(saver, "d")
    saver.prune(["d"], strategy="keep_latest")
    after = visible_ids(saver, "d")
    assert len(after) < len(before) and after[0] == before[0]  # older than the chain: gone
    assert graph.get_state(c).values == expected  # the chain back to the last snapshot: kept
    for g in (graph, memory):
        g.invoke({"log": ["again"], "n": 12}, c)
    assert graph.get_state(c).values == memory.get_state(c).values
    assert len(graph.get_state(c).values["log"]) == 26


# --------------------------------------------------------------------------- across processes
# (the handover between worker processes, bullet by bullet: test_langgraph_workers.py)


@pytest.mark.parametrize("durable_server", ["valkey"], indirect=True)  # ~8 s; both engines run everything above
def test_example_graph_killed_mid_run_resumes_elsewhere_and_a_frozen_writer_is_fenced(durable_server, client, namespace):
    """examples/langgraph_resume.py: SIGKILL mid-node, another process resumes at once from the
    last durable checkpoint; SIGSTOP a writer, another continues, the thawed one is fenced."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "langgraph_resume.py"), "--url", durable_server.url,
                           "--namespace", namespace], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "all checks passed" in out
    assert "[B] node plan" not in out and "[B] node search" not in out  # B resumed, did not start over
    assert re.search(r"\[C\] FENCED: .*another invocation \('worker-D'", out)
    stale_thread = re.search(r"worker D continues thread (\S+)", out).group(1)
    events = CheckpointStore(client, namespace=namespace).events(thread_run_id(stale_thread))
    takeover = next(n for n, e in enumerate(events) if e.kind == "takeover" and e.fields.get("owner") == "worker-D")
    assert any(e.kind == "fenced" and e.fields.get("owner") == "worker-C" for e in events[takeover:])
