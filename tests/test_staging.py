"""Staged data of a dead commit: a worker that dies between staging its frame and the commit
script leaves staged keys. The run's next commit or acquire removes them, they expire within
minutes otherwise, and ``info`` / ``show`` / ``verify`` report them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from redis_ckpt import CheckpointStore
from redis_ckpt.core.ops import Cmd, Pipe, Script, Sleep
from redis_ckpt.drivers.sync import drive
from redis_ckpt.drivers.targets import sync_target
from redis_ckpt.core.flows.commit import INLINE_BYTES
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.drivers.scripts import SCRIPTS
from redis_ckpt.cli import cli

pytestmark = pytest.mark.server
CHUNK = 4096


@pytest.fixture
def store_options() -> dict:
    return {"keep": 3, "chunk_bytes": CHUNK, "max_state_bytes": 200_000}


def blob(n: int, seed: int = 0) -> dict:
    return {"blob": bytes([seed % 256]) * n, "seed": seed}


def stage_keys(client, namespace: str) -> list[bytes]:
    return sorted(k for k in client.scan_iter(f"{namespace}:*") if b":stage:" in k)


def stage_only(store: CheckpointStore, client, run: str, state: Any, *, token: int, expected: int) -> list[Any]:
    """What a worker killed right after staging leaves: the staging commands of a commit ran,
    its script never did. Returns the staging commands that were sent."""
    flow = store.core.commit_flow(run, state, token=token, expected_generation=expected, owner="doomed")
    op = next(flow)
    assert isinstance(op, Pipe)
    first_script = next(i for i, o in enumerate(op.ops) if isinstance(o, Script))
    staging = list(op.ops[:first_script])
    assert staging, "the state is too small to be staged"
    p = client.pipeline(transaction=False)
    for cmd in staging:
        p.execute_command(*cmd.args)
    p.execute()
    flow.close()
    return staging


def test_the_next_commit_removes_a_dead_commits_staged_chunks(store, client, namespace):
    lease = store.acquire("r", owner="w", ttl=30)
    assert lease.commit({"small": 1}) == 1
    stage_only(store, client, "r", blob(30_000), token=lease.token, expected=1)  # chunked
    stage_only(store, client, "r", blob(10_000, 1), token=lease.token, expected=1)
    assert len(stage_keys(client, namespace)) > 8
    info = store.info("r")
    assert info.staged_commits == 2 and info.staged_bytes > 40_000
    assert lease.commit({"small": 2}) == 2  # a small, inline commit: it still cleans up
    assert stage_keys(client, namespace) == []
    assert not client.exists(RunKeys(namespace, "r").staging)
    assert store.info("r").staged_bytes == 0 and store.info("r").staged_commits == 0
    assert store.load("r").state == {"small": 2}


def test_a_large_commit_removes_a_dead_one_and_keeps_its_own(store, client, namespace):
    lease = store.acquire("r", owner="w", ttl=30)
    stage_only(store, client, "r", blob(30_000), token=lease.token, expected=0)
    state = blob(25_000, 7)
    assert lease.commit(state) == 1
    assert stage_keys(client, namespace) == []
    assert store.load("r").state == state


def test_any_acquire_removes_a_dead_commits_staged_keys(store, client, namespace):
    lease = store.acquire("r", owner="w", ttl=0.2)
    stage_only(store, client, "r", blob(30_000), token=lease.token, expected=0)
    assert stage_keys(client, namespace)
    store.acquire("r", owner="w", ttl=30)  # the same owner again (its process restarted)
    assert stage_keys(client, namespace) == []
    assert store.info("r").staged_bytes == 0


def test_a_fenced_workers_staging_is_removed_by_the_new_holders_commit(store, client, namespace):
    old = store.acquire("r", owner="old", ttl=0.2)
    store.revoke("r")
    new = store.acquire("r", owner="new", ttl=30)
    stage_only(store, client, "r", blob(30_000), token=old.token, expected=0)  # a zombie's staging
    assert new.commit({"n": 1}) == 1
    assert stage_keys(client, namespace) == []


def test_staged_keys_expire_within_minutes(store, client, namespace):
    lease = store.acquire("r", owner="w", ttl=30)
    stage_only(store, client, "r", blob(30_000), token=lease.token, expected=0)
    ttl_ms = store.core.config.stage_ttl_ms
    assert 30_000 <= ttl_ms <= 5 * 60_000
    keys = [*stage_keys(client, namespace), RunKeys(namespace, "r").staging.encode()]
    for key in keys:
        assert 0 < client.pttl(key) <= ttl_ms


def test_delete_removes_staged_keys(store, client, namespace):
    lease = store.acquire("r", owner="w", ttl=30)
    lease.commit({"n": 1})
    stage_only(store, client, "r", blob(30_000), token=lease.token, expected=1)
    store.delete("r")
    assert stage_keys(client, namespace) == []
    assert not client.exists(RunKeys(namespace, "r").staging)


def test_staged_bytes_per_run_stay_bounded_whatever_dies(store, client, namespace):
    """Workers that keep dying between staging and script leave at most one round of garbage:
    each commit removes what is dead by then."""
    lease = store.acquire("r", owner="w", ttl=30)
    for i in range(6):
        stage_only(store, client, "r", blob(30_000, i), token=lease.token, expected=i)
        assert store.info("r").staged_commits == 1
        assert lease.commit({"i": i}) == i + 1
        assert stage_keys(client, namespace) == []


def test_staging_that_may_still_apply_is_kept_until_the_run_holds_too_much(store, client, namespace):
    """A staged commit expecting a later generation may still apply: a commit leaves it, unless
    the staged data of other commits passes max_state_bytes (200 kB here)."""
    lease = store.acquire("r", owner="w", ttl=30)
    stage_only(store, client, "r", blob(60_000, 1), token=lease.token, expected=5)
    assert lease.commit({"n": 1}) == 1
    assert store.info("r").staged_commits == 1  # kept: it would apply once the head reaches 5
    for seed in (2, 3, 4):
        stage_only(store, client, "r", blob(60_000, seed), token=lease.token, expected=5)
    assert store.info("r").staged_bytes > 200_000
    assert lease.commit({"n": 2}) == 2
    assert stage_keys(client, namespace) == [] and store.info("r").staged_bytes == 0


def test_racing_large_commits_with_one_token_leave_one_winner_and_no_staging(store, client, namespace):
    import threading

    from redis_ckpt import ConflictError

    lease = store.acquire("race", owner="w", ttl=30)
    for round_ in range(6):
        barrier = threading.Barrier(3)
        outcomes: list[object] = []

        def write(i: int) -> None:
            barrier.wait()
            try:
                outcomes.append(store.commit("race", blob(30_000, 10 * round_ + i), token=lease.token,
                                             expected_generation=round_))
            except ConflictError as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(o for o in outcomes if isinstance(o, int)) == [round_ + 1]
        assert sum(isinstance(o, ConflictError) for o in outcomes) == 2
        assert stage_keys(client, namespace) == []
    assert store.load("race").generation == 6


def test_commit_and_acquire_stay_one_round_trip(store, client):
    """The hot path: staging, script and confirmation in one pipe; no read before."""

    def trips(flow: Any) -> tuple[Any, int]:
        count = 0

        def counting() -> Any:
            nonlocal count
            reply = None
            while True:
                try:
                    op = flow.send(reply)
                except StopIteration as done:
                    return done.value
                assert not isinstance(op, Sleep)
                count += 1
                reply = yield op

        return drive(counting(), sync_target(client, SCRIPTS)), count

    core = CheckpointStore(client, namespace=store.namespace, keep=3, chunk_bytes=2 * INLINE_BYTES,
                           max_state_bytes=1 << 20).core
    grant, n = trips(core.acquire_flow("r", "w", 30_000))
    assert n == 1
    for state in ({"small": 1}, blob(INLINE_BYTES + 20_000), blob(2 * INLINE_BYTES + 70_000)):  # inline, staged whole, chunked
        generation, n = trips(core.commit_flow("r", state, token=grant.token,
                                               expected_generation=grant.generation, owner="w"))
        assert n == 1
        grant = type(grant)(grant.token, generation, grant.kind, grant.previous_token)


def test_a_worker_killed_after_staging_leaves_keys_the_next_acquire_removes(durable_server, store, client, namespace):
    lease = store.acquire("r", owner="doomed", ttl=0.5)
    child = textwrap.dedent(f"""
        import os, signal, redis
        from redis_ckpt import CheckpointStore
        from redis_ckpt.core.ops import Pipe, Script
        store = CheckpointStore(redis.Redis(port={durable_server.port}), namespace={namespace!r},
                                keep=3, chunk_bytes={CHUNK}, max_state_bytes=200_000)
        flow = store.core.commit_flow("r", {{"blob": b"x" * 30_000}}, token={lease.token},
                                       expected_generation=0, owner="doomed")
        op = next(flow)
        n = next(i for i, o in enumerate(op.ops) if isinstance(o, Script))
        p = store.client.pipeline(transaction=False)
        for cmd in op.ops[:n]:
            p.execute_command(*cmd.args)
        p.execute()
        os.kill(os.getpid(), signal.SIGKILL)  # between staging and the commit script
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    assert stage_keys(client, namespace)
    runner = CliRunner()
    out = runner.invoke(cli, ["show", "r", "--url", durable_server.url, "--namespace", namespace, "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.stdout)
    assert shown["staged"]["commits"] == 1 and shown["staged"]["bytes"] > 30_000
    out = runner.invoke(cli, ["show", "r", "--url", durable_server.url, "--namespace", namespace])
    assert "staged" in out.stdout
    out = runner.invoke(cli, ["verify", "r", "--url", durable_server.url, "--namespace", namespace, "--json"])
    assert json.loads(out.stdout)["runs"][0]["staged_bytes"] > 30_000
    successor = CheckpointStore(redis.Redis(port=durable_server.port), namespace=namespace, keep=3)
    import time

    time.sleep(0.6)
    successor.acquire("r", owner="successor", ttl=30)
    assert stage_keys(client, namespace) == []
    assert store.info("r").staged_bytes == 0
