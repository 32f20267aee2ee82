"""The sync driver's short path on a plain connection: take an idle connection of a plain
pool, and read a Pipe's replies straight from its socket into its hiredis reader.

redis-py's own path costs ~45 us of client CPU per round trip on top of the syscalls
(measured side by side against this one: 135-154 against 89-106 us for a 1 KiB ``SET`` +
``WAITAOF``): ``ConnectionPool.get_connection`` records observability counters, connects
through ``ensure_connection`` and polls the socket through three layers; ``release`` records
them back and dispatches an event; ``read_response`` wraps every reply in its parser's and its
connection's handlers. What this path does instead is what those do for the case it takes,
and nothing else:

* **take** (:func:`take_idle`): only a ``redis.ConnectionPool`` itself (not a subclass:
  Sentinel's, a blocking pool), with no client-side cache and no credential provider (whose
  re-authentication runs on release); only an idle connection
  that is connected, has nothing buffered and nothing readable on its socket (a reply left
  over, or the server closed it). Anything else goes back untouched and is taken the
  ordinary way, which reconnects it.
* **read** (:func:`read_replies`): only a plain TCP or unix connection with redis-py's
  hiredis parser (its reader, buffer and reply classes are the ones used, so an error reply
  is the same exception object). Under RESP3 a push message (a maintenance notification, an
  invalidation) that arrives between replies goes to the parser's own push handler, as
  ``read_response`` does, and is not counted as a reply (redis-py 5's hiredis parser has no
  push handler and would hand it back as the next reply: here it is dropped). A timeout or a
  broken socket raises redis-py's ``TimeoutError`` / ``ConnectionError``, as
  ``read_response`` does; the caller disconnects.
* **give back** (:func:`give_back`): what ``release`` does, without the counters (neither
  side of this path records them, so redis-py's pool metrics never drift).
* **asyncio** (:func:`take_idle_async`, :func:`give_back_async`): the same take and give
  back for ``redis.asyncio.ConnectionPool`` (~10-20 us of awaits, locks and counters per
  round trip): no await between the pop and the checks, so nothing else runs in between;
  "ready" is what redis-py's asyncio ``can_read`` looks at (the parser and the stream hold
  nothing, the stream is not at EOF and has no error). The send and reads were already
  direct (``resp.send_async``).

The send stays ``send_packed_command`` (one call per round trip: what tests and the bench
count).
"""

from __future__ import annotations

import errno
import select
import socket
import time
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # hiredis >= 3.2 returns a RESP3 push message as this type
    from hiredis import PushNotification as _PUSH
except ImportError:  # pragma: no cover - an older hiredis: RESP3 connections go the ordinary way
    _PUSH = None

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _MORE
    from redis._parsers.hiredis import _HiredisParser
except ImportError:  # pragma: no cover - a redis-py without them: the ordinary path only
    _HiredisParser = None
    _MORE = False

__all__ = ["reader_of", "read_replies", "take_idle", "give_back", "take_idle_async", "give_back_async"]

_PLAIN = frozenset({redis.connection.Connection, redis.connection.UnixDomainSocketConnection})
_PLAIN_ASYNC = frozenset({redis.asyncio.connection.Connection, redis.asyncio.connection.UnixDomainSocketConnection})
_CLOSED = "Connection closed by server."


def reader_of(conn: Any) -> Any:
    """``conn``'s hiredis reader when its replies can be read straight from its socket (a
    plain connection, redis-py's hiredis parser, connected, and under RESP3 a hiredis that
    tells push messages apart); else None."""
    if _HiredisParser is None or type(conn) not in _PLAIN:
        return None
    parser = conn._parser
    if type(parser) is not _HiredisParser or conn._sock is None or getattr(parser, "_buffer", None) is None:
        return None
    if _PUSH is None and conn.protocol in (3, "3"):
        return None
    return getattr(parser, "_reader", None)


def read_replies(conn: Any, reader: Any, n: int) -> list[Any]:
    """``n`` replies of ``conn`` (a server error in place, as the reader makes it), read from
    its socket under the socket's timeout."""
    parser = conn._parser
    sock, buf = conn._sock, parser._buffer
    handle_push = getattr(parser, "handle_push_response", None)
    out: list[Any] = []
    try:
        while len(out) < n:
            reply = reader.gets()
            while reply is _MORE:
                got = sock.recv_into(buf)
                if not got:
                    raise RedisConnectionError(_CLOSED)
                reader.feed(buf, 0, got)
                reply = reader.gets()
            if _PUSH is not None and type(reply) is _PUSH:  # not a reply: the parser's, if it wants it
                if handle_push is not None:
                    handle_push(reply)
                continue
            # what the parser raises rather than returns (LOADING is a ConnectionError)
            if isinstance(reply, RedisConnectionError):
                raise reply
            if type(reply) is list and reply and isinstance(reply[0], RedisConnectionError):
                raise reply[0]
            out.append(reply)
    except socket.timeout as exc:
        if exc.errno == errno.ETIMEDOUT:  # the OS gave up on the connection: broken, not slow
            raise RedisConnectionError(f"Error while reading from {conn._host_error()} : {exc.args}") from exc
        raise RedisTimeoutError(f"Timeout reading from {conn._host_error()}") from exc
    except OSError as exc:
        raise RedisConnectionError(f"Error while reading from {conn._host_error()} : {exc.args}") from exc
    if conn.health_check_interval:
        conn.next_health_check = time.monotonic() + conn.health_check_interval
    return out


#: what the short take uses of a pool besides its public methods (redis-py 5 to 8 have them);
#: a redis-py that keeps its pools some other way gets the ordinary path only
_SYNC_PARTS = ("_available_connections", "_in_use_connections", "_lock", "_checkpid", "_created_connections",
               "owns_connection", "pid")
_ASYNC_PARTS = ("_available_connections", "_in_use_connections")
#: {pool class: whether its pools have those parts}, learnt from the first pool of the class seen
_HAS_PARTS: dict[type, bool] = {}


def _has_parts(pool: Any, names: tuple[str, ...]) -> bool:
    has = _HAS_PARTS.get(type(pool))
    if has is None:
        has = _HAS_PARTS[type(pool)] = all(hasattr(pool, name) for name in names)
    return has


def _plain_pool(pool: Any) -> bool:
    if type(pool) is not redis.ConnectionPool or getattr(pool, "cache", None) is not None:
        return False
    return pool.connection_kwargs.get("credential_provider") is None and _has_parts(pool, _SYNC_PARTS)


def _ready(conn: Any) -> bool:
    """Connected, nothing buffered, nothing waiting on the socket (no reply left over, not
    closed by the server)."""
    if type(conn) not in _PLAIN or conn._sock is None:
        return False
    reader = getattr(conn._parser, "_reader", None)
    if reader is None or reader.has_data():
        return False
    poller = select.poll()
    poller.register(conn._sock, select.POLLIN)
    return not poller.poll(0)


def take_idle(pool: Any) -> Any:
    """An idle connection of a plain pool, ready to send; None: take one the ordinary way
    (``pool.get_connection``), which also connects or reconnects."""
    if not _plain_pool(pool):
        return None
    pool._checkpid()
    with pool._lock:
        try:
            conn = pool._available_connections.pop()
        except IndexError:
            return None
        pool._in_use_connections.add(conn)
    try:
        ready = _ready(conn)
    except (OSError, ValueError):  # closed meanwhile
        ready = False
    if not ready:
        with pool._lock:  # back as it was: the ordinary take pops it again and deals with it
            pool._in_use_connections.discard(conn)
            pool._available_connections.append(conn)
        return None
    return conn


def give_back(pool: Any, conn: Any) -> None:
    """``pool.release(conn)`` for a connection :func:`take_idle` gave, without the counters."""
    pool._checkpid()
    with pool._lock:
        try:
            pool._in_use_connections.remove(conn)
        except KeyError:  # not the pool's (reset by a fork meanwhile)
            return
        if pool.owns_connection(conn):
            should = getattr(conn, "should_reconnect", None)
            if should is not None and should():
                conn.disconnect()
            pool._available_connections.append(conn)
        else:
            conn.disconnect()
            if conn.pid == pool.pid:
                pool._created_connections -= 1


def _plain_async_pool(pool: Any) -> bool:
    return type(pool) is redis.asyncio.ConnectionPool and \
        pool.connection_kwargs.get("credential_provider") is None and _has_parts(pool, _ASYNC_PARTS)


def _ready_async(conn: Any) -> bool:
    if type(conn) not in _PLAIN_ASYNC or conn._writer is None or conn._writer.is_closing():
        return False
    stream = conn._reader
    reader = getattr(conn._parser, "_reader", None)
    if stream is None or reader is None or reader.has_data():
        return False
    return not (stream.at_eof() or stream.exception() is not None or getattr(stream, "_buffer", True))


def take_idle_async(pool: Any) -> Any:
    """:func:`take_idle` for an asyncio pool (called in the event loop: nothing runs between
    the pop and the checks)."""
    if not _plain_async_pool(pool):
        return None
    try:
        conn = pool._available_connections.pop()
    except IndexError:
        return None
    if not _ready_async(conn):
        pool._available_connections.append(conn)
        return None
    pool._in_use_connections.add(conn)
    return conn


def give_back_async(pool: Any, conn: Any) -> bool:
    """Give back what :func:`take_idle_async` gave; False: it must be released the ordinary
    way (``await pool.release``), which reconnects it."""
    should = getattr(conn, "should_reconnect", None)
    if should is not None and should():
        return False
    try:
        pool._in_use_connections.remove(conn)
    except KeyError:
        return True
    pool._available_connections.append(conn)
    return True
