"""The seam between the sans-IO core and the sync/async shells.

Every operation of the store (commit, load, acquire, probe, ...) is written once, as a
generator that *yields* what it needs from the server and *receives* the reply::

    def flow():
        head = yield Cmd("HGETALL", keys.head)
        replies = yield Pipe([Script("commit", keys=[...], args=[...]), Cmd("WAITAOF", 1, 0, 5000)],
                             route=keys.head)
        return result

A driver runs the flow: :func:`run_sync` with a ``redis.Redis``, :func:`run_async` with a
``redis.asyncio.Redis``. The two drivers are the only code that differs between the sync
and the async store, and they share :func:`_step`.

Semantics a flow can rely on:

* ``Cmd`` is one command; a server error is *thrown into* the flow as the redis-py
  exception (``redis.ResponseError`` ...), so ``try/except`` around the ``yield`` works.
* ``Pipe`` is a non-transactional pipeline sent on **one connection** (WAITAOF must run on
  the connection that made the write). It returns a list with one reply per op; a server
  error is returned in place as an exception object, never thrown.
* ``Script`` is an EVALSHA of a script in ``lua/``. On NOSCRIPT the driver loads the script
  and resends the whole pipeline once; that is safe because a NOSCRIPT reply means the
  script did not run, and everything after it in the pipeline is a read or a WAITAOF.
* Connection errors (``redis.ConnectionError``/``TimeoutError``) are thrown into the flow.
* ``route`` names a key whose hash slot owns the operation (used on Redis Cluster).
* ``Sleep`` pauses the flow (``time.sleep`` / ``asyncio.sleep``): retry back-off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, Union

from redis.exceptions import NoScriptError

__all__ = ["Cmd", "Script", "Pipe", "Sleep", "Op", "Flow", "ScriptSource", "run_sync", "run_async"]

T = TypeVar("T")


@dataclass(frozen=True)
class Cmd:
    args: tuple[Any, ...]

    def __init__(self, *args: Any) -> None:
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class Script:
    name: str
    keys: Sequence[str] = ()
    args: Sequence[Any] = ()


@dataclass(frozen=True)
class Pipe:
    ops: Sequence[Cmd | Script]
    route: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sleep:
    seconds: float


Op = Union[Cmd, Pipe, Sleep]
Flow = Generator[Op, Any, T]


class ScriptSource(Protocol):
    """Maps a script name to (sha1, source). Implemented by ``_scripts.Scripts``."""

    def sha(self, name: str) -> str: ...

    def source(self, name: str) -> str: ...


def _wire(op: Cmd | Script, scripts: ScriptSource) -> tuple[Any, ...]:
    if isinstance(op, Script):
        return ("EVALSHA", scripts.sha(op.name), len(op.keys), *op.keys, *op.args)
    return op.args


def _needs_load(pipe: Pipe, replies: list[Any]) -> list[str]:
    return [
        op.name
        for op, reply in zip(pipe.ops, replies)
        if isinstance(op, Script) and isinstance(reply, NoScriptError)
    ]


def _step(flow: Flow[T], reply: Any, error: BaseException | None) -> Op:
    """Advance the flow by one op. StopIteration carries the flow's result."""
    if error is not None:
        return flow.throw(error)
    return flow.send(reply)


def _pipeline_of(client: Any, pipe: Pipe) -> Any:
    router = getattr(client, "_ckpt_pipeline_for", None)
    if router is not None:  # cluster-aware client wrapper
        return router(pipe.route)
    return client.pipeline(transaction=False)


def run_sync(flow: Flow[T], client: Any, scripts: ScriptSource) -> T:
    """Drive ``flow`` to completion on a synchronous redis-py client."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = _step(flow, reply, error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            if isinstance(op, Sleep):
                time.sleep(op.seconds)
            elif isinstance(op, Cmd):
                reply = client.execute_command(*op.args)
            else:
                for _attempt in range(2):
                    p = _pipeline_of(client, op)
                    for o in op.ops:
                        p.execute_command(*_wire(o, scripts))
                    reply = p.execute(raise_on_error=False)
                    missing = _needs_load(op, reply)
                    if not missing:
                        break
                    for name in set(missing):
                        client.script_load(scripts.source(name))
        except Exception as exc:  # handed to the flow, which decides; never swallowed here
            error = exc


async def run_async(flow: Flow[T], client: Any, scripts: ScriptSource) -> T:
    """Drive ``flow`` to completion on a ``redis.asyncio`` client."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = _step(flow, reply, error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            if isinstance(op, Sleep):
                await asyncio.sleep(op.seconds)
            elif isinstance(op, Cmd):
                reply = await client.execute_command(*op.args)
            else:
                for _attempt in range(2):
                    p = _pipeline_of(client, op)
                    for o in op.ops:
                        p.execute_command(*_wire(o, scripts))
                    reply = await p.execute(raise_on_error=False)
                    missing = _needs_load(op, reply)
                    if not missing:
                        break
                    for name in set(missing):
                        await client.script_load(scripts.source(name))
        except Exception as exc:  # handed to the flow, which decides; never swallowed here
            error = exc
