"""Options and arguments refused before anything is written: the store's settings at
construction, who revokes or deletes, the listing calls, the CLI's --timeout."""

from __future__ import annotations

import subprocess
import sys

import pytest

from redis_ckpt import CheckpointError, CheckpointStore, Durability, InvalidOptionError, OutOfRangeError, RetryPolicy

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


def _runner(store, **kw):
    from redis_ckpt.steps import StepRunner
    return StepRunner(store, "job", owner="w", **kw)


def _add_twice(store):
    return _runner(store).add("a", print).add("a", print)


def _migrate_twice(store):
    store.register_migration(1, lambda s: s)
    store.register_migration(1, lambda s: s)


def _decoding_client(client, namespace):
    import redis
    kw = client.connection_pool.connection_kwargs
    CheckpointStore(redis.Redis(host=kw["host"], port=kw["port"], decode_responses=True), namespace=namespace)


# (call, argument it names, the built-in error it raised before: still its base)
INVALID_OPTIONS = [
    (lambda c, n, s: CheckpointStore(c, namespace=n, compression="gzip"), "compression", ValueError),
    (lambda c, n, s: CheckpointStore(c, namespace=n, chunk_bytes=10), "chunk_bytes", ValueError),
    (lambda c, n, s: CheckpointStore(c, namespace=n, dedup="yes"), "dedup", ValueError),
    (lambda c, n, s: CheckpointStore(c, namespace=n, dedup=True, retention=60), "dedup", ValueError),
    (lambda c, n, s: CheckpointStore(c, namespace=n, drift_check_s=-1), "drift_check_s", ValueError),
    (lambda c, n, s: CheckpointStore(c, namespace=n, telemetry="on"), "telemetry", TypeError),
    (lambda c, n, s: CheckpointStore(c, namespace=n, declared_config={"appendfsynk": "always"}).load("r"),
     "declared_config", ValueError),
    (lambda c, n, s: _decoding_client(c, n), "client", ValueError),
    (lambda c, n, s: CheckpointStore.in_memory(server=42), "server", TypeError),
    (lambda c, n, s: Durability(timeout_ms=0), "timeout_ms", ValueError),
    (lambda c, n, s: Durability(replicas=-1), "replicas", ValueError),
    (lambda c, n, s: Durability(replica_fsync=True), "replica_fsync", ValueError),
    (lambda c, n, s: RetryPolicy(attempts=0), "attempts", ValueError),
    (lambda c, n, s: RetryPolicy(deadline_s=float("nan")), "deadline_s", ValueError),
    (lambda c, n, s: s.register_migration(0, lambda st: st), "from_version", ValueError),
    (lambda c, n, s: _migrate_twice(s), "from_version", ValueError),
    (lambda c, n, s: s.events("r", after="yesterday"), "after", ValueError),
    (lambda c, n, s: _runner(s, commit_every=0), "commit_every", ValueError),
    (lambda c, n, s: _runner(s).add("", print), "name", ValueError),
    (lambda c, n, s: _add_twice(s), "name", ValueError),
    (lambda c, n, s: _runner(s).add("a", 42), "fn", TypeError),
    (lambda c, n, s: _runner(s).run(), "steps", ValueError),
]


@pytest.mark.parametrize("call, argument, base", INVALID_OPTIONS,
                         ids=[f"{a}-{i}" for i, (_, a, _b) in enumerate(INVALID_OPTIONS)])
def test_a_bad_option_is_an_invalid_option_error_and_still_the_builtin_it_was(client, namespace, store,
                                                                              call, argument, base):
    """One typed error for a bad option or argument of a store, runner or saver (catch
    CheckpointError and be done), which is still the ValueError/TypeError callers caught."""
    with pytest.raises(InvalidOptionError) as refused:
        call(client, namespace, store)
    assert isinstance(refused.value, CheckpointError) and isinstance(refused.value, base)
    assert refused.value.argument == argument
