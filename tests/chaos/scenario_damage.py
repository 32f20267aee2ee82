"""Damaged data on the server: each kind of damage to a stored generation is detected with its
own reason, ``load`` falls back to the newest good generation, loudly (ERROR log, ``skipped``,
a ``fallback`` event), and never returns damaged content; random mutations (fuzzing) only
ever end in a fallback or a ``CorruptCheckpointError``, with bounded memory.
"""

from __future__ import annotations

import logging
import random
import struct
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import xxhash
from chaos_tools import Tally

from redis_ckpt import CheckpointStore, CorruptCheckpointError
from redis_ckpt.core.keys import RunKeys

KEEP = 4


def _reframe(frame: bytes, at: int, value: int) -> bytes:
    """``frame`` with byte ``at`` set to ``value`` and the checksum recomputed (a *valid* frame
    from a writer that differs: a future format, another codec...)."""
    body = bytearray(frame[:-16])
    body[at] = value
    return bytes(body) + xxhash.xxh3_128_digest(bytes(body))


def _flip_payload(frame: bytes, rng: random.Random) -> bytes:
    b = bytearray(frame)
    header_len = struct.unpack_from(">I", frame, 12)[0]
    at = rng.randrange(24 + header_len, len(frame) - 16)  # inside the payload
    b[at] ^= 1 << rng.randrange(8)
    return bytes(b)


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _fresh_run(store: CheckpointStore, run: str, n: int = KEEP, big: bool = False) -> None:
    lease = store.acquire(run, owner="writer", ttl=60)
    for i in range(1, n + 1):
        lease.commit({"i": i, "blob": bytes(range(256)) * (24 if big else 2)})
    lease.release()


#: damage name -> (expected reason of the head generation, how to damage it)
Damage = Callable[[Any, RunKeys, bytes, random.Random, CheckpointStore], None]


def _damages() -> dict[str, tuple[str, Damage]]:
    def put(c: Any, k: RunKeys, v: bytes) -> None:
        c.set(k.generation(KEEP), v)

    def other_run(c: Any, k: RunKeys, f: bytes, rng: random.Random, store: CheckpointStore) -> None:
        _fresh_run(store, k.run_id + "-other")
        put(c, k, c.get(RunKeys(k.namespace, k.run_id + "-other").generation(KEEP)))

    def other_deployment(c: Any, k: RunKeys, f: bytes, rng: random.Random, store: CheckpointStore) -> None:
        elsewhere = CheckpointStore(store.client, namespace=k.namespace + "x", keep=KEEP)
        _fresh_run(elsewhere, k.run_id)  # same run id and generation, other content: a replayed frame
        put(c, k, c.get(RunKeys(k.namespace + "x", k.run_id).generation(KEEP)))

    def swap(c: Any, k: RunKeys, f: bytes, rng: random.Random, store: CheckpointStore) -> None:
        older = c.get(k.generation(KEEP - 1))
        c.set(k.generation(KEEP - 1), f)
        put(c, k, older)

    return {
        "bit flip in the payload": ("checksum", lambda c, k, f, r, s: put(c, k, _flip_payload(f, r))),
        "truncated": ("truncated", lambda c, k, f, r, s: put(c, k, f[: r.randrange(24, len(f) - 1)])),
        "bytes appended": ("trailing-bytes", lambda c, k, f, r, s: put(c, k, f + b"\0" * r.randint(1, 64))),
        "not a frame": ("bad-magic", lambda c, k, f, r, s: put(c, k, b"{\"state\": 1}")),
        "generations swapped": ("wrong-generation", swap),
        "a frame of another run": ("wrong-run", other_run),
        "same run and generation, from another deployment": ("head-mismatch", other_deployment),
        "future frame format version": ("unknown-format", lambda c, k, f, r, s: put(c, k, _reframe(f, 4, 2))),
        "unknown codec": ("unknown-codec", lambda c, k, f, r, s: put(c, k, _reframe(f, 5, 77))),
        "unknown compression": ("unknown-compression", lambda c, k, f, r, s: put(c, k, _reframe(f, 6, 9))),
        "generation key deleted": ("missing", lambda c, k, f, r, s: c.delete(k.generation(KEEP))),
    }


def damaged_frames(server: Any, *, rounds: int, seed: int) -> Tally:
    """Every damage kind, ``rounds`` times each, on the newest generation of a fresh run."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    tally = Tally("damaged stored generations (one reason each)", server.engine)
    client = server.client()
    store = CheckpointStore(client, namespace=f"dmg{seed % 1000}", keep=KEEP)
    errors = _Errors()
    logging.getLogger("redis_ckpt").addHandler(errors)
    try:
        for rnd in range(rounds):
            for case, (name, (reason, damage)) in enumerate(_damages().items()):
                run = f"r{rnd}-{case}"
                _fresh_run(store, run)
                k = RunKeys(store.namespace, run)
                frame = client.get(k.generation(KEEP))
                damage(client, k, frame, rng, store)
                tally.injected += 1
                logged = len(errors.records)
                ck = store.load(run)
                skipped = [(s.generation, s.reason) for s in ck.skipped]
                expect_skip = [(KEEP, reason)] if name != "generations swapped" else \
                    [(KEEP, reason), (KEEP - 1, reason)]
                good = ck.generation == KEEP - len(expect_skip) and ck.state["i"] == ck.generation
                loud = len(errors.records) > logged and \
                    any(e.kind == "fallback" for e in store.events(run, count=5))
                reported = [(g.generation, g.reason) for g in store.generations(run) if not g.ok]
                if tally.check(good and skipped == expect_skip and loud and reported == expect_skip,
                               f"{name}: loaded g{ck.generation}, skipped {skipped}, reported {reported}, "
                               f"expected {expect_skip}, loud={loud}"):
                    tally.detected += 1
                tally.count(f"{name} -> {reason}")
            tally.rounds += 1
        # every kept generation damaged: an error naming each, never None or a fresh start
        run = "all-bad"
        _fresh_run(store, run)
        k = RunKeys(store.namespace, run)
        for g in range(1, KEEP + 1):
            client.setrange(k.generation(g), 40, b"\xff\xfe")
        tally.injected += 1
        try:
            store.load(run)
        except CorruptCheckpointError as exc:
            if tally.check(sorted(exc.reasons) == list(range(1, KEEP + 1)), f"all-bad reasons: {exc.reasons}"):
                tally.detected += 1
        else:
            tally.violation("a run whose every generation is damaged loaded")
        tally.count("all kept generations damaged -> CorruptCheckpointError")
        tally.injected += _chunked(store, client, tally)
    finally:
        logging.getLogger("redis_ckpt").removeHandler(errors)
        store.close()
    tally.seconds = time.monotonic() - t0
    return tally


def _chunked(store: CheckpointStore, client: Any, tally: Tally) -> int:
    """Damage to a chunked generation: a chunk flipped, a chunk gone, the manifest damaged."""
    chunked = CheckpointStore(client, namespace=store.namespace + "c", keep=KEEP, chunk_bytes=4096)
    cases = {
        "a chunk's bytes flipped": ("checksum", lambda c, k: c.setrange(k.chunk(KEEP, 1), 100, b"\x00\x01")),
        "a chunk deleted": ("missing", lambda c, k: c.delete(k.chunk(KEEP, 1))),
        "the manifest damaged": ("checksum", lambda c, k: c.setrange(k.generation(KEEP), 12, b"\x00")),
    }
    for case, (name, (reason, damage)) in enumerate(cases.items()):
        run = f"chunked-{case}"
        _fresh_run(chunked, run, big=True)
        k = RunKeys(chunked.namespace, run)
        damage(client, k)
        ck = chunked.load(run)
        if tally.check(ck.generation == KEEP - 1 and [(s.generation, s.reason) for s in ck.skipped] == [(KEEP, reason)],
                       f"chunked, {name}: loaded {ck.generation}, skipped {ck.skipped}"):
            tally.detected += 1
        tally.count(f"chunked: {name} -> {reason}")
    return len(cases)


# --------------------------------------------------------------------------- fuzzing


def mutate(frame: bytes, rng: random.Random) -> bytes:
    """One to four random mutations of a frame (flips, overwrites, cuts, insertions, length fields)."""
    b = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            i = rng.randrange(len(b))
            b[i : i + 4] = rng.randbytes(min(4, len(b) - i))
        elif op == 2:
            del b[rng.randrange(len(b) + 1):]
        elif op == 3:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and len(b) >= 16:  # a huge header or payload length
            at = rng.choice([12, 16 + struct.unpack_from(">I", b, 12)[0]]) if len(b) > 24 else 12
            width = 4 if at == 12 else 8
            if at + width <= len(b):
                b[at : at + width] = (2 ** (8 * width) - rng.randint(1, 1000)).to_bytes(width, "big")
        else:
            b = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(b)


def fuzz_load(store: CheckpointStore, client: Any, run: str, blob: bytes, original: bytes) -> tuple[str, int]:
    """Store ``blob`` as the newest generation and load. Returns (outcome, peak bytes allocated).

    Outcomes: "original" (blob unchanged), "fell back: <reason>", "corrupt". Anything else raises.
    """
    k = RunKeys(store.namespace, run)
    client.set(k.generation(KEEP), blob)
    tracemalloc.start()
    try:
        try:
            ck = store.load(run)
        except CorruptCheckpointError:
            return "corrupt", tracemalloc.get_traced_memory()[1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if ck.generation == KEEP and not ck.skipped:
        if blob != original:
            raise AssertionError(f"a mutated frame loaded as generation {KEEP}: {blob!r}")
        return "original", peak
    if ck.generation != KEEP - 1 or [s.generation for s in ck.skipped] != [KEEP]:
        raise AssertionError(f"loaded generation {ck.generation}, skipped {ck.skipped}")
    return f"fell back: {ck.skipped[0].reason}", peak


def fuzz_frames(server: Any, *, iterations: int, seed: int) -> Tally:
    """Random mutations of a stored frame (the runner's fuzzing; the tests use hypothesis)."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    tally = Tally("fuzzed stored frames (random mutations)", server.engine)
    client = server.client()
    store = CheckpointStore(client, namespace=f"fuzz{seed % 1000}", keep=KEEP)
    logging.getLogger("redis_ckpt").setLevel(logging.CRITICAL)  # thousands of expected fallbacks
    try:
        run = "fuzzed"
        _fresh_run(store, run)
        original = client.get(RunKeys(store.namespace, run).generation(KEEP))
        worst = 0
        for _ in range(iterations):
            blob = mutate(original, rng)
            try:
                outcome, peak = fuzz_load(store, client, run, blob, original)
            except AssertionError as exc:
                tally.violation(str(exc)[:300])
                continue
            except Exception as exc:  # any other exception is a finding: recorded, with the input
                tally.violation(f"{type(exc).__name__}: {exc} on {blob[:80]!r}")
                continue
            tally.rounds += 1
            if outcome != "original":
                tally.injected += 1
                tally.detected += 1
            tally.count(outcome)
            worst = max(worst, peak)
        tally.counters["peak bytes allocated by one load"] = worst
        tally.check(worst < 64 * len(original) + 4 * 1024 * 1024, f"a load allocated {worst} bytes")
    finally:
        logging.getLogger("redis_ckpt").setLevel(logging.NOTSET)
        store.close()
    tally.seconds = time.monotonic() - t0
    return tally
