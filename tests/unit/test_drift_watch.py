"""The drift check rides in confirmed writes at most every drift_check_s, and at once after a
sign of trouble; its answer is told apart from the confirmations' by shape (issue 12, target 5:
no command per commit)."""

from __future__ import annotations

from functools import partial

import pytest
from scripted import Scripted, core, replies_for

from redis_ckpt.core.config import DriftWatch, StoreConfig
from redis_ckpt.core.flows.confirm import check_confirmed, confirmed
from redis_ckpt.core.ops import Cmd, ConnectionLost, ReplyError
from redis_ckpt.errors import ConflictError, DurabilityError

CHECK = ("CONFIG", "GET", "appendfsync")


def rule(cfg, engine):
    return [f"appendfsync is {cfg['appendfsync']}"] if cfg.get("appendfsync") != "always" else []


def watched(**options):
    c = core(**options)
    c.watch_config(DriftWatch(("appendfsync",), partial(rule, engine="valkey")))
    return c


def settings(value: bytes = b"always", resp3: bool = False):
    return {b"appendfsync": value} if resp3 else [b"appendfsync", value]


def answer(generation, value=b"always", resp3=False):
    """commit.lua applied, and the settings (when the pipe carried the check)."""
    return lambda pipe: replies_for(pipe, generation, lambda cmd: settings(value, resp3)
                                    if cmd.args[0] == "CONFIG" else None)


def commit(c, expected, **kw):
    return c.commit_flow("r", {"n": expected + 1}, token=4, expected_generation=expected, owner="w", **kw)


def carried(pipe) -> bool:
    return any(isinstance(o, Cmd) and o.args == CHECK for o in pipe.ops)


def test_the_check_rides_once_per_interval_not_with_every_commit():
    c = watched(drift_check_s=3600)
    pipes = []
    for g in range(5):
        s = Scripted(answer(g + 1))
        assert s.run(commit(c, g)) == g + 1
        pipes += s.ops
    assert [carried(p) for p in pipes] == [True, False, False, False, False]
    assert pipes[0].ops[-1].args == CHECK  # after WAITAOF, last in the pipe


def test_once_the_interval_passed_the_next_commit_carries_it_and_a_drift_refuses_that_commit():
    c = watched(drift_check_s=3600)
    Scripted(answer(1)).run(commit(c, 0))
    c.config.watch.next_check[0] = 0.0  # the interval has passed
    s = Scripted(answer(2, b"everysec"))
    with pytest.raises(DurabilityError) as e:
        s.run(commit(c, 1))
    assert carried(s.ops[0]) and e.value.generation == 2 and "appendfsync is everysec" in e.value.server_error
    # every write after it checks again until the settings are back
    s = Scripted(answer(3, b"everysec"))
    with pytest.raises(DurabilityError):
        s.run(commit(c, 2))
    ok = Scripted(answer(3, b"always"))
    assert ok.run(commit(c, 2)) == 3 and carried(s.ops[0]) and carried(ok.ops[0])


def test_drift_check_s_zero_checks_every_write():
    c = watched(drift_check_s=0)
    first, second = Scripted(answer(1)), Scripted(answer(2))
    first.run(commit(c, 0))
    second.run(commit(c, 1))
    assert carried(first.ops[0]) and carried(second.ops[0])


def test_a_lost_connection_makes_the_resend_carry_the_check():
    c = watched(drift_check_s=3600)
    Scripted(answer(1)).run(commit(c, 0))
    s = Scripted(ConnectionLost("reset by peer"), answer(2))
    assert s.run(commit(c, 1)) == 2
    assert [carried(p) for p in s.ops] == [False, True]


def test_fewer_confirmations_than_asked_make_the_next_write_check():
    c = watched(drift_check_s=3600)
    Scripted(answer(1)).run(commit(c, 0))
    s = Scripted(lambda pipe: replies_for(pipe, 2, lambda cmd: [0, 0] if cmd.args[0] == "WAITAOF" else None))
    with pytest.raises(DurabilityError):
        s.run(commit(c, 1))
    s = Scripted(answer(3))
    s.run(commit(c, 2))
    assert carried(s.ops[0])


def test_a_refused_commit_that_carried_the_check_leaves_it_to_the_next_write():
    c = watched(drift_check_s=3600)
    s = Scripted(lambda pipe: replies_for(pipe, ReplyError("CONFLICT 0 5"),
                                          lambda cmd: settings() if cmd.args[0] == "CONFIG" else None))
    with pytest.raises(ConflictError):
        s.run(commit(c, 0))
    assert carried(s.ops[0])
    s = Scripted(answer(6))
    s.run(commit(c, 5))
    assert carried(s.ops[0])


@pytest.mark.parametrize("resp3", [False, True])
def test_the_settings_are_told_from_the_confirmations_by_shape(resp3):
    config = StoreConfig(namespace="ns", watch=DriftWatch(("appendfsync",), partial(rule, engine="valkey")))
    ok = [7, [1, 0], settings(b"always", resp3)]
    check_confirmed(ok, config, what="commit", run_id="r", generation=7)
    check_confirmed([7, [1, 0]], config, what="commit", run_id="r", generation=7)  # not carried this time
    with pytest.raises(DurabilityError) as e:
        check_confirmed([7, [1, 0], settings(b"no", resp3)], config, what="commit", run_id="r", generation=7)
    assert e.value.local_got == 1 and "appendfsync is no" in e.value.server_error
    with pytest.raises(DurabilityError) as e:
        check_confirmed([7, [1, 0], ReplyError("NOPERM no permissions to run the 'config|get' command")], config,
                        what="commit", run_id="r", generation=7)
    assert "CONFIG GET, readable at start, now fails" in e.value.server_error
    with pytest.raises(DurabilityError) as e:  # WAITAOF's own error, no check carried
        check_confirmed([7, ReplyError("ERR WAITAOF cannot be used when numlocal is set but appendonly is "
                                       "disabled.")], config, what="commit", run_id="r", generation=7)
    assert e.value.local_got == 0 and "WAITAOF" in e.value.server_error


def test_the_saver_seam_carries_it_the_same_way():
    config = StoreConfig(namespace="ns", drift_check_s=3600,
                         watch=DriftWatch(("appendfsync",), partial(rule, engine="valkey")))
    first = confirmed([Cmd("HSET", "k", "f", "v")], config, route="k")
    second = confirmed([Cmd("HSET", "k", "f", "v")], config, route="k")
    assert [o.args[0] for o in first.ops] == ["HSET", "WAITAOF", "CONFIG"]
    assert [o.args[0] for o in second.ops] == ["HSET", "WAITAOF"]


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1", True])
def test_drift_check_s_must_be_a_finite_number_of_seconds(bad):
    with pytest.raises(ValueError, match="drift_check_s"):
        StoreConfig(namespace="ns", drift_check_s=bad)
