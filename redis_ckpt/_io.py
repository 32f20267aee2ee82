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

Redis Cluster (``redis.cluster.RedisCluster`` / ``redis.asyncio.cluster.RedisCluster``):
the drivers wrap the client in a :class:`Routed` / :class:`AsyncRouted` from ``_cluster``,
which sends each ``Pipe`` on one connection to the primary owning ``route``'s slot (and
follows MOVED/ASK/TRYAGAIN/CLUSTERDOWN there, bounded) and runs ``Cmd("SCAN", ...)`` over
every primary. Any other client (``redis.Redis``, a Sentinel-managed client) is used as is:
the single-node path has no extra round trip and no extra object.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, Union

import redis
import redis.asyncio
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

__all__ = [
    "Cmd", "Script", "Pipe", "Sleep", "Op", "Flow", "ScriptSource", "Routed", "AsyncRouted",
    "run_sync", "run_async",
]

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


class Routed:
    """A synchronous client that routes its own pipes (Redis Cluster: ``_cluster.ClusterTarget``).

    ``execute_command`` runs one ``Cmd``; ``run_pipe`` runs one ``Pipe`` with the semantics
    above (one connection, replies in place, NOSCRIPT handled) and returns its replies.
    """

    def execute_command(self, *args: Any) -> Any:
        raise NotImplementedError

    def run_pipe(self, pipe: Pipe, scripts: ScriptSource) -> list[Any]:
        raise NotImplementedError


class AsyncRouted:
    """The asyncio twin of :class:`Routed`."""

    async def execute_command(self, *args: Any) -> Any:
        raise NotImplementedError

    async def run_pipe(self, pipe: Pipe, scripts: ScriptSource) -> list[Any]:
        raise NotImplementedError


def _sync_target(client: Any) -> Any:
    if isinstance(client, RedisCluster):
        from ._cluster import ClusterTarget

        return ClusterTarget(client)
    return client


def _async_target(client: Any) -> Any:
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    if isinstance(client, AsyncRedisCluster):
        from ._cluster import AsyncClusterTarget

        return AsyncClusterTarget(client)
    return client


def _get_connection_args() -> tuple[str, ...]:
    """redis-py 5 requires a command name for get_connection(); 6+ deprecates passing one."""
    param = inspect.signature(redis.ConnectionPool.get_connection).parameters.get("command_name")
    return ("EVALSHA",) if param is not None and param.default is inspect.Parameter.empty else ()


_GET_CONN_ARGS = _get_connection_args()


def _lean(client: Any) -> bool:
    """Whether a Pipe can go straight to one pooled connection (a plain or Sentinel-managed
    client): that skips redis-py's pipeline layers (per-command callbacks, retries, error
    annotation), which cost more client CPU than the commit itself."""
    return getattr(client, "connection", None) is None and isinstance(
        getattr(client, "connection_pool", None), (redis.ConnectionPool, redis.asyncio.ConnectionPool))


_BIG = 16 * 1024  # arguments longer than this are sent as their own buffer, never copied


def _pack(commands: list[tuple[Any, ...]]) -> list[Any]:
    """RESP for ``commands``: str as UTF-8, int as decimal, float as repr, bytes as is — what
    redis-py's encoder does for these types, with fewer layers. Anything else is a TypeError.
    Arguments over 16 KiB (and memoryviews, e.g. chunks) are sent as their own buffer."""
    out: list[Any] = []
    small: list[Any] = []
    add = small.append
    for cmd in commands:
        add(b"*%d\r\n" % len(cmd))
        for a in cmd:
            t = type(a)
            if t is str:
                a = a.encode()
            elif t is int:
                a = b"%d" % a
            elif t is float:
                a = repr(a).encode()
            elif t is not bytes and (t is bool or not isinstance(a, (bytes, bytearray, memoryview))):
                raise TypeError(f"cannot send {t.__name__} to the server")
            n = len(a)
            add(b"$%d\r\n" % n)
            if n > _BIG or t is memoryview:
                out.append(b"".join(small))
                out.append(a)
                small = [b"\r\n"]
                add = small.append
            else:
                add(a)
                add(b"\r\n")
    out.append(b"".join(small))
    return out


def _read_all(conn: Any, n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        try:
            out.append(conn.read_response())
        except ResponseError as exc:  # in place, as a pipeline with raise_on_error=False does
            out.append(exc)
    return out


def _send_sync(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    if not _lean(client):
        p = client.pipeline(transaction=False)
        for c in commands:
            p.execute_command(*c)
        return p.execute(raise_on_error=False)  # type: ignore[no-any-return]
    pool = client.connection_pool
    conn = pool.get_connection(*_GET_CONN_ARGS)
    try:
        conn.send_packed_command(_pack(commands))
        return _read_all(conn, len(commands))
    except BaseException:
        conn.disconnect()  # a half-read reply stream is never handed to the next user
        raise
    finally:
        pool.release(conn)


async def _send_async(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    if not _lean(client):
        p = client.pipeline(transaction=False)
        for c in commands:
            p.execute_command(*c)
        return await p.execute(raise_on_error=False)  # type: ignore[no-any-return]
    pool = client.connection_pool
    conn = await pool.get_connection(*_GET_CONN_ARGS)
    try:
        await conn.send_packed_command(_pack(commands))
        out: list[Any] = []
        for _ in commands:
            try:
                out.append(await conn.read_response())
            except ResponseError as exc:
                out.append(exc)
        return out
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)


def _pipe_sync(client: Any, pipe: Pipe, scripts: ScriptSource) -> list[Any]:
    """One Pipe on one connection of a single-node (or Sentinel-managed) client."""
    reply: list[Any] = []
    for _attempt in range(2):
        reply = _send_sync(client, [_wire(o, scripts) for o in pipe.ops])
        missing = _needs_load(pipe, reply)
        if not missing:
            break
        for name in set(missing):
            client.script_load(scripts.source(name))
    return reply


async def _pipe_async(client: Any, pipe: Pipe, scripts: ScriptSource) -> list[Any]:
    reply: list[Any] = []
    for _attempt in range(2):
        reply = await _send_async(client, [_wire(o, scripts) for o in pipe.ops])
        missing = _needs_load(pipe, reply)
        if not missing:
            break
        for name in set(missing):
            await client.script_load(scripts.source(name))
    return reply


def run_sync(flow: Flow[T], client: Any, scripts: ScriptSource) -> T:
    """Drive ``flow`` to completion on a synchronous redis-py client (or RedisCluster)."""
    client = _sync_target(client)
    routed = isinstance(client, Routed)
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
            elif routed:
                reply = client.run_pipe(op, scripts)
            else:
                reply = _pipe_sync(client, op, scripts)
        except Exception as exc:  # handed to the flow, which decides; never swallowed here
            error = exc


async def run_async(flow: Flow[T], client: Any, scripts: ScriptSource) -> T:
    """Drive ``flow`` to completion on a ``redis.asyncio`` client (or its RedisCluster)."""
    client = _async_target(client)
    routed = isinstance(client, AsyncRouted)
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
            elif routed:
                reply = await client.run_pipe(op, scripts)
            else:
                reply = await _pipe_async(client, op, scripts)
        except Exception as exc:  # handed to the flow, which decides; never swallowed here
            error = exc
