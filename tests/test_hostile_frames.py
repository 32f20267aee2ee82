"""Frames the store did not write, on real servers: one planted in a run's keys is a damaged
generation that load skips (falling back), and import refuses one before writing anything."""

from __future__ import annotations

import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
import xxhash
import zstandard

from redis_ckpt import CheckpointStore, FrameError
from redis_ckpt._codec import encode_state
from redis_ckpt._errors import FrameDamage
from redis_ckpt._frame import frame_checksum
from redis_ckpt._keys import RunKeys

pytestmark = pytest.mark.server

RUN = "job"


def forge(run: str, generation: int, payload: bytes, *, compression: int = 0, **header: object) -> bytes:
    """A frame built by hand from the documented layout (correct checksum), header fields overridable."""
    fields = {"run": run, "gen": generation, "token": 1, "owner": "forger", "created_ms": 1_700_000_000_000,
              "meta": encode_state({})}
    fields.update(header)
    raw = msgpack.packb(fields, use_bin_type=True)
    body = struct.pack(">4sBBBBII", b"RCKP", 1, 1, compression, 0, 1, len(raw)) + raw + struct.pack(">Q", len(payload))
    body += payload
    return body + xxhash.xxh3_128_digest(body)


@pytest.fixture
def store(client: Any, namespace: str) -> CheckpointStore:
    return CheckpointStore(client, namespace=namespace, keep=3)


def plant(store: CheckpointStore, client: Any, generation: int, frame: bytes) -> None:
    """Replace a committed generation's frame (and the checksum its head records, if it is the head)."""
    k = RunKeys(store.namespace, RUN)
    client.set(k.generation(generation), frame)
    if int(client.hget(k.head, "generation")) == generation:
        client.hset(k.head, "checksum", frame_checksum(frame))


def two_generations(store: CheckpointStore) -> None:
    with store.acquire(RUN, owner="w", ttl=10) as lease:
        lease.commit({"i": 1})
        lease.commit({"i": 2})


@pytest.mark.parametrize("header", [
    {"created_ms": 10**17},          # year ~3.2 million
    {"created_ms": -(10**15)},       # before year 1
    {"token": 2**64 - 1},
], ids=["created-far-future", "created-before-year-1", "token-past-int64"])
def test_load_skips_a_generation_whose_header_no_python_object_holds(store: CheckpointStore, client: Any,
                                                                      header: dict) -> None:
    two_generations(store)
    plant(store, client, 2, forge(RUN, 2, encode_state({"i": 99}), **header))

    ck = store.load(RUN)
    assert ck.generation == 1 and ck.state == {"i": 1} and ck.fell_back
    assert [(s.generation, s.reason) for s in ck.skipped] == [(2, "bad-header")]
    assert next(iter(header)) in ck.skipped[0].detail
    g2 = store.generations(RUN)[0]
    assert (g2.generation, g2.ok, g2.reason) == (2, False, "bad-header")
    with pytest.raises(FrameError) as caught:
        store.import_frame(forge("other", 1, encode_state({}), **header))
    assert caught.value.reason is FrameDamage.BAD_HEADER
    assert store.load("other") is None and not store.info("other").exists
