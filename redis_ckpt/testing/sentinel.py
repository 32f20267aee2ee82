"""Sentinel on loopback: a primary, one replica and three Sentinels (the server binary started
with ``--sentinel``: both valkey-server 9.1.2 and Redis 8.2.3's redis-server have the mode),
``down-after-milliseconds 1000``, quorum 2."""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .binaries import find_server_binary
from .factory import ServerSet
from .processes import HOST, Process, ServerStartError, free_port, spawn
from .server import LocalServer
from .wait import WaitTimeout, wait_for

__all__ = ["LocalSentinel", "LocalSentinelSet", "SERVICE", "DOWN_AFTER_MS"]

SERVICE = "ckpt"
DOWN_AFTER_MS = 1000
#: how many ports a Sentinel tries before its start fails (one taken by another process each time)
PORT_ATTEMPTS = 5
LOG_NAME = "sentinel.log"


class _PortTaken(ServerStartError):
    """The Sentinel exited because another process bound its port first."""


class LocalSentinel:
    """One Sentinel process (``<server binary> sentinel.conf --sentinel``) on loopback."""

    def __init__(self, engine: str, primary: LocalServer, quorum: int = 2) -> None:
        self.binary = find_server_binary(engine)
        self.dir = Path(tempfile.mkdtemp(prefix=f"redis-ckpt-sentinel-{engine}-"))
        self.conf = self.dir / "sentinel.conf"
        self._monitor = f"sentinel monitor {SERVICE} {HOST} {primary.port} {quorum}"
        self.port = free_port()
        self._write_conf()
        self._res = Process(self.dir)
        # as a LocalServer: stopped and removed at garbage collection and interpreter exit too
        self._finalizer = weakref.finalize(self, self._res.release)

    def _write_conf(self) -> None:
        self.conf.write_text("\n".join([
            f"port {self.port}",
            f"bind {HOST}",
            "protected-mode no",
            "daemonize no",
            f'dir "{self.dir}"',
            f'logfile "{self.dir / LOG_NAME}"',
            self._monitor,
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SERVICE} 10000",
            f"sentinel parallel-syncs {SERVICE} 1",
        ]) + "\n")

    def start(self) -> LocalSentinel:
        """Start the Sentinel and wait until it answers; a start that fails leaves nothing
        behind (no process, no directory).

        The port free_port() found may be taken by another process before the Sentinel binds
        it: the Sentinel then exits (EADDRINUSE) and is started again on a new port, up to
        ``PORT_ATTEMPTS`` times in all, as a LocalServer is.
        """
        try:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                try:
                    self._spawn()
                    return self
                except _PortTaken:
                    if attempt == PORT_ATTEMPTS:
                        raise
                self.port = free_port()
                self._write_conf()
        except BaseException:
            self.cleanup()
            raise
        raise AssertionError("unreachable: the last attempt returned or raised")

    def _spawn(self) -> None:
        self._res.stop()  # a Sentinel that lost the race for its port: gone already, reaped here
        log = self.dir / LOG_NAME
        offset = log.stat().st_size if log.exists() else 0
        proc = self._res.proc = spawn([self.binary, str(self.conf), "--sentinel"], cwd=self.dir)
        c = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5,
                        retry=Retry(NoBackoff(), 0), decode_responses=True)  # one attempt a poll: the loop retries

        def ours() -> bool:
            """True once our Sentinel answers; another process that answers on the port (ours
            will exit with EADDRINUSE) or one that does not answer is "not yet"."""
            if proc.poll() is not None:
                written = log.read_bytes()[offset:] if log.exists() else b"(no log)"
                tail = "\n".join(written.decode("utf-8", "replace").strip().splitlines()[-10:])
                if "Address already in use" in tail:
                    raise _PortTaken(f"port {HOST}:{self.port} was taken before the Sentinel bound it\n{tail}")
                raise ServerStartError(f"sentinel ({self.binary}) exited with code {proc.returncode} "
                                       f"on {HOST}:{self.port}\n{tail}")
            return int(c.info("server").get("process_id", -1)) == proc.pid

        try:
            wait_for(ours, f"sentinel on {self.port}", timeout=10)
            # refresh each node's INFO every second (default 10 s): the test sees a settled
            # topology sooner, and Sentinel reconfigures a returning old primary sooner
            c.execute_command("SENTINEL DEBUG", "info-period", 1000)
        finally:
            c.close()

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
