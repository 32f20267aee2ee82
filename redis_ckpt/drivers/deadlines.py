"""One attempt, one deadline: how the sync driver takes a connection and bounds its socket.

redis-py has no per-call timeout, so the connection taken for an attempt gets the time left
as its socket timeout (and its own back after); redis-py's own retries are off for the
attempt (the flow's RetryPolicy decides). A pooled connection that must be (re)connected is
connected with the attempt's timeouts too: redis-py >= 8 connects in
``ConnectionPool.ensure_connection``, which is wrapped once per pool (the wrapper changes
nothing outside an attempt of this driver); older versions connect inside ``get_connection``,
so there the idle connection is taken here (the first half of ``get_connection``, unchanged
since redis-py 3) and connected. A ``BlockingConnectionPool`` with every connection in use
waits for a free one no longer than the attempt has left. An op with no time left fails with ``redis.TimeoutError``
before anything is sent. While the attempt connects, its deadline is in a context variable
(:func:`connecting`, :func:`connect_until`): what redis-py asks on the way (the Sentinels, for the
primary's address) reads it too (:mod:`.discovery`). (Asyncio: the driver bounds each op with
``asyncio.timeout``.)
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import threading
import time
from queue import Queue
from collections.abc import Callable, Iterator
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .direct import give_back, take_idle

__all__ = ["time_left", "take", "armed", "arm", "connecting", "connect_until", "wrap_once", "GET_CONN_ARGS"]


def _get_connection_args() -> tuple[str, ...]:
    """redis-py 5 requires a command name for get_connection(); 6+ deprecates passing one."""
    param = inspect.signature(redis.ConnectionPool.get_connection).parameters.get("command_name")
    return ("EVALSHA",) if param is not None and param.default is inspect.Parameter.empty else ()


GET_CONN_ARGS = _get_connection_args()


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


def _owner(conn: Any) -> Any:
    """The connection holding the socket: ``conn``, or the one a proxy wraps (redis-py's
    client-side caching hands out a CacheProxyConnection around each connection)."""
    if getattr(conn, "_sock", None) is None:
        inner = getattr(conn, "_conn", None)
        if inner is not None and getattr(inner, "_sock", None) is not None:
            return inner
    return conn


def arm(conn: Any, seconds: float | None) -> None:
    """The timeout of ``conn``'s socket, and the one its parser puts back after a poll."""
    conn = _owner(conn)
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


def armed(conn: Any, until: float | None) -> tuple[bool, Any]:
    """Bound one attempt on a connected ``conn`` by ``until``: its socket's timeout capped by
    the time left, unless its own timeout ends the attempt in time anyway (then nothing is
    touched: the common case costs no syscall). (armed, its own timeout to put back). Only the
    socket matters here: the connection is connected (a connect is bounded in ``take``) and
    the send skips redis-py's health check, so nothing reconnects during the attempt."""
    if until is None:
        return False, None
    left = time_left(until)
    own = getattr(conn, "socket_timeout", None)
    if own is not None and own <= left:  # type: ignore[operator]
        return False, None
    arm(conn, left)
    return True, own


#: the deadline (``time.monotonic()``) of the attempt for which this driver takes and connects a
#: connection (read by the pool's wrapped ensure_connection, a blocking pool's wrapped queue, and
#: the discovery clients of :mod:`.discovery`); None everywhere else
_CONNECT_UNTIL: contextvars.ContextVar[float | None] = contextvars.ContextVar("redis_ckpt_connect_until",
                                                                             default=None)
_HOOK_LOCK = threading.Lock()


@contextlib.contextmanager
def connecting(until: float | None) -> Iterator[None]:
    """Within: connections are made, and the servers telling where to connect are asked, for an
    attempt that ends by ``until`` (None: no deadline, nothing set)."""
    if until is None:
        yield
        return
    token = _CONNECT_UNTIL.set(until)
    try:
        yield
    finally:
        _CONNECT_UNTIL.reset(token)


def connect_until() -> float | None:
    """The deadline of the attempt connecting now in this context (see :func:`connecting`)."""
    return _CONNECT_UNTIL.get()


def wrap_once(owner: Any, name: str, wrapper_of: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    """Set ``owner.<name>`` to ``wrapper_of(current)``, once: the wrapper is marked, so another
    call (another store on the same client, pool or Sentinel) leaves it as it is. Every hook of
    this driver on a redis-py object is installed this way (here and in :mod:`.discovery`)."""
    if getattr(getattr(owner, name), "_redis_ckpt", False):
        return
    with _HOOK_LOCK:
        current = getattr(owner, name)
        if getattr(current, "_redis_ckpt", False):
            return
        wrapper = wrapper_of(current)
        wrapper._redis_ckpt = True  # type: ignore[attr-defined]
        setattr(owner, name, wrapper)


def _hook(pool: Any) -> bool:
    """Wrap ``pool.ensure_connection`` (redis-py >= 8: it connects a connection taken from the
    pool) so that a connection taken by this driver is connected with the attempt's timeouts.
    Outside such an attempt the wrapper calls the original as is. False: no such step."""
    if getattr(pool, "ensure_connection", None) is None:
        return False

    def wrapper_of(_original: Callable[[Any], None]) -> Callable[[Any], None]:
        def ensure_connection(connection: Any) -> None:
            until = _CONNECT_UNTIL.get()
            if until is None:
                return _original(connection)
            left = time_left(until)  # what the attempt has left now (a Sentinel may have been asked)
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

        return ensure_connection

    wrap_once(pool, "ensure_connection", wrapper_of)
    return True


def _cap_wait(pool: Any) -> None:
    """Wrap the free-connection queue of a ``BlockingConnectionPool`` (its ``get_connection``
    waits on it up to the pool's ``timeout``, redis-py's default 20 s, when every connection
    is in use) so that within an attempt of this driver the wait ends with the time left.
    Outside such an attempt the wrapper waits as the pool says. The queue is checked at every
    take: a pool reset after a fork has a new one."""
    queue = getattr(pool, "pool", None)
    if not isinstance(pool, redis.BlockingConnectionPool) or not isinstance(queue, Queue):
        return

    def wrapper_of(_original: Callable[..., Any]) -> Callable[..., Any]:
        def get(block: bool = True, timeout: float | None = None) -> Any:
            until = _CONNECT_UNTIL.get()
            if until is not None and block:
                left = max(0.0, until - time.monotonic())
                timeout = left if timeout is None else min(timeout, left)
            return _original(block, timeout)

        return get

    wrap_once(queue, "get", wrapper_of)


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


def take(client: Any, until: float | None) -> tuple[Any, Callable[[Any], None]]:
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
                with _settings(single, left), connecting(until):
                    single.connect()
        except BaseException:
            lock.__exit__(None, None, None)
            raise
        return single, lambda _c: lock.__exit__(None, None, None)
    pool = client.connection_pool
    conn = take_idle(pool)  # the short path (direct.py): an idle connection, ready to send
    if conn is not None:
        return conn, lambda c: give_back(pool, c)
    if left is None:
        return pool.get_connection(*GET_CONN_ARGS), pool.release
    _cap_wait(pool)
    with connecting(until):  # read by the wrapped ensure_connection and queue wait, and the discovery clients
        if not _hook(pool) and type(pool).get_connection is _BASE_GET and hasattr(pool, "_available_connections"):
            return _take_idle(pool, left), pool.release
        # without the hook (redis-py < 8, another pool class) it connects with its own timeouts
        return pool.get_connection(*GET_CONN_ARGS), pool.release
