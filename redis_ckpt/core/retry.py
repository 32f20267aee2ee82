"""When an operation is sent again, and when it ends: :class:`RetryPolicy` and the one
:func:`retrying` wrapper every flow that is safe to repeat runs in.

Pure: the back-off is a ``Sleep`` op the driver carries out, the deadline a ``Deadline`` op
the driver answers; the failures caught are the neutral ones of :mod:`redis_ckpt.core.ops`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import InvalidOptionError, ServerError, StoreUnavailableError
from .ops import ConnectionLost, Deadline, Failure, Flow, ReplyError, Sleep

__all__ = ["RetryPolicy", "retrying", "ask_deadline", "MIN_ATTEMPT_S", "NOT_YET"]

T = TypeVar("T")

#: the least time an attempt gets: with less left before the deadline, the operation gives up
MIN_ATTEMPT_S = 0.01
#: error replies of a server that did not run the command and cannot run it yet: another
#: client's script past busy-reply-threshold (BUSY), fewer good replicas than
#: min-replicas-to-write (NOREPLICAS), a primary demoted to a replica (READONLY, or MASTERDOWN
#: while its link to the new primary is down under replica-serve-stale-data no: a failover,
#: which a managed service makes by moving the DNS name to the new primary; the driver drops
#: the connections to the demoted node, so the retry connects to whatever the name now names).
#: Retried like LOADING.
NOT_YET = frozenset({"BUSY", "NOREPLICAS", "READONLY", "MASTERDOWN"})


@dataclass(frozen=True)
class RetryPolicy:
    """How an operation is sent again, and when it ends.

    Every operation ends by ``deadline_s`` seconds from its start, whatever the server does:
    each attempt's socket timeout is capped by the time left, the back-off never sleeps past
    it, and at the deadline the operation raises :class:`StoreUnavailableError`
    (``outcome_unknown=True`` when it writes). A broken or timed-out connection, and a server
    answering LOADING (restarted, replaying its AOF), BUSY, NOREPLICAS, READONLY or MASTERDOWN
    (demoted by a failover), are retried with an
    exponential back-off (``initial_backoff_s`` doubling up to ``max_backoff_s``, plus up to
    ``initial_backoff_s`` of jitter) until the deadline, so a restart within it is ridden out. ``attempts`` caps the
    number of attempts in all, the first included (1 = never retry); None: as many as the
    deadline allows.

    Only operations that are safe to repeat are retried: a commit carries its commit id
    (a resent commit that already applied returns the same generation), reads are reads.
    """

    attempts: int | None = None
    deadline_s: float = 15.0
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        a = self.attempts
        if a is not None and (not isinstance(a, int) or isinstance(a, bool) or a < 1):
            raise InvalidOptionError(f"RetryPolicy.attempts must be None or an int >= 1, got {a!r}",
                                     argument="attempts")
        for name, low in (("deadline_s", None), ("initial_backoff_s", 0.0), ("max_backoff_s", 0.0)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or (v <= 0 if low is None else v < low):
                need = "> 0" if low is None else ">= 0"
                raise InvalidOptionError(f"RetryPolicy.{name} must be a finite number {need} (seconds), got {v!r}",
                                         argument=name)

    def pause(self, attempts: int) -> float:
        """The back-off after ``attempts`` failed attempts (jitter included)."""
        pause = min(self.max_backoff_s, self.initial_backoff_s * 2 ** min(attempts - 1, 30))
        return pause + random.uniform(0, self.initial_backoff_s)


def ask_deadline(seconds: float) -> Flow[float]:
    """The operation's deadline (``time.monotonic()``): the driver's, which started with the
    operation; a driver that keeps none starts one now."""
    until = yield Deadline(seconds)
    return until if until is not None else time.monotonic() + seconds


def _described(exc: BaseException) -> str:
    return f"{exc.kind if isinstance(exc, Failure) else type(exc).__name__}: {exc}"


def retrying(body: Callable[[], Flow[T]], *, policy: RetryPolicy, run_id: str | None, what: str,
             writes: bool) -> Flow[T]:
    """Run ``body()`` until it returns, fails for a reason other than the connection, or the
    operation's deadline passes (see :class:`RetryPolicy`).

    A :class:`ConnectionLost` (a broken or timed-out connection, a server answering LOADING),
    and a server answering BUSY, NOREPLICAS or READONLY (:data:`NOT_YET`), is retried with a bounded
    exponential back-off; the driver caps every attempt by the time
    left (the deadline is the driver's: it starts with the operation, and the flow asks for
    it only after a first failure, so the first attempt runs bare). At the deadline:
    :class:`StoreUnavailableError` (``outcome_unknown`` when the operation ``writes``). A
    :class:`ReplyError` the body does not handle (NOPERM, OOM, ...) is a :class:`ServerError`
    at once.
    """
    until = 0.0  # the operation's deadline, asked of the driver after a first failure
    subject = f"{what} of run {run_id!r}" if run_id is not None else what
    attempts = 0
    last: Failure
    while True:
        attempts += 1
        try:
            return (yield from body())
        except ConnectionLost as exc:
            last = exc
        except ReplyError as refused:
            if refused.code in NOT_YET:
                last = refused
            else:
                raise ServerError(
                    f"{subject} failed: the server answered {_described(refused)}",
                    run_id=run_id, server_message=str(refused), outcome_unknown=writes,
                ) from refused
        if attempts == 1:  # the first attempt runs bare: no op but its own on the hot path
            until = yield from ask_deadline(policy.deadline_s)
        left = until - time.monotonic()
        if (policy.attempts is not None and attempts >= policy.attempts) or left <= MIN_ATTEMPT_S:
            unknown = " (the write may or may not have been applied)" if writes else ""
            spent = policy.deadline_s - max(0.0, left)
            state = "could not serve it" if isinstance(last, ReplyError) else "is unreachable"
            raise StoreUnavailableError(
                f"{subject} failed: the server {state} after {attempts} attempt(s) in "
                f"{spent:.1f} s (deadline {policy.deadline_s:g} s): {_described(last)}{unknown}",
                run_id=run_id, outcome_unknown=writes,
            ) from last
        yield Sleep(min(policy.pause(attempts), left - MIN_ATTEMPT_S))
