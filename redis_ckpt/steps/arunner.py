""":class:`AsyncStepRunner`: the step runner's plan (:mod:`.plan`) carried out on an
:class:`~redis_ckpt.aio.AsyncCheckpointStore`, the lease renewed from an asyncio task."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import CheckpointError
from .plan import Call, Driving, Plan, RunnerBase, log, renewal_failed
from .state import StepStatus

if TYPE_CHECKING:
    from ..aio import AsyncCheckpointStore, AsyncLease

__all__ = ["AsyncStepRunner"]

T = TypeVar("T")


async def _in_thread(call: Callable[[], Any]) -> Any:
    """``call()`` in a worker thread. Cancelled meanwhile, it waits for the call to end (a
    thread cannot be stopped), drops its outcome and lets the cancellation go on."""
    done = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        while not done.done():
            with contextlib.suppress(asyncio.CancelledError):  # a repeated cancel: still wait
                await asyncio.wait([done])
        if not done.cancelled():
            done.exception()  # retrieved: the step's own error is dropped with its result
        raise


class AsyncStepRunner(RunnerBase):
    """The asyncio form of :class:`~redis_ckpt.steps.StepRunner`, on an
    :class:`~redis_ckpt.aio.AsyncCheckpointStore`.

    Same parameters, plan, state layout, commits and fencing (the decisions are the same
    code); step functions may be ``async def`` (awaited) or plain functions. ``run()`` and
    ``status()`` are coroutines, the background heartbeat is an asyncio task, and a step
    renews the lease itself with ``await ctx.heartbeat()``.

    A plain step runs in a worker thread (``asyncio.to_thread``), so a step that blocks
    (``time.sleep``, a sync client, CPU work) does not stall the heartbeat task on the event
    loop; in it, ``ctx.heartbeat()`` renews the lease and returns once renewed. A thread
    cannot be stopped: when ``run()`` is cancelled (or its ``asyncio.timeout`` ends) during
    a plain step, the step is let finish, its result dropped, before the lease is released,
    so no other worker starts the step while it still runs. A step that needs the event loop
    must be ``async def``.
    """

    store: AsyncCheckpointStore
    _lease: AsyncLease | None
    _sleep = staticmethod(asyncio.sleep)
    _loop: asyncio.AbstractEventLoop  # run()'s: where a plain step's ctx.heartbeat() renews
    _stopping = False  # the heartbeat task's stop signal (set with its cancellation)

    async def status(self) -> StepStatus | None:
        """Completed and pending steps and their results; None if the run was never committed.
        :class:`StepPlanError` for a plan ``run()`` would refuse."""
        return self._status_of(await self.store.load(self.run_id))

    async def run(self, initial_inputs: Any = None) -> dict[str, Any]:
        """Run the pending steps (all of them on a new run) and return every step's result."""
        self._check_runnable()
        self._loop = asyncio.get_running_loop()
        lease: AsyncLease = await self._drive(self._acquire_plan())
        self._stopping = False
        keeper = asyncio.create_task(self._keep_alive(), name=f"redis-ckpt-steps-{self.run_id}") \
            if self.heartbeat else None
        try:
            return await self._drive(self._run_plan(lease.token, initial_inputs))
        finally:
            try:
                if keeper is not None:
                    self._stopping = True  # a cancellation lost inside a renew still stops it at its next turn
                    keeper.cancel()
                    # wait for it without awaiting it: a CancelledError out of `await keeper` could be
                    # a cancellation of run() itself, which must not be swallowed (wait() lets it out)
                    await asyncio.wait([keeper])
                    if not keeper.cancelled():
                        keeper.result()  # it ended on its own (it logs what a renewal raises): as before
            finally:  # whatever ended the heartbeat, the lease is let go
                self._lease = None
                try:
                    await lease.release()
                except CheckpointError as exc:  # the run's outcome stands; a failed release only delays the next worker
                    log.warning("run %r: releasing the lease failed: %s", self.run_id, exc)

    async def _drive(self, plan: Plan[T]) -> T:
        driving = Driving(plan)
        for op in driving:
            try:
                call = self.action(op)
                if isinstance(op, Call) and not inspect.iscoroutinefunction(self._steps[op.name]):
                    reply = await _in_thread(call)  # a plain step: blocking, it must not stall the loop
                else:
                    reply = call()
                driving.send(await reply if inspect.isawaitable(reply) else reply)  # a plain call: not awaitable
            except BaseException as exc:  # noqa: BLE001 - thrown back into the plan, which decides
                driving.throw(exc)
        return driving.result

    async def _renew(self) -> None:
        lease = self._lease
        if lease is not None:
            await lease.renew()
            self._renewed_at = time.monotonic()

    def _step_heartbeat(self) -> Any:
        """``ctx.heartbeat()``: awaitable on the event loop; from a plain step's worker
        thread the renewal runs on the runner's loop and this returns once it is done."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run_coroutine_threadsafe(self._renew(), self._loop).result()
        return self._renew()

    async def _keep_alive(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.ttl_ms / 3000)
            if self._stopping:
                return
            try:
                await self._renew()
            except Exception as exc:  # noqa: BLE001 - the heartbeat never ends the run
                renewal_failed(self.run_id, exc)
