"""Finding the servers ends by the operation's deadline too: the primary a Sentinel names, the
slot map of a Redis Cluster.

redis-py asks each Sentinel (each startup node) in turn, each with the client's own socket
timeout: with every one of them frozen (SIGSTOP: the port accepts, nothing answers) that is
their number times the socket timeout. Here every such case, sync and asyncio, must end with
StoreUnavailableError by the deadline (2 s) plus the slack a loaded machine needs (1.5 s);
the socket timeout (3 s) is longer than the deadline, as in a real set-up (default 10 s), so
each frozen server alone could overrun it. The processes are always resumed (finally).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator

import pytest

from redis_ckpt import CheckpointStore, RetryPolicy, StoreUnavailableError
from redis_ckpt.aio import AsyncCheckpointStore
from redis_ckpt.testing import LocalSentinelSet, LocalServer

pytestmark = pytest.mark.server

DEADLINE_S = 2.0
SLACK_S = 1.5
SHORT = RetryPolicy(deadline_s=DEADLINE_S)
SOCKET_TIMEOUT_S = 3.0


@contextlib.contextmanager
def frozen(*pids: int) -> Iterator[None]:
    """The processes stopped (SIGSTOP), resumed afterwards whatever happens."""
    stopped = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)


class Within:
    """Asserts that the block ends by the deadline (plus slack)."""

    def __enter__(self) -> Within:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        elapsed = time.monotonic() - self.started
        assert elapsed < DEADLINE_S + SLACK_S, f"took {elapsed:.1f} s, deadline {DEADLINE_S} s"


def sentinel_pids(sentinels: LocalSentinelSet) -> list[int]:
    return [s._res.proc.pid for s in sentinels.sentinels]


def drop_clients(server: LocalServer) -> None:
    """Close every connection of a redis-py client to ``server`` (a network blip, a proxy
    restart): the next operation connects again, asking the Sentinels where the primary is.
    The Sentinels' own links (client name ``sentinel-...``) stay."""
    admin = server.client()
    me = admin.client_id()
    for c in admin.client_list(_type="normal"):
        if int(c["id"]) != me and not c.get("name", "").startswith("sentinel-"):
            admin.client_kill_filter(_id=c["id"])


# --------------------------------------------------------------------------- Sentinel


def test_sentinel_operations_end_by_their_deadline_when_every_sentinel_is_frozen(sentinels, namespace):
    store = CheckpointStore.from_url(sentinels.url(), namespace=namespace, socket_timeout=SOCKET_TIMEOUT_S,
                                     retry=SHORT)
    try:
        lease = store.acquire("job", owner="a", ttl=60)
        assert lease.commit({"n": 1}) == 1
        primary = sentinels.primary()
        with frozen(*sentinel_pids(sentinels)):
            drop_clients(primary)
            with Within(), pytest.raises(StoreUnavailableError) as commit:
                lease.commit({"n": 2})
            with Within(), pytest.raises(StoreUnavailableError):
                store.load("job")
            with Within(), pytest.raises(StoreUnavailableError) as acquire:
                store.acquire("other", owner="a", ttl=60)
        assert commit.value.outcome_unknown and acquire.value.outcome_unknown
        assert store.load("job").generation == 1  # the primary was never asked
    finally:
        store.close()


def test_async_sentinel_operations_end_by_their_deadline_when_every_sentinel_is_frozen(sentinels, namespace):
    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(sentinels.url(), namespace=namespace,
                                                    socket_timeout=SOCKET_TIMEOUT_S, retry=SHORT)
        try:
            lease = await store.acquire("job", owner="a", ttl=60)
            assert await lease.commit({"n": 1}) == 1
            primary = sentinels.primary()
            with frozen(*sentinel_pids(sentinels)):
                drop_clients(primary)
                with Within(), pytest.raises(StoreUnavailableError) as commit:
                    await lease.commit({"n": 2})
                with Within(), pytest.raises(StoreUnavailableError):
                    await store.load("job")
                with Within(), pytest.raises(StoreUnavailableError) as acquire:
                    await store.acquire("other", owner="a", ttl=60)
            assert commit.value.outcome_unknown and acquire.value.outcome_unknown
            assert (await store.load("job")).generation == 1
        finally:
            await store.close()

    asyncio.run(scenario())

