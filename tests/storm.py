"""A commit storm through failovers, shared by the Cluster and the Sentinel suites: threads commit
to their runs while a primary is killed with ``kill -9`` and its replica promoted; afterwards
every acknowledged commit and every fencing token must still be there."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redis_ckpt import CheckpointStore, ConflictError, DurabilityError, FencedError, LeaseHeldError, StoreUnavailableError
from redis_ckpt.testing import LocalServer, wait_for


@dataclass
class RunLog:
    run: str
    tokens: list[int] = field(default_factory=list)
    acked: list[tuple[int, int, int, float]] = field(default_factory=list)  # generation, token, step, when
    errors: list[str] = field(default_factory=list)


def storm_worker(store: CheckpointStore, log: RunLog, stop: threading.Event, crashed: list[BaseException]) -> None:
    """Commit a counter to one run; re-acquire (new token) every 5 commits and after any error.
    Records every token acquire handed out and every commit acknowledged."""
    step = 0
    lease = None
    try:
        while not stop.is_set():
            try:
                if lease is None:
                    lease = store.acquire(log.run, owner=f"owner-{log.run}", ttl=30)
                    log.tokens.append(lease.token)
                step += 1
                g = lease.commit({"run": log.run, "step": step, "token": lease.token})
                log.acked.append((g, lease.token, step, time.monotonic()))
                if step % 5 == 0:
                    lease.release()
                    lease = None
            except (DurabilityError, StoreUnavailableError, FencedError, ConflictError, LeaseHeldError) as exc:
                log.errors.append(f"{type(exc).__name__}: {exc}")
                lease = None
                time.sleep(0.05)
    except BaseException as exc:  # anything else fails the test (reported by the main thread)
        crashed.append(exc)


def verify(store: CheckpointStore, logs: list[RunLog], highest_fence: dict[str, int]) -> None:
    for log in logs:
        assert log.acked, f"{log.run}: nothing acknowledged"
        assert len(set(log.tokens)) == len(log.tokens), f"{log.run}: a token was handed out twice: {log.tokens}"
        assert log.tokens == sorted(log.tokens), f"{log.run}: tokens went backwards: {log.tokens}"
        gens = [a[0] for a in log.acked]
        assert gens == sorted(set(gens)), f"{log.run}: a generation was acknowledged twice"
        info = store.info(log.run)
        last_g, last_token, last_step, _ = log.acked[-1]
        assert info.generation >= last_g, f"{log.run}: acknowledged generation {last_g} lost (head {info.generation})"
        assert info.fence >= max(log.tokens) >= highest_fence.get(log.run, 0), f"{log.run}: the fence went backwards"
        highest_fence[log.run] = info.fence
        ck = store.load(log.run)
        assert ck is not None and not ck.skipped
        if ck.generation == last_g:
            assert ck.state == {"run": log.run, "step": last_step, "token": last_token}
        else:
            assert ck.state["step"] > last_step


def storm_through_failovers(
    store: CheckpointStore,
    runs: Sequence[str],
    *,
    choose: Callable[[], tuple[LocalServer, LocalServer, list[str]]],
    promoted: Callable[[LocalServer], bool],
    heal: Callable[[LocalServer, LocalServer], None],
    rounds: int = 2,
) -> None:
    """``rounds`` times: storm, ``kill -9`` the primary ``choose()`` names (with its heir and
    the runs it serves), wait until ``promoted(heir)``, ``heal(victim, heir)`` (restart it as a
    replica, wait for a settled topology), storm on; then verify every run. The runs on the
    victim must show a pause across the kill and progress after it; no token is handed out
    twice across rounds."""
    highest: dict[str, int] = {}
    all_tokens: dict[str, list[int]] = {r: [] for r in runs}
    for _ in range(rounds):
        logs = [RunLog(r) for r in runs]
        stop, crashed = threading.Event(), []
        threads = [threading.Thread(target=storm_worker, args=(store, lg, stop, crashed)) for lg in logs]
        for t in threads:
            t.start()
        victim, heir, hit = choose()
        wait_for(lambda: all(len(lg.acked) >= 3 for lg in logs), "every run to commit before the kill")
        victim.kill()  # kill -9 in the middle of the storm
        killed_at = time.monotonic()
        wait_for(lambda: promoted(heir), "the replica's promotion", timeout=30, every=0.1)
        heal(victim, heir)
        wait_for(lambda: all(sum(a[3] > killed_at for a in lg.acked) >= 3 for lg in logs),
                 "every run to commit again after the failover", timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not crashed, crashed
        assert all(not t.is_alive() for t in threads)
        for lg in logs:
            if lg.run in hit:  # the kill hit live traffic on that primary: a pause, then progress
                times = [a[3] for a in lg.acked]
                assert times[0] < killed_at < times[-1]
        verify(store, logs, highest)
        for lg in logs:
            all_tokens[lg.run].extend(lg.tokens)
    for r, tokens in all_tokens.items():
        assert len(set(tokens)) == len(tokens), f"{r}: a token was handed out twice across rounds"
