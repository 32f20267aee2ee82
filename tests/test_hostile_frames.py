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
from redis_ckpt.core.codec import encode_state
from redis_ckpt.errors import FrameDamage
from redis_ckpt.core.frame import frame_checksum
from redis_ckpt.core.keys import RunKeys

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


def plant(store: CheckpointStore, client: Any, generation: int, frame: bytes) -> None:
    """Replace a committed generation's frame (and the checksum its head records, if it is the head)."""
    k = RunKeys(store.namespace, RUN)
    client.set(k.generation(generation), frame)
    if int(client.hget(k.head, "generation")) == generation:
        client.hset(k.head, "checksum", frame_checksum(frame))


def run_keys(client: Any, namespace: str, run: str) -> list[bytes]:
    """Every key of the run (the test namespaces and runs hold no glob characters)."""
    return client.keys(f"{RunKeys(namespace, run).base}:*")


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


def zstd_bomb(run: str, generation: int, content_size: int = 64 * 1024 * 1024) -> bytes:
    """A valid state (``bytes(content_size)``) compressed as far as zstd goes (~32,000:1), unpadded."""
    payload = encode_state(bytes(content_size))
    compressed = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(payload)
    return forge(run, generation, compressed, compression=1)


def nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


HOSTILE_PAYLOADS = {
    "unknown-ext-code": msgpack.packb({"x": msgpack.ExtType(99, b"boo")}),
    "nested-100k-deep": nested(100_000),
    "nested-one-past-max-depth": nested(129),
    "not-msgpack": b"\xc1\xc1",
    "two-values": encode_state(1) + encode_state(2),
    "bad-datetime-fields": msgpack.packb(msgpack.ExtType(5, msgpack.packb([2024, 13, 1, 0, 0, 0, 0, 0, None]))),
}


@pytest.mark.parametrize("payload", HOSTILE_PAYLOADS.values(), ids=HOSTILE_PAYLOADS.keys())
def test_import_refuses_a_payload_that_does_not_decode_and_writes_nothing(store: CheckpointStore, client: Any,
                                                                          payload: bytes) -> None:
    with pytest.raises(FrameError) as caught:
        store.import_frame(forge("imported", 1, payload))
    assert caught.value.reason is FrameDamage.UNDECODABLE and caught.value.run_id == "imported"
    assert run_keys(client, store.namespace, "imported") == []


def test_import_refuses_a_zstd_bomb_and_writes_nothing(store: CheckpointStore, client: Any) -> None:
    bomb = zstd_bomb("imported", 1)
    assert len(bomb) < 8 * 1024  # 64 MiB of state in a few KiB, within max_state_bytes (512 MiB)
    with pytest.raises(FrameError, match="more than 1000 times") as caught:
        store.import_frame(bomb)
    assert caught.value.reason is FrameDamage.UNDECODABLE
    assert run_keys(client, store.namespace, "imported") == []


def test_import_refuses_a_payload_over_max_state_bytes(client: Any, namespace: str) -> None:
    small = CheckpointStore(client, namespace=namespace, max_state_bytes=1024)
    with pytest.raises(FrameError, match="exceeds the limit of 1024") as caught:
        small.import_frame(forge("imported", 1, encode_state(b"x" * 2000)))
    assert caught.value.reason is FrameDamage.UNDECODABLE
    assert run_keys(client, namespace, "imported") == []


def test_import_takes_what_commit_writes_at_the_edges(client: Any, namespace: str) -> None:
    """The deepest state commit accepts, and zeros compressed past the ratio (padded), import and load."""
    deep: Any = [1]
    for _ in range(127):
        deep = [deep]
    source = CheckpointStore(client, namespace=namespace, compression="zstd")
    with source.acquire("deep", owner="w", ttl=10) as lease:
        lease.commit(deep)
    with source.acquire("zeros", owner="w", ttl=10) as lease:
        lease.commit(bytes(32 * 1024 * 1024))
    frames = {run: source.export_frame(run) for run in ("deep", "zeros")}
    assert len(frames["zeros"]) < 64 * 1024
    target = CheckpointStore(client, namespace=namespace + "-b")
    try:
        for run, frame in frames.items():
            assert target.import_frame(frame) == 1
        assert target.load("deep").state == deep
        assert target.load("zeros").state == bytes(32 * 1024 * 1024)
    finally:
        keys = client.keys(f"{namespace}-b:*")
        if keys:
            client.unlink(*keys)


def test_load_skips_a_planted_zstd_bomb_without_allocating_its_content(store: CheckpointStore, client: Any) -> None:
    two_generations(store)
    plant(store, client, 2, zstd_bomb(RUN, 2))
    tracemalloc.start()
    try:
        ck = store.load(RUN)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ck.generation == 1 and ck.state == {"i": 1}
    assert [(s.generation, s.reason) for s in ck.skipped] == [(2, "undecodable")]
    assert peak < 4 * 1024 * 1024  # the bomb claims 64 MiB


def test_load_names_nesting_past_msgpacks_limit(store: CheckpointStore, client: Any) -> None:
    two_generations(store)
    plant(store, client, 2, forge(RUN, 2, nested(100_000)))
    ck = store.load(RUN)
    assert ck.generation == 1
    assert ck.skipped[0].reason == "undecodable" and "nested more than 1024 levels" in ck.skipped[0].detail
