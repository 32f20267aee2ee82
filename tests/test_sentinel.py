"""Sentinel: a store follows the primary Sentinel names, probes the replicas its policy counts
on, and keeps every acknowledged commit and every fencing token through a ``kill -9``
failover.

Topology on loopback: a primary, one replica and three Sentinels (the server binary started
with ``--sentinel``: both valkey-server 9.1.2 and Redis 8.2.3's redis-server have the mode),
``down-after-milliseconds 1000``, quorum 2.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.sentinel as aiosentinel
from redis.sentinel import Sentinel

from redis_ckpt import CheckpointStore, Durability, NonDurableServerError, check_server
from redis_ckpt.testing import local_server as _local_server
from redis_ckpt.testing.local_server import HOST, LocalServer, _free_port, find_server_binary
from redis_ckpt.aio import AsyncCheckpointStore
from test_cluster import RunLog, storm_worker, verify, wait_for

ENGINES = ["valkey", "redis"]
SERVICE = "ckpt"
DOWN_AFTER_MS = 1000


class LocalSentinel:
    """One Sentinel process (``<server binary> sentinel.conf --sentinel``) on loopback."""

    def __init__(self, engine: str, primary: LocalServer, quorum: int = 2) -> None:
        self.binary = find_server_binary(engine)
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-ckpt-sentinel-{engine}-"))
        self.port = _free_port()
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text("\n".join([
            f"port {self.port}",
            f"bind {HOST}",
            "protected-mode no",
            "daemonize no",
            f'dir "{self.dir}"',
            f'logfile "{self.dir / "sentinel.log"}"',
            f"sentinel monitor {SERVICE} {HOST} {primary.port} {quorum}",
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} 10000",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalSentinel:
        preexec = None
        if _local_server._libc is not None and threading.current_thread() is threading.main_thread():
            preexec = _local_server._pdeathsig_preexec(os.getpid())  # never outlive the test process
        self.proc = subprocess.Popen([self.binary, str(self.conf), "--sentinel"], cwd=self.dir,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec)
        c = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=0.5)
        try:
            wait_for(lambda: c.ping(), f"sentinel on {self.port}", timeout=10)
            # refresh each node's INFO every second (default 10 s): the test sees a settled
            # topology sooner, and Sentinel reconfigures a returning old primary sooner
            c.execute_command("SENTINEL DEBUG", "info-period", 1000)
        finally:
            c.close()
        return self

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def server_unavailable(reason: str) -> Any:
    """Same policy as conftest: skip locally, fail in CI."""
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(f"server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


class LocalSentinelSet:
    """A primary, one replica, three Sentinels. ``make`` is conftest's server factory."""

    def __init__(self, engine: str, make: Callable[..., LocalServer]) -> None:
        self.engine = engine
        self.make = make
        self.servers: list[LocalServer] = []
        self.sentinels: list[LocalSentinel] = []

    def start(self) -> LocalSentinelSet:
        try:
            primary = self.make(self.engine, appendonly="yes", appendfsync="always")
            self.servers.append(primary)
            self.servers.append(self.make(self.engine, replica_of=(HOST, primary.port),
                                          appendonly="yes", appendfsync="always"))
            try:
                for _ in range(3):
                    self.sentinels.append(LocalSentinel(self.engine, primary).start())
            except (OSError, AssertionError) as exc:
                server_unavailable(f"cannot run {self.engine} in sentinel mode: {exc}")
            self.wait_healthy()
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        for s in self.sentinels:
            s.cleanup()
        for s in reversed(self.servers):
            s.cleanup()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(HOST, s.port) for s in self.sentinels]

    def url(self, db: int = 0) -> str:
        return "redis+sentinel://" + ",".join(f"{h}:{p}" for h, p in self.addresses) + f"/{SERVICE}/{db}"

    def primary(self) -> LocalServer:
        c = redis.Redis(host=HOST, port=self.sentinels[0].port)
        try:
            _, port = c.sentinel_get_master_addr_by_name(SERVICE)
        finally:
            c.close()
        return next(s for s in self.servers if s.port == int(port))

    def healthy(self) -> bool:
        """One primary every Sentinel agrees on, its replica online, every Sentinel knowing the others."""
        ports = set()
        for s in self.sentinels:
            c = redis.Redis(host=HOST, port=s.port)
            try:
                m = c.sentinel_master(SERVICE)
                if m.get("is_sdown") or m.get("is_odown") or int(m.get("num-other-sentinels", 0)) < 2 \
                        or int(m.get("num-slaves", 0)) < 1:
                    return False
                ports.add(int(m["port"]))
                replicas = c.sentinel_slaves(SERVICE)
                if not any(not r.get("is_sdown") and r.get("master-link-status") == "ok" for r in replicas):
                    return False
            finally:
                c.close()
        if len(ports) != 1:
            return False
        primary = next(s for s in self.servers if s.port in ports)
        info = primary.client().info("replication")
        return info.get("role") == "master" and any(
            isinstance(v, dict) and v.get("state") == "online" for k, v in info.items() if k.startswith("slave"))

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_for(self.healthy, "Sentinels agreeing on a primary with an online replica", timeout, every=0.1)


@pytest.fixture(scope="module", params=ENGINES, ids=ENGINES)
def sentinels(request: pytest.FixtureRequest, make_module_server: Any) -> Iterator[LocalSentinelSet]:
    s = LocalSentinelSet(request.param, make_module_server).start()
    try:
        yield s
    finally:
        s.cleanup()


# --------------------------------------------------------------------------- on Sentinel


@pytest.mark.server
def test_store_from_sentinel_url_and_object(sentinels, namespace):
    primary = sentinels.primary()
    with CheckpointStore.from_url(sentinels.url(), namespace=namespace) as store:
        assert store.probe_report.ok and store.server == sentinels.url()
        assert any(f.check == "sentinel" and f"{HOST}:{primary.port}" in f.message for f in store.probe_report.findings)
        assert all(f.message.startswith(f"{HOST}:{primary.port}: ")
                   for f in store.probe_report.findings if f.check == "live-waitaof")
        with store.acquire("s-job", owner="w", ttl=10) as lease:
            assert lease.commit({"n": 1}) == 1
        assert store.load("s-job").state == {"n": 1}
        assert store.runs() == ["s-job"]
    sentinel = Sentinel(sentinels.addresses, socket_timeout=5)
    store = CheckpointStore.from_sentinel(sentinel, SERVICE, namespace=namespace)
    assert store.server.startswith("redis+sentinel://") and store.server.endswith(f"/{SERVICE}/0")
    assert store.load("s-job").state == {"n": 1}
    store.close()
    for s in sentinel.sentinels:  # the Sentinel object stays the caller's to close
        s.close()
    assert check_server(sentinels.url(), namespace=namespace).ok


@pytest.mark.server
def test_replica_settings_are_probed_when_the_policy_counts_on_them(sentinels, namespace):
    replica = next(s for s in sentinels.servers if s is not sentinels.primary())
    replica.client().config_set("appendfsync", "no")
    try:
        with CheckpointStore.from_url(sentinels.url(), namespace=namespace) as store:
            assert store.probe_report.ok  # the local policy does not count on the replica
        with pytest.raises(NonDurableServerError) as e:
            CheckpointStore.from_url(sentinels.url(), namespace=namespace, durability=Durability.replicas_received(1))
        assert f"{HOST}:{replica.port} (replica of {HOST}:{sentinels.primary().port}): appendfsync is 'no'" in str(e.value)
    finally:
        replica.client().config_set("appendfsync", "always")


@pytest.mark.server
def test_async_store_on_sentinel(sentinels, namespace):
    async def scenario() -> None:
        store = await AsyncCheckpointStore.from_url(sentinels.url(), namespace=namespace,
                                                    durability=Durability.replicas_received(1))
        assert store.probe_report.ok
        assert any("(replica of" in f.message for f in store.probe_report.findings)
        lease = await store.acquire("a-job", owner="w", ttl=10)
        assert await lease.commit({"n": 2}) == 1
        await lease.release()
        await store.close()
        sentinel = aiosentinel.Sentinel(sentinels.addresses, socket_timeout=5)
        store = await AsyncCheckpointStore.from_sentinel(sentinel, SERVICE, namespace=namespace)
        assert (await store.load("a-job")).state == {"n": 2}
        await store.close()
        for s in sentinel.sentinels:
            await s.aclose()

    asyncio.run(scenario())


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_fencing_and_acknowledged_commits_survive_sentinel_failover(engine, namespace, make_server):
    st = LocalSentinelSet(engine, make_server).start()
    try:
        store = CheckpointStore.from_url(st.url(), namespace=namespace,
                                         durability=Durability.replicas_fsynced(1, timeout_ms=3000))
        runs = [f"storm-{i}" for i in range(4)]
        highest: dict[str, int] = {}
        all_tokens: dict[str, list[int]] = {r: [] for r in runs}
        for _round in range(2):
            logs = [RunLog(r) for r in runs]
            stop, crashed = threading.Event(), []
            threads = [threading.Thread(target=storm_worker, args=(store, lg, stop, crashed)) for lg in logs]
            for t in threads:
                t.start()
            victim = st.primary()
            heir = next(s for s in st.servers if s is not victim)
            wait_for(lambda: all(len(lg.acked) >= 3 for lg in logs), "every run to commit before the kill")
            victim.kill()  # kill -9 in the middle of the storm
            killed_at = time.monotonic()
            wait_for(lambda: st.primary() is heir, "Sentinel to promote the replica", timeout=30, every=0.1)
            victim.restart()
            # Sentinel turns the old primary into a replica once it sees it again (its INFO
            # period can be 10 s); doing it right away is what Sentinel would do, sooner
            victim.client().replicaof(HOST, heir.port)
            st.wait_healthy()
            wait_for(lambda: all(sum(a[3] > killed_at for a in lg.acked) >= 3 for lg in logs),
                     "every run to commit again after the failover", timeout=30)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            assert not crashed, crashed
            for lg in logs:
                times = [a[3] for a in lg.acked]
                assert times[0] < killed_at < times[-1]
            verify(store, logs, highest)
            for lg in logs:
                all_tokens[lg.run].extend(lg.tokens)
        for r, tokens in all_tokens.items():
            assert len(set(tokens)) == len(tokens), f"{r}: a token was handed out twice across rounds"
        store.close()
    finally:
        st.cleanup()

