"""What the saver takes from a store, through the store's supported seams: its settings
(``store.core.config``), the confirmations that end a write's pipe and their check
(``core.flows.confirm``), the retry wrapper (``core.retry.retrying``), and the driver that
runs a flow (``store.run`` / ``await store.arun``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ...core.ops import Cmd, Flow, Pipe, Script

try:  # the seams (ARCH.md); TODO(issue 17): drop the fallback once they are on main
    from ...core.flows.confirm import check_confirmed, confirmed
    from ...core.retry import retrying
except ImportError:  # pragma: no cover - until the core split lands
    confirmed = check_confirmed = retrying = None  # type: ignore[assignment]

T = TypeVar("T")

__all__ = ["Backend", "run", "arun"]


class Backend:
    """The seams of one store (a sync and an async store of one namespace share them)."""

    def __init__(self, store: Any) -> None:
        core = getattr(store, "core", None)
        self._config = core.config if core is not None and confirmed is not None else None
        self._core = store._core if self._config is None else None
        settings = self._config if self._config is not None else self._core
        self.namespace: str = settings.namespace
        self.max_state_bytes: int = settings.max_state_bytes
        self.compression: str = settings.compression
        self.events_maxlen: int = settings.events_maxlen

    def confirmed(self, ops: Sequence[Cmd | Script], route: str) -> Pipe:
        """``ops`` then the confirmations the store's durability policy asks for, one pipe."""
        if self._config is not None:
            return confirmed(ops, self._config, route)
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
        if self._config is not None:
            check_confirmed(replies, self._config, what=what, run_id=run_id, generation=None)
        else:
            self._core._check_confirmed(list(replies[ops - 1:]), what=what, run_id=run_id, generation=None)

    def retrying(self, body: Callable[[], Flow[T]], *, run_id: str | None, what: str, writes: bool) -> Flow[T]:
        if self._config is not None:
            return retrying(body, policy=self._config.retry, run_id=run_id, what=what, writes=writes)
        return self._core._retrying(body, run_id=run_id, what=what, writes=writes)


def run(store: Any, flow: Flow[T]) -> T:
    return store.run(flow) if hasattr(store, "run") else store._run(flow)  # type: ignore[no-any-return]


async def arun(store: Any, flow: Flow[T]) -> T:
    return await (store.arun(flow) if hasattr(store, "arun") else store._run(flow))  # type: ignore[no-any-return]
