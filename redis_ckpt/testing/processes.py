"""Child processes that never outlive this Python process, and free ports on loopback.

A server (or Sentinel) started here is stopped by its owner, at garbage collection, at
interpreter exit, and (Linux, when started from the main thread) by the kernel through
``PR_SET_PDEATHSIG`` if this process dies without running its exit handlers.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Callable

__all__ = [
    "HOST",
    "CLUSTER_BUS_OFFSET",
    "ServerStartError",
    "die_with_parent",
    "spawn",
    "Process",
    "free_port",
]

HOST = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10000
CLUSTER_MAX_PORT = 65535 - CLUSTER_BUS_OFFSET


class ServerStartError(RuntimeError):
    """The server process did not come up; the message includes the tail of its log."""

    def summary(self, lines: int = 6) -> str:
        """The message's first line, then the last ``lines`` lines of the log it quotes,
        indented: the server's own reason, without the whole tail."""
        first, _, rest = str(self).partition("\n")
        tail = [line.strip() for line in rest.splitlines() if line.strip() and not line.startswith("--- ")]
        return "\n".join([first, *(f"  {line}" for line in tail[-lines:])])


_PR_SET_PDEATHSIG = 1
_libc: Any = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl  # noqa: B018 - resolve the symbol now, not in the child
    except (OSError, AttributeError):
        _libc = None


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGKILL the child when this process dies, or None
    where that cannot be had (not Linux; not the main thread: PDEATHSIG fires when the
    *thread* that forked exits, so it is only safe from the main thread)."""
    if _libc is None or threading.current_thread() is not threading.main_thread():
        return None
    libc, parent_pid = _libc, os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(argv: Sequence[str], *, cwd: str | os.PathLike[str], output: IO[bytes] | int = subprocess.DEVNULL,
          ) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (a terminal's Ctrl-C goes to us, not to it), stdin
    closed, stdout and stderr to ``output``; it dies with this process where the kernel can tell."""
    return subprocess.Popen(
        list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        start_new_session=True, preexec_fn=die_with_parent(),
    )


_holding_locks: weakref.WeakSet[Process] = weakref.WeakSet()


def _drop_locks_in_child() -> None:
    """In a child forked from this process (a multiprocessing worker): close the lock
    descriptors it inherited, which would hold the locks until it exits; they are the parent's."""
    for res in list(_holding_locks):
        lock, res.lock = res.lock, None
        if lock is not None:
            os.close(lock)
    _holding_locks.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


class Process:
    """What must be released even if its owner is never closed explicitly: the process and
    the directory the owner created for it."""

    def __init__(self, owned_dir: str | Path | None) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.owned_dir = None if owned_dir is None else str(owned_dir)
        self._lock: int | None = None

    @property
    def lock(self) -> int | None:
        """A descriptor holding a lock for as long as the process runs (see LocalServer);
        this process's own only (a forked child closes its copy)."""
        return self._lock

    @lock.setter
    def lock(self, fd: int | None) -> None:
        self._lock = fd
        if fd is not None:
            _holding_locks.add(self)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        try:
            self._stop(sig, grace)
        finally:
            lock, self.lock = self.lock, None
            if lock is not None:
                os.close(lock)  # only once the process is gone

    def _stop(self, sig: int, grace: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass  # exited between poll() and the signal
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        else:
            proc.wait()

    def release(self) -> None:
        self.stop()
        if self.owned_dir is not None:
            owned, self.owned_dir = self.owned_dir, None
            try:
                shutil.rmtree(owned)
            except FileNotFoundError:
                pass  # already gone


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port(cluster: bool = False) -> int:
    """A port free on loopback right now (a cluster node also needs port + 10000 for its bus)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if not cluster or (port <= CLUSTER_MAX_PORT and _bindable(port + CLUSTER_BUS_OFFSET)):
            return port
    raise ServerStartError("found no free port pair for a cluster node on 127.0.0.1")
