"""The commit flow driven by scripted replies: what it sends (inline, staged, chunked) and how
it reads every answer of commit.lua - NEED_KEYS, NEED_STAGE, STAGE_MISSING, a resend after a
lost connection, FENCED, CONFLICT, OUTCOME_UNKNOWN - and the confirmations after it."""

from __future__ import annotations

from functools import partial

import pytest
from scripted import Scripted, core, fields, replies_for

from redis_ckpt.core.chunks import is_manifest
from redis_ckpt.core.config import DriftWatch
from redis_ckpt.core.flows.commit import INLINE_BYTES
from redis_ckpt.core.ops import Cmd, ConnectionLost, Pipe, ReplyError, Script
from redis_ckpt.core.frame import decode_frame
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.errors import (
    ConflictError,
    DurabilityError,
    FencedError,
    OutcomeUnknownError,
    ServerError,
    StoreUnavailableError,
)

K = RunKeys("ns", "r")
STAGED = INLINE_BYTES + 24_000  # a frame past the inline limit: staged whole


def commit(c, state, *, token=4, expected=0, **kw):
    return c.commit_flow("r", state, token=token, expected_generation=expected, owner="w", **kw)


def applied(generation):
    """commit.lua applied: its pipe answered in full."""
    return lambda pipe: replies_for(pipe, generation)


def test_a_small_state_goes_inline_in_one_round_trip():
    c = core()
    s = Scripted(applied(1))
    assert s.run(commit(c, {"step": 1}, commit_id="c-1")) == 1
    (pipe,) = s.ops
    assert [type(o).__name__ for o in pipe.ops] == ["Script", "Cmd"] and pipe.route == K.head
    script = pipe.ops[0]
    assert script.keys == [K.fence, K.head, K.events, K.lease, K.staging, K.generation(1), K.refs]
    f = fields(script)
    assert (f["mode"], f["token"], f["expected"], f["commit_id"], f["generation"]) == ("commit", "4", "0", "c-1", "1")
    assert f["staged"] == f["chunks"] == f["resend"] == f["drops"] == "0" and f["strict"] == "1"
    header, _ = decode_frame(script.args[1], run_id="r", generation=1)
    assert (header.token, header.owner) == (4, "w")
    assert pipe.ops[1].args == ("WAITAOF", 1, 0, 5000)
    assert c.last_generation["r"] == 1


def test_a_mid_sized_state_is_staged_whole_then_renamed_by_the_script():
    c = core()
    s = Scripted(applied(1))
    s.run(commit(c, {"blob": b"x" * STAGED}, commit_id="c-1"))
    names = [o.args[0] if isinstance(o, Cmd) else o.name for o in s.ops[0].ops]
    assert names == ["HSET", "PEXPIRE", "SET", "commit", "WAITAOF"]
    hset, pexpire, stage = s.ops[0].ops[:3]
    assert hset.args[1:3] == (K.staging, "c-1") and hset.args[3].startswith("4:0:1:")
    assert stage.args[1] == K.stage("c-1", 0) and stage.args[3:] == ("PX", c.config.stage_ttl_ms)
    script = s.scripts("commit")[0]
    assert script.args[1] == b"" and script.keys[6:] == [K.stage("c-1", 0), K.generation(1), K.refs]
    assert fields(script)["staged"] == "1"


def test_a_large_state_is_staged_as_chunks_in_one_transaction():
    c = core(chunk_bytes=4096)
    s = Scripted(applied(1))
    s.run(commit(c, {"blob": bytes(range(256)) * 64}, commit_id="c-1"))
    ops = s.ops[0].ops
    names = [o.args[0] if isinstance(o, Cmd) else o.name for o in ops]
    n = names.count("SET")
    assert n >= 4 and names == ["MULTI", "HSET", "PEXPIRE", *["SET"] * n, "EXEC", "commit", "WAITAOF"]
    script = s.scripts("commit")[0]
    f = fields(script)
    assert f["chunks"] == f["staged"] == str(n)
    assert script.keys[6:] == [*(K.stage("c-1", i) for i in range(n)), *(K.chunk(1, i) for i in range(n)), K.refs]
    assert is_manifest(script.args[1])  # g:<n> gets the manifest, the chunks the frame
    assert c.chunks_of[("r", 1)] == n


def test_need_keys_resends_the_script_alone_with_the_keys_it_asked_for():
    c = core(keep=2, chunk_bytes=4096)
    c.remember("r", 2, chunks=0)
    s = Scripted(
        lambda pipe: replies_for(pipe, ReplyError("NEED_KEYS 1:3 2:0")),
        applied(3),
    )
    assert s.run(commit(c, {"blob": b"y" * 20_000}, expected=2, commit_id="c-3")) == 3
    first, second = s.ops
    assert [o.args[0] for o in first.ops[:1]] == ["MULTI"]  # staged with the first send only
    assert isinstance(second.ops[0], Script) and len(second.ops) == 2
    assert s.scripts("commit")[0].args[2:] == ["1:0"]  # the guess: keep=2 drops generation 1
    script = second.ops[0]
    assert script.args[2:] == ["1:0", "1:3", "2:0"] and fields(script)["drops"] == "3"
    assert script.keys[-7:] == [K.generation(1), K.generation(1), K.chunk(1, 0), K.chunk(1, 1), K.chunk(1, 2),
                                K.generation(2), K.refs]


def test_stage_missing_stages_again_and_need_stage_passes_the_dead_commits_keys():
    c = core()
    s = Scripted(
        lambda pipe: replies_for(pipe, ReplyError("STAGE_MISSING 0")),
        lambda pipe: replies_for(pipe, ReplyError("NEED_STAGE dead:2")),
        applied(1),
    )
    assert s.run(commit(c, {"blob": b"z" * STAGED}, commit_id="c-1")) == 1
    first, second, third = s.ops
    assert [o.args[0] for o in second.ops[:3]] == ["HSET", "PEXPIRE", "SET"]  # staged again
    assert isinstance(third.ops[0], Script)  # the staging stays in place for this send
    script = third.ops[0]
    assert script.args[-1] == "dead:2" and script.keys[-3:] == [K.stage("dead", 0), K.stage("dead", 1), K.refs]


def test_after_three_need_stage_answers_the_script_is_sent_not_strict():
    c = core()
    s = Scripted(*[lambda pipe, i=i: replies_for(pipe, ReplyError(f"NEED_STAGE d{i}:1")) for i in range(3)],
                 applied(1))
    s.run(commit(c, {"n": 1}))
    assert [fields(x)["strict"] for x in s.scripts("commit")] == ["1", "1", "1", "0"]
    assert s.scripts("commit")[-1].args[2:] == ["d0:1", "d1:1", "d2:1"]


def test_a_lost_connection_resends_the_same_commit_id_as_a_resend():
    c = core()
    s = Scripted(ConnectionLost("Connection reset by peer"), applied([1, b"retry"]))
    assert s.run(commit(c, {"blob": b"x" * STAGED}, commit_id="c-1")) == 1
    first, second = s.scripts("commit")
    assert fields(first)["resend"] == "0" and fields(second)["resend"] == "1"
    assert fields(first)["commit_id"] == fields(second)["commit_id"] == "c-1"
    assert isinstance(s.ops[1].ops[0], Script)  # a resend sends the script first, alone
    assert len(s.sleeps) == 1


def test_a_resend_the_server_cannot_vouch_for_is_outcome_unknown():
    c = core()
    s = Scripted(ConnectionLost("timed out"),
                 lambda pipe: replies_for(pipe, ReplyError("OUTCOME_UNKNOWN FENCED 4 6 0 3")))
    with pytest.raises(OutcomeUnknownError) as e:
        s.run(commit(c, {"n": 1}))
    err = e.value
    assert err.outcome_unknown and (err.refused, err.token, err.fence, err.expected, err.actual) == \
        ("FENCED", 4, 6, 0, 3)


def test_fenced_is_definite_and_says_who_raised_the_fence():
    c = core()
    events = [[b"9-0", [b"kind", b"revoke", b"by", b"ops-team", b"fence", b"6", b"ms", b"9"]]]
    s = Scripted(lambda pipe: replies_for(pipe, ReplyError("FENCED 4 6")), events)
    with pytest.raises(FencedError) as e:
        s.run(commit(c, {"n": 1}))
    assert (e.value.token, e.value.fence, e.value.cause, e.value.by) == (4, 6, "revoke", "ops-team")
    assert not getattr(e.value, "outcome_unknown", False)
    assert s.ops[1].args[:2] == ("XREVRANGE", K.events)


def test_conflict_names_expected_and_actual():
    s = Scripted(lambda pipe: replies_for(pipe, ReplyError("CONFLICT 0 2")))
    with pytest.raises(ConflictError) as e:
        s.run(commit(core(), {"n": 1}))
    assert (e.value.expected, e.value.actual) == (0, 2)


def test_an_unexpected_error_reply_is_a_server_error_whose_outcome_is_unknown():
    s = Scripted(lambda pipe: replies_for(pipe, ReplyError("NOPERM this user has no permissions", "NoPermissionError")))
    with pytest.raises(ServerError) as e:
        s.run(commit(core(), {"n": 1}))
    assert e.value.outcome_unknown and "NoPermissionError: NOPERM" in str(e.value)


def test_at_the_deadline_a_commit_is_unavailable_with_its_outcome_unknown():
    s = Scripted(ConnectionLost("Connection refused"), deadline_in=-1.0)
    with pytest.raises(StoreUnavailableError) as e:
        s.run(commit(core(), {"n": 1}))
    assert e.value.outcome_unknown and "after 1 attempt(s)" in str(e.value) and "ConnectionError" in str(e.value)


def test_fewer_confirmations_than_asked_is_a_durability_error_carrying_the_generation():
    c = core()
    s = Scripted(lambda pipe: replies_for(pipe, 1, lambda cmd: [0, 0] if cmd.args[0] == "WAITAOF" else None))
    with pytest.raises(DurabilityError) as e:
        s.run(commit(c, {"n": 1}))
    assert e.value.generation == 1 and e.value.local_got == 0


def test_drifted_settings_ride_in_the_commit_and_refuse_it():
    c = core()
    c.watch_config(DriftWatch(("appendfsync",), partial(lambda cfg, engine: [f"appendfsync is {cfg['appendfsync']}"]
                                                        if cfg.get("appendfsync") != "always" else [], engine="valkey")))
    config_reply = [b"appendfsync", b"no"]
    s = Scripted(lambda pipe: replies_for(pipe, 1, lambda cmd: config_reply if cmd.args[0] == "CONFIG" else None))
    with pytest.raises(DurabilityError) as e:
        s.run(commit(c, {"n": 1}))
    assert s.ops[0].ops[-1].args == ("CONFIG", "GET", "appendfsync")
    assert "appendfsync is no" in str(e.value.server_error)
    ok = Scripted(lambda pipe: replies_for(pipe, 2, lambda cmd: [b"appendfsync", b"always"]
                                          if cmd.args[0] == "CONFIG" else None))
    assert ok.run(commit(c, {"n": 2}, expected=1)) == 2


def test_the_in_memory_store_sends_no_confirmation():
    c = core(confirm=False)
    s = Scripted([1])
    assert s.run(commit(c, {"n": 1})) == 1
    assert len(s.ops[0].ops) == 1 and isinstance(s.ops[0], Pipe)


def test_import_runs_the_commit_script_in_import_mode():
    writer = core()
    frame = writer.encode("r", {"n": 7}, generation=5, token=9, owner="w", metadata=None)
    c = core()
    s = Scripted([b"generation", b"2", b"kept", b"1,2"], applied([5, 10]))
    assert s.run(c.import_flow(frame, "admin")) == 5
    f = fields(s.scripts("commit")[0])
    assert (f["mode"], f["token"], f["generation"], f["by"]) == ("import", "9", "5", "admin")
    assert f["commit_id"].startswith("import-")


def test_a_commit_whose_key_set_never_settles_is_a_typed_error_saying_nothing_was_applied():
    """Concurrent writers rotating the run at each of its tries: every answer says nothing was
    written, and after MAX_SENDS of them the commit ends with a StoreUnavailableError (the
    library's error root, definite), not a bare AssertionError."""
    from redis_ckpt.core.flows.commit import MAX_SENDS

    c = core(keep=2)
    s = Scripted(*(lambda pipe, i=i: replies_for(pipe, ReplyError(f"NEED_KEYS {i + 1}:0"))
                   for i in range(MAX_SENDS)))
    with pytest.raises(StoreUnavailableError) as failed:
        s.run(commit(c, {"n": 1}, expected=2, commit_id="c-3"))
    assert not failed.value.outcome_unknown and "Nothing of it was applied" in str(failed.value)
    assert len(s.scripts("commit")) == MAX_SENDS
