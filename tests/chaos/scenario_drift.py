"""Server drift at run time: the server's durability settings change under running workers
(``CONFIG SET``). The startup probe refuses each of these settings; a commit made after the
change must fail (``DurabilityError`` / ``NonDurableServerError``), not succeed silently.

Measured on Valkey 9.1.2 and Redis 8.2.3:

* ``appendonly no``: WAITAOF errors at once -> ``DurabilityError``;
* ``appendfsync no``: WAITAOF never confirms -> ``DurabilityError`` after the policy timeout;
* ``maxmemory-policy allkeys-lru``, ``no-appendfsync-on-rewrite yes``, and (Valkey)
  ``appendfsync everysec``: commits still succeed -- the store does not notice (a gap).
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from chaos_tools import Tally

from redis_ckpt import CheckpointStore, Durability, DurabilityError, NonDurableServerError
from redis_ckpt.testing import wait_for

REFUSED = (DurabilityError, NonDurableServerError)

#: the settings drifted to, and whether the store is known (today) to notice
DRIFTS: list[tuple[str, str]] = [
    ("appendonly", "no"),
    ("appendfsync", "no"),
    ("maxmemory-policy", "allkeys-lru"),
    ("no-appendfsync-on-rewrite", "yes"),
    ("appendfsync", "everysec"),  # refused by the probe on Valkey only
]


def applies(engine: str, name: str, value: str) -> bool:
    """Whether the probe refuses ``name value`` on ``engine`` (everysec is only refused on Valkey)."""
    return not (name == "appendfsync" and value == "everysec" and engine != "valkey")


def drift(server: Any, name: str, value: str, *, workers: int = 2, commits_after: int = 4,
          timeout_ms: int = 300) -> Tally:
    """Workers commit; the setting drifts; each worker's next ``commits_after`` commits are judged."""
    t0 = time.monotonic()
    tally = Tally(f"CONFIG SET {name} {value} while workers commit", server.engine)
    admin = server.client()
    original = admin.config_get(name)[name]
    stop_before, drifted = threading.Event(), threading.Event()
    paused = threading.Barrier(workers + 1)
    results: list[list[str]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        store = CheckpointStore(server.client(), namespace="drift", keep=3, durability=Durability(timeout_ms=timeout_ms))
        try:
            lease = store.acquire(f"drift-{name}-{value}-{i}", owner=f"w{i}", ttl=60)
            step = 0
            while not stop_before.is_set():  # commits before the drift: all fine
                step += 1
                lease.commit({"step": step})
                time.sleep(0.005)
            paused.wait(30)  # every worker is between commits while the setting changes
            drifted.wait(30)
            # the drift check rides in a commit at most every drift_check_s: the commits
            # judged are those sent once that passed (the window documented in DriftWatch)
            time.sleep(store.core.config.drift_check_s)
            for _ in range(commits_after):
                step += 1
                try:
                    lease.commit({"step": step})
                except REFUSED as exc:
                    results[i].append(type(exc).__name__)
                else:
                    results[i].append("accepted")
        except BaseException as exc:  # handed to the main thread, which fails the scenario with it
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        stop_before.set()
        paused.wait(30)
        admin.config_set(name, value)
        drifted.set()
        for t in threads:
            t.join(60)
    finally:
        stop_before.set()
        drifted.set()
        admin.config_set(name, original)
        wait_for(lambda: not int(admin.info("persistence")["aof_rewrite_in_progress"]), "the AOF rewrite", timeout=20,
                 every=0.02, check=False)
        admin.close()
    for exc in errors:
        tally.violation(f"worker failed: {type(exc).__name__}: {exc}")
    outcomes = [r for rs in results for r in rs]
    tally.rounds = 1
    tally.injected = len(outcomes)
    tally.detected = sum(1 for r in outcomes if r != "accepted")
    tally.counters.update({f"commits {k}": outcomes.count(k) for k in sorted(set(outcomes))})
    accepted = outcomes.count("accepted")
    if accepted:
        tally.gaps.append(f"{accepted} of {len(outcomes)} commits after `{name} {value}` succeeded silently")
    tally.seconds = time.monotonic() - t0
    return tally


def config_check_cost(server: Any, n: int = 300) -> dict[str, float]:
    """p50 in ms of SET+WAITAOF, with and without a CONFIG GET of the four settings in the same
    pipeline (the cheap per-commit check a fix could add)."""
    client = server.client()
    keys = ("appendonly", "appendfsync", "maxmemory-policy", "no-appendfsync-on-rewrite")
    out: dict[str, float] = {}
    try:
        for label, extra in (("SET+WAITAOF", False), ("SET+WAITAOF+CONFIG GET", True)):
            samples = []
            for i in range(n):
                p = client.pipeline(transaction=False)
                p.execute_command("SET", "drift:cost:{x}", i)
                p.execute_command("WAITAOF", 1, 0, 1000)
                if extra:
                    p.execute_command("CONFIG GET", *keys)
                t = time.perf_counter()
                p.execute()
                samples.append((time.perf_counter() - t) * 1000)
            out[label] = statistics.median(samples)
        client.delete("drift:cost:{x}")
    finally:
        client.close()
    return out
