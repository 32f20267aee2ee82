"""Start and stop real Redis / Valkey servers on loopback.

Used by the test suite and by the demo ("runs on an embedded local durable server when
no URL is given"). A :class:`LocalServer` is a child process of this Python process:

* it listens on ``127.0.0.1`` only, with ``appendonly yes`` / ``appendfsync always`` /
  ``maxmemory-policy noeviction`` unless told otherwise;
* its data directory is a fresh temporary directory, removed again by :meth:`LocalServer.cleanup`
  (or the context manager, or interpreter exit), unless the caller passes ``data_dir`` —
  then nothing in it is ever deleted;
* one server at a time per data directory: while one runs, it holds a lock on the directory
  and another one started on it (in any process) fails with :class:`ServerStartError`
  (two servers appending to one AOF and rewriting it under each other lose commits);
* it never outlives this process: it is stopped by ``__exit__``, by garbage collection of the
  object, at interpreter exit, and by the kernel if this process dies (see :mod:`.processes`).

Engines (where their binaries come from): see :mod:`.binaries`.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Union
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .binaries import ENGINES, ServerBinaryNotFound, find_server_binary, server_version
from .processes import HOST, Process, ServerStartError, free_port, spawn

__all__ = ["LocalServer", "DataDirInUse"]

CONF_NAME = "redis-ckpt-server.conf"
LOCK_NAME = "redis-ckpt-server.lock"
LOG_NAME = "server.log"
STDIO_NAME = "server.stdio.log"

#: directives the caller may not set through ``config`` (use the constructor arguments)
_RESERVED = frozenset({"port", "dir", "daemonize", "include"})

ConfigValue = Union[str, int, Sequence[str], None]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _config_lines(settings: Mapping[str, ConfigValue]) -> list[str]:
    lines = []
    for name, value in settings.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, int)) else list(value)
        for v in values:
            text = str(v)
            lines.append(f"{name} {text}" if text != "" else f'{name} ""')
    return lines


class LocalServer:
    """A Redis/Valkey server process on ``127.0.0.1``, durable by default.

    ``config`` overrides or extends the defaults; each value is written verbatim as the
    directive's arguments in the config file (quote them yourself where the server needs it,
    e.g. ``{"rename-command": 'CONFIG ""'}``), ``""`` becomes ``""``, a list writes the
    directive once per item, and ``None`` drops a default. ``port``, ``dir`` and ``daemonize``
    are managed by the object and cannot be set through ``config``.

    The server stops when the object is closed, garbage collected, or the interpreter exits.
    """

    def __init__(
        self,
        engine: str = "valkey",
        *,
        port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        config: Mapping[str, ConfigValue] | None = None,
        replica_of: tuple[str, int] | None = None,
        password: str | None = None,
        binary: str | None = None,
    ) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
        self._engine = engine
        self._binary = binary
        self._fixed_port = port is not None
        self._port = port
        self._replica_of = replica_of
        self._password = password
        self._config = {}
        for key, value in (config or {}).items():
            k = key.strip().lower()
            if k in _RESERVED:
                raise ValueError(f"config directive {k!r} is managed by LocalServer; use its arguments")
            self._config[k] = value
        if data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix=f"redis-ckpt-{engine}-"))
            owned: str | None = str(self._data_dir)
        else:
            self._data_dir = Path(data_dir).resolve()
            self._data_dir.mkdir(parents=True, exist_ok=True)
            owned = None
        self._res = Process(owned)
        self._finalizer = weakref.finalize(self, self._res.release)
        self._closed = False
        self._log_offsets: dict[str, int] = {}

    # ----------------------------------------------------------------- properties

    @property
    def engine(self) -> str:
        return self._engine

    @property
    def binary(self) -> str:
        """The server binary: the one given, else the engine's (:class:`ServerBinaryNotFound`
        when it is missing or not executable)."""
        if self._binary is None:
            self._binary = find_server_binary(self._engine)
        elif not (os.path.isfile(self._binary) and os.access(self._binary, os.X_OK)):
            raise ServerBinaryNotFound(self._engine, f"{self._binary} is not an executable file")
        return self._binary

    @property
    def version(self) -> str:
        return server_version(self.binary)

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server has not been started yet: no port picked")
        return self._port

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def config_file(self) -> Path:
        return self._data_dir / CONF_NAME

    @property
    def log_file(self) -> Path:
        return self._data_dir / LOG_NAME

    @property
    def pid(self) -> int | None:
        proc = self._res.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        proc = self._res.proc
        return proc is not None and proc.poll() is None

    @property
    def password(self) -> str | None:
        return self._password

    @property
    def url(self) -> str:
        auth = f":{quote(self._password, safe='')}@" if self._password is not None else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "-"
        state = "running" if self.running else "stopped"
        return f"<LocalServer {self._engine} {HOST}:{port} {state} dir={str(self._data_dir)!r}>"

    # ----------------------------------------------------------------- config

    def settings(self) -> dict[str, ConfigValue]:
        """The directives the config file will contain (defaults merged with ``config``)."""
        d = self._data_dir
        s: dict[str, ConfigValue] = {
            "bind": HOST,
            "protected-mode": "no",
            "appendonly": "yes",
            "appendfsync": "always",
            "save": "",
            "dbfilename": "dump.rdb",
            "appendfilename": "appendonly.aof",
            "logfile": _quote(str(d / LOG_NAME)),
            "maxmemory-policy": "noeviction",
            # a replica attached to this server gets its full sync now, not after 5 s of batching
            "repl-diskless-sync-delay": "0",
        }
        if self._password is not None:
            s["requirepass"] = _quote(self._password)
        if self._replica_of is not None:
            host, rport = self._replica_of
            s["replicaof"] = f"{host} {int(rport)}"
            if self._password is not None:
                s["masterauth"] = _quote(self._password)
        s.update(self._config)
        return s

    def _write_config(self) -> None:
        lines = [
            "# written by redis_ckpt.testing.LocalServer; rewritten on every start",
            f"port {self.port}",
            f"dir {_quote(str(self._data_dir))}",
            "daemonize no",
            *_config_lines(self.settings()),
        ]
        self.config_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> LocalServer:
        """Start the server and wait until it answers PING and has finished loading."""
        if self._closed:
            raise RuntimeError("this LocalServer has been cleaned up; create a new one")
        if self.running:
            return self
        binary = self.binary
        attempts = 1 if self._fixed_port else 5
        last: ServerStartError | None = None
        settings = self.settings()
        cluster = str(settings.get("cluster-enabled", "no")).strip('"').lower() == "yes" \
            and "cluster-port" not in settings
        for _ in range(attempts):
            if not self._fixed_port:
                self._port = free_port(cluster)
            try:
                self._spawn(binary, timeout)
            except _PortInUse as exc:
                last = exc
                continue
            self._fixed_port = True  # restart() comes back on the same port
            return self
        assert last is not None
        raise last

    def restart(self, timeout: float = 10.0) -> LocalServer:
        """Start again on the same port and data directory (after :meth:`kill` or :meth:`stop`);
        the server reloads its AOF."""
        if self._port is None:
            raise RuntimeError("restart() of a server that was never started; use start()")
        if self.running:
            self.stop()
        return self.start(timeout)

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        self._res.stop(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the server and wait for it; the data directory is kept (crash tests)."""
        self._res.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        """Stop the server and remove the data directory if this object created it."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # ----------------------------------------------------------------- clients

    def client(self, **kw: Any) -> redis.Redis:
        """A ``redis.Redis`` on this server (``decode_responses=False`` unless overridden)."""
        kw.setdefault("decode_responses", False)
        if self._password is not None:
            kw.setdefault("password", self._password)
        return redis.Redis(host=HOST, port=self.port, **kw)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server wrote (log file and stdout/stderr) since it was last started."""
        out = []
        for name in (STDIO_NAME, LOG_NAME):
            path = self._data_dir / name
            try:
                with open(path, "rb") as fh:
                    fh.seek(self._log_offsets.get(name, 0))
                    text = fh.read().decode("utf-8", "replace")
            except FileNotFoundError:
                continue
            tail = text.splitlines()[-lines:]
            if tail:
                out.append(f"--- {path} ---")
                out.extend(tail)
        return "\n".join(out) if out else "(the server wrote no log)"

    # ----------------------------------------------------------------- internals

    def _lock_data_dir(self) -> None:
        """Hold the data directory's lock until the server stops (Process.stop releases it),
        or raise ServerStartError when another server holds it."""
        if self._res.lock is not None:  # ours, its server gone behind our back (killed, crashed)
            self._res.stop()  # reaps it and releases the lock
        fd = os.open(self._data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirInUse(f"data directory {self._data_dir} is in use by another server") from None
        self._res.lock = fd

    def _spawn(self, binary: str, timeout: float) -> None:
        self._lock_data_dir()
        try:
            self._write_config()
            self._log_offsets = {}
            for name in (STDIO_NAME, LOG_NAME):
                try:
                    self._log_offsets[name] = (self._data_dir / name).stat().st_size
                except FileNotFoundError:
                    self._log_offsets[name] = 0
            with open(self._data_dir / STDIO_NAME, "ab") as stdio:
                proc = spawn([binary, str(self.config_file)], cwd=self._data_dir, output=stdio)
            self._res.proc = proc
            self._wait_ready(proc, timeout)
        except BaseException:
            self.kill()  # and the lock is released
            raise

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        last_error = "no answer yet"
        probe = redis.Redis(
            host=HOST,
            port=self.port,
            password=self._password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),  # one attempt per poll; the loop is the retry
            decode_responses=True,
        )
        try:
            while True:
                self._raise_if_exited(proc)
                try:
                    info = probe.info("server")
                    if int(info.get("process_id", -1)) != proc.pid:
                        # someone else answers on this port: ours will die with EADDRINUSE
                        last_error = f"another server (pid {info.get('process_id')}) answers on the port"
                    elif int(probe.info("persistence").get("loading", 1)) == 0:
                        return
                    else:
                        last_error = "still loading"
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                if time.monotonic() >= deadline:
                    self._raise_if_exited(proc)
                    raise ServerStartError(
                        f"{self._engine} server on {HOST}:{self.port} not ready after {timeout:.1f} s "
                        f"({last_error})\n{self.log_tail()}"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        finally:
            probe.close()

    def _raise_if_exited(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            return
        tail = self.log_tail()
        if "Address already in use" in tail:
            if not self._fixed_port:
                raise _PortInUse(f"port {self.port} was taken\n{tail}")
            raise ServerStartError(f"port {HOST}:{self.port} is already in use\n{tail}")
        raise ServerStartError(
            f"{self._engine} server ({self.binary}) exited with code {proc.returncode} "
            f"on {HOST}:{self.port}\n{tail}"
        )


class _PortInUse(ServerStartError):
    pass


class DataDirInUse(ServerStartError):
    """Another server runs on the data directory (a mistake of the caller, not an
    unavailable server: ServerFactory raises it whatever its 'unavailable' policy)."""
