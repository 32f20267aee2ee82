"""Shared chunks (issue 16): the chunker candidates, then the issue's targets, side by side.

    python bench/incremental.py [--url URL] [--quick]

Part 1 needs no server: each candidate's throughput on a 64 MiB frame payload and on the
message-shaped state (bench/states.py), cut alone and cut + xxh3-128 per chunk, and how many
chunk bytes are new after an append (the boundaries' stability). Part 2 starts a local
durable Valkey (appendfsync always) unless --url is given, and prints each target of issue
16 with its measured figure: every ratio is the median of per-round ratios, the two sides
of a round measured seconds apart (interleaved), never against a constant.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent))
from incremental_saver import saver_history_row  # noqa: E402
from states import message, message_state, _vocabulary  # noqa: E402

from redis_ckpt import CheckpointStore, EncodedList  # noqa: E402
from redis_ckpt.core import dedup  # noqa: E402
from redis_ckpt.core.codec import encode_state_buffer  # noqa: E402
from redis_ckpt.core.keys import RunKeys  # noqa: E402

MIB = 1 << 20
ROW = 4096


# -- part 1: chunkers ------------------------------------------------------------------------


def fastcdc_cut(mn: int, avg: int, mx: int) -> Callable[[memoryview], list[int]] | None:
    try:
        from fastcdc.fastcdc_cy import fastcdc_cy
    except ImportError:
        return None
    return lambda v: [c.length for c in fastcdc_cy(v, min_size=mn, avg_size=avg, max_size=mx)]


def fixed_cut(v: memoryview) -> list[int]:
    n = len(v)
    return [min(dedup.FALLBACK_BYTES, n - i) for i in range(0, n, dedup.FALLBACK_BYTES)]


def element_cut(v: memoryview) -> list[int]:
    """Boundaries at element edges (the codec's structure): the items of the state's top-level
    containers, grouped until an item ends on a content-defined mark (its last 16 bytes'
    hash), a long leaf in fixed pieces. What a cut inside the codec would cost, in Python."""
    data = bytes(v)  # the Unpacker keeps its own copy anyway
    u = msgpack.Unpacker(max_buffer_size=len(data) + 1, raw=True)
    u.feed(data)
    ends: list[int] = []
    lead = data[0]
    if 0x80 <= lead <= 0x8F or lead in (0xDE, 0xDF):
        for _ in range(u.read_map_header()):
            u.skip()
            t = data[u.tell()]
            if 0x90 <= t <= 0x9F or t in (0xDC, 0xDD):
                for _ in range(u.read_array_header()):
                    u.skip()
                    ends.append(u.tell())
            else:
                start = u.tell()
                u.skip()
                ends += range(start + dedup.MAX_CHUNK, u.tell(), dedup.MAX_CHUNK)
                ends.append(u.tell())
    out, last = [], 0
    for e in ends:
        size = e - last
        if size >= dedup.MIN_CHUNK and (size >= dedup.MAX_CHUNK or xxhash.xxh3_64_intdigest(data[e - 16:e]) % 4 == 0):
            out.append(size)
            last = e
    if last < len(data):
        out.append(len(data) - last)
    return out


def best_of(fn: Callable[[], Any], n: int) -> tuple[float, Any]:
    best, r = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        r = fn()
        best = min(best, time.perf_counter() - t)
    return best, r


def new_bytes(cutter: Callable[[memoryview], list[int]], before: bytes, after: bytes) -> float:
    def chunks(b: bytes) -> dict[str, int]:
        out, at = {}, 0
        for n in cutter(memoryview(b)):
            out[xxhash.xxh3_128_hexdigest(b[at:at + n])] = n
            at += n
        return out

    old, new = chunks(before), chunks(after)
    return sum(n for a, n in new.items() if a not in old) / len(after)


def rows_state(n_rows: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    return {"step": n_rows, "rows": [rng.randbytes(ROW) for _ in range(n_rows)], "note": "grows by 4 KiB a step"}


def part1(quick: bool) -> float:
    big = bytes(encode_state_buffer(rows_state(64 * MIB // ROW)))
    big_after = bytes(encode_state_buffer({**rows_state(64 * MIB // ROW), "rows": rows_state(64 * MIB // ROW)["rows"]
                                           + [b"\x01" * ROW]}))
    msgs = message_state(2000)
    small = bytes(encode_state_buffer(msgs))
    msgs2 = {**msgs, "messages": msgs["messages"] + [message(random.Random(9), _vocabulary(random.Random(9)), 2000)]}
    small_after = bytes(encode_state_buffer(msgs2))
    candidates: list[tuple[str, Any]] = [
        ("fastcdc 16/32/128 KiB (used up to 8 MiB)", fastcdc_cut(dedup.MIN_CHUNK, dedup.AVG_CHUNK, dedup.MAX_CHUNK)),
        ("fastcdc 16/64/256 KiB", fastcdc_cut(16384, 65536, 262144)),
        ("fastcdc 64/128/512 KiB (used 8-128 MiB)", fastcdc_cut(65536, 131072, 524288)),
        ("element edges (msgpack walk)", element_cut),
        ("fixed 32 KiB (fallback)", fixed_cut),
    ]
    reps = 2 if quick else 3
    print(f"## 1. Chunkers: a {len(big) / MIB:.0f} MiB payload (4 KiB rows) and the message state "
          f"({len(small) / 1024:.0f} KiB, 2,000 messages)\n")
    print("| chunker | 64 MiB cut GiB/s | cut + xxh3-128 GiB/s | messages cut ms | new bytes after +1 row "
          "| new bytes after +1 message |")
    print("|---|---|---|---|---|---|")
    chosen = 0.0
    for name, cutter in candidates:
        if cutter is None:
            print(f"| {name} | (fastcdc not installed) | | | | |")
            continue
        t_cut, lengths = best_of(lambda: cutter(memoryview(big)), reps)

        def cut_hash() -> None:
            at, v = 0, memoryview(big)
            for n in cutter(v):
                xxhash.xxh3_128_hexdigest(v[at:at + n])
                at += n

        t_both, _ = best_of(cut_hash, reps)
        t_small, _ = best_of(lambda: cutter(memoryview(small)), 5)
        gib = len(big) / (1 << 30)
        print(f"| {name} | {gib / t_cut:.2f} | {gib / t_both:.2f} | {t_small * 1e3:.2f} | "
              f"{100 * new_bytes(cutter, big, big_after):.2f}% | {100 * new_bytes(cutter, small, small_after):.1f}% |")
        if "8-128 MiB" in name:  # what a 64 MiB payload is cut with
            chosen = gib / t_both
    t_x, _ = best_of(lambda: xxhash.xxh3_128_digest(big), reps)
    rows = rows_state(64 * MIB // ROW)
    t_enc, _ = best_of(lambda: encode_state_buffer(rows), reps)
    print(f"\nFor scale: xxh3-128 of the whole 64 MiB {len(big) / (1 << 30) / t_x:.1f} GiB/s "
          f"({t_x * 1e3:.1f} ms); encoding the 64 MiB state {t_enc * 1e3:.0f} ms; "
          f"encoding the message state {best_of(lambda: encode_state_buffer(msgs), 5)[0] * 1e3:.2f} ms.\n")
    return chosen


# -- part 2: the targets ----------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def memory_of(client: Any, k: RunKeys) -> int:
    total = 0
    for key in client.scan_iter(match=f"{k.base}:*", count=1000):
        total += client.memory_usage(key, samples=0) or 0
    return total


class Grower:
    """A run whose state grows each step, committed by one lease."""

    def __init__(self, store: CheckpointStore, run: str, make: Callable[[int], Any], start: int) -> None:
        self.store, self.run, self.make, self.n = store, run, make, start
        store.delete(run)
        self.lease = store.acquire(run, owner="bench", ttl=600)
        self.lease.commit(make(self.n))

    def step(self) -> float:
        self.n += 1
        state = self.make(self.n)
        return timed(lambda: self.lease.commit(state))


def rounds(a: Callable[[], list[float]], b: Callable[[], list[float]], n: int, stat: Callable[[list[float]], float]
           = statistics.median) -> tuple[float, float, float]:
    """(median a, median b, median of per-round a/b), a and b alternating (A B, B A, ...)."""
    ra, rb, ratios = [], [], []
    for i in range(n):
        if i % 2:
            y, x = b(), a()
        else:
            x, y = a(), b()
        ra.append(stat(x))
        rb.append(stat(y))
        ratios.append(stat(x) / stat(y))
    return statistics.median(ra), statistics.median(rb), statistics.median(ratios)


def verdict(value: float, bound: float, higher_is_better: bool) -> str:
    held = value >= bound if higher_is_better else value <= bound
    return "held" if held else "MISSED"


def part2(url: str, chosen_gibs: float, quick: bool) -> None:
    import redis

    from redis_ckpt.steps import StepRunner

    client = redis.Redis.from_url(url)
    client.execute_command("CONFIG", "SET", "save", "")
    dd = CheckpointStore.from_url(url, namespace="bench-inc", keep=3, dedup=True)
    plain = CheckpointStore.from_url(url, namespace="bench-inc-plain", keep=3)
    n_rounds = 3 if quick else 5
    rows = 64 * MIB // ROW
    base_rows = rows_state(rows)["rows"]
    extra = random.Random(2)

    def grown(n: int) -> dict[str, Any]:
        while len(base_rows) < n:
            base_rows.append(extra.randbytes(ROW))
        return {"step": n, "rows": base_rows[:n], "note": "grows by 4 KiB a step"}

    small = Grower(dd, "small", lambda n: {"step": n, "blob": b"s" * 4000}, 0)
    print("## 2. Targets (issue 16)\n")
    print("| target | measured | bound | verdict |")
    print("|---|---|---|---|")

    # 1. 64 MiB + 4 KiB per step vs a 4 KiB state; memory of keep=3
    g = Grower(dd, "big", grown, rows)
    per = 3 if quick else 5
    big_t, small_t, r = rounds(lambda: [g.step() for _ in range(per)], lambda: [small.step() for _ in range(50)],
                               n_rounds)
    rate = 1 / r
    print(f"| 1. 64 MiB +4 KiB/step commit rate vs a 4 KiB state (dedup) | {rate:.3f}x ({big_t * 1e3:.0f} ms vs "
          f"{small_t * 1e3:.2f} ms) | >= 0.5x | {verdict(rate, 0.5, True)} |")
    client.config_resetstat()
    for _ in range(3):
        g.step()
    script_ms = client.info("commandstats")["cmdstat_evalsha"]["usec_per_call"] / 1000
    print(f"| 1. its commit script's server time (INFO commandstats) | {script_ms:.2f} ms | | |")
    p = Grower(plain, "big", grown, g.n)
    plain_t = statistics.median(p.step() for _ in range(2))
    print(f"| 1. for reference, today's (no dedup) 64 MiB commit | {plain_t * 1e3:.0f} ms "
          f"({small_t / plain_t:.3f}x the 4 KiB rate) | | |")
    state_bytes = len(bytes(encode_state_buffer(grown(g.n))))
    mem = memory_of(client, dd.core.keys("big")) / state_bytes
    mem_plain = memory_of(client, plain.core.keys("big")) / state_bytes
    print(f"| 1. Redis memory, keep=3, vs one state | {mem:.3f}x (no dedup: {mem_plain:.2f}x) | <= 1.1x "
          f"| {verdict(mem, 1.1, False)} |")
    dd.delete("big")
    plain.delete("big")
    del p, g

    # 2. 2,000 messages + 1 per step vs 4 KiB
    rng, words = random.Random(4), _vocabulary(random.Random(4))
    msgs = message_state(2000)["messages"]

    def history(n: int) -> dict[str, Any]:
        while len(msgs) < n:
            msgs.append(message(rng, words, len(msgs)))
        return {"thread_id": "t", "messages": msgs[:n], "summary": "so far", "step": n}

    h = Grower(dd, "history", history, 2000)
    hp = Grower(plain, "history", history, 2000)
    m_t, s_t, r = rounds(lambda: [h.step() for _ in range(40)], lambda: [small.step() for _ in range(40)], n_rounds)
    mp_t, _, rp = rounds(lambda: [hp.step() for _ in range(40)], lambda: [small.step() for _ in range(40)], n_rounds)
    print(f"| 2. 2,000 messages +1/step commit p50 vs a 4 KiB state (dedup) | {r:.2f}x ({m_t * 1e3:.2f} ms vs "
          f"{s_t * 1e3:.2f} ms; no dedup {rp:.2f}x, {mp_t * 1e3:.2f} ms) | <= 2x | {verdict(r, 2.0, False)} |")
    # the same history kept in an EncodedList: each message is encoded once, when appended
    rng_e, words_e = random.Random(4), _vocabulary(random.Random(4))
    kept = EncodedList(message_state(2000)["messages"], root="messages")

    def appended(n: int) -> dict[str, Any]:
        while len(kept) < n:
            kept.add(message(rng_e, words_e, len(kept)))
        return {"thread_id": "t", "messages": kept.encoded(), "summary": "so far", "step": n}

    he = Grower(dd, "history-kept", appended, 2000)
    hep = Grower(plain, "history-kept", appended, 2000)
    e_t, s_t, r = rounds(lambda: [he.step() for _ in range(40)], lambda: [small.step() for _ in range(40)], n_rounds)
    ep_t, _, rp = rounds(lambda: [hep.step() for _ in range(40)], lambda: [small.step() for _ in range(40)],
                         n_rounds)
    print(f"| 2. the same history kept in an `EncodedList` (each message encoded once): commit p50 vs a 4 KiB "
          f"state (dedup) | {r:.2f}x ({e_t * 1e3:.2f} ms vs {s_t * 1e3:.2f} ms; no dedup {rp:.2f}x, "
          f"{ep_t * 1e3:.2f} ms) | <= 2x | {verdict(r, 2.0, False)} |")
    print(saver_history_row(url, n_rounds, rounds, verdict))

    # 3. the step runner: 600 steps of 2 KB results
    def steps(store: CheckpointStore, run: str) -> tuple[float, float]:
        store.delete(run)
        runner = StepRunner(store, run, owner="bench", ttl=600)
        marks: list[float] = []
        payload = random.Random(5)
        for i in range(600):
            def step(ctx: Any, i: int = i) -> dict[str, Any]:
                marks.append(time.perf_counter())
                return {"i": i, "text": payload.randbytes(1000).hex()}
            runner.add(f"s{i}", step)
        runner.run()
        gaps = [b - a for a, b in zip(marks, marks[1:])]
        store.delete(run)
        return statistics.median(gaps[:50]), statistics.median(gaps[-50:])

    # three runs on each store, interleaved (A B B A A B); each ratio is the median of the runs' own
    by: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for shared in (True, False, False, True, True, False):
        by[shared].append(steps(dd if shared else plain, "steps"))
    (first, last, ratio), (pf, pl, pratio) = (
        (statistics.median(f for f, _ in r), statistics.median(la for _, la in r),
         statistics.median(la / f for f, la in r)) for r in (by[True], by[False]))
    print(f"| 3. step runner, 600 steps of 2 KB: last-50 p50 vs first-50 (dedup) | {ratio:.2f}x "
          f"({first * 1e3:.2f} -> {last * 1e3:.2f} ms; no dedup {pratio:.2f}x, {pf * 1e3:.2f} -> {pl * 1e3:.2f} ms) "
          f"| <= 2x | {verdict(ratio, 2.0, False)} |")

    # 4. chunk + hash throughput; a state with no reuse vs today
    print(f"| 4. chunk + hash (fastcdc + xxh3-128), 64 MiB | {chosen_gibs:.2f} GiB/s | >= 1 GiB/s "
          f"| {verdict(chosen_gibs, 1.0, True)} |")
    fresh = random.Random(7)

    def new_state() -> dict[str, Any]:
        return {"blob": fresh.randbytes(64 * MIB)}

    a = dd.acquire("fresh", owner="bench", ttl=600)
    b = plain.acquire("fresh", owner="bench", ttl=600)
    def fresh_commit(lease: Any) -> list[float]:
        out = []
        for _ in range(3):  # a round's figure is the median of three commits: one 64 MiB commit is noisy
            state = new_state()  # nothing in it is held by the run: every chunk is new
            out.append(timed(lambda: lease.commit(state)))
        return out

    d_t, p_t, r = rounds(lambda: fresh_commit(a), lambda: fresh_commit(b), n_rounds)
    print(f"| 4. a 64 MiB state with no reuse: commit vs today's | {r:.2f}x ({d_t * 1e3:.0f} ms vs {p_t * 1e3:.0f} ms) "
          f"| <= 1.1x | {verdict(r, 1.1, False)} |")

    # 5. load of a chunked generation vs a raw GET of the same bytes
    frame = dd.export_frame("fresh")
    client.set("bench-inc-raw", frame)
    l_t, g_t, r = rounds(lambda: [timed(lambda: dd.load("fresh"))],
                         lambda: [timed(lambda: client.get("bench-inc-raw"))], n_rounds)
    print(f"| 5. load of a 64 MiB shared-chunk generation vs raw GET | {1 / r:.2f}x the GET's rate "
          f"({l_t * 1e3:.0f} ms vs {g_t * 1e3:.0f} ms) | >= 0.85x | {verdict(1 / r, 0.85, True)} |")
    client.delete("bench-inc-raw")
    for s in (dd, plain):
        for run in ("small", "history", "history-kept", "fresh"):
            s.delete(run)
        s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url")
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--chunkers-only", action="store_true")
    a = ap.parse_args()
    print(f"chunker in use: {dedup.chunker_name()}; {os.cpu_count()} cores\n")
    chosen = part1(a.quick)
    if a.chunkers_only:
        return 0
    if a.url:
        part2(a.url, chosen, a.quick)
        return 0
    from redis_ckpt.testing import LocalServer

    with LocalServer("valkey") as server:
        part2(server.url, chosen, a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
