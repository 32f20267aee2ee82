"""redis_ckpt.langgraph at its edges: checkpoints whose parent chain loops, history walks
longer than one round trip, expiry of every key a whole-thread operation makes, the
cross-thread run index after a thread left it, bad arguments, and prune racing a put."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
import redis

from test_langgraph import checkpoint, cfg, one_expiry, round_trips, visible_ids  # skips this module without langgraph

from redis_ckpt import CheckpointStore, ConflictError, StoreUnavailableError
from redis_ckpt.integrations.langgraph import reads, runs, writes
from redis_ckpt.integrations.langgraph.engine import Engine
from redis_ckpt.integrations.langgraph.model import items, split_record
from redis_ckpt.langgraph import RedisCkptSaver, thread_run_id

pytestmark = pytest.mark.server


def key_of(store: CheckpointStore, thread: str, name: str) -> str:
    return f"{store.namespace}:{{{thread_run_id(thread)}}}:{name}"


def set_parent(client: redis.Redis, store: CheckpointStore, thread: str, cid: str, parent: str, ns: str = "") -> None:
    """Make the stored checkpoint ``cid`` a child of ``parent`` (damage no put can make: put
    refuses a checkpoint that is its own parent)."""
    records = key_of(store, thread, "lg:cp")
    field = f"{ns}\x00{cid}"
    shape, frame = split_record(client.hget(records, field))
    inner = items([parent.encode(), *shape[1:]])
    client.hset(records, field, b"%d:%s%s" % (len(inner), inner, frame))


def finishes(call: Any, seconds: float = 10) -> list[Any]:
    """[call()] when it returns within ``seconds`` (its exception re-raised); [] when not."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result.append(exc)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(seconds)
    if result and isinstance(result[0], BaseException):
        raise result[0]
    return result


# --------------------------------------------------------------------------- a parent chain that loops


def test_a_checkpoint_put_as_its_own_parent_is_refused_and_nothing_changes(store, client):
    """put(tup.config, tup.checkpoint, ...) (re-saving a checkpoint to amend its metadata)
    would make the checkpoint its own parent: refused before anything is sent."""
    saver = RedisCkptSaver(store)
    cp = checkpoint(values={"x": 1}, versions={"x": 1})
    saver.put(cfg("t"), cp, {"step": 0}, {"x": 1})
    tup = saver.get_tuple(cfg("t"))
    version = client.hget(key_of(store, "t", "lg:meta"), "ver")
    with pytest.raises(ValueError, match="its own parent"):
        saver.put(tup.config, tup.checkpoint, {**tup.metadata, "note": "amended"}, {})
    assert client.hget(key_of(store, "t", "lg:meta"), "ver") == version
    again = saver.get_tuple(cfg("t"))
    assert again.parent_config is None and "note" not in again.metadata


def test_saver_write_itself_refuses_a_checkpoint_that_is_its_own_parent(store, client):
    """The script refuses it too (a caller other than put, or a put that skipped its check):
    BAD_ITEMS, and nothing of the call is written."""
    from redis_ckpt.drivers.scripts import lua_text
    from redis_ckpt.integrations.langgraph.model import ThreadKeys

    keys = ThreadKeys(store.namespace, thread_run_id("t")).all
    args = [0, "", "", "owner", 0, 100, "t", "P", "", "c1", "c1", b"frame", "R", 0]
    with pytest.raises(redis.ResponseError, match="BAD_ITEMS 8"):
        client.eval(lua_text("saver_write"), len(keys), *keys, *args)
    assert client.exists(*keys) == 0


def test_an_empty_checkpoint_id_is_refused_as_such_and_nothing_is_written(store, client):
    """A checkpoint stored under "" could never be read (get_tuple and list take "" for "the
    newest"): put and put_writes refuse it, saying so, before anything is sent."""
    saver = RedisCkptSaver(store)
    cp = checkpoint(values={"x": 1}, versions={"x": 1})
    cp["id"] = ""
    with pytest.raises(ValueError, match="checkpoint id must not be empty"):
        saver.put(cfg("t"), cp, {}, {"x": 1})
    with pytest.raises(ValueError, match="checkpoint id must not be empty"):
        saver.put_writes(cfg("t", cid=""), [("x", 1)], "task")
    assert not list(client.scan_iter(f"{store.namespace}:{{lg*"))


def test_saver_write_refuses_a_write_index_that_is_no_number_before_writing_anything(store, client):
    """A script error half way would leave what came before it written (Lua does not roll
    back): a "W" item whose index is no integer is refused in the check, as BAD_ITEMS."""
    from redis_ckpt.drivers.scripts import lua_text
    from redis_ckpt.integrations.langgraph.model import ThreadKeys

    keys = ThreadKeys(store.namespace, thread_run_id("t")).all
    for idx in ("x", "1.5", ""):
        args = [0, "", "", "owner", 0, 100, "t", "P", "", "c1", "", b"frame", "R", 0,
                "W", "", "c1", 1, "task", idx, "ch", b"frame"]
        with pytest.raises(redis.ResponseError, match="BAD_ITEMS 15"):
            client.eval(lua_text("saver_write"), len(keys), *keys, *args)
        assert client.exists(*keys) == 0


@pytest.mark.parametrize("visits", [1, 2, reads.VISITS])
def test_a_history_walk_over_a_parent_chain_that_loops_ends(store, client, monkeypatch, visits):
    """A stored chain c2 -> c1 -> c0 -> c1 (damage): the walk ends, in one round trip or
    many, with the writes of each checkpoint once."""
    saver = RedisCkptSaver(store)
    parent = None
    chain = []
    for i in range(3):
        cp = checkpoint(values={}, versions={"log": i + 1})  # no value of "log": no seed ends the walk
        saver.put(cfg("t", cid=parent), cp, {"step": i}, {"log": i + 1})
        saver.put_writes(cfg("t", cid=cp["id"]), [("log", f"w{i}")], f"task{i}")
        parent = cp["id"]
        chain.append(parent)
    set_parent(client, store, "t", chain[0], chain[1])
    monkeypatch.setattr(reads, "VISITS", visits)
    done = finishes(lambda: saver.get_delta_channel_history(config=cfg("t"), channels=["log"]))
    if not done:
        client.delete(key_of(store, "t", "lg:cp"))  # a missing record ends the walk
        pytest.fail("get_delta_channel_history did not return")
    assert done[0] == {"log": {"writes": [("task0", "log", "w0"), ("task1", "log", "w1")]}}


def test_a_history_walk_from_a_checkpoint_that_is_its_own_parent_ends(store, client):
    saver = RedisCkptSaver(store)
    cp = checkpoint(values={}, versions={"log": 1})  # no value of "log": no seed ends the walk
    saver.put(cfg("t"), cp, {"step": 0}, {"log": 1})
    saver.put_writes(cfg("t", cid=cp["id"]), [("log", "b")], "task")
    set_parent(client, store, "t", cp["id"], cp["id"])
    done = finishes(lambda: saver.get_delta_channel_history(config=cfg("t"), channels=["log"]))
    if not done:
        client.delete(key_of(store, "t", "lg:cp"))
        pytest.fail("get_delta_channel_history did not return")
    assert done[0] == {"log": {"writes": []}}  # the checkpoint is no ancestor of its own


def test_prune_of_a_checkpoint_that_is_its_own_parent_ends_and_keeps_it(make_server):
    """keep_latest walks the delta chain of the newest checkpoint: on a chain that loops it
    ends (a dedicated server: a script that spun would block every client of it)."""
    server = make_server("valkey", busy_reply_threshold="1000")
    store = CheckpointStore(redis.Redis.from_url(server.url, socket_timeout=30), namespace="loop")
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    saver = RedisCkptSaver(store)
    old = checkpoint(values={"log": ["a"]}, versions={"log": 1})
    saver.put(cfg("t"), old, {"step": 0}, {"log": 1})
    cp = checkpoint(values={}, versions={"log": 2})
    saver.put(cfg("t", cid=old["id"]), cp, {"step": 1, "counters_since_delta_snapshot": {"log": (1, 1)}},
              {"log": 2})
    set_parent(client, store, "t", cp["id"], cp["id"])
    done = finishes(lambda: saver.prune(["t"]))
    if not done:
        client.script_kill()
        pytest.fail("prune's script spun: the server was blocked")
    assert visible_ids(saver, "t") == [cp["id"]]


# --------------------------------------------------------------------------- expiry of what delete, prune and runs make


def standalone_thread(saver: RedisCkptSaver, thread: str) -> None:
    """Two checkpoints of runs "R" then "S" put by standalone calls (no invocation: no audit
    event, so no events stream yet)."""
    first = checkpoint(values={"x": 1}, versions={"x": 1})
    saver.put(cfg(thread), first, {"step": 0, "run_id": "R"}, {"x": 1})
    saver.put(cfg(thread, cid=first["id"]), checkpoint(values={"x": 2}, versions={"x": 2}),
              {"step": 1, "run_id": "S"}, {"x": 2})


@pytest.mark.parametrize("operation", ["prune", "delete_for_runs", "delete_thread"])
def test_the_audit_event_of_a_whole_thread_operation_expires_with_the_thread(store, client, operation):
    """Under a thread_ttl every key of a thread expires, the events stream an operation's
    audit event creates too, at the thread's one expiry."""
    saver = RedisCkptSaver(store, thread_ttl={"default_ttl": 5})
    standalone_thread(saver, "t")
    assert not client.exists(key_of(store, "t", "events"))
    expiry = one_expiry(client, store, "t")
    {"prune": lambda: saver.prune(["t"]), "delete_for_runs": lambda: saver.delete_for_runs(["R"]),
     "delete_thread": lambda: saver.delete_thread("t")}[operation]()
    assert client.exists(key_of(store, "t", "events"))
    assert one_expiry(client, store, "t") == expiry


def test_a_saver_without_a_ttl_makes_a_thread_permanent_after_a_refreshing_read(store, client):
    """A read with refresh_on_read gives a permanent thread an expiry; the next write of a
    saver without a TTL makes it permanent again, as a whole (no key that write makes is
    left without an expiry while the others expire)."""
    permanent = RedisCkptSaver(store)
    reader = RedisCkptSaver(store, thread_ttl={"default_ttl": 5, "refresh_on_read": True})
    cp = checkpoint(values={"x": 1}, versions={"x": 1})
    permanent.put(cfg("t"), cp, {"step": 0}, {"x": 1})
    assert reader.get_tuple(cfg("t")) is not None
    assert one_expiry(client, store, "t") > 0
    permanent.put_writes(cfg("t", cid=cp["id"]), [("x", 2)], "task")
    permanent.put(cfg("t", cid=cp["id"]), checkpoint(values={"x": 2}, versions={"x": 2}), {"step": 1}, {"x": 2})
    assert one_expiry(client, store, "t") == -1


def test_a_thread_deleted_under_a_ttl_and_written_again_without_one_is_permanent_whole(store, client):
    """delete_thread leaves the fence and the events, with the expiry a TTL gave them; a saver
    without a TTL that writes the thread again makes those permanent too: the fence of a
    permanent thread never expires under an invocation that holds it."""
    expiring, permanent = RedisCkptSaver(store, thread_ttl={"default_ttl": 5}), RedisCkptSaver(store)
    put_of_run(expiring, "t", "R")
    expiring.delete_thread("t")
    put_of_run(permanent, "t", "R")
    assert one_expiry(client, store, "t") == -1


# --------------------------------------------------------------------------- bad arguments change nothing


@pytest.mark.parametrize("call, error", [
    (lambda s: s.delete_for_runs("run-9"), TypeError),  # its characters are no run ids
    (lambda s: s.delete_for_runs(["run-9", "bad\x00id"]), ValueError),  # run-9 is not deleted first
    (lambda s: s.prune("t"), TypeError),
    (lambda s: s.prune([], strategy="bogus"), ValueError),
    (lambda s: s.prune(["t"], strategy="bogus"), ValueError),
    (lambda s: s.prune(["t", ""]), ValueError),  # t is not pruned first
    (lambda s: list(s.list(cfg("t"), limit=2.5)), TypeError),  # was a server error
    (lambda s: list(s.list(cfg("t"), limit="1")), TypeError),
    (lambda s: s.get_delta_channel_history(config=cfg("t"), channels="x"), TypeError),  # was walked as "x"
], ids=["runs-str", "runs-bad-name", "prune-str", "no-threads-bad-strategy", "bad-strategy", "prune-empty-thread",
        "limit-float", "limit-str", "channels-str"])
def test_bad_arguments_of_delete_for_runs_and_prune_are_refused_and_change_nothing(store, call, error):
    saver = RedisCkptSaver(store)
    first = checkpoint(values={"x": 1}, versions={"x": 1})
    saver.put(cfg("t"), first, {"step": 0, "run_id": "run-9"}, {"x": 1})
    second = checkpoint(values={"x": 2}, versions={"x": 2})
    saver.put(cfg("t", cid=first["id"]), second, {"step": 1, "run_id": "run-9"}, {"x": 2})
    with pytest.raises(error):
        call(saver)
    assert visible_ids(saver, "t") == [second["id"], first["id"]]


LONE = "\udc80"  # a lone surrogate: a str Python holds, UTF-8 (and so Redis) cannot
SURROGATE_CALLS = {  # call -> the argument its error names
    "put-thread": (lambda s, cp: s.put(cfg("t\ud800"), cp, {}, {"x": 1}), "thread_id"),
    "put-ns": (lambda s, cp: s.put(cfg("t", f"n{LONE}"), cp, {}, {"x": 1}), "checkpoint_ns"),
    "put-id": (lambda s, cp: s.put(cfg("t"), {**cp, "id": f"c{LONE}"}, {}, {"x": 1}), "checkpoint id"),
    "put-parent": (lambda s, cp: s.put(cfg("t", cid=f"p{LONE}"), cp, {}, {"x": 1}), "parent checkpoint id"),
    "put-channel": (lambda s, cp: s.put(cfg("t"), {**cp, "channel_versions": {f"x{LONE}": 1}}, {}, {f"x{LONE}": 1}),
                    "channel"),
    "put-version": (lambda s, cp: s.put(cfg("t"), cp, {}, {"x": f"2{LONE}"}), "channel version"),
    "put-run": (lambda s, cp: s.put(cfg("t"), cp, {"run_id": f"r{LONE}"}, {"x": 1}), "metadata run_id"),
    # metadata keys were a TypeError saying only "string contains surrogates" (as values LangGraph makes them "?")
    "put-metadata-key": (lambda s, cp: s.put(cfg("t"), cp, {f"k{LONE}": 1}, {"x": 1}), "metadata key"),
    "put-metadata-nested-key": (lambda s, cp: s.put(cfg("t"), cp, {"a": [0, {"b": {f"k{LONE}": 1}}]}, {"x": 1}),
                                "metadata['a'][1]['b'] key"),
    # ... and so were dict keys in a channel value, a write or the checkpoint itself
    "put-value-key": (lambda s, cp: s.put(cfg("t"), {**cp, "channel_values": {"x": {"a": {f"k{LONE}": 1}}}}, {},
                                          {"x": 2}), "channel_values['x']['a'] key"),
    "put-checkpoint-key": (lambda s, cp: s.put(cfg("t"), {**cp, "pending_sends": [{f"k{LONE}": 1}]}, {}, {"x": 1}),
                           "checkpoint['pending_sends'][0] key"),
    "writes-value-key": (lambda s, cp: s.put_writes(cfg("t", cid="c1"), [("x", 1), ("y", [{f"k{LONE}": 1}])],
                                                    "task"), "writes[1] ('y')[0] key"),
    "writes-thread": (lambda s, cp: s.put_writes(cfg("t\ud800", cid="c1"), [("x", 1)], "task"), "thread_id"),
    "writes-ns": (lambda s, cp: s.put_writes(cfg("t", f"n{LONE}", cid="c1"), [("x", 1)], "task"), "checkpoint_ns"),
    "writes-id": (lambda s, cp: s.put_writes(cfg("t", cid=f"c{LONE}"), [("x", 1)], "task"), "checkpoint id"),
    "writes-task": (lambda s, cp: s.put_writes(cfg("t", cid="c1"), [("x", 1)], f"task{LONE}"), "task id"),
    "writes-channel": (lambda s, cp: s.put_writes(cfg("t", cid="c1"), [("x", 1), (f"y{LONE}", 2)], "task"), "channel"),
    "writes-path": (lambda s, cp: s.put_writes(cfg("t", cid="c1"), [("x", 1)], "task", f"p{LONE}"), "task path"),
    "get-thread": (lambda s, cp: s.get_tuple(cfg("t\ud800")), "thread_id"),
    "get-ns": (lambda s, cp: s.get_tuple(cfg("t", f"n{LONE}")), "checkpoint_ns"),
    "get-id": (lambda s, cp: s.get_tuple(cfg("t", cid=f"c{LONE}")), "checkpoint_id"),
    "list-thread": (lambda s, cp: list(s.list(cfg("t\ud800"))), "thread_id"),
    "list-ns": (lambda s, cp: list(s.list(cfg("t", f"n{LONE}"))), "checkpoint_ns"),
    "list-before": (lambda s, cp: list(s.list(cfg("t"), before=cfg("t", cid=f"c{LONE}"))), "before"),
    "history-channel": (lambda s, cp: s.get_delta_channel_history(config=cfg("t"), channels=[f"x{LONE}"]), "channel"),
    "delete-thread": (lambda s, cp: s.delete_thread("t\ud800"), "thread_id"),
    "copy-source": (lambda s, cp: s.copy_thread("u\ud800", "v"), "source_thread_id"),
    "copy-target": (lambda s, cp: s.copy_thread("t", "u\ud800"), "target_thread_id"),
    "prune-thread": (lambda s, cp: s.prune(["t", "u\ud800"]), "thread_id"),  # t is not pruned first
    "delete-runs": (lambda s, cp: s.delete_for_runs(["run-9", f"r{LONE}"]), "run id"),  # run-9 is not deleted first
}


@pytest.mark.parametrize("case", SURROGATE_CALLS)
def test_a_name_with_a_lone_surrogate_is_refused_naming_it_and_nothing_is_written(store, client, case):
    """A thread id, namespace, checkpoint id, channel, task id... that UTF-8 cannot encode is
    refused as NUL in a name is: a ValueError naming the argument and why, before anything
    is sent (it was an UnsupportedTypeError at "langgraph[0]", or a UnicodeEncodeError)."""
    saver = RedisCkptSaver(store)
    first = checkpoint(values={"x": 1}, versions={"x": 1})
    saver.put(cfg("t", cid=None), first, {"step": 0, "run_id": "run-9"}, {"x": 1})
    before = {k: client.dump(k) for k in client.scan_iter(f"{store.namespace}:*")}
    call, argument = SURROGATE_CALLS[case]
    # the argument itself ("thread_id" is not "target_thread_id")
    names_it = f"(?<!\\w){re.escape(argument)} .* is not encodable as UTF-8 \\(lone surrogate"
    with pytest.raises(ValueError, match=names_it) as refused:
        call(saver, checkpoint(values={"x": 2}, versions={"x": 2}))
    assert type(refused.value) is ValueError
    assert {k: client.dump(k) for k in client.scan_iter(f"{store.namespace}:*")} == before
    assert visible_ids(saver, "t") == [first["id"]]


def test_metadata_the_serializer_refuses_for_another_reason_raises_its_own_error(store, client):
    """Only a key UTF-8 cannot encode becomes a ValueError: another refusal of the serializer
    (here an object it cannot serialize) is raised as it came, and nothing is written."""
    saver = RedisCkptSaver(store)
    before = {k: client.dump(k) for k in client.scan_iter(f"{store.namespace}:*")}
    with pytest.raises(TypeError, match="not msgpack serializable"):
        saver.put(cfg("t"), checkpoint(values={"x": 1}, versions={"x": 1}), {"a": [{"o": object()}]}, {"x": 1})
    assert {k: client.dump(k) for k in client.scan_iter(f"{store.namespace}:*")} == before
    assert visible_ids(saver, "t") == []


# --------------------------------------------------------------------------- the run index after a thread left it


def put_of_run(saver: RedisCkptSaver, thread: str, lg_run: str, parent: str | None = None) -> str:
    cp = checkpoint(values={"x": lg_run}, versions={"x": saver.get_next_version(None, None)})
    saver.put(cfg(thread, cid=parent), cp, {"step": 0, "run_id": lg_run}, cp["channel_versions"])
    return cp["id"]


REMOVALS = {  # what takes thread t out of run R's cross-thread index
    "delete_thread": lambda saver: saver.delete_thread("t"),
    "delete_for_runs": lambda saver: saver.delete_for_runs(["R"]),  # e.g. a cancelled run that still writes
    "prune": lambda saver: saver.prune(["t"], strategy="delete"),
}


@pytest.mark.parametrize("removal", REMOVALS)
@pytest.mark.parametrize("where", ["same saver", "another process"])
def test_delete_for_runs_finds_a_run_written_again_after_its_thread_left_the_index(store, removal, where):
    """R writes t; t leaves R's index (here, or in another process, whose saver's cache of
    filed runs is not this one's); R writes t again: delete_for_runs(R) finds that too."""
    saver = RedisCkptSaver(store)
    other = saver if where == "same saver" else RedisCkptSaver(store)
    put_of_run(saver, "t", "R")
    REMOVALS[removal](other)
    kept = put_of_run(saver, "u", "S")
    again = put_of_run(saver, "t", "R")
    assert visible_ids(saver, "t") == [again]
    other.delete_for_runs(["R"])
    assert visible_ids(saver, "t") == [] and visible_ids(saver, "u") == [kept]


def test_delete_for_runs_finds_a_run_that_a_prune_took_out_of_a_thread(store):
    saver = RedisCkptSaver(store)
    put_of_run(saver, "t", "R")
    newest = put_of_run(saver, "t", "S", put_of_run(saver, "t", "R"))
    saver.prune(["t"])  # keeps S's checkpoint: t leaves R's index
    again = put_of_run(saver, "t", "R", newest)
    assert visible_ids(saver, "t") == [again, newest]
    saver.delete_for_runs(["R"])
    assert visible_ids(saver, "t") == [newest]


def test_an_empty_run_id_is_no_run(store, client):
    """A put whose metadata run_id is "" files its thread in no run's index (the script keeps
    no run for it either), and delete_for_runs refuses "" before deleting anything (its
    index key would have an empty hash tag: no one slot with its pending set on a Cluster)."""
    saver = RedisCkptSaver(store)
    kept = put_of_run(saver, "t", "R")
    kept = [put_of_run(saver, "t", "", kept), kept]
    assert client.keys(f"{store.namespace}:lgrun*") == [f"{store.namespace}:lgrun:{{R}}".encode()]
    with pytest.raises(ValueError, match="run id must not be empty"):
        saver.delete_for_runs(["R", ""])
    assert visible_ids(saver, "t") == kept


def test_a_put_of_a_run_filed_before_is_one_round_trip(store):
    saver = RedisCkptSaver(store)
    parent = put_of_run(saver, "t", "R")
    with round_trips() as sent:
        put_of_run(saver, "t", "R", parent)
    assert sent[0] == 1


def test_a_put_stored_before_its_run_index_failed_is_not_reported_as_failed(store, monkeypatch, caplog):
    """Filing the thread again in the run's index comes after the put is stored: when that
    fails the put still returns (it is stored), and the run's next put files the thread first."""
    saver = RedisCkptSaver(store)
    other = RedisCkptSaver(store)
    put_of_run(saver, "t", "R")
    other.delete_thread("t")
    original = runs.index_run

    def unavailable(*args: Any) -> Any:
        raise StoreUnavailableError("the server went away")
        yield  # a flow

    monkeypatch.setattr(runs, "index_run", unavailable)
    stored = put_of_run(saver, "t", "R")
    assert visible_ids(saver, "t") == [stored] and "could not be filed again" in caplog.text
    monkeypatch.setattr(runs, "index_run", original)
    put_of_run(saver, "t", "R", stored)
    other.delete_for_runs(["R"])
    assert visible_ids(saver, "t") == []


def put_after_admin(monkeypatch: Any, writer: RedisCkptSaver, kinds: tuple[str, ...]) -> list[str]:
    """Make the first saver_admin.lua call of one of ``kinds`` ("runs", "delete", "prune") be
    followed at once by a put of run R in t; the list gets that put's checkpoint id."""
    original = Engine.admin
    again: list[str] = []

    def admin_then_put(e: Any, k: Any, args: list[Any], what: str) -> Any:
        reply = yield from original(e, k, args, what)
        if args[0] in kinds and not again:
            again.append(put_of_run(writer, "t", "R"))
        return reply

    monkeypatch.setattr(Engine, "admin", admin_then_put)
    return again


def test_delete_for_runs_finds_a_thread_that_a_put_filed_again_while_it_ran(store, monkeypatch):
    """The run writes t again right after delete_for_runs took R's checkpoints out of t (the
    put files t in R's index again): t stays in the index, the next delete_for_runs finds it."""
    writer, deleter = RedisCkptSaver(store), RedisCkptSaver(store)
    put_of_run(writer, "t", "R")
    again = put_after_admin(monkeypatch, writer, ("runs",))
    deleter.delete_for_runs(["R"])
    assert visible_ids(writer, "t") == again
    monkeypatch.undo()
    deleter.delete_for_runs(["R"])
    assert visible_ids(writer, "t") == []


def test_delete_for_runs_finds_a_thread_filed_just_before_it_ran(store, monkeypatch):
    """A put files t in R's index, a whole delete_for_runs(R) runs, then the put's checkpoint
    lands in t: t is in R's index again, the next delete_for_runs finds it."""
    writer, deleter = RedisCkptSaver(store), RedisCkptSaver(store)
    original = runs.index_run
    ran: list[None] = []

    def index_then_delete(*args: Any) -> Any:
        yield from original(*args)
        if not ran:
            ran.append(deleter.delete_for_runs(["R"]))

    monkeypatch.setattr(runs, "index_run", index_then_delete)
    first = put_of_run(writer, "t", "R")
    assert ran and visible_ids(writer, "t") == [first]
    monkeypatch.undo()
    deleter.delete_for_runs(["R"])
    assert visible_ids(writer, "t") == []


@pytest.mark.parametrize("removal", ["delete_thread", "prune"])
def test_delete_for_runs_finds_a_thread_a_put_wrote_again_right_after_it_left_the_index(store, monkeypatch, removal):
    """A delete or prune takes R's checkpoints out of t, a put of R writes t again (and files
    it), then the delete or prune takes t out of R's index: t is filed again all the same."""
    writer, remover = RedisCkptSaver(store), RedisCkptSaver(store)
    put_of_run(writer, "t", "R")
    again = put_after_admin(monkeypatch, writer, ("delete", "prune"))
    REMOVALS[removal](remover)
    assert visible_ids(writer, "t") == again
    monkeypatch.undo()
    remover.delete_for_runs(["R"])
    assert visible_ids(writer, "t") == []


def test_a_delete_for_runs_that_stopped_half_way_leaves_the_rest_to_the_next_one(store, client, monkeypatch):
    """delete_for_runs takes each thread out of the run's index before it removes the run's
    checkpoints from it: stopped in between, the next delete_for_runs still finds it."""
    saver = RedisCkptSaver(store)
    put_of_run(saver, "t", "R")

    def unavailable(*args: Any) -> Any:
        raise StoreUnavailableError("the server went away")
        yield  # a flow

    monkeypatch.setattr(Engine, "admin", unavailable)
    with pytest.raises(StoreUnavailableError):
        saver.delete_for_runs(["R"])
    assert not client.exists(f"{store.namespace}:lgrun:{{R}}")  # t left the index, its checkpoint did not
    monkeypatch.undo()
    saver.delete_for_runs(["R"])
    assert visible_ids(saver, "t") == [] and not client.keys(f"{store.namespace}:lgrun*")


def test_delete_for_runs_finds_a_copy_filed_just_before_it_ran(store, monkeypatch):
    """copy_thread files the target in R's index, a whole delete_for_runs(R) runs, then the
    copy lands: the target is in R's index again."""
    saver, deleter = RedisCkptSaver(store), RedisCkptSaver(store)
    copied = put_of_run(saver, "s", "R")
    original = runs.index_run
    ran: list[None] = []

    def index_then_delete(e: Any, k: Any, lg_run: str, thread_id: str) -> Any:
        yield from original(e, k, lg_run, thread_id)
        if thread_id == "c" and not ran:
            ran.append(deleter.delete_for_runs(["R"]))

    monkeypatch.setattr(runs, "index_run", index_then_delete)
    saver.copy_thread("s", "c")
    assert ran and visible_ids(saver, "c") == [copied]
    monkeypatch.undo()
    deleter.delete_for_runs(["R"])
    assert visible_ids(saver, "c") == []


def test_a_put_resent_after_its_reply_was_lost_files_its_thread_again(durable_server, store, namespace):
    """t left R's index (a delete in another process); R's put lands, its reply is lost and
    it is sent again: the resend finds R's checkpoint already in t, yet t is filed again."""
    from test_resend import Background
    from tcp_proxy import CutProxy

    from redis_ckpt.drivers.scripts import SCRIPTS

    with CutProxy(durable_server.port) as proxy:
        via = CheckpointStore(redis.Redis(port=proxy.port, socket_timeout=30), namespace=namespace)
        try:
            writer, other = RedisCkptSaver(via), RedisCkptSaver(store)
            put_of_run(writer, "t", "R")  # files t, and loads the script
            other.delete_thread("t")
            proxy.arm("lose-reply", SCRIPTS.sha("saver_write").encode())
            bg = Background(lambda: put_of_run(writer, "t", "R"))
            assert proxy.answered.wait(20), "the put never reached the proxy"
            proxy.cut()
            again = bg.result()
        finally:
            via.close()
    assert visible_ids(other, "t") == [again]
    other.delete_for_runs(["R"])
    assert visible_ids(other, "t") == []


# --------------------------------------------------------------------------- a history walk of many round trips


@pytest.mark.parametrize("visits", [1, 2, 3])
def test_a_history_walk_of_several_round_trips_neither_skips_nor_repeats_a_checkpoint(store, monkeypatch, visits):
    """A walk longer than VISITS goes on in another round trip from where it stopped: the
    same history as in one (VISITS lowered so that the walk takes several)."""
    saver = RedisCkptSaver(store)
    first = checkpoint(values={"d": ["seed"]}, versions={"d": 1})
    saver.put(cfg("h"), first, {"step": 0}, {"d": 1})
    parent = first["id"]
    for i in range(1, 7):
        saver.put_writes(cfg("h", cid=parent), [("d", f"w{i}")], f"task{i}")
        nxt = checkpoint(values={}, versions={"d": i + 1})
        saver.put(cfg("h", cid=parent), nxt, {"step": i}, {"d": i + 1})
        parent = nxt["id"]
    whole = saver.get_delta_channel_history(config=cfg("h"), channels=["d"])
    assert whole["d"] == {"writes": [(f"task{i}", "d", f"w{i}") for i in range(1, 7)], "seed": ["seed"]}
    monkeypatch.setattr(reads, "VISITS", visits)
    assert saver.get_delta_channel_history(config=cfg("h"), channels=["d"]) == whole


# --------------------------------------------------------------------------- prune racing a put


def puts_before_prune(monkeypatch: pytest.MonkeyPatch, put_next: Any, times: int) -> None:
    """Each of the first ``times`` prune calls of saver_admin comes after ``put_next()``: a run
    still writing the thread puts between prune's read of the heads and its prune."""
    original = Engine.admin
    left = [times]

    def admin(e: Any, k: Any, args: list[Any], what: str) -> Any:
        if args[0] == "prune" and left[0] > 0:
            left[0] -= 1
            put_next()
        return (yield from original(e, k, args, what))

    monkeypatch.setattr(Engine, "admin", admin)


def test_prune_keep_latest_racing_a_put_keeps_the_new_heads_delta_chain(store, monkeypatch):
    """The head a put makes between prune's two round trips is kept with the delta chain it
    rebuilds from, not the chain computed for the head before it."""
    saver = RedisCkptSaver(store)
    cp1 = checkpoint(values={"log": ["a"]}, versions={"log": 1})  # a snapshot of log
    saver.put(cfg("t"), cp1, {"step": 0}, {"log": 1})
    saver.put_writes(cfg("t", cid=cp1["id"]), [("log", "b")], "task")
    cp2 = checkpoint(values={}, versions={"log": 2})  # log rebuilt from cp1's snapshot and cp1's writes
    puts_before_prune(monkeypatch, lambda: saver.put(
        cfg("t", cid=cp1["id"]), cp2, {"step": 1, "counters_since_delta_snapshot": {"log": (1, 1)}}, {"log": 2}), 1)
    saver.prune(["t"], strategy="keep_latest")
    assert visible_ids(saver, "t") == [cp2["id"], cp1["id"]]
    history = saver.get_delta_channel_history(config=cfg("t"), channels=["log"])
    assert history["log"] == {"writes": [("task", "log", "b")], "seed": ["a"]}


def test_prune_keep_latest_that_new_heads_keep_overtaking_gives_up_and_prunes_nothing(store, monkeypatch):
    saver = RedisCkptSaver(store)
    heads = [put_of_run(saver, "t", "R")]
    heads.append(put_of_run(saver, "t", "R", heads[-1]))
    puts_before_prune(monkeypatch, lambda: heads.append(put_of_run(saver, "t", "R", heads[-1])), 1000)
    with pytest.raises(ConflictError, match="prune"):
        saver.prune(["t"], strategy="keep_latest")
    assert visible_ids(saver, "t") == heads[::-1]


# --------------------------------------------------------------------------- copy_thread onto a thread in use


def test_copy_thread_onto_a_thread_that_holds_checkpoints_is_refused_and_changes_nothing(store):
    """Values are stored once per (namespace, channel, version): a copy merged into a thread in
    use would read the target's value where both hold one under the same version."""
    saver = RedisCkptSaver(store)
    src = checkpoint(values={"x": "source"}, versions={"x": 1})
    saver.put(cfg("src"), src, {"step": 0}, {"x": 1})
    dst = checkpoint(values={"x": "target"}, versions={"x": 1})
    saver.put(cfg("dst"), dst, {"step": 0}, {"x": 1})
    with pytest.raises(ConflictError, match="already holds checkpoints"):
        saver.copy_thread("src", "dst")
    assert visible_ids(saver, "dst") == [dst["id"]]
    assert saver.get_tuple(cfg("dst")).checkpoint["channel_values"] == {"x": "target"}
    saver.delete_thread("dst")  # a deleted thread takes a copy
    saver.copy_thread("src", "dst")
    assert saver.get_tuple(cfg("dst", cid=src["id"])).checkpoint["channel_values"] == {"x": "source"}


def _interrupted_copy(saver: RedisCkptSaver, monkeypatch: Any, source: str, target: str) -> None:
    """copy_thread sent one call per checkpoint, the server gone after the first one."""
    monkeypatch.setattr(writes, "COPY_BATCH_BYTES", 1)
    write, calls = saver._engine.write, []

    def write_then_fail(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        if len(calls) > 1:
            raise StoreUnavailableError("the server went away")
        return write(*args, **kw)

    monkeypatch.setattr(saver._engine, "write", write_then_fail)
    with pytest.raises(StoreUnavailableError):
        saver.copy_thread(source, target)
    monkeypatch.setattr(saver._engine, "write", write)


def test_a_copy_interrupted_between_its_calls_is_completed_by_copying_again(store):
    """A large thread is copied in several calls: interrupted between two (the server gone),
    the copy left part of the source in the target, which looked like a thread of its own
    and refused the copy_thread sent again ("already holds checkpoints"). The same copy sent
    again (the source unchanged) now completes it."""
    saver = RedisCkptSaver(store)
    ids = [put_of_run(saver, "src", "R")]
    for _ in range(3):
        ids.append(put_of_run(saver, "src", "R", parent=ids[-1]))
    with pytest.MonkeyPatch.context() as mp:
        _interrupted_copy(saver, mp, "src", "dst")
        assert 0 < len(visible_ids(saver, "dst")) < len(ids)  # partly copied
        saver.copy_thread("src", "dst")
    assert visible_ids(saver, "dst") == visible_ids(saver, "src") == ids[::-1]
    for cid in ids:
        assert saver.get_tuple(cfg("dst", cid=cid)).checkpoint == saver.get_tuple(cfg("src", cid=cid)).checkpoint
    saver.copy_thread("src", "dst")  # sent again once more (its reply lost): the same copy
    assert visible_ids(saver, "dst") == ids[::-1]


def test_a_partial_copy_of_a_source_that_changed_since_is_refused_naming_it(store):
    """The source changed after the interrupted copy: the copy sent now would merge two states
    of it, so it is refused, the message saying what left the target so."""
    saver = RedisCkptSaver(store)
    ids = [put_of_run(saver, "src", "R")]
    ids.append(put_of_run(saver, "src", "R", parent=ids[-1]))
    with pytest.MonkeyPatch.context() as mp:
        _interrupted_copy(saver, mp, "src", "dst")
        partial = visible_ids(saver, "dst")
        put_of_run(saver, "src", "R", parent=ids[-1])
        with pytest.raises(ConflictError, match="unfinished copy_thread"):
            saver.copy_thread("src", "dst")
    assert visible_ids(saver, "dst") == partial
    saver.delete_thread("dst")
    saver.copy_thread("src", "dst")
    assert visible_ids(saver, "dst") == visible_ids(saver, "src")


@pytest.mark.parametrize("source, target, argument", [("", "u", "source_thread_id"), ("t", "", "target_thread_id")])
def test_copy_thread_with_an_empty_thread_id_is_refused_naming_that_argument(store, client, source, target, argument):
    """Each of copy_thread's two thread ids is named in its own error (both said "thread_id":
    which one was wrong?), before anything is sent."""
    saver = RedisCkptSaver(store)
    saver.put(cfg("t"), checkpoint(values={"x": 1}, versions={"x": 1}), {"step": 0}, {"x": 1})
    before = {k: client.dump(k) for k in client.scan_iter(f"{store.namespace}:*")}
    with pytest.raises(ValueError, match=f"^{argument} must not be empty"):
        saver.copy_thread(source, target)
    assert {k: client.dump(k) for k in client.scan_iter(f"{store.namespace}:*")} == before


def test_copy_thread_onto_itself_is_refused(store):
    saver = RedisCkptSaver(store)
    saver.put(cfg("t"), checkpoint(values={"x": 1}, versions={"x": 1}), {"step": 0}, {"x": 1})
    with pytest.raises(ValueError, match="itself"):
        saver.copy_thread("t", "t")


def test_a_copy_racing_a_first_write_to_its_target_is_refused_whole(store, monkeypatch):
    """The target was empty when the copy looked, and a put lands before the copy's first
    call: that call is refused (its claim asks for version 0), nothing of the source lands."""
    saver = RedisCkptSaver(store)
    src = checkpoint(values={"x": "source"}, versions={"x": 1})
    saver.put(cfg("src"), src, {"step": 0}, {"x": 1})
    dst = checkpoint(values={"x": "target"}, versions={"x": 1})
    read = saver._engine.read

    def read_then_put(k, args, what):
        if args[0] == "dump":
            saver.put(cfg("dst"), dst, {"step": 0}, {"x": 1})
        return (yield from read(k, args, what))

    monkeypatch.setattr(saver._engine, "read", read_then_put)
    with pytest.raises(ConflictError, match="already holds checkpoints"):
        saver.copy_thread("src", "dst")
    assert visible_ids(saver, "dst") == [dst["id"]]


def test_an_empty_saver_owner_is_refused_not_replaced_by_the_default():
    """owner=None names the saver host:pid:random; an explicit "" is a bad owner, refused."""
    from redis_ckpt import InvalidRunIdError
    with pytest.raises(InvalidRunIdError, match="owner"):
        RedisCkptSaver(CheckpointStore.in_memory(), owner="")
    assert RedisCkptSaver(CheckpointStore.in_memory(), owner=None).owner


@pytest.mark.parametrize("kwargs, argument", [
    ({}, "store"),
    ({"store": "other-namespace", "async_store": "default"}, "async_store"),
    ({"store": "default", "thread_ttl": {"default_ttl": 5, "refresh": True}}, "thread_ttl"),
    ({"store": "default", "thread_ttl": {"default_ttl": 5, "refresh_on_read": "yes"}}, "thread_ttl"),
])
def test_a_bad_saver_construction_is_an_invalid_option_error_and_still_a_value_error(kwargs, argument):
    from redis_ckpt import CheckpointError, InvalidOptionError
    from redis_ckpt.aio import AsyncCheckpointStore
    import asyncio

    def made(key, namespace):
        if key == "async_store":
            return asyncio.run(AsyncCheckpointStore.in_memory(namespace=namespace))
        return CheckpointStore.in_memory(namespace=namespace)
    kwargs = {k: made(k, v) if k in ("store", "async_store") else v for k, v in kwargs.items()}
    with pytest.raises(InvalidOptionError) as refused:
        RedisCkptSaver(**kwargs)
    assert isinstance(refused.value, CheckpointError) and isinstance(refused.value, ValueError)
    assert refused.value.argument == argument
