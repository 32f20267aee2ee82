"""A torn AOF tail, cut inside the last transaction, with aof-load-truncated no and yes."""

from __future__ import annotations

import pytest
from chaos_tools import rounds
from scenario_torn import torn_tail_loaded, torn_tail_refused

pytestmark = [pytest.mark.server]


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_torn_tail_with_load_truncated_no_is_refused_and_reported(engine, make_server, seed):
    server = make_server(engine, aof_load_truncated="no")
    tally = torn_tail_refused(server, rounds=rounds(3), seed=seed)
    print(tally.summary())
    assert not tally.violations, tally.violations
    assert tally.lost == 0 and tally.detected == tally.injected == rounds(3)


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_torn_tail_with_load_truncated_yes_never_yields_a_half_applied_commit(engine, make_server, seed):
    server = make_server(engine, aof_load_truncated="yes")
    tally = torn_tail_loaded(server, rounds=rounds(4), seed=seed)
    print(tally.summary(), tally.notes)
    assert not tally.violations, tally.violations
    assert tally.lost == 0 and tally.rounds == rounds(4)
