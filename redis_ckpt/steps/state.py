"""What a step runner stores, and how to read it back: the state layout (see
:mod:`redis_ckpt.steps`), what a commit sends of it (:class:`StoredState`), :func:`describe`
(what the CLI's ``show`` uses) and the error for a plan that does not fit the stored run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..core.codec import EncodedList, EncodedMap, encoded
from ..errors import CheckpointError, StateError

__all__ = ["STATE_KIND", "STATE_FORMAT", "StepPlanError", "StepStatus", "StoredState", "describe", "is_step_state"]

STATE_KIND = "step-runner"
STATE_FORMAT = 1
#: the order of a stored state's keys: what grows comes last, the largest (the results) first
#: of those, so that a commit changes the payload's bytes only past the newest result's
#: (with ``dedup=True``, only the chunks from there on are cut and written anew)
_ORDER = ("kind", "format", "incarnation", "steps", "inputs", "finished", "created_at", "results", "completed",
          "history")
_FIXED = ("kind", "format", "incarnation", "created_at")


class StepPlanError(CheckpointError, ValueError):
    """The steps given to a runner do not fit the run's checkpoint (a completed step is
    missing or moved, or the inputs differ from the ones the run started with)."""


def is_step_state(state: Any) -> bool:
    """Whether a checkpoint state was written by a :class:`StepRunner`."""
    return isinstance(state, dict) and state.get("kind") == STATE_KIND


class StoredState:
    """What a runner commits of its state: the plan and the inputs encoded once a ``run()``,
    each completed step's name, result and history entry once, when the step completes
    (``core.codec.EncodedMap`` / ``EncodedList``), so that a commit encodes what is new, not
    every earlier result again. The bytes are those of the plain state (the codec pins it): a
    load sees the state, exact types included."""

    __slots__ = ("fixed", "plan", "steps", "inputs", "completed", "results", "history")

    def __init__(self, state: dict[str, Any]) -> None:
        self.inputs = encoded(state["inputs"], root="inputs")  # refused here, before any step runs
        self.plan = state["steps"]  # the same list for the whole run()
        self.steps = encoded(self.plan, root="steps")
        #: the values that stay as they are for a whole run(), encoded (each used while it is the same object)
        self.fixed = {key: (state[key], encoded(state[key], root=key)) for key in _FIXED if key in state}
        self.completed = EncodedList(state["completed"], root="completed")
        self.results = EncodedMap()
        self.history = EncodedMap()
        for name, result in state["results"].items():
            self.results.add(name, result, root="results")
        for name, entry in state["history"].items():
            self.history.add(name, entry, root="history")

    def add(self, name: str, result: Any, entry: dict[str, Any]) -> None:
        """A completed step's result and history entry; UnsupportedTypeError (nothing added)
        when the codec cannot store the result exactly."""
        self.results.add(name, result, root="results")
        self.history.add(name, entry, root="history")
        self.completed.add(name, root="completed")

    def wire(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` as a commit sends it (what grows last, and as encoded)."""
        if state["steps"] is not self.plan or len(state["completed"]) != len(self.completed):
            # a bug of the runner: what it would commit is not the state it holds (checked
            # always, not with an assert that ``python -O`` drops)
            raise StateError(f"the runner's state ({len(state['completed'])} completed steps) and what it "
                             f"encoded of it ({len(self.completed)}) disagree; nothing was committed")
        out = {key: state[key] for key in _ORDER if key in state}
        out.update((key, value) for key, value in state.items() if key not in out)
        for key, (value, done) in self.fixed.items():
            if out.get(key, done) is value:
                out[key] = done
        out.update(steps=self.steps, inputs=self.inputs, completed=self.completed.encoded(),
                   results=self.results.encoded(), history=self.history.encoded())
        return out


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

