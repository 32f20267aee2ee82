"""History mode of the fault suite: workers log every operation, a nemesis injects faults on a
seeded schedule, and :mod:`checker` verifies the whole history against the store's final contents.

* ``workers`` processes (``tests/workers/history_worker.py``) compete for ``runs`` shared runs with
  leases of ``ttl`` seconds, each logging acquire / load / commit / renew / release with invoke
  and complete times, arguments and outcome;
* the nemesis, driven by ``seed``: ``kill -9`` of the server and a restart on the same data
  directory (AOF), SIGSTOP/SIGCONT of the server (up to 2.5x the workers' socket timeout),
  ``kill -9`` of a worker (restarted as a new process), SIGSTOP of a worker past its lease,
  ``BGREWRITEAOF``, and ``delete`` of a run by an admin (logged as an operation of process
  ``admin``). Every fault is logged with its start and end time (``faults.jsonl``);
* at the end the faults are healed, the workers run on for a moment and stop, and the run's
  kept generations, fence and delete events are read back for the checker.

:func:`run_history` returns a :class:`HistoryResult` whose ``report`` holds the figures.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import checker
from chaos_tools import Worker, restart_repairing_a_torn_tail, spawn

from redis_ckpt import CheckpointError, CheckpointStore
from redis_ckpt.core.dedup import is_manifest, read_manifest
from redis_ckpt.core.frame import decode_frame, decode_payload
from redis_ckpt.core.keys import RunKeys
from redis_ckpt.testing import wait_for

#: fault -> weight in the nemesis's draw
FAULTS: dict[str, int] = {
    "server kill -9": 2,
    "server SIGSTOP": 3,
    "worker kill -9": 2,
    "worker SIGSTOP": 3,
    "BGREWRITEAOF": 1,
    "delete": 1,
}


@dataclass(frozen=True)
class HistoryConfig:
    seconds: float = 8.0
    workers: int = 4
    runs: int = 3
    ttl: tuple[float, float] = (0.5, 2.0)
    socket_timeout: float = 1.0
    faults: tuple[str, ...] = tuple(FAULTS)
    #: seconds between two faults (drawn uniformly)
    gap: tuple[float, float] = (0.1, 0.6)
    #: the workers' stores keep shared chunks (dedup=True; issue 16)
    dedup: bool = False


@dataclass
class HistoryResult:
    engine: str
    seed: int
    config: HistoryConfig
    report: checker.Report
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)  # the harness's own trouble (a worker crashed, ...)
    directory: Path | None = None
    #: whether the store recognises a resend that had applied before a takeover (issue 11 #1);
    #: None when not probed
    resend_recognised: bool | None = None

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.problems

    def summary(self) -> str:
        return (f"history [{self.engine}] seed {self.seed}, {self.seconds:.1f} s: {self.report.summary()}"
                + (f"; problems: {self.problems}" if self.problems else ""))


class Nemesis:
    def __init__(self, server: Any, workdir: Path, namespace: str, runs: list[str], cfg: HistoryConfig,
                 rng: random.Random) -> None:
        self.server, self.workdir, self.ns, self.runs, self.cfg, self.rng = server, workdir, namespace, runs, cfg, rng
        self.faults_log = open(workdir / "faults.jsonl", "a", buffering=1, encoding="utf-8")
        self.admin_log = checker.HistoryLog(workdir / "admin.jsonl", "admin")
        self.procs: dict[int, Worker] = {}
        self.incarnation: dict[int, int] = {}
        self.paused: dict[int, float] = {}  # worker slot -> when to SIGCONT it
        self.problems: list[str] = []
        self.deletes = 0

    # -- workers

    def spawn(self, slot: int) -> None:
        inc = self.incarnation.get(slot, -1) + 1
        self.incarnation[slot] = inc
        name = f"w{slot}.{inc}"
        log = self.workdir / f"{name}.jsonl"
        self.procs[slot] = spawn(
            "history_worker", self.server.port, self.ns, ",".join(self.runs), name, log, self.rng.getrandbits(32),
            self.cfg.ttl[0], self.cfg.ttl[1], self.cfg.socket_timeout, int(self.cfg.dedup),
            stderr=self.workdir / f"{name}.stderr")

    def reap(self) -> None:
        """A worker that died on its own is a problem of the harness or the store: note it, start another."""
        for slot, p in list(self.procs.items()):
            if p.poll() is not None:
                self.problems.append(f"worker w{slot}.{self.incarnation[slot]} exited {p.returncode}: "
                                     f"{p.stderr_tail()[-600:]}")
                self.spawn(slot)

    def resume_due(self, now: float, every: bool = False) -> None:
        for slot, at in list(self.paused.items()):
            if every or now >= at:
                self.procs[slot].send_signal(signal.SIGCONT)
                del self.paused[slot]
                self.fault_end("worker SIGSTOP", slot=slot)

    # -- logging

    def fault(self, kind: str, **details: Any) -> None:
        self.faults_log.write(json.dumps({"kind": kind, "t": time.monotonic_ns(), **details}) + "\n")

    def fault_end(self, kind: str, **details: Any) -> None:
        self.faults_log.write(json.dumps({"end": kind, "t": time.monotonic_ns(), **details}) + "\n")

    # -- faults

    def inject(self, kind: str) -> None:
        rng, s = self.rng, self.server
        if kind == "server kill -9":
            self.fault(kind)
            s.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            torn = restart_repairing_a_torn_tail(s)  # a torn tail is never an acknowledged write
            self.fault_end(kind, **({"torn_tail_bytes_dropped": torn} if torn else {}))
        elif kind == "server SIGSTOP":
            pause = rng.uniform(0.2, 2.5) * self.cfg.socket_timeout
            self.fault(kind, seconds=round(pause, 3))
            pid = s.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                time.sleep(pause)
            finally:
                os.kill(pid, signal.SIGCONT)
            self.fault_end(kind)
        elif kind == "worker kill -9":
            slot = rng.randrange(self.cfg.workers)
            p = self.procs[slot]
            self.fault(kind, process=f"w{slot}.{self.incarnation[slot]}")
            p.kill()
            p.wait()
            self.paused.pop(slot, None)
            self.spawn(slot)
            self.fault_end(kind, slot=slot)
        elif kind == "worker SIGSTOP":
            free = [slot for slot in self.procs if slot not in self.paused]
            if not free:
                return
            slot = rng.choice(free)
            pause = rng.uniform(0.5, 2.0) * self.cfg.ttl[1]
            self.fault(kind, process=f"w{slot}.{self.incarnation[slot]}", seconds=round(pause, 3))
            self.procs[slot].send_signal(signal.SIGSTOP)
            self.paused[slot] = time.monotonic() + pause
        elif kind == "BGREWRITEAOF":
            c = s.client(socket_timeout=5)
            try:
                self.fault(kind)
                try:
                    c.bgrewriteaof()
                except Exception as exc:  # one already running: the fault is still a rewrite under load
                    self.fault_end(kind, note=f"{type(exc).__name__}: {exc}")
                    return
                self.fault_end(kind)
            finally:
                c.close()
        elif kind == "delete":
            self.delete(rng.choice(self.runs))
        else:  # pragma: no cover
            raise ValueError(kind)

    def delete(self, run: str) -> None:
        """An admin deletes a run: logged as an operation; an unknown outcome is settled at the end
        from the run's audit stream (the ``by`` tag is unique)."""
        self.deletes += 1
        by = f"nemesis-{self.deletes}"
        self.fault("delete", run=run, by=by)
        i = self.admin_log.invoke("delete", run, {"by": by})
        try:
            store = CheckpointStore(self.server.client(socket_timeout=5), namespace=self.ns, events_maxlen=1_000_000)
        except CheckpointError as exc:
            self.admin_log.complete(i, "unknown", {"error": type(exc).__name__})
            return
        try:
            store.delete(run, by=by)
            done = time.monotonic_ns()
            # delete() returns how many generations went; its audit event names the new fence
            ev = next((e for e in store.events(run, count=1000) if e.kind == "delete" and e.fields.get("by") == by), None)
            if ev is None:
                self.admin_log.complete(i, "unknown", {"error": "no delete event"}, t=done)
            else:
                self.admin_log.complete(i, "ok", {"fence": int(ev.fields["fence"]),
                                                  "generations": int(ev.fields["generations"])}, t=done)
        except CheckpointError as exc:
            outcome, result = ("unknown", {"error": type(exc).__name__}) \
                if getattr(exc, "outcome_unknown", True) else ("fail", {"error": type(exc).__name__})
            self.admin_log.complete(i, outcome, result)
        finally:
            store.close()
        self.fault_end("delete", run=run)

    def close(self) -> None:
        self.faults_log.close()
        self.admin_log.close()


def run_history(server: Any, workdir: Path, *, seed: int, config: HistoryConfig | None = None) -> HistoryResult:
    """Run the history mode against ``server`` (a started, durable LocalServer) and check it."""
    cfg = config or HistoryConfig()
    t0 = time.monotonic()
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    ns = f"hist{seed % 100_000}"
    runs = [f"r{i}" for i in range(cfg.runs)]
    nemesis = Nemesis(server, workdir, ns, runs, cfg, rng)
    weights = {k: FAULTS[k] for k in cfg.faults}
    try:
        for slot in range(cfg.workers):
            nemesis.spawn(slot)

        def commits() -> int:
            return sum(p.read_text().count('"o":"ok","result":{"generation"') for p in workdir.glob("w*.jsonl"))

        if not wait_for(lambda: commits() >= 5, "5 commits", timeout=60, every=0.02, check=False):
            nemesis.problems.append("the workers committed nothing within 60 s of starting")
        end = time.monotonic() + cfg.seconds
        next_fault = time.monotonic() + rng.uniform(*cfg.gap)
        while time.monotonic() < end:
            now = time.monotonic()
            nemesis.resume_due(now)
            nemesis.reap()
            if now >= next_fault:
                kind = rng.choices(list(weights), weights=list(weights.values()))[0]
                nemesis.inject(kind)
                next_fault = time.monotonic() + rng.uniform(*cfg.gap)
            time.sleep(0.01)
        # heal: every worker runs, the server answers; a quiet moment lets the workers recover
        nemesis.resume_due(0, every=True)
        nemesis.reap()
        time.sleep(max(1.0, 2 * cfg.socket_timeout))
        nemesis.reap()
    finally:
        nemesis.resume_due(0, every=True)
        for p in nemesis.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in nemesis.procs.values():
            try:
                p.wait(timeout=6 * cfg.socket_timeout + 5)
            except Exception:
                p.kill()
                p.wait()
        nemesis.close()
    for slot, p in nemesis.procs.items():
        if p.returncode not in (0, -signal.SIGTERM):
            nemesis.problems.append(f"worker w{slot}.{nemesis.incarnation[slot]} ended with {p.returncode}: "
                                    f"{p.stderr_tail()[-600:]}")
    final = read_final(server, ns, runs)
    if cfg.dedup:
        nemesis.problems += shared_chunk_problems(server, ns, runs)
    ops = checker.read_history(workdir)
    faults = [f for f in map(json.loads, (workdir / "faults.jsonl").read_text().splitlines()) if "kind" in f]
    report = checker.check(ops, final, faults)
    (workdir / "final.json").write_text(json.dumps(final, indent=1))
    (workdir / "report.json").write_text(json.dumps(report.as_dict(), indent=1))
    result = HistoryResult(server.engine, seed, cfg, report, problems=nemesis.problems, directory=workdir)
    result.seconds = time.monotonic() - t0
    return result


def shared_chunk_problems(server, namespace: str, runs: list[str]) -> list[str]:
    """Each run's x:refs against its kept manifests, and chunks none of them lists."""
    client, problems = server.client(), []
    for run in runs:
        k = RunKeys(namespace, run)
        kept = [int(e.partition(":")[0]) for e in (client.hget(k.head, "kept") or b"").decode().split(",") if e]
        expected: dict[str, int] = {}
        for g in kept:
            blob = client.get(k.generation(g))
            if is_manifest(blob):
                for a in set(read_manifest(blob, run_id=run, generation=g).addresses):
                    expected[a] = expected.get(a, 0) + 1
        refs = {a.decode(): int(n) for a, n in client.hgetall(k.refs).items()}
        chunks = {key.decode() for key in client.scan_iter(f"{k.base}:x:*", count=1000)} - {k.refs}
        if refs != expected:
            problems.append(f"{run}: x:refs {len(refs)} fields, the kept manifests list {len(expected)}")
        if chunks != {k.shared(a) for a in expected}:
            problems.append(f"{run}: {len(chunks)} chunk keys, {len(expected)} listed by kept generations")
    return problems


def read_final(server: Any, namespace: str, runs: list[str]) -> dict[str, dict[str, Any]]:
    """What the store holds at the end, run by run, in the form :func:`checker.check` takes."""
    store = CheckpointStore(server.client(socket_timeout=30), namespace=namespace, events_maxlen=1_000_000)
    out: dict[str, dict[str, Any]] = {}
    try:
        for run in runs:
            info = store.info(run)
            kept, damaged = [], []
            for g in store.generations(run):
                if not g.ok:
                    damaged.append(f"kept generation {g.generation} fails verification: {g.reason} {g.detail}")
                    continue
                header, payload = decode_frame(store.export_frame(run, generation=g.generation),
                                               run_id=run, generation=g.generation)
                state = decode_payload(header, payload)
                kept.append({"generation": g.generation, "token": header.token,
                             "cid": state.get("cid") if isinstance(state, dict) else None,
                             "digest": checker.digest(state)})
            deletes = {e.fields.get("by", ""): int(e.fields["fence"])
                       for e in store.events(run, count=1_000_000) if e.kind == "delete"}
            out[run] = {"fence": info.fence, "generation": info.generation, "kept": kept,
                        "damaged": damaged, "deletes": deletes}
    finally:
        store.close()
    return out


def resend_after_takeover_recognised(server: Any) -> bool:
    """Whether the store answers a resent commit that had applied with its generation even after
    another worker took the run over (issue 11 #1), rather than with FencedError.

    Replays the case directly: commit with a known commit id, revoke (as a takeover does: the
    fence rises), resend the same commit id with the same token. Used by the short form to tell
    the known anomaly of check (e) on a store without that fix from a new one.
    """
    store = CheckpointStore(server.client(), namespace="resend-probe")
    run = f"probe-{random.getrandbits(32):08x}"
    try:
        lease = store.acquire(run, owner="first", ttl=60)

        def commit() -> int:
            return store.run(store.core.commit_flow(run, {"probe": 1}, token=lease.token, expected_generation=0,
                                                      owner="first", commit_id=f"{run}-cid"))

        commit()
        store.revoke(run)
        try:
            return commit() == 1
        except CheckpointError:
            return False
    finally:
        try:
            store.delete(run)
        finally:
            store.close()
