"""The sans-IO core of a store: :class:`StoreCore`, its configuration and every flow.

Every store operation is a generator *flow* (see :mod:`redis_ckpt.core.ops`): it decides,
the drivers do the I/O. Nothing here touches a socket, a clock for waiting, or a thread.
The flows live by concern in :mod:`redis_ckpt.core.flows`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import InvalidOptionError
from .config import DriftWatch
from .flows.base import Migration
from .flows.lease import LeaseFlows
from .flows.lifecycle import LifecycleFlows
from .flows.retention import RetentionFlows

__all__ = ["StoreCore"]


class StoreCore(LeaseFlows, LifecycleFlows, RetentionFlows):
    """Configuration (``config``), migrations and every flow of a store."""

    def register_migration(self, from_version: int, fn: Migration | None = None) -> Any:
        """Register ``fn(state) -> state`` that turns schema ``from_version`` into ``from_version + 1``.

        Usable as a call or as a decorator: ``@store.register_migration(1)``.
        """
        if not isinstance(from_version, int) or from_version < 1:
            raise InvalidOptionError("from_version must be an int >= 1", argument="from_version")

        def add(f: Migration) -> Migration:
            if from_version in self.migrations:
                raise InvalidOptionError(f"a migration from schema {from_version} is already registered",
                                         argument="from_version")
            self.migrations[from_version] = f
            return f

        return add if fn is None else add(fn)

    def watch_config(self, watch: DriftWatch) -> None:
        """Re-read the durability settings in confirmed writes (the probe could read CONFIG):
        a server whose settings drift after start then fails a write with DurabilityError
        instead of acknowledging it silently. The CONFIG GET rides in the write's pipeline (no
        extra round trip) at most every ``config.drift_check_s`` and at once after a sign of
        trouble (see :class:`~redis_ckpt.core.config.DriftWatch` for the window)."""
        self.config = replace(self.config, watch=watch)
