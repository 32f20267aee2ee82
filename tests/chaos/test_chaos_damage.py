"""Damaged data on a real server: each damage detected with its own reason; fuzzed frames."""

from __future__ import annotations

import logging

import pytest
from chaos_tools import rounds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenario_damage import KEEP, _fresh_run, damaged_frames, fuzz_frames, fuzz_load

from redis_ckpt import CheckpointStore
from redis_ckpt.core.keys import RunKeys

pytestmark = [pytest.mark.server]


@pytest.fixture(scope="module", params=["valkey", "redis"])
def server(request, make_module_server):
    return make_module_server(request.param)


def test_each_damage_is_detected_with_its_own_reason_and_loading_falls_back_loudly(server, seed):
    tally = damaged_frames(server, rounds=rounds(1), seed=seed)
    print(tally.summary())
    assert not tally.violations, tally.violations
    assert tally.injected == tally.detected == 11 * rounds(1) + 4


def test_random_mutations_of_a_stored_frame_never_load_and_never_crash(server, seed):
    tally = fuzz_frames(server, iterations=rounds(300), seed=seed)
    print(tally.summary())
    assert not tally.violations, tally.violations
    assert tally.rounds == rounds(300) and tally.detected > 0.9 * tally.rounds


@pytest.fixture(scope="module")
def fuzz_target(server):
    client = server.client()
    store = CheckpointStore(client, namespace="hypo", keep=KEEP)
    _fresh_run(store, "h")
    original = client.get(RunKeys(store.namespace, "h").generation(KEEP))
    yield store, client, original
    store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hypothesis_frames_on_the_server_end_in_fallback_or_corrupt(fuzz_target, data):
    store, client, original = fuzz_target
    blob = data.draw(st.one_of(
        st.binary(max_size=300),
        st.builds(lambda i, x: original[:i] + x + original[i + len(x):],
                  st.integers(0, len(original)), st.binary(min_size=1, max_size=8)),
        st.builds(lambda i: original[:i], st.integers(0, len(original) - 1)),
        st.builds(lambda n: original[:12] + n.to_bytes(4, "big") + original[16:], st.integers(0, 2**32 - 1)),
    ))
    logging.getLogger("redis_ckpt").disabled = True
    try:
        outcome, peak = fuzz_load(store, client, "h", blob, original)
    finally:
        logging.getLogger("redis_ckpt").disabled = False
    assert outcome == "original" or outcome.startswith("fell back: ") or outcome == "corrupt"
    assert peak < 64 * len(original) + 4 * 1024 * 1024
