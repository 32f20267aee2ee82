"""Shared chunks under a randomized history (issue 16, safety): commits of growing, edited and
shrinking states by stores with and without dedup and different keep, writers killed after
staging, fenced writers, takeovers by processes that hold nothing or stale knowledge,
rotation, delete and export/import - then every kept generation loads with exactly what was committed, the
refs hash counts exactly the kept manifests, and no chunk is left that none of them lists."""

from __future__ import annotations

import os
import random

import pytest

from redis_ckpt import CheckpointStore, FencedError
from redis_ckpt.core.dedup import is_manifest, read_manifest
from redis_ckpt.core.frame import decode_frame, decode_payload
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.core.ops import Cmd

pytestmark = pytest.mark.server

RUN = "chaos"
SEEDS = [int(os.environ.get("INCREMENTAL_SEED", 0)) or s for s in (11, 23, 37)]


class Model:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.items: list[bytes] = []
        self.committed: dict[int, object] = {}

    def next_state(self) -> dict:
        r = self.rng.random()
        if r < 0.6 or not self.items:  # append (what a history does)
            self.items += [self.rng.randbytes(self.rng.randint(200, 3000)) for _ in range(self.rng.randint(1, 20))]
        elif r < 0.8:  # edit in the middle
            i = self.rng.randrange(len(self.items))
            self.items[i] = self.rng.randbytes(len(self.items[i]))
        elif r < 0.9:  # drop the oldest part
            del self.items[: len(self.items) // 3]
        else:  # something else entirely
            self.items = [self.rng.randbytes(2000) for _ in range(self.rng.randint(30, 120))]
        return {"items": list(self.items), "n": len(self.items)}


def kill_after_staging(store: CheckpointStore, client, lease, state) -> None:
    """What a writer killed between its staging and its script leaves behind."""
    core = store.core
    k = core.keys(RUN)
    parts = core.encode(k.run_id, state, generation=lease.generation + 1, token=lease.token, owner="killed",
                        metadata=None)
    if not core.shares(parts):
        return
    form = core.shared_form(k, lease.generation + 1, parts, os.urandom(8).hex(), token=lease.token,
                            expected=lease.generation)
    pipe = client.pipeline(transaction=True)
    for cmd in form.staging:
        if isinstance(cmd, Cmd) and cmd.args[0] not in ("MULTI", "EXEC"):
            pipe.execute_command(*cmd.args)
    pipe.execute()


def check(client, store: CheckpointStore, model: Model) -> None:
    k = RunKeys(store.namespace, RUN)
    info = store.info(RUN)
    expected: dict[str, int] = {}
    for g in info.kept:
        blob = client.get(k.generation(g))
        if is_manifest(blob):
            for a in set(read_manifest(blob, run_id=RUN, generation=g).addresses):
                expected[a] = expected.get(a, 0) + 1
        header, payload = decode_frame(store.export_frame(RUN, generation=g), run_id=RUN, generation=g)
        assert decode_payload(header, payload) == model.committed[g], g
    assert all(gi.ok for gi in store.generations(RUN))
    refs = {a.decode(): int(n) for a, n in client.hgetall(k.refs).items()}
    assert refs == expected
    chunks = {key.decode() for key in client.scan_iter(f"{k.base}:x:*", count=1000)} - {k.refs}
    assert chunks == {k.shared(a) for a in expected}
    assert store.load(RUN).state == model.committed[info.generation]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_history_keeps_every_generation_and_leaves_no_garbage(client, namespace, seed):
    rng = random.Random(seed)
    model = Model(rng)
    stores = [CheckpointStore(client, namespace=namespace, keep=keep, dedup=dedup)
              for keep, dedup in ((3, True), (2, True), (1, True), (3, False))]
    k = RunKeys(namespace, RUN)
    store = stores[0]
    lease = store.acquire(RUN, owner="w0", ttl=60)
    old_leases = []
    for step in range(150):
        op = rng.random()
        if op < 0.55:
            state = model.next_state()
            g = lease.commit(state)
            model.committed[g] = state
        elif op < 0.65:
            kill_after_staging(store, client, lease, model.next_state())
        elif op < 0.75:  # a takeover: the old lease is fenced from now on
            store.revoke(RUN)
            old_leases.append(lease)
            store = rng.choice(stores)
            lease = store.acquire(RUN, owner=f"w{step}", ttl=60)
        elif op < 0.85 and old_leases:  # a fenced writer's commit changes nothing
            with pytest.raises(FencedError):
                rng.choice(old_leases).commit(model.next_state())
        elif op < 0.87 and model.committed:  # export, delete, import: a whole frame comes back
            g = max(model.committed)
            frame = store.export_frame(RUN)
            store.delete(RUN)
            assert rng.choice(stores).import_frame(frame) == g
            model.committed = {g: model.committed[g]}
            old_leases.append(lease)
            lease = store.acquire(RUN, owner=f"w{step}", ttl=60)
        elif op < 0.9:  # delete, then a new life of the run
            store.delete(RUN)
            model.committed.clear()
            assert not client.exists(k.refs)
            assert not [key for key in client.scan_iter(f"{k.base}:x:*")]
            old_leases.append(lease)
            lease = store.acquire(RUN, owner=f"w{step}", ttl=60)
        else:  # another process loads, then goes on as the writer (it holds what it loaded)
            store.revoke(RUN)
            old_leases.append(lease)
            store = CheckpointStore(client, namespace=namespace, keep=rng.choice((1, 2, 3)), dedup=True)
            lease = store.acquire(RUN, owner=f"w{step}", ttl=60)
            if model.committed:
                assert store.load(RUN).state == model.committed[max(model.committed)]
        if model.committed and step % 10 == 9:
            check(client, store, model)
    state = model.next_state()
    model.committed[lease.commit(state)] = state  # removes the staging of every dead commit
    check(client, store, model)
    assert [key for key in client.scan_iter(f"{k.base}:stage:*")] == []
