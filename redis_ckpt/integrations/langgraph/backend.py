"""What the saver takes from a store: its settings, the confirmations that end a write's
pipe and their check, the retry wrapper, and the drivers that run a flow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ...core.ops import Cmd, Flow, Pipe, Script

T = TypeVar("T")

__all__ = ["Backend"]


class Backend:
    """The seams of one store (sync or async: both have the same settings)."""

    def __init__(self, store: Any) -> None:
        core = store._core
        self._core = core
        self.namespace: str = core.namespace
        self.max_state_bytes: int = core.max_state_bytes
        self.compression: str = core.compression
        self.events_maxlen: int = core.events_maxlen

    def confirmed(self, ops: Sequence[Cmd | Script], route: str) -> Pipe:
        """``ops`` then the confirmations the store's durability policy asks for, one pipe."""
        core = self._core
        tail: list[Cmd] = []
        if core.confirm:
            tail = [Cmd(*c) for c in core.durability.commands()]
            if core._watched_engine is not None:
                from ...probe.rules import DRIFT_KEYS

                tail.append(Cmd("CONFIG", "GET", *DRIFT_KEYS))
        return Pipe([*ops, *tail], route=route)

    def check_confirmed(self, replies: Sequence[Any], ops: int, *, what: str, run_id: str) -> None:
        """DurabilityError unless the confirmations after the first ``ops`` replies say the
        write is as durable as the policy asks."""
        self._core._check_confirmed(list(replies[ops - 1:]), what=what, run_id=run_id, generation=None)

    def retrying(self, body: Callable[[], Flow[T]], *, run_id: str | None, what: str, writes: bool) -> Flow[T]:
        return self._core._retrying(body, run_id=run_id, what=what, writes=writes)


def run(store: Any, flow: Flow[T]) -> T:
    return store._run(flow)  # type: ignore[no-any-return]


async def arun(store: Any, flow: Flow[T]) -> T:
    return await store._run(flow)  # type: ignore[no-any-return]
