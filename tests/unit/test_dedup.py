"""core/dedup.py without a server: content-defined cuts, the manifest and its damage."""

from __future__ import annotations

import os
import random

import pytest

from redis_ckpt.core import dedup
from redis_ckpt.core.codec import encode_state_buffer
from redis_ckpt.core.frame import decode_frame, encode_frame_parts
from redis_ckpt.errors import FrameError


def parts_of(state: object, generation: int = 1):
    return encode_frame_parts(encode_state_buffer(state), run_id="r", generation=generation, token=1, owner="w",
                              created_ms=1_700_000_000_000, schema_version=1)


def addresses(payload: bytes) -> list[str]:
    out, at = [], 0
    for n in dedup.cut(payload):
        out.append(dedup.address(payload[at:at + n]))
        at += n
    return out


@pytest.mark.skipif(dedup.chunker_name() != "fastcdc", reason="the fastcdc extra is not installed")
def test_an_insertion_moves_no_boundary_but_its_own():
    rng = random.Random(3)
    data = rng.randbytes(2 << 20)
    inserted = data[:700_000] + b"new message" * 50 + data[700_000:]
    before, after = addresses(data), addresses(inserted)
    assert len(set(before) - set(after)) <= 2 and len(set(after) - set(before)) <= 3


def test_without_fastcdc_fixed_pieces_survive_an_append(monkeypatch):
    monkeypatch.setattr(dedup, "_fastcdc", None)
    data = os.urandom(300_000)
    before, after = addresses(data), addresses(data + b"appended")
    assert all(n == dedup.FALLBACK_BYTES for n in dedup.cut(data)[:-1])
    assert len(set(after) - set(before)) == 1


def test_a_manifest_round_trips_and_rebuilds_the_frame():
    state = {"blob": os.urandom(300_000), "rows": list(range(1000))}
    parts = parts_of(state, generation=4)
    chunks = dedup.split_parts(parts)
    blob = dedup.encode_manifest("r", 4, parts, chunks)
    m = dedup.read_manifest(blob, run_id="r", generation=4)
    assert m.addresses == tuple(a for a, _ in chunks) and m.size == len(parts)
    frame = dedup.assemble(m, [bytes(c) for _, c in chunks])
    header, _ = decode_frame(bytes(frame), run_id="r", generation=4)
    assert header.generation == 4
    # the addresses stand at byte 9, 32 hex digits each (commit.lua reads them there)
    assert blob[9:9 + 32].decode() == chunks[0][0]


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[:-1], "truncated"), (lambda b: b + b"x", "trailing-bytes"),
    (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:], "checksum"),
])
def test_a_damaged_manifest_is_named(damage, reason):
    parts = parts_of({"blob": os.urandom(100_000)})
    blob = dedup.encode_manifest("r", 1, parts, dedup.split_parts(parts))
    with pytest.raises(FrameError) as info:
        dedup.read_manifest(damage(blob), run_id="r", generation=1)
    assert info.value.reason.value == reason
    with pytest.raises(FrameError) as info:
        dedup.read_manifest(blob, run_id="r", generation=2)
    assert info.value.reason.value == "wrong-generation"


def test_a_chunk_that_does_not_match_its_address_is_named():
    parts = parts_of({"blob": os.urandom(200_000)})
    chunks = dedup.split_parts(parts)
    m = dedup.read_manifest(dedup.encode_manifest("r", 1, parts, chunks), run_id="r", generation=1)
    values = [bytes(c) for _, c in chunks]
    values[1] = values[1][:-1] + bytes([values[1][-1] ^ 0xFF])  # its last byte changed (always)
    with pytest.raises(FrameError) as info:
        dedup.assemble(m, values)
    assert info.value.reason.value == "checksum" and chunks[1][0] in info.value.detail
    values[1] = None
    with pytest.raises(FrameError) as info:
        dedup.assemble(m, values)
    assert info.value.reason.value == "missing"


# --------------------------------------------------------------------------- the commit flow

from scripted import Scripted, core, fields, replies_for  # noqa: E402

from redis_ckpt.core.keys import RunKeys  # noqa: E402
from redis_ckpt.core.ops import Cmd, ReplyError  # noqa: E402

K = RunKeys("ns", "r")


def grown(n: int) -> dict:
    rng = random.Random(1)
    return {"rows": [rng.randbytes(1000) for _ in range(n)]}


def test_a_dedup_commit_stages_only_what_the_run_does_not_hold_in_one_round_trip():
    c = core(dedup=True, keep=2)
    s1, s2 = Scripted(lambda pipe: replies_for(pipe, 1)), Scripted(lambda pipe: replies_for(pipe, 2))
    s1.run(c.commit_flow("r", grown(300), token=4, expected_generation=0, owner="w", commit_id="c-1"))
    s2.run(c.commit_flow("r", grown(301), token=4, expected_generation=1, owner="w", commit_id="c-2"))
    (first,), (second,) = s1.scripts("commit"), s2.scripts("commit")
    assert fields(first)["mode"] == "dedup" and dedup.is_manifest(first.args[1])
    assert int(fields(first)["staged"]) == len(c.manifests[("r", 1)]) > 5
    assert 1 <= int(fields(second)["staged"]) <= 2  # an append: the last chunk or two
    assert len(s2.ops) == 1 and K.refs in second.keys  # one pipe per commit


def test_need_chunks_stages_them_and_need_free_passes_their_keys():
    c = core(dedup=True, keep=1)
    Scripted(lambda pipe: replies_for(pipe, 1)).run(
        c.commit_flow("r", grown(300), token=4, expected_generation=0, owner="w", commit_id="c-1"))
    held = sorted(c.manifests[("r", 1)])  # what this process thinks the run holds
    gone = "ab" * 16
    s = Scripted(lambda pipe: replies_for(pipe, ReplyError(f"NEED_CHUNKS {held[0]}")),
                 lambda pipe: replies_for(pipe, ReplyError(f"NEED_FREE {gone}")),
                 lambda pipe: replies_for(pipe, 2))
    assert s.run(c.commit_flow("r", grown(301), token=4, expected_generation=1, owner="w", commit_id="c-2")) == 2
    first, second, third = s.scripts("commit")
    def moved(script):  # the staged keys, then the keys they become
        return script.keys[6:6 + 2 * int(fields(script)["staged"])]

    assert K.shared(held[0]) not in moved(first) and K.shared(held[0]) in moved(second)  # staged now
    assert K.shared(held[0]) in first.keys  # passed after x:refs: the script checks a reused chunk exists
    assert int(fields(second)["staged"]) == int(fields(first)["staged"]) + 1
    assert [o.args[0] for o in s.ops[1].ops if isinstance(o, Cmd)].count("SET") == int(fields(second)["staged"])
    assert K.shared(gone) in third.keys and K.shared(gone) not in second.keys


def test_larger_payloads_get_larger_chunks_and_a_run_keeps_its_class_near_a_limit():
    mib = 1 << 20
    assert dedup.chunk_class(1 * mib) == 32 << 10
    assert dedup.chunk_class(64 * mib) == 128 << 10
    assert dedup.chunk_class(300 * mib) == 512 << 10
    # a payload growing past 8 MiB keeps the 32 KiB chunks it was cut with up to 16 MiB
    assert dedup.chunk_class(9 * mib, held=32 << 10) == 32 << 10
    assert dedup.chunk_class(17 * mib, held=32 << 10) == 128 << 10
    # and one shrinking below 8 MiB keeps 128 KiB chunks down to 4 MiB
    assert dedup.chunk_class(5 * mib, held=128 << 10) == 128 << 10
    assert dedup.chunk_class(3 * mib, held=128 << 10) == 32 << 10
    parts = parts_of({"blob": os.urandom(300_000)})
    chunks = dedup.split_parts(parts, 128 << 10)
    m = dedup.read_manifest(dedup.encode_manifest("r", 1, parts, chunks, 128 << 10), run_id="r", generation=1)
    assert m.avg == 128 << 10 and len(chunks) <= 4


def edited(rng: random.Random, data: bytes) -> bytes:
    """``data`` after a few edits of the kinds a growing state sees: appends, a changed count
    near the start, an insertion or a removal in the middle, sometimes a whole new tail."""
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        kind = rng.choice(("append", "append", "insert", "replace", "remove", "tail"))
        if kind == "append":
            data += rng.randbytes(rng.randint(1, 9000))
            data = data[:-rng.randint(0, 300)] + rng.randbytes(rng.randint(0, 300))  # a changed end, as a count
        elif kind == "insert":
            data = data[:at] + rng.randbytes(rng.randint(1, 5000)) + data[at:]
        elif kind == "replace":
            data = data[:at] + rng.randbytes(3) + data[at + 3:]
        elif kind == "remove":
            data = data[:at] + data[at + rng.randint(1, 40_000):]
        else:
            data = data[:at] + rng.randbytes(rng.randint(0, 200_000))
    return data


@pytest.mark.parametrize("chunker", ["fastcdc", "fixed"])
def test_a_cut_from_the_previous_chunks_is_the_whole_payloads_cut(chunker, monkeypatch):
    if chunker == "fixed":
        monkeypatch.setattr(dedup, "_fastcdc", None)
    elif dedup.chunker_name() != "fastcdc":
        pytest.skip("the fastcdc extra is not installed")
    rng = random.Random(16)
    for avg in (dedup.AVG_CHUNK, 128 << 10):
        data = rng.randbytes(rng.randint(200_000, 3 << 20))
        previous: list[tuple[str, int]] = []
        for _ in range(25):
            parts = encode_frame_parts(data, run_id="r", generation=1, token=1, owner="w",
                                       created_ms=1_700_000_000_000, schema_version=1)
            whole = [(a, len(c)) for a, c in dedup.split_parts(parts, avg)]
            again = [(a, len(c)) for a, c in dedup.split_parts(parts, avg, previous)]
            assert again == whole
            assert b"".join(bytes(c) for _, c in dedup.split_parts(parts, avg, previous)) == data
            if rng.random() < 0.8 or not previous:  # else an older generation's (one this process loaded)
                previous = whole
            data = edited(rng, data)


def test_after_a_changed_header_and_an_append_only_what_changed_is_cut_again(monkeypatch):
    rng = random.Random(7)
    data = rng.randbytes(2 << 20)
    frame = lambda d: encode_frame_parts(d, run_id="r", generation=1, token=1, owner="w",  # noqa: E731
                                         created_ms=1_700_000_000_000, schema_version=1)
    previous = [(a, len(c)) for a, c in dedup.split_parts(frame(data))]
    grown = b"\x01\x02" + data[2:1_000_000] + rng.randbytes(2000) + data[1_000_000:] + rng.randbytes(2000)
    seen: list[int] = []
    real = dedup.cut
    monkeypatch.setattr(dedup, "cut", lambda p, *a, **k: seen.append(len(real(p, *a, **k))) or real(p, *a, **k))
    again = dedup.split_parts(frame(grown), dedup.AVG_CHUNK, previous)
    fresh = sum(seen)  # chunks cut anew: near the header, the insertion, and the last maximum chunk
    assert fresh <= 3 + 3 + 4 * dedup.MAX_CHUNK // dedup.MIN_CHUNK and fresh < len(again) // 3
    assert len({a for a, _ in again} - {a for a, _ in previous}) <= fresh


def test_a_previous_cut_costs_little_hashing_when_nothing_or_everything_matches(monkeypatch):
    rng = random.Random(9)
    frame = lambda d: encode_frame_parts(d, run_id="r", generation=1, token=1, owner="w",  # noqa: E731
                                         created_ms=1_700_000_000_000, schema_version=1)
    data, other = rng.randbytes(3 << 20), rng.randbytes(3 << 20)
    previous = [(a, len(c)) for a, c in dedup.split_parts(frame(data))]
    hashed: list[int] = []
    real = dedup.address
    monkeypatch.setattr(dedup, "address", lambda c: hashed.append(len(c)) or real(c))
    for payload in (other, b"\x01" + data[1:] + rng.randbytes(3000), data[:1_000_000] + b"x" + data[1_000_000:]):
        hashed.clear()
        dedup.split_parts(frame(payload), dedup.AVG_CHUNK, previous)
        assert max(hashed) <= dedup.MAX_CHUNK  # a chunk or a try, never the rest of the payload
        assert sum(hashed) <= len(payload) + dedup.RESYNC_TRIES * (3 + dedup.NEAR_TRIES) * dedup.MAX_CHUNK // 2
