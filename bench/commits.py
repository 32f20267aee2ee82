"""Durable commits, side by side in interleaved rounds: the floor, the store, PostgreSQL, a
file and SQLite (threads), and the floor, the store and PostgreSQL (asyncio), per state size
and concurrency; and the commit latency of a message-shaped state against the floor's.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peers
import redis
from _harness import Contender, Series, Target, close_all, interleave, ops_ratio, p50_ratio, worst

from redis_ckpt import CheckpointStore, EncodedList

COMMIT_FLOOR = 0.9       # issue 12, target 1
ASYNC_VS_THREADS = 0.95  # "no slower": a tie within the rounds' noise counts as held
LARGE_FLOOR = 0.85       # target 4 (16 MiB)
MESSAGE_P50 = 1.25       # target 3
SMALL = ("1 KiB", "64 KiB")


def frame_of(url: str, state: Any) -> bytes:
    """The exact bytes the store writes for ``state``: every peer writes these."""
    st = CheckpointStore(redis.Redis.from_url(url), namespace="bench-frames", keep=1)
    try:
        lease = st.acquire("frame", owner="bench", ttl=60)
        lease.commit(state)
        return st.export_frame("frame")
    finally:
        st.close()


@dataclass
class Cell:
    label: str
    conc: int
    series: dict[str, Series]
    runs: int = 1  # how often the cell was measured (its rounds are every run's)

    def get(self, mode: str, name: str) -> Series | None:
        return self.series.get(f"{mode} {name}")

    @property
    def shown(self) -> str:
        return f"{self.label}{' *' if self.runs > 1 else ''}"


def borderline(cell: Cell) -> bool:
    """Whether a judged ratio of ``cell`` has rounds on both sides of its bound (the cell's
    verdict is then as much this run's noise as the code's)."""
    judged = []
    for m in ("threads", "asyncio"):
        s, f, pg = cell.get(m, "store"), cell.get(m, "floor"), cell.get(m, "postgres")
        if s and f:
            judged.append((ops_ratio(s, f), COMMIT_FLOOR))
        if s and pg:
            judged.append((ops_ratio(s, pg), 1.0))
    a, t = cell.get("asyncio", "store"), cell.get("threads", "store")
    if a and t:
        judged.append((ops_ratio(a, t), ASYNC_VS_THREADS))
    return any(r.low < bound <= r.high for r, bound in judged)


def merged(a: Cell, b: Cell) -> Cell:
    """One cell holding the rounds of two runs of it."""
    return Cell(a.label, a.conc, {k: Series(k, a.series[k].rounds + b.series[k].rounds) for k in a.series},
                a.runs + b.runs)


def _named(c: Contender, mode: str) -> Contender:
    c.name = f"{mode} {c.name}"
    return c


def run_cell(loop: asyncio.AbstractEventLoop, url: str, pg_url: str | None, label: str, state: Any, blob: bytes,
             n: int, rounds: int, seconds: float, peers_too: bool = True) -> Cell:
    tag = f"{label.replace(' ', '')}-{n}"
    with tempfile.TemporaryDirectory(prefix="redis-ckpt-bench-", dir=os.environ.get("BENCH_DIR")) as tmp:
        cs = [_named(peers.floor(url, blob, n, tag), "threads"), _named(peers.store(url, state, n, tag), "threads")]
        if peers_too and pg_url:
            cs.append(_named(peers.postgres(pg_url, blob, n, tag), "threads"))
        if peers_too:
            cs += [_named(peers.file(Path(tmp), blob, n), "threads"),
                   _named(peers.sqlite(Path(tmp) / "ckpt.db", blob, n), "threads")]
        cs += [_named(loop.run_until_complete(peers.floor_async(url, blob, n, tag)), "asyncio"),
               _named(loop.run_until_complete(peers.store_async(url, state, n, tag)), "asyncio")]
        if peers_too and pg_url:
            cs.append(_named(loop.run_until_complete(peers.postgres_async(pg_url, blob, n, tag)), "asyncio"))
        try:
            series = interleave(loop, cs, rounds, seconds, 1_000_000)
        finally:
            close_all(loop, cs)
    return Cell(label, n, series)


def _ops(s: Series | None) -> str:
    return f"{s.ops:.0f}" if s else ""


def _p50(s: Series | None) -> str:
    return f"{s.p50:.2f}" if s else ""


def commit_rows(cells: Sequence[Cell]) -> list[str]:
    rows = ["| state | conc. | mode | floor ops/s | store ops/s | store/floor (rounds' range) | >= 0.9x | "
            "PostgreSQL ops/s | store/PostgreSQL | store >= PostgreSQL | file ops/s | SQLite ops/s | "
            "p50 ms floor / store / PostgreSQL | store p99 ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        for mode in ("threads", "asyncio"):
            f, s, pg = c.get(mode, "floor"), c.get(mode, "store"), c.get(mode, "postgres")
            assert f and s
            r = ops_ratio(s, f)
            vs_pg = ops_ratio(s, pg) if pg else None
            rows.append(
                f"| {c.shown} | {c.conc} | {mode} | {f.ops:.0f} | {s.ops:.0f} | {r.spread} | "
                f"{'held' if r.median >= COMMIT_FLOOR else 'missed'} | {_ops(pg)} | "
                f"{vs_pg.spread if vs_pg else ''} | {('held' if vs_pg.median >= 1 else 'missed') if vs_pg else ''} | "
                f"{_ops(c.get(mode, 'file'))} | {_ops(c.get(mode, 'sqlite'))} | "
                f"{f.p50:.2f} / {s.p50:.2f}{' / ' + _p50(pg) if pg else ''} | {s.p99:.2f} |")
    return rows


def async_rows(cells: Sequence[Cell]) -> list[str]:
    rows = ["| state | conc. | asyncio store ops/s | threaded store ops/s | asyncio/threads (range) | "
            "asyncio floor / threaded floor |", "|---|---|---|---|---|---|"]
    for c in cells:
        a, t = c.get("asyncio", "store"), c.get("threads", "store")
        af, tf = c.get("asyncio", "floor"), c.get("threads", "floor")
        assert a and t and af and tf
        rows.append(f"| {c.shown} | {c.conc} | {a.ops:.0f} | {t.ops:.0f} | {ops_ratio(a, t).spread} | "
                    f"{ops_ratio(af, tf)} |")
    return rows


def commit_targets(cells: Sequence[Cell]) -> list[Target]:
    small = [c for c in cells if c.label in SMALL]
    vs_floor = [ops_ratio(c.get(m, "store"), c.get(m, "floor")).median  # type: ignore[arg-type]
                for c in small for m in ("threads", "asyncio")]
    out = [worst("1. commit ops/s >= 0.9x the floor (1 KiB, 64 KiB; c = 1, 8, 32; threads and asyncio)",
                 vs_floor, COMMIT_FLOOR)]
    if vs_floor:
        out[-1].shown += f", {sum(v < COMMIT_FLOOR for v in vs_floor)} of {len(vs_floor)} cells below"  # type: ignore[union-attr]
    out.append(worst("1. asyncio store no slower than the threaded store (>= 0.95x, same cells)",
                     [ops_ratio(c.get("asyncio", "store"), c.get("threads", "store")).median  # type: ignore[arg-type]
                      for c in small], ASYNC_VS_THREADS))
    pg = [ops_ratio(c.get(m, "store"), c.get(m, "postgres")).median  # type: ignore[arg-type]
          for c in small for m in ("threads", "asyncio") if c.get(m, "postgres")]
    t = worst("6. store ops/s >= PostgreSQL's (1 KiB, 64 KiB; c = 1, 8, 32; threads and asyncio)", pg, 1.0)
    if t:
        t.shown += f", {sum(v < 1.0 for v in pg)} of {len(pg)} cells below"
    out.append(t)
    big = [ops_ratio(c.get(m, "store"), c.get(m, "floor")).median  # type: ignore[arg-type]
           for c in cells if c.label == "16 MiB" and c.conc == 1 for m in ("threads", "asyncio")]
    out.append(worst("4. 16 MiB commit MiB/s >= 0.85x the floor's (c = 1, threads and asyncio)", big, LARGE_FLOOR))
    return [t for t in out if t is not None]


def message_commit(loop: asyncio.AbstractEventLoop, url: str, state: Any, rounds: int,
                   seconds: float, facts: dict[str, Any] | None = None) -> tuple[list[str], list[Target]]:
    """Commit p50 of the message-shaped state against the floor's p50 for the same bytes, c = 1."""
    blob = frame_of(url, state)
    cell = run_cell(loop, url, None, "messages", state, blob, 1, rounds, seconds, peers_too=False)
    rows = ["| mode | floor p50 ms | store p50 ms | store p50 / floor p50 (rounds' range) | <= 1.25x |",
            "|---|---|---|---|---|"]
    ratios = []
    for mode in ("threads", "asyncio"):
        f, s = cell.get(mode, "floor"), cell.get(mode, "store")
        assert f and s
        r = p50_ratio(s, f)
        ratios.append(r.median)
        if facts is not None:
            facts[mode] = (f.p50, s.p50)
        rows.append(f"| {mode} | {f.p50:.2f} | {s.p50:.2f} | {r.spread} | "
                    f"{'held' if r.median <= MESSAGE_P50 else 'missed'} |")
    # the same state with its history kept in an EncodedList (each message encoded when
    # appended): the same frame bytes, so the same floor; shown, not judged (target 3 is the
    # codec's, on the plain state)
    kept = {**state, "messages": EncodedList(state["messages"], root="messages").encoded()}
    kept_cell = run_cell(loop, url, None, "messages-kept", kept, blob, 1, rounds, seconds, peers_too=False)
    for mode in ("threads", "asyncio"):
        f, s = kept_cell.get(mode, "floor"), kept_cell.get(mode, "store")
        assert f and s
        rows.append(f"| {mode}, the history kept in an `EncodedList` (not judged) | {f.p50:.2f} | {s.p50:.2f} | "
                    f"{p50_ratio(s, f).spread} | |")
    head = [f"{len(state['messages'])} messages, frame of {len(blob) / 2**20:.2f} MiB, concurrency 1.", ""]
    parts = message_parts(url, state, blob)
    if facts is not None:
        facts["parts"] = parts
    rows += ["", f"Where a threaded commit's time goes (p50 of {MESSAGE_PARTS} commits alternating with floor writes; "
             "the encode timed inside each commit): the commit "
             f"{parts['commit']:.2f} ms, of which the encode (codec and frame) {parts['encode']:.2f} ms and the rest "
             f"(checksum, the staging commands, the script and WAITAOF) {parts['rest']:.2f} ms; the floor "
             f"{parts['floor']:.2f} ms."]
    return head + rows, [t for t in [worst("3. message-shaped state: commit p50 <= 1.25x the floor's p50",
                                           ratios, MESSAGE_P50, higher_is_better=False)] if t]


MESSAGE_PARTS = 40


def message_parts(url: str, state: Any, blob: bytes) -> dict[str, float]:
    """p50s (ms) of a commit of ``state``, of the encode inside it, of the commit less its
    encode, and of the floor's write of its frame, alternating. The store's own encode is
    wrapped only to time it: it runs and returns as it does unwrapped."""
    client = redis.Redis.from_url(url)
    st = CheckpointStore(client, namespace="bench-parts", keep=2)
    lease = st.acquire("parts", owner="bench", ttl=3600)
    encode, took = st.core.encode, [0.0]

    def timed_encode(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return encode(*args, **kwargs)
        finally:
            took[0] = time.perf_counter() - t

    st.core.encode = timed_encode  # type: ignore[method-assign]
    out: dict[str, list[float]] = {"commit": [], "encode": [], "rest": [], "floor": []}
    try:
        for i in range(MESSAGE_PARTS + 2):  # the first two warm up
            t = time.perf_counter()
            p = client.pipeline(transaction=False)
            p.set("bench-parts:floor", blob)
            p.execute_command("WAITAOF", 1, 0, peers.WAITAOF_MS)
            p.execute()
            floor = time.perf_counter() - t
            t = time.perf_counter()
            lease.commit(state)
            commit = time.perf_counter() - t
            if i >= 2:
                out["floor"].append(floor)
                out["commit"].append(commit)
                out["encode"].append(took[0])
                out["rest"].append(commit - took[0])
    finally:
        st.close()
    return {k: statistics.median(v) * 1000 for k, v in out.items()}


_T0 = time.monotonic()


def progress(line: str) -> None:
    print(f"[{time.monotonic() - _T0:5.0f} s] {line}", file=sys.stderr, flush=True)
