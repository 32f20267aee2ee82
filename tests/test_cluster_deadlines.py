"""Redis Cluster: a missing head found on the node owning the run's slot, and a stopped primary
that cannot hold an operation past its deadline (the cluster fixture of conftest)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from redis_ckpt import CheckpointStore, CorruptCheckpointError, RetryPolicy, StoreUnavailableError
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.testing import LocalCluster
from test_cluster import slot_of

pytestmark = pytest.mark.server


def test_a_headless_run_is_found_on_the_node_owning_its_slot(cluster: LocalCluster, namespace):
    store = CheckpointStore(cluster.client(), namespace=namespace, keep=2)
    runs = [f"r{i}" for i in range(6)]  # spread over the shards
    for run in runs:
        with store.acquire(run, owner="a", ttl=10) as lease:
            lease.commit({"run": run})
    owners = {cluster.owner(slot_of(namespace, run)).port for run in runs}
    assert len(owners) > 1, "every run landed on one shard: pick other names"
    for run in runs:  # head and audit stream gone: only the keys can tell
        k = RunKeys(namespace, run)
        owner = cluster.owner(slot_of(namespace, run)).client()
        owner.delete(k.head, k.events)
        with pytest.raises(CorruptCheckpointError):
            store.load(run)
    assert store.load("never") is None
    store.close()


def test_a_stopped_primary_holds_a_commit_no_longer_than_its_deadline(cluster: LocalCluster, namespace):
    store = CheckpointStore(cluster.client(), namespace=namespace, retry=RetryPolicy(deadline_s=2.0))
    lease = store.acquire("stop", owner="a", ttl=60)
    assert lease.commit(1) == 1
    primary = cluster.owner(slot_of(namespace, "stop"))
    os.kill(primary.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        try:
            lease.commit(2)  # may also succeed, on a replica promoted within the 2 s
        except StoreUnavailableError as exc:
            assert exc.outcome_unknown
        assert time.monotonic() - started < 2.0 + 1.5
    finally:
        os.kill(primary.pid, signal.SIGCONT)
    store.close()
    cluster.wait_healthy(60)
