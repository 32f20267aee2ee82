"""A Jepsen-style checker for histories of store operations.

A *history* is every operation the workers (and the admin) ran against the store, each with
the time it was invoked and the time it completed (``time.monotonic_ns()``: CLOCK_MONOTONIC,
one clock for every process on the machine), its arguments and its outcome:

``ok``       the store returned; ``result`` holds what it returned
``fail``     a definite error (FencedError, ConflictError, LeaseHeldError, ...): by the
             store's contract, nothing was written
``unknown``  the outcome cannot be known (``outcome_unknown``, StoreUnavailableError,
             DurabilityError, a timeout, or the process was killed with the operation in flight)

The workers write one JSON line when an operation is invoked and one when it completes,
flushed each time (:class:`HistoryLog`); a killed worker loses at most the completion of
the operation in flight, which then counts as ``unknown``. Every commit carries a commit id
(``cid``) and its parent (the cid of the state it was built on) inside the committed state,
so any load, and the store's contents at the end, say exactly which commit they hold.

:func:`check` verifies, over the whole history and the store's final contents (run by run):

(a) ``lost``     no acknowledged commit lost: every one is in the run's final chain of
                 generations (the head, or an ancestor of it) with the content it was
                 committed with, unless an admin deleted the run after it;
(b) ``fork``     one chain of generations per run: a generation number maps to one commit
                 over the whole history (acks, loads, final state), each commit sits at the
                 generation it expected, on the parent it was built on, with its own token;
(c) ``stale``    no commit acknowledged with a token below one already used by a newer
                 acknowledged commit of the run (tokens never go down along the generations),
                 and no commit or renew acknowledged for a token below one handed out
                 before it began;
(d) ``token``    no token handed out twice for a run (acquires and the fences of deletes
                 share the counter), a later acquire always gets a higher token, and the
                 fence at the end is at least every token handed out;
(e) ``written``  no definite failure whose write is in the store: the cid of a commit
                 that failed definitely never shows up in a load or in the final state;
(f) ``stale-read``  every load sees every commit acknowledged before the load began (its
                 generation is at least the newest one acknowledged before its invoke,
                 unless a delete of the run may have intervened), never a chain deleted
                 before it began, and never fails definitely (nothing is damaged in this mode).

Nothing here talks to a server: the harness (``history.py``) gathers the history and the
final contents, and the unit tests feed hand-made histories.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKS: dict[str, str] = {
    "lost": "(a) lost",
    "fork": "(b) fork",
    "stale": "(c) stale token",
    "token": "(d) token twice",
    "written": "(e) failed, yet written",
    "stale-read": "(f) stale load",
}

KINDS = ("acquire", "load", "commit", "renew", "release", "delete")
OUTCOMES = ("ok", "fail", "unknown")
NEVER = 2**63  # "completed" time of an operation whose effect may land any time after its invoke


def digest(state: Any) -> str:
    """A short digest of a committed state (dict of str keys; the codec returns exact types)."""
    text = repr(sorted(state.items())) if isinstance(state, dict) else repr(state)
    return hashlib.blake2b(text.encode("utf-8", "backslashreplace"), digest_size=8).hexdigest()


# --------------------------------------------------------------------------- the log


class HistoryLog:
    """Appends a process's operations to a JSON-lines file, flushed line by line.

    The first line names the process; then ``{"i", "f", "run", "t", "args"}`` when an
    operation is invoked and ``{"i", "t", "o", "result"}`` when it completes.
    """

    def __init__(self, path: str | Path, process: str) -> None:
        self.fh = open(path, "a", buffering=1, encoding="utf-8")
        self.process = process
        self.index = 0
        self._write({"process": process, "pid": os.getpid()})

    def _write(self, record: Mapping[str, Any]) -> None:
        self.fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.fh.flush()

    def invoke(self, kind: str, run: str, args: Mapping[str, Any]) -> int:
        self.index += 1
        self._write({"i": self.index, "f": kind, "run": run, "t": time.monotonic_ns(), "args": dict(args)})
        return self.index

    def complete(self, index: int, outcome: str, result: Mapping[str, Any], t: int | None = None) -> None:
        self._write({"i": index, "t": t or time.monotonic_ns(), "o": outcome, "result": dict(result)})

    def close(self) -> None:
        self.fh.close()


@dataclass
class Op:
    """One operation of the history."""

    process: str
    index: int
    kind: str
    run: str
    invoke: int
    complete: int | None  # None: the process died with it in flight
    outcome: str
    args: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return self.result.get("error")

    def where(self) -> str:
        return f"{self.kind} #{self.index} of {self.process}"


def read_log(path: str | Path) -> list[Op]:
    """The operations of one process's log (an invoke with no completion is ``unknown``)."""
    process = Path(path).stem
    pending: dict[int, Op] = {}
    done: list[Op] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break  # torn by a kill: the operation stays in flight
            rec = json.loads(line)
            if "process" in rec:
                process = rec["process"]
            elif "f" in rec:
                pending[rec["i"]] = Op(process, rec["i"], rec["f"], rec["run"], rec["t"], None, "unknown",
                                       rec.get("args", {}), {"error": "in flight when the process died"})
            else:
                op = pending.pop(rec["i"])
                op.complete, op.outcome, op.result = rec["t"], rec["o"], rec.get("result", {})
                done.append(op)
    return sorted(done + list(pending.values()), key=lambda o: o.invoke)


def read_history(directory: str | Path) -> list[Op]:
    """Every ``*.jsonl`` operation log in ``directory`` (the nemesis's ``faults.jsonl`` excluded)."""
    ops: list[Op] = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        if path.name != "faults.jsonl":
            ops += read_log(path)
    return sorted(ops, key=lambda o: o.invoke)


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    """What :func:`check` found: operation and fault counts, anomalies per check."""

    ops: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, outcome) -> n
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, error type) -> n
    faults: Counter[str] = field(default_factory=Counter)
    anomalies: dict[str, int] = field(default_factory=lambda: {name: 0 for name in CHECKS})
    examples: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in CHECKS})
    facts: Counter[str] = field(default_factory=Counter)

    def anomaly(self, check: str, text: str) -> None:
        self.anomalies[check] += 1
        if len(self.examples[check]) < 20:
            self.examples[check].append(text)

    @property
    def total_anomalies(self) -> int:
        return sum(self.anomalies.values())

    @property
    def ok(self) -> bool:
        return self.total_anomalies == 0

    def count(self, kind: str | None = None, outcome: str | None = None) -> int:
        return sum(n for (k, o), n in self.ops.items()
                   if (kind is None or k == kind) and (outcome is None or o == outcome))

    def summary(self) -> str:
        ops = ", ".join(f"{k} {self.count(k, 'ok')}/{self.count(k, 'fail')}/{self.count(k, 'unknown')}"
                        for k in KINDS if self.count(k))
        faults = ", ".join(f"{k}: {n}" for k, n in sorted(self.faults.items())) or "none"
        found = ", ".join(f"{k}: {n}" for k, n in self.anomalies.items())
        return f"ops (ok/fail/unknown) {ops}; faults {faults}; anomalies {found}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ops": {f"{k} {o}": n for (k, o), n in sorted(self.ops.items())},
            "errors": {f"{k} {e}": n for (k, e), n in sorted(self.errors.items())},
            "faults": dict(sorted(self.faults.items())),
            "anomalies": dict(self.anomalies),
            "examples": {k: v for k, v in self.examples.items() if v},
            "facts": dict(sorted(self.facts.items())),
        }


# --------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class _Seen:
    """A generation observed somewhere: acknowledged, loaded, or in the final state."""

    epoch: int
    generation: int
    cid: str
    token: int
    digest: str | None
    source: str


def check(ops: Iterable[Op], final: Mapping[str, Mapping[str, Any]],
          faults: Iterable[Mapping[str, Any]] = ()) -> Report:
    """Check a history against the store's final contents.

    ``final[run]`` = ``{"fence": int, "generation": int (head, 0 if none),
    "kept": [{"generation", "token", "cid", "digest"}], "damaged": [str],
    "deletes": {by: fence}}`` (the delete events of the run's audit stream, which tell
    whether a delete whose outcome was unknown applied).
    """
    ops = sorted(ops, key=lambda o: o.invoke)
    rep = Report()
    for op in ops:
        rep.ops[(op.kind, op.outcome)] += 1
        if op.outcome != "ok" and op.error:
            rep.errors[(op.kind, op.error)] += 1
    for f in faults:
        rep.faults[f["kind"]] += 1
    commits: dict[str, Op] = {}
    for op in ops:
        if op.kind == "commit":
            cid = op.args["cid"]
            if cid in commits:
                rep.anomaly("fork", f"commit id {cid} used by {commits[cid].where()} and {op.where()}")
            commits[cid] = op
    by_run: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_run[op.run].append(op)
    for run in sorted(set(by_run) | set(final)):
        _check_run(run, by_run.get(run, []), final.get(run, {}), commits, rep)
    return rep


def _check_run(run: str, ops: list[Op], final: Mapping[str, Any], commits: Mapping[str, Op], rep: Report) -> None:
    # -- deletes split the run into epochs: a delete bumps the fence, so every token below
    #    its fence belongs to the chain it removed, every token above to a later one
    recorded = {str(k): int(v) for k, v in (final.get("deletes") or {}).items()}
    deletes: list[tuple[int, int, int]] = []  # (fence, invoke, completed or NEVER)
    for op in ops:
        if op.kind != "delete":
            continue
        if op.outcome == "ok":
            deletes.append((int(op.result["fence"]), op.invoke, op.complete or NEVER))
        elif op.args.get("by") in recorded:  # unknown outcome, but its event is there: it applied
            deletes.append((recorded[op.args["by"]], op.invoke, NEVER))
            rep.facts["deletes with an unknown outcome found applied"] += 1
    fences = sorted(d[0] for d in deletes)

    def epoch(token: int) -> int:
        return bisect.bisect_left(fences, token)

    last_epoch = len(fences)
    acked = [op for op in ops if op.kind == "commit" and op.outcome == "ok"]

    # -- every generation anyone saw
    seen: list[_Seen] = []
    for op in acked:
        token = int(op.args["token"])
        seen.append(_Seen(epoch(token), int(op.result["generation"]), op.args["cid"], token, None,
                          f"ack of {op.where()}"))
    for op in ops:
        if op.kind == "load" and op.outcome == "ok" and op.result.get("generation"):
            token = int(op.result["token"])
            seen.append(_Seen(epoch(token), int(op.result["generation"]), str(op.result["cid"]), token,
                              op.result.get("digest"), f"{op.where()}"))
            if op.result.get("skipped"):
                rep.facts["loads that fell back past a damaged generation"] += 1
    for k in final.get("kept") or []:
        token = int(k["token"])
        seen.append(_Seen(epoch(token), int(k["generation"]), str(k["cid"]), token, k.get("digest"), "final state"))

    # -- (b) one chain: generation -> one commit; each commit where it expected to be
    at: dict[tuple[int, int], dict[str, str]] = defaultdict(dict)  # (epoch, generation) -> {cid: source}
    gens_of: dict[str, set[int]] = defaultdict(set)
    for s in seen:
        at[(s.epoch, s.generation)].setdefault(s.cid, s.source)
        gens_of[s.cid].add(s.generation)
    for (e, g), cids in sorted(at.items()):
        if len(cids) > 1:
            rep.anomaly("fork", f"{run}: generation {g} (epoch {e}) holds {len(cids)} commits: "
                        + "; ".join(f"{c} ({src})" for c, src in cids.items()))
    for cid, gens in gens_of.items():
        if len(gens) > 1:
            rep.anomaly("fork", f"{run}: commit {cid} seen at generations {sorted(gens)}")
    checked: set[str] = set()
    for s in seen:
        c = commits.get(s.cid)
        if c is None:
            if s.cid not in checked:
                rep.anomaly("fork", f"{run}: generation {s.generation} holds {s.cid}, which no worker committed "
                            f"({s.source})")
            checked.add(s.cid)
            continue
        if s.digest is not None and s.digest != c.args.get("digest"):
            rep.anomaly("lost", f"{run}: {s.source} read commit {s.cid} at generation {s.generation} with other "
                        f"content than {c.where()} committed")
        if s.cid in checked:
            continue
        checked.add(s.cid)
        if c.run != run:
            rep.anomaly("fork", f"{run}: generation {s.generation} holds {s.cid}, committed to run {c.run}")
            continue
        if int(c.args["token"]) != s.token:
            rep.anomaly("fork", f"{run}: {s.source} shows {s.cid} with token {s.token}; "
                        f"{c.where()} committed it with token {c.args['token']}")
        if s.generation != int(c.args["expected"]) + 1:
            rep.anomaly("fork", f"{run}: {s.cid} is at generation {s.generation} ({s.source}); "
                        f"{c.where()} expected generation {c.args['expected']}")
            continue
        parent = c.args.get("parent")
        if parent is None:
            if s.generation != 1:
                rep.anomaly("fork", f"{run}: {s.cid} at generation {s.generation} was built on no state")
            continue
        p = commits.get(parent)
        if p is not None and epoch(int(p.args["token"])) != s.epoch:
            rep.anomaly("fork", f"{run}: {s.cid} (epoch {s.epoch}) was built on {parent}, "
                        f"of a chain a delete removed (epoch {epoch(int(p.args['token']))})")
        below = at.get((s.epoch, s.generation - 1), {})
        if below and parent not in below:
            rep.anomaly("fork", f"{run}: {s.cid} at generation {s.generation} was built on {parent}, "
                        f"but generation {s.generation - 1} holds {', '.join(below)}")

    # -- (a) every acknowledged commit is in the final chain (or a delete removed it)
    head_gen = int(final.get("generation") or 0)
    kept = {int(k["generation"]): k for k in final.get("kept") or []}
    for reason in final.get("damaged") or []:
        rep.anomaly("lost", f"{run}: at the end, {reason}")
    chain: dict[int, str] = {}
    final_epoch = last_epoch
    if head_gen:
        head = kept.get(head_gen)
        if head is None:
            rep.anomaly("lost", f"{run}: the head generation {head_gen} could not be read at the end")
        else:
            final_epoch = epoch(int(head["token"]))
            if final_epoch != last_epoch:
                rep.anomaly("fork", f"{run}: the final head (token {head['token']}) belongs to a chain that "
                            f"a delete removed (epoch {final_epoch} of {last_epoch})")
            cur: str | None = str(head["cid"])
            g = head_gen
            while cur is not None and g >= 1:
                if g in kept:  # what the store holds wins over what a writer believed it built on
                    cur = str(kept[g]["cid"])
                chain[g] = cur
                c = commits.get(cur)
                if c is None:
                    break
                cur = c.args.get("parent")
                g -= 1
    for op in acked:
        e, g, cid = epoch(int(op.args["token"])), int(op.result["generation"]), op.args["cid"]
        rep.facts["acknowledged commits"] += 1
        if e < final_epoch:
            rep.facts["acknowledged commits a delete removed later"] += 1
            continue
        if g > head_gen:
            rep.anomaly("lost", f"{run}: {op.where()} acknowledged generation {g} ({cid}); "
                        f"the run ends at generation {head_gen}")
        elif chain.get(g) != cid:
            rep.anomaly("lost", f"{run}: {op.where()} acknowledged generation {g} ({cid}); the final chain has "
                        f"{chain.get(g, 'nothing traceable')} there")

    # -- (c) tokens never go down along the generations ...
    order: dict[str, _Seen] = {}
    for s in seen:
        order.setdefault(s.cid, s)
    best: dict[int, tuple[int, _Seen]] = {}
    for s in sorted(order.values(), key=lambda s: (s.epoch, s.generation)):
        top = best.get(s.epoch)
        if top is not None and s.token < top[0] and s.generation > top[1].generation:
            rep.anomaly("stale", f"{run}: generation {s.generation} ({s.source}) has token {s.token}, below token "
                        f"{top[0]} of generation {top[1].generation} ({top[1].source})")
        if top is None or s.token > top[0]:
            best[s.epoch] = (s.token, s)
    # ... and no stale token is accepted after a newer one was handed out
    issued = sorted([(op.complete or NEVER, int(op.result["token"]), op.where()) for op in ops
                     if op.kind == "acquire" and op.outcome == "ok"]
                    + [(d[2], d[0], "a delete") for d in deletes if d[2] != NEVER])
    done_at = [i[0] for i in issued]
    top_issued: list[tuple[int, str]] = []
    for _, value, where in issued:
        top_issued.append(max(top_issued[-1], (value, where)) if top_issued else (value, where))

    def issued_before(t: int) -> tuple[int, str] | None:
        n = bisect.bisect_left(done_at, t)
        return top_issued[n - 1] if n else None

    for op in ops:
        accepted = op.outcome == "ok" and (op.kind in ("commit", "renew")
                                           or op.kind == "release" and op.result.get("released"))
        if not accepted:
            continue
        token = int(op.args["token"])
        newer = issued_before(op.invoke)
        if newer is not None and newer[0] > token:
            rep.anomaly("stale", f"{run}: {op.where()} with token {token} succeeded although {newer[1]} "
                        f"had handed out {newer[0]} before it began")

    # -- (d) tokens: unique, rising in real time, never above the final fence
    values = Counter([int(op.result["token"]) for op in ops if op.kind == "acquire" and op.outcome == "ok"]
                     + [d[0] for d in deletes])
    for value, n in values.items():
        if n > 1:
            rep.anomaly("token", f"{run}: token {value} handed out {n} times")
    for op in ops:
        if op.kind == "acquire" and op.outcome == "ok":
            token = int(op.result["token"])
            before = issued_before(op.invoke)
            if before is not None and before[0] >= token:
                rep.anomaly("token", f"{run}: {op.where()} got token {token}, not above {before[0]} "
                            f"handed out by {before[1]} before it began")
    for d in deletes:
        before = issued_before(d[1])
        if d[2] != NEVER and before is not None and before[0] >= d[0]:
            rep.anomaly("token", f"{run}: a delete set the fence to {d[0]}, not above {before[0]} "
                        f"handed out by {before[1]} before it began")
    if issued and "fence" in final:
        highest = max(values)
        if int(final["fence"]) < highest:
            rep.anomaly("token", f"{run}: the fence ends at {final['fence']}, below token {highest} handed out")

    # -- (e) a commit that failed definitely was not written
    visible: dict[str, str] = {}
    for s in seen:
        if not s.source.startswith("ack of"):
            visible.setdefault(s.cid, s.source)
    for op in ops:
        if op.kind == "commit" and op.outcome == "fail" and op.args["cid"] in visible:
            rep.anomaly("written", f"{run}: {op.where()} failed with {op.error} (token {op.args['token']}, "
                        f"expected {op.args['expected']}), yet its commit {op.args['cid']} is in the store "
                        f"({visible[op.args['cid']]})")
            rep.facts[f"definite failures found written: {op.error}"] += 1

    # -- (f) a load sees every commit acknowledged before it began
    acks = sorted((op.complete or NEVER, epoch(int(op.args["token"])), int(op.result["generation"]), op.where())
                  for op in acked)
    ack_done = [a[0] for a in acks]
    newest: list[tuple[int, int, str]] = []
    for _, e, g, where in acks:
        newest.append(max(newest[-1], (e, g, where)) if newest else (e, g, where))
    for op in ops:
        if op.kind != "load" or op.outcome == "unknown":
            continue
        if op.outcome == "fail":
            rep.anomaly("stale-read", f"{run}: {op.where()} failed with {op.error}")
            continue
        rep.facts["loads checked"] += 1
        g = int(op.result.get("generation") or 0)
        got = (epoch(int(op.result["token"])), g) if g else None
        gone = [f for f, _, done in deletes if done < op.invoke]
        if got is not None and gone and got[0] < bisect.bisect_right(fences, max(gone)):
            rep.anomaly("stale-read", f"{run}: {op.where()} returned generation {g} of a chain deleted "
                        f"(fence {max(gone)}) before it began")
            continue
        n = bisect.bisect_left(ack_done, op.invoke)
        if not n:
            continue
        need_e, need_g, where = newest[n - 1]
        # a delete that may have run before the load read takes what it deleted off the demand
        removed = [f for f, inv, _ in deletes if inv < (op.complete or NEVER)]
        if removed and need_e < bisect.bisect_right(fences, max(removed)):
            rep.facts["loads whose demand a delete removed"] += 1
            continue
        if got is None or got < (need_e, need_g):
            rep.anomaly("stale-read", f"{run}: {op.where()} returned generation {g or 'none'}"
                        f"{'' if got is None else f' (epoch {got[0]})'}; generation {need_g} (epoch {need_e}) "
                        f"was acknowledged ({where}) before it began")
