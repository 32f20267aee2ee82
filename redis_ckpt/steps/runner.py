""":class:`StepRunner`: the step runner's plan (:mod:`.plan`) carried out on a
:class:`~redis_ckpt.CheckpointStore`, the lease renewed from a background thread."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any, TypeVar

from ..errors import CheckpointError
from ..store import CheckpointStore, Lease
from .plan import Driving, Plan, RunnerBase, log, renewal_failed
from .state import StepStatus

__all__ = ["StepRunner"]

T = TypeVar("T")


class StepRunner(RunnerBase):
    """Runs named steps in order, checkpointing after each completed one (see :mod:`redis_ckpt.steps`).

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
    _sleep = staticmethod(time.sleep)

    def __init__(self, store: CheckpointStore, run_id: str, *, owner: str | None = None,
                 ttl: float | timedelta = 30.0, commit_every: int = 1, acquire_timeout: float | None = None,
                 heartbeat: bool = True) -> None:
        super().__init__(store, run_id, owner=owner, ttl=ttl, commit_every=commit_every,
                         acquire_timeout=acquire_timeout, heartbeat=heartbeat)
        self._lease_lock = threading.Lock()

    def status(self) -> StepStatus | None:
        """Completed and pending steps (of this runner's plan) and their results; None if
        the run was never committed. :class:`StepPlanError` for a plan ``run()`` would refuse
        (a completed step removed, renamed or moved)."""
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
        driving = Driving(plan)
        for op in driving:
            try:
                driving.send(self.action(op)())
            except BaseException as exc:  # noqa: BLE001 - thrown back into the plan, which decides
                driving.throw(exc)
        return driving.result

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
            except Exception as exc:  # noqa: BLE001 - the heartbeat never ends the run
                renewal_failed(self.run_id, exc)
