"""The server's durability settings drift at run time, under running workers."""

from __future__ import annotations

import pytest
from scenario_drift import DRIFTS, applies, drift

pytestmark = [pytest.mark.server]

@pytest.fixture(scope="module", params=["valkey", "redis"])
def server(request, make_module_server):
    return make_module_server(request.param)


@pytest.mark.parametrize("name,value", DRIFTS, ids=[f"{n}-{v}" for n, v in DRIFTS])
def test_a_commit_after_the_server_drifted_fails_loudly(server, name, value):
    if not applies(server.engine, name, value):
        # allowed on Redis, with a warning: WAITAOF there really waits for the once-a-second fsync
        tally = drift(server, name, value, commits_after=1, timeout_ms=3000)
        assert not tally.violations and tally.detected == 0 and tally.counters == {"commits accepted": 2}
        return
    tally = drift(server, name, value)
    print(tally.summary())
    assert not tally.violations, tally.violations
    assert tally.injected > 0 and tally.detected == tally.injected, tally.gaps
