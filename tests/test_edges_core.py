"""Edge cases of the core found in review: each test failed before its fix."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
import redis.asyncio as aredis

from redis_ckpt import CheckpointStore, NonDurableServerError, RetryPolicy, StoreUnavailableError
from redis_ckpt.aio import AsyncCheckpointStore

pytestmark = pytest.mark.server


# --------------------------------------------------------------------------- the async store's probe


def test_async_store_constructed_directly_refuses_a_non_durable_server(make_server):
    server = make_server("valkey", appendonly="yes", appendfsync="always", maxmemory_policy="allkeys-lru")

    async def main() -> None:
        c = aredis.Redis.from_url(server.url)
        try:
            store = AsyncCheckpointStore(c, namespace="n")
            with pytest.raises(NonDurableServerError):
                await store.acquire("r", owner="a", ttl=30)
            with pytest.raises(NonDurableServerError):  # and again: never silently accepted later
                await store.load("r")
            assert await c.keys("n:*") == []  # nothing was written
        finally:
            await c.aclose()

    asyncio.run(main())


def test_async_store_constructed_directly_probes_before_its_first_operation(durable_server, namespace):
    async def main() -> None:
        c = aredis.Redis(host=durable_server.host, port=durable_server.port)
        try:
            store = AsyncCheckpointStore(c, namespace=namespace)
            assert store.probe_report is None
            # concurrent first operations: one probe, both proceed
            a, b = await asyncio.gather(store.load("none"), store.info("none"))
            assert a is None and b.generation == 0
            assert store.probe_report is not None and store.probe_report.ok
            lease = await store.acquire("r", owner="a", ttl=30)
            assert await lease.commit({"n": 1}) == 1
            assert (await store.load("r")).state == {"n": 1}
            await c.delete(*await c.keys(f"{namespace}:*"))
        finally:
            await c.aclose()

    asyncio.run(main())


# --------------------------------------------------------------------------- release / renew whose reply is lost


def _frozen(server, seconds: float | None = None):
    """SIGSTOP ``server`` (it accepts connections and never answers); with ``seconds``, a timer
    that SIGCONTs it then (else the caller does)."""
    os.kill(server.pid, signal.SIGSTOP)
    if seconds is not None:
        timer = threading.Timer(seconds, os.kill, (server.pid, signal.SIGCONT))
        timer.start()
        return timer
    return None


@pytest.mark.parametrize("op", ["release", "renew"])
def test_release_and_renew_that_time_out_say_their_outcome_is_unknown(make_server, op):
    server = make_server("valkey", appendonly="yes", appendfsync="always")
    store = CheckpointStore.from_url(server.url, namespace="n", retry=RetryPolicy(deadline_s=1.0))
    warm = store.acquire("w", owner="a", ttl=30)  # the scripts are cached on the server
    warm.renew()
    warm.release()
    lease = store.acquire("r", owner="a", ttl=30)
    _frozen(server)
    try:
        with pytest.raises(StoreUnavailableError) as failed:
            lease.renew(ttl=60) if op == "renew" else lease.release()
    finally:
        os.kill(server.pid, signal.SIGCONT)
    time.sleep(0.3)
    info = store.info("r")
    applied = info.lease_state == "released" if op == "release" else info.lease_ms_left > 31_000
    assert applied  # the "failed" write did happen once the server answered again ...
    assert failed.value.outcome_unknown  # ... so the error must not say it was not written
    store.close()


def test_release_resent_after_its_reply_was_lost_reports_true(make_server):
    server = make_server("valkey", appendonly="yes", appendfsync="always")
    store = CheckpointStore.from_url(server.url, namespace="n", socket_timeout=0.5,
                                     retry=RetryPolicy(deadline_s=10.0))
    store.acquire("w", owner="a", ttl=30).release()  # release.lua cached on the server
    lease = store.acquire("r", owner="a", ttl=30)
    timer = _frozen(server, 1.0)
    try:
        released = lease.release()  # times out at 0.5 s, applies at 1.0 s, and is resent
    finally:
        timer.join()
    assert store.info("r").lease_state == "released"
    assert released is True
    assert lease.release() is False  # a second call: no longer held by this token (unchanged)
    store.close()


def test_release_of_a_lease_someone_else_holds_is_false(store):
    old = store.acquire("r", owner="a", ttl=0.05)
    time.sleep(0.1)
    store.acquire("r", owner="b", ttl=30)
    assert old.release() is False
    assert store.info("r").lease_owner == "b" and store.info("r").lease_state == "held"
