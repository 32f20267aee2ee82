"""Worker faults: a worker paused past its lease, a worker killed between its commit script
and the WAITAOF reply, and a connection cut in the middle of a commit.

* **paused (SIGSTOP) past the lease**: while it is frozen another worker takes over and
  commits; once resumed, the stale worker's next commit is fenced (``FencedError``), a
  ``fenced`` event names it, and no generation after the takeover carries its token.
* **killed between Lua and WAITAOF**: a proxy holds back the replies of one commit after the
  server applied it, and the worker is ``kill -9``ed. The successor finds that commit either
  complete or absent (here: complete, it was applied and fsynced), never half; it survives a
  server ``kill -9``; its token is above the dead worker's; nothing is applied twice.
* **network cut mid-commit**: the proxy closes the connection after the commit reached the
  server (reply lost) or before (request lost). The store's retry carries the same commit id,
  so the commit is applied exactly once and the retry is recorded as ``commit_retry``.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

from chaos_tools import FaultProxy, Tally, read_lines, spawn

from redis_ckpt import CheckpointStore, LeaseHeldError
from redis_ckpt.drivers.scripts import SCRIPTS
from redis_ckpt.testing import wait_for

COMMIT_SHA = SCRIPTS.sha("commit").encode()


def _acks(log: Path) -> list[list[str]]:
    return [f for f in read_lines(log) if f[0] == "A"]


def _take_over(store: CheckpointStore, run: str, owner: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return store.acquire(run, owner=owner, ttl=30)
        except LeaseHeldError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def paused_worker(server: Any, *, rounds: int, workdir: Path, seed: int) -> Tally:
    t0 = time.monotonic()
    rng = random.Random(seed)
    tally = Tally("worker SIGSTOPped past its lease, another takes over", server.engine)
    store = CheckpointStore(server.client(), namespace="pause", keep=3)
    ttl_ms = 300
    try:
        for rnd in range(rounds):
            run, log = f"pause-{seed}-{rnd}", workdir / f"pause-{rnd}.log"
            proc = spawn("committer", server.url, "pause", run, "stale", ttl_ms, log, stderr=log.with_suffix(".stderr"))
            try:
                if not wait_for(lambda: len(_acks(log)) >= 3, "3 acknowledged commits", timeout=30, every=0.02, check=False):
                    tally.violation(f"round {rnd}: the worker did not commit: {proc.stderr_tail()}")
                    continue
                time.sleep(rng.uniform(0, 0.05))
                proc.send_signal(signal.SIGSTOP)  # at a random point of its commit loop
                tally.rounds += 1
                time.sleep(ttl_ms / 1000 * 1.5)
                successor = _take_over(store, run, "successor")
                took_over_at = successor.generation
                mine = [successor.commit({"step": 1000 + i, "owner": "successor"}) for i in range(2)]
                proc.send_signal(signal.SIGCONT)
                code = proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            lines = read_lines(log)
            stale_token = int(next(f[1] for f in lines if f[0] == "T"))
            acked = [(int(f[1]), int(f[2])) for f in lines if f[0] == "A"]
            tally.acknowledged += len(acked) + len(mine)
            fenced = [f for f in lines if f[0] == "F"]
            if tally.check(code == 10 and len(fenced) == 1, f"round {rnd}: the resumed worker exited {code}, "
                           f"not fenced: {proc.stderr_tail()}"):
                tally.check((int(fenced[0][1]), int(fenced[0][2])) == (stale_token, successor.token),
                            f"round {rnd}: fenced with {fenced[0]}, expected token {stale_token} / fence {successor.token}")
            tally.injected += 1
            events = store.events(run, count=50)
            if tally.check(any(e.kind == "fenced" and e.fields.get("token") == str(stale_token) for e in events),
                           f"round {rnd}: no 'fenced' event for token {stale_token}"):
                tally.detected += 1
            tally.check(any(e.kind == "takeover" and e.fields.get("owner") == "successor" for e in events),
                        f"round {rnd}: no 'takeover' event")
            late = [g for g, t in acked if g > took_over_at]
            tally.check(not late, f"round {rnd}: the stale worker's commits {late} landed after the takeover")
            for g in store.generations(run):
                tally.check(g.ok, f"round {rnd}: generation {g.generation} fails: {g.reason}")
                if g.generation > took_over_at:
                    tally.check(g.token == successor.token, f"round {rnd}: generation {g.generation} after the "
                                f"takeover has token {g.token}, not the successor's {successor.token}")
            ck = store.load(run)
            tally.check(ck.generation == mine[-1] and ck.state == {"step": 1001, "owner": "successor"},
                        f"round {rnd}: the successor's state was overwritten: {ck.generation} {ck.state}")
            tally.lost += sum(1 for g in mine if g > ck.generation)
            tally.count("commits fenced", len(fenced))
    finally:
        store.close()
    tally.seconds = time.monotonic() - t0
    return tally


def killed_before_confirmation(server: Any, *, rounds: int, workdir: Path, seed: int) -> Tally:
    t0 = time.monotonic()
    tally = Tally("worker kill -9 between the commit script and WAITAOF", server.engine)
    store = CheckpointStore(server.client(), namespace="halfway", keep=3)
    ttl_ms = 300
    try:
        with FaultProxy(server.port) as proxy:
            url = f"redis://127.0.0.1:{proxy.port}/0"
            for rnd in range(rounds):
                run, log = f"halfway-{seed}-{rnd}", workdir / f"halfway-{rnd}.log"
                proc = spawn("committer", url, "halfway", run, "doomed", ttl_ms, log, stderr=log.with_suffix(".stderr"))
                try:
                    if not wait_for(lambda: len(_acks(log)) >= 3, "3 acknowledged commits", timeout=30, every=0.02, check=False):
                        tally.violation(f"round {rnd}: the worker did not commit")
                        continue
                    proxy.arm("hold", COMMIT_SHA)
                    if not proxy.triggered.wait(10):
                        tally.violation(f"round {rnd}: no commit went through the proxy")
                        continue
                    proc.kill()  # the script ran on the server; the worker never saw the reply
                    proc.wait()
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    proxy.release()
                tally.rounds += 1
                tally.injected += 1
                acked = [(int(f[1]), int(f[2]), int(f[3])) for f in _acks(log)]
                dead_token = int(next(f[1] for f in read_lines(log) if f[0] == "T"))
                tally.acknowledged += len(acked)
                last_gen, _, last_step = acked[-1]
                server.kill()  # the applied commit was fsynced before its reply: it survives a crash
                server.restart()
                store.close()
                store = CheckpointStore(server.client(), namespace="halfway", keep=3)
                successor = _take_over(store, run, "successor")
                ck = store.load(run)
                if tally.check(ck.generation == last_gen + 1 and ck.state == {"step": last_step + 1, "owner": "doomed"}
                               and not ck.skipped,
                               f"round {rnd}: the unconfirmed commit is not there whole: {ck.generation} {ck.state}"):
                    tally.detected += 1
                tally.check(successor.token > dead_token and successor.generation == ck.generation,
                            f"round {rnd}: successor token {successor.token} / generation {successor.generation}")
                g = successor.commit({"step": last_step + 2, "owner": "successor"})
                tally.acknowledged += 1
                tally.check(g == last_gen + 2, f"round {rnd}: the successor's commit got generation {g}")
                # commits are recorded by the head (commit events only mark its creation): each
                # kept generation holds its own commit, none applied twice
                head = store.info(run).head
                ids = head.get("kept_ids", "").split(",")
                tally.check(len(ids) == len(set(ids)), f"round {rnd}: a commit applied twice: {head.get('kept')} {ids}")
                tally.lost += sum(1 for a in acked if a[0] > store.info(run).generation)
    finally:
        store.close()
    tally.notes.append("the unconfirmed commit was found complete after the worker's death and a server kill -9")
    tally.seconds = time.monotonic() - t0
    return tally


def network_cut(server: Any, *, rounds: int, seed: int) -> Tally:
    t0 = time.monotonic()
    rng = random.Random(seed)
    tally = Tally("connection cut mid-commit (retry with the same commit id)", server.engine)
    admin = CheckpointStore(server.client(), namespace="cut", keep=3)
    with FaultProxy(server.port) as proxy:
        store = CheckpointStore.from_url(f"redis://127.0.0.1:{proxy.port}/0", namespace="cut", keep=3)
        try:
            run = f"cut-{seed}"
            lease = store.acquire(run, owner="w", ttl=60)
            lease.commit({"warm-up": True})  # loads the script: a NOSCRIPT reply is not the cut we mean
            for rnd in range(rounds):
                rule = rng.choice(["cut-after", "cut-before"])
                state = {"round": rnd, "nonce": rng.getrandbits(40)}
                before = admin.info(run).generation
                proxy.arm(rule, COMMIT_SHA)
                g = lease.commit(state)
                tally.rounds += 1
                tally.acknowledged += 1
                tally.injected += 1
                tally.check(proxy.triggered.is_set(), f"round {rnd}: the {rule} fault did not fire")
                info = admin.info(run)
                tally.check(g == before + 1 == info.generation, f"round {rnd} ({rule}): generation {g}, "
                            f"head {info.generation}, before {before}")
                events = admin.events(run, count=20)
                this = [e for e in events if e.fields.get("commit_id") == info.head.get("commit_id")]
                retried = [e for e in this if e.kind == "commit_retry"]
                applied = info.head.get("kept_ids", "").split(",").count(info.head.get("commit_id"))
                tally.check(applied == 1, f"round {rnd} ({rule}): applied {applied} times")
                if rule == "cut-after":
                    tally.count("resends recognised as already applied", len(retried))
                    if tally.check(len(retried) >= 1, f"round {rnd}: the resend was not recognised as a retry"):
                        tally.detected += 1
                else:
                    tally.check(not retried, f"round {rnd}: a commit that never arrived was seen as a retry")
                    tally.detected += 1
                ck = admin.load(run)
                if ck.state != state:
                    tally.lost += 1
                    tally.violation(f"round {rnd}: load gave {ck.state}, committed {state}")
            tally.counters["connections the proxy saw"] = proxy.connections
        finally:
            store.close()
            admin.close()
    tally.seconds = time.monotonic() - t0
    return tally
