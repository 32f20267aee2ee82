"""The drivers' own RESP packing says exactly what redis-py would say."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from redis.connection import Connection

from redis_ckpt.drivers.resp import pack as _pack

CASES = [
    [("SET", "k", b"v")],
    [("EVALSHA", "a" * 40, 2, "ns:{r}:a", "ns:{r}:b", "x\ny\n", os.urandom(70_000), "2:0"), ("WAITAOF", 1, 0, 5000)],
    [("SET", "big", memoryview(os.urandom(30_000))), ("GET", "big")],
    [("XADD", "s", "MAXLEN", "~", 1000, "*", "f", 1.5, "g", "ü")],
    [("PING",)],
    [("SET", "k", bytearray(b"ab")), ("SET", "k2", -3, 10**20, float("inf"))],  # hiredis refuses a bytearray
    [("XADD", "s", 1.5, "f", os.urandom(20_000), "g", 2)],  # a large argument after a float
    [("EVALSHA", "a" * 40, 5, *(f"ns:{{t}}:k{i}" for i in range(5)), *(f"a{i}" for i in range(40)))],
]


@pytest.mark.parametrize("commands", CASES)
def test_pack_matches_redis_py(commands):
    ours = b"".join(bytes(p) for p in _pack(commands))
    theirs = b"".join(bytes(p) for p in Connection().pack_commands(commands))
    assert ours == theirs


@pytest.mark.parametrize("bad", [True, None, [1], {"a": 1}])
def test_pack_refuses_what_redis_py_would_not_send(bad):
    with pytest.raises(TypeError):
        _pack([("SET", "k", bad)])


def _in_a_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_an_int_that_cannot_become_text_is_an_error_not_a_crash():
    # hiredis's C packer turns an int into text with PyObject_Repr and does not check for
    # failure: an int past Python's str() digit limit made it dereference NULL (SIGSEGV)
    child = _in_a_child("""
        from redis_ckpt.drivers.resp import pack
        try:
            pack([("SET", "k", 10 ** 5000)])
        except ValueError as exc:
            print("refused:", type(exc).__name__)
    """)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    assert "refused: ValueError" in child.stdout


def test_a_signal_handler_that_raises_while_packing_never_crashes_the_process():
    # the crash a chaos worker hit: SIGTERM's handler (sys.exit) - or Ctrl-C's KeyboardInterrupt -
    # runs inside int -> text conversion, which checks for signals; PyObject_Repr then fails and
    # hiredis's packer dereferenced its NULL result. Here a timer raises every 20 us while
    # commit-shaped commands (many multi-digit ints) are packed, for at most 2 s.
    child = _in_a_child("""
        import signal, time
        from redis_ckpt.drivers.resp import pack

        class Interrupted(Exception):
            pass

        def interrupt(signum, frame):  # only inside the packer: the loop itself is never hit
            if frame is not None and frame.f_globals.get("__name__") == "redis_ckpt.drivers.resp":
                raise Interrupted

        cmd = ("EVALSHA", "a" * 40, 2, "ns:{r}:a", "ns:{r}:b", *(10 ** 60 + i for i in range(40)))
        signal.signal(signal.SIGALRM, interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.00002, 0.00002)
        interrupted = 0
        end = time.monotonic() + 2
        while time.monotonic() < end:
            try:
                pack([cmd, ("WAITAOF", 1, 0, 5000)])
            except Interrupted:
                interrupted += 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        print("interrupted", interrupted)
    """)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    assert int(child.stdout.split()[-1]) > 0  # the handler did run during packing


@pytest.mark.parametrize("big", [memoryview(os.urandom(100_000)), os.urandom(100_000)])
def test_large_arguments_are_not_copied(big):
    parts = _pack([("PING",), ("SET", "k", 1.5, big)])
    assert any(p is big for p in parts)


def _sends(monkeypatch):
    """The buffers each send_packed_command of the sync driver is handed."""
    seen: list[list[bytes]] = []
    original = Connection.send_packed_command

    def record(self, command, check_health=True):
        seen.append(list(command))
        return original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", record)
    return seen


def test_a_pipe_with_an_argument_of_tens_of_kib_goes_in_one_send(client, namespace, monkeypatch):
    # redis-py sends each buffer with its own sendall: a small head, the value, a small tail
    # cost three syscalls and as many wake-ups of the server (~25 us at 64 KiB on loopback)
    from redis_ckpt.drivers.resp import send_sync

    value = os.urandom(70_000)
    client.ping()  # the connection's own handshake is not counted
    seen = _sends(monkeypatch)
    replies = send_sync(client, [("SET", f"{namespace}:k", value), ("STRLEN", f"{namespace}:k")])
    assert [len(parts) for parts in seen] == [1]
    assert replies == [True, 70_000] or replies == [b"OK", 70_000]
    assert client.get(f"{namespace}:k") == value


def test_a_pipe_of_megabytes_is_sent_without_copying_its_large_arguments(client, namespace, monkeypatch):
    from redis_ckpt.drivers.resp import send_sync

    big = memoryview(os.urandom(2 * 1024 * 1024))
    client.ping()
    seen = _sends(monkeypatch)
    send_sync(client, [("SET", f"{namespace}:big", big)])
    assert any(p is big for p in seen[0])
    assert client.get(f"{namespace}:big") == big


# --------------------------------------------------------------------------- deadlines in the sync driver

import contextlib  # noqa: E402
import redis  # noqa: E402
import time  # noqa: E402

from redis_ckpt import CheckpointStore, RetryPolicy, StoreUnavailableError  # noqa: E402
from redis_ckpt.drivers.cluster_plan import _asking  # noqa: E402
from redis_ckpt.core.keys import glob_escape  # noqa: E402
from test_deadlines import stopped  # noqa: E402


def test_asking_covers_a_transaction_from_before_multi():
    wired = [("SET", "a", 1), ("MULTI",), ("HMGET", "h", "f"), ("GET", "g"), ("EXEC",), ("WAITAOF", 1, 0, 5)]
    commands, keep = _asking(wired)
    assert commands == [("ASKING",), ("SET", "a", 1), ("ASKING",), ("MULTI",), ("HMGET", "h", "f"), ("GET", "g"),
                        ("EXEC",), ("ASKING",), ("WAITAOF", 1, 0, 5)]
    assert [commands[i] for i in keep] == wired


@pytest.mark.parametrize(("text", "escaped"), [
    ("ns:{run}", "ns:{run}"), ("ns:{a*}", "ns:{a\\*}"), ("j[1]:{r?}", "j\\[1\\]:{r\\?}"), ("a\\b", "a\\\\b"),
])
def test_scan_patterns_are_escaped(text, escaped):
    assert glob_escape(text) == escaped


def commit_and_load(client: redis.Redis, namespace: str) -> None:
    """A commit and a load through a store with a 2 s deadline on ``client``: the store's
    attempts take, bound and give back ``client``'s connections."""
    store = CheckpointStore(client, namespace=namespace, retry=RetryPolicy(deadline_s=2.0))
    with store.acquire("r", owner="a", ttl=5) as lease:
        lease.commit({"n": 1})
    assert store.load("r").state == {"n": 1}


@contextlib.contextmanager
def taken(pool: redis.ConnectionPool):
    """A connection of ``pool``, given back after."""
    conn = pool.get_connection()
    try:
        yield conn
    finally:
        pool.release(conn)


@pytest.mark.server
def test_an_attempt_leaves_the_clients_own_timeouts_and_retries_in_place(durable_server, namespace):
    client = durable_server.client(socket_timeout=7.0, socket_connect_timeout=3.0)
    commit_and_load(client, namespace)
    with taken(client.connection_pool) as conn:
        assert conn.socket_timeout == 7.0 and conn.socket_connect_timeout == 3.0
        assert conn._sock.gettimeout() == 7.0  # not the 2 s deadline of the store's last attempt
        assert conn.retry is not None and conn.retry.get_retries() == client.get_retry().get_retries()
    assert client.ping()  # the client itself is untouched
    client.close()


@pytest.mark.server
def test_a_client_side_caching_client_keeps_its_own_socket_timeout(make_server, namespace):
    """redis-py's client-side caching wraps each connection in a proxy (CacheProxyConnection):
    an attempt bounds, then restores, the socket the proxy wraps too. The deadline of the
    attempt that connected it stuck to the user's connection (a 30 s client read with a 2 s
    timeout ever after: the user's own BLPOP was cut short and sent again)."""
    from redis.cache import CacheConfig

    server = make_server("redis")  # client-side caching needs Redis >= 7.4
    client = redis.Redis(host="127.0.0.1", port=server.port, protocol=3, cache_config=CacheConfig(),
                         socket_timeout=30.0)
    commit_and_load(client, namespace)
    with taken(client.connection_pool) as conn:
        assert type(conn).__name__ == "CacheProxyConnection"
        assert conn._conn._sock.gettimeout() == 30.0  # not the store's 2 s deadline
    client.close()


@pytest.mark.server
@pytest.mark.parametrize("path", ["single-connection", "pool-without-ensure-connection"])
def test_other_connection_paths_end_by_the_deadline(make_server, monkeypatch, path):
    """A single-connection client, and a pool connected the pre-redis-py-8 way (the driver takes
    the idle connection and connects it itself)."""
    server = make_server("valkey")
    if path == "single-connection":
        client = server.client(socket_timeout=None, single_connection_client=True)
    else:
        monkeypatch.setattr("redis_ckpt.drivers.deadlines._hook", lambda pool: False)
        client = server.client(socket_timeout=None)
    store = CheckpointStore(client, namespace="d", retry=RetryPolicy(deadline_s=1.0))
    lease = store.acquire("r", owner="a", ttl=60)
    assert lease.commit(1) == 1
    with stopped(server):
        for _ in range(2):  # the second starts on a connection that must be made again
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                lease.commit(2)
            assert time.monotonic() - started < 1.0 + 1.5
    assert store.load("r").generation in (1, 2)
    client.close()


@pytest.mark.server
def test_a_blocking_pool_with_every_connection_in_use_ends_by_the_deadline(durable_server, namespace):
    """A BlockingConnectionPool waits up to its own timeout (redis-py's default: 20 s) for a
    free connection: an attempt waits no longer than the operation has left."""
    pool = redis.BlockingConnectionPool(host="127.0.0.1", port=durable_server.port, max_connections=1, timeout=30)
    client = redis.Redis(connection_pool=pool)
    store = CheckpointStore(client, namespace=namespace, retry=RetryPolicy(deadline_s=1.0))
    held = pool.get_connection()  # another thread's long command
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.load("r")
        assert time.monotonic() - started < 1.0 + 1.5
    finally:
        pool.release(held)
    assert store.load("r") is None and pool.timeout == 30  # the pool itself is untouched
    client.close()
