"""A chaos worker: commits without end while the server is killed and restarted under it.

    python tests/workers/storm_worker.py URL NAMESPACE RUN OWNER LOG MODE SEED

MODE ``own``: the worker is the only writer of RUN and keeps its lease (re-acquiring, same
owner, after every outcome it cannot be sure of). MODE ``shared``: several workers compete
for RUN with a short lease; a holder commits a few times, then releases or abandons the
lease (the next one takes over after the TTL), and now and then commits once more with
the abandoned lease (it must be fenced if someone took over meanwhile).

Every line of LOG is appended and fsynced *after* the store returned:

    T <token>                                  a token acquire() handed out
    A <generation> <token> <step> <nonce>      an acknowledged commit
    U <kind>                                   an outcome the store could not confirm
    F <token> <fence>                          a commit rejected as fenced
    C <expected> <actual>                      a commit rejected as a conflict

It runs until SIGTERM. An unexpected exception ends it with exit code 3 and the traceback.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

from lifetime import run_worker  # this script's folder is on sys.path
from redis_ckpt import (
    CheckpointStore,
    ConflictError,
    Durability,
    DurabilityError,
    FencedError,
    LeaseHeldError,
    LeaseLostError,
    NonDurableServerError,
    RetryPolicy,
    StoreUnavailableError,
)

UNSURE = (StoreUnavailableError, DurabilityError)


class Log:
    def __init__(self, path: str) -> None:
        self.fh = open(path, "a", buffering=1)

    def write(self, *fields: object) -> None:
        self.fh.write(" ".join(map(str, fields)) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())


def open_store(url: str, namespace: str) -> CheckpointStore:
    """A store, once the server answers and the probe passes (it may be down or loading)."""
    while True:
        try:
            return CheckpointStore.from_url(
                url, namespace=namespace, keep=3, durability=Durability(timeout_ms=3000),
                retry=RetryPolicy(attempts=3, deadline_s=1.5, initial_backoff_s=0.02, max_backoff_s=0.2),
            )
        except (StoreUnavailableError, NonDurableServerError):
            time.sleep(0.05)


def acquire(store: CheckpointStore, run: str, owner: str, ttl: float, log: Log):
    while True:
        try:
            lease = store.acquire(run, owner=owner, ttl=ttl)
        except LeaseHeldError:
            time.sleep(0.02)
            continue
        except UNSURE:
            log.write("U", "acquire")
            time.sleep(0.02)
            continue
        log.write("T", lease.token)
        return lease


def load_step(lease) -> int:
    ck = lease.load()
    return int(ck.state["step"]) if ck else 0


def commit(lease, step: int, owner: str, log: Log, rng: random.Random) -> str:
    """One commit: "ok", or what went wrong."""
    nonce = f"{rng.getrandbits(48):012x}"
    try:
        generation = lease.commit({"step": step, "owner": owner, "nonce": nonce, "pad": b"p" * 64})
    except UNSURE as exc:
        log.write("U", type(exc).__name__)
        return "unsure"
    except FencedError as exc:
        log.write("F", exc.token, exc.fence)
        return "fenced"
    except ConflictError as exc:
        log.write("C", exc.expected, exc.actual)
        return "conflict"
    log.write("A", generation, lease.token, step, nonce)
    return "ok"


def run_own(store: CheckpointStore, run: str, owner: str, log: Log, rng: random.Random) -> None:
    while True:
        try:
            lease = acquire(store, run, owner, 30.0, log)
            step = load_step(lease)
            while True:
                step += 1
                if commit(lease, step, owner, log, rng) != "ok":
                    break  # re-acquire and re-load: learn what really happened
        except UNSURE:
            log.write("U", "load")
            time.sleep(0.02)


def run_shared(store: CheckpointStore, run: str, owner: str, log: Log, rng: random.Random) -> None:
    ttl = 0.3
    while True:
        try:
            lease = acquire(store, run, owner, ttl, log)
            step = load_step(lease)
            outcome = "ok"
            for _ in range(rng.randint(2, 8)):
                step += 1
                outcome = commit(lease, step, owner, log, rng)
                if outcome != "ok":
                    break
            if outcome == "ok" and rng.random() < 0.5:
                try:
                    lease.release()
                except UNSURE:
                    log.write("U", "release")
            else:  # abandon it; sometimes write once more after the TTL, as a paused worker would
                time.sleep(ttl * rng.uniform(0.5, 2.0))
                if outcome == "ok" and rng.random() < 0.5:
                    commit(lease, step + 1, owner, log, rng)
            time.sleep(rng.uniform(0, 0.05))
        except UNSURE:
            log.write("U", "load")
            time.sleep(0.02)
        except LeaseLostError:
            pass


def main(url: str, namespace: str, run: str, owner: str, log_path: str, mode: str, seed: str) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    rng = random.Random(int(seed))
    log = Log(log_path)
    store = open_store(url, namespace)
    (run_own if mode == "own" else run_shared)(store, run, owner, log, rng)
    return 0


if __name__ == "__main__":
    run_worker(main, 7)
