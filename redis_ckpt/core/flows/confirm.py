"""What a confirmed write shares: the confirmations appended to its pipe, and their check.

WAITAOF counts only the calling connection's own earlier writes, so the confirmations ride
in the write's own pipe (one connection, one round trip): :func:`confirmed` appends them,
:func:`check_confirmed` reads their replies. Where the startup probe could read CONFIG, a
write also re-reads the durability settings when the check is due (the config's ``watch``,
see :class:`~redis_ckpt.core.config.DriftWatch`: at most every ``drift_check_s``, at once
after a sign of trouble): a server whose settings drifted since (``CONFIG SET
maxmemory-policy allkeys-lru``) fails that write with :class:`DurabilityError` instead of
acknowledging it silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...errors import DurabilityError
from ..config import StoreConfig
from ..contract import damaged_refusal, refusal
from ..ops import Cmd, Pipe, ReplyError, Script
from ..replies import hash_of

__all__ = ["confirmed", "check_confirmed", "drift_unread", "confirmed_reply"]


def confirmed(ops: Sequence[Cmd | Script], config: StoreConfig, route: str) -> Pipe:
    """``ops`` followed by the confirmations ``config`` asks for (and the drift check when it
    is due), as one Pipe to ``route``'s slot."""
    tail = config.confirmations
    check = config.drift_check
    if check is not None and config.watch.due(config.drift_check_s):  # type: ignore[union-attr]
        tail = (*tail, check)
    return Pipe([*ops, *tail] if tail else list(ops), route=route)


def _is_settings(reply: Any) -> bool:
    """Whether ``reply`` answers the drift check's CONFIG GET. It is told apart from the
    confirmations' own by its shape, whatever the protocol: a map (RESP3) or a list of names
    and values (RESP2), where WAITAOF answers a list of two counts and WAIT a count; an error
    naming CONFIG (renamed, denied) where theirs name WAITAOF or WAIT."""
    if isinstance(reply, dict):
        return True
    if isinstance(reply, list):
        return bool(reply) and isinstance(reply[0], (bytes, str))
    return isinstance(reply, ReplyError) and "config" in str(reply).lower()


def drift_unread(replies: Sequence[Any], config: StoreConfig) -> None:
    """For a write refused before its confirmations are checked (FENCED, CONFLICT, ...): a
    drift check it carried went unread, so the next write carries one."""
    if config.watch is not None and replies and _is_settings(replies[-1]):
        config.watch.alarm()


def check_confirmed(replies: Sequence[Any], config: StoreConfig, *, what: str, run_id: str,
                    generation: int | None) -> None:
    """Check the confirmations at the end of a :func:`confirmed` pipe's ``replies`` (the
    replies of the write's own ops are the caller's): :class:`DurabilityError` carrying
    ``generation`` (None: not a commit) and the counts when fewer were confirmed than asked,
    or when the watched settings drifted (the drift check's answer, when the pipe carried
    it, is the last reply)."""
    tail = config.confirmations
    if not tail:
        return
    d, watch = config.durability, config.watch
    end = len(replies)
    settings: Any = None
    if watch is not None and _is_settings(replies[-1]):
        end -= 1
        settings = replies[end]
    got_replies = replies[end - len(tail):end]

    def unconfirmed(local: int, replicas: int, server_error: str | None = None) -> DurabilityError:
        if watch is not None:
            watch.alarm()  # a sign of trouble: the next write checks the settings too
        return DurabilityError(
            run_id, what=what, generation=generation, local_asked=1, local_got=local,
            replicas_asked=d.replicas, replicas_got=replicas, timeout_ms=d.timeout_ms,
            server_error=server_error,
        )

    first = got_replies[0]
    if len(got_replies) == 1 and type(first) is list and len(first) == 2 and type(first[0]) is type(first[1]) is int \
            and first[0] >= 1 and first[1] >= d.replicas:
        pass  # the common case, WAITAOF alone and satisfied (what d.read and d.satisfied say)
    else:
        failed = next((r for r in got_replies if isinstance(r, ReplyError)), None)
        if failed is not None:
            raise unconfirmed(0, 0, str(failed))
        got = d.read(got_replies)
        if not d.satisfied(got):
            raise unconfirmed(got.local, got.replicas)
        first = [got.local, got.replicas]
    if settings is not None:
        if isinstance(settings, Exception):
            drifted = [f"CONFIG GET, readable at start, now fails: {settings}"]
        else:
            drifted = watch.problems(hash_of(settings))  # type: ignore[union-attr]
        if drifted:
            raise unconfirmed(int(first[0]), int(first[1]),
                              "the server's settings changed since the store started: " + "; ".join(drifted))


def confirmed_reply(replies: Sequence[Any], config: StoreConfig, *, what: str, run_id: str) -> Any:
    """The first reply of a :func:`confirmed` pipe that is not a commit (delete, revoke): its
    error raised as it is (a DAMAGED answer as CorruptCheckpointError; the drift check it carried marked unread), else its confirmations
    checked and the reply returned."""
    if isinstance(replies[0], Exception):
        drift_unread(replies, config)
        if isinstance(replies[0], ReplyError) and replies[0].code == "DAMAGED":  # nothing written
            raise damaged_refusal(run_id, refusal(replies[0]))
        raise replies[0]
    check_confirmed(replies, config, what=what, run_id=run_id, generation=None)
    return replies[0]
