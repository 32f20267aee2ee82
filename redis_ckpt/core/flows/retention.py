"""Retention flows: a run marked done (``Lease.finish``) expires by itself; runs written before
a retention was set are pruned once idle (``prune``). The scripts decide (lua/retain.lua,
lua/prune.lua): a prune re-checks, atomically, that nobody touched the run since it was read.
"""

from __future__ import annotations

from typing import Any

from ...errors import CorruptCheckpointError, DamagedRunsError, FencedError
from ...models import PrunedRun
from ..config import MAX_INT, check_int
from ..contract import damaged_refusal, entry, head_of, kept, prune_script, refusal, retain_script, staged
from ..keys import validate_owner
from ..ops import Cmd, Flow, Pipe, ReplyError
from ..replies import hash_of, raise_failures, text
from .admin import AdminFlows
from .base import not_converged, out_of_range
from .commit import MAX_SENDS
from .confirm import check_confirmed, confirmed, drift_unread
from .headless import committed_before, lost_entries
from .shared import SHARED_SENDS, shared_addresses

__all__ = ["RetentionFlows", "PruneSweep"]


class RetentionFlows(AdminFlows):
    def finish_flow(self, run_id: str, *, token: int, owner: str, keep_for_ms: int) -> Flow[int]:
        """Mark the run done: release the lease of ``token`` and let every key of the run
        expire ``keep_for_ms`` from now unless it is acquired or committed to again (the fence
        ``fence_margin_ms`` later). Returns the server time (ms) the data expires at.
        :class:`FencedError` (nothing written) when ``token`` is no longer the run's fence.
        A run's shared chunks (x:refs, read with the head) get the same expiry."""
        k = self.keys(run_id)
        owner = validate_owner(owner)
        check_int("token", token, 0, MAX_INT, run_id=k.run_id)
        check_int("keep_for", keep_for_ms, 1, MAX_INT, run_id=k.run_id)
        c = self.config

        def body() -> Flow[int]:
            replies = yield Pipe([Cmd("HGET", k.head, "kept"), Cmd("HGETALL", k.refs)], route=k.head)
            raise_failures(replies)
            entries = [entry(g, n) for g, n in kept(head_of(k.run_id, {"kept": text(replies[0] or b"")}))]
            shared = sorted(hash_of(replies[1]))
            for _ in range(MAX_SENDS):
                script = retain_script(k, token=token, owner=owner, retention_ms=keep_for_ms,
                                       margin_ms=c.fence_margin_ms, maxlen=c.events_maxlen, entries=entries,
                                       shared=shared)
                replies = yield confirmed([script], c, route=k.head)
                reply = replies[0]
                if isinstance(reply, ReplyError):
                    drift_unread(replies, c)
                    if reply.code == "NEED_KEYS":  # a commit rotated generations meanwhile
                        entries = sorted(set(entries) | set(reply.fields))
                        continue
                    if reply.code == "NEED_SHARED":  # a commit shared new chunks meanwhile
                        shared = yield from shared_addresses(k)  # what x:refs names now
                        continue
                    if reply.code == "FENCED":
                        r = refusal(reply)
                        raise FencedError(k.run_id, token=int(r["token"]), fence=int(r["fence"]), what="finish")
                    if reply.code == "OUT_OF_RANGE":
                        raise out_of_range(k.run_id, refusal(reply), "finish")
                    if reply.code == "DAMAGED":
                        raise damaged_refusal(k.run_id, refusal(reply))
                    raise reply
                check_confirmed(replies, c, what="finish", run_id=k.run_id, generation=None)
                return int(reply)
            raise not_converged(k.run_id, "finish", MAX_SENDS)

        return self.retrying(body, run_id=k.run_id, what="finish", writes=True)

    def prune_flow(self, *, idle_ms: int, by: str, dry_run: bool = False,
                   runs: list[str] | None = None) -> Flow[list[PrunedRun]]:
        """Remove every run of the namespace (or of ``runs``) nobody committed to or acquired
        for ``idle_ms``: generations, head, lease, events, staging; the fence stays, bumped, as
        a tombstone. A run with a live lease, or touched meanwhile, is left (the script checks
        again as it removes); so is a run under its own retention (a store or run retention,
        or ``finish(keep_for=...)``): it expires by itself when its user asked. ``dry_run``:
        say which, remove nothing (a retained run is not named either). A run whose stored
        data is damaged is left as it is and the others are pruned; then
        :class:`DamagedRunsError` names the damaged ones and carries the PrunedRuns."""
        sweep = self.prune_sweep(idle_ms=idle_ms, by=by, dry_run=dry_run)

        def body() -> Flow[list[PrunedRun]]:
            for run_id in (runs if runs is not None else (yield from self.runs_flow())):
                yield from sweep.run_flow(run_id)
            return sweep.result()

        return body()

    def prune_sweep(self, *, idle_ms: int, by: str, dry_run: bool) -> PruneSweep:
        """A prune of many runs, each its own operation (:meth:`PruneSweep.run_flow`): the
        stores drive one run at a time, each by the store's deadline, so a namespace of any
        size is swept (one flow of every run would end at the deadline, half done). ``idle_ms``
        and ``by`` are checked here, before any read."""
        return PruneSweep(self, idle_ms=idle_ms, by=by, dry_run=dry_run)

    def prune_run_flow(self, run_id: str, *, idle_ms: int, by: str, dry_run: bool) -> Flow[PrunedRun | None]:
        """One run of :meth:`prune_flow`: None when it is active, under its own retention or
        holds nothing to remove."""
        k = self.keys(run_id)
        registered: list[str] = []
        shared: list[str] = []  # the run's shared chunks (x:refs), all deleted with it

        def build(entries: list[str], _dead: list[str], _strict: bool) -> Any:
            return prune_script(k, by=by, idle_ms=idle_ms, dry=dry_run, entries=entries, staged=registered,
                                shared=shared)

        def body() -> Flow[PrunedRun | None]:
            for _ in range(SHARED_SENDS):  # NEED_SHARED: a commit shared chunks since they were read
                replies = yield Pipe([Cmd("HGETALL", k.head), Cmd("HGETALL", k.staging), Cmd("HGETALL", k.refs)],
                                     route=k.head)
                raise_failures(replies)
                head, registry, refs = (hash_of(r) for r in replies)
                head = head_of(k.run_id, head)
                registered[:] = staged(registry)
                shared[:] = sorted(refs)
                entries = [entry(g, c) for g, c in kept(head)]
                if not head and (yield from committed_before(k, scan=False)):  # its head was lost: as delete
                    entries = yield from lost_entries(k)
                if dry_run:  # the script answers before it would write or ask for keys: a read, unconfirmed
                    replies = yield Pipe([build(entries, [], True)], route=k.fence)
                    break
                replies = yield from self.with_keys(build, entries, route=k.fence, run_id=k.run_id, what="prune")
                if not (isinstance(replies[0], ReplyError) and replies[0].code == "NEED_SHARED"):
                    break
                drift_unread(replies, self.config)
            reply = replies[0]
            if isinstance(reply, Exception) and not dry_run:
                drift_unread(replies, self.config)  # a drift check it carried goes unread
            if isinstance(reply, ReplyError) and reply.code in ("ACTIVE", "EMPTY", "KEPT"):
                return None
            if isinstance(reply, ReplyError) and reply.code == "DAMAGED":
                raise damaged_refusal(k.run_id, refusal(reply))
            if isinstance(reply, Exception):
                raise reply
            if not dry_run:
                check_confirmed(replies, self.config, what="prune", run_id=k.run_id, generation=None)
            fence, generations, since = reply
            return PrunedRun(k.run_id, idle_ms=int(since), generations=int(generations), fence=int(text(fence)),
                             pruned=not dry_run)

        return self.retrying(body, run_id=k.run_id, what="prune", writes=not dry_run)


class PruneSweep:
    """The runs a prune removed (or would remove) so far, and those left as damaged."""

    def __init__(self, flows: RetentionFlows, *, idle_ms: int, by: str, dry_run: bool) -> None:
        check_int("idle", idle_ms, 1, MAX_INT)
        self.flows, self.idle_ms, self.by, self.dry_run = flows, idle_ms, validate_owner(by), dry_run
        self.pruned: list[PrunedRun] = []
        self.damaged: dict[str, CorruptCheckpointError] = {}

    def run_flow(self, run_id: str) -> Flow[None]:
        """Prune one run (see :meth:`RetentionFlows.prune_run_flow`); a damaged one is left and
        noted: it does not keep the others."""
        try:
            found = yield from self.flows.prune_run_flow(run_id, idle_ms=self.idle_ms, by=self.by,
                                                         dry_run=self.dry_run)
        except CorruptCheckpointError as exc:
            self.damaged[run_id] = exc
            return
        if found is not None:
            self.pruned.append(found)

    def result(self) -> list[PrunedRun]:
        """The runs pruned; :class:`DamagedRunsError` (carrying them) when some were damaged."""
        if self.damaged:
            raise DamagedRunsError(self.damaged, self.pruned)
        return self.pruned
