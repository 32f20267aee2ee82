"""A history worker: competes for a few shared runs with short leases and logs every operation.

    python tests/workers/history_worker.py PORT NAMESPACE RUNS PROCESS LOG SEED TTL_MIN TTL_MAX SOCKET_TIMEOUT [DEDUP]

RUNS is a comma-separated list. PROCESS names this incarnation (and is its lease owner), LOG
is its JSON-lines history (``checker.HistoryLog``: a line when an operation is invoked, one
when it completes, flushed each time). The loop: pick a run, ``acquire`` it (ttl drawn from
[TTL_MIN, TTL_MAX] s), ``load`` it, commit 1-10 generations on top of what it loaded, now and
then ``renew``, now and then stall past the ttl (as a paused or slow worker would, so that it
gets fenced), then ``release`` or abandon the lease. After any outcome other than ok it
starts over with a new acquire and load (it learns what really happened).

Each committed state carries its commit id ``cid`` (``PROCESS-n``), the ``parent`` cid it was
built on, the writer and its token: a load, or the final contents, say exactly which commit
they hold. The worker's client has a socket timeout of SOCKET_TIMEOUT and no redis-py retry:
resends are the store's own (its RetryPolicy, with the commit id of the first attempt).

Outcomes: ``ok``; ``fail`` for a definite error (FencedError, ConflictError, LeaseHeldError,
LeaseLostError, ...: nothing written); ``unknown`` for StoreUnavailableError,
DurabilityError, any error with ``outcome_unknown=True``, or any untyped exception (its type
is logged as ``untyped:<name>``). SIGTERM ends it after the operation in flight. DEDUP "1": a
store with shared chunks, each state carrying a 100 KB base that every commit of the run shares.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "chaos"))  # checker.py

import redis  # noqa: E402
from checker import HistoryLog, digest  # noqa: E402
from redis.backoff import NoBackoff  # noqa: E402
from redis.retry import Retry  # noqa: E402

from lifetime import run_worker  # noqa: E402  (this script's folder is on sys.path)
from redis_ckpt import (  # noqa: E402
    CheckpointError,
    CheckpointStore,
    Durability,
    DurabilityError,
    NonDurableServerError,
    RetryPolicy,
    ServerError,
    StoreUnavailableError,
)

STOP = threading.Event()


def classify(exc: BaseException) -> tuple[str, dict[str, object]]:
    """(outcome, result) for an exception an operation raised."""
    name = type(exc).__name__
    if isinstance(exc, (StoreUnavailableError, DurabilityError)) or getattr(exc, "outcome_unknown", False) is True:
        return "unknown", {"error": name}
    if isinstance(exc, ServerError):
        return "fail", {"error": name, "message": str(exc)[:200]}
    if isinstance(exc, CheckpointError):
        fields = {k: getattr(exc, k) for k in ("token", "fence", "expected", "actual", "ms_left")
                  if isinstance(getattr(exc, k, None), int)}
        return "fail", {"error": name, **fields}
    return "unknown", {"error": f"untyped:{name}", "message": str(exc)[:200]}


class Worker:
    def __init__(self, port: int, namespace: str, runs: list[str], process: str, log: HistoryLog,
                 rng: random.Random, ttl: tuple[float, float], socket_timeout: float, dedup: bool = False) -> None:
        self.port, self.namespace, self.runs, self.process = port, namespace, runs, process
        self.dedup = dedup
        self.log, self.rng, self.ttl, self.socket_timeout = log, rng, ttl, socket_timeout
        self.seq = 0
        self.store = self.open_store()

    def open_store(self) -> CheckpointStore:
        """A store, once the server answers and the probe passes (it may be down, paused or loading)."""
        while not STOP.is_set():
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=self.socket_timeout,
                                 socket_connect_timeout=self.socket_timeout, retry=Retry(NoBackoff(), 0))
            try:
                return CheckpointStore(
                    client, namespace=self.namespace, keep=3, events_maxlen=1_000_000, dedup=self.dedup,
                    durability=Durability(timeout_ms=max(100, int(self.socket_timeout * 500))),
                    retry=RetryPolicy(attempts=4, deadline_s=3 * self.socket_timeout, initial_backoff_s=0.02,
                                      max_backoff_s=0.3),
                )
            except (StoreUnavailableError, NonDurableServerError, redis.RedisError, OSError):
                client.close()
                time.sleep(0.05)
        sys.exit(0)

    def op(self, kind: str, run: str, args: dict[str, object], call, describe=lambda v: {}):
        """Run ``call()`` as one logged operation: (True, value) or (False, None)."""
        i = self.log.invoke(kind, run, args)
        try:
            value = call()
        except Exception as exc:  # every outcome is logged; the history decides what it means
            outcome, result = classify(exc)
            self.log.complete(i, outcome, result)
            return False, None
        self.log.complete(i, "ok", describe(value))
        return True, value

    def session(self) -> None:
        rng = self.rng
        run = rng.choice(self.runs)
        ttl = rng.uniform(*self.ttl)
        ok, lease = self.op("acquire", run, {"owner": self.process, "ttl_ms": int(ttl * 1000)},
                            lambda: self.store.acquire(run, owner=self.process, ttl=ttl),
                            lambda le: {"token": le.token, "generation": le.generation, "kind": le.kind})
        if not ok:
            time.sleep(rng.uniform(0, 0.05))
            return
        ok, ck = self.op("load", run, {"token": lease.token}, lambda: self.store.load(run), loaded)
        if not ok:
            return
        expected = ck.generation if ck else 0
        parent = ck.state.get("cid") if ck and isinstance(ck.state, dict) else None
        for _ in range(rng.randint(1, 10)):
            if STOP.is_set():
                return
            if rng.random() < 0.2:
                ok, _ = self.op("renew", run, {"token": lease.token, "ttl_ms": lease.ttl_ms}, lease.renew)
                if not ok:
                    return
            if rng.random() < 0.02:  # a stall past the lease: a newer holder may fence this one
                time.sleep(ttl * rng.uniform(0.8, 2.0))
            self.seq += 1
            state = {"cid": f"{self.process}-{self.seq}", "parent": parent, "writer": self.process,
                     "token": lease.token, "pad": rng.randbytes(rng.randint(16, 256))}
            if self.dedup:
                state["base"] = random.Random(run).randbytes(100_000)
            args = {"token": lease.token, "expected": expected, "cid": state["cid"], "parent": parent,
                    "digest": digest(state)}
            ok, generation = self.op("commit", run, args, lambda: self.store.commit(
                run, state, token=lease.token, expected_generation=expected, owner=self.process),
                lambda g: {"generation": g})
            if not ok:
                return
            expected, parent = generation, state["cid"]
            time.sleep(rng.uniform(0, 0.01))
        if rng.random() < 0.75:
            self.op("release", run, {"token": lease.token}, lease.release, lambda r: {"released": bool(r)})
        time.sleep(rng.uniform(0, 0.03))

    def loop(self) -> None:
        while not STOP.is_set():
            self.session()


def loaded(ck) -> dict[str, object]:
    if ck is None:
        return {"generation": 0}
    state = ck.state if isinstance(ck.state, dict) else {}
    return {"generation": ck.generation, "head": ck.head_generation, "token": ck.token,
            "cid": state.get("cid"), "digest": digest(ck.state),
            "skipped": [f"{s.generation}:{s.reason}" for s in ck.skipped]}



def main(port: str, namespace: str, runs: str, process: str, log_path: str, seed: str,
         ttl_min: str, ttl_max: str, socket_timeout: str, dedup: str = "0") -> int:
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    log = HistoryLog(log_path, process)
    worker = Worker(int(port), namespace, runs.split(","), process, log, random.Random(int(seed)),
                    (float(ttl_min), float(ttl_max)), float(socket_timeout), dedup == "1")
    worker.loop()
    log.close()
    return 0


if __name__ == "__main__":
    run_worker(main, 10)
