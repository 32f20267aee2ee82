"""Bad input: run ids and states the store must refuse with a clear, typed error, having
written nothing at all (the keyspace is byte-for-byte the same before and after)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from chaos_tools import Tally

from redis_ckpt import (
    CheckpointError,
    CheckpointStore,
    InvalidRunIdError,
    StateTooLargeError,
    UnsupportedTypeError,
)


class _Custom:
    pass


def _cycle() -> Any:
    a: list[Any] = [1]
    a.append({"back": a})
    return {"a": a}


BAD_RUN_IDS: dict[str, object] = {
    "braces": "job{1}",
    "a lone brace": "job}",
    "empty": "",
    "201 characters": "r" * 201,
    "non-UTF-8 bytes": b"job-\xff\xfe",
    "a lone surrogate": "job-\udc80",
    "a space": "my job",
    "a newline": "job\n1",
    "a NUL": "job\x001",
    "not a string": 42,
}

#: name -> (state, the error type, what the message must name)
BAD_STATES: dict[str, tuple[Callable[[], Any], type[CheckpointError], str]] = {
    "an object()": (lambda: {"x": [1, object()]}, UnsupportedTypeError, "state['x'][1]"),
    "a custom class": (lambda: {"c": _Custom()}, UnsupportedTypeError, "_Custom"),
    "a lambda": (lambda: {"f": lambda: 1}, UnsupportedTypeError, "state['f']"),
    "a cycle": (_cycle, UnsupportedTypeError, "cycle"),
    "a NaN dict key": (lambda: {math.nan: 1}, UnsupportedTypeError, "NaN"),
    "a NaN inside a tuple key": (lambda: {(1, float("nan")): 1}, UnsupportedTypeError, "NaN"),
    "a NaN set member": (lambda: {"s": {float("nan")}}, UnsupportedTypeError, "NaN"),
    "a lone surrogate string": (lambda: {"s": "\udc80"}, UnsupportedTypeError, "UTF-8"),
    "a str subclass": (lambda: {"s": type("S", (str,), {})("x")}, UnsupportedTypeError, "subclass"),
    "a memoryview": (lambda: {"m": memoryview(b"ab")}, UnsupportedTypeError, "memoryview"),
    "1000 levels deep": (lambda: _deep(1000), UnsupportedTypeError, "nested"),
    "a 100 MiB string over the limit": (lambda: {"big": "x" * (100 * 1024 * 1024)}, StateTooLargeError, "max_state_bytes"),
}


def _deep(n: int) -> Any:
    v: Any = 0
    for _ in range(n):
        v = [v]
    return v


def _keyspace(client: Any) -> dict[bytes, Any]:
    return {k: client.dump(k) for k in sorted(client.scan_iter(count=1000))}


def bad_input(server: Any) -> Tally:
    t0 = time.monotonic()
    tally = Tally("bad input (run ids, states)", server.engine)
    client = server.client()
    # a 16 MiB limit: the 100 MiB string is over it (the default limit is 512 MiB)
    store = CheckpointStore(client, namespace="input", keep=3, max_state_bytes=16 * 1024 * 1024)
    lease = store.acquire("good", owner="w", ttl=60)
    lease.commit({"ok": 1})
    try:
        for name, run in BAD_RUN_IDS.items():
            before = _keyspace(client)
            for op, call in (("acquire", lambda: store.acquire(run, owner="w")),  # type: ignore[arg-type]
                             ("commit", lambda: store.commit(run, 1, token=1, expected_generation=0)),  # type: ignore[arg-type]
                             ("load", lambda: store.load(run))):  # type: ignore[arg-type]
                tally.injected += 1
                try:
                    call()
                except InvalidRunIdError as exc:
                    if tally.check(isinstance(exc, ValueError) and "run id" in str(exc),
                                   f"run id {name}, {op}: unclear error {exc!r}"):
                        tally.detected += 1
                else:
                    tally.violation(f"run id {name}: {op} succeeded")
            tally.check(_keyspace(client) == before, f"run id {name}: something was written")
            tally.count("bad run ids")
        for name, (make, kind, says) in BAD_STATES.items():
            state = make()
            before = _keyspace(client)
            tally.injected += 1
            try:
                lease.commit(state)
            except kind as exc:
                if tally.check(says in str(exc) and exc.run_id == "good",
                               f"state with {name}: the error does not say {says!r} / the run: {exc}"):
                    tally.detected += 1
            except CheckpointError as exc:
                tally.violation(f"state with {name}: {type(exc).__name__} instead of {kind.__name__}: {exc}")
            else:
                tally.violation(f"state with {name} was committed")
            del state
            tally.check(_keyspace(client) == before, f"state with {name}: something was written")
            tally.count("bad states")
        tally.check(store.load("good").state == {"ok": 1} and lease.commit({"ok": 2}) == 2,
                    "the run is not usable after the refused commits")
        tally.rounds = 1
    finally:
        store.close()
    tally.seconds = time.monotonic() - t0
    return tally
