"""What the saver takes from a store, through the store's supported seams: its settings
(``store.core.config``), the confirmations that end a write's pipe and their check
(``core.flows.confirm``), the retry wrapper (``core.retry.retrying``); the flows it builds
are run by ``store.run`` / ``await store.arun``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ...core.config import StoreConfig
from ...core.flows.confirm import check_confirmed, confirmed
from ...core.ops import Cmd, Flow, Pipe, Script
from ...core.retry import retrying

T = TypeVar("T")

__all__ = ["Backend"]


class Backend:
    """The seams of one store (a sync and an async store of one namespace share them)."""

    def __init__(self, store: Any) -> None:
        self._core = store.core
        config = self.config
        self.namespace: str = config.namespace
        self.max_state_bytes: int = config.max_state_bytes
        self.compression: str = config.compression
        self.events_maxlen: int = config.events_maxlen

    @property
    def config(self) -> StoreConfig:
        """The store's configuration now (the drift watch is set once the probe ran)."""
        return self._core.config  # type: ignore[no-any-return]

    def confirmed(self, ops: Sequence[Cmd | Script], route: str) -> Pipe:
        """``ops`` then the confirmations the store's durability policy asks for, one pipe."""
        return confirmed(ops, self.config, route)

    def check_confirmed(self, replies: Sequence[Any], *, what: str, run_id: str) -> None:
        """DurabilityError unless the confirmations at the end of ``replies`` say the write is
        as durable as the policy asks."""
        check_confirmed(replies, self.config, what=what, run_id=run_id, generation=None)

    def retrying(self, body: Callable[[], Flow[T]], *, run_id: str | None, what: str, writes: bool) -> Flow[T]:
        return retrying(body, policy=self.config.retry, run_id=run_id, what=what, writes=writes)
