"""Every option of a store and its default, once: :class:`StoreConfig`.

``CheckpointStore``, ``AsyncCheckpointStore`` and ``StoreCore`` take their options from here;
the numbers the scripts and the flows share (``MAX_INT``, the ttl bound) are here too.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from ..errors import InvalidOptionError, OutOfRangeError
from .durability import Durability
from .keys import validate_namespace
from .ops import Cmd
from .retry import RetryPolicy

__all__ = [
    "StoreConfig", "DriftWatch", "MAX_INT", "MAX_TTL_MS", "DEFAULT_CHUNK_BYTES", "STAGE_TTL_MARGIN_MS",
    "DEFAULT_FENCE_MARGIN_MS", "DRIFT_CHECK_S", "check_int", "check_ttl_ms",
]

#: The exact-number bound: every token, generation, fence, ttl and time a Lua script compares
#: or writes is an integer up to MAX_INT. Lua 5.1 numbers are doubles, exact up to 2**53; the
#: margin keeps ``x + 1`` and sums of times exact. The scripts refuse past it (OUT_OF_RANGE)
#: before writing anything; the flows refuse first (OutOfRangeError). Also in lua/*.lua.
MAX_INT = 2**50
#: the longest lease: 2**50 ms (~35,700 years); the same bound, so PEXPIRE and the lease's
#: ttl_ms stay exact
MAX_TTL_MS = MAX_INT
DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
#: how much longer than a run's data its fence lives under a retention (see StoreConfig.retention_ms)
DEFAULT_FENCE_MARGIN_MS = 24 * 3600 * 1000
#: staged keys of a commit whose writer dies before its script runs expire after the retry
#: deadline twice over plus this margin (the run's next commit or acquire removes them sooner)
STAGE_TTL_MARGIN_MS = 60_000
#: how often at most the drift check rides in a confirmed write (seconds; see DriftWatch)
DRIFT_CHECK_S = 0.25


def check_int(argument: str, value: object, low: int, high: int, *, run_id: str | None = None) -> int:
    """``value`` if it is an int in [low, high], else OutOfRangeError naming ``argument``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OutOfRangeError(
            f"{argument} must be an int in [{low}, {high}], got {value!r}"
            + (f" (run {run_id!r})" if run_id is not None else ""),
            argument=argument, value=value, minimum=low, maximum=high, run_id=run_id,
        )
    return value


def check_ttl_ms(ttl_ms: object, *, run_id: str | None = None) -> int:
    """A lease ttl in whole ms: an int in [1, MAX_TTL_MS], else OutOfRangeError."""
    return check_int("ttl", ttl_ms, 1, MAX_TTL_MS, run_id=run_id)


@dataclass(frozen=True)
class DriftWatch:
    """Server settings re-read by confirmed writes (a CONFIG GET of ``keys`` riding in the
    write's own pipeline, no extra round trip), and the rule that judges them:
    ``problems(config)`` lists what drifted. Given by the shell once the startup probe could
    read CONFIG (the core knows no probe).

    The check is not sent with every write (it cost a command per commit): a write carries
    it when ``StoreConfig.drift_check_s`` passed since the last one went out, or at once after
    a sign of trouble (:meth:`alarm`: a lost connection, fewer confirmations than asked, a
    drifted or unreadable answer, a check whose answer was not read). So a drift is caught by
    the first write sent ``drift_check_s`` after the last clean check at the latest, before
    that write is acknowledged; writes acknowledged in between ran under the settings the
    last check saw less than ``drift_check_s`` before they were sent. ``drift_check_s = 0``
    checks every write.
    """

    keys: tuple[str, ...]
    problems: Callable[[Mapping[str, str]], list[str]]
    #: when (``time.monotonic()``) the next write carries the check; a one-item list, so that
    #: the frozen watch can move it (every thread and task of a store share it)
    next_check: list[float] = field(default_factory=lambda: [0.0], compare=False, repr=False)

    def due(self, every_s: float) -> bool:
        """Whether the write being built carries the check; if so, the writes of the next
        ``every_s`` seconds do not (unless an alarm comes first)."""
        now = time.monotonic()
        if now < self.next_check[0]:
            return False
        self.next_check[0] = now + every_s
        return True

    def alarm(self) -> None:
        """A sign of trouble: the next confirmed write carries the check."""
        self.next_check[0] = 0.0


@dataclass(frozen=True)
class StoreConfig:
    """The options of a store (see :class:`redis_ckpt.CheckpointStore`).

    ``confirm`` False skips the WAITAOF confirmations: only the in-memory test store, which
    no real server backs, is created that way (it is no option of the public constructors).
    ``watch``: the drift check riding in confirmed writes, set after the probe;
    ``drift_check_s``: how often at most it rides along (see :class:`DriftWatch`; 0: always).

    ``retention_ms``: a run nobody commits to or acquires for that long is removed by the
    server (its keys expire; every commit and acquire sets the expiry anew); None: runs are
    kept until deleted. ``fence_margin_ms``: how much longer a run's fence lives than its
    data under a retention (tokens handed out under a retention are at least the server's
    time in ms, so a fence recreated after it expired starts above every token it held; the
    margin covers a server clock that steps back).
    """

    namespace: str
    schema_version: int = 1
    keep: int = 3
    durability: Durability = field(default_factory=Durability)
    compression: str = "none"
    max_state_bytes: int = 512 * 1024 * 1024
    events_maxlen: int = 1000
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    drift_check_s: float = DRIFT_CHECK_S
    #: store frames above core.dedup.DEDUP_MIN_BYTES as chunks kept generations share
    dedup: bool = False
    confirm: bool = True
    watch: DriftWatch | None = None
    retention_ms: int | None = None
    fence_margin_ms: int = DEFAULT_FENCE_MARGIN_MS

    def __post_init__(self) -> None:
        # every number a script or the frame gets is checked here, once: a bad one used to
        # pass and fail later (events_maxlen past an acquire's first writes, fencing the holder)
        check_int("schema_version", self.schema_version, 1, 2**32 - 1)  # the frame's 32 bits
        check_int("keep", self.keep, 1, MAX_INT)
        check_int("max_state_bytes", self.max_state_bytes, 1, MAX_INT)
        check_int("events_maxlen", self.events_maxlen, 0, MAX_INT)
        if self.compression not in ("none", "zstd"):
            raise InvalidOptionError("compression must be 'none' or 'zstd'", argument="compression")
        object.__setattr__(self, "namespace", validate_namespace(self.namespace))
        if self.durability is None:  # None: the default, as the constructors always allowed
            object.__setattr__(self, "durability", Durability())
        if self.retry is None:
            object.__setattr__(self, "retry", RetryPolicy())
        if not isinstance(self.chunk_bytes, int) or self.chunk_bytes < 1024:
            raise InvalidOptionError("chunk_bytes must be an int >= 1024", argument="chunk_bytes")
        if not isinstance(self.dedup, bool):
            raise InvalidOptionError("dedup must be True or False", argument="dedup")
        if self.dedup and self.retention_ms is not None:
            raise InvalidOptionError("dedup=True cannot be combined with a retention: shared chunks outlive "
                                     "the generation that wrote them, so they cannot expire with it",
                                     argument="dedup")
        if self.retention_ms is not None:
            check_int("retention (ms)", self.retention_ms, 1, MAX_TTL_MS)
        check_int("fence_margin (ms)", self.fence_margin_ms, 0, MAX_TTL_MS)
        d = self.drift_check_s
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d < 0:
            raise InvalidOptionError(f"drift_check_s must be a finite number of seconds >= 0, got {d!r}",
                                     argument="drift_check_s")

    @property
    def stage_ttl_ms(self) -> int:
        """How long staged keys live when their commit never runs: tied to the commit deadline
        (a resend within it finds them, or stages again), minutes rather than an hour."""
        return int(2 * self.retry.deadline_s * 1000) + STAGE_TTL_MARGIN_MS

    @cached_property
    def confirmations(self) -> tuple[Cmd, ...]:
        """What every confirmed write appends to its pipe: WAITAOF (and WAIT) as the durability
        policy says; none without ``confirm``. Built once per configuration: every commit sends
        them. The drift check (:attr:`drift_check`) follows them when it is due."""
        if not self.confirm:
            return ()
        return tuple(Cmd(*c) for c in self.durability.commands())

    @cached_property
    def drift_check(self) -> Cmd | None:
        """The drift check's CONFIG GET (None when not watched)."""
        return None if self.watch is None or not self.confirm else Cmd("CONFIG", "GET", *self.watch.keys)
