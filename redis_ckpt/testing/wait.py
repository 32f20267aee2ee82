"""Wait for a condition on live servers: the one polling helper of the harnesses and tests."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

__all__ = ["WaitTimeout", "wait_for"]


class WaitTimeout(AssertionError):
    """The condition did not hold in time (an AssertionError: in a test, a failure)."""


def wait_for(predicate: Callable[[], object], what: str, *, timeout: float = 20.0, every: float = 0.05,
             check: bool = True) -> bool:
    """Ask ``predicate`` every ``every`` seconds until it is true; True then.

    A server that refuses or drops the connection (still starting, being failed over) counts
    as "not yet". After ``timeout`` seconds: :class:`WaitTimeout` naming ``what``, or False
    with ``check=False`` (the caller records it instead).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # a node still coming up: ask again
        if time.monotonic() > deadline:
            if not check:
                return False
            raise WaitTimeout(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)
