"""Bad input: clear typed errors, nothing written."""

from __future__ import annotations

import pytest
from scenario_input import BAD_RUN_IDS, BAD_STATES, bad_input

pytestmark = [pytest.mark.server]


@pytest.mark.parametrize("engine", ["valkey"])
def test_bad_run_ids_and_states_are_typed_errors_and_write_nothing(engine, make_server):
    tally = bad_input(make_server(engine))
    print(tally.summary())
    assert not tally.violations, tally.violations
    assert tally.detected == tally.injected == 3 * len(BAD_RUN_IDS) + len(BAD_STATES)
