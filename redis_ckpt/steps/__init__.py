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

What a commit costs: each step's result (and its history entry) is encoded once, when the
step completes, and kept encoded (:class:`~redis_ckpt.steps.state.StoredState`: the runner
holds every result twice, as the value and as its bytes); a commit encodes what is new and
joins the rest. The bytes are the plain state's: a load gives back every result with its
exact type, and the frame's checksum covers all of it. What is stored is each result as its
step returned it: a later step that changes an earlier result in place (through
``ctx.results``) changes this process's copy only, never the checkpoint. On a store with ``dedup=True`` a
commit also cuts and sends only the chunks that changed; without it every commit still
sends, and the server fsyncs, the whole state. Measured by ``bench/incremental.py`` (600
steps of 2 KB results, last 50 steps' p50 against the first 50's): 1.8x with
``dedup=True`` (1.3-2.1x over eight runs), 3.1-3.9x without (5.5x and 9.2x before). The runner uses the store it is
given; for long runs with large results, give it one with ``dedup=True``.

State layout (what :func:`describe` reads; the CLI's ``show`` uses it); a commit stores the
keys in this order, what grows last (runs stored before kept another order: read the same)::

    {"kind": "step-runner", "format": 1,
     "incarnation": "9f0c2a1b",           # random per run, part of every idempotency key
     "steps": ["fetch", "parse", ...],     # the plan as of the last commit, in order
     "inputs": <initial_inputs>,
     "finished": False,
     "created_at": datetime,
     "results": {"fetch": ..., ...},       # one entry per completed step
     "completed": ["fetch", ...],          # a prefix of "steps"
     "history": {"fetch": {"index": 1, "started_at": datetime, "finished_at": datetime,
                           "owner": "host:pid", "token": 3}, ...}}

Commit metadata: ``{"runner": "step-runner", "completed": <count>, "last": <step name>}``.

:class:`AsyncStepRunner` is the same runner on an :class:`~redis_ckpt.aio.AsyncCheckpointStore`,
with ``async def`` steps (a plain step runs in a worker thread, so it cannot stall the
heartbeat task). Both run one plan (a generator that makes every decision and yields
what to do: acquire, load, call a step, commit, renew, sleep); each only carries those out.

    state.py    the state layout, StoredState (what a commit sends), describe(), StepStatus, StepPlanError
    plan.py     the plan: StepContext, the requests, every decision (no I/O)
    runner.py   StepRunner: the plan on a CheckpointStore, a heartbeat thread
    arunner.py  AsyncStepRunner: the plan on an AsyncCheckpointStore, a heartbeat task
"""

from __future__ import annotations

from .arunner import AsyncStepRunner
from .plan import StepContext
from .runner import StepRunner
from .state import STATE_KIND, StepPlanError, StepStatus, describe, is_step_state

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
