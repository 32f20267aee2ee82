"""Shared chunks under a retention, on real Valkey and Redis servers with short retentions
(issue 16): a run finished while it keeps shared generations leaves no key behind once it
expires, and a chunk never expires before a kept generation that lists it (an acquire or a
commit under the run's retention moves the chunks' expiry with the generations')."""

from __future__ import annotations

import time

import pytest

from redis_ckpt import CheckpointStore
from redis_ckpt.core.contract import acquire_script, retain_script
from redis_ckpt.core.dedup import MAGIC, read_manifest
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.core.ops import Pipe, ReplyError, Script
from redis_ckpt.drivers.scripts import lua_text

from test_incremental import history, refs, shared_keys

pytestmark = pytest.mark.server


def run_keys(client, k: RunKeys) -> set[str]:
    return {key.decode() for key in client.scan_iter(match=f"{k.base}:*", count=1000)}


def wait_gone(client, k: RunKeys, but: set[str] = frozenset(), timeout: float = 10.0) -> None:
    """Wait until the run's only keys are ``but`` (an expired key may linger until it is
    touched or sampled by the server's expiry cycle: touching removes it)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for key in run_keys(client, k) - but:
            client.exists(key)
        if run_keys(client, k) <= but:
            return
        time.sleep(0.05)
    raise AssertionError(f"still there: {sorted(run_keys(client, k) - but)}")


def shared_run(client, namespace: str, run: str, *, fence_margin: float = 3600.0):
    """A dedup store (keep 3) and the keys of ``run`` once it keeps three shared generations."""
    store = CheckpointStore(client, namespace=namespace, keep=3, dedup=True, fence_margin=fence_margin)
    lease = store.acquire(run, owner="w", ttl=30)
    for n in (400, 410, 420, 430):  # rotation drops generation 1: x:refs counts the other three
        lease.commit(history(n))
    k = RunKeys(namespace, run)
    assert all(client.get(k.generation(g))[:4] == MAGIC for g in (2, 3, 4)) and refs(client, k)
    return store, lease, k


def answers(flow, seen: list):
    """``flow``, recording each script it sends with the script's reply."""
    reply = None
    try:
        while True:
            op = flow.send(reply)
            reply = yield op
            if isinstance(op, Pipe):
                seen += [(o, r) for o, r in zip(op.ops, reply) if isinstance(o, Script)]
    except StopIteration as done:
        return done.value


def evaluated(client, script: Script):
    try:
        return client.eval(lua_text(script.name), len(script.keys), *script.keys, *script.args)
    except Exception as exc:  # the script's refusal
        return ReplyError(str(exc))


def expiry_of(client, keys) -> set[int]:
    """The keys' PTTLs (ms), -1 for a key without one, -2 for a missing key."""
    return {client.pttl(key) for key in keys}


def test_a_finished_run_with_shared_generations_leaves_no_key_once_it_expires(client, namespace):
    store, lease, k = shared_run(client, namespace, "done", fence_margin=0.2)
    chunks = shared_keys(client, k)
    assert len(chunks) > 10
    lease.finish(keep_for=0.4)
    left = expiry_of(client, [k.refs, *chunks])
    assert all(0 < ms <= 400 for ms in left), left  # the chunks expire with the generations listing them
    assert store.load("done").state == history(430)  # kept until then
    wait_gone(client, k)  # the fence too, fence_margin after the data: nothing of the run is left
    assert store.load("done") is None


def test_a_run_acquired_again_within_keep_for_keeps_every_shared_generation(client, namespace):
    store, lease, k = shared_run(client, namespace, "again")
    chunks = shared_keys(client, k)
    lease.finish(keep_for=1.0)
    finished = time.monotonic()
    time.sleep(0.5)
    again = store.acquire("again", owner="w2", ttl=30)  # under the run's own retention: from now on
    assert all(500 < ms <= 1000 for ms in expiry_of(client, [k.refs, *chunks, k.generation(2)]))
    time.sleep(max(0.0, finished + 1.25 - time.monotonic()))  # past the first expiry, not the second
    assert [(g.generation, g.ok) for g in store.generations("again")] == [(4, True), (3, True), (2, True)]
    loaded = store.load("again")
    assert (loaded.generation, loaded.state) == (4, history(430))
    for g, n in ((2, 410), (3, 420)):
        assert store.load("again", generation=g).state == history(n)
    assert shared_keys(client, k) == chunks

    # a commit under the retention (sent plain) moves the expiry of the chunks still listed on
    seen: list = []
    assert store.run(answers(again.commit_flow(history(440)), seen)) == 5  # drops generation 2
    codes = [r.code if isinstance(r, ReplyError) else "applied" for _, r in seen]
    assert codes[-2:] == ["NEED_SHARED", "applied"]  # told to pass every chunk x:refs names, and did
    committed = time.monotonic()
    assert store.info("again").kept == (3, 4, 5) and client.get(k.generation(5))[:4] != MAGIC
    listed = {a for g in (3, 4) for a in read_manifest(client.get(k.generation(g)), run_id="again",
                                                       generation=g).addresses}
    assert shared_keys(client, k) == set(map(k.shared, listed)) and set(refs(client, k)) == listed
    assert all(500 < ms <= 1000 for ms in expiry_of(client, [k.refs, *map(k.shared, listed)]))
    time.sleep(max(0.0, committed + 0.75 - time.monotonic()))  # past the acquire's expiry
    assert [g.ok for g in store.generations("again")] == [True, True, True]
    assert store.load("again", generation=3).state == history(420)
    again.release()
    wait_gone(client, k, but={k.fence})
    assert shared_keys(client, k) == set()


def test_an_acquire_with_a_retention_gives_the_shared_chunks_the_run_keeps(client, namespace):
    store, lease, k = shared_run(client, namespace, "kept")
    lease.release()
    lease = store.acquire("kept", owner="w", ttl=30, retention=1.0)
    chunks = shared_keys(client, k)
    assert all(0 < ms <= 1000 for ms in expiry_of(client, [k.refs, *chunks, k.generation(4)]))
    # the head records it: a later acquire without one moves the chunks' expiry on too, and a
    # shared commit is sent plain (a new generation never lists a chunk that is to expire)
    assert client.hget(k.head, "retention_ms") == b"1000"
    lease.release()
    other = CheckpointStore(client, namespace=namespace, keep=3, dedup=True)
    lease = other.acquire("kept", owner="w2", ttl=30)
    assert lease.commit(history(440)) == 5 and client.get(k.generation(5))[:4] != MAGIC
    assert all(0 < ms <= 1000 for ms in expiry_of(client, [k.refs, *shared_keys(client, k), k.generation(5)]))
    assert [g.ok for g in other.generations("kept")] == [True, True, True]


def test_a_plain_store_finishing_a_shared_run_gives_its_chunks_the_expiry_too(client, namespace):
    _, lease, k = shared_run(client, namespace, "mixed")
    lease.release()
    plain = CheckpointStore(client, namespace=namespace, keep=3, fence_margin=0.2)
    lease = plain.acquire("mixed", owner="w", ttl=30)
    lease.finish(keep_for=0.3)
    wait_gone(client, k)


def test_scripts_under_a_retention_not_given_every_shared_chunk_write_nothing(client, namespace):
    store, lease, k = shared_run(client, namespace, "asked")
    chunks = sorted(refs(client, k))
    entries = [f"{g}:0" for g in (2, 3, 4)]
    lease.release()  # its lease without a ttl: every key's expiry stays put unless written
    before = {key: client.pttl(key) for key in run_keys(client, k)}
    events = client.xlen(k.events)
    retain = retain_script(k, token=lease.token, owner="w", retention_ms=60_000, margin_ms=0, maxlen=100,
                           entries=entries, shared=chunks[1:])
    acquire = acquire_script(k, owner="w2", ttl_ms=30_000, maxlen=100, strict=False, dead=[],
                             retention_ms=60_000, entries=entries, shared=chunks[:-1])
    for script in (retain, acquire):
        reply = evaluated(client, script)
        assert isinstance(reply, ReplyError) and str(reply) == f"NEED_SHARED {len(chunks)}", reply
        assert {key: client.pttl(key) for key in run_keys(client, k)} == before  # nothing written
    assert client.xlen(k.events) == events and client.hget(k.lease, "state") == b"released"
    assert client.hget(k.head, "retention_ms") is None
    reply = evaluated(client, retain_script(k, token=lease.token, owner="w", retention_ms=60_000, margin_ms=0,
                                            maxlen=100, entries=entries, shared=chunks))
    assert not isinstance(reply, ReplyError)
    assert all(0 < ms <= 60_000 for ms in expiry_of(client, [k.refs, *map(k.shared, chunks)]))


@pytest.mark.parametrize("op", ["finish", "acquire", "commit"])
def test_a_run_under_a_retention_whose_shared_chunk_counts_name_a_bad_address_is_served(client, namespace, op):
    """acquire.lua, commit.lua and retain.lua (finish) matched the shared chunks passed to them
    under a retention by the last 32 characters of their keys: a field of x:refs that is not a
    32-hex address (changed by hand, a partial restore) never matched, every send answered
    NEED_SHARED and the operation failed untyped after its retries. They match the whole
    address now, as delete.lua and prune.lua do; the odd chunk gets the run's expiry too."""
    store, lease, k = shared_run(client, namespace, "odd")
    client.hset(k.refs, "zz", "1")
    client.set(k.shared("zz"), b"stray")
    if op == "finish":
        lease.finish(keep_for=60)
    elif op == "acquire":
        lease.release()
        store.acquire("odd", owner="w2", ttl=30, retention=60)
    else:
        assert lease.commit(history(440), retention=60) == 5
    assert all(0 < ms <= 60_000 for ms in expiry_of(client, [k.refs, k.shared("zz"), *shared_keys(client, k)]))
    assert store.load("odd").state == history(440 if op == "commit" else 430)


def test_the_async_store_finishes_a_shared_run_without_leaving_its_chunks(client, namespace, durable_server):
    import asyncio

    from redis_ckpt.aio import AsyncCheckpointStore

    async def main() -> None:
        store = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace, keep=2, dedup=True,
                                                    fence_margin=0.2)
        try:
            lease = await store.acquire("aio", owner="w", ttl=30)
            for n in (400, 410, 420):
                await lease.commit(history(n))
            await lease.finish(keep_for=5)
            lease = await store.acquire("aio", owner="w", ttl=30)  # NEED_KEYS, NEED_SHARED: passed
            assert await lease.commit(history(430)) == 4
            await lease.finish(keep_for=0.3)
        finally:
            await store.close()

    asyncio.run(main())
    wait_gone(client, RunKeys(namespace, "aio"))


def test_a_dedup_store_commits_a_run_under_a_retention_in_one_script_call_sending_its_state_once(
        client, namespace):
    """A dedup commit to a run under a retention is refused (RETAINED) and sent again as a
    plain generation. A run under a retention of its own, or a commit with one, goes plain at
    once: one script call, and its state's bytes sent once, not staged as chunks first."""
    store = CheckpointStore(client, namespace=namespace, keep=3, dedup=True)
    state = history(600)  # well over the 64 KiB a shared generation needs
    for run, retention in (("held", 600), ("given", None)):
        lease = store.acquire(run, owner="w", ttl=30, retention=retention)
        for i in range(4):
            client.config_resetstat()
            if retention is None:
                lease.commit({**state, "i": i}, retention=600)
            else:
                lease.commit({**state, "i": i})
            stats = client.info("commandstats")
            calls = {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "multi")}
            if i >= 1:  # the first commit of a run may learn it is under a retention
                assert calls == {"evalsha": 1, "multi": 0}, (run, i, calls)  # no chunk staged, no resend
        k = RunKeys(namespace, run)
        assert not refs(client, k) and client.pttl(k.head) > 0
        assert store.load(run).state == {**state, "i": 3}


def test_a_run_that_expired_and_is_made_again_without_a_retention_is_shared_again(client, namespace):
    """A process remembers a run it found under a retention of its own (its commits go plain
    at once). Once that run has expired, an acquire finds no head: the run made again under
    the same id has no retention, and this process shares its commits again."""
    k = RunKeys(namespace, "again")
    first = CheckpointStore(client, namespace=namespace, keep=3, dedup=True)
    lease = first.acquire("again", owner="w1", ttl=30, retention=0.4)
    lease.commit(history(500))
    lease.release()
    assert client.hget(k.head, "retention_ms") == b"400"
    store = CheckpointStore(client, namespace=namespace, keep=3, dedup=True)
    lease = store.acquire("again", owner="w2", ttl=30)  # learns the run's own retention
    lease.commit(history(510))
    assert client.get(k.generation(2))[:4] != MAGIC  # plain: the run is under a retention
    lease.release()
    wait_gone(client, k, but={k.fence})  # expired: only the fence is left (it outlives the data)
    lease = store.acquire("again", owner="w2", ttl=30)
    assert lease.generation == 0
    lease.commit(history(520))
    assert lease.commit(history(530)) == 2
    assert client.get(k.generation(2))[:4] == MAGIC and refs(client, k)  # shared again
    assert client.pttl(k.head) == -1 and store.load("again").state == history(530)
