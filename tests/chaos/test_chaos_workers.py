"""Worker faults: paused past the lease, killed between the script and WAITAOF, cut sockets."""

from __future__ import annotations

import pytest
from chaos_tools import rounds
from scenario_workers import killed_before_confirmation, network_cut, paused_worker

pytestmark = [pytest.mark.server]


@pytest.fixture(scope="module", params=["valkey", "redis"])
def server(request, make_module_server):
    return make_module_server(request.param)


def check(tally):
    print(tally.summary())
    assert not tally.violations, tally.violations
    assert tally.lost == 0 and tally.detected == tally.injected > 0


def test_a_worker_paused_past_its_lease_is_fenced_when_it_resumes(server, tmp_path, seed):
    check(paused_worker(server, rounds=rounds(3), workdir=tmp_path, seed=seed))


def test_a_worker_killed_between_script_and_waitaof_leaves_a_whole_commit(server, tmp_path, seed):
    check(killed_before_confirmation(server, rounds=rounds(2), workdir=tmp_path, seed=seed))


def test_a_cut_connection_mid_commit_applies_the_retry_exactly_once(server, seed):
    tally = network_cut(server, rounds=rounds(8), seed=seed)
    check(tally)
