"""Server crash: ``kill -9`` of the server at random moments of a multi-process commit storm,
restart from its AOF, many rounds. After each round, for every run:

* every acknowledged commit is present (its generation is kept and holds exactly the acked
  state) or superseded (the head is past it);
* every kept generation verifies and ``load`` returns the head without falling back;
* no fence went backwards: the fence is at least every token ever handed out, and never
  lower than in the previous round;
* no generation number was acknowledged twice, and along the generations the fencing
  tokens never decrease (no stale writer got in).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from chaos_tools import Tally, finish, read_lines, restart_repairing_a_torn_tail, spawn, stopped

from redis_ckpt import CheckpointStore
from redis_ckpt.core.frame import decode_frame, decode_payload
from redis_ckpt.testing import wait_for

OWN_RUNS = 3
SHARED_WORKERS = 2


def server_crash(server: Any, *, rounds: int, workdir: Path, seed: int) -> Tally:
    """``server`` is a started LocalServer (durable config); it is killed and restarted."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    tally = Tally("server kill -9 during a commit storm", server.engine)
    ns = f"storm{seed % 10_000}"
    workers: list[tuple[str, str, Path]] = [(f"own-{i}", f"w{i}", workdir / f"own-{i}.log") for i in range(OWN_RUNS)]
    workers += [("shared", f"s{i}", workdir / f"shared-s{i}.log") for i in range(SHARED_WORKERS)]
    procs = [
        spawn("storm_worker", server.url, ns, run, owner, log, "own" if run.startswith("own") else "shared",
              rng.getrandbits(32), stderr=log.with_suffix(".stderr"))
        for run, owner, log in workers
    ]
    runs = sorted({run for run, _, _ in workers})
    last_fence = {r: 0 for r in runs}
    counted: dict[Path, int] = {log: 0 for _, _, log in workers}

    def acked() -> int:
        return sum(1 for _, _, log in workers for f in read_lines(log) if f[0] == "A")

    try:
        if not wait_for(lambda: acked() >= 20, "20 acknowledged commits", timeout=60, every=0.02, check=False):
            tally.violation(f"the workers acknowledged only {acked()} commits in 60 s before the first kill")
            return tally
        for _ in range(rounds):
            before = acked()
            time.sleep(rng.uniform(0.05, 0.6))  # land the kill at a random point of the storm
            server.kill()
            time.sleep(rng.uniform(0.0, 0.3))
            if restart_repairing_a_torn_tail(server):  # never an acknowledged write: checked below
                tally.count("torn AOF tails repaired (check-aof --fix)")
            tally.rounds += 1
            if not wait_for(lambda: acked() >= before + 15, "15 more commits", timeout=30, every=0.02, check=False):
                tally.violation(f"round {tally.rounds}: the workers made no progress after the restart")
                break
            dead = [(w, p) for w, p in zip(workers, procs) if p.poll() is not None]
            if dead:
                for (run, owner, _), p in dead:
                    tally.violation(f"worker {owner} of {run} died (exit {p.returncode}): {p.stderr_tail()}")
                break
            with stopped(procs):
                _verify_round(server, ns, runs, workers, last_fence, tally)
        with stopped(procs):
            _verify_round(server, ns, runs, workers, last_fence, tally)
    finally:
        results = finish(procs)
    for (run, owner, log), (code, err) in zip(workers, results):
        if code not in (0, -15):
            tally.violation(f"worker {owner} of {run} exited {code}: {err}")
        lines = read_lines(log)
        counted[log] = sum(1 for f in lines if f[0] == "A")
        tally.count("unconfirmed outcomes (not acknowledged)", sum(1 for f in lines if f[0] == "U"))
        tally.count("stale commits fenced", sum(1 for f in lines if f[0] == "F"))
        tally.count("tokens handed out", sum(1 for f in lines if f[0] == "T"))
    tally.acknowledged = sum(counted.values())
    tally.seconds = time.monotonic() - t0
    return tally


def _verify_round(server: Any, ns: str, runs: list[str], workers: list[tuple[str, str, Path]],
                  last_fence: dict[str, int], tally: Tally) -> None:
    # the ack files are read before the server: everything in them was acknowledged earlier
    logs: dict[str, list[list[str]]] = {r: [] for r in runs}
    for run, _, log in workers:
        logs[run] += read_lines(log)
    client = server.client()
    store = CheckpointStore(client, namespace=ns, keep=3)
    lost_before = tally.lost
    try:
        for run in runs:
            acks = [(int(f[1]), int(f[2]), int(f[3]), f[4]) for f in logs[run] if f[0] == "A"]
            tokens = [int(f[1]) for f in logs[run] if f[0] == "T"]
            info = store.info(run)
            gens = store.generations(run)
            bad = [(g.generation, g.reason, g.detail) for g in gens if not g.ok]
            tally.check(not bad, f"{run}: kept generations fail verification: {bad}")
            stored: dict[int, Any] = {}
            for g in gens:
                if g.ok:
                    header, payload = decode_frame(store.export_frame(run, generation=g.generation),
                                                   run_id=run, generation=g.generation)
                    stored[g.generation] = (header.token, decode_payload(header, payload))
            by_gen: dict[int, set[str]] = {}
            for gen, token, step, nonce in acks:
                by_gen.setdefault(gen, set()).add(nonce)
                if gen > info.generation:
                    tally.lost += 1
                    tally.violation(f"{run}: acknowledged generation {gen} is gone (head {info.generation})")
                elif gen in stored and stored[gen][1]["nonce"] != nonce:
                    tally.lost += 1
                    tally.violation(f"{run}: generation {gen} holds another commit than the one acknowledged")
            reused = {g: n for g, n in by_gen.items() if len(n) > 1}
            tally.check(not reused, f"{run}: generation numbers acknowledged twice: {sorted(reused)}")
            order = [t for _, t, _, _ in sorted(acks)]
            tally.check(order == sorted(order), f"{run}: a lower token committed after a higher one")
            kept_tokens = [stored[g][0] for g in sorted(stored)]
            tally.check(kept_tokens == sorted(kept_tokens), f"{run}: kept generations' tokens go down: {kept_tokens}")
            highest = max(tokens, default=0)
            tally.check(info.fence >= highest, f"{run}: fence {info.fence} is below token {highest} handed out")
            tally.check(info.fence >= last_fence[run], f"{run}: fence went back from {last_fence[run]} to {info.fence}")
            last_fence[run] = info.fence
            if info.generation:
                ck = store.load(run)
                tally.check(ck is not None and ck.generation == info.generation and not ck.skipped,
                            f"{run}: load returned {ck and ck.generation} (skipped {ck and ck.skipped}), "
                            f"head is {info.generation}")
    finally:
        store.close()
    if tally.lost > lost_before:
        tally.notes.append(f"round {tally.rounds}: {tally.lost - lost_before} acknowledged commits lost")

