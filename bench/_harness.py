"""What every bench module shares: the PostgreSQL peer's server, the runners, interleaved
rounds and their statistics, and a description of the machine.

Interleaving: a cell's contenders (floor, store, peers) each run one short *round* in turn
(A B C, then C B A, ...), several rounds, all set up before the first round; every ratio
printed is the median of the per-round ratios (each pair measured seconds apart, under the
same machine load), never a ratio of figures taken minutes apart.
"""

from __future__ import annotations

import asyncio
import atexit
import glob
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- results and statistics ---------------------------------------------------------------


class Result:
    """One round of one contender: ops/s over the round's wall time and its latencies."""

    def __init__(self, latencies: list[float], wall: float) -> None:
        self.latencies = latencies
        self.n = len(latencies)
        self.ops = self.n / wall if wall else 0.0
        self.p50 = statistics.median(latencies) * 1000 if latencies else float("nan")


def pct(latencies_ms: Sequence[float], q: int) -> float:
    xs = sorted(latencies_ms)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(len(xs) * q / 100))]


@dataclass
class Series:
    """All rounds of one contender in one cell."""

    name: str
    rounds: list[Result] = field(default_factory=list)

    @property
    def ops(self) -> float:
        return statistics.median(r.ops for r in self.rounds)

    @property
    def p50(self) -> float:
        """Median latency (ms) over every op of every round."""
        return statistics.median(x for r in self.rounds for x in r.latencies) * 1000

    @property
    def p99(self) -> float:
        return pct([x * 1000 for r in self.rounds for x in r.latencies], 99)


@dataclass(frozen=True)
class Ratio:
    """Median of per-round ratios, with the smallest and largest round."""

    median: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.median:.2f}"

    @property
    def spread(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}-{self.high:.2f})"


def ratio(a: Sequence[float], b: Sequence[float]) -> Ratio:
    """a[i] / b[i] per round, summarized."""
    rs = [x / y for x, y in zip(a, b) if y]
    if not rs:
        return Ratio(float("nan"), float("nan"), float("nan"))
    return Ratio(statistics.median(rs), min(rs), max(rs))


def ops_ratio(a: Series, b: Series) -> Ratio:
    return ratio([r.ops for r in a.rounds], [r.ops for r in b.rounds])


def p50_ratio(a: Series, b: Series) -> Ratio:
    return ratio([r.p50 for r in a.rounds], [r.p50 for r in b.rounds])


@dataclass
class Target:
    """One judged target: the figure, the bound, and whether it held."""

    name: str
    value: float
    bound: float
    higher_is_better: bool = True
    shown: str = ""

    @property
    def held(self) -> bool:
        return self.value >= self.bound if self.higher_is_better else self.value <= self.bound

    @property
    def verdict(self) -> str:
        return "held" if self.held else "missed"


def worst(name: str, values: Sequence[float], bound: float, higher_is_better: bool = True,
          fmt: str = "{:.2f}x") -> Target | None:
    if not values:
        return None
    v = min(values) if higher_is_better else max(values)
    return Target(name, v, bound, higher_is_better, fmt.format(v))


# -- runners --------------------------------------------------------------------------------


def run_threads(workers: Sequence[Callable[[], object]], seconds: float, max_ops: int) -> Result:
    """Every worker in its own thread, calling its function until the round's time or op
    budget is spent (each worker completes at least one op)."""
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = max(1, max_ops // len(workers))
    gate = threading.Barrier(len(workers) + 1)
    stop = [0.0]

    def loop(fn: Callable[[], object]) -> None:
        mine: list[float] = []
        gate.wait()
        while not mine or (time.perf_counter() < stop[0] and len(mine) < per_worker):
            t = time.perf_counter()
            fn()
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop[0] = t0 + seconds
    gate.wait()
    for t in threads:
        t.join()
    return Result(latencies, time.perf_counter() - t0)


async def run_tasks(workers: Sequence[Callable[[], Awaitable[object]]], seconds: float, max_ops: int) -> Result:
    """The asyncio twin of :func:`run_threads`: one task per worker on the running loop."""
    latencies: list[float] = []
    per_worker = max(1, max_ops // len(workers))
    t0 = time.perf_counter()
    stop = t0 + seconds

    async def loop(fn: Callable[[], Awaitable[object]]) -> None:
        count = 0
        while count == 0 or (time.perf_counter() < stop and count < per_worker):
            t = time.perf_counter()
            await fn()
            latencies.append(time.perf_counter() - t)
            count += 1

    await asyncio.gather(*(loop(w) for w in workers))
    return Result(latencies, time.perf_counter() - t0)


@dataclass
class Contender:
    """A set-up contender of one cell: its workers, sync or async, and how to close it."""

    name: str
    workers: Sequence[Callable[[], Any]]
    is_async: bool = False
    close: Callable[[], Any] | None = None


def interleave(loop: asyncio.AbstractEventLoop, contenders: Sequence[Contender], rounds: int,
               seconds: float, max_ops: int) -> dict[str, Series]:
    """Warm every contender up (one op per worker), then run ``rounds`` rounds, each
    contender once per round, the order reversed every other round."""
    out = {c.name: Series(c.name) for c in contenders}

    def one(c: Contender, secs: float, budget: int) -> Result:
        if c.is_async:
            return loop.run_until_complete(run_tasks(c.workers, secs, budget))
        return run_threads(c.workers, secs, budget)

    for c in contenders:
        one(c, 0.0, len(c.workers))
    for i in range(rounds):
        for c in (contenders if i % 2 == 0 else list(reversed(contenders))):
            out[c.name].rounds.append(one(c, seconds, max_ops))
    return out


def close_all(loop: asyncio.AbstractEventLoop, contenders: Sequence[Contender]) -> None:
    for c in contenders:
        if c.close is None:
            continue
        r = c.close()
        if asyncio.iscoroutine(r):
            loop.run_until_complete(r)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# -- the PostgreSQL peer --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bindir() -> str | None:
    """The newest Debian-style PostgreSQL bin dir, or one on PATH; None when absent."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return str(Path(found[-1]).parent)
    initdb = shutil.which("initdb")
    return str(Path(initdb).parent) if initdb else None


class Postgres:
    """A throwaway PostgreSQL on 127.0.0.1 with ``fsync=on``, ``synchronous_commit=on`` and
    ``full_page_writes`` at its default, data dir in a temp dir on the local disk.

    As root, initdb and the server run as the ``postgres`` user (they refuse root).
    ``skip_reason`` is set, and nothing is started, when the binaries are absent.
    """

    SETTINGS = {"fsync": "on", "synchronous_commit": "on", "max_connections": "200"}

    def __init__(self) -> None:
        self.bindir = postgres_bindir()
        self.skip_reason: str | None = None
        self.url = ""
        self.version = ""
        self.settings: dict[str, str] = {}
        self._tmp: str | None = None
        if self.bindir is None:
            self.skip_reason = "no PostgreSQL binaries (initdb) on this machine: apt-get install postgresql"
        else:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                self.skip_reason = "psycopg is not installed: pip install -e '.[bench]'"

    def _as_owner(self, *argv: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def start(self) -> Postgres:
        if self.skip_reason:
            return self
        assert self.bindir is not None
        self._tmp = tempfile.mkdtemp(prefix="redis-ckpt-bench-pg-", dir=os.environ.get("BENCH_DIR"))
        atexit.register(self.stop)
        if os.geteuid() == 0:
            shutil.chown(self._tmp, "postgres", "postgres")
        data, port = f"{self._tmp}/data", _free_port()
        subprocess.run(self._as_owner(f"{self.bindir}/initdb", "-D", data, "-U", "bench", "-A", "trust",
                                      "-E", "UTF8", "--no-sync", "--no-instructions"),
                       check=True, capture_output=True, text=True)
        conf = {**self.SETTINGS, "listen_addresses": "'127.0.0.1'", "port": str(port),
                "unix_socket_directories": f"'{self._tmp}'"}
        with open(f"{data}/postgresql.conf", "a") as f:
            f.write("\n# redis-ckpt bench\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        subprocess.run(self._as_owner(f"{self.bindir}/pg_ctl", "-D", data, "-l", f"{self._tmp}/log",
                                      "-w", "-t", "60", "start"), check=True, capture_output=True, text=True)
        self.url = f"postgresql://bench@127.0.0.1:{port}/postgres"
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            self.version = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]
            for name in ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method"):
                self.settings[name] = str(conn.execute(f"SHOW {name}").fetchone()[0])
        return self

    def stop(self) -> None:
        if self._tmp is None:
            return
        tmp, self._tmp = self._tmp, None
        subprocess.run(self._as_owner(f"{self.bindir}/pg_ctl", "-D", f"{tmp}/data", "-m", "fast", "-w", "stop"),
                       capture_output=True, text=True)
        shutil.rmtree(tmp, ignore_errors=True)

    def describe(self) -> str:
        if self.skip_reason:
            return f"PostgreSQL not measured: {self.skip_reason}"
        s = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"PostgreSQL {self.version} (Debian's binaries, started by the bench on 127.0.0.1: {s})"

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the machine ----------------------------------------------------------------------------


def replace_block(path: Path, name: str, body: list[str]) -> None:
    """Put ``body`` between the lines ``<!-- bench:name -->`` and ``<!-- /bench:name -->`` of
    ``path`` (a README's figures come from the run that printed them, never typed in)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = path.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{path} has no {start} ... {end} block to fill")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(head + start + "\n" + "\n".join(body) + "\n" + end + tail)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine() -> str:
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB RAM, "
    except OSError:
        pass
    parser = "hiredis parser" if HIREDIS_AVAILABLE else "pure-Python parser"
    return (f"{platform.machine()}, {os.cpu_count()} cores, {mem}{platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, redis-py {redis.__version__} ({parser})")
