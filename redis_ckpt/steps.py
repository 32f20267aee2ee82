"""Resume a plain Python workflow from its last completed step, on any worker.

    from redis_ckpt import CheckpointStore
    from redis_ckpt.steps import StepRunner

    store = CheckpointStore.from_url("redis://localhost:6379/0", namespace="default")
    runner = StepRunner(store, "report-2026-12", ttl=30)

    @runner.step("fetch")
    def fetch(ctx):
        return download(ctx.inputs["url"])

    @runner.step("publish")
    def publish(ctx):
        # ctx.idempotency_key is the same on every attempt of this step of this run:
        # hand it to the payment API / message broker so a re-run after a crash is a no-op
        return post(ctx.results["fetch"], idempotency_key=ctx.idempotency_key)

    results = runner.run({"url": "https://example.org/data.csv"})

Steps run in the order they were added. The run's lease (and fencing token) is held for
the whole :meth:`StepRunner.run` and renewed in the background; a checkpoint is committed
after every ``commit_every`` completed steps and at the end, each durable when the commit
returns. When a worker dies, another one calling ``run()`` on the same run id waits for the
dead worker's lease to expire (up to ``acquire_timeout``), takes over with a higher token
and continues at the first step that was not committed; the dead worker's late commits, if
it was only frozen, are rejected with :class:`~redis_ckpt.FencedError`. A step runs *at
least once*: one that was running (or completed but not yet committed) when its worker died
runs again — use ``ctx.idempotency_key`` for side effects.

Step results become part of the checkpoint, so they must be types the store's codec keeps
exactly (see :mod:`redis_ckpt`); anything else raises
:class:`~redis_ckpt.UnsupportedTypeError` when the step finishes, naming the step and field.

State layout (what :func:`describe` reads; the CLI's ``show`` uses it)::

    {"kind": "step-runner", "format": 1,
     "incarnation": "9f0c2a1b",           # random per run, part of every idempotency key
     "steps": ["fetch", "parse", ...],     # the plan as of the last commit, in order
     "completed": ["fetch", ...],          # a prefix of "steps"
     "results": {"fetch": ..., ...},       # one entry per completed step
     "inputs": <initial_inputs>,
     "finished": False,
     "created_at": datetime,
     "history": {"fetch": {"index": 1, "started_at": datetime, "finished_at": datetime,
                           "owner": "host:pid", "token": 3}, ...}}

Commit metadata: ``{"runner": "step-runner", "completed": <count>, "last": <step name>}``.

:class:`AsyncStepRunner` is the same runner on an :class:`~redis_ckpt.aio.AsyncCheckpointStore`,
with ``async def`` steps. Both run one plan (a generator that makes every decision and yields
what to do: acquire, load, call a step, commit, renew, sleep); each only carries those out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, Union

from ._shell import ttl_ms
from .core.codec import encode_state
from .errors import CheckpointError, LeaseHeldError
from .models import Checkpoint
from .store import CheckpointStore, Lease

if TYPE_CHECKING:
    from .aio import AsyncCheckpointStore, AsyncLease

__all__ = [
    "StepRunner",
    "AsyncStepRunner",
    "StepContext",
    "StepStatus",
    "StepPlanError",
    "describe",
    "is_step_state",
    "STATE_KIND",
]

log = logging.getLogger("redis_ckpt.steps")

STATE_KIND = "step-runner"
STATE_FORMAT = 1

StepFn = Callable[["StepContext"], Any]
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class StepPlanError(CheckpointError, ValueError):
    """The steps given to a runner do not fit the run's checkpoint (a completed step is
    missing or moved, or the inputs differ from the ones the run started with)."""


def is_step_state(state: Any) -> bool:
    """Whether a checkpoint state was written by a :class:`StepRunner`."""
    return isinstance(state, dict) and state.get("kind") == STATE_KIND


@dataclass(frozen=True)
class StepStatus:
    """Progress of a step-runner run, as stored in its newest checkpoint."""

    run_id: str | None
    steps: tuple[str, ...]
    completed: tuple[str, ...]
    pending: tuple[str, ...]
    results: dict[str, Any]
    finished: bool
    inputs: Any
    history: dict[str, dict[str, Any]]
    incarnation: str
    generation: int | None = None
    created_at: datetime | None = None

    @property
    def next_step(self) -> str | None:
        return self.pending[0] if self.pending else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "steps": list(self.steps), "completed": list(self.completed),
            "pending": list(self.pending), "next_step": self.next_step, "finished": self.finished,
            "results": dict(self.results), "inputs": self.inputs, "history": dict(self.history),
            "incarnation": self.incarnation, "generation": self.generation, "created_at": self.created_at,
        }


def describe(state: Any, *, run_id: str | None = None, generation: int | None = None,
             steps: tuple[str, ...] | None = None) -> StepStatus | None:
    """The completed/pending steps and results of a step-runner checkpoint state, or None
    when ``state`` was not written by a :class:`StepRunner`. ``steps`` (a runner's current
    plan) overrides the plan stored in the state when given."""
    if not is_step_state(state):
        return None
    plan = tuple(steps) if steps is not None else tuple(state.get("steps", ()))
    completed = tuple(state.get("completed", ()))
    done = set(completed)
    return StepStatus(
        run_id=run_id, steps=plan, completed=completed, pending=tuple(s for s in plan if s not in done),
        results=dict(state.get("results", {})), finished=bool(state.get("finished")) and done >= set(plan),
        inputs=state.get("inputs"), history=dict(state.get("history", {})),
        incarnation=str(state.get("incarnation", "")), generation=generation, created_at=state.get("created_at"),
    )


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
        In an :class:`AsyncStepRunner` step: ``await ctx.heartbeat()``."""
        return self._runner._renew()


def _now() -> datetime:
    return datetime.now(timezone.utc)


# What a runner's plan asks its driver to do; the sync and the async runner carry these out
# (the plan, which makes every decision, is written once, in _RunnerBase).


@dataclass(frozen=True)
class _Acquire:
    """-> the new lease (LeaseHeldError is thrown back into the plan)"""


@dataclass(frozen=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True)
class _Load:
    """-> the lease's newest checkpoint, or None"""


@dataclass(frozen=True)
class _Commit:
    state: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class _Renew:
    pass


@dataclass(frozen=True)
class _Call:
    """-> what the step function returns (awaited, in the async runner)"""

    name: str
    ctx: StepContext


_Op = Union[_Acquire, _Sleep, _Load, _Commit, _Renew, _Call]
Plan = Generator[_Op, Any, T]


class _RunnerBase:
    """The plan, the steps and every decision of a step runner; no I/O."""

    def __init__(self, store: Any, run_id: str, *, owner: str | None = None,
                 ttl: float | timedelta = 30.0, commit_every: int = 1, acquire_timeout: float | None = None,
                 heartbeat: bool = True) -> None:
        if not isinstance(commit_every, int) or isinstance(commit_every, bool) or commit_every < 1:
            raise ValueError("commit_every must be an int >= 1")
        store.core.keys(run_id)  # validates the run id now, not at the first run()
        self.store = store
        self.run_id = run_id
        self.owner = owner or store.owner
        self.ttl_ms = ttl_ms(ttl)
        self.commit_every = commit_every
        self.acquire_timeout = self.ttl_ms / 1000 if acquire_timeout is None else float(acquire_timeout)
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
            raise ValueError("a step name must be a non-empty str")
        if name in self._steps:
            raise ValueError(f"step {name!r} is already defined")
        if not callable(fn):
            raise TypeError(f"step {name!r}: {fn!r} is not callable")
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
        return st

    def _check_runnable(self) -> None:
        if not self._steps:
            raise ValueError("the runner has no steps")

    def _acquire_plan(self) -> Plan[Any]:
        """Take the run's lease, waiting up to ``acquire_timeout`` for another holder's to expire."""
        deadline = time.monotonic() + self.acquire_timeout
        while True:
            try:
                lease = yield _Acquire()
                break
            except LeaseHeldError as held:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                log.info("run %r is leased by %r for %d ms more; waiting", self.run_id, held.owner, held.ms_left)
                yield _Sleep(min(left, held.ms_left / 1000 + 0.02))
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
        completed = list(state["completed"])
        plan = list(self._steps)
        if plan[: len(completed)] != completed:
            raise StepPlanError(
                f"run {self.run_id!r} completed steps {completed} but this runner's steps are {plan}: "
                "completed steps must stay first, in the same order", run_id=self.run_id)
        if initial_inputs is not None and initial_inputs != state["inputs"]:
            raise StepPlanError(f"run {self.run_id!r} was started with other inputs; resume it with "
                                "initial_inputs=None (or the same inputs)", run_id=self.run_id)
        state = {**state, "steps": plan}
        return state, False

    def _commit_plan(self, state: dict[str, Any]) -> Plan[None]:
        completed = state["completed"]
        yield _Commit(state, {"runner": STATE_KIND, "completed": len(completed),
                              "last": completed[-1] if completed else ""})
        if not self.heartbeat and time.monotonic() - self._renewed_at >= self.ttl_ms / 3000:
            yield _Renew()

    def _run_plan(self, token: int, initial_inputs: Any) -> Plan[dict[str, Any]]:
        state, fresh = self._state_of((yield _Load()), initial_inputs)
        if fresh:
            encode_state(state["inputs"], root="inputs")  # refuse unsupported inputs before any step runs
            yield from self._commit_plan(state)  # the plan, inputs and incarnation are durable before step 1
        pending = [s for s in self._steps if s not in state["completed"]]
        if not pending:
            if not state["finished"]:
                state["finished"] = True
                yield from self._commit_plan(state)
            return dict(state["results"])
        uncommitted = 0
        for name in pending:
            index = list(self._steps).index(name) + 1
            ctx = StepContext(
                run_id=self.run_id, step=name, index=index,
                idempotency_key=f"{self.run_id}:{name}:{state['incarnation']}",
                results=MappingProxyType(dict(state["results"])), inputs=state["inputs"],
                token=token, _runner=self,
            )
            started = _now()
            try:
                result = yield _Call(name, ctx)
                encode_state(result, root=f"results[{name!r}]")
            except BaseException as failed:
                if isinstance(failed, CheckpointError) and failed.run_id is None:
                    failed.run_id = self.run_id
                if uncommitted:  # keep the progress made before the failing step
                    yield from self._commit_plan(state)
                raise
            state = {
                **state,
                "completed": [*state["completed"], name],
                "results": {**state["results"], name: result},
                "history": {**state["history"], name: {
                    "index": index, "started_at": started, "finished_at": _now(),
                    "owner": self.owner, "token": token}},
                "finished": name == pending[-1],
            }
            uncommitted += 1
            if uncommitted >= self.commit_every or state["finished"]:
                yield from self._commit_plan(state)
                uncommitted = 0
        return dict(state["results"])


def _resume(plan: Plan[T], reply: Any, error: BaseException | None) -> _Op:
    """The plan's next request, after sending it ``reply`` or throwing ``error`` into it
    (StopIteration when the plan is done)."""
    return plan.throw(error) if error is not None else plan.send(reply)


class StepRunner(_RunnerBase):
    """Runs named steps in order, checkpointing after each completed one (see the module docstring).

    :param store: a :class:`~redis_ckpt.CheckpointStore`.
    :param run_id: the run; every worker of the same workflow uses the same id.
    :param owner: this worker's name in the lease (default: the store's owner, ``host:pid``).
    :param ttl: lease time-to-live in seconds (renewed every ``ttl / 3`` while running).
    :param commit_every: commit after every N completed steps (1 = after each); the last
        step and a failing step always commit what was completed.
    :param acquire_timeout: how long ``run()`` waits for another worker's lease to expire
        (default: ``ttl``); then :class:`~redis_ckpt.LeaseHeldError`.
    :param heartbeat: renew the lease from a background thread while steps run (default);
        when False it is renewed between steps only.
    """

    store: CheckpointStore
    _lease: Lease | None

    def __init__(self, store: CheckpointStore, run_id: str, *, owner: str | None = None,
                 ttl: float | timedelta = 30.0, commit_every: int = 1, acquire_timeout: float | None = None,
                 heartbeat: bool = True) -> None:
        super().__init__(store, run_id, owner=owner, ttl=ttl, commit_every=commit_every,
                         acquire_timeout=acquire_timeout, heartbeat=heartbeat)
        self._lease_lock = threading.Lock()

    def status(self) -> StepStatus | None:
        """Completed and pending steps (of this runner's plan) and their results; None if
        the run was never committed."""
        return self._status_of(self.store.load(self.run_id))

    def run(self, initial_inputs: Any = None) -> dict[str, Any]:
        """Run the pending steps (all of them on a new run) and return every step's result."""
        self._check_runnable()
        lease: Lease = self._drive(self._acquire_plan())
        stop = threading.Event()
        keeper = None
        if self.heartbeat:
            keeper = threading.Thread(target=self._keep_alive, args=(stop,), daemon=True,
                                      name=f"redis-ckpt-steps-{self.run_id}")
            keeper.start()
        try:
            return self._drive(self._run_plan(lease.token, initial_inputs))
        finally:
            stop.set()
            if keeper is not None:
                keeper.join()
            with self._lease_lock:
                self._lease = None
            try:
                lease.release()
            except CheckpointError as exc:  # the run's outcome stands; a failed release only delays the next worker
                log.warning("run %r: releasing the lease failed: %s", self.run_id, exc)

    def _drive(self, plan: Plan[T]) -> T:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = _resume(plan, reply, error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply, error = None, None
            try:
                reply = self._do(op)
            except BaseException as exc:  # noqa: BLE001 - thrown back into the plan, which decides
                error = exc

    def _do(self, op: _Op) -> Any:
        if isinstance(op, _Call):
            return self._steps[op.name](op.ctx)
        if isinstance(op, _Commit):
            assert self._lease is not None
            return self._lease.commit(op.state, metadata=op.metadata)
        if isinstance(op, _Load):
            assert self._lease is not None
            return self._lease.load()
        if isinstance(op, _Renew):
            return self._renew()
        if isinstance(op, _Acquire):
            return self.store.acquire(self.run_id, owner=self.owner, ttl=self.ttl_ms / 1000)
        if isinstance(op, _Sleep):
            return time.sleep(op.seconds)
        raise AssertionError(f"unknown step-runner request {op!r}")  # pragma: no cover

    def _renew(self) -> None:
        with self._lease_lock:
            lease = self._lease
        if lease is not None:
            lease.renew()
            self._renewed_at = time.monotonic()

    def _keep_alive(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl_ms / 3000):
            try:
                self._renew()
            except CheckpointError as exc:
                # the token, not the lease, guards the commits: a worker that lost the run
                # finds out at its next commit (FencedError); keep the process informed
                log.warning("run %r: lease renewal failed: %s", self.run_id, exc)


class AsyncStepRunner(_RunnerBase):
    """The asyncio form of :class:`StepRunner`, on an :class:`~redis_ckpt.aio.AsyncCheckpointStore`.

    Same parameters, plan, state layout, commits and fencing (the decisions are the same
    code); step functions may be ``async def`` (awaited) or plain functions. ``run()`` and
    ``status()`` are coroutines, the background heartbeat is an asyncio task, and a step
    renews the lease itself with ``await ctx.heartbeat()``.
    """

    store: AsyncCheckpointStore
    _lease: AsyncLease | None

    def __init__(self, store: AsyncCheckpointStore, run_id: str, *, owner: str | None = None,
                 ttl: float | timedelta = 30.0, commit_every: int = 1, acquire_timeout: float | None = None,
                 heartbeat: bool = True) -> None:
        super().__init__(store, run_id, owner=owner, ttl=ttl, commit_every=commit_every,
                         acquire_timeout=acquire_timeout, heartbeat=heartbeat)

    async def status(self) -> StepStatus | None:
        """Completed and pending steps and their results; None if the run was never committed."""
        return self._status_of(await self.store.load(self.run_id))

    async def run(self, initial_inputs: Any = None) -> dict[str, Any]:
        """Run the pending steps (all of them on a new run) and return every step's result."""
        self._check_runnable()
        lease: AsyncLease = await self._drive(self._acquire_plan())
        keeper = asyncio.create_task(self._keep_alive(), name=f"redis-ckpt-steps-{self.run_id}") \
            if self.heartbeat else None
        try:
            return await self._drive(self._run_plan(lease.token, initial_inputs))
        finally:
            if keeper is not None:
                keeper.cancel()
                try:
                    await keeper
                except asyncio.CancelledError:
                    pass  # the keeper was stopped, as asked
            self._lease = None
            try:
                await lease.release()
            except CheckpointError as exc:  # the run's outcome stands; a failed release only delays the next worker
                log.warning("run %r: releasing the lease failed: %s", self.run_id, exc)

    async def _drive(self, plan: Plan[T]) -> T:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = _resume(plan, reply, error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            reply, error = None, None
            try:
                reply = await self._do(op)
            except BaseException as exc:  # noqa: BLE001 - thrown back into the plan, which decides
                error = exc

    async def _do(self, op: _Op) -> Any:
        if isinstance(op, _Call):
            result = self._steps[op.name](op.ctx)
            return (await result) if inspect.isawaitable(result) else result
        if isinstance(op, _Commit):
            assert self._lease is not None
            return await self._lease.commit(op.state, metadata=op.metadata)
        if isinstance(op, _Load):
            assert self._lease is not None
            return await self._lease.load()
        if isinstance(op, _Renew):
            return await self._renew()
        if isinstance(op, _Acquire):
            return await self.store.acquire(self.run_id, owner=self.owner, ttl=self.ttl_ms / 1000)
        if isinstance(op, _Sleep):
            return await asyncio.sleep(op.seconds)
        raise AssertionError(f"unknown step-runner request {op!r}")  # pragma: no cover

    async def _renew(self) -> None:
        lease = self._lease
        if lease is not None:
            await lease.renew()
            self._renewed_at = time.monotonic()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                await self._renew()
            except CheckpointError as exc:
                log.warning("run %r: lease renewal failed: %s", self.run_id, exc)
