"""The one seam between redis-py's exceptions and redis-ckpt's errors.

Inside an operation, :func:`failure` turns what redis-py (or the socket) raised into the
neutral failures the core's flows handle (:class:`~redis_ckpt.core.ops.ReplyError`,
:class:`~redis_ckpt.core.ops.ConnectionLost`), the original kept as ``__cause__``. At the
edge of an operation, :func:`checkpoint_error` turns what still escapes into a
:class:`~redis_ckpt.errors.CheckpointError`: :class:`StoreUnavailableError` (unreachable,
authentication required or failed) or :class:`ServerError`. No other module translates
redis-py's exceptions.
"""

from __future__ import annotations

from typing import Any, NoReturn

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, ReadOnlyError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.ops import ConnectionLost, Failure, ReplyError
from ..errors import CheckpointError, ServerError, StoreUnavailableError

__all__ = ["failure", "in_place", "demoted", "DEMOTED", "checkpoint_error", "reraise", "unavailable_message", "timed_out",
           "UNREACHABLE"]

#: what means "the connection broke, timed out, or the server cannot serve yet" (redis-py's
#: BusyLoadingError, LOADING, and AuthenticationError are ConnectionErrors; the socket's own too)
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, ConnectionLost)

try:  # what a Cluster client raises (not a RedisError) when no startup node answers
    from redis.exceptions import RedisClusterUnreachableError as _ClusterUnreachable
except ImportError:  # pragma: no cover - an older redis-py raised a ConnectionError there
    _ClusterUnreachable = RedisConnectionError

#: how a Cluster client's RedisClusterException (not a RedisError) says that no startup node
#: could be used to read the slot map: unreachable, or it refused the client (a wrong or
#: missing password, cluster mode not enabled) - the plain class, not the unreachable one
_CLUSTER_NOT_CONNECTED = "Redis Cluster cannot be connected"


def failure(exc: BaseException) -> BaseException:
    """The neutral failure a flow gets for ``exc``; anything but a redis-py or socket error
    (a bug, a KeyboardInterrupt) as it is."""
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, UNREACHABLE):
        out: Failure = ConnectionLost(str(exc), timed_out=isinstance(exc, (RedisTimeoutError, TimeoutError)),
                                      kind=type(exc).__name__)
    elif isinstance(exc, RedisError):
        code = _stripped_code(exc)  # redis-py drops the code from the message (READONLY, OOM, ...): put back
        out = ReplyError(f"{code} {exc}" if code else str(exc), kind=type(exc).__name__)
    else:
        return exc
    out.__cause__ = exc
    return out


def _stripped_codes() -> dict[type[BaseException], str]:
    """The error classes redis-py's parser makes of an error reply whose first word (its code)
    it then drops from the message, each with that code (one class, one code)."""
    try:
        from redis._parsers.base import BaseParser
    except ImportError:  # pragma: no cover - a redis-py without it: the codes the store acts on
        return {ReadOnlyError: "READONLY", MasterDownError: "MASTERDOWN"}
    codes: dict[type[BaseException], list[str]] = {}
    for code, cls in BaseParser.EXCEPTION_CLASSES.items():
        if isinstance(cls, type):
            codes.setdefault(cls, []).append(code)
    return {cls: found[0] for cls, found in codes.items() if len(found) == 1}


_STRIPPED_CODES = _stripped_codes()


def _stripped_code(exc: RedisError) -> str | None:
    """The code redis-py dropped from ``exc``'s message (``status_code`` where redis-py keeps it).
    Never the generic ``ERR``: what follows it is the reply's own first word (a script's
    ``error_reply('EMPTY')`` reaches the client as ``ERR EMPTY``)."""
    code = getattr(exc, "status_code", None) or _STRIPPED_CODES.get(type(exc))
    if not code or code == "ERR" or str(exc).startswith(f"{code} "):
        return None
    return str(code)


def in_place(replies: list[Any]) -> list[Any]:
    """A Pipe's ``replies`` with every error reply (one inside an EXEC's list included) as
    a :class:`ReplyError`, changed in place."""
    for i, r in enumerate(replies):
        if isinstance(r, RedisError):
            replies[i] = failure(r)
        elif type(r) is list:
            for j, inner in enumerate(r):
                if isinstance(inner, RedisError):
                    r[j] = failure(inner)
    return replies


#: what a primary demoted to a replica answers: READONLY to a write, MASTERDOWN to anything
#: while its link to the new primary is down and it runs with ``replica-serve-stale-data no``
DEMOTED = (ReadOnlyError, MasterDownError)


def demoted(replies: list[Any]) -> bool:
    """Whether a Pipe's raw ``replies`` hold a READONLY or MASTERDOWN answer (one inside an
    EXEC's list included): the server was a primary and is a replica now (a failover, which
    managed services make by moving the DNS name). The command was not run; the flow retries it
    (see ``core.retry.NOT_YET``), and the driver drops the pool's idle connections, which point
    at the demoted node, so that the next one resolves the name again."""
    for r in replies:
        if isinstance(r, DEMOTED) or (type(r) is list and any(isinstance(x, DEMOTED) for x in r)):
            return True
    return False


def _cause(exc: BaseException, types: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``types`` in ``exc``'s chain of causes (``exc`` included)."""
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, types):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def timed_out(exc: BaseException) -> bool:
    """Whether a redis-py or socket timeout is among ``exc``'s causes (the server did not answer)."""
    return _cause(exc, (RedisTimeoutError, TimeoutError)) is not None


def unavailable_message(label: str, exc: BaseException, *, otherwise: str | None = None) -> str:
    """Why the server named ``label`` could not be used, for an error: authentication required
    (no password given), authentication failed (a wrong user name or password), or unreachable
    (``otherwise``, when given: what to say then)."""
    refused = _cause(exc, redis.AuthenticationError)
    if refused is None:
        return f"cannot reach {label}: {exc}" if otherwise is None else otherwise
    text = str(refused)
    if "authenticated" in text.lower() or "authentication required" in text.lower():
        return (f"{label} requires authentication: put the password in the URL "
                "(redis://:PASSWORD@host:port/db, or redis://USER:PASSWORD@... for an ACL user)")
    return f"authentication failed at {label}: the server rejected the user name or password ({text})"


def checkpoint_error(exc: BaseException, label: str) -> BaseException:
    """What an operation on the server ``label`` raises for ``exc``, which escaped its flow:
    a CheckpointError for a redis-py, socket or neutral failure; anything else as it is."""
    if isinstance(exc, CheckpointError):
        return exc
    if isinstance(exc, (*UNREACHABLE, _ClusterUnreachable)) or \
            (isinstance(exc, RedisClusterException) and str(exc).startswith(_CLUSTER_NOT_CONNECTED)):
        return StoreUnavailableError(unavailable_message(label, exc))
    if isinstance(exc, (ReplyError, RedisError)):
        kind = exc.kind if isinstance(exc, ReplyError) else type(exc).__name__
        return ServerError(f"{label}: the server answered {kind}: {exc}", run_id=None,
                           server_message=str(exc), outcome_unknown=True)
    return exc


def reraise(exc: BaseException, label: str) -> NoReturn:
    """Raise what an operation on the server ``label`` raises for ``exc`` (see
    :func:`checkpoint_error`), the original as its cause. Call it in an ``except`` block."""
    mapped = checkpoint_error(exc, label)
    if mapped is exc:
        raise exc
    raise mapped from exc
