"""Shared chunks on Redis Cluster: every chunk of a run and its refs hash live in the run's
hash slot, on the primary owning it; commits share, rotation frees, load and delete work."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from redis_ckpt import CheckpointStore
from redis_ckpt.core.keys import RunKeys

pytestmark = pytest.mark.server


def history(n: int) -> dict:
    return {"messages": [{"i": i, "text": f"message {i} " * 40} for i in range(n)], "n": n}


def test_shared_chunks_stay_in_the_runs_slot(cluster, namespace):
    with CheckpointStore.from_url(cluster.url(), namespace=namespace, keep=2, dedup=True) as store:
        k = RunKeys(namespace, "clustered")
        lease = store.acquire("clustered", owner="w", ttl=30)
        for n in (300, 310, 320, 330):
            lease.commit(history(n))
        assert store.load("clustered").state == history(330)
        slot = key_slot(k.head.encode())
        node = cluster.owner(slot).client()
        chunks = [key for key in node.scan_iter(f"{k.base}:x:*", count=1000)]
        assert len(chunks) > 3 and {key_slot(key) for key in chunks} == {slot}
        refs = {a.decode() for a in node.hkeys(k.refs)}
        assert {key.decode() for key in chunks} - {k.refs} == {k.shared(a) for a in refs}
        assert [g.ok for g in store.generations("clustered")] == [True, True]
        store.delete("clustered")
        assert [key for key in node.scan_iter(f"{k.base}:x:*", count=1000)] == []


def test_a_finished_run_takes_its_shared_chunks_with_it(cluster, namespace):
    with CheckpointStore.from_url(cluster.url(), namespace=namespace, keep=2, dedup=True,
                                  fence_margin=0.2) as store:
        k = RunKeys(namespace, "finished")
        lease = store.acquire("finished", owner="w", ttl=30)
        for n in (300, 310, 320):
            lease.commit(history(n))
        lease.finish(keep_for=5)
        node = cluster.owner(key_slot(k.head.encode())).client()
        chunks = [key for key in node.scan_iter(f"{k.base}:x:*", count=1000)]
        assert len(chunks) > 3 and all(0 < node.pttl(key) <= 5000 for key in chunks)
        lease = store.acquire("finished", owner="w", ttl=30)  # under the run's retention: asked for them
        assert lease.commit(history(330)) == 4  # sent plain; frees what generation 2 alone listed
        assert [g.ok for g in store.generations("finished")] == [True, True]
        lease.finish(keep_for=0.3)
        assert all(0 < node.pttl(key) <= 300 for key in node.scan_iter(f"{k.base}:x:*", count=1000))
