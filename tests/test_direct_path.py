"""The sync driver's short path (redis_ckpt.drivers.direct): an idle pooled connection taken
and its replies read straight from the socket give exactly what redis-py's own path gives,
and a connection that is not fit to send on is never used as is."""

from __future__ import annotations

import time

import pytest
import redis

from redis_ckpt.drivers import direct
from redis_ckpt.drivers.deadlines import GET_CONN_ARGS
from redis_ckpt.drivers.resp import read_all, send_sync


def _ordinary(client: redis.Redis, commands: list[tuple]) -> list:
    """The replies as redis-py's connection reads them (no response callbacks)."""
    pool = client.connection_pool
    conn = pool.get_connection(*GET_CONN_ARGS)
    try:
        conn.send_packed_command(conn.pack_commands(commands))
        return read_all(conn, len(commands))
    finally:
        pool.release(conn)


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        if isinstance(x, Exception):
            assert type(x) is type(y) and str(x) == str(y)
        else:
            assert x == y


@pytest.mark.parametrize("protocol", [2, 3])
def test_replies_are_the_ones_redis_py_reads(durable_server, namespace, protocol):
    client = redis.Redis.from_url(durable_server.url, protocol=protocol)
    k = f"{namespace}:k"
    commands = [
        ("DEL", f"{k}n", f"{k}h"), ("SET", k, b"\x00\xffbytes"), ("GET", k), ("GET", f"{namespace}:missing"), ("INCRBY", f"{k}n", 7),
        ("HSET", f"{k}h", "a", 1, "b", 2.5), ("HGETALL", f"{k}h"), ("EVAL", "return redis.error_reply('NOPE x')", 0),
        ("EVALSHA", "0" * 40, 0), ("LPOP", k), ("EVAL", "return {1, 'a', {2}}", 0), ("WAITAOF", 1, 0, 0),
    ]
    try:
        _ordinary(client, commands)  # the same keys before each of the two runs compared
        conn = client.connection_pool.get_connection(*GET_CONN_ARGS)
        client.connection_pool.release(conn)
        assert direct.reader_of(conn) is not None  # the short path is the one under test
        ours = send_sync(client, commands, until=time.monotonic() + 10)
        _same(ours, _ordinary(client, commands))
        assert isinstance(ours[8], redis.exceptions.NoScriptError)  # the class a flow looks at
        assert isinstance(ours[9], redis.exceptions.ResponseError)  # WRONGTYPE
        assert client.connection_pool._in_use_connections == set()
        assert len(client.connection_pool._available_connections) == 1
    finally:
        client.close()


def test_a_push_message_between_replies_is_not_taken_for_one(durable_server, namespace):
    """RESP3: the server sends an invalidation in the middle of the replies (the connection
    tracks the key it then changes); the replies still line up (redis-py 5's own read would
    hand the push back as a reply)."""
    client = redis.Redis.from_url(durable_server.url, protocol=3)
    k = f"{namespace}:tracked"
    try:
        ours = send_sync(client, [("CLIENT", "TRACKING", "ON"), ("GET", k), ("SET", k, "v"), ("GET", k),
                                  ("SET", k, "w"), ("PING",)], until=time.monotonic() + 10)
        assert ours == [b"OK", None, b"OK", b"v", b"OK", b"PONG"]
        assert send_sync(client, [("GET", k)], until=time.monotonic() + 10) == [b"w"]
    finally:
        client.close()


def test_an_idle_connection_the_server_closed_is_reconnected_not_used(durable_server, namespace):
    client = redis.Redis.from_url(durable_server.url)
    admin = redis.Redis.from_url(durable_server.url)
    k = f"{namespace}:k"
    try:
        send_sync(client, [("SET", k, "1")], until=time.monotonic() + 10)
        conn = client.connection_pool._available_connections[0]
        cid = send_sync(client, [("CLIENT", "ID")])[0]
        admin.client_kill_filter(_id=cid)
        deadline = time.monotonic() + 5
        while direct.take_idle(client.connection_pool) is not None:  # the close reaches our socket
            direct.give_back(client.connection_pool, conn)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # a write on the killed connection would end as outcome-unknown; it goes on a new one
        assert send_sync(client, [("INCR", k), ("WAITAOF", 1, 0, 0)], until=time.monotonic() + 10)[0] == 2
        assert send_sync(client, [("CLIENT", "ID")])[0] != cid
    finally:
        client.close()
        admin.close()


def test_a_connection_with_a_reply_waiting_is_not_taken(durable_server, namespace):
    client = redis.Redis.from_url(durable_server.url)
    try:
        send_sync(client, [("PING",)])
        conn = client.connection_pool._available_connections[0]
        conn.send_command("ECHO", "left over")  # sent, never read: the connection is dirty
        deadline = time.monotonic() + 5
        while direct._ready(conn):  # the reply reaches the socket
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert direct.take_idle(client.connection_pool) is None
        assert conn in client.connection_pool._available_connections  # handed back untouched
        assert send_sync(client, [("ECHO", "mine")], until=time.monotonic() + 10) == [b"mine"]
    finally:
        client.close()


def test_only_a_plain_pool_takes_the_short_path(durable_server):
    blocking = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(durable_server.url))
    try:
        assert send_sync(blocking, [("PING",)]) == [b"PONG"]
        assert direct.take_idle(blocking.connection_pool) is None
    finally:
        blocking.close()


# -- asyncio ------------------------------------------------------------------------------


def test_async_connections_reused_and_never_used_dirty_or_closed(durable_server, namespace):
    import asyncio

    import redis.asyncio as aioredis

    from redis_ckpt.drivers.resp import send_async

    k = f"{namespace}:a"

    async def until_not_ready(conn) -> None:  # what the server sent reaches our stream
        deadline = time.monotonic() + 5
        while direct._ready_async(conn):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)

    async def scenario() -> None:
        client = aioredis.Redis.from_url(durable_server.url)
        admin = aioredis.Redis.from_url(durable_server.url)
        pool = client.connection_pool
        try:
            set_, get, wrong, confirmed = await send_async(
                client, [("SET", k, "1"), ("GET", k), ("LPOP", k), ("WAITAOF", 1, 0, 0)])
            assert (set_, get, confirmed) == (b"OK", b"1", [1, 0])
            assert isinstance(wrong, redis.exceptions.ResponseError)
            first = await send_async(client, [("CLIENT", "ID")])
            assert await send_async(client, [("CLIENT", "ID")]) == first  # the idle one, taken again
            assert len(pool._available_connections) == 1 and not pool._in_use_connections
            # a reply left over on the idle connection: it is not taken as is
            conn = pool._available_connections[-1]
            await conn.send_command("ECHO", "left over")
            await until_not_ready(conn)
            assert direct.take_idle_async(pool) is None
            assert conn in pool._available_connections  # handed back untouched
            assert await send_async(client, [("ECHO", "mine")]) == [b"mine"]
            # killed while idle: the next write goes on a new connection, never the dead one
            (cid,) = await send_async(client, [("CLIENT", "ID")])
            await admin.client_kill_filter(_id=cid)
            await until_not_ready(pool._available_connections[-1])
            assert (await send_async(client, [("INCR", k), ("WAITAOF", 1, 0, 0)]))[0] == 2
            assert await send_async(client, [("CLIENT", "ID")]) != [cid]
            assert pool._in_use_connections == set()
        finally:
            await client.aclose()
            await admin.aclose()

    asyncio.run(scenario())


def test_an_interrupted_commit_never_leaves_its_reply_to_the_next_operation(make_server, namespace):
    # Ctrl-C (a signal handler raising) while a commit waits on a frozen server: the commit was
    # sent and its reply is still to come. The connection must be closed, not handed back with
    # that reply waiting: the next operation on the pool would read it as its own.
    import os
    import signal

    from redis_ckpt import CheckpointStore
    from redis_ckpt.core.keys import RunKeys

    server = make_server("valkey", appendonly="yes", appendfsync="always")
    client = redis.Redis.from_url(server.url)
    store = CheckpointStore(client, namespace=namespace)
    try:
        lease = store.acquire("r", owner="w", ttl=60)
        first = lease.commit({"n": 1})

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGALRM, interrupt)
        os.kill(server.pid, signal.SIGSTOP)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(KeyboardInterrupt):
                lease.commit({"n": 2})  # sent; its reply waits on the frozen server
            pool = client.connection_pool
            assert not pool._in_use_connections
            # closed: the ordinary take reconnects it (an open one would be used as it is
            # whenever the late reply had not arrived yet)
            assert all(conn._sock is None for conn in pool._available_connections)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            os.kill(server.pid, signal.SIGCONT)
        # the interrupted commit may have applied (it reached the server): each read below gets
        # its own reply, and they agree with each other and with the server
        info = store.info("r")
        assert info.generation in (first, first + 1)
        ck = store.load("r")
        assert ck is not None and ck.generation == info.generation
        assert ck.state == {"n": 1 if info.generation == first else 2}
        raw = server.client()
        assert int(raw.hget(RunKeys(namespace, "r").head, "generation") or 0) == info.generation
        raw.close()
    finally:
        store.close()
        client.close()
