"""Sentinel on loopback: a primary, one replica and three Sentinels (the server binary started
with ``--sentinel``: both valkey-server 9.1.2 and Redis 8.2.3's redis-server have the mode),
``down-after-milliseconds 1000``, quorum 2."""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path

import redis

from .binaries import find_server_binary
from .factory import ServerSet
from .processes import HOST, Process, ServerStartError, free_port, spawn
from .server import LocalServer
from .wait import WaitTimeout, wait_for

__all__ = ["LocalSentinel", "LocalSentinelSet", "SERVICE", "DOWN_AFTER_MS"]

SERVICE = "ckpt"
DOWN_AFTER_MS = 1000


class LocalSentinel:
    """One Sentinel process (``<server binary> sentinel.conf --sentinel``) on loopback."""

    def __init__(self, engine: str, primary: LocalServer, quorum: int = 2) -> None:
        self.binary = find_server_binary(engine)
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-ckpt-sentinel-{engine}-"))
        self.port = free_port()
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
        self._res = Process(self.dir)
        # as a LocalServer: stopped and removed at garbage collection and interpreter exit too
        self._finalizer = weakref.finalize(self, self._res.release)

    def start(self) -> LocalSentinel:
        """Start the Sentinel and wait until it answers; a start that fails leaves nothing
        behind (no process, no directory)."""
        try:
            self._res.proc = spawn([self.binary, str(self.conf), "--sentinel"], cwd=self.dir)
            c = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=0.5)
            try:
                wait_for(lambda: c.ping(), f"sentinel on {self.port}", timeout=10)
                # refresh each node's INFO every second (default 10 s): the test sees a settled
                # topology sooner, and Sentinel reconfigures a returning old primary sooner
                c.execute_command("SENTINEL DEBUG", "info-period", 1000)
            finally:
                c.close()
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        self._finalizer()


class LocalSentinelSet(ServerSet):
    """A primary, one replica, three Sentinels (``make``: see :class:`ServerSet`);
    :class:`ServerStartError` when the engine cannot run in sentinel mode."""

    def __init__(self, engine: str, make: Callable[..., LocalServer] | None = None) -> None:
        super().__init__(engine, make)
        self.sentinels: list[LocalSentinel] = []

    def build(self) -> None:
        primary = self.make(self.engine, appendonly="yes", appendfsync="always")
        self.servers.append(primary)
        self.servers.append(self.make(self.engine, replica_of=(HOST, primary.port),
                                      appendonly="yes", appendfsync="always"))
        try:
            for _ in range(3):
                self.sentinels.append(LocalSentinel(self.engine, primary).start())
        except (OSError, WaitTimeout) as exc:
            raise ServerStartError(f"cannot run {self.engine} in sentinel mode: {exc}") from exc
        self.wait_healthy()

    def cleanup(self) -> None:
        for s in self.sentinels:
            s.cleanup()
        super().cleanup()

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
        wait_for(self.healthy, "Sentinels agreeing on a primary with an online replica", timeout=timeout, every=0.1)
