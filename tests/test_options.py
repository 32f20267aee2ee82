"""Options and arguments refused before anything is written: the store's settings at
construction, who revokes or deletes, the listing calls, the CLI's --timeout."""

from __future__ import annotations

import subprocess
import sys

import pytest

from redis_ckpt import CheckpointError, CheckpointStore, OutOfRangeError

pytestmark = pytest.mark.server


@pytest.mark.parametrize("options", [
    {"events_maxlen": -1}, {"events_maxlen": "x"}, {"events_maxlen": True}, {"events_maxlen": 2**60},
    {"keep": True}, {"keep": 2**60},
    {"schema_version": True}, {"schema_version": 2**32}, {"schema_version": 1.0},
    {"max_state_bytes": -1}, {"max_state_bytes": 0}, {"max_state_bytes": True}, {"max_state_bytes": 2**60},
])
def test_a_bad_store_option_is_refused_at_construction(client, namespace, options):
    """Each of these used to pass the constructor and fail later: a bad events_maxlen made an
    acquire bump the fence and write its lease before the script failed (fencing off the real
    holder), keep=True broke every commit in Lua, a schema_version past the frame's 32 bits
    raised a plain ValueError at every commit."""
    with pytest.raises(ValueError, match=next(iter(options))):
        CheckpointStore(client, namespace=namespace, **options)


def test_the_bounds_of_the_store_options_are_accepted(client, namespace):
    store = CheckpointStore(client, namespace=namespace, events_maxlen=0, keep=1, schema_version=2**32 - 1,
                            max_state_bytes=1024)
    lease = store.acquire("r", owner="a", ttl=30)
    assert lease.commit({"n": 1}) == 1
    assert store.load("r").state == {"n": 1}


@pytest.mark.parametrize("by", ["", "a\nb", "x" * 300, 5, None])
@pytest.mark.parametrize("op", ["revoke", "delete"])
def test_who_revokes_or_deletes_is_checked_before_anything_changes(store, op, by):
    lease = store.acquire("r", owner="a", ttl=30)
    lease.commit({"n": 1})
    fence = store.info("r").fence
    with pytest.raises(ValueError):
        getattr(store, op)("r", by=by)
    assert store.info("r").fence == fence and store.load("r").state == {"n": 1}
    assert [e.kind for e in store.events("r")][-1] == "commit"


@pytest.mark.parametrize("call", [
    lambda s: s.events("r", count=None), lambda s: s.events("r", count=True), lambda s: s.events("r", count=0),
    lambda s: s.events("r", count=-1), lambda s: s.events("r", after="yesterday"),
    lambda s: s.events("r", after=5), lambda s: s.runs(limit="x"), lambda s: s.runs(limit=-1),
    lambda s: s.runs(limit=True), lambda s: s.runs(limit=0),
])
def test_bad_listing_arguments_are_refused(store, call):
    store.acquire("r", owner="a", ttl=30).commit({"n": 1})
    with pytest.raises(ValueError) as refused:
        call(store)
    assert isinstance(refused.value, (CheckpointError, OutOfRangeError)) or "must be" in str(refused.value)


def test_the_listing_calls_take_what_they_document(store):
    store.acquire("r", owner="a", ttl=30).commit({"n": 1})
    store.acquire("s", owner="a", ttl=30)
    events = store.events("r", count=1)
    assert [e.kind for e in events] == ["commit"]
    assert [e.kind for e in store.events("r", after=store.events("r", count=2)[0].id)] == ["commit"]
    assert store.runs(limit=1) in (["r"], ["s"]) and store.runs() == ["r", "s"]


@pytest.mark.parametrize("timeout", ["inf", "nan", "1e300", "-1", "0"])
def test_a_bad_cli_timeout_is_a_usage_error(durable_server, timeout):
    r = subprocess.run([sys.executable, "-m", "redis_ckpt.cli", "-u", durable_server.url, "runs",
                        "--timeout", timeout], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "timeout" in r.stderr and "a bug in redis-ckpt" not in r.stderr


@pytest.mark.parametrize("args", [["prune", "--idle", "99999999999d", "--dry-run"],
                                  ["show", "r", "--state", "--generation", str(10**20)],
                                  ["fence", "r", "--count", str(2**70)],
                                  ["fork", "r", "r2", "--generation", str(2**60)]])
def test_a_cli_number_past_what_the_store_handles_is_a_usage_error(durable_server, args):
    """Exit 2 (bad usage, as the CLI's exit policy says), with the bound named; not 1, the
    exit of a definite answer from the store."""
    CheckpointStore.from_url(durable_server.url, namespace="default").acquire("r", owner="a", ttl=30).commit({})
    r = subprocess.run([sys.executable, "-m", "redis_ckpt.cli", "-u", durable_server.url, *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "must be" in r.stderr and "a bug in redis-ckpt" not in r.stderr


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), -1, "5", True])
def test_a_bad_step_runner_acquire_timeout_is_refused(store, timeout):
    from redis_ckpt.steps import StepRunner

    with pytest.raises(OutOfRangeError, match="acquire_timeout"):
        StepRunner(store, "job", owner="w", acquire_timeout=timeout)


def test_a_step_runner_acquire_timeout_may_be_a_timedelta_or_zero(store):
    from datetime import timedelta

    from redis_ckpt.steps import StepRunner

    assert StepRunner(store, "job", owner="w", acquire_timeout=timedelta(seconds=2)).acquire_timeout == 2.0
    assert StepRunner(store, "job", owner="w", acquire_timeout=0).acquire_timeout == 0.0
