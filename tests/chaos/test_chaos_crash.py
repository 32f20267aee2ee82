"""kill -9 of the server during a multi-process commit storm, restarted from its AOF."""

from __future__ import annotations

import pytest
from chaos_tools import rounds
from scenario_crash import server_crash

pytestmark = [pytest.mark.server]


@pytest.mark.parametrize("engine", ["valkey", "redis"])
def test_kill_9_storm_loses_no_acknowledged_commit(engine, make_server, tmp_path, seed):
    server = make_server(engine, appendonly="yes", appendfsync="always", aof_load_truncated="no")
    tally = server_crash(server, rounds=rounds(3), workdir=tmp_path, seed=seed)
    print(tally.summary())
    assert not tally.violations, tally.violations
    assert tally.lost == 0
    assert tally.rounds == rounds(3)
    assert tally.acknowledged >= 20 * tally.rounds
    assert tally.counters["tokens handed out"] > 3  # workers re-acquired after outcomes they could not confirm
