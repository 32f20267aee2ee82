"""What a step runner stores, and how to read it back: the state layout (see
:mod:`redis_ckpt.steps`), :func:`describe` (what the CLI's ``show`` uses) and the error for a
plan that does not fit the stored run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import CheckpointError

__all__ = ["STATE_KIND", "STATE_FORMAT", "StepPlanError", "StepStatus", "describe", "is_step_state"]

STATE_KIND = "step-runner"
STATE_FORMAT = 1


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

