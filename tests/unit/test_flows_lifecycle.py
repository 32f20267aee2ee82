"""Lifecycle flows driven by scripted replies: a named generation (snapshot, rotated away
while read, damaged: no fallback), fork (target checked first, the copy's frame), finish and
prune answers."""

from __future__ import annotations

import pytest
from scripted import Scripted, core, replies_for

from redis_ckpt.core.contract import CommitFields
from redis_ckpt.core.frame import decode_frame, frame_checksum
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.core.ops import Cmd, Pipe, ReplyError
from redis_ckpt.errors import ConflictError, FencedError, FrameError, NotFoundError

K = RunKeys("ns", "r")


def frame(g: int, state: object, run: str = "r") -> bytes:
    return core().encode(run, state, generation=g, token=1, owner="w", metadata={"m": g})


def head(generation: int, kept: str, commit_id: bytes = b"cid") -> list:
    return [str(generation).encode(), kept.encode(), None, commit_id, None]


def snapshot(fields: list, blob: object) -> list:
    return [b"OK", b"QUEUED", b"QUEUED", [fields, blob]]


def test_a_named_generation_is_one_snapshot_of_head_and_generation():
    g2 = frame(2, {"i": 2})
    s = Scripted(snapshot(head(3, "1,2,3"), g2))
    ck = s.run(core().load_flow("r", 2))
    assert (ck.generation, ck.head_generation, ck.state, ck.skipped) == (2, 3, {"i": 2}, ())
    (pipe,) = s.ops
    assert [o.args[:2] for o in pipe.ops][1:3] == [("HMGET", K.head), ("GET", K.generation(2))]


def test_a_damaged_named_generation_is_its_reason():
    s = Scripted(snapshot(head(3, "1,2,3"), b"junk"))
    with pytest.raises(FrameError) as e:
        s.run(core().load_flow("r", 2))
    assert e.value.reason.value == "bad-magic" and e.value.generation == 2


def test_a_named_generation_rotated_away_while_read_is_not_kept_any_more():
    s = Scripted(snapshot(head(3, "1,2,3", b"c3"), None), b"c4",  # gone; the head moved
                 snapshot(head(4, "2,3,4", b"c4"), None))
    with pytest.raises(NotFoundError, match=r"kept: 4, 3, 2"):
        s.run(core().load_flow("r", 1))


def test_fork_checks_the_target_first_then_copies_the_frame_under_the_new_run():
    source = frame(2, {"i": 2})
    c = core()
    s = Scripted(b"4")  # HGET target head generation: taken
    with pytest.raises(ConflictError, match="already has a head at generation 4"):
        s.run(c.fork_flow("r", "new", by="ops"))
    s = Scripted(None, [b"generation", b"2", b"kept", b"1,2"], source,  # target free; export
                 [],  # import: HGETALL of the target's head
                 lambda pipe: replies_for(pipe, [1, 3]),  # commit.lua in import mode applied, fence 3
                 b"5-0")  # the source's "forked" event
    assert s.run(c.fork_flow("r", "new", by="ops")) == 1
    (script,) = s.scripts("commit")
    fields = dict(zip(CommitFields._fields, script.args[0].split("\n")))
    assert fields["mode"] == "import" and fields["by"] == "ops" and fields["generation"] == "1"
    header, _ = decode_frame(script.args[1])
    assert (header.run_id, header.generation, header.token, header.owner) == ("new", 1, 0, "ops")
    assert header.metadata == {"m": 2, "forked_from": {"run": "r", "generation": 2, "checksum": frame_checksum(source)}}
    xadd = s.ops[-1].args
    assert xadd[:2] == ("XADD", K.events) and ("to", "new") == xadd[8:10]


def test_finish_names_a_newer_holder_and_resends_with_every_kept_generation():
    c = core()
    s = Scripted([b"1,2", [b"a" * 32, b"2"]], lambda pipe: replies_for(pipe, ReplyError("NEED_KEYS 3:0")),
                 lambda pipe: replies_for(pipe, ReplyError("NEED_SHARED 2")), [[b"a" * 32, b"1", b"b" * 32, b"1"]],
                 lambda pipe: replies_for(pipe, 1_700_000_000_000))
    assert s.run(c.finish_flow("r", token=4, owner="w", keep_for_ms=1000)) == 1_700_000_000_000
    assert s.ops[0].ops == [Cmd("HGET", K.head, "kept"), Cmd("HGETALL", K.refs)]  # one round trip
    first, _, last = s.scripts("retain")
    assert first.keys[5:] == [K.generation(1), K.generation(2), K.refs, K.shared("a" * 32)]
    assert last.args[5:] == [3, "1:0", "2:0", "3:0"]  # a commit rotated and shared meanwhile: passed
    assert last.keys[8:] == [K.refs, K.shared("a" * 32), K.shared("b" * 32)]
    s = Scripted([b"", []], lambda pipe: replies_for(pipe, ReplyError("FENCED 4 5")))
    with pytest.raises(FencedError) as e:
        s.run(c.finish_flow("r", token=4, owner="w", keep_for_ms=1000))
    assert (e.value.token, e.value.fence) == (4, 5)


def test_prune_skips_active_and_empty_runs():
    c = core()
    no_stream = [1, ReplyError("ERR no such key"), [], -1]  # a headless run: was it committed? (no)
    s = Scripted([0, [b"ns:{a}:fence", b"ns:{b}:fence", b"ns:{c}:fence"]],
                 [[], [], []], no_stream, lambda pipe: replies_for(pipe, ReplyError("ACTIVE 10")),
                 [[], [], []], no_stream, lambda pipe: replies_for(pipe, ReplyError("EMPTY")),
                 [[b"kept", b"1"], [], []], lambda pipe: replies_for(pipe, [b"4", 1, b"90000"]))
    (pruned,) = s.run(c.prune_flow(idle_ms=60_000, by="ops"))
    assert (pruned.run_id, pruned.generations, pruned.fence, pruned.idle_ms, pruned.pruned) == ("c", 1, 4, 90000, True)
    assert isinstance(s.ops[-1], Pipe)
