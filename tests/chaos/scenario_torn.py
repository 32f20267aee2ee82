"""Torn AOF tail: the AOF is cut inside its last transaction (a commit script is propagated
as a MULTI/EXEC block of its effects), as a crash mid-write or a lost disk page would.

``aof-load-truncated no``: the server must refuse to start, and the store must say so
(``StoreUnavailableError``), never start empty. After the operator's repair (what
``redis-check-aof --fix`` does: drop the incomplete transaction) the store loads the last
complete commit.

``aof-load-truncated yes``: the server loads what it can. Then more writes, a second
restart, and the store must still never return a half-applied commit: ``load`` returns a
generation that verifies and is the head's (or it falls back, loudly), every commit
acknowledged after the first restart is there, and no fence went backwards. Redis 8.2.3
replays the torn half-transaction at the second restart (the first restart keeps the
partial MULTI in the file and appends after it); that is counted, not hidden.
"""

from __future__ import annotations

import random
import time
from typing import Any

from chaos_tools import MULTI, Tally, incr_aof, last_transaction, repair_torn_tail

from redis_ckpt import CheckpointStore, CorruptCheckpointError, StoreUnavailableError
from redis_ckpt.testing import ServerStartError


def _cut_point(data: bytes, rng: random.Random) -> tuple[int, str]:
    """A random offset strictly inside the last MULTI/EXEC block, and where it falls."""
    start, end = last_transaction(data)
    block = data[start:end]
    # half the cuts at a command boundary inside the block, half anywhere inside a command
    boundaries = [start + i for i in range(len(MULTI), len(block)) if block.startswith(b"\r\n*", i - 2)]
    if boundaries and rng.random() < 0.5:
        pos = rng.choice(boundaries)
        kind = "at a command boundary"
    else:
        pos = rng.randrange(start + 1, end)
        kind = "inside a command"
    return pos, kind


def _commit_some(store: CheckpointStore, run: str, owner: str, n: int, acks: list[tuple[int, int, int]]) -> int:
    lease = store.acquire(run, owner=owner, ttl=60)
    ck = lease.load()
    step = ck.state["step"] if ck else 0
    for _ in range(n):
        step += 1
        g = lease.commit({"step": step, "pad": b"x" * 200})
        acks.append((g, lease.token, step))
    return lease.token


def torn_tail_refused(server: Any, *, rounds: int, seed: int) -> Tally:
    """``server`` runs with ``aof-load-truncated no``."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    tally = Tally("torn AOF tail, aof-load-truncated no", server.engine)
    store = CheckpointStore(server.client(), namespace="torn", keep=3)
    run = "torn-no"
    acks: list[tuple[int, int, int]] = []
    try:
        for _ in range(rounds):
            _commit_some(store, run, "writer", rng.randint(2, 5), acks)
            torn_generation = acks[-1][0]
            store.close()
            server.kill()
            aof = incr_aof(server.data_dir)
            data = aof.read_bytes()
            pos, _kind = _cut_point(data, rng)
            aof.write_bytes(data[:pos])
            tally.rounds += 1
            tally.injected += 1
            try:
                server.restart()
            except ServerStartError as refused:
                text = str(refused)
                tally.check("Unexpected end of file" in text or "truncated" in text.lower(),
                            f"the server refused, but its log does not say why: {text[-300:]}")
                try:
                    CheckpointStore.from_url(server.url, namespace="torn").close()
                except StoreUnavailableError as exc:
                    if tally.check("cannot reach" in str(exc), f"unclear store error: {exc}"):
                        tally.detected += 1
                else:
                    tally.violation("a store was created although the server is not running")
            else:
                tally.violation(f"the server started on an AOF torn at offset {pos} of {len(data)}")
                store = CheckpointStore(server.client(), namespace="torn", keep=3)
                continue
            # the operator's repair: drop the incomplete transaction (redis-check-aof --fix)
            repair_torn_tail(server.data_dir)
            server.restart()
            store = CheckpointStore(server.client(), namespace="torn", keep=3)
            ck = store.load(run)
            tally.check(ck is not None and ck.generation == torn_generation - 1 and not ck.skipped,
                        f"after the repair load gave {ck and ck.generation}, expected {torn_generation - 1}")
            tally.check(all(g.ok for g in store.generations(run)), "a kept generation fails after the repair")
            acks.pop()  # the torn commit is the injected loss; all the others must be there
            for g, _token, step in acks:
                if g > (ck.generation if ck else 0):
                    tally.lost += 1
            tally.acknowledged = len(acks)
    finally:
        store.close()
    tally.seconds = time.monotonic() - t0
    return tally


def torn_tail_loaded(server: Any, *, rounds: int, seed: int) -> Tally:
    """``server`` runs with ``aof-load-truncated yes``; two restarts per round."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    tally = Tally("torn AOF tail, aof-load-truncated yes, 2 restarts", server.engine)
    try:
        for rnd in range(rounds):
            run, other = f"torn-yes-{rnd}", f"bystander-{rnd}"
            store = CheckpointStore(server.client(), namespace="torn", keep=3)
            before: list[tuple[int, int, int]] = []
            _commit_some(store, run, "first", rng.randint(3, 6), before)
            store.close()
            server.kill()
            aof = incr_aof(server.data_dir)
            data = aof.read_bytes()
            pos, kind = _cut_point(data, rng)
            aof.write_bytes(data[:pos])
            tally.rounds += 1
            tally.injected += 1
            tally.count(f"cut {kind}")
            server.restart()
            client = server.client()
            store = CheckpointStore(client, namespace="torn", keep=3)
            snapshot1 = _snapshot(client, run)
            # more writes, then the second restart
            after: list[tuple[int, int, int]] = []
            action = rng.choice(["commit on the torn run", "acquire only", "other runs only"])
            tally.count(f"then: {action}")
            tokens = [int(client.get(f"torn:{{{run}}}:fence") or 0)]
            if action == "commit on the torn run":
                tokens.append(_commit_some(store, run, "first", rng.randint(1, 4), after))
            elif action == "acquire only":
                tokens.append(store.acquire(run, owner="first", ttl=60).token)  # the same worker, restarted
            _commit_some(store, other, "bystander", 2, [])
            store.close()
            server.kill()
            server.restart()
            store = CheckpointStore(server.client(), namespace="torn", keep=3)
            try:
                _verify_torn(store, server.client(), run, before, after, tokens, snapshot1, action, tally)
            finally:
                store.close()
    except ServerStartError as exc:
        tally.violation(f"the server did not restart with aof-load-truncated yes: {str(exc)[-400:]}")
    tally.seconds = time.monotonic() - t0
    return tally


def _snapshot(client: Any, run: str) -> dict[bytes, Any]:
    keys = sorted(k for k in client.scan_iter(match=f"torn:{{{run}}}:*") if not k.endswith(b":events"))
    return {k: client.dump(k) for k in keys}


def _verify_torn(store: CheckpointStore, client: Any, run: str, before: list[tuple[int, int, int]],
                 after: list[tuple[int, int, int]], tokens: list[int], snapshot1: dict[bytes, Any],
                 action: str, tally: Tally) -> None:
    info = store.info(run)
    try:
        ck = store.load(run)
    except CorruptCheckpointError as exc:
        tally.violation(f"{run}: no generation verifies after the second restart: {exc}")
        return
    if ck is None:
        tally.violation(f"{run}: load returned None for a committed run")
        return
    # never a half-applied commit: what load returned verified, and it is the head unless it
    # says loudly what it skipped
    if ck.skipped:
        tally.count("loads that fell back (loudly)")
    tally.check(ck.generation == info.generation or bool(ck.skipped),
                f"{run}: load returned generation {ck.generation} silently, the head is {info.generation}")
    tally.detected += 1
    gens = store.generations(run)
    damaged = [(g.generation, g.reason) for g in gens if not g.ok]
    if damaged:
        tally.count("older generations reported missing/damaged", len(damaged))
        tally.notes.append(f"{run}: after a torn MULTI replay, kept generations {damaged} reported")
    if action == "other runs only" and _snapshot(client, run) != snapshot1:
        tally.count("half-MULTI replayed by the server at the 2nd restart")
    # commits acknowledged after the first restart are all there; the torn one is the injected loss
    for g, _token, step in after:
        tally.acknowledged += 1
        if g > info.generation:
            tally.lost += 1
            tally.violation(f"{run}: generation {g} acknowledged after the first restart is gone")
    for g, _token, step in before[:-1]:
        tally.acknowledged += 1
        if g > info.generation:
            tally.lost += 1
            tally.violation(f"{run}: generation {g} acknowledged before the torn commit is gone")
    if after:
        tally.check(ck.state["step"] >= after[-1][2], f"{run}: state went back past an acknowledged step")
    tally.check(info.fence >= max(tokens), f"{run}: fence {info.fence} below a token handed out ({max(tokens)})")
