"""The step runner commits what changed (issue 16, target 3): each result is encoded once, when
its step completes, and the stored state reads back exactly - types included - whether the run
was written by this runner, by one before it (another key order, results encoded whole), on a
plain or a dedup store; a damaged stored generation still fails loudly."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from test_codec import assert_same

from redis_ckpt import CorruptCheckpointError
from redis_ckpt.core.codec import encode_state
from redis_ckpt.core.dedup import is_manifest
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.steps import STATE_KIND, StepRunner

pytestmark = pytest.mark.server

BERLIN = dt.timezone(dt.timedelta(hours=1), "CET")


def result_of(i: int) -> object:
    """A result of types a JSON store would lose, 20 KB every fourth step (a dedup store chunks the state)."""
    return {
        "i": i, "big": 2**70 + i, "d": Decimal(f"{i}.10"), "t": (i, "x", None), "s": frozenset({i, -i}),
        "at": dt.datetime(2026, 1, 1, 12, i % 60, tzinfo=BERLIN), "u": uuid.UUID(int=i), "raw": bytearray(b"r%d" % i),
        "text": ("%04d" % i) * (5000 if i % 4 == 0 else 2), "nan": float("nan"),
    }


def runner_of(store, run: str, n: int, seen: dict, fail_at: int | None = None) -> StepRunner:
    runner = StepRunner(store, run, owner="w", ttl=30)
    for i in range(n):
        def step(ctx, i=i):
            seen[i] = dict(ctx.results)
            if i == fail_at:
                raise RuntimeError(f"step {i} fails")
            return result_of(i)
        runner.add(f"s{i}", step)
    return runner


@pytest.fixture(params=[False, True], ids=["plain", "dedup"])
def store_options(request) -> dict:
    return {"keep": 3, "dedup": request.param}


def test_a_resumed_runner_sees_exactly_the_results_it_stored(store):
    seen: dict[int, dict] = {}
    with pytest.raises(RuntimeError):
        runner_of(store, "resume", 40, seen, fail_at=30).run({"in": (1, 2)})
    ck = store.load("resume")
    assert ck.state["completed"] == [f"s{i}" for i in range(30)]
    assert_same(ck.state["results"], {f"s{i}": result_of(i) for i in range(30)})
    seen.clear()
    results = runner_of(store, "resume", 40, seen).run()  # a new runner: what it was handed comes from Redis
    assert sorted(seen) == list(range(30, 40))
    assert_same(seen[35], {f"s{i}": result_of(i) for i in range(35)})
    assert_same(results, {f"s{i}": result_of(i) for i in range(40)})
    st = runner_of(store, "resume", 40, {}).status()
    assert st.finished and st.inputs == {"in": (1, 2)} and type(st.inputs["in"]) is tuple
    assert_same(st.results, results)
    assert [st.history[f"s{i}"]["index"] for i in range(40)] == list(range(1, 41))


def test_a_run_stored_before_this_runner_resumes_and_finishes(store):
    """The state as the runner before the pre-encoded results stored it (its own key order)."""
    done = {f"s{i}": result_of(i) for i in range(20)}
    at = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    old = {"kind": STATE_KIND, "format": 1, "incarnation": "abcd1234", "steps": [f"s{i}" for i in range(30)],
           "completed": list(done), "results": done, "inputs": None, "finished": False, "created_at": at,
           "history": {name: {"index": i + 1, "started_at": at, "finished_at": at, "owner": "old", "token": 1}
                       for i, name in enumerate(done)}}
    lease = store.acquire("old", owner="old", ttl=30)
    lease.commit(old)
    lease.release()
    seen: dict[int, dict] = {}
    results = runner_of(store, "old", 30, seen).run()
    assert sorted(seen) == list(range(20, 30))
    assert_same(seen[20], done)
    assert_same(results, {f"s{i}": result_of(i) for i in range(30)})
    state = store.load("old").state
    assert state["incarnation"] == "abcd1234" and state["history"]["s3"]["owner"] == "old"
    assert state["history"]["s25"]["owner"] == "w" and state["created_at"] == at and state["finished"]


def test_the_stored_bytes_are_the_plain_states(store, client):
    runner_of(store, "bytes", 12, {}).run()
    ck = store.load("bytes")
    assert encode_state(ck.state) == bytes(store.export_frame("bytes"))[-16 - len(encode_state(ck.state)):-16]


def test_a_damaged_generation_fails_loudly_and_the_runner_resumes_from_the_last_good_one(store, client):
    runner_of(store, "dmg", 24, {}).run()
    k = RunKeys(store.namespace, "dmg")
    newest = store.info("dmg").generation
    assert is_manifest(client.get(k.generation(newest))) == store.core.config.dedup
    client.setrange(k.generation(newest), 60, b"\x00\xff\x00")  # its manifest (dedup) or its frame
    ck = store.load("dmg")
    assert ck.generation == newest - 1 and ck.skipped[0].generation == newest
    assert not ck.state["finished"]
    seen: dict[int, dict] = {}
    results = runner_of(store, "dmg", 24, seen).run()  # the last step runs again, loudly skipped
    assert sorted(seen) == [23]
    assert_same(results, {f"s{i}": result_of(i) for i in range(24)})
    for g in store.info("dmg").kept:
        client.setrange(k.generation(g), 60, b"\x00\xff\x00")
    with pytest.raises(CorruptCheckpointError):
        runner_of(store, "dmg", 24, {}).run()


def test_a_result_is_stored_as_its_step_returned_it(store):
    runner = StepRunner(store, "mut", owner="w", ttl=30)
    runner.add("a", lambda ctx: {"items": [1, 2]})
    runner.add("b", lambda ctx: ctx.results["a"]["items"].append(3) or "changed a's list in place")
    runner.run()
    assert store.load("mut").state["results"] == {"a": {"items": [1, 2]}, "b": "changed a's list in place"}


def test_a_state_that_disagrees_with_its_encoding_is_refused_not_committed() -> None:
    # the runner's own invariant (the state it holds is what it encoded) is checked always,
    # also under python -O, which would drop an assert
    from redis_ckpt import StateError
    from redis_ckpt.steps.state import StoredState

    state = {"kind": STATE_KIND, "format": 1, "incarnation": "i", "steps": ["a", "b"], "completed": ["a"],
             "results": {"a": 1}, "inputs": None, "finished": False, "created_at": None, "history": {"a": {}}}
    stored = StoredState(state)
    stored.wire(state)  # the state it encoded: accepted
    with pytest.raises(StateError, match="disagree"):
        stored.wire({**state, "completed": ["a", "b"]})
    with pytest.raises(StateError, match="disagree"):
        stored.wire({**state, "steps": ["a", "b"]})  # equal, but not the plan it encoded
