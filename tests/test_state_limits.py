"""Commit arguments the store refuses, on real servers: a state over max_state_bytes (refused
before it is copied: peak memory measured in a subprocess), metadata that is not a mapping, a
state another thread changes during the commit. Each a typed error, and nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from typing import Any

import pytest

from redis_ckpt import CheckpointStore, StateError, StateTooLargeError, UnsupportedTypeError

pytestmark = pytest.mark.server

MIB = 1024 * 1024

#: run in a fresh interpreter: peak RSS (ru_maxrss) before the state exists, with it, and after
#: a refused commit of it; sizes in bytes
MEASURE = textwrap.dedent("""
    import json, resource, sys
    import redis
    from redis_ckpt import CheckpointStore, StateTooLargeError

    url, namespace, shape, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB

    store = CheckpointStore(redis.Redis.from_url(url), namespace=namespace, max_state_bytes=64 * 1024 * 1024)
    lease = store.acquire("big", owner="w", ttl=60)
    before = peak()
    if shape == "bytes":
        state = b"\\x01" * size
    elif shape == "str":
        state = "x" * size
    elif shape == "dict":
        state = {"blob": b"\\x01" * size, "step": 7, "done": ["fetch", "parse"]}
    elif shape == "chunks":
        state = {"chunks": [b"\\x01" * (1 << 20) for _ in range(size >> 20)]}
    elif shape == "nested":
        state = {"a": {"b": [(1, b"\\x01" * size)]}}
    with_state = peak()
    try:
        lease.commit(state)
        refused = None
    except StateTooLargeError as exc:
        refused = [exc.size, exc.limit]
    print(json.dumps({"before": before, "with_state": with_state, "after": peak(), "refused": refused}))
""")


@pytest.fixture(scope="module")
def server(make_module_server: Any) -> Any:
    """The refusal is client-side: one engine is enough."""
    return make_module_server("valkey", appendonly="yes", appendfsync="always")


@pytest.mark.parametrize("shape", ["bytes", "str", "dict", "chunks", "nested"])
def test_a_refused_commit_peaks_below_1_1x_the_state(server: Any, shape: str) -> None:
    size = 300 * MIB
    out = subprocess.run([sys.executable, "-c", MEASURE, server.url, f"limits-{shape}", shape, str(size)],
                         capture_output=True, text=True, timeout=240, check=True)
    m = json.loads(out.stdout)
    assert m["refused"] is not None and m["refused"][0] > m["refused"][1] == 64 * MIB
    grown = m["after"] - m["before"]  # the state itself and whatever the refused commit allocated
    assert grown <= 1.1 * size, f"peak grew by {grown / MIB:.0f} MiB for a {size / MIB:.0f} MiB state"
    assert server.client().keys(f"limits-{shape}:{{big}}:g:*") == []


def keyspace(client: Any, namespace: str) -> dict[bytes, Any]:
    return {k: client.dump(k) for k in sorted(client.scan_iter(match=f"{namespace}:*"))}


@pytest.mark.parametrize("metadata", [[1, 2], "note", 7, {1, 2}, b"x"])
def test_metadata_that_is_no_mapping_is_a_typed_error_and_writes_nothing(store: CheckpointStore, client: Any,
                                                                          namespace: str, metadata: Any) -> None:
    lease = store.acquire("job", owner="w", ttl=10)
    lease.commit({"i": 1})
    before = keyspace(client, namespace)
    with pytest.raises(UnsupportedTypeError) as caught:
        lease.commit({"i": 2}, metadata=metadata)
    assert caught.value.path == "metadata" and caught.value.run_id == "job"
    assert type(metadata).__name__ in str(caught.value)
    assert keyspace(client, namespace) == before
    assert lease.commit({"i": 2}, metadata={"ok": True}) == 2  # the lease is still good


def test_metadata_over_a_bad_value_names_its_path(store: CheckpointStore) -> None:
    lease = store.acquire("job", owner="w", ttl=10)
    with pytest.raises(UnsupportedTypeError) as caught:
        lease.commit({"i": 1}, metadata={"fine": 1, "bad": object()})
    assert caught.value.path == "metadata['bad']" and caught.value.run_id == "job"


@pytest.mark.parametrize("metadata", [{"blob": b"x" * 5000}, {"notes": ["y" * 100] * 50}, {"k" * 5000: 1}])
def test_metadata_over_max_state_bytes_is_refused_before_anything_is_sent(client: Any, namespace: str,
                                                                          metadata: Any) -> None:
    """Metadata was encoded with no limit: a huge dict was committed whatever max_state_bytes
    said (and every load decoded it). It is held to max_state_bytes too: a typed error, nothing written."""
    store = CheckpointStore(client, namespace=namespace, max_state_bytes=4096)
    lease = store.acquire("job", owner="w", ttl=10)
    lease.commit({"i": 1}, metadata={"fits": "x" * 4000})
    before = keyspace(client, namespace)
    with pytest.raises(StateTooLargeError) as caught:
        lease.commit({"i": 2}, metadata=metadata)
    assert caught.value.limit == 4096 and caught.value.size > 4096 and caught.value.run_id == "job"
    assert "metadata" in str(caught.value)
    assert keyspace(client, namespace) == before


def test_a_state_changed_during_commit_is_refused_or_stored_whole(store: CheckpointStore) -> None:
    """Every commit either raises StateError (nothing written) or stores a generation that loads."""
    state: dict[str, Any] = {"rows": [(i, Decimal(i)) for i in range(3000)], "seen": {}}
    stop = threading.Event()

    def mutate() -> None:
        i = 0
        while not stop.is_set():
            rows = state["rows"]
            rows.append((i, Decimal(1)))
            if len(rows) > 3100:
                del rows[3000:]
            state["seen"][i % 64] = i
            if i % 3 == 0:
                state["seen"].pop((i + 7) % 64, None)
            i += 1

    lease = store.acquire("job", owner="w", ttl=60)
    thread = threading.Thread(target=mutate)
    thread.start()
    committed = refused = 0
    try:
        for _ in range(30):
            try:
                lease.commit(state)
                committed += 1
            except StateError as exc:
                assert exc.run_id == "job" and "changed while it was being encoded" in str(exc)
                refused += 1
    finally:
        stop.set()
        thread.join()
    assert committed + refused == 30
    assert lease.generation == committed
    if committed:
        assert all(g.ok for g in store.generations("job"))
        ck = store.load("job")
        assert ck.generation == committed and not ck.fell_back
