"""Where a 1 KiB commit's time goes: the server (INFO commandstats of a block of commits,
against a block of floor writes), the round trips, and the client (cProfile).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import pstats
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
import redis.connection
from _harness import Target, close_all

from redis_ckpt import CheckpointStore

SCRIPT_USEC = 20.0  # issue 12, target 5
#: "no command per commit": what the client sends beside the script and WAITAOF, per commit
#: (the drift check rides in a commit at most every drift_check_s: a small fraction of one)
EXTRA_PER_COMMIT = 0.05
SENT_SAMPLE = 200  # commits whose sends are counted
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")


_SUBCOMMANDS = {b"config", b"client", b"object", b"command", b"script", b"function", b"cluster", b"memory"}


def command_names(packed: Any) -> list[str]:
    """The command names (``config|get`` style) in a packed RESP send."""
    if isinstance(packed, (bytes, bytearray, memoryview, str)):
        packed = [packed]
    data = b"".join(p.encode() if isinstance(p, str) else bytes(p) for p in packed)
    names, i = [], 0
    while i < len(data):
        assert data[i:i + 1] == b"*", "not a RESP array"
        end = data.index(b"\r\n", i)
        count, i = int(data[i + 1:end]), end + 2
        args = []
        for _ in range(count):
            end = data.index(b"\r\n", i)
            n = int(data[i + 1:end])
            args.append(data[end + 2:end + 2 + n] if len(args) < 2 else b"")
            i = end + 2 + n + 2
        name = args[0].lower()
        if name in _SUBCOMMANDS and len(args) > 1:
            name += b"|" + args[1].lower()
        names.append(name.decode())
    return names


class Sent:
    """What the sync redis-py connections sent while counting."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.commands: Counter[str] = Counter()


@contextlib.contextmanager
def counting_round_trips() -> Iterator[Sent]:
    """Count the packed sends of every sync redis-py connection while inside (one send is
    one round trip: a pipeline packs all its commands into one send) and the commands in
    them. Patches the connection class: not for timed code."""
    cls = redis.connection.AbstractConnection
    original = cls.send_packed_command
    sent = Sent()

    def send(self: Any, command: Any, check_health: bool = True) -> None:
        sent.round_trips += 1
        sent.commands.update(command_names(command))
        original(self, command, check_health)

    cls.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        cls.send_packed_command = original  # type: ignore[method-assign]


def commandstats(client: redis.Redis, fn: Any, n: int) -> dict[str, tuple[float, float]]:
    """{command: (calls per op, usec per call)} of ``n`` calls of ``fn`` on a quiet server."""
    client.config_resetstat()
    for _ in range(n):
        fn()
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): (v["calls"] / n, v["usec_per_call"])
            for k, v in stats.items() if k not in ("cmdstat_config|resetstat", "cmdstat_info")}


def server_time(url: str, state: Any, blob: bytes, commits: int) -> tuple[list[str], list[Target], dict[str, Any]]:
    client = redis.Redis.from_url(url)
    store = CheckpointStore(client, namespace="bench-stats", keep=2)
    lease = store.acquire("s", owner="bench", ttl=3600)

    def floor() -> None:
        p = client.pipeline(transaction=False)
        p.set("bench-stats:floor", blob)
        p.execute_command("WAITAOF", 1, 0, 5000)
        p.execute()

    def commit() -> None:
        lease.commit(state)

    for _ in range(50):
        commit()
        floor()
    ours = commandstats(client, commit, commits)
    theirs = commandstats(client, floor, commits)
    with counting_round_trips() as sent:
        for _ in range(SENT_SAMPLE):
            commit()
    trips = sent.round_trips / SENT_SAMPLE
    by_client = {k: v / SENT_SAMPLE for k, v in sent.commands.items()}
    store.close()
    rows = ["| command | store: sent by the client per commit | store: calls per commit (commandstats) | "
            "store: usec per call | floor: calls per write | floor: usec per call |", "|---|---|---|---|---|---|"]
    for name in sorted(set(ours) | set(theirs) | set(by_client)):
        o, t = ours.get(name), theirs.get(name)
        rows.append(f"| {name} | {by_client.get(name, 0):.2f} | " + (f"{o[0]:.2f} | {o[1]:.1f} |" if o else " | |")
                    + (f" {t[0]:.2f} | {t[1]:.1f} |" if t else " | |"))
    script = [v[1] for k, v in ours.items() if k in SCRIPT_COMMANDS]
    extra = {k: v for k, v in by_client.items() if k not in SCRIPT_COMMANDS and k != "waitaof"}
    total_ours = sum(c * u for k, (c, u) in ours.items() if k in by_client)  # the script's usec includes its calls
    total_floor = sum(c * u for c, u in theirs.values())
    lines = [f"{commits} commits of the 1 KiB state, then {commits} floor writes of its frame, each block "
             f"after `CONFIG RESETSTAT`. Commands a script runs are counted by commandstats too (their time is "
             f"inside the script's); \"sent by the client\" counts what went over the wire. Server time per commit "
             f"(commands sent): {total_ours:.1f} us; per floor write: {total_floor:.1f} us. Round trips per "
             f"commit: {trips:.1f}.", "", *rows]
    targets = []
    if script:
        targets.append(Target("5. server time of the commit script <= 20 us per 1 KiB commit (INFO commandstats)",
                              max(script), SCRIPT_USEC, higher_is_better=False, shown=f"{max(script):.1f} us"))
    targets.append(Target("5. no command per commit beyond the script and WAITAOF (drift check included; "
                          f"<= {EXTRA_PER_COMMIT} per commit)", sum(extra.values()), EXTRA_PER_COMMIT,
                          higher_is_better=False,
                          shown=", ".join(f"{k} {v:.3f}/commit" for k, v in sorted(extra.items())) or "none"))
    return lines, targets, {"script_usec": max(script) if script else None, "set_usec": theirs.get("set", (0, 0))[1],
                            "round_trips": trips, "extra": extra,
                            "inner": {k: v[0] for k, v in ours.items() if k not in by_client}}


def fsync_costs(directory: Path, n: int = 300) -> dict[str, float]:
    """p50 ms of a 1 KiB write + fdatasync in ``directory`` (the servers' disk): appended to a
    growing file (an AOF: each sync also commits the file's new size) and written over a
    preallocated file (a PostgreSQL WAL segment), alternating."""
    import os
    import statistics

    grow, pre = directory / "bench-fsync-append", directory / "bench-fsync-prealloc"
    fa = os.open(grow, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    fp = os.open(pre, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    buf = os.urandom(1024)
    out: dict[str, list[float]] = {"append": [], "prealloc": []}
    try:
        os.write(fp, bytes(1024 * (n + 1)))
        os.fsync(fp)
        os.lseek(fp, 0, os.SEEK_SET)
        for _ in range(n):
            for name, fd in (("append", fa), ("prealloc", fp)):
                t = time.perf_counter()
                os.write(fd, buf)
                os.fdatasync(fd)
                out[name].append(time.perf_counter() - t)
    finally:
        os.close(fa)
        os.close(fp)
        grow.unlink()
        pre.unlink()
    return {k: statistics.median(v) * 1000 for k, v in out.items()}


def client_cpu(loop: asyncio.AbstractEventLoop, url: str, pg_url: str | None, state: Any, blob: bytes,
               n: int) -> dict[str, float]:
    """Client CPU (process time) per 1 KiB commit at concurrency 1: floor, store and
    PostgreSQL, threads and asyncio. Time the server spends waiting is not in it."""
    import peers

    out: dict[str, float] = {}
    makers: list[tuple[str, Any]] = [("threads floor", lambda: peers.floor(url, blob, 1, "cpu")),
                                     ("threads store", lambda: peers.store(url, state, 1, "cpu")),
                                     ("asyncio floor", lambda: loop.run_until_complete(peers.floor_async(url, blob, 1, "cpu"))),
                                     ("asyncio store", lambda: loop.run_until_complete(peers.store_async(url, state, 1, "cpu")))]
    if pg_url:
        makers += [("threads postgres", lambda: peers.postgres(pg_url, blob, 1, "cpu")),
                   ("asyncio postgres", lambda: loop.run_until_complete(peers.postgres_async(pg_url, blob, 1, "cpu")))]
    for name, make in makers:
        c = make()
        fn = c.workers[0]
        if c.is_async:
            async def many(k: int) -> None:
                for _ in range(k):
                    await fn()
            loop.run_until_complete(many(20))
            cpu0 = time.process_time()
            loop.run_until_complete(many(n))
        else:
            for _ in range(20):
                fn()
            cpu0 = time.process_time()
            for _ in range(n):
                fn()
        out[name] = (time.process_time() - cpu0) / n * 1e6
        close_all(loop, [c])
    return out


def profile(url: str, state: Any, commits: int) -> list[str]:
    """Where the client's time goes in a 1 KiB commit (cProfile, own time)."""
    client = redis.Redis.from_url(url)
    store = CheckpointStore(client, namespace="bench-profile", keep=2)
    lease = store.acquire("p", owner="bench", ttl=3600)
    for _ in range(100):
        lease.commit(state)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(commits):
        lease.commit(state)
    prof.disable()
    store.close()
    st = pstats.Stats(prof)
    top = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]  # type: ignore[attr-defined]
    lines = ["| function (client, own time; the profiler inflates small calls) | calls per commit | us per commit |",
             "|---|---|---|"]
    for (file, line, fn), (_cc, nc, tt, _ct, _callers) in top:
        where = f"{Path(file).name}:{line}({fn})" if line else fn
        lines.append(f"| `{where}` | {nc / commits:.1f} | {tt / commits * 1e6:.1f} |")
    return lines
