"""The contenders of a durable commit, each built for ``n`` concurrent workers, every worker
writing its own run (key, row, file):

* floor     raw redis-py ``SET`` + ``WAITAOF 1 0`` of the same encoded bytes, same server,
            same client style (``redis.Redis`` for threads, ``redis.asyncio`` for asyncio)
* store     redis-ckpt ``Lease.commit`` of the state (fencing, CAS, rotation, WAITAOF)
* postgres  one table, a compare-and-swap ``UPDATE ... WHERE run AND generation`` (an
            ``INSERT`` for the first), autocommit, ``fsync=on``, ``synchronous_commit=on``;
            one psycopg connection per worker (``AsyncConnection`` for asyncio)
* file      temp file + fsync + ``os.replace`` + fsync of the directory
* sqlite    WAL, ``synchronous=FULL``, one connection per worker
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
from _harness import Contender

from redis_ckpt import CheckpointStore
from redis_ckpt.aio import AsyncCheckpointStore

WAITAOF_MS = 5000

# -- floor ----------------------------------------------------------------------------------


def floor(url: str, blob: bytes, n: int, tag: str) -> Contender:
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, max_connections=n + 2))

    def make(i: int) -> Any:
        key = f"floor:{tag}:{{w{i}}}"

        def commit() -> None:
            p = client.pipeline(transaction=False)
            p.set(key, blob)
            p.execute_command("WAITAOF", 1, 0, WAITAOF_MS)
            local, _ = p.execute()[1]
            assert local == 1

        return commit

    return Contender("floor", [make(i) for i in range(n)], close=client.close)


async def floor_async(url: str, blob: bytes, n: int, tag: str) -> Contender:
    client = aioredis.Redis.from_url(url, max_connections=n + 2)

    def make(i: int) -> Any:
        key = f"afloor:{tag}:{{w{i}}}"

        async def commit() -> None:
            p = client.pipeline(transaction=False)
            p.set(key, blob)
            p.execute_command("WAITAOF", 1, 0, WAITAOF_MS)
            local, _ = (await p.execute())[1]
            assert local == 1

        return commit

    return Contender("floor", [make(i) for i in range(n)], is_async=True, close=client.aclose)


# -- store ----------------------------------------------------------------------------------


def store(url: str, state: Any, n: int, tag: str) -> Contender:
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(url, max_connections=n + 2))
    st = CheckpointStore(client, namespace=f"bench-{tag}", keep=2)
    leases = [st.acquire(f"w{i}", owner=f"bench-{i}", ttl=3600) for i in range(n)]
    return Contender("store", [lambda lease=lease: lease.commit(state) for lease in leases], close=st.close)


async def store_async(url: str, state: Any, n: int, tag: str) -> Contender:
    client = aioredis.Redis.from_url(url, max_connections=n + 2)
    st = await AsyncCheckpointStore.create(client, namespace=f"abench-{tag}", keep=2)
    leases = [await st.acquire(f"w{i}", owner=f"bench-{i}", ttl=3600) for i in range(n)]

    async def close() -> None:
        await st.close()
        await client.aclose()

    return Contender("store", [lambda lease=lease: lease.commit(state) for lease in leases],
                     is_async=True, close=close)


# -- PostgreSQL -----------------------------------------------------------------------------

PG_TABLE = "CREATE TABLE IF NOT EXISTS ckpt (run text PRIMARY KEY, generation bigint NOT NULL, state bytea NOT NULL)"
PG_UPDATE = "UPDATE ckpt SET generation = %s, state = %s WHERE run = %s AND generation = %s"
PG_INSERT = "INSERT INTO ckpt (run, generation, state) VALUES (%s, %s, %s)"


class CasLost(RuntimeError):
    """The compare-and-swap found another generation: never expected in the bench."""


def _pg_setup(url: str, tag: str, n: int) -> list[str]:
    import psycopg

    runs = [f"{tag}-w{i}" for i in range(n)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PG_TABLE)
        conn.execute("DELETE FROM ckpt WHERE run = ANY(%s)", (runs,))
    return runs


def postgres(url: str, blob: bytes, n: int, tag: str) -> Contender:
    import psycopg

    conns = [psycopg.connect(url, autocommit=True) for _ in range(n)]

    def make(conn: Any, run: str) -> Any:
        gen = [0]

        def commit() -> None:
            g = gen[0]
            if g == 0:
                conn.execute(PG_INSERT, (run, 1, blob))
            elif conn.execute(PG_UPDATE, (g + 1, blob, run, g)).rowcount != 1:
                raise CasLost(run)
            gen[0] = g + 1

        return commit

    def close() -> None:
        for c in conns:
            c.close()

    runs = _pg_setup(url, f"t{tag}", n)
    return Contender("postgres", [make(c, r) for c, r in zip(conns, runs)], close=close)


async def postgres_async(url: str, blob: bytes, n: int, tag: str) -> Contender:
    import psycopg

    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(n)]

    def make(conn: Any, run: str) -> Any:
        gen = [0]

        async def commit() -> None:
            g = gen[0]
            if g == 0:
                await conn.execute(PG_INSERT, (run, 1, blob))
            elif (await conn.execute(PG_UPDATE, (g + 1, blob, run, g))).rowcount != 1:
                raise CasLost(run)
            gen[0] = g + 1

        return commit

    async def close() -> None:
        for c in conns:
            await c.close()

    runs = _pg_setup(url, f"a{tag}", n)
    return Contender("postgres", [make(c, r) for c, r in zip(conns, runs)], is_async=True, close=close)


# -- file and SQLite ------------------------------------------------------------------------


def file(root: Path, blob: bytes, n: int) -> Contender:
    def make(i: int) -> Any:
        d = root / f"w{i}"
        d.mkdir()
        target, tmp = d / "checkpoint", d / "checkpoint.tmp"

        def commit() -> None:
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        return commit

    return Contender("file", [make(i) for i in range(n)])


def sqlite(path: Path, blob: bytes, n: int) -> Contender:
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS ckpt (run TEXT PRIMARY KEY, data BLOB)")
    setup.commit()
    setup.close()
    # one connection per worker (a worker runs in one thread at a time)
    conns = [sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False) for _ in range(n)]
    for c in conns:
        c.execute("PRAGMA synchronous=FULL")

    def make(conn: sqlite3.Connection, run: str) -> Any:
        def commit() -> None:
            conn.execute("INSERT OR REPLACE INTO ckpt VALUES (?, ?)", (run, blob))

        return commit

    def close() -> None:
        for c in conns:
            c.close()

    return Contender("sqlite", [make(c, f"w{i}") for i, c in enumerate(conns)], close=close)
