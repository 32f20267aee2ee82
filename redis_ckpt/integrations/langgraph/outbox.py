"""Group commit of one invocation's writes: a superstep's ``put_writes`` ride with the
``put`` that follows them, in one script call and one WAITAOF.

LangGraph saves a task's writes as soon as the task ends and the superstep's checkpoint a
moment later (~0.3-1 ms: applying the writes; more on a loaded machine). Sent apart, the two wait for two AOF fsyncs
in turn on the server, and the next superstep waits for both. So an invocation's
``put_writes`` waits up to :data:`LINGER_S` for company: the writes of other tasks of the
superstep join it, and the ``put`` that comes takes them all along (they are stored in the
same atomic step as the checkpoint, in order). When no ``put`` comes in time (a long parallel
task), the writes go on their own; writes after which LangGraph ends the superstep without a
checkpoint (an interrupt, an error: ``final``) go at once, with those waiting. Either way a ``put_writes``
returns only once its writes are confirmed; a refusal reaches every caller of the batch.
Standalone calls (no invocation) are never held back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .invocations import Invocation

__all__ = ["Outbox", "LINGER_S"]

#: how long an invocation's writes wait for the superstep's put before going alone
LINGER_S = 0.003


@dataclass
class Batch:
    items: list[Any] = field(default_factory=list)
    taken: concurrent.futures.Future[bool] = field(default_factory=concurrent.futures.Future)
    done: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


class Outbox:
    """The writes of each invocation waiting for their put."""

    def __init__(self, linger_s: float = LINGER_S) -> None:
        self.linger_s = linger_s
        self._lock = threading.Lock()
        self._open: dict[int, Batch] = {}  # id(invocation) -> its open batch

    def _join(self, inv: Invocation, item: list[Any]) -> tuple[Batch, bool]:
        with self._lock:
            batch = self._open.get(id(inv))
            leader = batch is None
            if batch is None:
                batch = self._open[id(inv)] = Batch()
            batch.items += item
            return batch, leader

    def _claim(self, inv: Invocation, batch: Batch | None = None) -> Batch | None:
        """Close the invocation's open batch (``batch``: only that one) for one sender; its
        leader stops waiting for company."""
        with self._lock:
            open_ = self._open.get(id(inv))
            if open_ is None or (batch is not None and open_ is not batch):
                return None
            del self._open[id(inv)]
        if not open_.taken.done():
            open_.taken.set_result(True)
        return open_

    def take(self, inv: Invocation | None) -> Batch | None:
        """For a put: the writes waiting for it (they go with it)."""
        return None if inv is None else self._claim(inv)

    @staticmethod
    def settle(batch: Batch | None, error: BaseException | None) -> None:
        if batch is not None:
            if error is None:
                batch.done.set_result(None)
            else:
                batch.done.set_exception(error)

    def put_writes(self, inv: Invocation, item: list[Any], send: Callable[[list[Any]], Any],
                   final: bool = False) -> None:
        """``final``: no put follows these writes (they go at once, with those waiting)."""
        batch, leader = self._join(inv, item)
        if leader and not final:
            try:
                batch.taken.result(self.linger_s)
            except concurrent.futures.TimeoutError:
                final = True
        if final:
            self._send_alone(inv, batch, send)
        batch.done.result()

    async def aput_writes(self, inv: Invocation, item: list[Any], send: Callable[[list[Any]], Awaitable[Any]],
                          final: bool = False) -> None:
        batch, leader = self._join(inv, item)
        if leader and not final:
            try:
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(batch.taken)), self.linger_s)
            except asyncio.TimeoutError:
                final = True
        if final and self._claim(inv, batch) is batch:  # else a put took it meanwhile
            try:
                await send(batch.items)
            except BaseException as exc:
                self.settle(batch, exc)
            else:
                self.settle(batch, None)
        await asyncio.wrap_future(batch.done)

    def _send_alone(self, inv: Invocation, batch: Batch, send: Callable[[list[Any]], Any]) -> None:
        if self._claim(inv, batch) is not batch:
            return  # a put took it meanwhile
        try:
            send(batch.items)
        except BaseException as exc:
            self.settle(batch, exc)
        else:
            self.settle(batch, None)
