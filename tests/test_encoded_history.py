"""A history kept in ``redis_ckpt.EncodedList`` (each item encoded once, when appended):
commits and loads as the plain state would, with its exact types; with ``dedup=True`` a
commit after an append stages only the chunks the append changed; an item is stored as it
was when appended."""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import pytest

from redis_ckpt import CheckpointStore, EncodedList, EncodedMap, UnsupportedTypeError, encoded
from redis_ckpt.core.keys import RunKeys

pytestmark = pytest.mark.server

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "zeta"]


def message(i: int) -> dict:
    rng = random.Random(i)
    return {"i": i, "role": ("user", "assistant")[i % 2], "at": dt.datetime(2026, 12, 7, 0, 0, i % 60),
            "tool_calls": (("search", i),) if i % 7 == 0 else (), "content": " ".join(rng.choices(WORDS, k=60))}


def shared_chunks(client, k: RunKeys) -> set[bytes]:
    return set(client.hkeys(k.refs))


@pytest.mark.parametrize("dedup", [True, False], ids=["dedup", "plain"])
def test_a_kept_history_loads_as_the_plain_state_with_its_types(client, namespace, durable_server, dedup):
    store = CheckpointStore(client, namespace=namespace, keep=3, dedup=dedup)
    kept = EncodedList((message(i) for i in range(500)), root="messages")
    plain = [message(i) for i in range(500)]
    lease = store.acquire("hist", owner="w", ttl=30)
    for step in range(3):
        kept.add(message(500 + step))
        plain.append(message(500 + step))
        lease.commit({"messages": kept.encoded(), "step": step})
    back = store.load("hist").state
    assert back == {"messages": plain, "step": 2}
    assert type(back["messages"]) is list and type(back["messages"][0]["at"]) is dt.datetime
    assert type(back["messages"][7]["tool_calls"]) is tuple
    # the same state as a commit of the plain history
    other = CheckpointStore(client, namespace=namespace, keep=3, dedup=dedup)
    lease2 = other.acquire("hist-plain", owner="w", ttl=30)
    lease2.commit({"messages": plain, "step": 2})
    assert store.load("hist").state == other.load("hist-plain").state


def test_with_dedup_an_append_stages_only_the_chunks_it_changed(client, namespace, durable_server):
    store = CheckpointStore(client, namespace=namespace, keep=3, dedup=True)
    k = RunKeys(namespace, "grow")
    kept = EncodedList(message(i) for i in range(1500))
    lease = store.acquire("grow", owner="w", ttl=30)
    lease.commit({"messages": kept.encoded()})
    held = shared_chunks(client, k)
    assert len(held) >= 8  # the history is cut into many chunks
    for i in range(1500, 1505):
        kept.add(message(i))
        lease.commit({"messages": kept.encoded()})
        now = shared_chunks(client, k)
        assert 0 < len(now - held) <= 3, "an append changes the chunks at the end only"
        held = now
    assert store.load("grow").state == {"messages": [message(i) for i in range(1505)]}


def test_an_item_is_stored_as_it_was_when_appended(client, namespace, durable_server):
    store = CheckpointStore(client, namespace=namespace)
    first = {"content": "as sent"}
    kept = EncodedList([first])
    first["content"] = "changed later"  # not seen: it was encoded when appended
    with pytest.raises(UnsupportedTypeError) as err:
        kept.add({"content": object()}, root="messages")
    assert err.value.path == "messages[1]['content']" and len(kept) == 1  # refused, nothing appended
    results = EncodedMap()
    results.add("s1", {"n": 1})
    lease = store.acquire("frozen", owner="w", ttl=30)
    lease.commit({"messages": kept.encoded(), "results": results.encoded(), "config": encoded({"k": (1, 2)})})
    assert store.load("frozen").state == {"messages": [{"content": "as sent"}], "results": {"s1": {"n": 1}},
                                          "config": {"k": (1, 2)}}


def test_the_async_store_commits_a_kept_history(namespace, durable_server):
    from redis_ckpt.aio import AsyncCheckpointStore

    async def main() -> dict:
        store = await AsyncCheckpointStore.from_url(durable_server.url, namespace=namespace, keep=2, dedup=True)
        try:
            kept = EncodedList(message(i) for i in range(300))
            lease = await store.acquire("aio", owner="w", ttl=30)
            for i in range(300, 303):
                kept.add(message(i))
                await lease.commit({"messages": kept.encoded()})
            return (await store.load("aio")).state
        finally:
            await store.close()

    assert asyncio.run(main()) == {"messages": [message(i) for i in range(303)]}
