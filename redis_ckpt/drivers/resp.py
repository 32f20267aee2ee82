"""One connection: how a Pipe or a command reaches a single server.

A ``Pipe`` is sent on **one connection** of the client's pool (WAITAOF must run on the
connection that made the write), straight as RESP (:func:`pack`), past redis-py's pipeline
layers (per-command callbacks, retries, error annotation cost more client CPU than the commit
itself). It returns one reply per op, a server error in place. A ``Script`` is an EVALSHA;
on NOSCRIPT the script is loaded and the whole pipe sent again once (safe: NOSCRIPT means the
script did not run, and everything after it in a pipe is a read or a WAITAOF).

Deadlines: the sync sends take their connection and bound every attempt through
:mod:`.deadlines`; asyncio, the driver bounds each op with ``asyncio.timeout``, so the lean
asyncio send writes to the connection's stream and reads its parser directly (redis-py's own
``send_packed_command`` starts a task per send under ``wait_for``, and ``read_response`` a
timeout per reply), under the socket timeout only when the op has no deadline.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core.ops import Cmd, Pipe, Script, ScriptSource
from .deadlines import GET_CONN_ARGS, arm, armed, take, time_left
from .direct import give_back_async, read_replies, reader_of, take_idle_async

try:  # hiredis packs a command of small arguments in C (redis-py depends on it here)
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - installed without it
    _pack_command = None

if sys.version_info >= (3, 11):
    from asyncio import timeout as _async_timeout
else:  # pragma: no cover - redis-py depends on async-timeout below 3.11.3
    from async_timeout import timeout as _async_timeout

__all__ = [
    "wire", "needs_load", "pack", "numbers_as_text", "time_left", "lean_sync", "lean_async", "send_sync", "command_sync",
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
#: a sync pipe packed in several buffers up to this size goes in one send: redis-py sends each
#: buffer with its own sendall, and three syscalls (and as many wake-ups of the server) cost
#: more than one copy (~25 us against ~5 at 64 KiB on loopback)
_ONE_SEND = 256 * 1024


def pack(commands: list[tuple[Any, ...]]) -> list[Any]:
    """RESP for ``commands``: str as UTF-8, int as decimal, float as repr, bytes as is — what
    redis-py's encoder does for these types, with fewer layers. Anything else is a TypeError.
    Arguments over 16 KiB (and memoryviews, e.g. chunks) are sent as their own buffer.

    Commands with none of those go to hiredis's C packer when it is installed (a saver's
    script with fifty arguments: ~30 us in Python, ~10 in C); a type it refuses (a bool, a
    bytearray) sends them through the Python packer, which decides."""
    if _pack_command is not None and not any(map(_large, commands)):
        try:
            return [b"".join([_pack_command(numbers_as_text(c)) for c in commands])]
        except TypeError:
            pass
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


def numbers_as_text(cmd: tuple[Any, ...]) -> tuple[Any, ...]:
    """``cmd`` with its ints and floats already as the text the server gets, for hiredis's
    packer. It converts them itself with ``PyObject_Repr`` and does not check the result:
    when that fails it dereferences NULL and the process dies of SIGSEGV. Converting an int
    checks for signals, so a signal handler that raises (``sys.exit`` on SIGTERM, Ctrl-C's
    KeyboardInterrupt) at that moment crashed a worker instead of ending it; so did an int
    too long for ``str()``. Here those raise, as Python code. Every command the drivers hand
    to redis-py goes through it too: redis-py before 8.2 gives hiredis the numbers as they are."""
    return tuple([a if type(a) is str or type(a) is bytes else b"%d" % a if type(a) is int
                  else repr(a).encode() if type(a) is float else a for a in cmd])


def _large(cmd: tuple[Any, ...]) -> bool:
    """Whether ``cmd`` holds an argument sent as its own buffer (see :func:`pack`)."""
    for a in cmd:
        t = type(a)
        if t is bytes or t is bytearray:
            if len(a) > _BIG:
                return True
        elif t is memoryview:
            return True
    return False


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


# --------------------------------------------------------------------------- sync sends


def send_sync(client: Any, commands: list[tuple[Any, ...]], until: float | None = None,
              name: str | None = None) -> list[Any]:
    """``commands`` on one connection of ``client``, one reply each (a server error in place),
    all by ``until``. ``name``: the one command's name, whose response callback applies."""
    if not lean_sync(client):
        if name is not None:
            try:
                return [client.execute_command(*numbers_as_text(commands[0]))]
            except ResponseError as exc:
                return [exc]
        p = client.pipeline(transaction=False)
        for c in commands:
            p.execute_command(*numbers_as_text(c))
        return p.execute(raise_on_error=False)  # type: ignore[no-any-return]
    conn, give_back = take(client, until)
    bounded, own = False, None
    try:
        bounded, own = armed(conn, until)
        parts = pack([command_wire(commands[0])] if name is not None else commands)
        if len(parts) > 1 and sum(map(len, parts)) <= _ONE_SEND:
            parts = [b"".join(parts)]
        conn.send_packed_command(parts, check_health=False)
        reader = reader_of(conn) if name is None else None
        if reader is not None:  # straight from the socket (direct.py)
            return read_replies(conn, reader, len(commands))
        return read_all(conn, len(commands), client, name)
    except BaseException:
        conn.disconnect()  # a half-read reply stream is never handed to the next user
        raise
    finally:
        if bounded:
            arm(conn, own)
        give_back(conn)


def command_sync(client: Any, args: tuple[Any, ...], until: float | None = None) -> Any:
    """One Cmd: its reply as ``client.execute_command`` gives it (response callback applied),
    a server error raised."""
    reply = send_sync(client, [args], until, name=args[0] if args else None)[0]
    if isinstance(reply, ResponseError):
        raise reply
    return reply


#: redis-py's asyncio connections, whose stream and parser the lean send uses directly
_STREAMED = frozenset(getattr(redis.asyncio.connection, name, None)
                      for name in ("Connection", "SSLConnection", "UnixDomainSocketConnection")) - {None}


async def send_async(client: Any, commands: list[tuple[Any, ...]], until: float | None = None) -> list[Any]:
    """``commands`` on one connection of ``client``, one reply each (a server error in place).
    The caller bounds it by ``until``; without one, by the connection's socket timeout."""
    if not lean_async(client):
        p = client.pipeline(transaction=False)
        for c in commands:
            p.execute_command(*numbers_as_text(c))
        return await p.execute(raise_on_error=False)  # type: ignore[no-any-return]
    pool = client.connection_pool
    conn = take_idle_async(pool)  # the short path (direct.py): an idle connection, ready to send
    short = conn is not None
    if conn is None:
        conn = await pool.get_connection(*GET_CONN_ARGS)
    try:
        writer, parser = getattr(conn, "_writer", None), getattr(conn, "_parser", None)
        if type(conn) not in _STREAMED or writer is None:  # another connection class (fakeredis's)
            await conn.send_packed_command(pack(commands))
            return [await _reply(conn.read_response()) for _ in commands]
        try:
            async with _async_timeout(conn.socket_timeout if until is None else None):
                writer.writelines(pack(commands))
                await writer.drain()
                # the parser hands a server error back as a value (the connection raises it)
                return [await parser.read_response(disable_decoding=False) for _ in commands]
        except asyncio.TimeoutError as exc:  # the socket timeout's (the builtin from 3.11 on)
            raise RedisTimeoutError("Timeout reading from the server") from exc
        except (OSError, EOFError) as exc:  # the stream's own (reset, closed, incomplete read)
            raise RedisConnectionError(f"Error while talking to the server: {exc!r}") from exc
    except BaseException:
        await conn.disconnect()  # a half-read reply stream is never handed to the next user
        raise
    finally:
        if not (short and give_back_async(pool, conn)):
            await pool.release(conn)


async def _reply(pending: Any) -> Any:
    try:
        return await pending
    except ResponseError as exc:
        return exc


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


async def pipe_async(client: Any, pipe: Pipe, scripts: ScriptSource, until: float | None = None) -> list[Any]:
    reply: list[Any] = []
    for _attempt in range(2):
        reply = await send_async(client, [wire(o, scripts) for o in pipe.ops], until)
        missing = needs_load(pipe, reply)
        if not missing:
            break
        for name in set(missing):
            await client.script_load(scripts.source(name))
    return reply
