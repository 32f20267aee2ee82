"""The step runner's one plan: every decision of :class:`~redis_ckpt.steps.StepRunner` and
:class:`~redis_ckpt.steps.AsyncStepRunner`, written once, with no I/O.

The plan is a generator that yields what to do (a request: acquire, load, call a step, commit,
renew, sleep) and is sent the outcome (or has the error thrown in). Each runner carries the
requests out through :meth:`RunnerBase.action` on its own I/O style, in a few-line loop over
:class:`Driving`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from types import MappingProxyType
from typing import Any, Generic, TypeVar, Union

from .._shell import ttl_ms
from ..core.codec import exactly_equal
from ..core.config import MAX_TTL_MS
from ..core.keys import validate_owner, validate_run_id
from ..core.ops import Sleep  # the pause a flow asks for; here the runner answers it
from ..errors import CheckpointError, InvalidOptionError, LeaseHeldError, OutOfRangeError
from ..models import Checkpoint
from .state import STATE_FORMAT, STATE_KIND, StepPlanError, StepStatus, StoredState, describe, is_step_state

__all__ = ["StepContext", "RunnerBase", "Plan", "Driving", "Request", "Acquire", "Sleep", "Load", "Commit",
           "Renew", "Call"]

log = logging.getLogger("redis_ckpt.steps")


def _seconds(value: object) -> float:
    """``acquire_timeout``: a finite number of seconds >= 0 (or a timedelta), up to the lease
    bound; NaN, a str or a bool used to pass and break the wait later."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= MAX_TTL_MS / 1000:
        raise OutOfRangeError(f"acquire_timeout must be a number of seconds in [0, {MAX_TTL_MS // 1000}] "
                              f"(or a timedelta), got {value!r}", argument="acquire_timeout", value=value,
                              minimum=0, maximum=MAX_TTL_MS / 1000)
    return float(seconds)

def renewal_failed(run_id: str, exc: Exception) -> None:
    """What a heartbeat does with a failed renewal: log it and go on renewing. The token, not
    the lease, guards the commits (a worker that lost the run finds out at its next commit:
    FencedError), so the run's outcome is its steps'; a failure that is not a CheckpointError
    (a bug) is logged at ERROR with its traceback, never in place of the run's result."""
    if isinstance(exc, CheckpointError):
        log.warning("run %r: lease renewal failed: %s", run_id, exc)
    else:
        log.error("run %r: lease renewal failed with an unexpected error", run_id, exc_info=exc)


StepFn = Callable[["StepContext"], Any]
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class StepContext:
    """What a step function is handed."""

    run_id: str
    step: str
    #: 1-based position of the step in the plan
    index: int
    #: stable for this step of this run across retries, crashes and workers
    idempotency_key: str
    #: results of the steps completed before this one (read-only)
    results: Mapping[str, Any]
    #: the run's initial inputs (those of the first run() of the run id)
    inputs: Any
    #: the fencing token this worker holds
    token: int
    _runner: Any = field(repr=False)

    def heartbeat(self) -> Any:
        """Renew the run's lease now (the runner also renews it in the background).
        In an :class:`AsyncStepRunner` ``async def`` step: ``await ctx.heartbeat()``."""
        return self._runner._step_heartbeat()


def _now() -> datetime:
    return datetime.now(timezone.utc)


# What the plan asks its runner to do (the reply each gets is in its docstring)


@dataclass(frozen=True)
class Acquire:
    """-> the new lease (LeaseHeldError is thrown back into the plan)"""


@dataclass(frozen=True)
class Load:
    """-> the lease's newest checkpoint, or None"""


@dataclass(frozen=True)
class Commit:
    """-> the new generation (``state`` as :meth:`StoredState.wire` makes it)"""

    state: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Renew:
    pass


@dataclass(frozen=True)
class Call:
    """-> what the step function returns (awaited, in the async runner)"""

    name: str
    ctx: StepContext


Request = Union[Acquire, Sleep, Load, Commit, Renew, Call]
Plan = Generator[Request, Any, T]


class Driving(Generic[T]):
    """A plan being carried out. Iterating yields its requests; answer each one, before the
    next, with :meth:`send` (its reply) or :meth:`throw` (the error it raised: the plan
    decides). When the plan is done, :attr:`result` is what it returned."""

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self._answer: tuple[Any, BaseException | None] = (None, None)
        self.result: T

    def __iter__(self) -> Driving[T]:
        return self

    def __next__(self) -> Request:
        reply, error = self._answer
        self._answer = (None, None)
        try:
            return self._plan.throw(error) if error is not None else self._plan.send(reply)
        except StopIteration as done:
            self.result = done.value
            raise StopIteration from None

    def send(self, reply: Any) -> None:
        self._answer = (reply, None)

    def throw(self, error: BaseException) -> None:
        self._answer = (None, error)


class RunnerBase:
    """The plan, the steps and every decision of a step runner; no I/O. A runner adds
    ``_renew`` (renew the held lease now) and ``_sleep`` (time.sleep or asyncio.sleep)."""

    def __init__(self, store: Any, run_id: str, *, owner: str | None = None,
                 ttl: float | timedelta = 30.0, commit_every: int = 1, acquire_timeout: float | None = None,
                 heartbeat: bool = True) -> None:
        if not isinstance(commit_every, int) or isinstance(commit_every, bool) or commit_every < 1:
            raise InvalidOptionError("commit_every must be an int >= 1", argument="commit_every")
        validate_run_id(run_id)  # now, not at the first run()
        self.store = store
        self.run_id = run_id
        self.owner = store.owner if owner is None else validate_owner(owner)  # "" is a bad owner
        self.ttl_ms = ttl_ms(ttl)
        self.commit_every = commit_every
        self.acquire_timeout = self.ttl_ms / 1000 if acquire_timeout is None else _seconds(acquire_timeout)
        self.heartbeat = heartbeat
        self._steps: dict[str, StepFn] = {}
        self._lease: Any = None
        self._renewed_at = 0.0

    # -- the plan --------------------------------------------------------------------------

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(self._steps)

    def add(self, name: str, fn: StepFn) -> Any:
        """Append a step; returns the runner (chainable)."""
        if not isinstance(name, str) or not name:
            raise InvalidOptionError("a step name must be a non-empty str", argument="name")
        if name in self._steps:
            raise InvalidOptionError(f"step {name!r} is already defined", argument="name")
        if not callable(fn):
            raise InvalidOptionError(f"step {name!r}: {fn!r} is not callable", argument="fn")
        self._steps[name] = fn
        return self

    def step(self, name: str) -> Callable[[F], F]:
        """Decorator form of :meth:`add`."""

        def register(fn: F) -> F:
            self.add(name, fn)
            return fn

        return register

    # -- decisions -------------------------------------------------------------------------

    def _status_of(self, ck: Checkpoint | None) -> StepStatus | None:
        if ck is None:
            return None
        st = describe(ck.state, run_id=self.run_id, generation=ck.generation, steps=self.steps or None)
        if st is None:
            raise StepPlanError(f"run {self.run_id!r} was not written by a StepRunner", run_id=self.run_id)
        if self._steps:  # the plan run() would refuse is refused here too (not "finished")
            self._check_plan(list(st.completed))
        return st

    def _check_plan(self, completed: list[str]) -> None:
        """StepPlanError unless this runner's steps start with the run's ``completed`` ones."""
        plan = list(self._steps)
        if plan[: len(completed)] != completed:
            raise StepPlanError(
                f"run {self.run_id!r} completed steps {completed} but this runner's steps are {plan}: "
                "completed steps must stay first, in the same order", run_id=self.run_id)

    def _check_runnable(self) -> None:
        if not self._steps:
            raise InvalidOptionError("the runner has no steps: add() them before run()", argument="steps")

    def _acquire_plan(self) -> Plan[Any]:
        """Take the run's lease, waiting up to ``acquire_timeout`` for another holder's to expire."""
        deadline = time.monotonic() + self.acquire_timeout
        while True:
            try:
                lease = yield Acquire()
                break
            except LeaseHeldError as held:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.info("run %r is leased by %r for %d ms more; waiting", self.run_id, held.owner, held.ms_left)
                yield Sleep(min(left, held.ms_left / 1000 + 0.02))
        self._lease = lease
        self._renewed_at = time.monotonic()
        return lease

    def _state_of(self, ck: Checkpoint | None, initial_inputs: Any) -> tuple[dict[str, Any], bool]:
        """(state, whether it needs a first commit)."""
        if ck is None:
            return {
                "kind": STATE_KIND, "format": STATE_FORMAT, "incarnation": uuid.uuid4().hex[:8],
                "steps": list(self._steps), "completed": [], "results": {}, "inputs": initial_inputs,
                "finished": False, "created_at": _now(), "history": {},
            }, True
        state = ck.state
        if not is_step_state(state):
            raise StepPlanError(f"run {self.run_id!r} holds a checkpoint not written by a StepRunner",
                                run_id=self.run_id)
        self._check_plan(list(state["completed"]))
        plan = list(self._steps)
        # the same inputs as the codec stores them: == would refuse a NaN and take True for 1
        if initial_inputs is not None and not exactly_equal(initial_inputs, state["inputs"], root="inputs"):
            raise StepPlanError(f"run {self.run_id!r} was started with other inputs; resume it with "
                                "initial_inputs=None (or the same inputs)", run_id=self.run_id)
        state = {**state, "steps": plan}
        return state, False

    def _commit_plan(self, state: dict[str, Any], stored: StoredState) -> Plan[None]:
        completed = state["completed"]
        yield Commit(stored.wire(state), {"runner": STATE_KIND, "completed": len(completed),
                              "last": completed[-1] if completed else ""})
        yield from self._renew_plan()

    def _renew_plan(self) -> Plan[None]:
        """Without a heartbeat, the lease is renewed between steps once a third of its ttl has
        passed: after every step, committed or not (commit_every > 1 leaves steps between)."""
        if not self.heartbeat and time.monotonic() - self._renewed_at >= self.ttl_ms / 3000:
            yield Renew()

    def _run_plan(self, token: int, initial_inputs: Any) -> Plan[dict[str, Any]]:
        state, fresh = self._state_of((yield Load()), initial_inputs)
        stored = StoredState(state)  # refuses unsupported inputs before any step runs
        if fresh:
            yield from self._commit_plan(state, stored)  # the plan, inputs and incarnation are durable before step 1
        pending = [s for s in self._steps if s not in state["completed"]]
        if not pending:
            if not state["finished"]:
                state["finished"] = True
                yield from self._commit_plan(state, stored)
            return dict(state["results"])
        uncommitted = 0
        # this plan's own copies, changed in place as steps complete (a commit sends `stored`)
        state.update(completed=list(state["completed"]), results=dict(state["results"]),
                     history=dict(state["history"]))
        positions = {step: i for i, step in enumerate(self._steps, 1)}
        for name in pending:
            index = positions[name]
            ctx = StepContext(
                run_id=self.run_id, step=name, index=index,
                idempotency_key=f"{self.run_id}:{name}:{state['incarnation']}",
                results=MappingProxyType(dict(state["results"])), inputs=state["inputs"],
                token=token, _runner=self,
            )
            started = _now()
            try:
                result = yield Call(name, ctx)
                entry = {"index": index, "started_at": started, "finished_at": _now(), "owner": self.owner,
                         "token": token}
                stored.add(name, result, entry)  # encoded once, here; refused before it is kept
            except BaseException as failed:
                if isinstance(failed, CheckpointError) and failed.run_id is None:
                    failed.run_id = self.run_id
                if uncommitted:  # keep the progress made before the failing step
                    yield from self._commit_plan(state, stored)
                raise
            state["completed"].append(name)
            state["results"][name] = result
            state["history"][name] = entry
            state["finished"] = name == pending[-1]
            uncommitted += 1
            if uncommitted >= self.commit_every or state["finished"]:
                yield from self._commit_plan(state, stored)
                uncommitted = 0
            else:
                yield from self._renew_plan()
        return dict(state["results"])

    # -- carrying a request out ----------------------------------------------------------------

    def action(self, op: Request) -> Callable[[], Any]:
        """The call that carries ``op`` out; what it returns (awaited, in the async runner) is
        the reply the plan is sent."""
        if isinstance(op, Call):
            return partial(self._steps[op.name], op.ctx)
        if isinstance(op, Commit):
            assert self._lease is not None
            return partial(self._lease.commit, op.state, metadata=op.metadata)
        if isinstance(op, Load):
            assert self._lease is not None
            return self._lease.load
        if isinstance(op, Renew):
            return self._renew
        if isinstance(op, Acquire):
            return partial(self.store.acquire, self.run_id, owner=self.owner, ttl=self.ttl_ms / 1000)
        if isinstance(op, Sleep):
            return partial(self._sleep, op.seconds)
        raise AssertionError(f"unknown step-runner request {op!r}")  # pragma: no cover

    def _renew(self) -> Any:
        raise NotImplementedError

    def _step_heartbeat(self) -> Any:
        """What ``ctx.heartbeat()`` does: renew now."""
        return self._renew()

    def _sleep(self, seconds: float) -> Any:
        raise NotImplementedError
