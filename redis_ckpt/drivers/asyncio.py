"""The asyncio driver: :func:`adrive`, the twin of :func:`redis_ckpt.drivers.sync.drive` (the
same semantics, see there), and :class:`AsyncNodeTarget`, the target of one server's
``redis.asyncio`` client. Every op runs under ``asyncio.timeout`` of the time left before the
deadline (cancelling a redis-py call disconnects its connection)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, Protocol, TypeVar

from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.ops import Cmd, Deadline, Pipe, ScriptSource, Sleep
from .errors import DEMOTED, demoted, failure, in_place
from .resp import numbers_as_text, pipe_async, time_left

if sys.version_info >= (3, 11):
    from asyncio import timeout as _async_timeout
else:  # pragma: no cover - redis-py depends on async-timeout below 3.11.3
    from async_timeout import timeout as _async_timeout

__all__ = ["adrive", "within", "AsyncTarget", "AsyncNodeTarget", "AsyncPlanTarget"]

T = TypeVar("T")


class AsyncTarget(Protocol):
    async def do(self, op: Any, until: float | None) -> Any:
        """Carry out ``op`` (the driver bounds it by ``until``); its reply."""

    def failure(self, exc: BaseException) -> BaseException:
        """What the flow gets thrown when ``do`` raised ``exc``."""


async def adrive(flow: Generator[Any, Any, T], target: AsyncTarget, *, deadline_s: float | None = None,
                 until: float | None = None) -> T:
    """Drive ``flow`` to completion on ``target``; the deadline as in ``sync.drive``."""
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
                await asyncio.sleep(op.seconds if until is None else max(0.0, min(op.seconds, until - time.monotonic())))
            elif isinstance(op, Deadline):
                if until is None:
                    until = time.monotonic() + op.seconds
                reply = until
            else:
                left = time_left(until)
                if left is None:
                    reply = await do(op, until)
                else:
                    try:
                        async with _async_timeout(left):
                            reply = await do(op, until)
                    except asyncio.TimeoutError as exc:
                        raise RedisTimeoutError("no answer from the server within the operation's deadline") from exc
        except Exception as exc:  # handed to the flow, which decides; never swallowed here
            error = failed(exc)


@contextlib.asynccontextmanager
async def within(until: float | None) -> AsyncIterator[None]:
    """The block cancelled at ``until`` (None: not bounded), which then raises
    ``redis.TimeoutError`` (as an op of ``adrive`` does): for what runs outside a flow."""
    left = time_left(until)
    if left is None:
        yield
        return
    try:
        async with _async_timeout(left):
            yield
    except asyncio.TimeoutError as exc:
        raise RedisTimeoutError("no answer from the server within the operation's deadline") from exc


class AsyncNodeTarget:
    """The core's ops on one server's ``redis.asyncio`` client (or Sentinel-managed client)."""

    def __init__(self, client: Any, scripts: ScriptSource) -> None:
        self.client = client
        self.scripts = scripts

    failure = staticmethod(failure)

    async def do(self, op: Any, until: float | None) -> Any:
        if isinstance(op, Pipe):
            replies = await pipe_async(self.client, op, self.scripts, until)
            if demoted(replies):
                await self.reconnect()
            return in_place(replies)
        if isinstance(op, Cmd):
            try:
                return await self.client.execute_command(*numbers_as_text(op.args))
            except DEMOTED:
                await self.reconnect()
                raise
        raise TypeError(f"a flow yielded {op!r}, not an op")

    async def reconnect(self) -> None:
        """Drop the pool's idle connections, and a single-connection client's own one, which
        sends its commands and loads its scripts (see :meth:`NodeTarget.reconnect`)."""
        pool = getattr(self.client, "connection_pool", None)
        if pool is not None:
            await pool.disconnect(inuse_connections=False)
        single = getattr(self.client, "connection", None)
        if single is not None:
            await single.disconnect()


class AsyncPlanTarget:
    """The asyncio twin of :class:`redis_ckpt.drivers.sync.PlanTarget`."""

    def __init__(self, act: Callable[[Any, float | None], Awaitable[Any]]) -> None:
        self.do = act

    @staticmethod
    def failure(exc: BaseException) -> BaseException:
        return exc
