"""What a confirmed write shares: the confirmations appended to its pipe, and their check.

WAITAOF counts only the calling connection's own earlier writes, so the confirmations ride
in the write's own pipe (one connection, one round trip): :func:`confirmed` appends them,
:func:`check_confirmed` reads their replies. Where the startup probe could read CONFIG, the
pipe also re-reads the durability settings (the config's ``watch``): a server whose settings
drifted since (``CONFIG SET maxmemory-policy allkeys-lru``) fails the write with
:class:`DurabilityError` instead of acknowledging it silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import DurabilityError
from ..config import StoreConfig
from ..ops import Cmd, Pipe, ReplyError, Script
from ..replies import hash_of

__all__ = ["confirmed", "check_confirmed"]


def confirmed(ops: Sequence[Cmd | Script], config: StoreConfig, route: str) -> Pipe:
    """``ops`` followed by the confirmations ``config`` asks for, as one Pipe to ``route``'s slot."""
    tail = config.confirmations
    return Pipe([*ops, *tail] if tail else list(ops), route=route)


def check_confirmed(replies: Sequence[Any], config: StoreConfig, *, what: str, run_id: str,
                    generation: int | None) -> None:
    """Check the confirmations at the end of a :func:`confirmed` pipe's ``replies`` (the
    replies of the write's own ops are the caller's): :class:`DurabilityError` carrying
    ``generation`` (None: not a commit) and the counts when fewer were confirmed than asked,
    or when the watched settings drifted."""
    tail = config.confirmations
    if not tail:
        return
    d = config.durability
    start = len(replies) - len(tail)
    n = len(tail) - (config.watch is not None)
    got_replies = replies[start:start + n]

    def unconfirmed(local: int, replicas: int, server_error: str | None = None) -> DurabilityError:
        return DurabilityError(
            run_id, what=what, generation=generation, local_asked=1, local_got=local,
            replicas_asked=d.replicas, replicas_got=replicas, timeout_ms=d.timeout_ms,
            server_error=server_error,
        )

    failed = next((r for r in got_replies if isinstance(r, ReplyError)), None)
    if failed is not None:
        raise unconfirmed(0, 0, str(failed))
    got = d.read(got_replies)
    if not d.satisfied(got):
        raise unconfirmed(got.local, got.replicas)
    if config.watch is not None:
        settings = replies[start + n]
        if isinstance(settings, Exception):
            drifted = [f"CONFIG GET, readable at start, now fails: {settings}"]
        else:
            drifted = config.watch.problems(hash_of(settings))
        if drifted:
            raise unconfirmed(got.local, got.replicas,
                              "the server's settings changed since the store started: " + "; ".join(drifted))
