"""Every error redis-ckpt raises, under one root.

::

    CheckpointError                       every error below carries .run_id (None where no run is involved)
    ├── InvalidRunIdError (ValueError)    a run id or owner name that cannot become a key
    ├── OutOfRangeError (ValueError)      a ttl, token, generation or fence outside what the store
    │                                     keeps exact (MAX_INT = 2**50); .argument, .value, .minimum, .maximum
    ├── InvalidOptionError (ValueError, TypeError)  an option or argument of a store, runner or saver
    │                                     that is not valid; .argument names it
    ├── NotFoundError (LookupError)       the run (or the generation asked for) does not exist
    ├── StateError
    │   ├── UnsupportedTypeError (TypeError)   a value the codec cannot round-trip exactly; .path names it
    │   └── StateTooLargeError            the encoded state exceeds the store's max_state_bytes
    ├── LeaseError
    │   ├── LeaseHeldError                another owner holds a live lease; .owner, .ms_left
    │   └── LeaseLostError                renew/commit on a lease whose token is no longer current
    ├── FencedError                       commit with a token below the run's fence (or above it: a token the
    │                                     server no longer counts, its fence increments lost); .token,
    │                                     .fence, .cause, .by
    ├── ConflictError                     expected generation is not the head; .expected, .actual
    ├── DurabilityError                   fewer fsync/replica confirmations than the policy asks
    ├── StoreUnavailableError             the server went away; .outcome_unknown says whether a write may have applied
    │   ├── OutcomeUnknownError           a resent write whose first attempt may have applied: the server
    │   │                                 can no longer tell (always .outcome_unknown); .refused names what
    │   │                                 the resend met (FENCED, CONFLICT, ...)
    │   └── HeadMovingError               a load met a new head at every read until its deadline (busy writer, keep=1)
    ├── ServerError                       the server refused a command (NOPERM, OOM, ...); .server_message
    ├── NonDurableServerError             the startup probe refused the server; .problems
    ├── CorruptCheckpointError            no kept generation verifies; .reasons {generation: reason}
    │   ├── FrameError                    one frame failed verification; .reason (a FrameDamage value)
    │   └── DamagedRunsError              prune went past damaged runs: .damaged {run_id: error}, .pruned
    ├── SchemaVersionError                stored schema newer than the code, or a gap in the migration chain
    ├── CodecUnavailableError             a codec/compression library is missing; .extra names what to install
    └── ExtraNotInstalledError (ImportError)  a feature's optional dependency is missing; .extra names it

Messages never include a password: URLs are redacted before they reach an error.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CheckpointError",
    "InvalidRunIdError",
    "OutOfRangeError",
    "InvalidOptionError",
    "NotFoundError",
    "StateError",
    "UnsupportedTypeError",
    "StateTooLargeError",
    "LeaseError",
    "LeaseHeldError",
    "LeaseLostError",
    "FencedError",
    "ConflictError",
    "DurabilityError",
    "StoreUnavailableError",
    "OutcomeUnknownError",
    "HeadMovingError",
    "ServerError",
    "NonDurableServerError",
    "CorruptCheckpointError",
    "FrameError",
    "DamagedRunsError",
    "FrameDamage",
    "SchemaVersionError",
    "CodecUnavailableError",
    "ExtraNotInstalledError",
]


class CheckpointError(Exception):
    """Root of every redis-ckpt error."""

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle (multiprocessing, concurrent.futures) would call type(self)(*self.args): the
        # subclasses take other arguments (keyword-only ones too), so rebuild from the state
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[CheckpointError], args: tuple[Any, ...], state: dict[str, Any]) -> CheckpointError:
    """An error unpickled: its message (``args``) and attributes as they were, no ``__init__``."""
    exc = cls.__new__(cls)
    super(CheckpointError, exc).__init__(*args)  # the built-in base's own (ImportError's .msg)
    exc.__dict__.update(state)
    return exc


class InvalidRunIdError(CheckpointError, ValueError):
    """A run id (or owner name) that cannot safely become part of a key."""

    def __init__(self, message: str, *, value: object) -> None:
        super().__init__(message, run_id=None)
        self.value = value


class OutOfRangeError(CheckpointError, ValueError):
    """A number outside the range the store handles: a ttl <= 0, NaN, infinite or past the
    bound; a token, generation or fence past the bound (``MAX_INT`` = 2**50, below which the
    servers' Lua keeps every integer exact). Raised before anything is written."""

    def __init__(self, message: str, *, argument: str, value: object, minimum: float | None = None,
                 maximum: float | None = None, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.argument = argument
        self.value = value
        self.minimum = minimum
        self.maximum = maximum


class InvalidOptionError(CheckpointError, ValueError, TypeError):
    """An option or argument of a store, runner or saver that is not valid (a bad compression,
    Durability, StepRunner commit_every, ...); ``.argument`` names it. Nothing was sent. Both a
    ValueError and a TypeError: the built-ins these were raised as before."""

    def __init__(self, message: str, *, argument: str) -> None:
        super().__init__(message)
        self.argument = argument


class NotFoundError(CheckpointError, LookupError):
    """The run, or the generation asked for, does not exist (load() returns None instead)."""


class StateError(CheckpointError):
    """The state handed to commit cannot be stored; nothing was written."""


class UnsupportedTypeError(StateError, TypeError):
    """A value whose type does not round-trip exactly. ``path`` is where it sits in the state."""

    def __init__(self, message: str, *, path: str, type_name: str, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.path = path
        self.type_name = type_name


class StateTooLargeError(StateError):
    def __init__(self, message: str, *, size: int, limit: int, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.size = size
        self.limit = limit


class LeaseError(CheckpointError):
    """Lease acquisition or upkeep failed."""


class LeaseHeldError(LeaseError):
    def __init__(self, run_id: str, *, owner: str, ms_left: int) -> None:
        super().__init__(
            f"run {run_id!r} is leased by {owner!r} for another {ms_left} ms", run_id=run_id
        )
        self.owner = owner
        self.ms_left = ms_left


class LeaseLostError(LeaseError):
    """The lease of ``token`` is gone. ``fence`` > ``token`` means someone acquired or revoked
    since (a takeover); ``fence == token`` means it merely expired and nobody took it."""

    def __init__(self, run_id: str, *, token: int, holder: str | None, holder_token: int | None,
                 fence: int | None = None) -> None:
        held = f"now held by {holder!r} with token {holder_token}" if holder else "no live lease"
        super().__init__(
            f"lease on run {run_id!r} with token {token} is gone ({held})", run_id=run_id
        )
        self.token = token
        self.holder = holder
        self.holder_token = holder_token
        self.fence = fence


class FencedError(CheckpointError):
    """A commit whose token is below the run's fence: definitely not written. Also raised, as
    definitely not written, for a token above the fence (``cause="fence_behind"``: the server
    lost fence increments it made, e.g. a restore or a failover without replica fsync).

    ``cause`` says what raised the fence past the token, when the run's audit events still
    tell: ``"revoke"`` (an admin; ``by`` and ``revoked_by`` name who), ``"delete"``,
    ``"import"`` (``by``: who did it) or ``"takeover"`` (``by``: the newer holder's owner name);
    None when unknown.
    """

    def __init__(self, run_id: str, *, token: int, fence: int, cause: str | None = None,
                 by: str | None = None, what: str = "commit") -> None:
        super().__init__("", run_id=run_id)
        self.token = token
        self.fence = fence
        self.what = what  # the write refused: "commit", "finish"
        self.explain(cause, by)

    @property
    def revoked_by(self) -> str | None:
        """Who revoked the run, when a revoke fenced this commit off."""
        return self.by if self.cause == "revoke" else None

    def explain(self, cause: str | None, by: str | None) -> None:
        """Record what raised the fence (and rebuild the message)."""
        self.cause, self.by = cause, by
        why = {
            "revoke": f"the run was revoked by {by!r} (fence now {self.fence}); acquire it again to continue",
            "delete": f"the run was deleted by {by!r} (fence now {self.fence})",
            "import": f"a frame was imported into the run by {by!r} (fence now {self.fence})",
            "takeover": f"{by!r} acquired the run with token {self.fence}",
            "fence_behind": f"the token is above the fence the server holds ({self.fence}): the server lost "
                            "fence increments (a restore or failover that lost writes); acquire the run again",
        }.get(cause or "", f"the run's fence is {self.fence}: a newer token was handed out since "
                           "(a takeover, revoke, delete or import)")
        self.args = (f"{self.what} of run {self.run_id!r} with token {self.token} rejected: {why}",)


class ConflictError(CheckpointError):
    def __init__(self, run_id: str, *, expected: int, actual: int) -> None:
        super().__init__(
            f"commit to run {run_id!r} expected generation {expected} but the head is {actual}",
            run_id=run_id,
        )
        self.expected = expected
        self.actual = actual


class DurabilityError(CheckpointError):
    """The write was applied but not confirmed as the policy asks: it may or may not survive a crash."""

    def __init__(self, run_id: str | None, *, what: str, generation: int | None, local_asked: int, local_got: int,
                 replicas_asked: int, replicas_got: int, timeout_ms: int, server_error: str | None = None) -> None:
        gen = f" generation {generation}" if generation is not None else ""
        why = f" (the server said: {server_error})" if server_error else ""
        super().__init__(
            f"{what} of run {run_id!r}{gen} was applied but not confirmed within {timeout_ms} ms: "
            f"local fsync {local_got}/{local_asked}, replicas {replicas_got}/{replicas_asked}{why}; "
            "it may or may not survive a crash",
            run_id=run_id,
        )
        self.server_error = server_error
        self.what = what
        self.generation = generation
        self.local_asked = local_asked
        self.local_got = local_got
        self.replicas_asked = replicas_asked
        self.replicas_got = replicas_got
        self.timeout_ms = timeout_ms


class StoreUnavailableError(CheckpointError):
    """The server could not be reached, or went away mid-operation."""

    def __init__(self, message: str, *, run_id: str | None = None, outcome_unknown: bool = False) -> None:
        super().__init__(message, run_id=run_id)
        self.outcome_unknown = outcome_unknown


class OutcomeUnknownError(StoreUnavailableError):
    """A write was sent again after the connection broke, and the server can no longer show
    whether the first attempt applied: its commit id is not among the kept generations, yet
    the run has moved on (fenced, or the head is past the generation it would have made) and
    that generation has rotated out, or the head was deleted since.

    ``refused`` is what the resend met (``FENCED``, ``FENCE_BEHIND``, ``CONFLICT``); ``token``,
    ``fence``, ``expected`` and ``actual`` are the figures the server saw.
    """

    def __init__(self, run_id: str, *, what: str, refused: str, token: int, fence: int,
                 expected: int, actual: int) -> None:
        super().__init__(
            f"{what} of run {run_id!r} (token {token}, expected generation {expected}) was sent again "
            f"after the connection broke; the resend met {refused} (fence {fence}, head {actual}) and "
            "the server can no longer show whether the first attempt applied: it may or may not be "
            "in the store (its generation rotated out, or the run was deleted since)",
            run_id=run_id, outcome_unknown=True,
        )
        self.what = what
        self.refused = refused
        self.token = token
        self.fence = fence
        self.expected = expected
        self.actual = actual


class HeadMovingError(StoreUnavailableError):
    """A load could not read the run's head together with the generations it names before
    its deadline: commits kept replacing them (a busy writer, and ``keep=1``). Nothing is
    damaged and nothing was written; load again. ``.reads`` is how many reads were tried."""

    def __init__(self, run_id: str, *, reads: int, deadline_s: float) -> None:
        super().__init__(
            f"run {run_id!r}: the head moved at each of {reads} reads within the {deadline_s:g} s "
            "deadline (commits kept replacing the generation being read); nothing is damaged, "
            "load again (or keep more than one generation)",
            run_id=run_id,
        )
        self.reads = reads


class ServerError(CheckpointError):
    """The server answered a command with an error the store does not expect.

    Typical causes: an ACL user lacking a command (NOPERM), ``maxmemory`` reached under
    ``noeviction`` (OOM), a key of the run holding the wrong type. ``outcome_unknown`` is
    True when the failing operation writes (a script can fail after some of its writes).
    """

    def __init__(self, message: str, *, run_id: str | None, server_message: str, outcome_unknown: bool) -> None:
        super().__init__(message, run_id=run_id)
        self.server_message = server_message
        self.outcome_unknown = outcome_unknown


class NonDurableServerError(CheckpointError):
    """The startup probe found the server unable to keep an acknowledged commit."""

    def __init__(self, server: str, problems: Sequence[Any]) -> None:
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"refusing to use {server}: it cannot keep a commit durable\n{lines}")
        self.server = server
        self.problems = list(problems)


class FrameDamage(str, enum.Enum):
    """Why one stored generation failed verification."""

    MISSING = "missing"  # the key the head points at does not exist
    BAD_MAGIC = "bad-magic"  # not a redis-ckpt frame at all
    UNKNOWN_FORMAT = "unknown-format"  # frame format version newer than this code
    TRUNCATED = "truncated"  # shorter than its own length fields say
    TRAILING_BYTES = "trailing-bytes"  # longer than its own length fields say
    CHECKSUM = "checksum"  # xxh3-128 mismatch: bit flips or overwritten bytes
    BAD_HEADER = "bad-header"  # checksum ok but the header cannot be read
    UNKNOWN_CODEC = "unknown-codec"
    UNKNOWN_COMPRESSION = "unknown-compression"
    WRONG_RUN = "wrong-run"  # a valid frame of another run
    WRONG_GENERATION = "wrong-generation"  # a valid frame stored under another generation's key
    HEAD_MISMATCH = "head-mismatch"  # valid frame, but not the one the head recorded
    UNDECODABLE = "undecodable"  # checksum ok yet the payload does not decode


class CorruptCheckpointError(CheckpointError):
    """No kept generation of the run verifies; ``reasons`` maps each generation to why."""

    def __init__(self, run_id: str | None, reasons: Mapping[int, str], message: str | None = None) -> None:
        if message is None:
            detail = ", ".join(f"g{g}: {r}" for g, r in sorted(reasons.items(), reverse=True))
            message = f"run {run_id!r} has no generation that verifies ({detail})"
        super().__init__(message, run_id=run_id)
        self.reasons = dict(reasons)


class FrameError(CorruptCheckpointError):
    """One frame failed verification."""

    def __init__(self, reason: FrameDamage, detail: str, *, run_id: str | None = None, generation: int | None = None) -> None:
        where = f"generation {generation} of run {run_id!r}" if generation is not None else "frame"
        super().__init__(
            run_id,
            {generation if generation is not None else -1: reason.value},
            message=f"{where} is damaged: {reason.value}: {detail}",
        )
        self.reason = reason
        self.detail = detail
        self.generation = generation


class DamagedRunsError(CorruptCheckpointError):
    """A prune went on past runs whose stored data is damaged (each left as it is) and did
    the rest: ``damaged`` maps each such run to its error, ``pruned`` lists the PrunedRuns
    of the others (what a prune without damaged runs returns)."""

    def __init__(self, damaged: Mapping[str, CheckpointError], pruned: Sequence[Any]) -> None:
        detail = "; ".join(f"{run!r}: {exc}" for run, exc in damaged.items())
        super().__init__(None, {}, message=f"{len(damaged)} damaged run(s) left as they are, the others done "
                                           f"({len(pruned)} run(s)): {detail}")
        self.damaged = dict(damaged)
        self.pruned = list(pruned)


class SchemaVersionError(CheckpointError):
    def __init__(self, message: str, *, run_id: str | None, found: int, supported: int) -> None:
        super().__init__(message, run_id=run_id)
        self.found = found
        self.supported = supported


class CodecUnavailableError(CheckpointError):
    def __init__(self, what: str, *, extra: str, run_id: str | None = None) -> None:
        super().__init__(
            f"{what} is needed to read this checkpoint but is not installed: "
            f"pip install 'redis-ckpt[{extra}]'",
            run_id=run_id,
        )
        self.what = what
        self.extra = extra


class ExtraNotInstalledError(CheckpointError, ImportError):
    """A feature needs an optional dependency that is not installed; ``extra`` is the pip extra
    that brings it (``pip install 'redis-ckpt[<extra>]'``)."""

    def __init__(self, feature: str, *, extra: str, missing: str) -> None:
        super().__init__(f"{feature} needs {missing}, which is not installed: pip install 'redis-ckpt[{extra}]'")
        self.feature = feature
        self.extra = extra
        self.missing = missing
