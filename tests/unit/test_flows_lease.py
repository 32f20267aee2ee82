"""Lease and admin flows driven by scripted replies: acquire (held, out of range, dead staged
commits, a lost connection), renew, release, revoke and delete."""

from __future__ import annotations

import pytest
from scripted import OK_FSYNC, Scripted, core

from redis_ckpt.core.config import MAX_INT
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.core.ops import ConnectionLost, ReplyError
from redis_ckpt.errors import DurabilityError, LeaseHeldError, LeaseLostError, OutOfRangeError, StoreUnavailableError
from redis_ckpt.models import Grant

K = RunKeys("ns", "r")


def test_acquire_hands_out_a_token_once_confirmed():
    s = Scripted([[5, 2, b"takeover", 4], OK_FSYNC])
    assert s.run(core().acquire_flow("r", "w", 30_000)) == Grant(5, 2, "takeover", 4)
    (pipe,) = s.ops
    script = pipe.ops[0]
    assert (script.name, pipe.route) == ("acquire", K.fence)
    assert script.keys == [K.fence, K.lease, K.head, K.events, K.staging, K.refs]
    assert script.args == ["w", 30_000, 1000, 1, 0, 86_400_000, 0]  # no retention: no generation keys


def test_acquire_refused_while_another_owner_holds_the_lease():
    s = Scripted([ReplyError("LEASE_HELD 1500 worker b:77"), OK_FSYNC])
    with pytest.raises(LeaseHeldError) as e:
        s.run(core().acquire_flow("r", "w", 30_000))
    assert (e.value.owner, e.value.ms_left) == ("worker b:77", 1500)


def test_acquire_at_the_fence_bound_is_out_of_range():
    s = Scripted([ReplyError(f"OUT_OF_RANGE fence {MAX_INT}"), OK_FSYNC])
    with pytest.raises(OutOfRangeError) as e:
        s.run(core().acquire_flow("r", "w", 30_000))
    assert e.value.argument == "fence" and e.value.value == MAX_INT


def test_acquire_passes_dead_staged_commits_then_gives_up_being_strict():
    answers = [[ReplyError(f"NEED_STAGE c{i}:2"), OK_FSYNC] for i in range(5)]
    s = Scripted(*answers, [[1, 0, b"acquire", 0], OK_FSYNC])
    s.run(core().acquire_flow("r", "w", 30_000))
    scripts = s.scripts("acquire")
    assert [x.args[3] for x in scripts] == [1, 1, 1, 1, 1, 0]
    assert scripts[1].args[7:] == ["c0:2"] and scripts[1].keys[5:] == [K.stage("c0", 0), K.stage("c0", 1), K.refs]


def test_acquire_unconfirmed_is_a_durability_error():
    s = Scripted([[1, 0, b"acquire", 0], [0, 0]])
    with pytest.raises(DurabilityError) as e:
        s.run(core().acquire_flow("r", "w", 30_000))
    assert e.value.generation is None and e.value.what == "acquire"


def test_acquire_rides_out_a_lost_connection_and_gives_up_at_the_deadline():
    s = Scripted(ConnectionLost("reset"), [[1, 0, b"acquire", 0], OK_FSYNC])
    assert s.run(core().acquire_flow("r", "w", 30_000)).token == 1 and len(s.sleeps) == 1
    down = Scripted(ConnectionLost("reset"), deadline_in=-1.0)
    with pytest.raises(StoreUnavailableError) as e:
        down.run(core().acquire_flow("r", "w", 30_000))
    assert e.value.outcome_unknown  # an acquire writes: the token may have been handed out


def test_a_bad_ttl_is_refused_before_anything_is_sent():
    with pytest.raises(OutOfRangeError):
        core().acquire_flow("r", "w", 0)


def test_renew_of_a_lost_lease_names_the_holder():
    s = Scripted([ReplyError("LEASE_LOST 7 7 worker b")])
    with pytest.raises(LeaseLostError) as e:
        s.run(core().renew_flow("r", "w", 5, 30_000))
    assert (e.value.fence, e.value.holder_token, e.value.holder) == (7, 7, "worker b")
    gone = Scripted([ReplyError("LEASE_LOST 7 0 ")])
    with pytest.raises(LeaseLostError) as e:
        gone.run(core().renew_flow("r", "w", 5, 30_000))
    assert e.value.holder is None and e.value.holder_token is None


def test_renew_release_and_revoke():
    assert Scripted([30_000]).run(core().renew_flow("r", "w", 5, 30_000)) == 30_000
    assert Scripted([0]).run(core().release_flow("r", "w", 5)) is False
    s = Scripted([b"9", OK_FSYNC])
    assert s.run(core().revoke_flow("r", "admin")) == 9
    assert s.ops[0].ops[0].args == ["admin", 1000]


def test_delete_passes_every_kept_generation_and_the_staged_commits():
    s = Scripted([[b"generation", b"3", b"kept", b"2,3:2"], [b"c1", b"4:1:1:100"], []],
                 [ReplyError("NEED_KEYS 4:0"), OK_FSYNC],
                 [[b"8", 3], OK_FSYNC])
    assert s.run(core().delete_flow("r", "admin")) == 3
    first, second = s.scripts("delete")
    delete_id = first.args[2]  # one per call, the same in every attempt (a resend of an applied one is known)
    assert isinstance(delete_id, str) and len(delete_id) == 16
    assert first.args == ["admin", 1000, delete_id, 2, "2:0", "3:2", "c1:1"]
    assert first.keys[5:] == [K.generation(2), K.generation(3), K.chunk(3, 0), K.chunk(3, 1), K.stage("c1", 0),
                              K.refs]
    assert second.args[2:7] == [delete_id, 3, "2:0", "3:2", "4:0"]


def test_acquire_under_a_retention_passes_the_kept_generations_it_is_asked_for():
    s = Scripted([ReplyError("NEED_KEYS 3:0 4:2"), OK_FSYNC], [[1_700_000_000_000, 4, b"acquire", 9], OK_FSYNC])
    grant = s.run(core(retention_ms=60_000).acquire_flow("r", "w", 30_000))
    assert grant.token == 1_700_000_000_000
    first, second = s.scripts("acquire")
    assert first.args[4:7] == [60_000, 86_400_000, 0]
    assert second.args[6:] == [2, "3:0", "4:2"]
    assert second.keys[5:] == [K.generation(3), K.generation(4), K.chunk(4, 0), K.chunk(4, 1), K.refs]
    with pytest.raises(OutOfRangeError):
        core().acquire_flow("r", "w", 30_000, retention_ms=0)


def test_acquire_under_a_retention_passes_every_shared_chunk_it_is_asked_for():
    s = Scripted([ReplyError("NEED_SHARED 2"), OK_FSYNC], [[b"b" * 32, b"1", b"a" * 32, b"2"]],
                 [[1_700_000_000_000, 4, b"acquire", 9], OK_FSYNC])
    grant = s.run(core(retention_ms=60_000).acquire_flow("r", "w", 30_000))
    assert grant.token == 1_700_000_000_000
    first, second = s.scripts("acquire")
    assert first.keys[5:] == [K.refs]
    assert s.ops[1].ops[0].args == ("HGETALL", K.refs)  # read only when the script asks
    assert second.keys[5:] == [K.refs, K.shared("a" * 32), K.shared("b" * 32)] and second.args == first.args
