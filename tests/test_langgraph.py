"""redis_ckpt.langgraph: LangGraph's own conformance suite on real servers, behaviour parity
with LangGraph's InMemorySaver, fencing of stale writers (in-process and across processes),
and a graph killed with SIGKILL resuming on another process (examples/langgraph_resume.py)."""

from __future__ import annotations

import asyncio
import operator
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

try:
    from langgraph.checkpoint.conformance import checkpointer_test, validate
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command, interrupt

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
    LeaseHeldError,
)
from redis_ckpt.aio import AsyncCheckpointStore

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent
EXTENDED_CLAIMED = {"copy_thread", "prune", "delete_for_runs"}


def cfg(thread: str, ns: str = "", cid: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if cid is not None:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def checkpoint(cid: str | None = None, values: dict[str, Any] | None = None, versions: dict[str, Any] | None = None):
    from langgraph.checkpoint.conformance.test_utils import generate_checkpoint

    return generate_checkpoint(checkpoint_id=cid, channel_values=values or {}, channel_versions=versions or {})


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("flavour", ["sync-store", "async-store"])
def test_conformance_suite(durable_server, client, namespace, flavour):
    """langgraph-checkpoint-conformance: every base capability, and every extended one we claim."""
    url = durable_server.url

    @checkpointer_test(name=f"RedisCkptSaver[{flavour}]")
    async def factory():
        if flavour == "sync-store":
            store = CheckpointStore.from_url(url, namespace=namespace)
            yield RedisCkptSaver(store)
            store.close()
        else:
            astore = await AsyncCheckpointStore.from_url(url, namespace=namespace)
            yield RedisCkptSaver(async_store=astore)
            await astore.close()

    report = asyncio.run(validate(factory))
    report.print_report()
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert report.passed_all_base(), failures
    assert report.passed_all(), failures
    detected = {name for name, r in report.results.items() if r.detected}
    assert detected >= EXTENDED_CLAIMED | {"put", "put_writes", "get_tuple", "list", "delete_thread"}
    assert all(report.results[c].passed is True for c in EXTENDED_CLAIMED)


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


# --------------------------------------------------------------------------- fencing, in one process


def put(saver: RedisCkptSaver, thread: str, parent: str | None = None, value: str = "v") -> str:
    cp = checkpoint(values={"x": value}, versions={"x": saver.get_next_version(None, None)})
    saver.put(cfg(thread, cid=parent), cp, {"source": "loop", "step": 0}, cp["channel_versions"])
    return cp["id"]


def visible_ids(saver: RedisCkptSaver, thread: str) -> list[str]:
    return [t.checkpoint["id"] for t in saver.list(cfg(thread))]


def test_a_second_writer_is_refused_while_the_first_holds_the_thread(store):
    a = RedisCkptSaver(store, owner="a", ttl=30)
    b = RedisCkptSaver(store, owner="b", ttl=30, acquire_timeout=0)
    first = put(a, "t1")
    with pytest.raises(LeaseHeldError) as held:
        put(b, "t1", first)
    assert held.value.owner == "a"
    assert visible_ids(b, "t1") == [first]
    a.release("t1")
    second = put(b, "t1", first)
    assert visible_ids(a, "t1") == [second, first]


def test_a_stale_writer_is_fenced_at_commit_and_none_of_its_writes_become_visible(store, client):
    """The gap of LangGraph's Redis saver: A loses the thread (lease expired, B took over and
    wrote), but A still believes its lease is fresh and writes. The commit script rejects A's
    token; the checkpoint and writes A put beside it stay invisible to every reader."""
    a = RedisCkptSaver(store, owner="a", ttl=0.3)
    b = RedisCkptSaver(store, owner="b", ttl=30, acquire_timeout=5)
    first = put(a, "t")
    time.sleep(0.4)  # A's lease expires
    b.get_tuple(cfg("t"))
    by_b = put(b, "t", first, "from-b")
    a._writers["t"].renewed_at = time.monotonic()  # A thinks its lease is fresh (a GC pause, a slow clock)
    stale = checkpoint(values={"x": "from-a"}, versions={"x": a.get_next_version(None, None)})
    with pytest.raises(FencedError) as fenced:
        a.put(cfg("t", cid=first), stale, {"source": "loop", "step": 1}, stale["channel_versions"])
    assert fenced.value.token < fenced.value.fence
    with pytest.raises(FencedError):  # it stays fenced: no silent retake of the thread
        a.put_writes(cfg("t", cid=by_b), [("x", "late")], "task-1")
    # A's record did reach the server, under its own token: and nobody can see it
    run = thread_run_id("t")
    members = client.zrange(f"{store.namespace}:{{{run}}}:lg:ix:", 0, -1)
    assert any(m.startswith(stale["id"].encode()) for m in members)
    for reader in (a, b, RedisCkptSaver(store)):
        assert visible_ids(reader, "t") == [by_b, first]
        latest = reader.get_tuple(cfg("t"))
        assert latest.checkpoint["id"] == by_b and latest.checkpoint["channel_values"] == {"x": "from-b"}
        assert latest.pending_writes == []
        assert reader.get_tuple(cfg("t", cid=stale["id"])) is None
    assert any(e.kind == "fenced" and e.get_int("token") == fenced.value.token for e in store.events(run))
    # once A reads the thread again it may try again — and is told who holds it
    a.acquire_timeout = 0
    a.get_tuple(cfg("t"))
    with pytest.raises(LeaseHeldError):
        put(a, "t", by_b)


def test_a_writer_whose_view_is_older_than_the_thread_gets_a_conflict(store):
    a = RedisCkptSaver(store, owner="a", ttl=30)
    b = RedisCkptSaver(store, owner="b", ttl=30)
    first = put(a, "t")
    a.release("t")
    assert a.get_tuple(cfg("t")).checkpoint["id"] == first
    b.get_tuple(cfg("t"))
    second = put(b, "t", first)
    b.release("t")
    with pytest.raises(ConflictError):  # A would branch history from what it read before B wrote
        put(a, "t", first)
    assert a.get_tuple(cfg("t")).checkpoint["id"] == second  # reading again ...
    third = put(a, "t", second)  # ... lets it continue from the newest state
    assert visible_ids(b, "t") == [third, second, first]


def test_revoke_fences_the_writer_and_it_does_not_silently_retake_the_thread(store):
    a = RedisCkptSaver(store, owner="a", ttl=0.3)
    first = put(a, "t")
    store.revoke(thread_run_id("t"))
    time.sleep(0.15)  # past ttl/3: the next write renews first, and learns it was revoked
    with pytest.raises(FencedError):
        put(a, "t", first)
    assert visible_ids(a, "t") == [first]


def test_an_expired_lease_nobody_else_took_is_taken_back(store):
    a = RedisCkptSaver(store, owner="a", ttl=0.2)
    first = put(a, "t")
    time.sleep(0.3)
    second = put(a, "t", first)
    assert visible_ids(a, "t") == [second, first]
    kinds = [e.kind for e in store.events(thread_run_id("t"))]
    assert kinds.count("acquire") + kinds.count("takeover") == 2 and "renew_failed" in kinds


def test_concurrent_put_writes_of_parallel_tasks_are_all_kept(store):
    saver = RedisCkptSaver(store)
    cid = put(saver, "t")
    threads = [threading.Thread(target=saver.put_writes, args=(cfg("t", cid=cid), [("ch", i), ("other", -i)], f"task-{i}"))
               for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writes = saver.get_tuple(cfg("t")).pending_writes
    assert sorted((w[0], w[1], w[2]) for w in writes) == sorted(
        [(f"task-{i}", "ch", i) for i in range(12)] + [(f"task-{i}", "other", -i) for i in range(12)])


def test_a_put_does_not_copy_the_thread_history(store):
    """The manifest the store commits stays the same size however long the thread grows,
    and a channel that does not change is stored once."""
    saver = RedisCkptSaver(store)
    run = thread_run_id("long")
    big = "x" * 20_000
    parent, sizes = None, []
    for i in range(60):
        cp = checkpoint(values={"counter": i, "big": big}, versions={"counter": i + 1, "big": 1})
        new_versions = {"counter": i + 1, "big": 1} if i == 0 else {"counter": i + 1}
        saver.put(cfg("long", cid=parent), cp, {"source": "loop", "step": i}, new_versions)
        parent = cp["id"]
        sizes.append(int(store.info(run).head["size"]))
    assert max(sizes) - min(sizes) < 64, sizes
    assert saver.get_tuple(cfg("long")).checkpoint["channel_values"] == {"counter": 59, "big": big}
    stored = sum(store.client.memory_usage(k) or 0 for k in store.client.scan_iter(f"{store.namespace}:{{{run}}}:lg:c:*"))
    assert stored < 5 * len(big), f"{stored} bytes: the unchanged channel was stored more than once"


def test_damage_to_a_stored_checkpoint_is_detected(store, client):
    saver = RedisCkptSaver(store)
    put(saver, "t")
    run = thread_run_id("t")
    (key,) = list(client.scan_iter(f"{store.namespace}:{{{run}}}:lg:c:*"))
    blob = bytearray(client.hget(key, "r"))
    blob[len(blob) // 2] ^= 0x40
    client.hset(key, "r", bytes(blob))
    with pytest.raises(FrameError) as damaged:
        saver.get_tuple(cfg("t"))
    assert damaged.value.reason.value == "checksum"


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
    saver.delete_for_runs(["run-2", "never"])  # nothing left to do, and no tombstones made
    assert saver.get_tuple(cfg("t")) is None


# --------------------------------------------------------------------------- across processes


@pytest.mark.parametrize("durable_server", ["valkey"], indirect=True)  # ~8 s; both engines run everything above
def test_example_graph_killed_mid_run_resumes_elsewhere_and_a_frozen_writer_is_fenced(durable_server, client, namespace):
    """examples/langgraph_resume.py: SIGKILL mid-node, resume on another process from the last
    durable checkpoint; SIGSTOP a writer, another takes over, the thawed one is fenced."""
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "langgraph_resume.py"), "--url", durable_server.url,
                           "--namespace", namespace], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "all checks passed" in out
    assert "[B] node plan" not in out and "[B] node search" not in out  # B resumed, did not start over
    assert re.search(r"\[C\] FENCED: .*token 1 rejected", out)
    stale_thread = re.search(r"takes thread (\S+) over", out).group(1)
    events = CheckpointStore(client, namespace=namespace).events(thread_run_id(stale_thread))
    takeover = next(n for n, e in enumerate(events) if e.kind == "takeover" and e.fields.get("owner") == "worker-D")
    assert any(e.kind == "renew_failed" and e.fields.get("owner") == "worker-C" for e in events[takeover:])
    assert not any(e.kind == "commit" and e.fields.get("owner") == "worker-C" for e in events[takeover:])
