"""Plain values the store hands back."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "Checkpoint", "SkippedGeneration", "GenerationInfo", "Grant", "Event", "RunInfo", "RunUsage", "PrunedRun",
    "ms_to_datetime", "now_ms", "MIN_MS", "MAX_MS",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)
#: the milliseconds since the epoch a datetime can hold (0001-01-01 to 9999-12-31 23:59:59.999 UTC)
MIN_MS = (datetime.min.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS
MAX_MS = (datetime.max.replace(tzinfo=timezone.utc) - _EPOCH) // _ONE_MS


def ms_to_datetime(ms: int | None) -> datetime | None:
    """The UTC time ``ms`` milliseconds after the epoch, exactly; None for None or a time
    outside [MIN_MS, MAX_MS] (a frame with such a time is refused before it gets here)."""
    if ms is None or not MIN_MS <= ms <= MAX_MS:
        return None
    return _EPOCH + timedelta(milliseconds=ms)


def now_ms() -> int:
    """This machine's clock, in ms since the epoch (commit times come from the server's)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class SkippedGeneration:
    """A newer generation that failed verification and was passed over on load."""

    generation: int
    reason: str  # a FrameDamage value
    detail: str


@dataclass(frozen=True)
class Checkpoint:
    """One loaded generation.

    ``schema_version`` is the version of ``state`` as returned (after any migrations);
    ``stored_schema_version`` is what the frame was written with. ``skipped`` lists the
    newer generations that failed verification (empty on a clean load). ``created_at`` is the
    server's time when the generation was committed (the writer's clock only for generations
    committed before the head recorded commit times).
    """

    run_id: str
    state: Any
    generation: int
    head_generation: int
    token: int
    owner: str
    created_at: datetime
    schema_version: int
    stored_schema_version: int
    metadata: dict[Any, Any]
    checksum: str
    size: int
    skipped: tuple[SkippedGeneration, ...] = ()

    @property
    def fell_back(self) -> bool:
        return bool(self.skipped)


@dataclass(frozen=True)
class GenerationInfo:
    """One kept generation, as ``store.generations()`` reports it (``created_at``: the server's
    commit time, as for :class:`Checkpoint`)."""

    generation: int
    size: int
    ok: bool
    reason: str | None = None
    detail: str | None = None
    token: int | None = None
    owner: str | None = None
    created_at: datetime | None = None
    schema_version: int | None = None
    checksum: str | None = None
    compression: str | None = None
    metadata: dict[Any, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grant:
    """What acquire hands back: the token and the head generation at that moment."""

    token: int
    generation: int
    kind: str  # acquire | takeover | reacquire
    previous_token: int


@dataclass(frozen=True)
class Event:
    """One entry of a run's audit stream."""

    id: str
    kind: str
    at: datetime | None
    fields: dict[str, str]

    def get_int(self, name: str) -> int | None:
        v = self.fields.get(name)
        return int(v) if v not in (None, "") else None


@dataclass(frozen=True)
class RunInfo:
    """Head, lease and fence of one run (no frame is read)."""

    run_id: str
    fence: int
    generation: int
    kept: tuple[int, ...]
    head: dict[str, str]
    lease_owner: str | None
    lease_token: int | None
    lease_ms_left: int | None
    lease_state: str | None
    #: staged data of commits whose script has not run (in flight, or a dead writer's leftovers)
    staged_commits: int = 0
    staged_bytes: int = 0
    #: ms until the run's data expires unless it is committed to or acquired (None: kept
    #: until deleted); ms until its fence expires (None: never)
    expires_ms_left: int | None = None
    fence_ms_left: int | None = None
    #: kind and server time (ms) of the newest audit event (None: no events)
    last_event: str | None = None
    last_event_ms: int | None = None
    #: committed, but its head is missing (deleted by hand, lost in a partial restore): damage,
    #: a load raises CorruptCheckpointError; ``delete`` removes what is left
    head_lost: bool = False

    @property
    def exists(self) -> bool:
        return self.generation > 0 or self.fence > 0

    @property
    def status(self) -> str:
        """``committed`` (it has a head); ``acquired`` (never committed: a lease or events
        only); ``deleted`` (by ``delete``, or ``prune``: the fence is left as a tombstone);
        ``expired`` (removed by its retention: only the fence is left, until it expires too);
        ``damaged`` (committed, but its head is missing: :attr:`head_lost`); ``none`` (no
        trace at all)."""
        if self.generation > 0:
            return "committed"
        if self.head_lost:
            return "damaged"
        if self.fence <= 0:
            return "none"
        if self.last_event == "delete":
            return "deleted"
        if self.last_event is None and self.lease_state is None:
            return "expired" if self.fence_ms_left is not None else "deleted"
        return "acquired"


@dataclass(frozen=True)
class RunUsage:
    """What one run costs the server, in bytes: ``MEMORY USAGE`` of each of its keys.

    ``generations``: the kept generations (frames, manifests, chunks); ``staging``: data of
    commits whose script has not run, and the staging hash; ``events``: the audit stream;
    ``control``: fence, lease and head. ``overhead`` is everything but the generations.
    """

    run_id: str
    generations: int
    staging: int
    events: int
    control: int
    keys: int

    @property
    def total(self) -> int:
        return self.generations + self.staging + self.events + self.control

    @property
    def overhead(self) -> int:
        return self.total - self.generations


@dataclass(frozen=True)
class PrunedRun:
    """A run ``prune`` removed (or, in a dry run, would remove): nobody committed to it or
    acquired it for ``idle_ms``; ``generations`` it held; its ``fence`` is left as a tombstone."""

    run_id: str
    idle_ms: int
    generations: int
    fence: int
    pruned: bool
