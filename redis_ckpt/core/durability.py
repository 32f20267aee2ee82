"""What a commit (and an acquire) waits for before it returns.

Every write that matters is followed, on the same connection and in the same
pipeline, by ``WAITAOF 1 <n> <timeout>`` (and ``WAIT <n> <timeout>`` where the
policy only needs replicas to have *received* the write). WAITAOF counts only the
calling connection's own earlier writes, so it must never run on another connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..errors import InvalidOptionError

__all__ = ["Durability", "Confirmation"]


@dataclass(frozen=True)
class Confirmation:
    """What the server confirmed after one write."""

    local: int
    replicas: int


@dataclass(frozen=True)
class Durability:
    """The confirmations a write needs before it is acknowledged.

    ``Durability()`` (the default) waits for the local AOF fsync only.
    ``Durability.replicas_received(n)`` also waits until n replicas received the write
    (``WAIT``, ~1-2 ms). ``Durability.replicas_fsynced(n)`` waits until n replicas wrote it
    to their own AOF (``WAITAOF``, ~1 s a call: replicas ack once a second).
    There is no mode without the local fsync.
    """

    replicas: int = 0
    replica_fsync: bool = False
    timeout_ms: int = 5000

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise InvalidOptionError("replicas must be >= 0", argument="replicas")
        if self.timeout_ms <= 0:
            # WAITAOF/WAIT with timeout 0 block forever: never allowed.
            raise InvalidOptionError("timeout_ms must be > 0 (a zero timeout would block forever)",
                                     argument="timeout_ms")
        if self.replica_fsync and self.replicas == 0:
            raise InvalidOptionError("replica_fsync needs replicas >= 1", argument="replica_fsync")

    @classmethod
    def local(cls, *, timeout_ms: int = 5000) -> Durability:
        return cls(0, False, timeout_ms)

    @classmethod
    def replicas_received(cls, n: int = 1, *, timeout_ms: int = 5000) -> Durability:
        return cls(n, False, timeout_ms)

    @classmethod
    def replicas_fsynced(cls, n: int = 1, *, timeout_ms: int = 5000) -> Durability:
        return cls(n, True, timeout_ms)

    @property
    def label(self) -> str:
        if self.replicas == 0:
            return "local-fsync"
        kind = "fsynced" if self.replica_fsync else "received"
        return f"local-fsync+{self.replicas}-replicas-{kind}"

    def commands(self) -> list[tuple[object, ...]]:
        """The commands to pipeline right after the write, on the same connection."""
        return list(self._commands)

    @cached_property
    def _commands(self) -> tuple[tuple[object, ...], ...]:  # built once: every commit sends them
        cmds: list[tuple[object, ...]] = [
            ("WAITAOF", 1, self.replicas if self.replica_fsync else 0, self.timeout_ms)
        ]
        if self.replicas and not self.replica_fsync:
            cmds.append(("WAIT", self.replicas, self.timeout_ms))
        return tuple(cmds)

    def read(self, replies: list[object]) -> Confirmation:
        """Turn the replies of :meth:`commands` into counts (exceptions re-raised)."""
        for r in replies:
            if isinstance(r, BaseException):
                raise r
        waitaof = replies[0]
        local, replicas = int(waitaof[0]), int(waitaof[1])  # type: ignore[index]
        if self.replicas and not self.replica_fsync:
            replicas = int(replies[1])  # type: ignore[arg-type]
        return Confirmation(local, replicas)

    def satisfied(self, c: Confirmation) -> bool:
        return c.local >= 1 and c.replicas >= self.replicas
