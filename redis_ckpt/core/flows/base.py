"""What every flow of a store reads: its configuration, the run keys, and what this process
remembers of each run. :class:`redis_ckpt.core.store_core.StoreCore` is this plus the flows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import OutcomeUnknownError, OutOfRangeError, StoreUnavailableError
from ..config import MAX_INT, StoreConfig
from ..keys import RunKeys, validate_run_id
from ..ops import ConnectionLost, Flow
from ..retry import retrying

__all__ = ["FlowsBase", "Migration", "out_of_range", "outcome_unknown"]

T = TypeVar("T")
Migration = Callable[[Any], Any]
#: runs remembered at most (then forgotten all at once: a cache, never a leak)
REMEMBERED = 4096


class FlowsBase:
    """The configuration, migrations and per-run memory the flows share."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.migrations: dict[int, Migration] = {}
        self._keys: dict[str, RunKeys] = {}
        #: the newest head generation this process saw per run: a load reads it with the head
        self.last_generation: dict[str, int] = {}
        #: chunk counts of the chunked generations this process committed, by (run, generation)
        self.chunks_of: dict[tuple[str, int], int] = {}
        #: the size of the newest frame this process wrote or read per run: how a load reads it
        self.last_size: dict[str, int] = {}
        #: runs seen under a retention of their own (the head's): a commit passes every kept
        #: generation's keys at once (they get the new expiry) instead of hearing NEED_KEYS
        self.retained: set[str] = set()

    def keys(self, run_id: str) -> RunKeys:
        """The keys of ``run_id`` (validated); recently used runs are remembered."""
        k = self._keys.get(run_id) if isinstance(run_id, str) else None
        if k is None:
            k = RunKeys(self.config.namespace, validate_run_id(run_id))
            if len(self._keys) >= REMEMBERED:
                self._keys.clear()
            self._keys[k.run_id] = k
        return k

    def remember(self, run_id: str, generation: int, chunks: int = 0, size: int = 0) -> None:
        """What this process last saw of a run: its head generation and frame size (a load
        reads that generation in the same round trip as the head, by a script when small) and
        the chunk counts of the chunked generations it committed (a later commit that rotates
        one out passes all its keys at once)."""
        if len(self.last_generation) >= REMEMBERED:
            self.last_generation.clear()
            self.chunks_of.clear()
            self.last_size.clear()
            self.retained.clear()
        self.last_generation[run_id] = generation
        self.last_size[run_id] = size
        if chunks:
            self.chunks_of[(run_id, generation)] = chunks
        self.chunks_of.pop((run_id, generation - self.config.keep), None)

    def kept_guess(self, run_id: str) -> list[str]:
        """The kept generations ("<g>:<chunks>") of a run as this process last saw it (a
        script answers NEED_KEYS for those the guess misses)."""
        head = self.last_generation.get(run_id)
        if not head:
            return []
        low = max(1, head - self.config.keep + 1)
        return [f"{g}:{self.chunks_of.get((run_id, g), 0)}" for g in range(low, head + 1)]

    def retrying(self, body: Callable[[], Flow[T]], *, run_id: str | None, what: str, writes: bool) -> Flow[T]:
        """``body`` under this store's RetryPolicy (see :func:`redis_ckpt.core.retry.retrying`).

        A write whose connection was lost is a sign of trouble (the server may have restarted
        with other settings): its resend carries the drift check (see ``DriftWatch``)."""
        watch = self.config.watch
        if watch is not None and writes:
            inner = body

            def body() -> Flow[T]:
                try:
                    return (yield from inner())
                except ConnectionLost:
                    watch.alarm()
                    raise

        return retrying(body, policy=self.config.retry, run_id=run_id, what=what, writes=writes)


def not_converged(run_id: str, what: str, tries: int, *, outcome_unknown: bool = False) -> StoreUnavailableError:
    """The error for a write whose script answered "pass more keys" (NEED_KEYS, NEED_STAGE,
    NEED_SHARED ...: nothing written) at each of ``tries`` sends, other writers changing the run
    in between; ``outcome_unknown``: an earlier attempt went out before and its fate is open."""
    unknown = (" An earlier attempt's outcome is unknown (the write may or may not have been applied)."
               if outcome_unknown else " Nothing of it was applied.")
    return StoreUnavailableError(
        f"{what} of run {run_id!r} did not complete: other writers changed the run's generations or "
        f"staged data at each of its {tries} tries.{unknown} Try again.",
        run_id=run_id, outcome_unknown=outcome_unknown)


def out_of_range(run_id: str, refused: dict[str, str], what: str) -> OutOfRangeError:
    """The OutOfRangeError for a script's "OUT_OF_RANGE <what> <value>" answer."""
    argument, value = refused["what"], refused["value"]
    shown: object = int(value) if value.isdigit() else value
    if argument == "fence":
        message = (f"{what} of run {run_id!r} refused: its fence is {value}, at or past the bound "
                   f"{MAX_INT} up to which tokens stay exact; no token can be handed out")
    else:
        message = f"{what} of run {run_id!r} refused: {argument} {value} is out of range [1, {MAX_INT}]"
    return OutOfRangeError(message, argument=argument, value=shown, minimum=1, maximum=MAX_INT, run_id=run_id)


def outcome_unknown(run_id: str, refused: dict[str, str], what: str) -> OutcomeUnknownError:
    """The error for "OUTCOME_UNKNOWN <code> <token> <fence> <expected> <actual>"."""
    return OutcomeUnknownError(run_id, what=what, refused=refused["code"], token=int(refused["token"]),
                               fence=int(refused["fence"]), expected=int(refused["expected"]),
                               actual=int(refused["actual"]))
