"""The sync driver: :func:`drive`, the one trampoline that runs a flow on a target, and
:class:`NodeTarget`, the target of one server (a ``redis.Redis``, a Sentinel-managed client).

A flow (see :mod:`redis_ckpt.core.ops`) yields ops and receives their replies. ``drive``
answers ``Sleep`` and ``Deadline`` itself and hands every other op to ``target.do(op, until)``;
what ``do`` raises is thrown into the flow as ``target.failure(exc)`` (for the core's flows:
the neutral failures of :mod:`redis_ckpt.drivers.errors`), so ``try/except`` around a
``yield`` works. The Cluster driver's routing plan runs on the same trampoline with its own
actions (:mod:`redis_ckpt.drivers.cluster`).

Semantics a flow can rely on:

* ``Cmd`` is one command; its reply as redis-py's ``execute_command`` gives it, a server
  error thrown into the flow as a ``ReplyError``.
* ``Pipe`` is a non-transactional pipeline on **one connection** (WAITAOF must run on the
  connection that made the write), one reply per op, a server error in place as a
  ``ReplyError``, never thrown; NOSCRIPT is handled below the flow (see ``resp``).
* A broken or timed-out connection is thrown into the flow as ``ConnectionLost``.
* ``Sleep`` pauses (retry back-off), cut short at the deadline.
* ``Deadline(seconds)`` starts the operation's clock unless the driver was given a deadline
  already (the first one wins: an operation is whatever the driver runs) and is answered with
  the deadline, a ``time.monotonic()`` value. From then on every op ends by it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol, TypeVar

from ..core.ops import Cmd, Deadline, Pipe, ScriptSource, Sleep
from .discovery import bound_discovery
from .errors import DEMOTED, demoted, failure, in_place
from .resp import command_sync, lean_sync, numbers_as_text, pipe_sync, time_left

__all__ = ["drive", "SyncTarget", "NodeTarget", "PlanTarget"]

T = TypeVar("T")


class SyncTarget(Protocol):
    def do(self, op: Any, until: float | None) -> Any:
        """Carry out ``op`` by ``until`` (None: no deadline); its reply."""

    def failure(self, exc: BaseException) -> BaseException:
        """What the flow gets thrown when ``do`` raised ``exc``."""


def drive(flow: Generator[Any, Any, T], target: SyncTarget, *, deadline_s: float | None = None,
          until: float | None = None) -> T:
    """Drive ``flow`` to completion on ``target``.

    The operation ends by ``until`` (a ``time.monotonic()`` value) or ``deadline_s`` from now;
    without either, by the first ``Deadline`` the flow yields (none: no deadline).
    """
    if until is None and deadline_s is not None:
        until = time.monotonic() + deadline_s
    do, failed = target.do, target.failure
    send, throw = flow.send, flow.throw
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = send(reply) if error is None else throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            if isinstance(op, Sleep):
                time.sleep(op.seconds if until is None else max(0.0, min(op.seconds, until - time.monotonic())))
            elif isinstance(op, Deadline):
                if until is None:
                    until = time.monotonic() + op.seconds
                reply = until
            else:
                reply = do(op, until)
        except Exception as exc:  # handed to the flow, which decides; never swallowed here
            error = failed(exc)


class NodeTarget:
    """The core's ops on one server's client (a ``redis.Redis``, a Sentinel-managed client, or
    any client with ``execute_command`` and ``pipeline``, driven through its own methods)."""

    def __init__(self, client: Any, scripts: ScriptSource) -> None:
        self.client = client
        self.scripts = scripts
        self.lean = lean_sync(client)
        bound_discovery(client)  # a Sentinel-managed client: the Sentinels answer by the deadline too

    failure = staticmethod(failure)

    def do(self, op: Any, until: float | None) -> Any:
        if isinstance(op, Pipe):
            time_left(until)
            replies = pipe_sync(self.client, op, self.scripts, until)
            if demoted(replies):
                self.reconnect()
            return in_place(replies)
        if isinstance(op, Cmd):
            try:
                if self.lean:
                    return command_sync(self.client, op.args, until)
                time_left(until)
                return self.client.execute_command(*numbers_as_text(op.args))
            except DEMOTED:
                self.reconnect()
                raise
        raise TypeError(f"a flow yielded {op!r}, not an op")

    def reconnect(self) -> None:
        """Drop the pool's idle connections, and a single-connection client's own one (under
        its lock): they point at a primary demoted to a replica (see ``errors.demoted``); the
        next one resolves the server's name again."""
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            pool.disconnect(inuse_connections=False)
        single = getattr(self.client, "connection", None)
        if single is not None:
            with getattr(self.client, "single_connection_lock", None) or contextlib.nullcontext():
                single.disconnect()


class PlanTarget:
    """A driver's own plan (Cluster routing): its actions carried out by ``act``, failures
    thrown into the plan as they are (it speaks redis-py's exceptions)."""

    def __init__(self, act: Callable[[Any, float | None], Any]) -> None:
        self.do = act

    @staticmethod
    def failure(exc: BaseException) -> BaseException:
        return exc
