"""One connection, one deadline: how a Pipe or a command reaches a single server.

A ``Pipe`` is sent on **one connection** of the client's pool (WAITAOF must run on the
connection that made the write), straight as RESP (:func:`pack`), past redis-py's pipeline
layers (per-command callbacks, retries, error annotation cost more client CPU than the commit
itself). It returns one reply per op, a server error in place. A ``Script`` is an EVALSHA;
on NOSCRIPT the script is loaded and the whole pipe sent again once (safe: NOSCRIPT means the
script did not run, and everything after it in a pipe is a read or a WAITAOF).

Deadlines, sync: redis-py has no per-call timeout, so the connection taken for an attempt gets
the time left as its socket timeout (and its own back after); redis-py's own retries are off
for the attempt (the flow's RetryPolicy decides). A pooled connection that must be
(re)connected is connected with the attempt's timeouts too: redis-py >= 8 connects in
``ConnectionPool.ensure_connection``, which is wrapped once per pool (the wrapper changes
nothing outside an attempt of this driver); older versions connect inside ``get_connection``,
so there the idle connection is taken here (the first half of ``get_connection``, unchanged
since redis-py 3) and connected. An op with no time left fails with ``redis.TimeoutError``
before anything is sent. Asyncio: the driver bounds each op with ``asyncio.timeout``.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..core.ops import Cmd, Pipe, Script, ScriptSource

__all__ = [
    "wire", "needs_load", "pack", "time_left", "lean_sync", "lean_async", "send_sync", "command_sync",
    "send_async", "pipe_sync", "pipe_async", "load_script_sync",
]


def wire(op: Cmd | Script, scripts: ScriptSource) -> tuple[Any, ...]:
    """An op as the command sent: a Script as its EVALSHA."""
    if isinstance(op, Script):
        return ("EVALSHA", scripts.sha(op.name), len(op.keys), *op.keys, *op.args)
    return op.args


def needs_load(pipe: Pipe, replies: list[Any]) -> list[str]:
    """The scripts of ``pipe`` the server answered NOSCRIPT for."""
    return [
        op.name
        for op, reply in zip(pipe.ops, replies)
        if isinstance(op, Script) and isinstance(reply, NoScriptError)
    ]


def _get_connection_args() -> tuple[str, ...]:
    """redis-py 5 requires a command name for get_connection(); 6+ deprecates passing one."""
    param = inspect.signature(redis.ConnectionPool.get_connection).parameters.get("command_name")
    return ("EVALSHA",) if param is not None and param.default is inspect.Parameter.empty else ()


_GET_CONN_ARGS = _get_connection_args()


def lean_async(client: Any) -> bool:
    """Whether a Pipe can go straight to one pooled connection (a plain or Sentinel-managed
    client): that skips redis-py's pipeline layers (per-command callbacks, retries, error
    annotation), which cost more client CPU than the commit itself."""
    return getattr(client, "connection", None) is None and isinstance(
        getattr(client, "connection_pool", None), (redis.ConnectionPool, redis.asyncio.ConnectionPool))


def lean_sync(client: Any) -> bool:
    """Whether the sync driver sends on ``client``'s connections itself (and so can bound every
    attempt by the deadline): a ``redis.Redis`` on a pool, a single-connection client included.
    Anything else (a test double, another client class) is driven through its own methods."""
    return isinstance(getattr(client, "connection_pool", None), redis.ConnectionPool) and \
        hasattr(client, "parse_response")


_BIG = 16 * 1024  # arguments longer than this are sent as their own buffer, never copied


def pack(commands: list[tuple[Any, ...]]) -> list[Any]:
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


def command_wire(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A Cmd as sent: a multi-word name (``"CONFIG GET"``) becomes its words, as redis-py does."""
    first = args[0] if args else ""
    if isinstance(first, str) and " " in first:
        return (*first.split(), *args[1:])
    return args


def read_all(conn: Any, n: int, client: Any = None, name: str | None = None) -> list[Any]:
    """``n`` replies, a server error in place (as a pipeline with raise_on_error=False does);
    ``name``: the command whose response callback ``client`` applies (one Cmd)."""
    out: list[Any] = []
    for _ in range(n):
        try:
            out.append(conn.read_response() if name is None else client.parse_response(conn, name))
        except ResponseError as exc:
            out.append(exc)
    return out


# --------------------------------------------------------------------------- deadlines


def time_left(until: float | None) -> float | None:
    """Seconds left before ``until`` (None: no deadline); ``redis.TimeoutError`` when none are."""
    if until is None:
        return None
    left = until - time.monotonic()
    if left <= 0:
        raise RedisTimeoutError("no answer from the server within the operation's deadline")
    return left


def _cap(value: float | None, left: float) -> float:
    return left if value is None else min(value, left)


#: redis-py's retries off for an attempt: the flow's RetryPolicy decides what is sent again
_NO_RETRY = Retry(NoBackoff(), 0)


def _arm(conn: Any, seconds: float | None) -> None:
    """The timeout of ``conn``'s socket, and the one its parser puts back after a poll."""
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return
    try:
        sock.settimeout(seconds)
    except (AttributeError, OSError):  # not a socket (a test double), or closed meanwhile
        return
    parser = getattr(conn, "_parser", None)
    buffer = getattr(parser, "_buffer", None)
    if buffer is not None and hasattr(buffer, "socket_timeout"):
        buffer.socket_timeout = seconds
    if hasattr(parser, "_socket_timeout"):  # hiredis
        parser._socket_timeout = seconds


@contextlib.contextmanager
def _settings(conn: Any, left: float) -> Iterator[None]:
    """``conn``'s socket and connect timeouts capped by ``left`` and its retries off (what a
    connect reads); its own settings back afterwards."""
    try:
        saved = conn.socket_timeout, conn.socket_connect_timeout, conn.retry
    except AttributeError:  # a connection class without them (a proxy): nothing to bound
        yield
        return
    conn.socket_timeout = _cap(saved[0], left)
    conn.socket_connect_timeout = _cap(saved[1], left)
    conn.retry = _NO_RETRY
    try:
        yield
    finally:
        conn.socket_timeout, conn.socket_connect_timeout, conn.retry = saved


def _armed(conn: Any, until: float | None) -> tuple[bool, Any]:
    """Bound one attempt on a connected ``conn`` by ``until``: its socket's timeout capped by
    the time left, unless its own timeout ends the attempt in time anyway (then nothing is
    touched: the common case costs no syscall). (armed, its own timeout to put back). Only the
    socket matters here: the connection is connected (a connect is bounded in ``_take``) and
    the send skips redis-py's health check, so nothing reconnects during the attempt."""
    if until is None:
        return False, None
    left = time_left(until)
    own = getattr(conn, "socket_timeout", None)
    if own is not None and own <= left:  # type: ignore[operator]
        return False, None
    _arm(conn, left)
    return True, own


#: the time an attempt has left while this driver takes a connection from a pool (read by the
#: pool's wrapped ensure_connection); None everywhere else
_CONNECT_LEFT: contextvars.ContextVar[float | None] = contextvars.ContextVar("redis_ckpt_connect_left", default=None)
_HOOK_LOCK = threading.Lock()


def _hook(pool: Any) -> bool:
    """Wrap ``pool.ensure_connection`` (redis-py >= 8: it connects a connection taken from the
    pool) so that a connection taken by this driver is connected with the attempt's timeouts.
    Outside such an attempt the wrapper calls the original as is. False: no such step."""
    current = getattr(pool, "ensure_connection", None)
    if current is None:
        return False
    if getattr(current, "_redis_ckpt", False):
        return True
    with _HOOK_LOCK:
        current = pool.ensure_connection
        if not getattr(current, "_redis_ckpt", False):
            def ensure_connection(connection: Any, _original: Callable[[Any], None] = current) -> None:
                left = _CONNECT_LEFT.get()
                if left is None:
                    return _original(connection)
                try:  # what _settings does, without a context manager: this runs every attempt
                    saved = connection.socket_timeout, connection.socket_connect_timeout, connection.retry
                except AttributeError:
                    return _original(connection)
                connection.socket_timeout = _cap(saved[0], left)
                connection.socket_connect_timeout = _cap(saved[1], left)
                connection.retry = _NO_RETRY
                try:
                    return _original(connection)
                finally:
                    connection.socket_timeout, connection.socket_connect_timeout, connection.retry = saved

            ensure_connection._redis_ckpt = True  # type: ignore[attr-defined]
            pool.ensure_connection = ensure_connection
    return True


def _take_idle(pool: Any, left: float) -> Any:
    """What ``ConnectionPool.get_connection`` does before redis-py 8, with the connect bounded:
    take the idle connection (or make one), then connect it within ``left`` seconds."""
    pool._checkpid()
    with pool._lock:
        try:
            conn = pool._available_connections.pop()
        except IndexError:
            conn = pool.make_connection()
        pool._in_use_connections.add(conn)
    try:
        with _settings(conn, left):
            conn.connect()
            try:  # data waiting, or the server closed it: connect again
                if conn.can_read() and getattr(pool, "cache", None) is None:
                    raise RedisConnectionError("Connection has data")
            except (RedisConnectionError, RedisTimeoutError, OSError):
                conn.disconnect()
                conn.connect()
                if conn.can_read():
                    raise RedisConnectionError("Connection not ready") from None
    except BaseException:
        pool.release(conn)
        raise
    return conn


_BASE_GET = redis.ConnectionPool.get_connection


def _take(client: Any, until: float | None) -> tuple[Any, Callable[[Any], None]]:
    """A connected connection of ``client`` for one attempt, and how to give it back."""
    left = time_left(until)
    single = getattr(client, "connection", None)
    if single is not None:  # a single-connection client: its lock, if any, for the attempt
        lock = getattr(client, "single_connection_lock", None) or contextlib.nullcontext()
        lock.__enter__()
        try:
            if left is None:
                single.connect()
            else:
                with _settings(single, left):
                    single.connect()
        except BaseException:
            lock.__exit__(None, None, None)
            raise
        return single, lambda _c: lock.__exit__(None, None, None)
    pool = client.connection_pool
    if left is None:
        return pool.get_connection(*_GET_CONN_ARGS), pool.release
    if _hook(pool):
        token = _CONNECT_LEFT.set(left)
        try:
            return pool.get_connection(*_GET_CONN_ARGS), pool.release
        finally:
            _CONNECT_LEFT.reset(token)
    if type(pool).get_connection is _BASE_GET and hasattr(pool, "_available_connections"):
        return _take_idle(pool, left), pool.release
    return pool.get_connection(*_GET_CONN_ARGS), pool.release  # connects with its own timeouts


# --------------------------------------------------------------------------- sync sends


def send_sync(client: Any, commands: list[tuple[Any, ...]], until: float | None = None,
              name: str | None = None) -> list[Any]:
    """``commands`` on one connection of ``client``, one reply each (a server error in place),
    all by ``until``. ``name``: the one command's name, whose response callback applies."""
    if not lean_sync(client):
        if name is not None:
            try:
                return [client.execute_command(*commands[0])]
            except ResponseError as exc:
                return [exc]
        p = client.pipeline(transaction=False)
        for c in commands:
            p.execute_command(*c)
        return p.execute(raise_on_error=False)  # type: ignore[no-any-return]
    conn, give_back = _take(client, until)
    armed, own = False, None
    try:
        armed, own = _armed(conn, until)
        conn.send_packed_command(pack([command_wire(commands[0])] if name is not None else commands),
                                 check_health=False)
        return read_all(conn, len(commands), client, name)
    except BaseException:
        conn.disconnect()  # a half-read reply stream is never handed to the next user
        raise
    finally:
        if armed:
            _arm(conn, own)
        give_back(conn)


def command_sync(client: Any, args: tuple[Any, ...], until: float | None = None) -> Any:
    """One Cmd: its reply as ``client.execute_command`` gives it (response callback applied),
    a server error raised."""
    reply = send_sync(client, [args], until, name=args[0] if args else None)[0]
    if isinstance(reply, ResponseError):
        raise reply
    return reply


async def send_async(client: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    if not lean_async(client):
        p = client.pipeline(transaction=False)
        for c in commands:
            p.execute_command(*c)
        return await p.execute(raise_on_error=False)  # type: ignore[no-any-return]
    pool = client.connection_pool
    conn = await pool.get_connection(*_GET_CONN_ARGS)
    try:
        await conn.send_packed_command(pack(commands))
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


def pipe_sync(client: Any, pipe: Pipe, scripts: ScriptSource, until: float | None = None) -> list[Any]:
    """One Pipe on one connection of a single-node (or Sentinel-managed) client."""
    reply: list[Any] = []
    for _attempt in range(2):
        reply = send_sync(client, [wire(o, scripts) for o in pipe.ops], until)
        missing = needs_load(pipe, reply)
        if not missing:
            break
        for name in set(missing):
            load_script_sync(client, scripts.source(name), until)
    return reply


def load_script_sync(client: Any, source: str, until: float | None = None) -> None:
    if lean_sync(client):
        command_sync(client, ("SCRIPT", "LOAD", source), until)
    else:
        client.script_load(source)


async def pipe_async(client: Any, pipe: Pipe, scripts: ScriptSource) -> list[Any]:
    reply: list[Any] = []
    for _attempt in range(2):
        reply = await send_async(client, [wire(o, scripts) for o in pipe.ops])
        missing = needs_load(pipe, reply)
        if not missing:
            break
        for name in set(missing):
            await client.script_load(scripts.source(name))
    return reply


