"""Which LangGraph invocation a saver call belongs to, and what that invocation did so far.

LangGraph gives every top-level run (``invoke``, ``stream``, their async forms) one
``RunControl`` object, shared by its subgraphs, in ``config["configurable"]["__pregel_runtime"]``
of every saver call the run makes. An :class:`Invocation` is kept per (that object, thread):
the thread version its first read returned, and the token its first write was given. Calls
without it (``get_state``, ``update_state``, a direct call of the saver) are standalone.

Fencing is per invocation: its first write claims the thread (if the thread is still at the
version the invocation read), every later write must still hold the claim; once refused, the
invocation stays refused. Nothing is released when an invocation ends: the next invocation's
claim simply supersedes it. An entry is dropped once LangGraph no longer holds the run's
object (the run is over), so the table stays as small as the runs in flight.
"""

from __future__ import annotations

import secrets
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Invocation", "Invocations", "RUNTIME_KEY"]

#: langgraph's CONFIG_KEY_RUNTIME (``langgraph._internal._constants``)
RUNTIME_KEY = "__pregel_runtime"
_SWEEP_AT = 1024


@dataclass
class Invocation:
    """One LangGraph invocation on one thread."""

    control: Any  # held, so that id(control) stays this invocation's while it is tracked
    thread_id: str
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    token: int = 0  # 0 until its first write is accepted
    read: int | None = None  # the thread version its first read returned
    refused: BaseException | None = None  # set once a write was refused: every later one is too

    def saw(self, version: int) -> None:
        if self.read is None and self.token == 0:
            self.read = version

    def claim(self) -> tuple[int, str, str]:
        """(token, invocation id, expected version) for the next write."""
        if self.refused is not None:
            raise self.refused
        expected = "" if self.token or self.read is None else str(self.read)
        return self.token, self.id, expected


class Invocations:
    """The invocations in flight, by (RunControl identity, thread)."""

    def __init__(self) -> None:
        self._by: dict[tuple[int, str], Invocation] = {}
        self._lock = threading.Lock()
        self._sweep_at = _SWEEP_AT

    def of(self, config: Mapping[str, Any] | None, thread_id: str) -> Invocation | None:
        runtime = ((config or {}).get("configurable") or {}).get(RUNTIME_KEY)
        control = getattr(runtime, "control", None)
        if control is None:
            return None
        key = (id(control), thread_id)
        with self._lock:
            inv = self._by.get(key)
            if inv is None or inv.control is not control:
                if len(self._by) >= self._sweep_at:
                    self._sweep()
                inv = self._by[key] = Invocation(control, thread_id)
            return inv

    def __len__(self) -> int:
        return len(self._by)

    def _sweep(self) -> None:
        """Forget the invocations whose run is over: nothing but this table holds their
        RunControl any more (CPython's reference count tells; elsewhere, the oldest half)."""
        counts = getattr(sys, "getrefcount", None)
        if counts is None:  # pragma: no cover - not CPython
            for key in list(self._by)[: len(self._by) // 2]:
                del self._by[key]
        else:
            ours: dict[int, int] = {}
            for inv in self._by.values():
                ours[id(inv.control)] = ours.get(id(inv.control), 0) + 1
            for key, inv in list(self._by.items()):
                # getrefcount's own argument, and the entries of this table
                if counts(inv.control) - 1 - ours[id(inv.control)] <= 0:
                    del self._by[key]
        self._sweep_at = max(_SWEEP_AT, 2 * len(self._by))
