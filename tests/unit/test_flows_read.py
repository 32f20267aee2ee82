"""The load flow driven by scripted replies: fallback past a damaged generation, a head that
moves or rotates a generation away while it is read, migrations, a run whose head is gone,
and the retries of a read."""

from __future__ import annotations

import logging

import pytest
from scripted import Scripted, core

from redis_ckpt.core.frame import frame_checksum
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.core.ops import Cmd, ConnectionLost, Pipe, Script
from redis_ckpt.errors import CorruptCheckpointError, HeadMovingError, SchemaVersionError, StoreUnavailableError

K = RunKeys("ns", "r")


def frame(g: int, state: object, schema: int = 1) -> bytes:
    return core(schema_version=schema).encode("r", state, generation=g, token=1, owner="w", metadata=None)


def head(generation: int, kept: str, checksum: bytes | str = b"", commit_id: bytes = b"cid") -> list:
    """An HMGET of the load's head fields (generation, kept, checksum, commit_id, kept_ms)."""
    return [str(generation).encode(), kept.encode(), checksum or None, commit_id, None]


def snapshot(fields: list, *blobs: object):
    """The answer to a snapshot read of the head with the guessed generations (``blobs``, the
    values of their keys in order): load.lua's reply (the head's fields and the value of the
    generation the head names, when guessed), or the replies of MULTI, HMGET, GET..., EXEC."""

    def answer(pipe: Pipe) -> list:
        first = pipe.ops[0]
        if isinstance(first, Script):
            assert first.name == "load" and len(first.args) == len(blobs)
            named = [v for g, v in zip(first.args, blobs) if str(g).encode() == fields[0]]
            return [[*fields, named[0] if named else None]]
        return [b"OK", b"QUEUED", *[b"QUEUED"] * len(blobs), [fields, *blobs]]

    return answer


def test_a_damaged_newest_generation_falls_back_loudly(caplog):
    good, newest = frame(2, {"i": 2}), bytearray(frame(3, {"i": 3}))
    newest[-1] ^= 0xFF  # the checksum no longer matches
    c = core()
    # a run this process has not seen: the head first, then the head with the generation it names
    s = Scripted(head(3, "1,2,3"), snapshot(head(3, "1,2,3"), bytes(newest), None), good, b"1-1")
    with caplog.at_level(logging.ERROR, logger="redis_ckpt"):
        ck = s.run(c.load_flow("r"))
    assert (ck.generation, ck.head_generation, ck.state) == (2, 3, {"i": 2})
    assert [(x.generation, x.reason) for x in ck.skipped] == [(3, "checksum")]
    xadd = s.ops[-1]
    assert xadd.args[:2] == ("XADD", K.events) and "fallback" in xadd.args
    assert any("generation 2" in r.getMessage() for r in caplog.records)
    assert c.last_generation["r"] == 3


def test_every_generation_bad_is_corruption_naming_each():
    bad = b"not a frame at all"
    s = Scripted(head(2, "1,2"), snapshot(head(2, "1,2"), bad, None), bad)
    with pytest.raises(CorruptCheckpointError) as e:
        s.run(core().load_flow("r"))
    assert set(e.value.reasons) == {1, 2}


def test_a_known_run_is_read_as_one_snapshot_of_head_and_generation():
    g3 = frame(3, {"i": 3})
    c = core()
    c.remember("r", 3, size=len(g3))
    s = Scripted(snapshot(head(3, "1,2,3", frame_checksum(g3).encode()), g3))
    assert s.run(c.load_flow("r")).state == {"i": 3}
    (pipe,) = s.ops  # a small frame: load.lua reads the head and g:3 in one snapshot
    assert isinstance(pipe, Pipe) and len(pipe.ops) == 1 and pipe.ops[0].name == "load"
    assert pipe.ops[0].keys == [K.head, K.generation(3)] and pipe.ops[0].args == [3]


def test_a_known_large_frame_is_read_by_multi_exec_not_through_lua():
    g3 = frame(3, {"blob": b"x" * 40_000})
    c = core()
    c.remember("r", 3, size=len(g3))
    s = Scripted(snapshot(head(3, "1,2,3", frame_checksum(g3).encode()), g3))
    assert s.run(c.load_flow("r")).state == {"blob": b"x" * 40_000}
    (pipe,) = s.ops
    assert isinstance(pipe, Pipe) and [o.args[0] for o in pipe.ops] == ["MULTI", "HMGET", "GET", "EXEC"]
    assert pipe.ops[2].args == ("GET", K.generation(3))
    assert c.last_size["r"] == len(g3)


def test_a_head_that_moved_is_read_again_with_the_generation_it_names():
    g5 = frame(5, {"i": 5})
    c = core()
    c.remember("r", 3)
    s = Scripted(snapshot(head(5, "3,4,5"), None),  # the guess (3) is behind: the head names 5
                 snapshot(head(5, "3,4,5"), g5, None))
    assert s.run(c.load_flow("r")).generation == 5
    assert s.ops[1].ops[0].keys == [K.head, K.generation(5), K.generation(6)]


def test_a_generation_rotated_away_while_read_starts_the_read_again():
    g4 = frame(4, {"i": 4})
    c = core(keep=1)
    c.remember("r", 3)
    s = Scripted(snapshot(head(3, "3", commit_id=b"c3"), None), None,  # g:3 is gone by the time it is read
                 [b"generation", b"4", b"commit_id", b"c4"],  # HGETALL: the head moved on
                 snapshot(head(4, "4", commit_id=b"c4"), None, g4))
    ck = s.run(c.load_flow("r"))
    assert (ck.generation, ck.skipped) == (4, ())
    assert s.ops[2].args == ("HGETALL", K.head)


def test_a_head_still_moving_at_the_deadline_is_head_moving_not_corruption():
    c = core()
    c.remember("r", 3)
    s = Scripted(snapshot(head(5, "5"), None), snapshot(head(7, "7"), None, None), deadline_in=-1.0)
    with pytest.raises(HeadMovingError):
        s.run(c.load_flow("r"))


def test_an_older_schema_is_migrated_and_a_gap_refused():
    old = frame(1, {"v": 1}, schema=1)
    c = core(schema_version=3)
    c.register_migration(1, lambda s: {**s, "v2": True})
    with pytest.raises(SchemaVersionError):
        Scripted(head(1, "1"), snapshot(head(1, "1"), old, None)).run(c.load_flow("r"))  # none from 2 to 3
    c.register_migration(2, lambda s: {**s, "v3": True})
    ck = Scripted(head(1, "1"), snapshot(head(1, "1"), old, None)).run(c.load_flow("r"))
    assert ck.state == {"v": 1, "v2": True, "v3": True} and ck.stored_schema_version == 1
    newer = frame(1, {"v": 9}, schema=4)
    with pytest.raises(SchemaVersionError):
        Scripted(snapshot(head(1, "1"), newer)).run(c.load_flow("r"))  # known now: one snapshot


def test_a_run_never_committed_loads_none():
    s = Scripted([None] * 5, [0, {}, [], -2])  # no head; no fence
    assert s.run(core().load_flow("r")) is None
    assert [o.args[0] for o in s.ops[1].ops] == ["EXISTS", "XINFO", "XREVRANGE", "PTTL"]


def test_a_headless_run_whose_events_show_a_commit_is_corruption():
    page = [[b"2-0", [b"kind", b"commit", b"generation", b"1"]], [b"1-0", [b"kind", b"acquire", b"token", b"1"]]]
    s = Scripted([None] * 5, [1, [b"length", 2, b"entries-added", 2], page, -1])
    with pytest.raises(CorruptCheckpointError, match="head is missing"):
        s.run(core().load_flow("r"))


def test_a_headless_run_under_a_retention_expired():
    page = [[b"2-0", [b"kind", b"commit", b"generation", b"1"]]]  # its keys expire one by one
    s = Scripted([None] * 5, [1, [b"length", 1, b"entries-added", 1], page, 86_000_000])
    assert s.run(core().load_flow("r")) is None


def test_a_headless_run_whose_history_was_trimmed_asks_the_keys():
    page = [[b"9-0", [b"kind", b"acquire", b"token", b"40"]]]
    s = Scripted([None] * 5, [1, [b"length", 1, b"entries-added", 90], page, -1],
                 [[b"17", []]], [[0, [b"ns:{r}:g:3"]]])
    with pytest.raises(CorruptCheckpointError):
        s.run(core().load_flow("r"))
    assert [op.ops[0].args[:4] for op in s.ops[2:]] == [("SCAN", 0, "MATCH", "ns:{r}:g:*"),
                                                         ("SCAN", b"17", "MATCH", "ns:{r}:g:*")]


def test_a_lost_connection_during_a_load_is_retried_then_unavailable_without_outcome():
    g1 = frame(1, {"i": 1})
    s = Scripted(ConnectionLost("reset"), head(1, "1"), snapshot(head(1, "1"), g1, None))
    assert s.run(core().load_flow("r")).state == {"i": 1} and len(s.sleeps) == 1
    down = Scripted(ConnectionLost("timed out", timed_out=True, kind="TimeoutError"), deadline_in=-1.0)
    with pytest.raises(StoreUnavailableError) as e:
        down.run(core().load_flow("r"))
    assert e.value.outcome_unknown is False and "TimeoutError: timed out" in str(e.value)


def test_export_skips_a_damaged_generation_and_returns_the_newest_good_frame():
    good = frame(1, {"i": 1})
    s = Scripted([b"generation", b"2", b"kept", b"1,2"], b"junk", good, b"1-0")
    assert s.run(core().export_flow("r")) == good
    assert [op.args for op in s.ops[1:3]] == [("GET", K.generation(2)), ("GET", K.generation(1))]
    fallback = s.ops[3].args  # said loudly, as a load does: an audit event naming the export
    assert fallback[:2] == ("XADD", K.events) and fallback[6:14] == ("kind", "fallback", "loaded", 1, "skipped",
                                                                     "g2: bad-magic", "op", "export")
    assert all(isinstance(op, Cmd) for op in s.ops)
